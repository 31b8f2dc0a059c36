"""End to end, fencing: a replica whose runs were declared lost must not act as if it were alive.

Two real replicas share a database. One of them is frozen (SIGSTOP, as a VM
pause or a long GC pause) or has its event loop blocked by a task, for longer
than the lease, while it owns a run; the other declares that run ``lost`` and
retries it. Once a run has ended in the database it must never change back:
the owner's outcome, arriving after the lease, is kept on the run as
``late_outcome`` and logged (``run_outcome_after_lease``), never written over
``lost``. And the reverse: a replica that is busy but alive keeps its lease.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Daemon
from tests.e2e.records import POLL_S, event, fetch, logged, poll, runs, scheduler_toml, stop_all

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# What a replica logs when it finds out that it lost the lease on its runs: at a heartbeat or a
# write for a run already reaped, or from its own monotonic clock having jumped past the lease.
LEASE_LOST_EVENTS = ("lease_lost", "replica_was_frozen")
LATE_OUTCOMES = ("succeeded", "cancelled")


def _job(job_id: str, task: str, params: str, **options: Any) -> str:
    """One [jobs.<id>] table, run only when triggered; ``params`` is the TOML body of its params table."""
    lines = [f"[jobs.{job_id}]", f'task = "{task}"', 'schedule = "@yearly"']
    lines += [
        f"{key} = {value!r}" if isinstance(value, int) else f'{key} = "{value}"' for key, value in options.items()
    ]
    return "\n".join([*lines, f"[jobs.{job_id}.params]", params, ""])


def _trigger(daemon: Daemon, job_id: str) -> int:
    with daemon.operator() as http:
        answer = http.post(f"/admin/trigger/{job_id}")
    assert answer.status_code == 202, answer.text
    return int(answer.json()["run_id"])


def _after_the_owners_word(http: httpx.Client, run_id: int, timeout: float) -> dict[str, Any]:
    """The lost run once its owner has had its say: its status changed (which must not happen) or it carries
    the late outcome (which must); as it stands after ``timeout`` when neither, for the assertions to tell
    what is missing."""
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = http.get(f"/admin/runs/{run_id}").json()
        if run["status"] != "lost" or run.get("late_outcome") or time.monotonic() > deadline:
            return run
        time.sleep(POLL_S)


def _overlapping_successes(rows: list[Any]) -> list[tuple[int, int]]:
    """Pairs of succeeded runs whose [started_at, finished_at] intersect: what overlap = "forbid" rules out."""
    done = [r for r in rows if r["status"] == "succeeded" and r["started_at"] and r["finished_at"]]
    return [
        (x["id"], y["id"])
        for i, x in enumerate(done)
        for y in done[i + 1 :]
        if x["started_at"] < y["finished_at"] and y["started_at"] < x["finished_at"]
    ]


def _nothing_running(dsn: str) -> bool:
    return fetch(dsn, "SELECT count(*) FROM maintd.runs WHERE status = 'running'")[0][0] == 0


def _status(dsn: str, run_id: int) -> str:
    return str(fetch(dsn, "SELECT status FROM maintd.runs WHERE id = $1", run_id)[0]["status"])


def _read_to_the_end(daemons: list[Daemon]) -> None:
    """Stop the replicas and read their logs up to the end, so that the tests can look for what was not logged."""
    stop_all(daemons)
    for daemon in daemons:
        logged(daemon, event("engine_stopped"))


def _assert_late_outcome(run: dict[str, Any]) -> None:
    late = run.get("late_outcome")
    assert isinstance(late, dict), f"run {run['id']} carries no late_outcome: {run}"
    assert late.get("status") in LATE_OUTCOMES, late
    assert late.get("finished_at"), late
    assert "error" in late, late


# -- 1. a frozen replica -------------------------------------------------------------------------


def test_a_frozen_replica_keeps_its_lost_run_lost(start_daemon: Any, db_dsn: str) -> None:
    lease = 4  # heartbeat and reaper every 1.33 s
    # The same job on both replicas. A's run lasts well past its freeze, so that A wakes up in the middle of
    # it; B's copy is short, so that the retry ends soon after A has woken.
    jobs = _job("slow", "sql", 'sql = "SELECT pg_sleep({s})"', overlap="forbid", retries=1)
    a = start_daemon(jobs.format(s=15), dsn=db_dsn, scheduler_toml=scheduler_toml("a", lease=f"{lease}s"))
    b = start_daemon(jobs.format(s=2), dsn=db_dsn, scheduler_toml=scheduler_toml("b", lease=f"{lease}s"))
    run_id = _trigger(a, "slow")
    logged(a, event("run_started", run_id=run_id))

    a.process.send_signal(signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        b.wait_for_event(event("run_lost", run_id=run_id, owner="a"), timeout=lease + 5)
        lost_after = time.monotonic() - frozen
        # The retry's backoff is 5-15 s after the loss (seeded by the run id).
        retry = b.wait_for_event(event("run_started", job_id="slow", trigger="retry"), timeout=20)
        retry_after = time.monotonic() - frozen
    finally:
        a.process.send_signal(signal.SIGCONT)
    woken = time.monotonic()

    with b.operator() as on_b:
        # A's pg_sleep ends 15 s after the trigger; A must cancel the run as soon as it wakes.
        run = _after_the_owners_word(on_b, run_id, timeout=20)
        settled_after = time.monotonic() - woken
        b.follow(retry["run_id"], timeout=15)
        poll(lambda: _nothing_running(db_dsn), timeout=lease + 5, what="no run left running")
        run = on_b.get(f"/admin/runs/{run_id}").json()  # again, once A has done all it does
    _read_to_the_end([a, b])
    final = _status(db_dsn, run_id)  # with A stopped: nothing it does later can change the record
    rows = runs(db_dsn, "slow")
    a_noticed = [e["event"] for e in a.events if e.get("event") in LEASE_LOST_EVENTS]
    late_logged = [e for e in a.events if e.get("event") == "run_outcome_after_lease" and e.get("run_id") == run_id]
    print(
        f"\n[frozen] lease {lease}s: run {run_id} lost {lost_after:.2f}s after SIGSTOP, retry run {retry['run_id']}"
        f" started at +{retry_after:.2f}s, SIGCONT at +{woken - frozen:.2f}s; node a's word {settled_after:.2f}s"
        f" later: status={run['status']} late_outcome={run.get('late_outcome')} error={str(run['error'])[:60]!r};"
        f" rows {[(r['id'], r['attempt'], r['trigger'], r['status'], r['node']) for r in rows]};"
        f" a logged {a_noticed} and {len(late_logged)} run_outcome_after_lease"
    )
    assert [run["status"], final] == ["lost", "lost"], f"run {run_id} was declared lost, then became {final}"
    _assert_late_outcome(run)
    assert not _overlapping_successes(rows), f"overlapping successes of a forbid-overlap job: {rows}"
    retries = [r for r in rows if r["attempt"] == 2]
    assert [(r["trigger"], r["status"], r["node"]) for r in retries] == [("retry", "succeeded", "b")], rows
    assert a_noticed, f"node a did not log that it was frozen or lost its lease ({LEASE_LOST_EVENTS})"
    assert late_logged, "node a did not log run_outcome_after_lease for its run"


# -- 2. a task that blocks the event loop --------------------------------------------------------


def test_a_loop_blocked_past_the_lease_keeps_the_lost_run_lost(start_daemon: Any, db_dsn: str) -> None:
    lease = 3
    # time.sleep(2 x lease) inside an async task: the owner's loop, heartbeats included, stands still.
    jobs = _job("wedge", "tests.tasks:block", f"seconds = {2 * lease}\nafter = 0.3", overlap="forbid")
    a = start_daemon(jobs, dsn=db_dsn, scheduler_toml=scheduler_toml("a", lease=f"{lease}s"))
    b = start_daemon(jobs, dsn=db_dsn, scheduler_toml=scheduler_toml("b", lease=f"{lease}s"))
    run_id = _trigger(a, "wedge")
    logged(a, event("run_started", run_id=run_id))
    started = time.monotonic()
    b.wait_for_event(event("run_lost", run_id=run_id, owner="a"), timeout=lease + 5)
    lost_after = time.monotonic() - started
    with b.operator() as on_b:
        run = _after_the_owners_word(on_b, run_id, timeout=2 * lease + 5)
        settled_after = time.monotonic() - started
        poll(lambda: _nothing_running(db_dsn), timeout=lease + 5, what="no run left running")
        run = on_b.get(f"/admin/runs/{run_id}").json()
    _read_to_the_end([a, b])
    final = _status(db_dsn, run_id)
    a_noticed = [e["event"] for e in a.events if e.get("event") in LEASE_LOST_EVENTS]
    print(
        f"\n[blocked loop] lease {lease}s, loop blocked {2 * lease}s: run {run_id} lost at +{lost_after:.2f}s,"
        f" node a's word at +{settled_after:.2f}s: status={run['status']} late_outcome={run.get('late_outcome')};"
        f" a logged {a_noticed}"
    )
    assert [run["status"], final] == ["lost", "lost"], f"run {run_id} was declared lost, then became {final}"
    _assert_late_outcome(run)
    assert a_noticed, f"node a did not log that its loop stood still past the lease ({LEASE_LOST_EVENTS})"


# -- 3. busy is not dead -------------------------------------------------------------------------


@pytest.mark.parametrize("load", ["pool", "loop"])
def test_a_busy_replica_keeps_its_lease(start_daemon: Any, db_dsn: str, load: str) -> None:
    """``pool``: as many runs as the pool has connections, each in a statement longer than the lease (the
    heartbeat must not wait for the work's connections). ``loop``: a run that keeps the loop busy in short
    spells for twice the lease (a lagging loop is not a frozen replica)."""
    lease = 3
    pool_size = 4
    if load == "pool":
        jobs = _job("busy", "sql", f'sql = "SELECT pg_sleep({2 * lease})"', overlap="allow")
        runs_wanted = pool_size
    else:
        jobs = _job("busy", "tests.tasks:stutter", f"seconds = {2 * lease}\nspell = 0.2", overlap="allow")
        runs_wanted = 1
    a = start_daemon(
        jobs,
        dsn=db_dsn,
        scheduler_toml=scheduler_toml("a", lease=f"{lease}s"),
        database_toml=f"pool_size = {pool_size}\n",
    )
    b = start_daemon(jobs, dsn=db_dsn, scheduler_toml=scheduler_toml("b", lease=f"{lease}s"))
    run_ids = [_trigger(a, "busy") for _ in range(runs_wanted)]
    started = time.monotonic()
    for run_id in run_ids:
        logged(a, event("run_started", run_id=run_id))
    # Followed on B: A's API may wait for a connection of its full pool.
    ended = [b.follow(run_id, timeout=4 * lease + 10) for run_id in run_ids]
    took = time.monotonic() - started
    _read_to_the_end([a, b])
    declared_lost = [e["run_id"] for e in b.events + a.events if e.get("event") == "run_lost"]
    a_noticed = [e["event"] for e in a.events if e.get("event") in LEASE_LOST_EVENTS]
    rows = runs(db_dsn, "busy")
    print(
        f"\n[busy, {load}] lease {lease}s, {runs_wanted} run(s) on node a (pool {pool_size}) ended in {took:.2f}s:"
        f" {Counter(r['status'] for r in ended)}; declared lost: {declared_lost}; a logged {a_noticed};"
        f" recorded {Counter(r['status'] for r in rows)}"
    )
    assert not declared_lost, f"runs of a busy but live replica were declared lost: {declared_lost}"
    assert not a_noticed, f"node a took its own load for a lost lease: {a_noticed}"
    assert [r["status"] for r in ended] == ["succeeded"] * runs_wanted, ended
    assert all(r.get("late_outcome") is None for r in ended), ended
