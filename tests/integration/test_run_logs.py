"""Per-run logs with the real engine and PostgreSQL: kept with the run, bounded, visible while it runs."""

from __future__ import annotations

import asyncio
import tomllib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from maintd.admin_api.interface import RunLogLine, RunNotFound
from maintd.scheduler.engine import Engine
from maintd.scheduler.run_logs import DROPPED_EVENT, HEAD_LINES, MAX_LINES, RUN_LOGS
from maintd.scheduler.store.run_store import RunStore
from tests import tasks
from tests.configs import make_config, sql_job
from tests.engines import OPS, StartEngine, beat, run_to_end

pytestmark = pytest.mark.integration

# Beats only when the test calls beat(): what a heartbeat writes is then the test's to see.
NO_BACKGROUND_BEAT = {"lease": "1h"}


def chatter_job(**params: Any) -> dict[str, Any]:
    return {"task": "tests.tasks:chatter", "schedule": "@yearly", "params": params}


async def all_lines(engine: Engine, run_id: int) -> list[RunLogLine]:
    """Every stored line of a run, paging with after_seq as a client following it does."""
    lines: list[RunLogLine] = []
    while page := (await engine.admin.get_run_logs(run_id, after_seq=lines[-1].seq if lines else 0, limit=1000)).lines:
        lines += page
    return lines


async def test_a_runs_lines_are_kept_in_order_with_their_fields(start_engine: StartEngine) -> None:
    engine = await start_engine(make_config({"talk": chatter_job(lines=3)}))
    run = await run_to_end(engine, "talk")
    assert run.status == "succeeded"

    logs = await engine.admin.get_run_logs(run.id, after_seq=0, limit=1000)
    assert (logs.run_id, logs.dropped) == (run.id, 0)
    assert [(line.seq, line.level, line.event) for line in logs.lines] == [
        (1, "info", "run_started"),
        (2, "info", "chatter_line"),
        (3, "info", "chatter_line"),
        (4, "info", "chatter_line"),
        (5, "warning", "plain stdlib logging, 3 lines"),
        (6, "info", "run_succeeded"),
    ]
    assert logs.lines[1].fields == {"n": 1, "of": 3, "table": "sessions", "logger": "maintd.run"}
    assert logs.lines[4].fields == {"logger": "tests.tasks"}
    assert logs.lines[5].fields["result"] == {"lines": 3}
    assert run.started_at is not None and run.finished_at is not None
    for line in logs.lines:
        assert line.at.tzinfo is not None
        assert run.started_at - timedelta(seconds=1) <= line.at <= run.finished_at + timedelta(seconds=1)
    # Recorded runs keep their buffer until the next heartbeat writes what they logged after.
    assert RUN_LOGS.get(run.id) is not None
    await beat(engine)
    assert RUN_LOGS.get(run.id) is None

    page = await engine.admin.get_run_logs(run.id, after_seq=2, limit=2)
    assert [line.seq for line in page.lines] == [3, 4]
    assert (await engine.admin.get_run_logs(run.id, after_seq=6, limit=1000)).lines == []


async def test_a_chatty_run_is_bounded_and_counts_what_it_dropped(start_engine: StartEngine, store: RunStore) -> None:
    engine = await start_engine(make_config({"talk": chatter_job(lines=10 * MAX_LINES)}))
    run = await run_to_end(engine, "talk")

    logs = await engine.admin.get_run_logs(run.id, after_seq=0, limit=1000)
    logged = 10 * MAX_LINES + 3  # run_started, the lines, the stdlib line, run_succeeded
    assert logs.dropped == logged - MAX_LINES
    lines = await all_lines(engine, run.id)
    assert len(lines) == MAX_LINES + 1  # and the marker
    head, marker, tail = lines[:HEAD_LINES], lines[HEAD_LINES], lines[HEAD_LINES + 1 :]
    assert [line.seq for line in head] == list(range(1, HEAD_LINES + 1))
    assert head[0].event == "run_started"
    assert (marker.seq, marker.level, marker.event) == (HEAD_LINES + 1, "warning", DROPPED_EVENT)
    assert marker.fields["dropped"] == logs.dropped
    # The newest lines, the end of the run included, without a gap.
    assert [line.seq for line in tail] == list(range(logged - len(tail) + 1, logged + 1))
    assert [line.event for line in tail[-3:]] == ["chatter_line", "plain stdlib logging, 10000 lines", "run_succeeded"]
    assert tail[-3].fields["n"] == 10 * MAX_LINES
    rows = await store.pool.fetchval("SELECT count(*) FROM maintd.run_logs WHERE run_id = $1", run.id)
    assert rows == MAX_LINES + 1


async def test_logs_of_a_running_run_are_visible_on_every_replica_after_a_heartbeat(
    start_engine: StartEngine,
) -> None:
    config = make_config({"talk": chatter_job(lines=3, hold="visible")}, scheduler=NO_BACKGROUND_BEAT)
    owner = await start_engine(config, node="node-a")
    other = await start_engine(config, node="node-b")
    logged = tasks.LOGGED.setdefault("visible", asyncio.Event())
    started = await owner.admin.trigger("talk", OPS)
    async with asyncio.timeout(10):
        await logged.wait()

    assert (await other.admin.get_run_logs(started.run_id, after_seq=0, limit=1000)).lines == []
    await beat(owner)
    seen = await other.admin.get_run_logs(started.run_id, after_seq=0, limit=1000)
    assert [line.event for line in seen.lines] == [
        "run_started",
        *["chatter_line"] * 3,
        "plain stdlib logging, 3 lines",
    ]
    assert (await other.admin.get_run(started.run_id)).status == "running"

    # A follower asks for what is new; the end of the run comes after the last line it saw.
    await other.admin.cancel_run(started.run_id, OPS)
    await owner.idle()
    new = await other.admin.get_run_logs(started.run_id, after_seq=seen.lines[-1].seq, limit=1000)
    assert [(line.seq, line.event) for line in new.lines] == [(6, "run_cancelled")]
    assert new.lines[0].fields["error"] == "cancelled by ops"


async def test_the_owner_answers_up_to_the_moment_without_waiting_for_a_heartbeat(
    start_engine: StartEngine,
) -> None:
    config = make_config({"talk": chatter_job(lines=2, hold="owner")}, scheduler=NO_BACKGROUND_BEAT)
    engine = await start_engine(config)
    logged = tasks.LOGGED.setdefault("owner", asyncio.Event())
    started = await engine.admin.trigger("talk", OPS)
    async with asyncio.timeout(10):
        await logged.wait()
    logs = await engine.admin.get_run_logs(started.run_id, after_seq=0, limit=1000)
    assert [line.event for line in logs.lines][-1] == "plain stdlib logging, 2 lines"
    await engine.admin.cancel_run(started.run_id, OPS)


async def test_a_failing_jobs_log_ends_with_its_traceback_and_the_retry(start_engine: StartEngine) -> None:
    engine = await start_engine(make_config({"bad": {**chatter_job(lines=2, fail="disk on fire"), "retries": 1}}))
    run = await run_to_end(engine, "bad")
    assert run.status == "failed"
    lines = (await engine.admin.get_run_logs(run.id, after_seq=0, limit=1000)).lines
    assert [line.event for line in lines] == [
        "run_started",
        "chatter_line",
        "chatter_line",
        "plain stdlib logging, 2 lines",
        "run_failed",
        "retry_scheduled",
    ]
    failed = lines[-2]
    assert failed.level == "warning"
    assert "Traceback" in failed.fields["error"] and "RuntimeError: disk on fire" in failed.fields["error"]
    assert lines[-1].fields["attempt"] == 2


async def test_cleanup_sessions_logs_its_work_with_the_run(start_engine: StartEngine, store: RunStore) -> None:
    await store.pool.execute(
        """
        CREATE TABLE sessions (id bigserial PRIMARY KEY, expires timestamptz);
        INSERT INTO sessions (expires) SELECT now() - interval '1 day' FROM generate_series(1, 25);
        """
    )
    job = {"task": "cleanup_sessions", "schedule": "@daily", "params": {"table": "sessions", "batch_size": 10}}
    engine = await start_engine(make_config({"cleanup": job}))
    run = await run_to_end(engine, "cleanup")
    assert run.status == "succeeded" and run.result is not None and run.result["deleted"] == 25

    lines = {line.event: line for line in (await engine.admin.get_run_logs(run.id, after_seq=0, limit=1000)).lines}
    assert lines["cleanup_started"].fields["batch_size"] == 10
    assert lines["cleanup_started"].fields["table"] == '"sessions"'
    # No index on the expiry column: the warning that says how to fix it is kept with the run.
    assert lines["cleanup_unindexed"].level == "warning"
    assert lines["cleanup_unindexed"].fields["fix"].startswith("CREATE INDEX CONCURRENTLY")
    assert lines["run_succeeded"].fields["result"]["batches"] == run.result["batches"] >= 3


async def test_an_unknown_run_is_not_found(start_engine: StartEngine) -> None:
    engine = await start_engine(make_config({"ok": sql_job()}))
    with pytest.raises(RunNotFound):
        await engine.admin.get_run_logs(424242, after_seq=0, limit=1000)


async def test_a_skipped_fire_has_a_run_and_no_lines(start_engine: StartEngine, store: RunStore) -> None:
    engine = await start_engine(make_config({"ok": sql_job()}))
    skipped = await store.record_unrun_fire(
        "ok", "schedule", "skipped", datetime(2026, 1, 1, tzinfo=UTC), 1, datetime.now(UTC), "skipped: paused", "node-a"
    )
    assert skipped is not None
    logs = await engine.admin.get_run_logs(skipped.id, after_seq=0, limit=1000)
    assert (logs.lines, logs.dropped) == ([], 0)


async def test_the_shipped_history_pruning_prunes_the_logs_too(
    start_engine: StartEngine, store: RunStore, repo_root: Any
) -> None:
    shipped = tomllib.loads((repo_root / "config.toml").read_text())["jobs"]["prune_history"]
    prune = {"task": shipped["task"], "schedule": "@yearly", "params": shipped["params"]}
    engine = await start_engine(make_config({"talk": chatter_job(lines=2), "prune": prune}))
    old = await run_to_end(engine, "talk")
    recent = await run_to_end(engine, "talk")
    await store.pool.execute(
        "UPDATE maintd.runs SET started_at = started_at - interval '100 days', finished_at = finished_at - interval"
        " '100 days' WHERE id = $1",
        old.id,
    )
    pruned = await run_to_end(engine, "prune")
    assert pruned.status == "succeeded" and pruned.result is not None
    assert pruned.result["tables"]["runs"]["deleted"] == 1

    with pytest.raises(RunNotFound):
        await engine.admin.get_run_logs(old.id, after_seq=0, limit=1000)
    assert await store.pool.fetchval("SELECT count(*) FROM maintd.run_logs WHERE run_id = $1", old.id) == 0
    assert len((await engine.admin.get_run_logs(recent.id, after_seq=0, limit=1000)).lines) == 5
