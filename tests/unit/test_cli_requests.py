"""What ``maintd trigger``, ``rerun`` and ``replay`` send: the body and header built from their options."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from maintd.scheduler.cli import replay, trigger
from maintd.scheduler.cli.main import build_parser

pytestmark = pytest.mark.unit


class Recorder:
    """An ApiClient that notes each request and answers as the daemon would."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.sent: list[tuple[str, str, Any, Any]] = []

    def call(self, method: str, path: str, *, json_body: Any = None, headers: Any = None, **_: Any) -> Any:
        self.sent.append((method, path, json_body, headers))
        return self.answer


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args([*argv, "--url", "http://127.0.0.1:1"])


STARTED = {"job_id": "cleanup_sessions", "run_id": 7, "status": "running"}


def test_trigger_without_options_sends_no_body() -> None:
    api = Recorder(STARTED)
    assert trigger.trigger(parse("trigger", "cleanup_sessions"), api) == 0  # type: ignore[arg-type]
    assert api.sent == [("POST", "/admin/trigger/cleanup_sessions", None, None)]


def test_trigger_sends_params_reason_dry_run_and_the_key() -> None:
    api = Recorder(STARTED)
    args = parse(
        "trigger", "cleanup_sessions", "--params-json", '{"batch_size": 100, "max_statement": "1s"}',
        "--param", "batch_size=500", "--param", "table=public.sessions", "--param", 'to=["a@b.c"]',
        "--param", "note=a=b", "--reason", "lock storm", "--dry-run", "--idempotency-key", "ticket-42",
    )  # fmt: skip
    trigger.trigger(args, api)  # type: ignore[arg-type]
    [(_, _, body, headers)] = api.sent
    assert body == {
        "params": {
            "batch_size": 500,
            "max_statement": "1s",
            "table": "public.sessions",
            "to": ["a@b.c"],
            "note": "a=b",
        },
        "reason": "lock storm",
        "dry_run": True,
    }
    assert headers == {"Idempotency-Key": "ticket-42"}


@pytest.mark.parametrize(
    "argv", [["--param", "batch_size"], ["--param", "=1"], ["--params-json", "[1]"], ["--params-json", "{"]]
)
def test_bad_params_options_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse("trigger", "cleanup_sessions", *argv)
    assert exit_.value.code == 2


@pytest.mark.parametrize(
    ("argv", "body"),
    [([], None), (["--reason", "again"], {"reason": "again"}), (["--no-dry-run"], {"dry_run": False})],
)
def test_rerun_sends_only_what_differs(argv: list[str], body: dict[str, Any] | None) -> None:
    api = Recorder(STARTED)
    trigger.rerun(parse("rerun", "3", *argv), api)  # type: ignore[arg-type]
    assert api.sent == [("POST", "/admin/runs/3/rerun", body, None)]


def test_replay_sends_the_range_and_lists_the_fires(capsys: pytest.CaptureFixture[str]) -> None:
    fires = ["2026-05-05T07:00:00+00:00", "2026-05-07T07:00:00+00:00"]
    api = Recorder({"job_id": "daily_report", "fires": fires, "dry_run": True})
    args = parse(
        "replay",
        "daily_report",
        "--from",
        "2026-05-04T00:00:00+00:00",
        "--to",
        "2026-05-10T00:00:00+00:00",
        "--dry-run",
    )
    assert replay.replay(args, api) == 0  # type: ignore[arg-type]
    assert api.sent == [
        (
            "POST",
            "/admin/jobs/daily_report/replay",
            {"from": "2026-05-04T00:00:00+00:00", "to": "2026-05-10T00:00:00+00:00", "dry_run": True},
            None,
        )
    ]
    out = capsys.readouterr().out
    assert out.startswith("daily_report: would replay 2 fires:") and all(f"({fire})" in out for fire in fires)
