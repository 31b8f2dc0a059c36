"""End to end, a replica with a wrong clock: it takes no part in scheduling, and the
replica with a true clock runs every fire on time.

libfaketime shifts one ``maintd run`` process's wall clock (its monotonic clock is
left alone, as a host whose NTP broke would have it); the other replica and the
database keep the true time. Every run is then checked against the database's
records: each fire once, none early, none recorded missed.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from tests.e2e.records import epoch, event, fetch, logged, poll, runs, scheduler_toml, sleep_until, stop_all
from tests.e2e.test_cluster import TICK

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
# Fires watched once both replicas are up.
WATCHED_FIRES = 8


def _named_skew(text: str) -> float | None:
    """The skew a readiness reason or an error names, in seconds."""
    found = re.search(r"clock: ([+-]\d+\.\d{3})s off the database's clock", text)
    return float(found.group(1)) if found else None


def _faketime(offset: str) -> dict[str, str]:
    if not os.path.exists(FAKETIME_LIB):
        pytest.skip("libfaketime is not installed (Debian package faketime)")
    # The monotonic clock stays true: asyncio's timers and the process's own sense of
    # elapsed time are right, only the wall clock is wrong.
    return {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


@pytest.mark.parametrize("offset", ["+10s", "-10s"])
def test_a_replica_with_a_wrong_clock_claims_nothing_and_the_true_one_runs_every_fire(
    start_daemon: Any, db_dsn: str, offset: str
) -> None:
    shift = timedelta(seconds=int(offset.rstrip("s")))
    skewed_env = _faketime(offset)
    # Ahead: started second, its start-up catch-up would judge fires not yet due.
    # Behind: started first, it would register the job as first seen 10 s before it was.
    if shift > timedelta(0):
        true = start_daemon(TICK, dsn=db_dsn, scheduler_toml=scheduler_toml("true"))
        true.wait_for_event(event("run_succeeded", job_id="tick"), timeout=10)
        skewed = start_daemon(TICK, dsn=db_dsn, scheduler_toml=scheduler_toml("skewed"), env=skewed_env)
    else:
        skewed = start_daemon(TICK, dsn=db_dsn, scheduler_toml=scheduler_toml("skewed"), env=skewed_env)
        true = start_daemon(TICK, dsn=db_dsn, scheduler_toml=scheduler_toml("true"))
    logged(skewed, event("engine_started"))
    both_up = time.time()

    with skewed.operator() as on_skewed:
        ready = on_skewed.get("/readyz")
        trigger = on_skewed.post("/admin/trigger/tick")
    # Fires are counted once they are due by the true clock (a replica ahead would claim them early).
    sleep_until(both_up + WATCHED_FIRES + 1.5)
    poll(
        lambda: fetch(
            db_dsn, "SELECT count(*) FROM maintd.runs WHERE job_id = 'tick' AND scheduled_for > to_timestamp($1)",
            both_up,
        )[0][0] >= WATCHED_FIRES,
        timeout=WATCHED_FIRES + 15, what=f"{WATCHED_FIRES} fires with both replicas up",
    )  # fmt: skip
    stop_all([true, skewed])

    rows = fetch(
        db_dsn,
        "SELECT id, scheduled_for, started_at, status, trigger, node, error FROM maintd.runs"
        " WHERE job_id = 'tick' ORDER BY scheduled_for, id",
    )
    per_fire = Counter(epoch(r["scheduled_for"]) for r in rows if r["trigger"] != "manual")
    first, last = min(per_fire), max(per_fire)
    duplicates = {fire: n for fire, n in per_fire.items() if n > 1}
    missing = sorted(set(range(first, last + 1)) - set(per_fire))
    missed = [(r["scheduled_for"].isoformat(), r["error"]) for r in rows if r["status"] == "missed"]
    by_skewed = [r for r in rows if r["node"] == "skewed"]
    # The skewed replica writes times on its own clock: its real start is started_at - shift.
    early = [
        round((r["scheduled_for"] - (r["started_at"] - shift)).total_seconds(), 3)
        for r in by_skewed
        if r["started_at"] is not None and r["started_at"] - shift < r["scheduled_for"]
    ]
    early_true = [r for r in rows if r["node"] == "true" and r["started_at"] and r["started_at"] < r["scheduled_for"]]
    print(
        f"\n[clock {offset}] fires={len(per_fire)} rows={len(rows)} by_node={dict(Counter(r['node'] for r in rows))}"
        f" by_status={dict(Counter(r['status'] for r in rows))} run by the skewed replica={len(by_skewed)}"
        f" of which early={len(early)} (by up to {max(early, default=0)}s) missed={len(missed)}"
        f" duplicates={len(duplicates)} missing={len(missing)}"
        f" readyz={ready.status_code} {ready.json().get('reasons')} trigger={trigger.status_code} {trigger.text}"
    )
    assert ready.status_code == 503
    assert [_named_skew(r) for r in ready.json()["reasons"]] == [pytest.approx(shift.total_seconds(), abs=0.5)]
    assert trigger.status_code == 503, trigger.text
    assert _named_skew(trigger.json()["detail"]) == pytest.approx(shift.total_seconds(), abs=0.5)
    assert not missed, f"fires recorded missed: {missed}"
    assert not by_skewed, f"the skewed replica claimed: {[(r['scheduled_for'], r['status']) for r in by_skewed]}"
    assert not duplicates and not missing, (duplicates, missing)
    assert all(r["status"] == "succeeded" for r in rows), [(r["scheduled_for"], r["status"]) for r in rows]
    assert not early_true
    assert sum(fire > both_up for fire in per_fire) >= WATCHED_FIRES


def test_a_replica_restarted_with_its_clock_set_right_catches_up_its_spell_as_downtime(
    start_daemon: Any, db_dsn: str
) -> None:
    scheduler = scheduler_toml("alone")
    before = start_daemon(TICK, dsn=db_dsn, scheduler_toml=scheduler)
    before.wait_for_event(event("run_succeeded", job_id="tick"), timeout=10)
    assert before.terminate() == 0
    ran_before = runs(db_dsn, "tick")

    skewed = start_daemon(TICK, dsn=db_dsn, scheduler_toml=scheduler, env=_faketime("+10s"))
    logged(skewed, event("engine_started"))
    time_skewed = 4
    time.sleep(time_skewed)
    with skewed.client() as http:
        ready = http.get("/readyz")
    assert skewed.terminate() == 0
    written_in_spell = runs(db_dsn, "tick")[len(ran_before) :]

    after = start_daemon(TICK, dsn=db_dsn, scheduler_toml=scheduler)
    restarted = time.time()
    logged(after, event("engine_started"))
    sleep_until(restarted + 3 + 1.5)  # the start-up catch-up, its second look, and a few fires
    assert after.terminate() == 0

    rows = fetch(
        db_dsn,
        "SELECT scheduled_for, started_at, status, trigger FROM maintd.runs WHERE job_id = 'tick' ORDER BY scheduled_for",
    )
    per_fire = Counter(epoch(r["scheduled_for"]) for r in rows)
    # After the last fire run before the spell: the spell's fires, then the restarted replica's own schedule.
    after = [r for r in rows if r["scheduled_for"] > ran_before[-1]["scheduled_for"]]
    own = next(i for i, r in enumerate(after) if r["trigger"] == "schedule" and r["status"] != "missed")
    spell, rest = after[:own], after[own:]
    early = [r["scheduled_for"].isoformat() for r in rows if r["started_at"] and r["started_at"] < r["scheduled_for"]]
    print(
        f"\n[spell, then restarted right] rows written while skewed={len(written_in_spell)}"
        f" spell={[(r['status'], r['trigger']) for r in spell]} then {len(rest)} fires run on schedule early={early}"
    )
    assert ready.status_code == 503
    assert written_in_spell == [], [(r["scheduled_for"], r["status"], r["node"]) for r in written_in_spell]
    assert max(per_fire.values()) == 1
    assert sorted(per_fire) == list(range(min(per_fire), max(per_fire) + 1))
    # The spell, as after downtime (catch_up = "once"): recorded missed, the latest run late once.
    assert epoch(spell[-1]["scheduled_for"]) - epoch(spell[0]["scheduled_for"]) >= time_skewed - 1
    assert [(r["trigger"], r["status"]) for r in spell if r["status"] != "missed"] == [("catch_up", "succeeded")]
    assert {(r["trigger"], r["status"]) for r in rest} == {("schedule", "succeeded")}
    assert early == []
