"""The run store's contract: each scenario runs on the real RunStore (PostgreSQL) and on
tests/memory_store.MemoryStore, with the same assertions, so the unit ring's fake answers
as the database does.

Results are compared whole (``dataclasses.asdict``), ids included: both stores draw ids
as an identity column does. What only the database's clock decides (when a reaper ended
a run, how long a run has been silent) is checked against that clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from maintd.admin_api.interface import AuditOut
from maintd.scheduler.run_logs import DROPPED_EVENT, LogBatch, LogLine
from maintd.scheduler.store.records import LateOutcome, Run
from maintd.scheduler.store.run_store import (
    Claim,
    ClaimBlockers,
    EarlierRequest,
    IdempotencyKey,
    NewAuditEntry,
    RunStore,
    create_pool,
)
from tests.memory_store import MemoryStore

pytestmark = pytest.mark.integration

FIRE = datetime(2026, 5, 1, 0, 0, tzinfo=UTC)
LATER = FIRE + timedelta(days=1)
LATEST = FIRE + timedelta(days=2)
STARTED = FIRE + timedelta(seconds=1)
ENDED = FIRE + timedelta(minutes=5)
LEASE = timedelta(seconds=30)


class Backend:
    """A store under test, and the two things a test does behind its back: ageing
    heartbeats, as a frozen owner would let them age."""

    def __init__(self, store: RunStore) -> None:
        self.store = store

    async def set_heartbeat(self, run_ids: list[int], at: datetime) -> None:
        raise NotImplementedError

    async def set_node_heartbeat(self, node: str, at: datetime) -> None:
        raise NotImplementedError

    async def now(self) -> datetime:
        return await self.store.ping(timeout=5)


class Postgres(Backend):
    async def set_heartbeat(self, run_ids: list[int], at: datetime) -> None:
        await self.store.pool.execute("UPDATE maintd.runs SET heartbeat_at = $1 WHERE id = ANY($2)", at, run_ids)

    async def set_node_heartbeat(self, node: str, at: datetime) -> None:
        await self.store.pool.execute("UPDATE maintd.nodes SET heartbeat_at = $2 WHERE node = $1", node, at)


class Memory(Backend):
    store: MemoryStore

    async def set_heartbeat(self, run_ids: list[int], at: datetime) -> None:
        for run_id in run_ids:
            self.store.runs[run_id] = dataclasses.replace(self.store.runs[run_id], heartbeat_at=at)

    async def set_node_heartbeat(self, node: str, at: datetime) -> None:
        self.store.nodes[node]["heartbeat_at"] = at


@pytest.fixture(params=["postgres", "memory"])
def contract_dsn(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """A fresh database for the PostgreSQL run, none for the in-memory one."""
    yield request.getfixturevalue("db_dsn") if request.param == "postgres" else None


@pytest.fixture
async def backend(contract_dsn: str | None) -> AsyncIterator[Backend]:
    if contract_dsn is None:
        yield Memory(MemoryStore())
        return
    pool = await create_pool(contract_dsn, max_size=3)
    store = RunStore(pool, contract_dsn)
    try:
        yield Postgres(store)
    finally:
        await store.close()
        await pool.close()


def claim(
    node: str = "node-a",
    *,
    job_id: str = "nightly",
    fire: datetime = FIRE,
    attempt: int = 1,
    exclusive: bool = True,
    trigger: str = "schedule",
    ignore_pause: bool = False,
    triggered_by: str | None = None,
) -> Claim:
    return Claim(
        job_id=job_id,
        trigger=trigger,
        scheduled_for=fire,
        attempt=attempt,
        exclusive=exclusive,
        started_at=STARTED,
        triggered_by=triggered_by,
        node=node,
        ignore_pause=ignore_pause,
    )


def dump(run: Run | None, *volatile: str) -> dict[str, Any] | None:
    """A run as compared across stores, without the fields the database's clock sets."""
    return None if run is None else {k: v for k, v in dataclasses.asdict(run).items() if k not in volatile}


def running(run_id: int, node: str = "node-a", **fields: Any) -> Run:
    """A run just claimed by ``claim()``, with these fields changed."""
    values: dict[str, Any] = {
        "id": run_id,
        "job_id": "nightly",
        "trigger": "schedule",
        "status": "running",
        "scheduled_for": FIRE,
        "started_at": STARTED,
        "finished_at": None,
        "result": None,
        "error": None,
        "triggered_by": None,
        "node": node,
        "attempt": 1,
        "progress": None,
        "late_outcome": None,
    }
    return Run(**{**values, **fields})


def pg_text(at: datetime) -> str:
    """A timestamptz as PostgreSQL casts it to text in a UTC session."""
    text = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if at.microsecond:
        text += f".{at.microsecond:06d}".rstrip("0")
    return text + "+00"


async def assert_about_now(backend: Backend, at: datetime | None) -> None:
    now = await backend.now()
    assert at is not None and now - timedelta(seconds=10) <= at <= now


def audit(action: str = "pause", target: str = "nightly", **fields: Any) -> NewAuditEntry:
    return NewAuditEntry(at=FIRE, principal="ops", action=action, target=target, **fields)


# -- claims and conflicts ---------------------------------------------------------


async def test_a_fire_key_is_won_once_and_a_refused_claim_uses_up_an_id(backend: Backend) -> None:
    store = backend.store
    first = await store.claim_run(claim("node-a"))
    assert first == running(1)
    assert await store.claim_run(claim("node-b")) is None
    # The fire's next attempt is another key; the refused claim drew id 2.
    second = await store.claim_run(claim("node-b", attempt=2, exclusive=False, trigger="retry"))
    assert second == running(3, "node-b", attempt=2, trigger="retry")
    assert await store.list_runs(job_id="nightly", status=None, limit=10) == [second, running(1)]


async def test_an_exclusive_job_has_one_running_run_and_manual_runs_hold_no_fire_key(backend: Backend) -> None:
    store = backend.store
    first = await store.claim_run(claim("a"))
    assert first is not None
    assert await store.claim_run(claim("b", fire=LATER)) is None
    assert await store.claim_run(claim("b", fire=LATER, trigger="manual")) is None
    assert await store.running_run_of_job("nightly") == first
    # Side by side when not exclusive; manual runs of the same moment do not collide.
    side = await store.claim_run(claim("b", fire=LATER, exclusive=False))
    manual = [await store.claim_run(claim("c", fire=FIRE, exclusive=False, trigger="manual")) for _ in range(2)]
    assert side is not None and all(run is not None for run in manual)
    assert [run.id for run in manual if run] == [5, 6]
    assert await store.running_counts() == {"nightly": 4}
    # The fire of a manual run is no fire key: not taken, not got.
    assert await store.taken_fires([("nightly", FIRE)]) == {("nightly", FIRE)}  # the first claim's
    finished = await store.finish_run(first.id, "succeeded", ENDED, {"ok": True}, None)
    assert finished is not None and finished.status == "succeeded"
    assert await store.running_run_of_job("nightly") is None
    assert (await store.claim_run(claim("b", fire=LATEST))) is not None
    assert await store.running_counts() == {"nightly": 4}


async def test_a_paused_job_refuses_fire_claims_without_drawing_ids(backend: Backend) -> None:
    store = backend.store
    await store.set_paused("nightly", True, FIRE, "ops", audit())
    assert await store.claim_run(claim()) is None
    assert await store.claim_fires([("nightly", FIRE, True), ("other", FIRE, True)], STARTED, "a") == [
        running(1, "a", job_id="other")
    ]
    assert await store.claim_ahead([("nightly", LATER, True)], "a") == []
    forced = await store.claim_run(claim(trigger="manual", ignore_pause=True, triggered_by="ops"))
    assert forced == running(2, trigger="manual", triggered_by="ops")
    blockers = await store.claim_blockers("nightly", None, 1)
    assert (blockers.fire_run_id, blockers.paused, blockers.running_id) == (None, True, 2)
    await store.set_paused("nightly", False, LATER, "ops", audit("resume"))
    assert await store.claim_fires([("nightly", LATER, False)], STARTED, "a") != []


async def test_claim_fires_inserts_in_key_order_and_the_earlier_fire_of_a_job_wins_its_slot(backend: Backend) -> None:
    store = backend.store
    held = await store.claim_run(claim("other", job_id="b-job", fire=FIRE, exclusive=False))
    assert held is not None and held.id == 1
    fires = [
        ("c-job", LATER, True),
        ("c-job", FIRE, True),  # taken before LATER of the same exclusive job
        ("b-job", FIRE, True),  # held already
        ("a-job", FIRE, False),
        ("a-job", LATER, False),
    ]
    won = await store.claim_fires(fires, STARTED, "node-a")
    # Ids in insert order, each insert (refused ones too) drawing one.
    assert [(run.id, run.job_id, run.scheduled_for) for run in won] == [
        (2, "a-job", FIRE),
        (3, "a-job", LATER),
        (5, "c-job", FIRE),
    ]
    assert all(run.started_at == STARTED and run.node == "node-a" and run.trigger == "schedule" for run in won)
    again = await store.claim_fires([("c-job", LATER, True)], STARTED, "node-b")
    assert again == []
    blockers = await store.claim_blockers("c-job", LATER, 1)
    assert (blockers.fire_run_id, blockers.paused, blockers.running_id) == (None, False, 5)
    assert blockers.running_silent_s is not None and 0 <= blockers.running_silent_s < 10


async def test_a_fire_claimed_ahead_starts_once(backend: Backend) -> None:
    store = backend.store
    [ahead] = await store.claim_ahead([("nightly", FIRE, True)], "node-a")
    assert ahead == running(1, started_at=None)
    assert await store.claim_ahead([("nightly", FIRE, True)], "node-b") == []
    await store.mark_started([(ahead.id, STARTED)])
    assert await store.get_run(ahead.id) == running(1)
    await store.mark_started([(ahead.id, ENDED), (99, ENDED)])  # the first start stands
    assert await store.get_run(ahead.id) == running(1)


async def test_taken_fires_are_first_attempts_of_fires_run_or_not(backend: Backend) -> None:
    store = backend.store
    await store.claim_run(claim(job_id="a", exclusive=False))
    await store.claim_run(claim(job_id="b", attempt=2, trigger="retry"))
    await store.claim_run(claim(job_id="c", trigger="manual"))
    await store.record_unrun_fire("d", "schedule", "skipped", FIRE, 1, FIRE, "skipped: paused", "n")
    tokyo = FIRE.astimezone(ZoneInfo("Asia/Tokyo"))
    asked = [("a", FIRE), ("b", FIRE), ("c", FIRE), ("d", tokyo), ("e", FIRE)]
    taken = await store.taken_fires(asked)
    assert taken == {("a", FIRE), ("d", FIRE)}
    assert all(at.tzinfo == UTC for _, at in taken)


async def test_claim_blockers_name_the_fire_row_the_pause_and_the_running_run(backend: Backend) -> None:
    store = backend.store
    assert await store.claim_blockers("nightly", FIRE, 1) == ClaimBlockers(None, False, None, None)
    unrun = await store.record_unrun_fire("nightly", "schedule", "missed", FIRE, 1, FIRE, "missed", "n")
    run = await store.claim_run(claim(fire=LATER))
    assert unrun is not None and run is not None
    silent_since = (await backend.now()) - timedelta(seconds=90)
    await backend.set_heartbeat([run.id], silent_since)
    blockers = await store.claim_blockers("nightly", FIRE, 1)
    assert (blockers.fire_run_id, blockers.paused, blockers.running_id) == (unrun.id, False, run.id)
    assert blockers.running_silent_s is not None and 90 <= blockers.running_silent_s < 100
    assert (await store.claim_blockers("nightly", FIRE, 2)).fire_run_id is None


async def test_batch_calls_refuse_an_empty_batch(backend: Backend) -> None:
    store = backend.store
    for call in (
        store.claim_fires([], STARTED, "a"),
        store.claim_ahead([], "a"),
        store.taken_fires([]),
        store.mark_started([]),
        store.finish_runs([]),
        store.record_missed_fires([], FIRE, "a"),
    ):
        with pytest.raises(ValueError):
            await call


# -- unrun fires ---------------------------------------------------------------------


async def test_an_unrun_fire_takes_the_fire_key_once_and_holds_no_job(backend: Backend) -> None:
    store = backend.store
    skipped = await store.record_unrun_fire("nightly", "schedule", "skipped", FIRE, 1, FIRE, "skipped: paused", "a")
    assert skipped == running(1, "a", status="skipped", started_at=None, finished_at=FIRE, error="skipped: paused")
    assert await store.claim_run(claim("b")) is None
    assert await store.record_unrun_fire("nightly", "schedule", "missed", FIRE, 1, FIRE, "missed", "c") is None
    # Not exclusive: the job's next fire is free.
    assert await store.claim_run(claim("b", fire=LATER)) == running(4, "b", scheduled_for=LATER)


async def test_missed_fires_are_recorded_in_one_call_each_with_its_reason_but_not_over_a_taken_key(
    backend: Backend,
) -> None:
    store = backend.store
    held = await store.claim_run(claim("b"))
    assert held is not None
    recorded = await store.record_missed_fires(
        [("nightly", FIRE, "missed: held elsewhere"), ("nightly", LATER, "missed: behind")], LATER, "a"
    )
    assert [(run.scheduled_for, run.status, run.trigger, run.attempt, run.error, run.node) for run in recorded] == [
        (LATER, "missed", "schedule", 1, "missed: behind", "a")
    ]
    assert recorded[0].finished_at == LATER and recorded[0].started_at is None


# -- finish and late outcomes ---------------------------------------------------------


async def test_finish_run_changes_only_a_running_run_and_stores_the_result_as_json(backend: Backend) -> None:
    store = backend.store
    run = await store.claim_run(claim())
    assert run is not None
    result = {"when": ENDED, "items": (1, 2), "nested": {"ok": True}}
    ended = await store.finish_run(run.id, "failed", ENDED, result, "boom")
    stored = {"when": str(ENDED), "items": [1, 2], "nested": {"ok": True}}
    expected = running(1, status="failed", finished_at=ENDED, error="boom", result=stored)
    assert ended == expected
    assert await store.finish_run(run.id, "succeeded", LATER, None, None) is None
    assert await store.get_run(run.id) == expected
    assert await store.set_progress(run.id, {"deleted": 1}) is False


async def test_finish_runs_records_outcomes_and_starts_a_run_never_marked_started(backend: Backend) -> None:
    store = backend.store
    started = await store.claim_run(claim(exclusive=False))
    [ahead] = await store.claim_ahead([("nightly", LATER, False)], "node-a")
    assert started is not None
    assert await store.set_progress(started.id, {"deleted": 5}) is True
    recorded = await store.finish_runs(
        [
            (ahead.id, "cancelled", LATER + timedelta(minutes=1), None, "cancelled by ops", LATER, None),
            (started.id, "succeeded", ENDED, {"deleted": 10}, None, ENDED, {"batch_size": 10}),
            (42, "succeeded", ENDED, None, None, None, None),
        ]
    )
    by_id = {run.id: run for run in recorded}
    assert by_id == {
        started.id: running(
            1,
            status="succeeded",
            finished_at=ENDED,
            result={"deleted": 10},
            progress={"deleted": 5},
            params={"batch_size": 10},
        ),
        ahead.id: running(
            2,
            scheduled_for=LATER,
            status="cancelled",
            started_at=LATER,
            finished_at=LATER + timedelta(minutes=1),
            error="cancelled by ops",
        ),
    }
    assert await store.finish_runs([(started.id, "failed", LATER, None, "late", None, None)]) == []


@pytest.mark.parametrize("started", [False, True], ids=["claimed ahead, reaped missed", "started, reaped lost"])
async def test_a_reaped_run_keeps_its_record_and_the_first_late_outcome_beside_it(
    backend: Backend, started: bool
) -> None:
    store = backend.store
    if started:
        run = await store.claim_run(claim())
        assert run is not None
    else:
        [run] = await store.claim_ahead([("nightly", FIRE, True)], "node-a")
    last = (await backend.now()) - timedelta(minutes=1)
    await backend.set_heartbeat([run.id], last)
    [reaped] = await store.reap_lost_runs(LEASE)
    assert reaped.status == ("lost" if started else "missed")
    await assert_about_now(backend, reaped.finished_at)
    expected_error = (
        f"lost: node node-a stopped heartbeating (last at {pg_text(last)})"
        if started
        else f"missed: node node-a claimed this fire ahead and stopped heartbeating before it was due (last at {pg_text(last)})"
    )
    assert reaped.error == expected_error
    [recorded] = await store.finish_runs([(run.id, "succeeded", ENDED, {"ok": [1]}, None, FIRE, None)])
    assert dump(recorded, "late_outcome") == dump(reaped, "late_outcome")
    assert recorded.late_outcome is not None
    assert recorded.late_outcome == LateOutcome(status="succeeded", finished_at=ENDED, result={"ok": [1]})
    assert await store.finish_runs([(run.id, "failed", ENDED, None, "boom", FIRE, None)]) == []
    assert await store.finish_run(run.id, "skipped", ENDED, None, "late") is None
    assert await store.set_progress(run.id, {"deleted": 1}) is False
    assert await store.get_run(run.id) == recorded


async def test_mark_started_writes_the_start_of_a_fire_recorded_missed(backend: Backend) -> None:
    """What the database does today: mark_started asks only that the start is unset."""
    store = backend.store
    [ahead] = await store.claim_ahead([("nightly", FIRE, True)], "node-a")
    [missed] = await store.reap_own_runs([ahead.id], "node-a was frozen")
    assert (missed.status, missed.started_at) == ("missed", None)
    await store.mark_started([(ahead.id, STARTED)])
    after = await store.get_run(ahead.id)
    assert after is not None and (after.status, after.started_at) == ("missed", STARTED)


async def test_a_value_jsonb_refuses_is_refused(backend: Backend) -> None:
    store = backend.store
    run = await store.claim_run(claim())
    assert run is not None
    with pytest.raises(asyncpg.PostgresError):
        await store.set_progress(run.id, {"bad": "\x00"})
    assert await store.set_progress(run.id, {"fine": "\\x00"}) is True


# -- heartbeat and reaping -------------------------------------------------------------


async def test_heartbeats_keep_running_runs_alive_and_report_cancel_requests(backend: Backend) -> None:
    store = backend.store
    a = await store.claim_run(claim(job_id="a"))
    b = await store.claim_run(claim(job_id="b"))
    c = await store.claim_run(claim(job_id="c"))
    assert a is not None and b is not None and c is not None
    await store.finish_run(c.id, "succeeded", ENDED, None, None)
    cancelled = await store.request_cancel(b.id, "ops")
    assert cancelled == running(b.id, job_id="b")
    old = (await backend.now()) - timedelta(minutes=1)
    await backend.set_heartbeat([a.id, b.id], old)
    assert await store.heartbeat([a.id, b.id, c.id, 99]) == {a.id: None, b.id: "ops"}
    assert await store.reap_lost_runs(LEASE) == []  # the beat just now kept them


async def test_the_reaper_ends_only_runs_silent_for_longer_than_the_lease(backend: Backend) -> None:
    store = backend.store
    silent = await store.claim_run(claim(job_id="silent"))
    fresh = await store.claim_run(claim(job_id="fresh"))
    ended = await store.record_unrun_fire("gone", "schedule", "missed", FIRE, 1, FIRE, "missed", "n")
    assert silent is not None and fresh is not None and ended is not None
    now = await backend.now()
    await backend.set_heartbeat([silent.id], now - LEASE - timedelta(seconds=5))
    await backend.set_heartbeat([fresh.id], now - LEASE + timedelta(seconds=5))
    reaped = await store.reap_lost_runs(LEASE)
    assert [run.id for run in reaped] == [silent.id]
    assert (await store.get_run(fresh.id)).status == "running"  # type: ignore[union-attr]
    # The job's slot is free again.
    assert (await store.claim_run(claim(job_id="silent", fire=LATER))) is not None


async def test_a_replica_that_lost_its_lease_ends_its_runs_as_the_reaper_would(backend: Backend) -> None:
    store = backend.store
    started = await store.claim_run(claim(exclusive=False))
    [ahead] = await store.claim_ahead([("nightly", LATER, True)], "node-a")
    done = await store.claim_run(claim(exclusive=False, fire=LATEST))
    assert started is not None and done is not None
    await store.finish_run(done.id, "succeeded", ENDED, None, None)
    reaped = await store.reap_own_runs([done.id, ahead.id, started.id], "node-a was frozen")
    assert sorted((run.id, run.status, run.error) for run in reaped) == [
        (started.id, "lost", "lost: node-a was frozen"),
        (ahead.id, "missed", "missed: node-a was frozen"),
    ]
    for run in reaped:
        await assert_about_now(backend, run.finished_at)
    assert await store.reap_own_runs([started.id], "again") == []


async def test_a_restarted_node_ends_what_its_previous_process_left_running(backend: Backend) -> None:
    store = backend.store
    mine = await store.claim_run(claim("node-a", exclusive=False))
    [ahead] = await store.claim_ahead([("nightly", LATER, True)], "node-a")
    other = await store.claim_run(claim("node-b", exclusive=False, fire=LATEST))
    assert mine is not None and other is not None
    beat = FIRE + timedelta(microseconds=250_000)
    await backend.set_heartbeat([mine.id, ahead.id], beat)
    reaped = sorted(await store.reap_node_runs("node-a"), key=lambda run: run.id)
    assert [(run.id, run.status, run.error) for run in reaped] == [
        (mine.id, "lost", "lost: node node-a restarted (last heartbeat at 2026-05-01 00:00:00.25+00)"),
        (ahead.id, "missed", "missed: node node-a restarted (last heartbeat at 2026-05-01 00:00:00.25+00)"),
    ]
    assert (await store.get_run(other.id)).status == "running"  # type: ignore[union-attr]


# -- node liveness and shares ------------------------------------------------------------


async def test_live_nodes_are_those_heard_from_within_the_lease_and_a_clean_stop_leaves(backend: Backend) -> None:
    store = backend.store
    assert await store.node_heartbeat("node-b", LEASE) == ["node-b"]
    assert await store.node_heartbeat("node-a", LEASE) == ["node-a", "node-b"]
    assert await store.node_heartbeat("node-c", LEASE) == ["node-a", "node-b", "node-c"]
    now = await backend.now()
    await backend.set_node_heartbeat("node-b", now - LEASE - timedelta(seconds=1))
    live, database_now = await store.node_heartbeat_at("node-a", LEASE)
    assert live == ["node-a", "node-c"]
    await assert_about_now(backend, database_now)
    # Its own heartbeat being old, a node still counts itself.
    await backend.set_node_heartbeat("node-c", now - timedelta(hours=1))
    assert await store.node_heartbeat("node-c", LEASE) == ["node-a", "node-c"]
    await store.node_stopped("node-a")
    assert await store.node_heartbeat("node-c", LEASE) == ["node-c"]


async def test_a_node_silent_for_a_day_is_forgotten_after_the_heartbeat_that_saw_it(backend: Backend) -> None:
    store = backend.store
    await store.node_heartbeat("old", LEASE)
    await backend.set_node_heartbeat("old", (await backend.now()) - timedelta(days=2))
    long_lease = timedelta(days=3)
    # One statement: its SELECT sees the table as it was before its DELETE.
    assert await store.node_heartbeat("node-a", long_lease) == ["node-a", "old"]
    assert await store.node_heartbeat("node-a", long_lease) == ["node-a"]


# -- retries ------------------------------------------------------------------------------


async def test_runs_to_retry_are_bad_endings_since_a_time_whose_next_attempt_is_unclaimed(backend: Backend) -> None:
    store = backend.store
    endings = {}
    for job_id, status in [
        ("f", "failed"),
        ("t", "timed_out"),
        ("c", "cancelled"),
        ("s", "succeeded"),
        ("r", "failed"),
    ]:
        run = await store.claim_run(claim(job_id=job_id))
        assert run is not None
        await store.finish_run(run.id, status, ENDED, None, status)
        endings[job_id] = run.id
    lost = await store.claim_run(claim(job_id="l"))
    assert lost is not None
    await backend.set_heartbeat([lost.id], (await backend.now()) - timedelta(minutes=5))
    await store.reap_lost_runs(LEASE)
    # r's second attempt is claimed already; a manual run of the same fire is no attempt.
    await store.claim_run(claim(job_id="r", attempt=2, trigger="retry"))
    await store.claim_run(claim(job_id="f", attempt=2, trigger="manual", exclusive=False))
    jobs = ["f", "t", "c", "s", "r", "l"]
    retry = await store.runs_to_retry(jobs, ENDED - timedelta(seconds=1))
    assert sorted(run.id for run in retry) == [endings["f"], endings["t"], lost.id]
    since_end = await store.runs_to_retry(jobs, ENDED)
    assert sorted(run.id for run in since_end) == [lost.id]  # ended after ENDED: reaped now
    assert await store.runs_to_retry(["f"], ENDED - timedelta(seconds=1)) == [run for run in retry if run.job_id == "f"]


# -- pause, jobs, reads ----------------------------------------------------------------------


async def test_pause_is_held_per_job_with_who_changed_it_and_its_audit(backend: Backend) -> None:
    store = backend.store
    await store.register_jobs(["nightly", "hourly", "nightly"], FIRE)
    await store.register_jobs(["nightly"], LATER)  # first sighting stands
    await store.set_paused("nightly", True, LATER, "ops", audit(detail={"reason": "maintenance"}))
    await store.set_paused("unseen", True, LATEST, "ops", audit(target="unseen"))
    states = {job_id: dict(state) for job_id, state in (await store.job_states()).items()}
    assert states == {
        "nightly": {"job_id": "nightly", "paused": True, "first_seen": FIRE, "changed_at": LATER, "changed_by": "ops"},
        "hourly": {"job_id": "hourly", "paused": False, "first_seen": FIRE, "changed_at": None, "changed_by": None},
        "unseen": {"job_id": "unseen", "paused": True, "first_seen": LATEST, "changed_at": LATEST, "changed_by": "ops"},
    }
    await store.set_paused("nightly", False, LATEST, "admin", audit("resume"))
    assert dict((await store.job_states())["nightly"])["paused"] is False
    assert [entry.action for entry in await store.list_audit(10)] == ["resume", "pause", "pause"]


async def test_reads_of_runs_per_job(backend: Backend) -> None:
    store = backend.store
    a1 = await store.claim_run(claim(job_id="a", fire=FIRE))
    assert a1 is not None
    await store.finish_run(a1.id, "succeeded", LATER, None, None)
    a2 = await store.claim_run(claim(job_id="a", fire=LATER))
    assert a2 is not None
    await store.finish_run(a2.id, "succeeded", FIRE, None, None)  # newer run, earlier end
    await store.claim_run(claim(job_id="a", fire=LATEST, trigger="catch_up"))
    await store.claim_run(claim(job_id="b", fire=LATEST + timedelta(days=1), trigger="manual"))
    await store.claim_run(claim(job_id="b", fire=FIRE, attempt=2, trigger="retry", exclusive=False))
    assert {job: run.id for job, run in (await store.last_runs(["a", "b", "c"])).items()} == {"a": 3, "b": 5}
    assert await store.last_successes(["a", "b"]) == {"a": FIRE}  # the newest success, by id
    assert await store.last_fires(["a", "b", "c"], LATEST) == {"a": LATER, "b": None, "c": None}
    assert await store.last_fires(["a"], LATEST + timedelta(seconds=1)) == {"a": LATEST}
    assert [run.id for run in await store.list_runs(job_id=None, status=None, limit=10)] == [5, 4, 3, 2, 1]
    assert [run.id for run in await store.list_runs(job_id="a", status="succeeded", limit=1)] == [2]
    assert [run.id for run in await store.list_runs(job_id=None, status="running", limit=10)] == [5, 4, 3]
    assert await store.running_counts() == {"a": 1, "b": 2}
    assert await store.get_run(99) is None


async def test_successes_since_a_run_number_and_of_the_runs_running_then(backend: Backend) -> None:
    store = backend.store
    assert await store.successes_since(1) == ({}, 1, [])  # no run yet
    a1 = await store.claim_run(claim(job_id="a", fire=FIRE))
    b1 = await store.claim_run(claim(job_id="b", fire=FIRE))
    assert a1 is not None and b1 is not None
    await store.finish_run(a1.id, "succeeded", LATER, None, None)
    assert await store.successes_since(1) == ({"a": LATER}, b1.id + 1, [b1.id])
    a2 = await store.claim_run(claim(job_id="a", fire=LATER))
    assert a2 is not None
    await store.finish_run(a2.id, "succeeded", FIRE, None, None)  # newer run, earlier end: newest by id
    await store.finish_run(b1.id, "succeeded", LATEST, None, None)
    # b1 was running when last asked: its success is found though numbered below $1.
    assert await store.successes_since(a2.id, [b1.id]) == ({"a": FIRE, "b": LATEST}, a2.id + 1, [])
    assert await store.successes_since(a2.id + 1) == ({}, a2.id + 1, [])
    assert await store.successes_since(2**63 - 1, [a1.id]) == ({"a": LATER}, a2.id + 1, [])


async def test_job_states_of_some_jobs(backend: Backend) -> None:
    store = backend.store
    await store.register_jobs(["a", "b", "c"], FIRE)
    assert sorted(await store.job_states(["a", "c", "unknown"])) == ["a", "c"]
    assert sorted(await store.job_states()) == ["a", "b", "c"]


async def test_ping_answers_the_database_clock(backend: Backend) -> None:
    now = await backend.store.ping(timeout=5)
    assert now.tzinfo is not None
    await assert_about_now(backend, now)


# -- cancel request ------------------------------------------------------------------------


async def test_a_cancel_request_reaches_listeners_and_only_a_running_run_takes_one(backend: Backend) -> None:
    store = backend.store
    heard: list[str] = []
    connection = await store.dedicated_connection()
    try:
        await connection.add_listener("maintd_cancel", lambda _c, _pid, _channel, payload: heard.append(payload))
        run = await store.claim_run(claim())
        assert run is not None
        asked = await store.request_cancel(run.id, "ops")
        assert asked == running(run.id)
        async with asyncio.timeout(5):
            while not heard:
                await asyncio.sleep(0.01)
        assert heard == ['{"run_id" : 1, "by" : "ops"}']
        assert json.loads(heard[0]) == {"run_id": 1, "by": "ops"}
        await store.finish_run(run.id, "cancelled", ENDED, None, "cancelled by ops")
        assert await store.request_cancel(run.id, "ops") is None
        assert await store.request_cancel(99, "ops") is None
    finally:
        await connection.close()


# -- audit ----------------------------------------------------------------------------------


async def test_audit_is_listed_newest_first_with_its_detail(backend: Backend) -> None:
    store = backend.store
    await store.add_audit(audit("trigger", client="10.0.0.7", detail={"run_id": 1, "at": FIRE}))
    await store.add_audit(audit("cancel", target="run:1"))
    entries = await store.list_audit(10)
    assert entries == [
        AuditOut(id=2, at=FIRE, principal="ops", action="cancel", target="run:1"),
        AuditOut(
            id=1,
            at=FIRE,
            principal="ops",
            action="trigger",
            target="nightly",
            client="10.0.0.7",
            detail={"run_id": 1, "at": str(FIRE)},
        ),
    ]
    assert [entry.id for entry in await store.list_audit(1)] == [2]


# -- alerts ---------------------------------------------------------------------------------


async def test_failure_streak_counts_bad_endings_since_the_last_success(backend: Backend) -> None:
    store = backend.store
    ids = {}
    for n, status in enumerate(["failed", "succeeded", "failed", "skipped", "timed_out", "cancelled", "failed"]):
        at = FIRE + timedelta(minutes=n)
        if status == "skipped":
            run = await store.record_unrun_fire("j", "schedule", status, at, 1, at, "skipped", "n")
        else:
            run = await store.claim_run(claim(job_id="j", fire=at, exclusive=False))
            assert run is not None
            await store.finish_run(run.id, status, at, None, None)
        assert run is not None
        ids[n] = run.id
    last = FIRE + timedelta(minutes=6)
    assert await store.failure_streak("j", ids[6], last) == 4
    assert await store.failure_streak("j", ids[2], FIRE + timedelta(minutes=2)) == 1
    assert await store.failure_streak("j", ids[1], FIRE + timedelta(minutes=1)) == 0
    assert await store.failure_streak("j", ids[0], FIRE) == 1
    assert await store.failure_streak("other", 1, last) == 0


async def test_a_run_alert_is_claimed_once_per_run_and_at_most_once_per_interval(backend: Backend) -> None:
    store = backend.store
    hour = timedelta(hours=1)
    assert await store.claim_run_alert("j", 1, FIRE, "a", hour) is True
    assert await store.claim_run_alert("j", 1, FIRE + 2 * hour, "b", hour) is False  # alerted already
    assert await store.claim_run_alert("j", 2, FIRE + timedelta(minutes=59), "b", hour) is False
    assert await store.claim_run_alert("j", 2, FIRE + hour, "b", hour) is True
    assert await store.claim_run_alert("k", 2, FIRE, "b", hour) is True  # per job
    assert await store.claim_run_alert("j", 3, FIRE + hour, "b", timedelta(0)) is True


async def test_an_overdue_alert_is_claimed_once_per_episode(backend: Backend) -> None:
    store = backend.store
    assert await store.claim_overdue_alert("j", FIRE, "a") is True  # never succeeded
    assert await store.claim_overdue_alert("j", LATER, "b") is False
    run = await store.claim_run(claim(job_id="j"))
    assert run is not None
    await store.finish_run(run.id, "succeeded", STARTED, None, None)
    assert await store.claim_overdue_alert("j", LATER, "b") is True  # a new episode
    assert await store.claim_overdue_alert("j", LATEST, "a") is False


# -- logs -------------------------------------------------------------------------------------


def line(seq: int, event: str = "step", **fields: Any) -> LogLine:
    text = json.dumps(fields)
    return LogLine(seq, FIRE + timedelta(seconds=seq), "info", event, text, len(text))


async def test_run_logs_keep_their_head_and_tail_and_mark_the_gap(backend: Backend) -> None:
    store = backend.store
    run = await store.claim_run(claim())
    assert run is not None
    await store.write_runs_logs([(run.id, LogBatch([line(n, n=n) for n in range(1, 7)]))])
    # A retried flush leaves written lines as they are.
    await store.write_runs_logs([(run.id, LogBatch([line(1, "changed")]))])
    assert [(entry.seq, entry.event, entry.fields) for entry in await store.run_log_lines(run.id, 0, 2)] == [
        (1, "step", {"n": 1}),
        (2, "step", {"n": 2}),
    ]
    # Lines 4 and 5 dropped since: the marker takes line 3's place.
    gap = LogBatch([line(8, n=8)], dropped=3, gap_after=2, keep_from=6, gap_at=FIRE)
    await store.write_runs_logs([(run.id, gap)])
    lines = await store.run_log_lines(run.id, 1, 100)
    assert [(entry.seq, entry.level, entry.event) for entry in lines] == [
        (2, "info", "step"),
        (3, "warning", DROPPED_EVENT),
        (6, "info", "step"),
        (8, "info", "step"),
    ]
    assert lines[1].fields == {"dropped": 3, "kept": "the first 2 lines and the newest ones"}
    assert lines[1].at == FIRE
    assert await store.run_log_lines_dropped(run.id) == 3
    assert await store.run_log_lines_dropped(99) is None
    assert await store.run_log_lines(99, 0, 10) == []


async def test_logs_of_an_unknown_run_are_refused_whole(backend: Backend) -> None:
    store = backend.store
    run = await store.claim_run(claim())
    assert run is not None
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await store.write_runs_logs([(run.id, LogBatch([line(1)])), (99, LogBatch([line(1)]))])
    assert await store.run_log_lines(run.id, 0, 10) == []


# -- operator requests: params, dry runs, idempotency keys, replays ------------------------


def manual(**fields: Any) -> Claim:
    return dataclasses.replace(claim(trigger="manual", ignore_pause=True, triggered_by="ops"), **fields)


async def test_a_manual_claim_keeps_what_the_operator_asked(backend: Backend) -> None:
    store = backend.store
    run = await store.claim_run(
        manual(params={"batch_size": 500}, overrides={"batch_size": 500}, reason="lock storm", dry_run=True)
    )
    assert run is not None
    assert (run.params, run.overrides, run.reason, run.dry_run, run.rerun_of) == (
        {"batch_size": 500},
        {"batch_size": 500},
        "lock storm",
        True,
        None,
    )
    again = await store.claim_run(manual(exclusive=False, rerun_of=run.id))
    assert again is not None and again.rerun_of == run.id and again.dry_run is False


async def test_a_dry_run_is_no_success_and_no_last_status(backend: Backend) -> None:
    store = backend.store
    real = await store.claim_run(claim())
    assert real is not None
    await store.finish_runs([(real.id, "failed", ENDED, None, "boom", None, None)])
    dry = await store.claim_run(manual(dry_run=True, started_at=LATER))
    assert dry is not None
    [ended] = await store.finish_runs([(dry.id, "succeeded", LATER, {"dry_run": True}, None, None, None)])
    assert ended.dry_run is True
    assert await store.last_successes(["nightly"]) == {}
    successes, _, _ = await store.successes_since(0)
    assert successes == {}
    assert await store.last_statuses(["nightly"]) == {"nightly": "failed"}
    assert await store.failure_streak("nightly", real.id, ENDED) == 1
    # A dry run that failed is not retried.
    dry_failed = await store.claim_run(manual(dry_run=True, exclusive=False))
    assert dry_failed is not None
    await store.finish_runs([(dry_failed.id, "failed", LATER, None, "boom", None, None)])
    assert [run.id for run in await store.runs_to_retry(["nightly"], FIRE)] == [real.id]


async def test_an_idempotency_key_names_the_first_requests_run_for_its_window(backend: Backend) -> None:
    store = backend.store
    key = IdempotencyKey("ops", "nightly", "k-1", "a" * 64)
    first = await store.claim_keyed_run(manual(), key, STARTED, timedelta(hours=24))
    assert isinstance(first, Run)
    # Same key, later, on any body: the earlier request is answered, nothing is claimed.
    repeated = await store.claim_keyed_run(
        manual(exclusive=False), key, STARTED + timedelta(hours=23), timedelta(hours=24)
    )
    assert repeated == EarlierRequest("a" * 64, first.id)
    other = dataclasses.replace(key, body_sha256="b" * 64)
    assert await store.claim_keyed_run(manual(exclusive=False), other, LATER, timedelta(hours=24)) == EarlierRequest(
        "a" * 64, first.id
    )
    # Another principal, or another job, has keys of its own.
    theirs = await store.claim_keyed_run(
        manual(exclusive=False), dataclasses.replace(key, principal="dev"), STARTED, timedelta(hours=24)
    )
    assert isinstance(theirs, Run) and theirs.id != first.id
    # Past its window the key is taken afresh.
    fresh = await store.claim_keyed_run(manual(exclusive=False), other, LATER + timedelta(hours=1), timedelta(hours=24))
    assert isinstance(fresh, Run) and fresh.id not in (first.id, theirs.id)


async def test_a_refused_claim_does_not_use_its_key(backend: Backend) -> None:
    store = backend.store
    busy = await store.claim_run(claim())
    assert busy is not None
    key = IdempotencyKey("ops", "nightly", "k-2", "a" * 64)
    assert await store.claim_keyed_run(manual(), key, STARTED, timedelta(hours=24)) is None
    await store.finish_runs([(busy.id, "succeeded", ENDED, None, None, None, None)])
    run = await store.claim_keyed_run(manual(), key, ENDED, timedelta(hours=24))
    assert isinstance(run, Run)


async def test_replayable_fires_are_those_recorded_that_never_succeeded(backend: Backend) -> None:
    store = backend.store
    day = timedelta(days=1)
    fires = [FIRE + n * day for n in range(5)]
    # 0 missed, 1 succeeded, 2 failed then its retry failed, 3 skipped and caught up, 4 missed
    await store.record_unrun_fire("nightly", "schedule", "missed", fires[0], 1, fires[0], "missed: down", "n")
    for fire, status in ((fires[1], "succeeded"), (fires[2], "failed")):
        run = await store.claim_run(claim(fire=fire, exclusive=False))
        assert run is not None
        await store.finish_runs([(run.id, status, fire + (ENDED - FIRE), None, None, None, None)])
    retry = await store.claim_run(claim(fire=fires[2], attempt=2, trigger="retry", exclusive=False))
    assert retry is not None
    await store.finish_runs([(retry.id, "failed", fires[2] + day / 2, None, "boom", None, None)])
    await store.record_unrun_fire("nightly", "schedule", "skipped", fires[3], 1, fires[3], "skipped: paused", "n")
    caught = await store.claim_run(claim(fire=fires[3], attempt=2, trigger="catch_up", exclusive=False))
    assert caught is not None
    await store.finish_runs([(caught.id, "succeeded", fires[3] + day / 2, None, None, None, None)])
    await store.record_unrun_fire("nightly", "schedule", "missed", fires[4], 1, fires[4], "missed: down", "n")
    # A manual run at a fire's time is no fire.
    assert await store.claim_run(manual(scheduled_for=fires[1] + timedelta(hours=1), exclusive=False)) is not None

    assert await store.replayable_fires("nightly", fires[0], fires[4], 1001) == [fires[0], fires[2], fires[4]]
    assert await store.replayable_fires("nightly", fires[1], fires[3], 1001) == [fires[2]]
    assert await store.replayable_fires("nightly", fires[0], fires[4], 2) == [fires[0], fires[2]]

    replay = await store.claim_replay(
        manual(trigger="replay", scheduled_for=fires[0], params={"x": 1}, reason="outage", exclusive=True)
    )
    assert replay is not None and (replay.trigger, replay.scheduled_for, replay.params) == (
        "replay",
        fires[0],
        {"x": 1},
    )
    # Running: covered, so neither listed nor claimed twice.
    assert await store.replayable_fires("nightly", fires[0], fires[4], 1001) == [fires[2], fires[4]]
    assert await store.claim_replay(manual(trigger="replay", scheduled_for=fires[0], exclusive=False)) is None
    assert await store.replay_blockers("nightly", fires[0]) == (True, replay.id)
    # Another fire waits for the exclusive run in progress.
    assert await store.claim_replay(manual(trigger="replay", scheduled_for=fires[2], exclusive=True)) is None
    assert await store.replay_blockers("nightly", fires[2]) == (False, replay.id)
    await store.finish_runs([(replay.id, "failed", LATER, None, "boom", None, None)])
    # A replay that failed leaves its fire replayable; one that succeeded covers it.
    assert await store.replayable_fires("nightly", fires[0], fires[0], 1001) == [fires[0]]
    again = await store.claim_replay(manual(trigger="replay", scheduled_for=fires[0], exclusive=True))
    assert again is not None
    await store.finish_runs([(again.id, "succeeded", LATER, None, None, None, None)])
    assert await store.replayable_fires("nightly", fires[0], fires[4], 1001) == [fires[2], fires[4]]
    assert await store.claim_replay(manual(trigger="replay", scheduled_for=fires[0], exclusive=True)) is None
    assert await store.replay_blockers("nightly", fires[0]) == (True, None)
    # A fire's own claims are untouched by its replays (the fire key leaves them out).
    assert await store.claim_run(claim(fire=fires[0], attempt=2, trigger="catch_up")) is not None
