"""The job page's run-now form: one field per param, a reason, a dry-run switch; read
into the engine's :class:`~maintd.admin_api.interface.TriggerIn`, and shown again as
typed beside the engine's refusal.

The console decides nothing about params: a field whose text differs from the
configured value is sent as an override, and the engine (the task's own model, and
what the task lets change) accepts or refuses it with the same 422 the JSON API gives.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from maintd.admin_api.console.forms import unprocessable
from maintd.admin_api.console.interface import ParamField, RunOptions
from maintd.admin_api.interface import TriggerIn, Unprocessable

PARAM_PREFIX = "param."
# The Idempotency-Key the JSON API takes: 1-200 printable ASCII characters.
_KEY = re.compile(r"[\x20-\x7e]{1,200}")


def shown(value: Any) -> str:
    """A param's value as its field shows it: JSON, except a string that would not read
    back as JSON, shown bare (``auto`` rather than ``"auto"``)."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, ensure_ascii=False)


def _shown_param(param: ParamField) -> str:
    # A text-only param's field holds the text itself, quotes and all, as it is read back.
    return param.value if param.text_only and isinstance(param.value, str) else shown(param.value)


def _typed_value(param: ParamField | None, text: str) -> Any:
    if param is not None and param.text_only:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class RunNowForm:
    """The form as the page shows it: each param's text, the reason, the switch, the
    engine's messages by field (``params.batch_size``, ``reason``, ``dry_run``), and the
    Idempotency-Key of this rendering of the form: a double click, or the form sent
    again, answers the run the first one started instead of starting another."""

    typed: dict[str, str]
    reason: str = ""
    dry_run: bool = False
    errors: dict[str, list[str]] = field(default_factory=dict)
    key: str | None = None

    @classmethod
    def configured(cls, options: RunOptions) -> RunNowForm:
        """The form before anything is typed: the configured params."""
        return cls({param.name: _shown_param(param) for param in options.params}, key=secrets.token_urlsafe(18))

    @classmethod
    def read(cls, form: dict[str, str], options: RunOptions) -> RunNowForm:
        """The form as posted (any ``param.*`` field: the engine refuses names it does not know)."""
        typed = {name[len(PARAM_PREFIX) :]: text for name, text in form.items() if name.startswith(PARAM_PREFIX)}
        key = form.get("key", "")
        return cls(
            {**cls.configured(options).typed, **typed},
            form.get("reason", "").strip(),
            form.get("dry_run") == "true",
            # A key the API would refuse is dropped: the run starts, only without the guard.
            key=key if _KEY.fullmatch(key) else None,
        )

    def request(self, options: RunOptions) -> TriggerIn:
        """The trigger it asks for: only the params whose value differs from the configured
        one are overrides, so a run left as configured records none. Raises
        :class:`Unprocessable` for what the request model refuses (a reason too long)."""
        by_name = {param.name: param for param in options.params}
        configured = options.configured()
        overrides = {}
        for name, text in self.typed.items():
            value = _typed_value(by_name.get(name), text)
            if name not in configured or value != configured[name]:
                overrides[name] = value
        try:
            return TriggerIn(params=overrides, reason=self.reason or None, dry_run=self.dry_run)
        except ValidationError as exc:
            raise unprocessable(exc) from None

    def refused(self, exc: Unprocessable) -> RunNowForm:
        """The same form with the engine's messages on their fields."""
        errors: dict[str, list[str]] = {}
        for error in exc.errors:
            loc = [str(part) for part in error["loc"] if part != "body"]
            # A message on a nested part of a param (an item of a list) goes on the param's field.
            key = ".".join(loc[:2]) if loc[:1] == ["params"] else ".".join(loc)
            errors.setdefault(key, []).append(error["msg"])
        # The same key: a refused request does not use it.
        return RunNowForm(self.typed, self.reason, self.dry_run, errors, self.key)
