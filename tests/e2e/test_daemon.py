"""End to end: the real ``maintd run`` process, over HTTP and signals, on a real PostgreSQL."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.e2e.conftest import check_config, free_port, launch, maintd_command, run_env, serving

pytestmark = pytest.mark.e2e

JOBS = """
[jobs.purge]
task = "sql"
schedule = "@daily"
[jobs.purge.params]
sql = "DELETE FROM pg_class WHERE false"

[jobs.slow]
task = "tests.tasks:sleep"
schedule = "@yearly"
[jobs.slow.params]
seconds = 60
"""


def test_trigger_over_http_and_follow_the_run_to_its_end(start_daemon: Any, empty_db_dsn: str) -> None:
    daemon = start_daemon(JOBS, dsn=empty_db_dsn)  # the daemon applies its migrations at start
    with daemon.operator() as http:
        assert http.get("/readyz").json() == {"status": "ready"}
        response = http.post("/admin/trigger/purge")
        assert response.status_code == 202
        body = response.json()
        assert body["job_id"] == "purge" and body["status"] == "running"

        run = daemon.follow(body["run_id"])
        assert run["status"] == "succeeded"
        assert run["result"] == {"status": "DELETE 0", "rows": 0}
        assert run["triggered_by"] == "ops"
        assert run["trigger"] == "manual"
        assert run["started_at"].endswith("+00:00")

        job = http.get("/admin/jobs/purge").json()
        assert job["last_run"]["id"] == body["run_id"]
        assert len(job["upcoming"]) == 5 and job["next_run_time"] == job["upcoming"][0]

        audit = http.get("/admin/audit").json()
        assert [(a["principal"], a["action"], a["target"], a["client"]) for a in audit] == [
            ("ops", "trigger", "purge", "127.0.0.1")
        ]
        metrics = http.get("/metrics").text
        assert 'maintd_runs_total{job_id="purge",status="succeeded"} 1.0' in metrics


def test_auth_not_found_and_conflicts(start_daemon: Any, db_dsn: str) -> None:
    daemon = start_daemon(JOBS, dsn=db_dsn)
    with daemon.client() as anonymous, daemon.client("not-a-token") as stranger:
        assert anonymous.get("/admin/jobs").status_code == 401
        assert stranger.get("/admin/jobs").status_code == 401
        assert anonymous.get("/healthz").json() == {"status": "ok"}
    with daemon.client(daemon.viewer_token) as viewer:
        assert viewer.get("/admin/jobs").status_code == 200
        refused = viewer.post("/admin/trigger/purge")
        assert refused.status_code == 403 and "detail" in refused.json()
    with daemon.operator() as http:
        missing = http.post("/admin/trigger/nope")
        assert missing.status_code == 404 and missing.json() == {"detail": "no job 'nope'"}
        assert http.get("/admin/runs/123456").status_code == 404
        assert http.get("/admin/runs/abc").status_code == 422
        assert http.get("/admin/runs", params={"limit": -1}).status_code == 422

        first = http.post("/admin/trigger/slow").json()
        busy = http.post("/admin/trigger/slow")
        assert busy.status_code == 409
        assert f"run {first['run_id']}" in busy.json()["detail"]

        assert http.post(f"/admin/runs/{first['run_id']}/cancel").status_code == 202
        run = daemon.follow(first["run_id"])
        assert run["status"] == "cancelled" and run["error"] == "cancelled by ops"
        ended = http.post(f"/admin/runs/{first['run_id']}/cancel")
        assert ended.status_code == 409 and "cancelled" in ended.json()["detail"]


def test_pause_survives_a_restart(start_daemon: Any, db_dsn: str) -> None:
    daemon = start_daemon(JOBS, dsn=db_dsn)
    with daemon.operator() as http:
        paused = http.post("/admin/jobs/purge/pause").json()
        assert paused["paused"] is True and paused["next_run_time"] is None
    assert daemon.terminate() == 0
    again = start_daemon(JOBS, dsn=db_dsn)
    with again.operator() as http:
        assert http.get("/admin/jobs/purge").json()["paused"] is True
        assert http.post("/admin/jobs/purge/resume").json()["paused"] is False


def test_sigterm_drains_a_run_that_finishes_within_grace(start_daemon: Any, db_dsn: str) -> None:
    jobs = JOBS.replace("seconds = 60", "seconds = 1.5")
    daemon = start_daemon(jobs, dsn=db_dsn, scheduler_toml='shutdown_grace = "20s"\n')
    with daemon.operator() as http:
        run_id = http.post("/admin/trigger/slow").json()["run_id"]
    daemon.wait_for_event(lambda e: e.get("event") == "run_started" and e.get("run_id") == run_id)
    started = time.monotonic()
    assert daemon.terminate() == 0
    assert time.monotonic() - started < 10
    status = _run_status(db_dsn, run_id)
    assert status == ("succeeded", None)


def test_sigterm_cancels_a_run_past_grace_and_records_it(start_daemon: Any, db_dsn: str) -> None:
    daemon = start_daemon(JOBS, dsn=db_dsn, scheduler_toml='shutdown_grace = "500ms"\n')
    with daemon.operator() as http:
        run_id = http.post("/admin/trigger/slow").json()["run_id"]
    daemon.wait_for_event(lambda e: e.get("event") == "run_started" and e.get("run_id") == run_id)
    started = time.monotonic()
    assert daemon.terminate() == 0
    assert time.monotonic() - started < 10  # not the job's 60 s
    assert _run_status(db_dsn, run_id) == ("cancelled", "cancelled by shutdown")
    # The job's own cleanup ran before the process exited (APScheduler alone skips it).
    daemon.wait_for_event(lambda e: e.get("event") == "sleep_cleanup_ran", timeout=5)


def _run_status(dsn: str, run_id: int) -> tuple[str, str | None]:
    import asyncio

    async def fetch() -> tuple[str, str | None]:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow("SELECT status, error FROM maintd.runs WHERE id = $1", run_id)
        finally:
            await conn.close()
        return row["status"], row["error"]

    return asyncio.run(fetch())


def test_bad_config_exits_78_before_binding_a_port(tmp_path: Path, repo_root: Path) -> None:
    port = free_port()
    config = tmp_path / "bad.toml"
    config.write_text(
        f"[server]\nport = {port}\n"
        '[jobs.cleanup]\ntask = "sql"\nschedule = "61 * * * *"\nshedule = "x"\n'
        '[jobs.cleanup.params]\nsql = "SELECT 1"\n'
        '[jobs.other]\ntask = "nope"\nschedule = "@daily"\ntimeout = "10 minutes"\n'
    )
    for command in ("run", "check-config"):
        result = subprocess.run(
            [*maintd_command(), command, "--config", str(config)],
            env=run_env(repo_root),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 78, result.stderr
        lines = result.stderr.splitlines()
        assert lines[0] == "jobs.cleanup.shedule: unknown key"
        assert lines[1] == "jobs.cleanup.schedule: invalid cron expression '61 * * * *': minute must be 0-59"
        assert lines[2].startswith("jobs.other.timeout: invalid duration '10 minutes': expected a number and a unit")
        assert lines[3].startswith("jobs.other.task: unknown task 'nope'")
        assert len(lines) == 4
        assert "Traceback" not in result.stderr
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_bad_batch_and_retention_params_exit_78_naming_the_key(tmp_path: Path, repo_root: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        '[jobs.cleanup]\ntask = "cleanup_sessions"\nschedule = "@daily"\n'
        '[jobs.cleanup.params]\ntable = "sessions"\nbatch_size = "auto"\nmax_statement = "50"\n'
        '[jobs.prune]\ntask = "prune_history"\nschedule = "@daily"\n'
        '[jobs.prune.params]\nruns = "1h"\n'
    )
    result = check_config(config, repo_root)
    assert result.returncode == 78, result.stderr
    assert result.stderr.splitlines() == [
        "jobs.cleanup.params.max_statement: invalid duration '50': expected a number and a unit (ms, s, m, h, d), "
        "e.g. '30s'",
        "jobs.prune.params.runs: must be at least 1d (or 'forever'), got '1h'",
    ]


def test_toml_syntax_error_exits_78_with_its_line(tmp_path: Path, repo_root: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text('[server]\nport = 8080\n[jobs.x\ntask = "sql"\n')
    result = check_config(config, repo_root)
    assert result.returncode == 78
    assert result.stderr.startswith(f"{config}: TOML syntax error: ")
    assert "line 3" in result.stderr and "Traceback" not in result.stderr


def test_migrate_applies_once(empty_db_dsn: str, tmp_path: Path, repo_root: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\ndsn = "{empty_db_dsn}"\n')
    for _ in range(2):
        result = subprocess.run(
            [*maintd_command(), "migrate", "--config", str(config)],
            env=run_env(repo_root),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
    import asyncio

    async def versions() -> list[int]:
        conn = await asyncpg.connect(empty_db_dsn)
        try:
            return [r["version"] for r in await conn.fetch("SELECT version FROM maintd.schema_migrations ORDER BY 1")]
        finally:
            await conn.close()

    found = asyncio.run(versions())
    assert found == list(range(1, len(found) + 1)) and found


def test_shipped_config_on_an_embedded_database(private_tmp: Path, repo_root: Path) -> None:
    """The README's first command: the shipped config, a PostgreSQL of the daemon's own."""
    port = free_port()
    config = private_tmp / "config.toml"
    config.write_text((repo_root / "config.toml").read_text().replace("port = 8080", f"port = {port}"))
    daemon = launch(config, port, repo_root)
    try:
        daemon.wait_for_event(serving)
        with daemon.client() as http:
            assert http.get("/readyz").json() == {"status": "ready"}
            assert http.get("/admin/jobs").status_code == 401  # no token configured: nothing is open
        assert (private_tmp / "var" / "postgres" / "PG_VERSION").exists()
        assert daemon.terminate() == 0
    finally:
        daemon.close()
    assert any(e.get("event") == "no_admin_tokens" for e in daemon.events)


def test_a_replica_older_than_the_databases_schema_refuses_to_start(
    db_dsn: str, tmp_path: Path, repo_root: Path
) -> None:
    """A newer maintd migrated the database: this older one must not run its old rules against it."""
    import asyncio

    async def newer_schema() -> None:
        conn = await asyncpg.connect(db_dsn)
        try:
            await conn.execute("INSERT INTO maintd.schema_migrations (version, name) VALUES (999, 'from_the_future')")
        finally:
            await conn.close()

    asyncio.run(newer_schema())
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\nport = {free_port()}\n[database]\ndsn = "{db_dsn}"\n')
    for command in ("run", "migrate"):
        result = subprocess.run(
            [*maintd_command(), command, "--config", str(config)],
            env=run_env(repo_root),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 78, result.stderr
        [line] = [line for line in result.stderr.splitlines() if line.startswith(f"maintd {command}:")]
        assert "schema is at version 999, newer than this maintd's" in line and "upgrade maintd" in line
        assert "Traceback" not in result.stderr
