"""Migrations and the database's guarantees: one claim per fire, one running run per exclusive job."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from maintd.scheduler.store.migrate import apply_migrations, shipped_migrations
from maintd.scheduler.store.run_store import Claim, RunStore

pytestmark = pytest.mark.integration

FIRE = datetime(2026, 5, 1, 0, 0, tzinfo=UTC)


def claim(node: str, *, fire: datetime = FIRE, exclusive: bool = True, trigger: str = "schedule") -> Claim:
    return Claim(
        job_id="nightly",
        trigger=trigger,
        scheduled_for=fire,
        attempt=1,
        exclusive=exclusive,
        started_at=fire,
        triggered_by=None,
        node=node,
        ignore_pause=False,
    )


async def test_migrations_apply_on_a_fresh_database_then_are_a_no_op(empty_db_dsn: str) -> None:
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        applied = await apply_migrations(conn)
        assert [m.version for m in applied] == [m.version for m in shipped_migrations()]
        assert await apply_migrations(conn) == []
        tables = {
            r["table_name"]
            for r in await conn.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = 'maintd'")
        }
        assert {"runs", "job_state", "audit", "schema_migrations"} <= tables
    finally:
        await conn.close()


async def test_replicas_migrating_at_once_apply_each_migration_once(empty_db_dsn: str) -> None:
    conns = [await asyncpg.connect(empty_db_dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(*(apply_migrations(c) for c in conns))
        # Each migration applied by exactly one of them (which one may differ per migration).
        applied = sorted(m.version for r in results for m in r)
        assert applied == [m.version for m in shipped_migrations()]
    finally:
        for conn in conns:
            await conn.close()


async def test_a_fire_is_claimed_once_however_many_replicas_race(store: RunStore) -> None:
    won = await asyncio.gather(*(store.claim_run(claim(f"node-{i}")) for i in range(5)))
    winners = [run for run in won if run is not None]
    assert len(winners) == 1
    assert [run.id for run in await store.list_runs(job_id="nightly", status=None, limit=10)] == [winners[0].id]


async def test_an_exclusive_job_has_one_running_run(store: RunStore) -> None:
    first = await store.claim_run(claim("a"))
    assert first is not None
    later = datetime(2026, 5, 2, tzinfo=UTC)
    assert await store.claim_run(claim("b", fire=later)) is None
    assert await store.claim_run(claim("b", fire=later, trigger="manual")) is None
    await store.finish_run(first.id, "succeeded", later, {"ok": True}, None)
    assert await store.claim_run(claim("b", fire=later)) is not None


async def test_allow_overlap_runs_side_by_side(store: RunStore) -> None:
    assert await store.claim_run(claim("a", exclusive=False)) is not None
    assert await store.claim_run(claim("b", exclusive=False, fire=datetime(2026, 5, 2, tzinfo=UTC))) is not None


async def test_unrun_fire_takes_the_fire_key(store: RunStore) -> None:
    skipped = await store.record_unrun_fire("nightly", "schedule", "skipped", FIRE, 1, FIRE, "skipped: paused", "a")
    assert skipped is not None and skipped.status == "skipped" and skipped.started_at is None
    assert await store.claim_run(claim("b")) is None  # the fire is decided
    again = await store.record_unrun_fire("nightly", "schedule", "missed", FIRE, 1, FIRE, "missed", "c")
    assert again is None


async def test_a_run_has_finished_at_exactly_when_it_has_ended(store: RunStore) -> None:
    run = await store.claim_run(claim("a"))
    with pytest.raises(asyncpg.CheckViolationError):
        await store.pool.execute("UPDATE maintd.runs SET status = 'succeeded' WHERE id = $1", run.id)


async def test_a_fire_claimed_ahead_by_a_silent_owner_is_reaped_missed_and_a_started_run_lost(
    store: RunStore,
) -> None:
    [ahead] = await store.claim_ahead([("nightly", FIRE, True)], "node-a")
    started = await store.claim_run(claim("node-b", fire=datetime(2026, 5, 2, tzinfo=UTC), exclusive=False))
    assert ahead.started_at is None and started is not None
    await store.pool.execute("UPDATE maintd.runs SET heartbeat_at = now() - interval '1 minute'")
    reaped = {run.id: run for run in await store.reap_lost_runs(timedelta(seconds=30))}
    assert reaped[ahead.id].status == "missed" and "claimed this fire ahead" in (reaped[ahead.id].error or "")
    assert reaped[started.id].status == "lost"


@pytest.mark.parametrize("started", [False, True], ids=["claimed ahead, reaped missed", "started, reaped lost"])
async def test_a_reaped_run_keeps_its_record_and_its_owners_outcome_comes_beside_it(
    store: RunStore, started: bool
) -> None:
    # The owner fell silent for a lease (frozen, blocked, cut off) and was reaped; then it woke up.
    if started:
        run = await store.claim_run(claim("node-a"))
        assert run is not None
    else:
        [run] = await store.claim_ahead([("nightly", FIRE, True)], "node-a")
    await store.pool.execute("UPDATE maintd.runs SET heartbeat_at = now() - interval '1 minute'")
    [reaped] = await store.reap_lost_runs(timedelta(seconds=30))
    assert reaped.status == ("lost" if started else "missed")
    ended = datetime(2026, 5, 1, 0, 5, tzinfo=UTC)
    [recorded] = await store.finish_runs([(run.id, "succeeded", ended, {"ok": True}, None, FIRE, None)])
    assert (recorded.status, recorded.finished_at, recorded.error) == (reaped.status, reaped.finished_at, reaped.error)
    assert recorded.result is None and recorded.started_at == reaped.started_at
    assert recorded.late_outcome is not None
    assert (recorded.late_outcome.status, recorded.late_outcome.finished_at) == ("succeeded", ended)
    assert recorded.late_outcome.result == {"ok": True}
    # The first late outcome stands, and nothing else is written over the record.
    assert await store.finish_runs([(run.id, "failed", ended, None, "boom", FIRE, None)]) == []
    assert await store.finish_run(run.id, "skipped", ended, None, "a late reload") is None
    assert await store.set_progress(run.id, {"deleted": 1}) is False
    assert (await store.get_run(run.id)) == recorded


async def test_a_replica_that_lost_its_lease_ends_its_runs_as_the_reaper_would(store: RunStore) -> None:
    started = await store.claim_run(claim("node-a", exclusive=False))
    [ahead] = await store.claim_ahead([("nightly", datetime(2026, 5, 2, tzinfo=UTC), True)], "node-a")
    done = await store.claim_run(claim("node-a", exclusive=False, fire=datetime(2026, 5, 3, tzinfo=UTC)))
    assert started is not None and done is not None
    await store.finish_run(done.id, "succeeded", FIRE, None, None)
    reaped = {run.id: run for run in await store.reap_own_runs([started.id, ahead.id, done.id], "node-a was frozen")}
    assert set(reaped) == {started.id, ahead.id}  # an ended run is left as it is
    assert (reaped[started.id].status, reaped[started.id].error) == ("lost", "lost: node-a was frozen")
    assert (reaped[ahead.id].status, reaped[ahead.id].error) == ("missed", "missed: node-a was frozen")
    assert await store.reap_own_runs([started.id], "again") == []


async def test_a_restarted_node_ends_what_its_previous_process_left_running(store: RunStore) -> None:
    mine = await store.claim_run(claim("node-a", exclusive=False))
    [ahead] = await store.claim_ahead([("nightly", datetime(2026, 5, 2, tzinfo=UTC), True)], "node-a")
    other = await store.claim_run(claim("node-b", exclusive=False, fire=datetime(2026, 5, 3, tzinfo=UTC)))
    assert mine is not None and other is not None
    reaped = {run.id: run for run in await store.reap_node_runs("node-a")}
    assert {run_id: run.status for run_id, run in reaped.items()} == {mine.id: "lost", ahead.id: "missed"}
    assert "node node-a restarted" in (reaped[mine.id].error or "")
    assert (await store.get_run(other.id)).status == "running"
