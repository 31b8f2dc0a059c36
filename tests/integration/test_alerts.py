"""Alerts against real parts: PostgreSQL, an HTTP receiver (uvicorn, in process) and an SMTP server (aiosmtpd).

What alerting must do: a failed, timed-out or lost run posts a JSON payload (Slack
text included) and/or sends a mail, optionally only after K failures in a row;
never more than one alert per job per interval, with several replicas; delivery
failures are logged and retried and never reach the run; an overdue job alerts
once. Run with ``-s`` to see a payload as a receiver gets it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, Protocol

import pytest
import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from maintd.jobs.mail import SmtpSettings
from maintd.scheduler.alerts import Alerter
from maintd.scheduler.config.alerts import AlertsConfig
from maintd.scheduler.config.model import Config
from maintd.scheduler.config.reload import diff_configs
from maintd.scheduler.metrics import Metrics
from maintd.scheduler.store.records import Run, run_out
from maintd.scheduler.store.run_store import RunStore, create_pool
from tests.configs import make_config
from tests.engines import StartEngine, run_to_end

pytestmark = pytest.mark.integration

NOW = datetime(2026, 5, 12, 7, 30, tzinfo=UTC)
BOOM = 'Traceback (most recent call last):\n  File "jobs/sql.py", line 40, in run\nRuntimeError: boom\n'
FAST = (0.05, 0.05, 0.05)  # retry delays: the real ones are 1 s, 5 s, 25 s
WAIT_S = 10  # generous bound on anything awaited


# -- an HTTP receiver ----------------------------------------------------------


@dataclass
class Post:
    json: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Receiver:
    """A webhook endpoint: keeps every POST, answers ``answers`` in order then 200, optionally holds answers."""

    url: str
    posts: list[Post] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    hold: asyncio.Event | None = None
    arrived: asyncio.Queue[Post] = field(default_factory=asyncio.Queue)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        post = Post(await request.json(), dict(request.headers))
        self.posts.append(post)
        self.arrived.put_nowait(post)
        if self.hold is not None:
            await self.hold.wait()
        status = self.answers.pop(0) if self.answers else 200
        await Response("ok" if status == 200 else "receiver trouble", status_code=status)(scope, receive, send)

    async def next(self) -> Post:
        return await asyncio.wait_for(self.arrived.get(), WAIT_S)


def _listening_socket() -> socket.socket:
    # Listening before uvicorn starts: connections wait in the backlog, nobody waits for "started".
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    sock = _listening_socket()
    receiver = Receiver(url=f"http://127.0.0.1:{sock.getsockname()[1]}/hooks/T000/SECRET")
    config = uvicorn.Config(receiver, lifespan="off", log_config=None, access_log=False, http="h11", ws="none")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    yield receiver
    if receiver.hold is not None:
        receiver.hold.set()
    server.should_exit = True
    await asyncio.wait_for(task, WAIT_S)
    sock.close()


# -- an SMTP server ------------------------------------------------------------


@dataclass
class MailSink:
    received: list[Envelope] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope)
        return "250 OK"

    def messages(self) -> list[EmailMessage]:
        return [message_from_bytes(e.content, policy=policy.default) for e in self.received]  # type: ignore[misc]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp() -> Iterator[tuple[MailSink, SmtpSettings]]:
    sink = MailSink()
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield (
        sink,
        SmtpSettings.model_validate(
            {"host": "127.0.0.1", "port": port, "from": "maintd@example.com", "security": "none", "timeout_s": 5}
        ),
    )
    controller.stop()


# -- alerters, runs, a clock -----------------------------------------------------


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class MakeAlerter(Protocol):
    def __call__(
        self,
        alerts: dict[str, Any],
        *,
        node: str = ...,
        store: RunStore | None = ...,
        clock: Clock | None = ...,
        smtp: SmtpSettings | None = ...,
        metrics: Metrics | None = ...,
    ) -> Alerter: ...


@pytest.fixture
async def make_alerter(store: RunStore) -> AsyncIterator[MakeAlerter]:
    made: list[Alerter] = []

    def make(
        alerts: dict[str, Any],
        *,
        node: str = "node-a",
        store: RunStore = store,
        clock: Clock | None = None,
        smtp: SmtpSettings | None = None,
        metrics: Metrics | None = None,
    ) -> Alerter:
        alerter = Alerter(
            AlertsConfig.model_validate(alerts),
            store,
            node=node,
            smtp=smtp,
            metrics=metrics,
            clock=clock or Clock(),
            retry_delays=FAST,
        )
        made.append(alerter)
        return alerter

    yield make
    for alerter in made:
        await alerter.close(timedelta(seconds=5))


@pytest.fixture
async def other_store(db_dsn: str) -> AsyncIterator[RunStore]:
    """The same database through a pool of its own: a second replica."""
    pool = await create_pool(db_dsn, max_size=3)
    store = RunStore(pool, db_dsn)
    try:
        yield store
    finally:
        await store.close()
        await pool.close()


async def end_run(store: RunStore, job_id: str, status: str, at: datetime, error: str | None = BOOM) -> Run:
    """A run as the engine records it when it ends (skipped/missed fires never started)."""
    ran = status not in ("skipped", "missed")
    run_id = await store.pool.fetchval(
        """
        INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, exclusive, started_at, finished_at, error, node)
        VALUES ($1, 'schedule', $2, $3, true, $4, $5, $6, 'node-a')
        RETURNING id
        """,
        job_id,
        status,
        at - timedelta(seconds=2),
        at - timedelta(seconds=2) if ran else None,
        at,
        None if status == "succeeded" else error,
    )
    run = await store.get_run(run_id)
    assert run is not None
    return run


def hook(receiver: Receiver, **alerts: Any) -> dict[str, Any]:
    return {"webhooks": [{"url": receiver.url, "headers": {"Authorization": "Bearer hook-token"}}], **alerts}


def logged(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    """The structlog events of ``maintd.alerts`` named ``event``."""
    return [
        record.msg
        for record in caplog.records
        if record.name == "maintd.alerts" and isinstance(record.msg, dict) and record.msg.get("event") == event
    ]


# -- tests -----------------------------------------------------------------------


async def test_a_failed_run_posts_the_payload(receiver: Receiver, make_alerter: MakeAlerter, store: RunStore) -> None:
    alerter = make_alerter(hook(receiver), node="node-b")
    run = await end_run(store, "vacuum_events", "failed", NOW - timedelta(minutes=1))
    await alerter.run_ended(run)
    await alerter.idle()
    assert len(receiver.posts) == 1
    post = receiver.posts[0]
    print("\nwebhook payload as received:\n" + json.dumps(post.json, indent=2))
    assert post.headers["authorization"] == "Bearer hook-token"
    assert post.headers["content-type"] == "application/json"
    assert post.json == {
        "text": f"maintd: job vacuum_events failed (run {run.id} on node-a): RuntimeError: boom",
        "event": "run_failed",
        "job_id": "vacuum_events",
        "run": run_out(run).model_dump(mode="json"),
        "consecutive_failures": 1,
        "last_success": None,
        "expect_success_within": None,
        "node": "node-b",
        "at": "2026-05-12T07:30:00+00:00",
    }
    assert post.json["run"]["finished_at"] == "2026-05-12T07:29:00+00:00"
    assert post.json["run"]["error"] == BOOM


@pytest.mark.parametrize("status", ["timed_out", "lost"])
async def test_timed_out_and_lost_runs_alert_too(
    receiver: Receiver, make_alerter: MakeAlerter, store: RunStore, status: str
) -> None:
    alerter = make_alerter(hook(receiver))
    await alerter.run_ended(await end_run(store, "vacuum_events", status, NOW, error="gone"))
    await alerter.idle()
    assert [post.json["event"] for post in receiver.posts] == [f"run_{status}"]


async def test_after_three_failures_in_a_row_only_the_third_alerts_and_a_success_resets(
    receiver: Receiver, make_alerter: MakeAlerter, store: RunStore
) -> None:
    alerter = make_alerter(hook(receiver, after_failures=3, min_interval="0s"))
    at = NOW - timedelta(hours=10)

    async def end(status: str) -> None:
        nonlocal at
        at += timedelta(minutes=10)
        await alerter.run_ended(await end_run(store, "vacuum_events", status, at))
        await alerter.idle()

    await end("failed")
    await end("timed_out")
    await end("skipped")  # a fire that did not run neither counts nor breaks the streak
    assert receiver.posts == []
    await end("failed")
    assert [post.json["consecutive_failures"] for post in receiver.posts] == [3]
    assert receiver.posts[0].json["text"].startswith("maintd: job vacuum_events failed (run ")
    assert ", 3 in a row): RuntimeError: boom" in receiver.posts[0].json["text"]
    await end("lost")  # still failing: alerts again, as min_interval (here none) allows
    assert [post.json["consecutive_failures"] for post in receiver.posts] == [3, 4]
    await end("succeeded")
    await end("failed")
    await end("failed")
    assert len(receiver.posts) == 2
    await end("failed")
    assert [post.json["consecutive_failures"] for post in receiver.posts] == [3, 4, 3]


@pytest.mark.parametrize("min_interval", ["1h", "0s"])
async def test_two_replicas_racing_for_one_failure_send_one_alert(
    receiver: Receiver, make_alerter: MakeAlerter, store: RunStore, other_store: RunStore, min_interval: str
) -> None:
    a = make_alerter(hook(receiver, min_interval=min_interval), node="node-a")
    b = make_alerter(hook(receiver, min_interval=min_interval), node="node-b", store=other_store)
    for round_ in range(5):
        run = await end_run(store, f"job{round_}", "failed", NOW)
        await asyncio.gather(a.run_ended(run), b.run_ended(run))
        await asyncio.gather(a.idle(), b.idle())
    assert sorted(post.json["job_id"] for post in receiver.posts) == [f"job{n}" for n in range(5)]
    senders = await store.pool.fetch("SELECT job_id, node, run_id FROM maintd.alert_state WHERE kind = 'run'")
    assert len(senders) == 5


async def test_min_interval_holds_back_the_same_job_but_not_another(
    receiver: Receiver, make_alerter: MakeAlerter, store: RunStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    alerter = make_alerter(hook(receiver, min_interval="1h"), clock=clock)

    async def fail(job_id: str) -> None:
        await alerter.run_ended(await end_run(store, job_id, "failed", clock.now))
        await alerter.idle()

    await fail("vacuum_events")
    clock.now += timedelta(minutes=59)
    await fail("vacuum_events")
    await fail("cleanup_sessions")
    assert [post.json["job_id"] for post in receiver.posts] == ["vacuum_events", "cleanup_sessions"]
    assert logged(caplog, "alert_suppressed")[0]["job_id"] == "vacuum_events"
    clock.now += timedelta(minutes=1)
    await fail("vacuum_events")
    assert [post.json["job_id"] for post in receiver.posts] == ["vacuum_events", "cleanup_sessions", "vacuum_events"]
    assert receiver.posts[2].json["consecutive_failures"] == 3


async def test_a_failing_receiver_is_retried_and_the_caller_never_waits(
    receiver: Receiver, make_alerter: MakeAlerter, store: RunStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    metrics = Metrics()
    alerter = make_alerter(hook(receiver), metrics=metrics)
    receiver.answers = [500, 500]
    receiver.hold = asyncio.Event()  # the receiver sits on its answers until released
    await asyncio.wait_for(alerter.run_ended(await end_run(store, "vacuum_events", "failed", NOW)), WAIT_S)
    first = await receiver.next()  # the POST arrived after run_ended had returned ...
    assert alerter._tasks  # ... and its delivery is still pending
    receiver.hold.set()
    await asyncio.wait_for(alerter.idle(), WAIT_S)
    assert len(receiver.posts) == 3
    assert all(post.json == first.json for post in receiver.posts)
    failures = logged(caplog, "alert_delivery_failed")
    assert [(f["attempt"], f["reason"], f["channel"]) for f in failures] == [
        (1, "HTTP 500 Internal Server Error: receiver trouble", "webhook"),
        (2, "HTTP 500 Internal Server Error: receiver trouble", "webhook"),
    ]
    assert failures[0]["target"] == receiver.url.split("/hooks")[0]  # the secret path stays out of logs
    assert [sent["attempt"] for sent in logged(caplog, "alert_sent")] == [3]
    assert metrics.registry.get_sample_value("maintd_alerts_sent_total", {"channel": "webhook", "outcome": "sent"}) == 1


async def test_an_unreachable_webhook_never_reaches_the_caller(
    make_alerter: MakeAlerter, store: RunStore, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    alerter = make_alerter({"webhooks": [{"url": f"http://127.0.0.1:{_free_port()}/hook"}]}, metrics=metrics)
    await alerter.run_ended(await end_run(store, "vacuum_events", "failed", NOW))
    await alerter.idle()
    given_up = logged(caplog, "alert_not_delivered")
    assert [(g["attempts"], g["reason"].split(":")[0]) for g in given_up] == [(4, "ConnectError")]
    assert len(logged(caplog, "alert_delivery_failed")) == 3
    assert (
        metrics.registry.get_sample_value("maintd_alerts_sent_total", {"channel": "webhook", "outcome": "failed"}) == 1
    )


async def test_a_receiver_refusing_the_request_is_not_retried(
    receiver: Receiver, make_alerter: MakeAlerter, store: RunStore, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.answers = [404]
    alerter = make_alerter(hook(receiver))
    await alerter.run_ended(await end_run(store, "vacuum_events", "failed", NOW))
    await alerter.idle()
    assert len(receiver.posts) == 1
    assert [g["reason"] for g in logged(caplog, "alert_not_delivered")] == ["HTTP 404 Not Found: receiver trouble"]


async def test_close_waits_for_deliveries_only_as_long_as_it_is_told(
    receiver: Receiver, make_alerter: MakeAlerter, store: RunStore, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.hold = asyncio.Event()
    alerter = make_alerter(hook(receiver))
    await alerter.run_ended(await end_run(store, "vacuum_events", "failed", NOW))
    await receiver.next()
    await asyncio.wait_for(alerter.close(timedelta(milliseconds=200)), WAIT_S)
    assert not alerter._tasks
    assert logged(caplog, "alerts_abandoned")[0]["pending"] == 1
    await alerter.run_ended(await end_run(store, "vacuum_events", "failed", NOW + timedelta(hours=2)))  # closed
    assert not alerter._tasks


async def test_alert_mail_arrives_with_subject_and_the_end_of_the_traceback(
    smtp: tuple[MailSink, SmtpSettings], make_alerter: MakeAlerter, store: RunStore
) -> None:
    sink, settings = smtp
    alerter = make_alerter({"email": {"to": ["ops@example.com", "dba@example.com"]}}, smtp=settings)
    run = await end_run(store, "vacuum_events", "timed_out", NOW, error="timed out after 10m")
    failed = await end_run(store, "cleanup_sessions", "failed", NOW)
    await alerter.run_ended(run)
    await alerter.run_ended(failed)
    await alerter.idle()
    messages = {message["Subject"]: message for message in sink.messages()}
    assert set(messages) == {
        f"[maintd] vacuum_events timed out (run {run.id})",
        f"[maintd] cleanup_sessions failed (run {failed.id})",
    }
    message = messages[f"[maintd] cleanup_sessions failed (run {failed.id})"]
    assert message["From"] == "maintd@example.com"
    assert message["To"] == "ops@example.com, dba@example.com"
    assert sorted(sink.received[0].rcpt_tos) == ["dba@example.com", "ops@example.com"]
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content().replace("\r\n", "\n")
    assert text.startswith(f"maintd: job cleanup_sessions failed (run {failed.id} on node-a): RuntimeError: boom\n")
    assert f"Run:        {failed.id} (trigger schedule, attempt 1)" in text
    assert "Error (its end):\n" + BOOM in text


async def test_an_overdue_job_alerts_once_per_episode_on_any_replica(
    receiver: Receiver, make_alerter: MakeAlerter, store: RunStore, other_store: RunStore
) -> None:
    window = timedelta(hours=26)
    a = make_alerter(hook(receiver), node="node-a")
    b = make_alerter(hook(receiver), node="node-b", store=other_store)
    await asyncio.gather(a.job_overdue("backup", None, window, NOW), b.job_overdue("backup", None, window, NOW))
    await asyncio.gather(a.idle(), b.idle())
    # Later checks, and a replica started since (nothing in memory), say nothing new.
    later = NOW + timedelta(hours=1)
    restarted = make_alerter(hook(receiver), node="node-c")
    for alerter in (a, b, restarted):
        await alerter.job_overdue("backup", None, window, later)
        await alerter.idle()
    assert [post.json["event"] for post in receiver.posts] == ["job_overdue"]
    first = receiver.posts[0].json
    assert first["text"] == "maintd: job backup is overdue: no success within 1d 02h (it never succeeded)"
    assert (first["run"], first["last_success"], first["expect_success_within"]) == (None, None, "1d 02h")
    # A failure meanwhile is other news: its own alert, not held back by the overdue one.
    await a.run_ended(await end_run(store, "backup", "failed", later))
    await a.idle()
    assert [post.json["event"] for post in receiver.posts] == ["job_overdue", "run_failed"]
    # A success ends the episode; the next overdue spell alerts again, once.
    success = await end_run(store, "backup", "succeeded", later + timedelta(minutes=5))
    await a.run_ended(success)
    assert success.finished_at is not None
    much_later = success.finished_at + window + timedelta(minutes=1)
    for alerter in (b, a, restarted):
        await alerter.job_overdue("backup", success.finished_at, window, much_later)
        await alerter.idle()
    assert [post.json["event"] for post in receiver.posts] == ["job_overdue", "run_failed", "job_overdue"]
    assert receiver.posts[2].json["last_success"] == success.finished_at.isoformat()
    assert receiver.posts[2].json["node"] == "node-b"


async def test_a_jobs_own_alert_after_failures_holds_its_alerts_back_and_a_reload_moves_it(
    receiver: Receiver, start_engine: StartEngine
) -> None:
    def config(flaky_k: int) -> Config:
        jobs = {
            "flaky": {"task": "tests.tasks:fail", "schedule": "@yearly", "alert_after_failures": flaky_k},
            "fragile": {"task": "tests.tasks:fail", "schedule": "@yearly"},  # [alerts].after_failures: 1
        }
        return make_config(jobs, alerts=hook(receiver, min_interval="0s"))

    first = config(3)
    engine = await start_engine(first)

    async def fail(job_id: str) -> None:
        assert (await run_to_end(engine, job_id)).status == "failed"
        await engine.alerter.idle()

    def alerted() -> list[tuple[str, int]]:
        return [(post.json["job_id"], post.json["consecutive_failures"]) for post in receiver.posts]

    await fail("fragile")
    await fail("flaky")
    await fail("flaky")
    assert alerted() == [("fragile", 1)]
    await fail("flaky")
    assert alerted() == [("fragile", 1), ("flaky", 3)]

    # A reload moves the job's K: its 4th failure in a row is now under it.
    second = config(5)
    diff = diff_configs(first, second)
    assert diff.changed == {"flaky": {"alert_after_failures": [3, 5]}}
    await engine.apply_config(second, diff)
    await fail("flaky")
    assert alerted() == [("fragile", 1), ("flaky", 3)]
    await fail("flaky")
    assert alerted() == [("fragile", 1), ("flaky", 3), ("flaky", 5)]
