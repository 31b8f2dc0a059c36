"""End to end: what an operator watches. Prometheus metrics after a success, a failure
and a skipped fire; the alerts a webhook receiver gets; the dead-man's switch."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytestmark = pytest.mark.e2e


class WebhookReceiver:
    """A real HTTP endpoint in a thread, keeping every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.posts: queue.Queue[dict[str, Any]] = queue.Queue()
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.put(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/ops"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def next(self, event: str, timeout: float = 20) -> dict[str, Any]:
        """The next payload of this event (others are skipped)."""
        while True:
            payload = self.posts.get(timeout=timeout)
            if payload["event"] == event:
                return payload

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def _jobs(webhook_url: str) -> str:
    return f"""
[alerts]
min_interval = "0s"
[[alerts.webhooks]]
url = "{webhook_url}"

[jobs.vacuum_events]
task = "sql"
schedule = "@yearly"
[jobs.vacuum_events.params]
sql = "SELECT 1"

[jobs.export_invoices]
task = "tests.tasks:fail"
schedule = "@yearly"
[jobs.export_invoices.params]
message = "the invoice API answered 503"

[jobs.rebuild_index]
task = "tests.tasks:sleep"
schedule = "every 1s"
[jobs.rebuild_index.params]
seconds = 30

[jobs.nightly_backup]
task = "sql"
schedule = "@yearly"
expect_success_within = "1s"
[jobs.nightly_backup.params]
sql = "SELECT 1"
"""


def _samples(scrape: str, prefix: str) -> list[str]:
    return [line for line in scrape.splitlines() if line.startswith(prefix)]


def test_metrics_and_alerts_after_a_success_a_failure_and_a_skipped_fire(
    start_daemon: Any, db_dsn: str, webhook: WebhookReceiver
) -> None:
    # A 3 s lease: a heartbeat, and with it the dead-man's check, every second.
    daemon = start_daemon(_jobs(webhook.url), dsn=db_dsn, scheduler_toml='shutdown_grace = "1s"\nlease = "3s"\n')
    with daemon.operator() as http:
        ok = http.post("/admin/trigger/vacuum_events").json()
        assert daemon.follow(ok["run_id"])["status"] == "succeeded"
        failed = http.post("/admin/trigger/export_invoices").json()
        assert daemon.follow(failed["run_id"])["status"] == "failed"
        # rebuild_index runs 30 s on a 1 s schedule: its next fire is skipped.
        daemon.wait_for_event(lambda e: e.get("event") == "fire_skipped" and e.get("job_id") == "rebuild_index")

        alert = webhook.next("run_failed")
        print("\nwebhook payload:\n" + json.dumps(alert, indent=2))
        assert alert["job_id"] == "export_invoices"
        assert alert["run"]["id"] == failed["run_id"] and alert["run"]["status"] == "failed"
        assert "the invoice API answered 503" in alert["text"] and alert["text"].startswith(
            "maintd: job export_invoices"
        )
        assert alert["consecutive_failures"] == 1

        # nightly_backup never succeeded within its 1 s: overdue, alerted once.
        overdue = webhook.next("job_overdue")
        assert overdue["job_id"] == "nightly_backup" and overdue["last_success"] is None
        assert http.get("/admin/jobs/nightly_backup").json()["overdue"] is True
        assert http.get("/admin/jobs/vacuum_events").json()["overdue"] is None

        scrape = http.get("/metrics").text
        print("\n/metrics (maintd_ samples, non-zero):")
        for line in scrape.splitlines():
            if (
                line.startswith("maintd_")
                and not line.endswith(" 0.0")
                and "_created{" not in line
                and "_bucket{" not in line
            ):
                print("  " + line)
        assert 'maintd_runs_total{job_id="vacuum_events",status="succeeded"} 1.0' in scrape
        assert 'maintd_runs_total{job_id="export_invoices",status="failed"} 1.0' in scrape
        [skipped] = _samples(scrape, 'maintd_fires_total{job_id="rebuild_index",outcome="skipped"}')
        assert float(skipped.split()[-1]) >= 1
        assert 'maintd_running_runs{job_id="rebuild_index"} 1.0' in scrape
        [last_success] = _samples(scrape, 'maintd_last_success_timestamp_seconds{job_id="vacuum_events"}')
        assert float(last_success.split()[-1]) > 1.7e9
        assert 'maintd_job_overdue{job_id="nightly_backup"} 1.0' in scrape
        assert 'maintd_alerts_sent_total{channel="webhook",outcome="sent"}' in scrape
        assert _samples(scrape, "maintd_build_info{")
        assert 'maintd_run_duration_seconds_count{job_id="export_invoices"} 1.0' in scrape

        # A success ends the overdue episode. (With a 1 s window the job is overdue again
        # a second later: a new episode, alerted once more; not asserted here.)
        backup = http.post("/admin/trigger/nightly_backup").json()
        assert daemon.follow(backup["run_id"])["status"] == "succeeded"
        daemon.wait_for_event(lambda e: e.get("event") == "job_no_longer_overdue")
