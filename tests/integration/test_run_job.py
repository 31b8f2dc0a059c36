"""``maintd run-job``'s engine half against a real PostgreSQL: Engine.run_once next to running replicas."""

from __future__ import annotations

import asyncio
import io
import re

import pytest

from maintd.admin_api.interface import Actor, JobBusy, TriggerOut
from maintd.scheduler.cli.live import LiveLine
from maintd.scheduler.cli.run_job import follow_run_once, one_off_engine
from maintd.scheduler.store.run_store import RunStore
from tests.configs import make_config, sleep_job, sql_job
from tests.engines import OPS, StartEngine

pytestmark = pytest.mark.integration

ME = Actor(name="run-job:alice", role="operator", client="laptop")
JOBS = {
    "ping": sql_job("SELECT 1"),
    "bad": {"task": "tests.tasks:fail", "schedule": "@daily"},
    "sleepy": sleep_job(60, params={"cooperative": True}),
    "steps": {"task": "tests.tasks:gated_progress", "schedule": "@yearly", "params": {"steps": 2}},
}


async def test_run_once_records_a_manual_run_and_an_audit_row(store: RunStore) -> None:
    engine = one_off_engine(make_config(JOBS), store, node="one-off")
    run = await engine.run_once("ping", ME)
    assert (run.status, run.trigger, run.triggered_by, run.node) == ("succeeded", "manual", "run-job:alice", "one-off")
    assert run.result == {"status": "SELECT 1", "rows": 1}
    assert not engine.running  # the scheduler was never started: nothing else fired
    assert [(a.principal, a.action, a.target) for a in await store.list_audit(10)] == [
        ("run-job:alice", "trigger", "ping")
    ]
    assert [r.id for r in await store.list_runs(job_id=None, status=None, limit=10)] == [run.id]


async def test_run_once_records_a_failure(store: RunStore) -> None:
    run = await one_off_engine(make_config(JOBS), store).run_once("bad", ME)
    assert run.status == "failed"
    assert run.error is not None and "RuntimeError: boom" in run.error


async def test_run_once_is_refused_while_a_replica_runs_the_job(store: RunStore, start_engine: StartEngine) -> None:
    config = make_config(JOBS)
    daemon = await start_engine(config, node="daemon")
    busy = await daemon.admin.trigger("sleepy", OPS)
    with pytest.raises(JobBusy, match=rf"already running \(run {busy.run_id}\)"):
        await one_off_engine(config, store).run_once("sleepy", ME)
    await daemon.admin.cancel_run(busy.run_id, OPS)


async def test_run_once_heartbeats_so_no_replica_declares_it_lost(store: RunStore, start_engine: StartEngine) -> None:
    # A lease of 1s: a replica reaps a run whose heartbeat is older than that, beating every 1/3 s.
    config = make_config({"slow": sleep_job(2.5)}, scheduler={"lease": "1s"})
    replica = await start_engine(config, node="replica")
    run = await one_off_engine(config, store, node="one-off").run_once("slow", ME)
    assert run.status == "succeeded", run.error
    # A run's real outcome overwrites "lost", so ask the reaper whether it ever declared it lost.
    assert replica.metrics.job("slow").runs["lost"].value == 0


async def test_run_once_obeys_a_cancel_sent_through_another_replica(store: RunStore, start_engine: StartEngine) -> None:
    # Heartbeats every 20 s: a cancel seen well before that came by NOTIFY.
    config = make_config(JOBS, scheduler={"lease": "60s"})
    replica = await start_engine(config, node="replica")
    started: asyncio.Future[TriggerOut] = asyncio.get_running_loop().create_future()
    one_off = asyncio.create_task(
        one_off_engine(config, store, node="one-off").run_once("sleepy", ME, on_started=started.set_result)
    )
    await replica.admin.cancel_run((await started).run_id, OPS)
    run = await asyncio.wait_for(one_off, timeout=10)
    assert (run.status, run.error) == ("cancelled", "cancelled by ops")


class Lines(io.StringIO):
    """A stream a test can await lines of."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: asyncio.Queue[str] = asyncio.Queue()

    def write(self, text: str) -> int:
        for line in text.splitlines():
            self.lines.put_nowait(line)
        return super().write(text)

    async def until(self, pattern: str) -> str:
        while not re.search(pattern, line := await self.lines.get()):
            pass
        return line


async def test_follow_run_once_shows_each_progress_step_and_the_summary(store: RunStore) -> None:
    err, out = Lines(), io.StringIO()
    engine = one_off_engine(make_config(JOBS), store)
    following = asyncio.create_task(follow_run_once(engine, "steps", ME, line=LiveLine(err, live=False), out=out))
    for step in (1, 2):
        line = await asyncio.wait_for(err.until(rf"step={step}\b"), timeout=30)
        assert re.fullmatch(rf"run \d+ steps running \S+  of=2 step={step}", line)
        await store.pool.execute("NOTIFY test_gate")
    assert await following == 0
    assert re.fullmatch(r"run \d+ steps succeeded in \S+\nresult:\n  steps  2\n", out.getvalue())


async def test_follow_run_once_says_why_it_could_not_start(store: RunStore) -> None:
    err, out = io.StringIO(), io.StringIO()
    engine = one_off_engine(make_config(JOBS), store)
    assert await follow_run_once(engine, "nope", ME, line=LiveLine(err, live=False), out=out) == 1
    assert (err.getvalue(), out.getvalue()) == ("maintd run-job: no job 'nope'\n", "")
