"""The ``[alerts]`` section of config.toml: when a job's trouble is worth telling someone, and how.

::

    [alerts]
    on = ["failed", "timed_out", "lost", "overdue"]   # the default
    after_failures = 1          # alert once a job has failed K times in a row
    min_interval = "1h"         # at most one run alert per job per interval, cluster-wide
    [[alerts.webhooks]]
    url = "https://hooks.slack.com/services/..."      # or url_env = "MAINTD_SLACK_URL"
    headers = { "X-Team" = "ops" }
    headers_env = { Authorization = "MAINTD_HOOK_AUTH" }   # header values from the environment
    [alerts.email]
    to = ["ops@example.com"]    # sent through [smtp]

No ``[alerts]`` section means no alerts. Secrets (a Slack URL is one) can stay
out of the file: ``url_env`` and ``headers_env`` name environment variables,
read at send time like ``[smtp].password_env``.

"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Literal

import httpx
from pydantic import Field, field_validator, model_validator

from maintd.jobs.mail import EmailAddresses, SmtpSettings
from maintd.scheduler.config.types import Duration, Section

AlertOn = Literal["failed", "timed_out", "lost", "overdue"]
DEFAULT_ON: tuple[AlertOn, ...] = ("failed", "timed_out", "lost", "overdue")
DEFAULT_MIN_INTERVAL = timedelta(hours=1)


class WebhookConfig(Section):
    """One ``[[alerts.webhooks]]`` entry: gets a JSON POST whose ``text`` Slack shows as is."""

    url: str | None = None
    url_env: str | None = Field(None, min_length=1)
    headers: dict[str, str] = {}
    headers_env: dict[str, str] = {}

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            _check_url(value)
        return value

    @model_validator(mode="after")
    def _one_url(self) -> WebhookConfig:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url and url_env")
        if both := sorted(set(self.headers) & set(self.headers_env)):
            raise ValueError(f"header {both[0]!r} is in both headers and headers_env")
        return self

    def resolve(self) -> tuple[str, dict[str, str]]:
        """URL and headers as of now; ``LookupError`` names a variable that is not set."""
        url = self.url if self.url is not None else _env(self.url_env)  # type: ignore[arg-type]
        _check_url(url)
        return url, {**self.headers, **{name: _env(var) for name, var in self.headers_env.items()}}

    def target(self) -> str:
        """Where it goes, for logs: scheme and host only, as the rest of a webhook URL is often a secret."""
        if self.url is None:
            return f"${self.url_env}"
        url = httpx.URL(self.url)
        return f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")


class EmailAlertConfig(Section):
    """``[alerts.email]``: recipients of alert mail, sent through ``[smtp]``."""

    to: EmailAddresses


class AlertsConfig(Section):
    """``[alerts]``: which endings alert, after how many failures in a row, how often at most, and where."""

    on: frozenset[AlertOn] = frozenset(DEFAULT_ON)
    after_failures: int = Field(1, ge=1, le=1000)
    # "0s" turns the limit off; overdue alerts are limited by their episode instead (see scheduler.alerts).
    min_interval: Duration = DEFAULT_MIN_INTERVAL
    webhooks: list[WebhookConfig] = []
    email: EmailAlertConfig | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.on) and bool(self.webhooks or self.email)


def alerts_problems(alerts: AlertsConfig, *, smtp: SmtpSettings | None, given: bool) -> list[str]:
    """What only the whole document shows: a channel is configured, and mail has a server."""
    problems = []
    if given and not (alerts.webhooks or alerts.email):
        problems.append("alerts: no channel to alert through: add [[alerts.webhooks]] or [alerts.email]")
    if alerts.email is not None and smtp is None:
        problems.append("alerts.email: alert mail is sent through [smtp], and the config has no [smtp] section")
    return problems


def _check_url(value: str) -> None:
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        # The scheme only: the rest of a webhook URL is often its secret.
        raise ValueError(f"must be an http:// or https:// URL, got scheme {url.scheme or '(none)'!r}")


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise LookupError(f"environment variable ${name} is not set")
    return value
