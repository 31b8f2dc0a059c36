"""The daily report end to end: a real PostgreSQL, the real engine, a real SMTP server (aiosmtpd).

What the report must do: the mail arrives with its subject, both parts and
its recipients; a day's report goes out once, however often the job runs and
on however many replicas; a refusing or absent server fails the run with its
answer and a later run sends the report; on a frozen clock the 09:00 fire
reports the previous local day, 23, 24 or 25 hours long.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from maintd.scheduler.config.model import Config
from maintd.scheduler.engine import Engine
from maintd.scheduler.store.records import Run
from maintd.scheduler.store.run_store import RunStore
from maintd.testing import frozen_engine
from tests.configs import make_config, sql_job
from tests.engines import OPS, StartEngine, run_to_end

pytestmark = pytest.mark.integration

TO = ["ops@example.com", "dba@example.com"]
# The daemon's clock in the tests that trigger by hand: 09:30 in Berlin on 2026-05-12.
NOW = datetime.fromisoformat("2026-05-12T09:30:00+02:00")


@dataclass
class MailSink:
    """aiosmtpd handler: keeps every message it accepts; refuses the next ``refuse`` ones."""

    received: list[Envelope] = field(default_factory=list)
    refuse: int = 0
    answer: str = "550 5.7.1 Relaying denied"
    # Hold each message this long, so that concurrent senders overlap.
    delay_s: float = 0.0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.delay_s)
        if self.refuse:
            self.refuse -= 1
            return self.answer
        self.received.append(envelope)
        return "250 OK"

    def messages(self) -> list[EmailMessage]:
        return [message_from_bytes(e.content, policy=policy.default) for e in self.received]  # type: ignore[misc]

    def subjects(self) -> list[str]:
        # The stdlib folds a long subject starting with "[" right after "Subject:"; unfolded,
        # that is the same header, but its parser keeps the fold's leading space.
        return [message["Subject"].lstrip() for message in self.messages()]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp() -> Iterator[tuple[MailSink, int]]:
    sink = MailSink()
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield sink, port
    controller.stop()


def report_config(port: int | None, *, params: dict[str, Any] | None = None, **options: Any) -> Config:
    """A Berlin morning report plus a plain job, with ``[smtp]`` on ``port`` (None: no [smtp])."""
    job = {
        "task": "daily_report",
        "schedule": "0 9 * * *",
        "timezone": "Europe/Berlin",
        "params": {"to": TO, **(params or {})},
        **options,
    }
    sections: dict[str, Any] = {}
    if port is not None:
        sections["smtp"] = {
            "host": "127.0.0.1",
            "port": port,
            "from": "maintd@example.com",
            "security": "none",
            "timeout_s": 5,
        }
    return make_config({"morning_report": job, "nightly": sql_job(schedule="0 0 * * *")}, **sections)


async def run_report(engine: Engine) -> Run:
    return await run_to_end(engine, "morning_report")


def parts(message: EmailMessage) -> tuple[str, str]:
    """The text and HTML parts, with the line endings they were written with (SMTP sends CRLF)."""
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    return text.get_content().replace("\r\n", "\n"), html.get_content().replace("\r\n", "\n")


async def add_run(
    store: RunStore,
    job_id: str,
    status: str,
    at: str,
    seconds: float = 1.0,
    error: str | None = None,
    node: str = "node-a",
) -> None:
    """Write a run into the history as the engine would have; unrun fires have no start."""
    start = datetime.fromisoformat(at)
    ran = status not in ("skipped", "missed")
    await store.pool.execute(
        """
        INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, exclusive,
                                 started_at, finished_at, error, node)
        VALUES ($1, 'schedule', $2, $3, true, $4, $5, $6, $7)
        """,
        job_id,
        status,
        start,
        start if ran else None,
        start + timedelta(seconds=seconds),
        error,
        node,
    )


async def delivery_state(store: RunStore, day: str) -> str | None:
    return await store.pool.fetchval(
        "SELECT state FROM maintd.report_deliveries WHERE job_id = 'morning_report' AND report_date = $1",
        datetime.fromisoformat(day).date(),
    )


async def test_report_arrives_with_subject_both_parts_and_recipients(
    smtp: tuple[MailSink, int], start_engine: StartEngine, store: RunStore
) -> None:
    sink, port = smtp
    xss = "Traceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: <script>alert('x')</script>"
    # History of jobs no longer configured, so that no catch-up run of theirs changes it.
    await add_run(store, "cleanup", "failed", "2026-05-10T12:00:00+02:00", error="before the period")
    await add_run(store, "cleanup", "succeeded", "2026-05-11T00:00:00+02:00", seconds=2.5)
    await add_run(store, "vacuum", "lost", "2026-05-11T03:00:00+02:00", seconds=95, error="lost: node-b stopped")
    await add_run(store, "vacuum", "skipped", "2026-05-11T04:00:00+02:00", error="skipped: the job is paused")
    await add_run(store, "cleanup", "failed", "2026-05-11T12:00:00+02:00", error=xss)
    engine = await start_engine(clock=lambda: NOW, config=report_config(port))

    run = await run_report(engine)

    assert run.status == "succeeded", run.error
    assert run.result["sent"] is True and run.result["report_date"] == "2026-05-11"
    [envelope] = sink.received
    assert envelope.mail_from == "maintd@example.com"
    assert envelope.rcpt_tos == TO
    [message] = sink.messages()
    assert sink.subjects() == ["[maintd] Daily report 2026-05-11: 1 failed, 1 lost, 2 items need attention"]
    assert message["To"] == "ops@example.com, dba@example.com"
    assert message["Message-ID"] == "<daily-report.morning_report.2026-05-11@example.com>"
    assert message.get_content_type() == "multipart/alternative"
    text, html = parts(message)
    assert "Daily report for 2026-05-11 (Europe/Berlin)" in text
    assert "From 2026-05-11 00:00 CEST to 2026-05-12 00:00 CEST (24 hours)." in text
    assert "* cleanup: 1 failure in a row, last success 2026-05-11 00:00; last error: RuntimeError: <script>" in text
    assert "FAILURES (2)" in text  # the failure of 05-10 is not in the period
    assert "vacuum: 1 skipped fire at 2026-05-11 04:00: the job is paused" in text
    assert "  vacuum   " in text and "1m 35s" in text  # the lost run is the longest
    assert "RuntimeError: &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "<script>" not in html


async def test_triggering_again_the_same_day_sends_nothing(
    smtp: tuple[MailSink, int], start_engine: StartEngine, store: RunStore
) -> None:
    sink, port = smtp
    engine = await start_engine(clock=lambda: NOW, config=report_config(port))
    first = await run_report(engine)
    second = await run_report(engine)

    assert len(sink.received) == 1
    assert first.result["sent"] is True
    assert second.status == "succeeded"
    assert second.result == {
        "sent": False,
        "report_date": "2026-05-11",
        "reason": f"already sent at 2026-05-12T07:30:00+00:00 by run {first.id}",
    }
    assert await delivery_state(store, "2026-05-11") == "sent"


async def test_refusal_fails_the_run_with_the_server_answer_and_a_later_run_sends_it(
    smtp: tuple[MailSink, int], start_engine: StartEngine, store: RunStore
) -> None:
    sink, port = smtp
    sink.refuse = 1
    engine = await start_engine(clock=lambda: NOW, config=report_config(port))

    refused = await run_report(engine)
    assert refused.status == "failed"
    assert "550 5.7.1 Relaying denied" in (refused.error or "")
    assert sink.received == []
    assert await delivery_state(store, "2026-05-11") == "failed"

    later = await run_report(engine)
    assert later.status == "succeeded" and later.result["sent"] is True
    assert len(sink.received) == 1
    assert await delivery_state(store, "2026-05-11") == "sent"


async def test_server_down_fails_the_run_and_marks_nothing_sent(start_engine: StartEngine, store: RunStore) -> None:
    port = _free_port()  # nothing listens there
    engine = await start_engine(clock=lambda: NOW, config=report_config(port))
    run = await run_report(engine)
    assert run.status == "failed"
    assert f"SMTP server 127.0.0.1:{port} did not take the message" in (run.error or "")
    assert await delivery_state(store, "2026-05-11") == "failed"


async def test_two_replicas_triggered_at_once_send_one_email(
    smtp: tuple[MailSink, int], start_engine: StartEngine
) -> None:
    sink, port = smtp
    sink.delay_s = 0.5  # the first send is still going when the second run claims the day
    # overlap = "allow": the runs really run at once; only the delivery claim keeps the mail single.
    config = report_config(port, overlap="allow")
    replicas = [await start_engine(config, node=node, clock=lambda: NOW) for node in ("node-a", "node-b")]

    started = await asyncio.gather(*(replica.admin.trigger("morning_report", OPS) for replica in replicas))
    for replica in replicas:
        await replica.idle()

    runs = [await replicas[0].admin.get_run(s.run_id) for s in started]
    assert {run.node for run in runs} == {"node-a", "node-b"}
    assert [run.status for run in runs] == ["succeeded", "succeeded"]
    assert sorted(run.result["sent"] for run in runs) == [False, True]
    [winner] = [run for run in runs if run.result["sent"]]
    [loser] = [run for run in runs if not run.result["sent"]]
    assert loser.result["reason"] in (
        f"being sent by run {winner.id} on {winner.node}",
        f"already sent at 2026-05-12T07:30:00+00:00 by run {winner.id}",
    )
    assert len(sink.received) == 1


@pytest.mark.parametrize(
    ("claimer_status", "sends"),
    [
        ("lost", True),  # its replica died mid-send: the report may not have gone out, send it
        ("running", False),  # still sending: leave it be
    ],
)
async def test_a_claim_is_taken_over_only_once_its_run_has_ended(
    smtp: tuple[MailSink, int], start_engine: StartEngine, store: RunStore, claimer_status: str, sends: bool
) -> None:
    sink, port = smtp
    claimer = await store.pool.fetchval(
        """
        INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, exclusive, started_at, finished_at, node)
        VALUES ('morning_report', 'schedule', $1, $2, false, $2, $3, 'node-b')
        RETURNING id
        """,
        claimer_status,
        NOW,
        None if claimer_status == "running" else NOW,
    )
    await store.pool.execute(
        """
        INSERT INTO maintd.report_deliveries (job_id, report_date, period_start, period_end, state, run_id, node,
                                              claimed_at, recipients, message_id)
        VALUES ('morning_report', '2026-05-11', $1, $1, 'sending', $2, 'node-b', $1, '{}', '<x@y>')
        """,
        NOW,
        claimer,
    )
    engine = await start_engine(clock=lambda: NOW, config=report_config(port, overlap="allow"))
    run = await run_report(engine)
    assert run.result["sent"] is sends
    assert len(sink.received) == int(sends)
    assert await delivery_state(store, "2026-05-11") == ("sent" if sends else "sending")


async def test_sessions_are_counted_from_a_schema_qualified_table(
    smtp: tuple[MailSink, int], start_engine: StartEngine, store: RunStore
) -> None:
    sink, port = smtp
    await store.pool.execute(
        """
        CREATE SCHEMA app;
        CREATE TABLE app."UserSessions" (id serial, created timestamptz, expires timestamptz);
        INSERT INTO app."UserSessions" (created, expires) VALUES
            ('2026-05-10 23:00+02', '2026-05-11 01:00+02'),  -- expired in the period
            ('2026-05-11 10:00+02', '2026-05-11 22:00+02'),  -- created and expired in the period
            ('2026-05-11 20:00+02', '2026-05-12 20:00+02'),  -- created in the period, active now
            ('2026-05-12 09:00+02', '2026-05-12 09:10+02'),  -- expired today: awaiting cleanup
            ('2026-05-12 09:00+02', '2026-05-13 09:00+02');  -- active now
        """
    )
    # A cleanup run of the period, its result as cleanup_sessions returns it.
    await store.pool.execute(
        """
        INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, exclusive, started_at, finished_at, node,
                                 result)
        VALUES ('cleanup', 'schedule', 'succeeded', $1, true, $1, $1, 'node-a', $2)
        """,
        datetime.fromisoformat("2026-05-11T00:00:00+02:00"),
        {"table": '"app"."UserSessions"', "deleted": 7},
    )
    params = {"sessions_table": "app.UserSessions", "expires_column": "expires", "created_column": "created"}
    engine = await start_engine(clock=lambda: NOW, config=report_config(port, params=params))
    assert (await run_report(engine)).status == "succeeded"
    text, _ = parts(sink.messages()[0])
    assert (
        "SESSIONS (app.UserSessions)\n"
        "  created in the period *           2\n"
        "  expired in the period *           2\n"
        "  deleted by cleanup in the period  7\n"
        "  active now                        2\n"
        "  expired, awaiting cleanup         3\n"
    ) in text


async def test_a_missing_sessions_table_is_reported_and_the_report_still_goes_out(
    smtp: tuple[MailSink, int], start_engine: StartEngine
) -> None:
    sink, port = smtp
    engine = await start_engine(
        clock=lambda: NOW, config=report_config(port, params={"sessions_table": "nope", "expires_column": "expires"})
    )
    assert (await run_report(engine)).status == "succeeded"
    text, _ = parts(sink.messages()[0])
    assert 'Could not count them: relation "nope" does not exist' in text


async def test_without_smtp_the_run_fails_saying_so(start_engine: StartEngine, store: RunStore) -> None:
    engine = await start_engine(clock=lambda: NOW, config=report_config(None))
    run = await run_report(engine)
    assert run.status == "failed"
    assert "job 'morning_report' sends mail, but the config has no [smtp] section" in (run.error or "")
    assert await delivery_state(store, "2026-05-11") is None


# -- frozen clock -------------------------------------------------------------


@pytest.mark.parametrize(
    ("frozen_at", "start", "end", "hours"),
    [
        # The spring-forward day itself: the jump is at 02:00, after the period.
        ("2026-03-29T08:59:59+02:00", "2026-03-28T00:00:00+01:00", "2026-03-29T00:00:00+01:00", 24),
        # The day after: the period is the 23-hour day.
        ("2026-03-30T08:59:59+02:00", "2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00", 23),
        # The fall-back day: the period is the ordinary day before.
        ("2026-10-25T08:59:59+01:00", "2026-10-24T00:00:00+02:00", "2026-10-25T00:00:00+02:00", 24),
        # The day after: the period is the 25-hour day.
        ("2026-10-26T08:59:59+01:00", "2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00", 25),
    ],
)
async def test_fires_at_nine_once_and_reports_the_previous_local_day(
    smtp: tuple[MailSink, int], db_dsn: str, frozen_at: str, start: str, end: str, hours: int
) -> None:
    sink, port = smtp
    async with frozen_engine(report_config(port), dsn=db_dsn, at=frozen_at) as daemon:
        await daemon.advance(timedelta(seconds=1))
        [run] = await daemon.runs("morning_report")
        nine = datetime.fromisoformat(frozen_at) + timedelta(seconds=1)
        assert (run.scheduled_for, run.trigger, run.status) == (nine, "schedule", "succeeded")
        assert run.result["period"] == [datetime.fromisoformat(t).astimezone(UTC).isoformat() for t in (start, end)]
        day = start[:10]
        assert sink.subjects()[0].startswith(f"[maintd] Daily report {day}:")
        text, _ = parts(sink.messages()[0])
        assert f"({hours} hours" in text

        # Up to a second before the next day's fire: still the one mail.
        await daemon.advance(timedelta(days=1, seconds=-2))
        assert len(await daemon.runs("morning_report")) == 1
        assert len(sink.received) == 1


async def test_a_retry_sends_the_report_the_server_refused(smtp: tuple[MailSink, int], db_dsn: str) -> None:
    sink, port = smtp
    sink.refuse = 1
    config = report_config(port, retries=1)
    async with frozen_engine(config, dsn=db_dsn, at="2026-05-12T08:59:59+02:00") as daemon:
        await daemon.advance(timedelta(seconds=1))
        [refused] = await daemon.runs("morning_report")
        assert refused.status == "failed" and "550 5.7.1 Relaying denied" in (refused.error or "")
        assert sink.received == []

        await daemon.advance(timedelta(minutes=1))  # past the retry's backoff
        retry = (await daemon.runs("morning_report"))[-1]
        assert (retry.trigger, retry.attempt, retry.status) == ("retry", 2, "succeeded")
        assert retry.result["report_date"] == "2026-05-11"
        assert len(sink.received) == 1


async def test_a_catch_up_after_midnight_reports_the_day_its_fire_was_for(
    smtp: tuple[MailSink, int], db_dsn: str
) -> None:
    sink, port = smtp
    config = report_config(port)
    async with frozen_engine(config, dsn=db_dsn, at="2026-05-12T08:00:00+02:00"):
        pass
    # Down over the 09:00 fire of 05-12; back just after midnight.
    async with frozen_engine(config, dsn=db_dsn, at="2026-05-13T00:30:00+02:00") as daemon:
        await daemon.settle()
        [run] = await daemon.runs("morning_report")
    assert (run.trigger, run.status) == ("catch_up", "succeeded")
    assert run.result["report_date"] == "2026-05-11"
    assert sink.subjects()[0].startswith("[maintd] Daily report 2026-05-11:")


@pytest.mark.parametrize(
    ("frozen_at", "midnight", "nine"),
    [
        ("2026-06-14T23:59:59+02:00", "2026-06-15T00:00:00+02:00", "2026-06-15T09:00:00+02:00"),
        ("2026-03-28T23:59:59+01:00", "2026-03-29T00:00:00+01:00", "2026-03-29T09:00:00+02:00"),
        ("2026-10-24T23:59:59+02:00", "2026-10-25T00:00:00+02:00", "2026-10-25T09:00:00+01:00"),
    ],
)
async def test_a_maintenance_night_on_a_frozen_clock(
    smtp: tuple[MailSink, int], db_dsn: str, store: RunStore, frozen_at: str, midnight: str, nine: str
) -> None:
    """Both jobs from 23:59:59 Berlin: cleanup at 00:00 deletes only what expired before it, the report
    at 09:00 covers the day before; each fires exactly once, on daylight-saving days too."""
    sink, port = smtp
    await store.pool.execute("CREATE TABLE sessions (id bigserial PRIMARY KEY, expires timestamptz NOT NULL)")
    await store.pool.execute("CREATE INDEX ON sessions (expires)")
    at_midnight = datetime.fromisoformat(midnight)
    await store.pool.executemany(
        "INSERT INTO sessions (expires) VALUES ($1)",
        [(at_midnight + timedelta(seconds=offset),) for offset in (-3600, -1, 0, 1, 3600)],
    )
    config = make_config(
        {
            "cleanup_sessions": {
                "task": "cleanup_sessions",
                "schedule": "0 0 * * *",
                "timezone": "Europe/Berlin",
                "params": {"table": "sessions"},
            },
            "morning_report": {
                "task": "daily_report",
                "schedule": "0 9 * * *",
                "timezone": "Europe/Berlin",
                "params": {"to": TO},
            },
        },
        smtp={"host": "127.0.0.1", "port": port, "from": "maintd@example.com", "security": "none"},
    )
    async with frozen_engine(config, dsn=db_dsn, at=frozen_at) as daemon:
        # To a minute past nine, however long the night (the fall-back night is an hour longer).
        await daemon.advance(datetime.fromisoformat(nine) + timedelta(minutes=1) - daemon.now())
        cleanup = await daemon.runs("cleanup_sessions")
        report = await daemon.runs("morning_report")
    assert [(r.scheduled_for, r.status) for r in cleanup] == [(at_midnight, "succeeded")]
    assert cleanup[0].result["deleted"] == 2  # expired an hour and a second before midnight
    assert await store.pool.fetchval("SELECT count(*) FROM sessions") == 3
    assert [(r.scheduled_for, r.status) for r in report] == [(datetime.fromisoformat(nine), "succeeded")]
    day_before = (at_midnight - timedelta(days=1)).date().isoformat()
    assert [s.split(":")[0] for s in sink.subjects()] == [f"[maintd] Daily report {day_before}"]
