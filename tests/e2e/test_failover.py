"""End to end, a primary failover under running replicas.

The test's own primary and streaming standby (tests/e2e/postgres_cluster.py);
the primary crashes (``pg_ctl stop -m immediate``), the standby is promoted 3 s
later, as Patroni would. With a multi-host DSN the replicas find the new
primary themselves; with a single-host DSN the operator restarts a replica on
the new primary under the same ``node``. Either way nothing may run twice or
go unrecorded, no fire may be judged against a run that had already ended, and
the outage must not flood the journal.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.e2e.conftest import Daemon
from tests.e2e.postgres_cluster import PrimaryAndStandby
from tests.e2e.records import epoch, event, fetch, logged, poll, scheduler_toml, sleep_until, stop_all, timeline

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LEASE_S = 6
OUTAGE_S = 3  # from the primary's crash to the standby's promotion
JOBS = {"tick": "SELECT 1", "slow": "SELECT pg_sleep(0.3)"}
JOBS_TOML = """
[jobs.tick]
task = "sql"
schedule = "every 1s"
overlap = "allow"
[jobs.tick.params]
sql = "SELECT 1"

[jobs.slow]
task = "sql"
schedule = "every 1s"
overlap = "forbid"
[jobs.slow.params]
sql = "SELECT pg_sleep(0.3)"
"""
# asyncpg's own warning while its pool reconnects: it backs off (1 s, 2 s, 4 s ... 60 s) by itself.
POOL_FLOOR_WARNING = "Failed to restore the pool connection floor; retrying"
STILL_RUNNING = re.compile(r"skipped: run (\d+) was still running")


@pytest.fixture
def primary_and_standby(private_tmp: Path) -> Iterator[PrimaryAndStandby]:
    """A started primary and standby; stopped afterwards whatever the test did to them."""
    cluster = PrimaryAndStandby(private_tmp / "pg")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def _all_rows(dsn: str) -> list[asyncpg.Record]:
    return fetch(
        dsn,
        "SELECT id, job_id, scheduled_for, status, trigger, node, attempt, error, started_at, finished_at"
        " FROM maintd.runs ORDER BY job_id, scheduled_for, id",
    )


def _ran_since(dsn: str, wall: float, count: int) -> bool:
    """Both jobs have ``count`` fires after ``wall`` that ran and succeeded on time."""
    rows = fetch(
        dsn,
        "SELECT job_id, count(*) FROM maintd.runs WHERE trigger = 'schedule' AND status = 'succeeded'"
        " AND scheduled_for > to_timestamp($1) GROUP BY job_id",
        wall,
    )
    return {row["job_id"]: row["count"] for row in rows}.keys() == JOBS.keys() and min(
        r["count"] for r in rows
    ) >= count


def _none_running_from_before(dsn: str, wall: float) -> bool:
    """No run of a fire before ``wall`` is still running (later fires are the schedule going on)."""
    rows = fetch(
        dsn,
        "SELECT count(*) FROM maintd.runs WHERE status = 'running' AND scheduled_for < to_timestamp($1)",
        wall,
    )
    return rows[0][0] == 0


def _stamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp() if event.get("timestamp") else 0.0


def _noise_per_s(daemon: Daemon, since: float, until: float) -> float:
    """Warning and error lines a second the replica logged between two wall-clock times."""
    loud = [e for e in daemon.events if e.get("level") in ("warning", "error", "critical")]
    return sum(since <= _stamp(e) <= until for e in loud) / (until - since)


def _repeated(daemon: Daemon, since: float, until: float) -> dict[str, int]:
    """Warnings and errors the replica logged more than once between two wall-clock times, by event and the
    job and run it names: the same failure repeating (several lines a second through an outage) is what
    floods a journal; the first of each kind, a summary, and one line per fire or run are not."""
    loud = [
        e for e in daemon.events if e.get("level") in ("warning", "error", "critical") and since <= _stamp(e) <= until
    ]
    counts = Counter(
        f"{e.get('event')} job={e.get('job_id')} run={e.get('run_id')}"
        for e in loud
        if e.get("event") != POOL_FLOOR_WARNING
    )
    return {what: n for what, n in counts.items() if n > 1}


def _skipped_behind(row: asyncpg.Record) -> int | None:
    """The run a fire was skipped behind (overlap = "forbid"), from the row's reason."""
    found = STILL_RUNNING.match(row["error"] or "") if row["status"] == "skipped" else None
    return int(found[1]) if found else None


def _wrongly_skipped(rows: list[asyncpg.Record]) -> list[str]:
    """Fires skipped behind a run that had ended before the fire, and fires skipped as paused (nothing is)."""
    by_id = {r["id"]: r for r in rows}
    wrong = []
    for r in rows:
        if r["status"] == "skipped" and "paused" in (r["error"] or ""):
            wrong.append(f"{r['job_id']} {r['scheduled_for']:%T} {r['trigger']}: {r['error']}")
        if (behind := _skipped_behind(r)) is None:
            continue
        other = by_id[behind]
        if other["finished_at"] is not None and other["finished_at"] <= r["scheduled_for"]:
            wrong.append(
                f"{r['job_id']} {r['scheduled_for']:%T} {r['trigger']} skipped behind run {behind}"
                f" ({other['status']}, ended {other['finished_at']:%T.%f} on node {other['node']})"
            )
    return wrong


def _fire_problems(rows: list[asyncpg.Record], first: int, last: int) -> dict[str, Any]:
    """Per job, between two fire times: fire keys held twice, fires without a row, missed fires without a catch-up."""
    problems: dict[str, Any] = defaultdict(dict)
    for job_id in JOBS:
        mine = [r for r in rows if r["job_id"] == job_id and r["trigger"] != "manual"]
        keys = Counter((epoch(r["scheduled_for"]), r["attempt"]) for r in mine)
        if twice := {key: n for key, n in keys.items() if n > 1}:
            problems[job_id]["twice"] = twice
        fires = {fire for fire, _ in keys}
        if missing := sorted(set(range(first, last + 1)) - fires):
            problems[job_id]["no row"] = missing
        missed = [
            epoch(r["scheduled_for"]) for r in mine if r["status"] == "missed" and first <= epoch(r["scheduled_for"])
        ]
        # catch_up = "once": one fire of the missed spell is claimed as its catch-up; fires that came while the
        # replica settled after its start are recorded missed after it (whether it may run is _wrongly_skipped's
        # to judge).
        caught_up = [epoch(r["scheduled_for"]) for r in mine if r["trigger"] == "catch_up"]
        if missed and not any(fire >= min(missed) for fire in caught_up):
            problems[job_id]["missed, no catch-up"] = missed
    return dict(problems)


def _crash_and_promote(cluster: PrimaryAndStandby) -> tuple[float, float]:
    """Crash the primary, wait the outage out (its length is the scenario, not a wait for an event), promote.

    The crash comes 0.1 s after a fire time, while the forbid-overlap job's run of that fire (0.3 s) is in
    flight: it ends in the outage, and its owner cannot record that it did."""
    sleep_until(int(time.time()) + 1.1)
    crashed = time.time()
    cluster.primary.stop("immediate")
    time.sleep(max(0.0, crashed + OUTAGE_S - time.time()))
    cluster.standby.promote()
    return crashed, time.time()


def test_failover_with_a_multi_host_dsn_loses_nothing_and_runs_nothing_twice(
    primary_and_standby: PrimaryAndStandby, start_daemon: Any
) -> None:
    cluster = primary_and_standby
    dsn, new_primary = cluster.multi_host_dsn(), cluster.standby.dsn(cluster.database)
    replicas = [
        start_daemon(JOBS_TOML, dsn=dsn, scheduler_toml=scheduler_toml(node, lease=f"{LEASE_S}s")) for node in "ab"
    ]
    all_up = time.time()
    poll(lambda: _ran_since(dsn, all_up, 3), timeout=15, what="3 fires of each job with both replicas up")

    crashed, promoted = _crash_and_promote(cluster)
    poll(lambda: _ran_since(new_primary, promoted, 1), timeout=20, what="fires running again on the new primary")
    resumed = time.time()
    # A few more seconds of schedule: the recovery's catch-up is claimed before the first fire after it.
    poll(lambda: _ran_since(new_primary, resumed, 3), timeout=15, what="3 fires of each job after the recovery")
    # Whatever the outage left running is settled within a lease (its owner's word, or the reaper).
    poll(
        lambda: _none_running_from_before(new_primary, resumed),
        timeout=LEASE_S + 5,
        what="no run from before the failover left running",
    )
    up = [daemon.process.poll() is None for daemon in replicas]
    stopping = time.time()
    stop_all(replicas)
    for daemon in replicas:
        logged(daemon, event("engine_stopped"))  # read each log to its end
    rows = _all_rows(new_primary)

    first, last = int(all_up) + 1, int(stopping) - 1
    problems = _fire_problems(rows, first, last)
    wrongly_skipped = _wrongly_skipped(rows)
    noise = {node: _noise_per_s(d, crashed, resumed) for node, d in zip("ab", replicas, strict=True)}
    repeated = {node: _repeated(d, crashed, resumed) for node, d in zip("ab", replicas, strict=True)}
    skipped = [r for r in rows if r["status"] == "skipped"]
    noise_shown = {node: round(per_s, 1) for node, per_s in noise.items()}
    outage = [r for r in rows if crashed - 1 <= r["scheduled_for"].timestamp() <= resumed + 1]
    print(
        f"\n[failover, multi-host] outage {promoted - crashed:.2f}s, fires on time again {resumed - promoted:.2f}s"
        f" after the promote; rows {dict(Counter(r['status'] for r in rows))}; around the outage"
        f" {dict(Counter((r['job_id'], r['status'], r['trigger']) for r in outage))};"
        f" warnings+errors/s during the outage {noise_shown}, repeated {repeated};"
        f" skipped {[(r['job_id'], r['scheduled_for'].strftime('%T'), r['trigger'], r['error']) for r in skipped]};"
        f" problems {problems}; wrongly skipped {wrongly_skipped}"
    )
    story = "\n".join(f"node {n}:\n{timeline(d, since=crashed - 1)}" for n, d in zip("ab", replicas, strict=True))
    assert up == [True, True], f"a replica exited during the failover: {up}"
    assert not problems, f"{problems}\n{story}"
    assert not wrongly_skipped, "\n".join([*wrongly_skipped, story])
    assert not any(repeated.values()), f"failures logged again and again during the outage: {repeated}"


def test_a_replica_restarted_on_the_new_primary_releases_its_own_claims_at_once(
    primary_and_standby: PrimaryAndStandby, start_daemon: Any
) -> None:
    """Single-host DSN naming the old primary: the operator restarts the replica on the new one, same node."""
    cluster = primary_and_standby
    old_primary, new_primary = cluster.primary.dsn(cluster.database), cluster.standby.dsn(cluster.database)
    config = scheduler_toml("solo", lease=f"{LEASE_S}s")
    old = start_daemon(JOBS_TOML, dsn=old_primary, scheduler_toml=config)
    up = time.time()
    poll(lambda: _ran_since(old_primary, up, 2), timeout=15, what="2 fires of each job")

    crashed, promoted = _crash_and_promote(cluster)
    # What the new primary holds as running: the fires the replica had claimed (ahead) before the crash.
    stale = fetch(new_primary, "SELECT id, job_id, scheduled_for, started_at FROM maintd.runs WHERE status = 'running'")
    stopping_old = time.monotonic()
    old.terminate()  # the operator's restart: systemd stops the old process, then starts the new one
    stop_s = time.monotonic() - stopping_old
    restarted = time.time()
    new = start_daemon(JOBS_TOML, dsn=new_primary, scheduler_toml=config)
    engine_started = _stamp(logged(new, event("engine_started")))
    poll(lambda: _ran_since(new_primary, restarted, 1), timeout=15, what="fires running on the new primary")
    poll(
        lambda: _none_running_from_before(new_primary, restarted),
        timeout=LEASE_S + 5,
        what="no run from before the restart left running",
    )
    stopping = time.time()
    assert new.terminate() == 0
    rows = _all_rows(new_primary)
    problems = _fire_problems(rows, int(up) + 1, int(stopping) - 1)

    by_id = {r["id"]: r for r in rows}
    stale_ids = {r["id"] for r in stale}
    behind_own_claim = [
        f"{r['job_id']} {r['scheduled_for']:%T} {r['trigger']}: {r['error']}"
        for r in rows
        if _skipped_behind(r) in stale_ids
    ]
    released = {i: by_id[i]["finished_at"].timestamp() for i in stale_ids if by_id[i]["finished_at"]}
    released_shown = {run_id: round(at - restarted, 2) for run_id, at in released.items()}
    caught_up = {r["job_id"]: r["status"] for r in rows if r["trigger"] == "catch_up"}
    print(
        f"\n[failover, single host] outage {promoted - crashed:.2f}s; old process stopped in {stop_s:.2f}s;"
        f" claims left running at the crash {[(r['id'], r['job_id'], r['scheduled_for'].strftime('%T')) for r in stale]},"
        f" released {released_shown}s after the restart began (engine_started at"
        f" +{engine_started - restarted:.2f}s); catch-ups {caught_up}; skipped behind its own claim {behind_own_claim};"
        f" problems {problems}"
    )
    assert stale, "no claim was left running by the crash: the scenario did not happen"
    assert not behind_own_claim, "catch-ups skipped behind the restarted node's own stale claims:\n" + "\n".join(
        behind_own_claim
    )
    assert caught_up == dict.fromkeys(JOBS, "succeeded"), caught_up
    # At once: before the restarted engine judged any fire, not a lease later.
    assert released.keys() == stale_ids and all(at <= engine_started for at in released.values()), released_shown
    assert not problems, problems
