"""Prometheus metrics the daemon keeps; ``/metrics`` serves this registry."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# Maintenance jobs run from milliseconds to hours.
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200, float("inf"))
# A fire is late by scheduler lag (ms) plus the claim round trip.
_LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, float("inf"))


class Metrics:
    """The daemon's metrics, in a registry of their own (tests build several daemons)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._jobs: dict[str, JobSeries] = {}
        self.runs = Counter(
            "maintd_runs", "Runs that ended, by job and final status", ["job_id", "status"], registry=self.registry
        )
        self.run_duration = Histogram(
            "maintd_run_duration_seconds",
            "Duration of ended runs",
            ["job_id"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.fire_lateness = Histogram(
            "maintd_fire_lateness_seconds",
            "Delay from a fire time to the start of its run",
            ["job_id"],
            buckets=_LATENESS_BUCKETS,
            registry=self.registry,
        )
        self.fires = Counter(
            "maintd_fires",
            "Scheduled fires seen by this replica, by outcome (ran, taken by another replica, skipped, missed)",
            ["job_id", "outcome"],
            registry=self.registry,
        )
        self.running = Gauge(
            "maintd_running_runs", "Runs in progress on this replica", ["job_id"], registry=self.registry
        )
        self.last_success = Gauge(
            "maintd_last_success_timestamp_seconds",
            "Unix time of the job's last successful run, on any replica",
            ["job_id"],
            registry=self.registry,
        )
        self.overdue = Gauge(
            "maintd_job_overdue",
            "1 while a job with expect_success_within has had no success within it",
            ["job_id"],
            registry=self.registry,
        )
        self.ready = Gauge("maintd_ready", "1 when the database answers and the scheduler runs", registry=self.registry)
        Info("maintd_build", "maintd version", registry=self.registry).info({"version": _version()})
        self.alerts_sent = Counter(
            "maintd_alerts_sent",
            "Alert deliveries by channel (webhook, email) and outcome (sent; failed: gave up after retries)",
            ["channel", "outcome"],
            registry=self.registry,
        )
        for channel in ("webhook", "email"):
            for outcome in ("sent", "failed"):
                self.alerts_sent.labels(channel, outcome)
        # Filled by the API (admin_api.auth_failures), which creates both series at start.
        self.auth_failures = Counter(
            "maintd_auth_failures",
            "Failed authentications on /admin routes, by reason (missing: no bearer token; invalid: an unknown one)",
            ["reason"],
            registry=self.registry,
        )

    def register_job(self, job_id: str) -> JobSeries:
        """Create a job's series at start: they read 0 instead of missing, and no fire pays for creating them."""
        series = self._jobs[job_id] = JobSeries(
            fires={outcome: self.fires.labels(job_id, outcome) for outcome in FIRE_OUTCOMES},
            runs={status: self.runs.labels(job_id, status) for status in RUN_STATUSES},
            run_duration=self.run_duration.labels(job_id),
            fire_lateness=self.fire_lateness.labels(job_id),
            running=self.running.labels(job_id),
            last_success=self.last_success.labels(job_id),
        )
        return series

    def unregister_job(self, job_id: str) -> None:
        """Drop a removed job's series: a stale 1 in maintd_job_overdue would alert forever."""
        self._jobs.pop(job_id, None)
        for metric, labels in (
            *((self.fires, (job_id, outcome)) for outcome in FIRE_OUTCOMES),
            *((self.runs, (job_id, status)) for status in RUN_STATUSES),
            (self.run_duration, (job_id,)),
            (self.fire_lateness, (job_id,)),
            (self.running, (job_id,)),
            (self.last_success, (job_id,)),
            (self.overdue, (job_id,)),
        ):
            try:
                metric.remove(*labels)
            except KeyError:  # never created
                pass

    def job(self, job_id: str) -> JobSeries:
        """A job's series (looked up once: ``labels()`` validates its arguments on every call,
        microseconds that a burst of 1,000 fires pays thousands of times)."""
        return self._jobs.get(job_id) or self.register_job(job_id)


@dataclass(frozen=True)
class JobSeries:
    """The series of one job."""

    fires: dict[str, Any]  # by outcome
    runs: dict[str, Any]  # by final status
    run_duration: Any
    fire_lateness: Any
    running: Any
    last_success: Any


FIRE_OUTCOMES = ("ran", "taken", "skipped", "missed")


RUN_STATUSES = ("succeeded", "failed", "cancelled", "timed_out", "lost")


def _version() -> str:
    try:
        return version("maintd")
    except PackageNotFoundError:
        return "unknown"
