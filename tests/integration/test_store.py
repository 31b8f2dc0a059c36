"""Migrations and the database's guarantees: one claim per fire, one running run per exclusive job."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from scheduler.migrate import apply_migrations, shipped_migrations
from scheduler.store import Claim, RunStore

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
        tables = {r["table_name"] for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'maintd'"
        )}
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
    assert (await store.get_fire("nightly", FIRE)).id == winners[0].id


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


async def test_the_owner_of_a_run_reaped_as_never_started_still_records_its_outcome(store: RunStore) -> None:
    # The run started, but mark_started never got through and its owner fell silent for a lease.
    [run] = await store.claim_ahead([("nightly", FIRE, True)], "node-a")
    await store.pool.execute("UPDATE maintd.runs SET heartbeat_at = now() - interval '1 minute'")
    [reaped] = await store.reap_lost_runs(timedelta(seconds=30))
    assert reaped.status == "missed"
    started, ended = FIRE, datetime(2026, 5, 1, 0, 5, tzinfo=UTC)
    [recorded] = await store.finish_runs([(run.id, "succeeded", ended, {"ok": True}, None, started)])
    assert (recorded.status, recorded.started_at, recorded.result) == ("succeeded", started, {"ok": True})
    # Once recorded, the outcome is not overwritten.
    assert await store.finish_run(run.id, "skipped", ended, None, "a late reload") is None
