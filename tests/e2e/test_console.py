"""The web console in a real Chromium against a real ``maintd run``: what an admin does
with a browser, and what the console must refuse.

Playwright's ``expect``/``wait_for`` wait for what the page shows (auto-refresh, the
live run page): no sleeps. Every page is saved as a screenshot (tests/e2e/browser.py).
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import BROWSER_ZONE, WIDTHS, sign_in
from tests.e2e.records import fetch, poll

pytestmark = pytest.mark.e2e
BERLIN = ZoneInfo(BROWSER_ZONE)

# A job that runs only when triggered, whose run reports progress and logs each step,
# then waits for the test to NOTIFY its gate before the next.
GATED_JOB = """
[jobs.gated]
task = "tests.tasks:gated_progress"
schedule = "@yearly"
[jobs.gated.params]
steps = 3
channel = "console_gate"

[jobs.nightly]
task = "sql"
schedule = "0 0 * * *"
timezone = "Europe/Berlin"
[jobs.nightly.params]
sql = "SELECT 1"
"""


def notify(dsn: str, channel: str) -> None:
    fetch(dsn, "SELECT pg_notify($1, 'go')", channel)


def audit(dsn: str) -> list[tuple[str, str, str, str | None]]:
    rows = fetch(dsn, "SELECT principal, action, target, detail ->> 'via' AS via FROM maintd.audit ORDER BY id")
    return [(r["principal"], r["action"], r["target"], r["via"]) for r in rows]


def test_sign_in_refuses_a_bad_token_takes_a_good_one_and_sign_out_ends_the_session(
    start_daemon: Any, db_dsn: str, new_page: Any
) -> None:
    daemon = start_daemon(GATED_JOB, dsn=db_dsn)
    page = new_page()
    page.goto(f"{daemon.url}/ui/")
    page.get_by_label("Admin token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That token is not valid.")

    sign_in(page, daemon.url, daemon.operator_token)
    cookie = next(c for c in page.context.cookies() if c["name"] == "maintd_session")
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/ui")
    expect(page.locator("header .who")).to_contain_text("ops operator")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Admin token")).to_be_visible()
    # The session is gone from the database: the old cookie opens nothing, on any replica.
    page.context.add_cookies([{**cookie}])
    page.goto(f"{daemon.url}/ui/jobs/gated")
    expect(page.get_by_label("Admin token")).to_be_visible()
    assert re.search(r"/ui/\?next=%2Fui%2Fjobs%2Fgated$", page.url)
    assert [(p, a, v) for p, a, _, v in audit(db_dsn)] == [
        ("ops", "sign_in", "console"),
        ("ops", "sign_out", "console"),
    ]


def test_a_viewer_sees_no_controls_and_a_forged_post_is_refused_and_audited(
    start_daemon: Any, db_dsn: str, new_page: Any
) -> None:
    daemon = start_daemon(GATED_JOB, dsn=db_dsn)
    page = new_page()
    sign_in(page, daemon.url, daemon.viewer_token)
    page.get_by_role("link", name="gated", exact=True).click()
    expect(page.get_by_role("heading", name="Next 10 fires")).to_be_visible()
    for control in ("Run now", "Pause", "Resume"):
        expect(page.get_by_role("button", name=control)).to_have_count(0)

    # What a viewer could still send by hand: the form, with the session's own CSRF token.
    csrf = page.locator("body").get_attribute("hx-headers")
    assert csrf is not None
    token = re.search(r'"X-CSRF-Token": "([^"]+)"', csrf)
    assert token is not None
    answer = page.request.post(f"{daemon.url}/ui/jobs/gated/trigger", form={"csrf": token[1]})
    assert answer.status == 403
    # So are a replay and a re-run (refused before the run is even looked up).
    for path in ("/ui/jobs/gated/replay", "/ui/runs/1/rerun"):
        form = {"csrf": token[1], "from": "2026-01-01", "to": "2026-01-02", "confirm": "1"}
        assert page.request.post(f"{daemon.url}{path}", form=form).status == 403
    assert fetch(db_dsn, "SELECT count(*) FROM maintd.runs")[0][0] == 0
    assert audit(db_dsn)[-3:] == [
        ("watcher", "trigger", "gated", "console"),
        ("watcher", "replay", "gated", "console"),
        ("watcher", "rerun", "run:1", "console"),
    ]

    # And an operator's session without the CSRF token (another site's form) changes nothing.
    operator = new_page()
    sign_in(operator, daemon.url, daemon.operator_token)
    assert operator.request.post(f"{daemon.url}/ui/jobs/gated/pause", form={}).status == 403
    assert fetch(db_dsn, "SELECT count(*) FROM maintd.job_state WHERE paused")[0][0] == 0


def test_run_now_with_an_edited_param_and_a_reason_lands_on_the_run_page_which_follows_it_live_then_cancel(
    start_daemon: Any, db_dsn: str, new_page: Any, screenshots: Path
) -> None:
    daemon = start_daemon(GATED_JOB, dsn=db_dsn)
    page = new_page()
    sign_in(page, daemon.url, daemon.operator_token)
    page.goto(f"{daemon.url}/ui/jobs/gated")
    run_now = page.get_by_role("form", name="Run now")
    # The configured params: steps the task lets a run change, channel shown but fixed;
    # gated_progress cannot run dry, so no switch is offered.
    steps = run_now.get_by_label("steps", exact=True)
    expect(steps).to_have_value("3")
    expect(run_now.get_by_label("channel")).to_have_count(0)
    expect(run_now.locator(".fixed-param")).to_contain_text("console_gate")
    expect(run_now.get_by_label("Dry run")).to_have_count(0)

    # A bad value: the engine's 422 on the form, as typed, and nothing runs.
    steps.fill("three")
    run_now.get_by_label("Reason").fill("ticket 42: a longer run")
    run_now.get_by_role("button", name="Run now").click()
    expect(page.get_by_role("alert")).to_contain_text("params.steps: Input should be a valid integer")
    expect(steps).to_have_value("three")
    expect(steps).to_have_attribute("aria-invalid", "true")
    expect(run_now.get_by_label("Reason")).to_have_value("ticket 42: a longer run")
    assert fetch(db_dsn, "SELECT count(*) FROM maintd.runs")[0][0] == 0

    steps.fill("5")
    run_now.get_by_role("button", name="Run now").click()
    expect(page).to_have_url(re.compile(r"/ui/runs/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    expect(page.locator(".reason")).to_have_text("ticket 42: a longer run")
    expect(page.locator("pre.params")).to_contain_text('"steps": 5')
    expect(page.locator(".progress-of")).to_have_text("5")
    expect(page.locator(".progress-step")).to_have_text("1")
    expect(page.locator("#log-lines li").last).to_contain_text("step=1")
    lines_at_step_1 = page.locator("#log-lines li").count()
    notify(db_dsn, "console_gate")
    # The page updates itself: the next step and its log line arrive without a reload.
    expect(page.locator(".progress-step")).to_have_text("2")
    expect(page.locator("#log-lines li").last).to_contain_text("step_reached")
    expect(page.locator("#log-lines li").last).to_contain_text("step=2")
    # Appended, never duplicated: each line once, in order.
    seqs = [int(s) for s in page.locator("#log-lines li").evaluate_all("els => els.map(e => e.dataset.seq)")]
    assert seqs == sorted(set(seqs)) and len(seqs) > lines_at_step_1
    expect(page.locator("progress")).to_have_attribute("value", "2")
    page.screenshot(path=screenshots / "run-live-wide.png", full_page=True)

    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator(".big-status")).to_contain_text("cancelled")
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    run = daemon.follow(run_id)
    assert (run["status"], run["params"]["steps"], run["reason"]) == ("cancelled", 5, "ticket 42: a longer run")
    assert [(a, t, v) for _, a, t, v in audit(db_dsn)][-2:] == [
        ("trigger", "gated", "console"),
        ("cancel", f"run:{run_id}", "console"),
    ]
    # The audit page shows what was asked: the override and the reason.
    page.goto(f"{daemon.url}/ui/audit?action=trigger")
    row = page.locator("table.audit tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("reason=ticket 42: a longer run")
    expect(row).to_contain_text("'steps': 5")


def test_a_dry_run_from_the_job_page_then_its_re_run(start_daemon: Any, db_dsn: str, new_page: Any) -> None:
    daemon = start_daemon(GATED_JOB, dsn=db_dsn)
    page = new_page()
    sign_in(page, daemon.url, daemon.operator_token)
    page.goto(f"{daemon.url}/ui/jobs/nightly")
    run_now = page.get_by_role("form", name="Run now")
    # The sql task runs dry (in a transaction rolled back); its statement is never a run's to change.
    expect(run_now.get_by_label("sql")).to_have_count(0)
    run_now.get_by_label("Dry run").check()
    form = {name: run_now.locator(f"input[name={name}]").input_value() for name in ("csrf", "key")}
    run_now.get_by_role("button", name="Run now").click()
    expect(page).to_have_url(re.compile(r"/ui/runs/\d+$"))
    first = int(page.url.rsplit("/", 1)[1])
    # The same form sent again (a double click, a retried post) answers the same run.
    again = page.request.post(
        f"{daemon.url}/ui/jobs/nightly/trigger", form={**form, "reason": "", "dry_run": "true"}, max_redirects=0
    )
    assert (again.status, again.headers["location"]) == (303, f"/ui/runs/{first}")
    # Once it has ended, the page reloads itself: no cancel, a re-run instead.
    expect(page.locator(".big-status")).to_contain_text("succeeded")
    expect(page.locator(".dry-run")).to_contain_text("yes")

    page.get_by_label("Reason").fill("again, to compare")
    page.get_by_role("button", name="Re-run").click()
    expect(page).to_have_url(re.compile(r"/ui/runs/\d+$"))
    second = int(page.url.rsplit("/", 1)[1])
    assert second != first
    expect(page.get_by_role("link", name=f"run #{first}")).to_be_visible()
    expect(page.locator(".reason")).to_have_text("again, to compare")
    expect(page.locator(".dry-run")).to_contain_text("yes")
    expect(page.locator(".big-status")).to_contain_text("succeeded")
    assert [(a, t, v) for _, a, t, v in audit(db_dsn)][-2:] == [
        ("trigger", "nightly", "console"),
        ("rerun", f"run:{first}", "console"),
    ]
    assert fetch(db_dsn, "SELECT count(*) FROM maintd.runs")[0][0] == 2


def test_pause_and_resume_from_the_job_page(start_daemon: Any, db_dsn: str, new_page: Any) -> None:
    daemon = start_daemon(GATED_JOB, dsn=db_dsn)
    page = new_page()
    sign_in(page, daemon.url, daemon.operator_token)
    page.goto(f"{daemon.url}/ui/jobs/nightly")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("h1 .state")).to_have_text("paused")
    with daemon.operator() as http:
        assert http.get("/admin/jobs/nightly").json()["paused"] is True
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("h1 .state")).to_have_text("ok")

    page.goto(f"{daemon.url}/ui/audit?action=pause")
    rows = page.locator("table.audit tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("nightly")
    expect(rows.first).to_contain_text("console")


def last_midnights(count: int) -> list[datetime]:
    """The nightly job's latest fire times (00:00 in Berlin), oldest first: recording them
    leaves the daemon no gap to catch up."""
    today = datetime.now(BERLIN).replace(hour=0, minute=0, second=0, microsecond=0)
    return [today - timedelta(days=back) for back in range(count - 1, -1, -1)]


def record_fire(dsn: str, status: str, at: datetime) -> None:
    started = None if status in ("missed", "skipped") else at
    fetch(
        dsn,
        "INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, attempt, exclusive, started_at,"
        " finished_at, node, error) VALUES ('nightly', 'schedule', $1, $2, 1, false, $3, $4, 'n', $5)",
        status,
        at,
        started,
        at + timedelta(seconds=1),
        None if status == "succeeded" else f"{status}: as recorded by the test",
    )


def test_the_overview_strip_shows_a_missed_fire_and_refreshes_itself(
    start_daemon: Any, db_dsn: str, new_page: Any
) -> None:
    daemon = start_daemon(GATED_JOB, dsn=db_dsn)
    before, yesterday, today = last_midnights(3)
    record_fire(db_dsn, "succeeded", yesterday)
    record_fire(db_dsn, "missed", today)
    page = new_page()
    sign_in(page, daemon.url, daemon.operator_token)
    strip = page.locator("tr[data-job='nightly'] .strip a")
    expect(strip).to_have_count(2)
    # Oldest first; each cell says what it was and when, in the browser's zone.
    expect(strip.last).to_have_class(re.compile(r"\bst-missed\b"))
    expect(strip.last).to_have_text(f"missed {today:%Y-%m-%d %H:%M:%S}")
    expect(strip.first).to_have_text(f"succeeded {yesterday:%Y-%m-%d %H:%M:%S}")

    # A fire recorded meanwhile shows up without a reload (the overview polls every 10 s).
    record_fire(db_dsn, "skipped", before)
    expect(strip).to_have_count(3, timeout=15_000)
    expect(strip.last).to_have_class(re.compile(r"\bst-skipped\b"))
    # The state filter narrows the table as it changes.
    page.get_by_label("State").select_option("paused")
    expect(page.locator("table.jobs tbody")).to_contain_text("No job matches.")


def test_replay_a_missed_fire_from_the_job_page(
    start_daemon: Any, db_dsn: str, new_page: Any, screenshots: Path
) -> None:
    daemon = start_daemon(GATED_JOB, dsn=db_dsn)
    yesterday, today = last_midnights(2)
    record_fire(db_dsn, "succeeded", yesterday)
    record_fire(db_dsn, "missed", today)
    page = new_page()
    sign_in(page, daemon.url, daemon.operator_token)
    page.goto(f"{daemon.url}/ui/jobs/nightly")
    replay = page.get_by_role("region", name="Replay missed fires")
    replay.get_by_label("From").fill(f"{yesterday:%Y-%m-%d}")
    replay.get_by_label("To").fill(f"{today:%Y-%m-%d}")
    replay.get_by_label("Reason").fill("the database was down")
    replay.get_by_role("button", name="List the fires").click()

    # First only the list (a dry run: nothing runs), in the browser's time zone.
    expect(page.get_by_role("heading", name="1 fire to replay")).to_be_visible()
    expect(page.locator("ol.fires li")).to_have_text([f"{today:%Y-%m-%d %H:%M:%S}"])
    page.screenshot(path=screenshots / "replay-wide.png", full_page=True)
    assert fetch(db_dsn, "SELECT count(*) FROM maintd.runs WHERE trigger = 'replay'")[0][0] == 0

    page.get_by_role("button", name="Replay 1 fire").click()
    expect(page.get_by_role("heading", name="Replaying 1 fire")).to_be_visible()
    expect(page.locator("ol.fires li")).to_have_text([f"{today:%Y-%m-%d %H:%M:%S}"])
    # The replay runs after the answer, on this replica: wait for its run to end.
    poll(
        lambda: fetch(db_dsn, "SELECT 1 FROM maintd.runs WHERE trigger = 'replay' AND status = 'succeeded'"),
        10, "the replayed run",
    )  # fmt: skip
    page.get_by_role("link", name="The replay's runs").click()
    rows = page.locator("table.runs tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("replay")
    expect(rows.first).to_contain_text("succeeded")
    expect(rows.first.locator("td").nth(3)).to_have_text(f"{today:%Y-%m-%d %H:%M:%S}")
    entries = fetch(
        db_dsn, "SELECT detail ->> 'dry_run' AS dry, detail ->> 'via' AS via, detail ->> 'reason' AS reason"
        " FROM maintd.audit WHERE action = 'replay' ORDER BY id",
    )  # fmt: skip
    assert [tuple(e) for e in entries] == [
        ("true", "console", "the database was down"),
        ("false", "console", "the database was down"),
    ]


@pytest.mark.slow
def test_every_page_at_1280_and_390_px(start_daemon: Any, db_dsn: str, new_page: Any, screenshots: Path) -> None:
    """Screenshots of each page at both widths; at 390 px nothing but the calendar's own
    scroller is wider than the screen."""
    daemon = start_daemon(GATED_JOB, dsn=db_dsn)
    statuses = ["succeeded", "succeeded", "failed", "succeeded", "missed", "succeeded", "timed_out", "succeeded"]
    for status, at in zip(statuses, last_midnights(len(statuses)), strict=True):
        record_fire(db_dsn, status, at)
    with daemon.operator() as http:
        run_id = http.post("/admin/trigger/gated").json()["run_id"]
    pages = {
        "overview": "/ui/",
        "job": "/ui/jobs/nightly",
        "run": f"/ui/runs/{run_id}",
        "calendar": "/ui/calendar",
        "audit": "/ui/audit",
    }
    began = time.monotonic()
    for size, width in WIDTHS.items():
        page = new_page(width)
        sign_in(page, daemon.url, daemon.operator_token)
        for name, path in pages.items():
            page.goto(daemon.url + path)
            page.locator("main h1").wait_for()
            page.screenshot(path=screenshots / f"{name}-{size}.png", full_page=True)
            overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"{name} at {width} px is {overflow} px wider than the screen"
    notify(db_dsn, "console_gate")
    assert time.monotonic() - began < 60
