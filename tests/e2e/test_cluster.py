"""End to end, several replicas on one database: each fire exactly once, nothing stuck, nothing silently missed.

Real ``maintd run`` processes share a PostgreSQL; the tests kill them, stop them,
and stop the database under them, then read ``maintd.runs`` to check what
the cluster recorded. Waiting for wall-clock fire times is inherent here
(every schedule is epoch-aligned ``every N``); everything else is awaited on
the daemons' JSON log events or polled with a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from maintd.scheduler.engine.catch_up import CLAIM_SETTLE
from maintd.scheduler.store.embedded import EmbeddedPostgres, EmbeddedPostgresError
from tests.e2e.conftest import Daemon
from tests.e2e.records import (
    epoch,
    event,
    fetch,
    logged,
    poll,
    runs,
    scheduler_toml,
    sleep_until,
    stop_all,
    timeline,
)

pytestmark = pytest.mark.e2e

TICK = """
[jobs.tick]
task = "sql"
schedule = "every 1s"
[jobs.tick.params]
sql = "SELECT 1"
"""

SLOW = """
[jobs.slow]
task = "tests.tasks:sleep"
schedule = "@yearly"
[jobs.slow.params]
seconds = {seconds}
cooperative = true
"""


# -- 1. exactly once per fire, three replicas ---------------------------------------------------


def test_three_replicas_run_every_fire_exactly_once(start_daemon: Any, db_dsn: str) -> None:
    replicas = [start_daemon(TICK, dsn=db_dsn, scheduler_toml=scheduler_toml(f"r{i}")) for i in (1, 2, 3)]
    all_up = time.time()

    def ten_fires_with_all_up() -> bool:
        rows = fetch(
            db_dsn,
            "SELECT count(*) FROM maintd.runs WHERE job_id = 'tick' AND scheduled_for > to_timestamp($1)",
            all_up,
        )
        return rows[0][0] >= 11

    poll(ten_fires_with_all_up, timeout=20, what="11 fires of 'every 1s' after the third replica came up")
    stop_all(replicas)

    rows = runs(db_dsn, "tick")
    per_fire = Counter(epoch(r["scheduled_for"]) for r in rows)
    first, last = min(per_fire), max(per_fire)
    expected = set(range(first, last + 1))
    duplicates = {fire: n for fire, n in per_fire.items() if n > 1}
    missing = sorted(expected - set(per_fire))
    not_succeeded = [
        (r["scheduled_for"].isoformat(), r["status"], r["error"]) for r in rows if r["status"] != "succeeded"
    ]
    by_node = Counter(r["node"] for r in rows)
    by_trigger = Counter(r["trigger"] for r in rows)
    # A replica starting within milliseconds after a fire time, before a live replica has claimed it, may
    # take that fire as its start-up catch-up: still once, but labelled catch_up (reported, not asserted).
    start_catch_ups = {
        f"r{i}": [(e["count"], e["first"]) for e in daemon.events if e.get("event") == "fires_missed"]
        for i, daemon in enumerate(replicas, 1)
    }
    print(
        f"\n[exactly once] fires={len(expected)} (window {last - first + 1}s, {sum(f > all_up for f in per_fire)} with"
        f" all 3 up) rows={len(rows)} duplicates={len(duplicates)} missing={len(missing)}"
        f" by_node={dict(sorted(by_node.items()))} by_trigger={dict(by_trigger)} fires_missed at start={start_catch_ups}"
    )
    assert not duplicates, f"fires run more than once: {duplicates}"
    assert not missing, f"fires without a row: {missing}"
    assert not not_succeeded, f"fires that did not succeed: {not_succeeded}"
    assert sum(f > all_up for f in per_fire) >= 10
    assert len(by_node) > 1, f"one replica ran everything: {by_node}"


# -- 2. no overlap and cancel across replicas ----------------------------------------------------


def test_trigger_conflicts_and_cancel_reach_the_owning_replica(start_daemon: Any, db_dsn: str) -> None:
    jobs = SLOW.format(seconds=60)
    a = start_daemon(jobs, dsn=db_dsn, scheduler_toml=scheduler_toml("a"))  # default lease 30 s: heartbeat every 10 s
    b = start_daemon(jobs, dsn=db_dsn, scheduler_toml=scheduler_toml("b"))
    with a.operator() as on_a, b.operator() as on_b:
        started = on_a.post("/admin/trigger/slow")
        assert started.status_code == 202
        run_id = started.json()["run_id"]
        a.wait_for_event(event("run_started", run_id=run_id))

        busy = on_b.post("/admin/trigger/slow")
        assert busy.status_code == 409, busy.text
        assert f"run {run_id}" in busy.json()["detail"]

        asked = time.monotonic()
        cancel = on_b.post(f"/admin/runs/{run_id}/cancel")
        assert cancel.status_code == 202, cancel.text

        def ended() -> dict[str, Any] | None:
            run = on_b.get(f"/admin/runs/{run_id}").json()
            return run if run["status"] != "running" else None

        run = poll(ended, timeout=15, what=f"run {run_id} ending after a cancel sent to the other replica")
        latency = time.monotonic() - asked
        print(f"\n[cancel] run {run_id} on node {run['node']} cancelled from node b in {latency:.3f}s")
        assert run["status"] == "cancelled" and run["node"] == "a"
        assert run["error"] == "cancelled by ops"
        # Well under the 10 s heartbeat fallback: the owner heard the NOTIFY.
        assert latency < 3
        a.wait_for_event(event("run_cancelled", run_id=run_id), timeout=5)

        again = on_b.post("/admin/trigger/slow")  # the job is free again, on either replica
        assert again.status_code == 202, again.text
        assert on_b.post(f"/admin/runs/{again.json()['run_id']}/cancel").status_code == 202
        assert b.follow(again.json()["run_id"], timeout=10)["status"] == "cancelled"
    stop_all([a, b])


# -- 3. a killed owner's run is declared lost, and the job runs again --------------------------


def test_sigkill_of_the_owner_loses_the_run_within_lease_plus_one_heartbeat(start_daemon: Any, db_dsn: str) -> None:
    # Same job id on both replicas; B's copy sleeps briefly so that its run after the loss ends quickly.
    a = start_daemon(SLOW.format(seconds=60), dsn=db_dsn, scheduler_toml=scheduler_toml("a", lease="4s"))
    b = start_daemon(SLOW.format(seconds=0.3), dsn=db_dsn, scheduler_toml=scheduler_toml("b", lease="4s"))
    with a.operator() as on_a:
        started = on_a.post("/admin/trigger/slow")
        assert started.status_code == 202
        run_id = started.json()["run_id"]
    a.wait_for_event(event("run_started", run_id=run_id))

    a.process.kill()
    killed = time.monotonic()
    a.process.wait(10)
    lost = b.wait_for_event(event("run_lost", run_id=run_id), timeout=15)
    detection = time.monotonic() - killed
    print(f"\n[lost] run {run_id} of node a declared lost by node b {detection:.3f}s after SIGKILL (lease 4s)")
    assert lost["owner"] == "a"
    assert detection <= 6.5  # lease 4 s + one heartbeat 1.33 s, plus slack for the log pipe

    with b.operator() as on_b:
        run = on_b.get(f"/admin/runs/{run_id}").json()
        assert run["status"] == "lost" and run["node"] == "a"
        assert "stopped heartbeating" in run["error"]
        again = on_b.post("/admin/trigger/slow")
        assert again.status_code == 202, again.text
    rerun = b.follow(again.json()["run_id"], timeout=10)
    assert rerun["status"] == "succeeded" and rerun["node"] == "b"
    assert b.terminate() == 0


# -- 3b. the owner of a fire claimed ahead is killed before the fire time -------------------------


def test_sigkill_between_a_claim_ahead_and_its_fire_runs_the_fire_late_once(start_daemon: Any, db_dsn: str) -> None:
    period = 20  # the fire's catch-up comes a lease later, well before the next fire
    jobs = f'[jobs.nightly]\ntask = "sql"\nschedule = "every {period}s"\n[jobs.nightly.params]\nsql = "SELECT 1"\n'
    a = start_daemon(jobs, dsn=db_dsn, scheduler_toml=scheduler_toml("a", lease="4s"))
    b = start_daemon(jobs, dsn=db_dsn, scheduler_toml=scheduler_toml("b", lease="4s"))

    def claimed_ahead() -> asyncpg.Record | None:
        rows = fetch(
            db_dsn,
            "SELECT id, node, scheduled_for FROM maintd.runs"
            " WHERE job_id = 'nightly' AND status = 'running' AND started_at IS NULL",
        )
        return rows[0] if rows else None

    claim = poll(claimed_ahead, timeout=period + 5, what="a claim ahead of the next fire")
    owner, survivor = (a, b) if claim["node"] == "a" else (b, a)
    survivor_node = "b" if claim["node"] == "a" else "a"
    owner.process.kill()
    killed = time.time()
    owner.process.wait(10)
    fire = claim["scheduled_for"]
    assert killed < fire.timestamp(), "killed after the fire time: not the case under test"

    caught_up = survivor.wait_for_event(event("catch_up_of_reaped_fire", run_id=claim["id"]), timeout=15)
    rows = poll(
        lambda: (rows := [r for r in runs(db_dsn, "nightly") if r["scheduled_for"] == fire])
        and all(r["status"] != "running" for r in rows) and len(rows) == 2 and rows,
        timeout=10, what="the fire's late run ended",
    )  # fmt: skip
    print(
        f"\n[claimed, then killed] {claim['node']} killed {fire.timestamp() - killed:.3f}s before the fire;"
        f" {survivor_node} ran it late at"
        f" +{datetime.fromisoformat(caught_up['timestamp']).timestamp() - fire.timestamp():.3f}s:"
        f" {[(r['status'], r['trigger'], r['attempt'], r['node']) for r in rows]}"
    )
    assert [(r["status"], r["trigger"], r["attempt"], r["node"]) for r in rows] == [
        ("missed", "schedule", 1, claim["node"]),
        ("succeeded", "catch_up", 2, survivor_node),
    ]
    assert survivor.terminate() == 0


# -- 4. every replica down across fire times, then up --------------------------------------------


@pytest.mark.parametrize("catch_up", ["once", "none"])
def test_fires_missed_while_no_replica_ran_are_recorded_and_caught_up(
    start_daemon: Any, db_dsn: str, catch_up: str
) -> None:
    step = 4
    jobs = (
        f'[jobs.tick3]\ntask = "sql"\nschedule = "every {step}s"\ncatch_up = "{catch_up}"\n'
        '[jobs.tick3.params]\nsql = "SELECT 1"\n'
    )
    first = start_daemon(jobs, dsn=db_dsn, scheduler_toml=scheduler_toml("first"))
    first.wait_for_event(event("run_succeeded", job_id="tick3"), timeout=step + 5)
    assert first.terminate() == 0
    before = runs(db_dsn, "tick3")
    assert [(r["status"], r["trigger"]) for r in before] == [("succeeded", "schedule")] * len(before)
    last_run = epoch(before[-1]["scheduled_for"])

    # Down across two fire times (last_run + 4 and + 8), then up again once the second
    # is older than the engine's CLAIM_SETTLE, so that start-up judges both.
    sleep_until(last_run + 2 * step + CLAIM_SETTLE.total_seconds() + 0.3)
    second = start_daemon(jobs, dsn=db_dsn, scheduler_toml=scheduler_toml("second"))
    started = logged(second, event("engine_started"))  # the catch-up is claimed before this event
    catch_up_run = [r for r in runs(db_dsn, "tick3") if r["trigger"] == "catch_up"]
    if catch_up_run:
        second.follow(catch_up_run[0]["id"], timeout=10)
    # The stop waits for the judging of the fires that came due while the engine started.
    assert second.terminate() == 0
    logged(second, event("engine_stopped"))  # every event it logged is read

    # A fire that came due while the restarted process was still starting (a slow start,
    # under load) had no replica to run it either: it is judged as missed too. The engine
    # starts firing just before it logs engine_started; a fire in that instant may go either way.
    up_at = datetime.fromisoformat(started["timestamp"]).timestamp()
    after = [r for r in runs(db_dsn, "tick3") if epoch(r["scheduled_for"]) > last_run]
    fires = [epoch(r["scheduled_for"]) for r in after]
    assert fires == list(range(last_run + step, last_run + step * (len(fires) + 1), step)), (
        f"each fire after the last run must have exactly one row: {fires}"
    )
    down = [r for r in after if epoch(r["scheduled_for"]) < up_at - 0.1]
    up = [r for r in after if epoch(r["scheduled_for"]) > up_at]
    missed = [epoch(r["scheduled_for"]) for r in after if r["status"] == "missed"]
    caught_up = [r for r in after if r["trigger"] == "catch_up"]
    judged = sum(e["count"] for e in second.events if e.get("event") == "fires_missed")
    print(
        f"\n[catch_up={catch_up}] down after the fire at {last_run}, engine up at +{up_at - last_run:.2f}s;"
        f" missed rows at +{[f - last_run for f in missed]}s, catch_up runs "
        f"{[(epoch(r['scheduled_for']) - last_run, r['status']) for r in caught_up]} (fires_missed counts {judged})"
    )
    assert len(down) >= 2
    assert all(r["trigger"] == "schedule" for r in after if r["status"] == "missed")
    if catch_up == "once":
        assert len(caught_up) == 1 and caught_up[0]["status"] == "succeeded"
        latest = epoch(caught_up[0]["scheduled_for"])
        assert latest >= last_run + 2 * step
        # Every other fire while down is missed; the catch-up run stands for them.
        assert [epoch(r["scheduled_for"]) for r in down if r["status"] == "missed"] == [
            epoch(r["scheduled_for"]) for r in down if epoch(r["scheduled_for"]) != latest
        ]
        assert judged == len(missed) + 1
    else:
        assert caught_up == []
        assert all(r["status"] == "missed" for r in down)
        assert judged == len(missed)
    # What follows is the restarted replica's own schedule, run normally; a fire due while
    # the catch-up run still runs is skipped (overlap = "forbid"), and says so.
    overlapped = [f"skipped: run {r['id']} was still running (overlap = 'forbid')" for r in caught_up]
    for r in up:
        assert (r["trigger"], r["status"]) == ("schedule", "succeeded") or r["error"] in overlapped, r


# -- 5. PostgreSQL stopped under a running daemon ------------------------------------------------


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A directory for a PostgreSQL of the test's own, outside pytest's tmp_path on purpose.

    Every pytest session that starts (another engineer's, another CI job's) chmods
    /tmp/pytest-of-<user> back to 0700; as root the embedded server runs as the
    `postgres` user, which is then locked out of a data dir under tmp_path, and
    `pg_ctl stop` fails, leaving the server running.
    """
    path = Path(tempfile.mkdtemp(prefix="maintd-e2e-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _stop_server(server: EmbeddedPostgres, data_dir: Path) -> None:
    try:
        server.stop()
    except EmbeddedPostgresError:
        # Never leave a server of ours behind: SIGINT is PostgreSQL's fast shutdown.
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGINT)
        raise


def test_database_outage_keeps_the_daemon_up_and_records_what_it_missed(start_daemon: Any, private_dir: Path) -> None:
    lease = 3  # heartbeat (and reaper) every second
    data_dir = private_dir / "pg"
    server = EmbeddedPostgres(data_dir, database="maintd_outage")
    dsn = server.start()  # initdb, start, CREATE DATABASE
    # Runs long enough that the outage interrupts one.
    jobs = TICK.replace('sql = "SELECT 1"', 'sql = "SELECT pg_sleep(0.6)"')
    daemon: Daemon | None = None
    try:
        daemon = start_daemon(jobs, dsn=dsn, scheduler_toml=scheduler_toml("solo", lease=f"{lease}s"))
        with daemon.client() as http:
            assert http.get("/readyz").status_code == 200
            interrupted = daemon.wait_for_event(event("run_started", job_id="tick"), timeout=10)["run_id"]

            stopped_at, stopping = time.time(), time.monotonic()
            _stop_server(server, data_dir)
            stop_s = time.monotonic() - stopping

            def not_ready() -> dict[str, Any] | None:
                answer = http.get("/readyz")
                return answer.json() if answer.status_code == 503 else None

            body = poll(not_ready, timeout=10, what="/readyz answering 503 with the database down")
            flipped = time.monotonic() - stopping
            assert any(reason.startswith("database") for reason in body["reasons"]), body
            assert http.get("/healthz").json() == {"status": "ok"}

            time.sleep(max(0.0, stopping + 9.5 - time.monotonic()))  # the outage: 10 s
            assert daemon.process.poll() is None
            assert http.get("/healthz").status_code == 200
            # Whenever the server comes back, every claim (ahead, or at the fire time) waits for the
            # recovery to record what the outage missed (the interleavings are tests/integration/test_outage.py's).
            restarted_at, restarting = time.time(), time.monotonic()
            server.start()
            outage_s = restarted_at - stopped_at
            poll(lambda: http.get("/readyz").status_code == 200, timeout=20, what="/readyz back to 200")
            ready_again = time.monotonic() - restarting
        daemon.wait_for_event(event("database_recovered"), timeout=10)
        recovered = time.monotonic() - restarting

        # Nothing stays running: what the outage interrupted ends (recorded late, or reaped) within a lease.
        def none_running_from_before() -> bool:
            rows = fetch(
                dsn,
                "SELECT count(*) FROM maintd.runs WHERE status = 'running' AND scheduled_for < to_timestamp($1)",
                restarted_at,
            )
            return rows[0][0] == 0

        poll(none_running_from_before, timeout=lease + 3, what="no run from before the restart still running")
        assert daemon.terminate() == 0
        logged(daemon, event("engine_stopped"))  # read the log to its end
        rows = runs(dsn, "tick")
    finally:
        if daemon is not None and daemon.process.poll() is None:
            daemon.process.kill()  # before its server goes
        _stop_server(server, data_dir)

    story = timeline(daemon, since=stopped_at - 2)
    statuses = Counter(r["status"] for r in rows)
    per_fire = Counter(epoch(r["scheduled_for"]) for r in rows)
    duplicates = {fire: n for fire, n in per_fire.items() if n > 1}
    missing = sorted(set(range(min(per_fire), max(per_fire) + 1)) - set(per_fire))
    # Fires clearly inside the outage (a second of margin at each end for the claims in flight).
    during = [r for r in rows if stopped_at + 1 < r["scheduled_for"].timestamp() < restarted_at]
    caught_up = [r for r in rows if r["trigger"] == "catch_up"]
    interrupted_run = next(r for r in rows if r["id"] == interrupted)
    print(
        f"\n[outage] server stopped in {stop_s:.2f}s, down {outage_s:.1f}s; /readyz 503 {flipped:.2f}s after the stop"
        f" began ({body['reasons']}); 200 again {ready_again:.2f}s after the restart began; database_recovered after"
        f" {recovered:.2f}s; run {interrupted} interrupted by the stop ended {interrupted_run['status']};"
        f" rows {dict(statuses)}; outage fires {len(during)}:"
        f" {dict(Counter((r['status'], r['trigger']) for r in during))};"
        f" catch_up runs {[(r['scheduled_for'].isoformat(), r['status']) for r in caught_up]};"
        f" duplicates={len(duplicates)} missing={len(missing)} {missing}"
    )
    assert flipped < 5
    assert "running" not in statuses
    assert not duplicates, duplicates
    assert not missing, f"fires with no row at all (silently missed): {missing}; daemon events:\n{story}"
    assert len(during) >= 7
    assert all(r["status"] == "missed" or r["trigger"] == "catch_up" for r in during), f"{during}\n{story}"
    assert len(caught_up) == 1 and caught_up[0]["status"] == "succeeded", (
        f"catch_up runs {caught_up}; daemon events:\n{story}"
    )
    # The catch-up run stands for the latest fire missed during the outage.
    assert caught_up[0]["scheduled_for"].timestamp() >= max(r["scheduled_for"].timestamp() for r in during)
