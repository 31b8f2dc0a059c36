"""The [alerts] section: defaults, every problem with its key path, secrets from the environment."""

from __future__ import annotations

import tomllib
from datetime import timedelta

import pytest

from maintd.scheduler.config.alerts import WebhookConfig
from maintd.scheduler.config.model import Config, ConfigError, parse_config

pytestmark = pytest.mark.unit

SMTP = """
[smtp]
host = "127.0.0.1"
port = 2525
from = "maintd@example.com"
"""


def valid(text: str) -> Config:
    return parse_config(tomllib.loads(text))


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(tomllib.loads(text))
    return caught.value.problems


def test_without_a_section_nothing_alerts_and_the_defaults_are_named() -> None:
    alerts = valid("").alerts
    assert not alerts.enabled
    assert alerts.on == {"failed", "timed_out", "lost", "overdue"}
    assert alerts.after_failures == 1
    assert alerts.min_interval == timedelta(hours=1)
    assert alerts.webhooks == [] and alerts.email is None


def test_the_documented_example_parses() -> None:
    config = valid(
        SMTP
        + """
[alerts]
on = ["failed", "lost"]
after_failures = 3
min_interval = "30m"
[[alerts.webhooks]]
url = "https://hooks.slack.com/services/T000/B000/XXXX"
headers = { Authorization = "Bearer abc" }
[[alerts.webhooks]]
url_env = "MAINTD_HOOK_URL"
headers_env = { Authorization = "MAINTD_HOOK_AUTH" }
[alerts.email]
to = ["ops@example.com", "ops@example.com", "dba@example.com"]
"""
    )
    alerts = config.alerts
    assert alerts.enabled
    assert alerts.on == {"failed", "lost"}
    assert alerts.after_failures == 3
    assert alerts.min_interval == timedelta(minutes=30)
    assert alerts.webhooks[0].headers == {"Authorization": "Bearer abc"}
    assert alerts.webhooks[1].url is None and alerts.webhooks[1].url_env == "MAINTD_HOOK_URL"
    assert alerts.email is not None and alerts.email.to == ["ops@example.com", "dba@example.com"]


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ('on = ["failure"]', "alerts.on[0]: must be 'failed', 'timed_out', 'lost' or 'overdue', got 'failure'"),
        ("after_failures = 0", "alerts.after_failures: input should be greater than or equal to 1, got 0"),
        ('min_interval = "1 hour"', "alerts.min_interval: invalid duration '1 hour'"),
        ("min_interval = 60", "alerts.min_interval: expected a duration string such as '30s', got 60"),
        ("retries = 3", "alerts.retries: unknown key"),
        (
            '[[alerts.webhooks]]\nurl = "ftp://example.com/x"',
            "alerts.webhooks[0].url: must be an http:// or https:// URL, got scheme 'ftp'",
        ),
        (
            '[[alerts.webhooks]]\nurl = "hooks.slack.com/services/SECRET"',
            "alerts.webhooks[0].url: must be an http:// or https:// URL, got scheme '(none)'",
        ),
        ('[[alerts.webhooks]]\nheaders = { A = "b" }', "alerts.webhooks[0]: give exactly one of url and url_env"),
        (
            '[[alerts.webhooks]]\nurl = "https://a.example/x"\nurl_env = "X"',
            "alerts.webhooks[0]: give exactly one of url and url_env",
        ),
        (
            '[[alerts.webhooks]]\nurl = "https://a.example/x"\nheaders = { A = 1 }',
            "alerts.webhooks[0].headers.A: input should be a valid string, got 1",
        ),
        (
            '[[alerts.webhooks]]\nurl = "https://a.example/x"\nheaders = { A = "b" }\nheaders_env = { A = "B" }',
            "alerts.webhooks[0]: header 'A' is in both headers and headers_env",
        ),
        ('[[alerts.webhooks]]\nurl = "https://a.example/x"\nmethod = "PUT"', "alerts.webhooks[0].method: unknown key"),
        ("[alerts.email]\nto = []", "alerts.email.to: list should have at least 1 item after validation, not 0"),
        ('[alerts.email]\nto = ["ops"]', "alerts.email.to: not an email address: 'ops'"),
    ],
)
def test_a_bad_value_names_its_key_path(section: str, expected: str) -> None:
    found = problems(SMTP + "[alerts]\n" + section + "\n")
    assert any(line.startswith(expected) for line in found), found


def test_every_problem_is_reported_at_once_with_the_rest_of_the_config() -> None:
    found = problems(
        '[jobs.x]\ntask = "sql"\nschedule = "61 * * * *"\n[jobs.x.params]\nsql = "SELECT 1"\n'
        '[alerts]\nafter_failures = -1\n[[alerts.webhooks]]\nurl = "gopher://x"\n'
    )
    assert [line.split(":")[0] for line in found] == [
        "alerts.after_failures",
        "alerts.webhooks[0].url",
        "jobs.x.schedule",
    ]


def test_a_section_without_a_channel_is_an_error() -> None:
    assert problems("[alerts]\nafter_failures = 3\n") == [
        "alerts: no channel to alert through: add [[alerts.webhooks]] or [alerts.email]"
    ]


def test_alert_mail_needs_smtp() -> None:
    assert problems('[alerts.email]\nto = ["ops@example.com"]\n') == [
        "alerts.email: alert mail is sent through [smtp], and the config has no [smtp] section"
    ]


def test_webhook_secrets_are_read_from_the_environment_at_send_time(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = WebhookConfig(url_env="HOOK_URL", headers={"X-Team": "ops"}, headers_env={"Authorization": "HOOK_AUTH"})
    with pytest.raises(LookupError, match=r"environment variable \$HOOK_URL is not set"):
        hook.resolve()
    monkeypatch.setenv("HOOK_URL", "https://hooks.example.com/T/B/SECRET")
    monkeypatch.setenv("HOOK_AUTH", "Bearer s3cret")
    assert hook.resolve() == (
        "https://hooks.example.com/T/B/SECRET",
        {"X-Team": "ops", "Authorization": "Bearer s3cret"},
    )
    assert hook.target() == "$HOOK_URL"


def test_logs_name_a_webhook_without_its_secret_path() -> None:
    hook = WebhookConfig(url="https://hooks.slack.com/services/T000/B000/SECRET")
    assert hook.target() == "https://hooks.slack.com"
    assert WebhookConfig(url="http://127.0.0.1:9000/hook").target() == "http://127.0.0.1:9000"
