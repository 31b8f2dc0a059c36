"""Prometheus metrics the daemon keeps; ``/metrics`` serves this registry (the per-job
series: :mod:`scheduler.job_series`)."""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, Counter, Gauge, Info

from maintd.scheduler.job_series import JobFamilies, JobSeries


class Metrics:
    """The daemon's metrics, in a registry of their own (tests build several daemons)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The series of the jobs that have used them, and when each configured job was
        # registered (the _created of its series not made yet).
        self._jobs: dict[str, JobSeries] = {}
        self._registered: dict[str, float] = {}
        self.registry.register(JobFamilies(self.registered, lambda: self._jobs))
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

    def register_job(self, job_id: str) -> None:
        """A configured job: its series read 0 from now on instead of missing. They are made
        when first used: idle jobs hold nothing but their registration time."""
        self._registered.setdefault(job_id, time.time())

    def registered(self) -> dict[str, float]:
        """The configured jobs, in order of registration, with when each was registered."""
        return self._registered

    def unregister_job(self, job_id: str) -> None:
        """Drop a removed job's series: a stale 1 in maintd_job_overdue would alert forever."""
        self._jobs.pop(job_id, None)
        self._registered.pop(job_id, None)
        try:
            self.overdue.remove(job_id)
        except KeyError:  # never set
            pass

    def job(self, job_id: str) -> JobSeries:
        """A job's series, made on first use."""
        series = self._jobs.get(job_id)
        if series is None:
            series = self._jobs[job_id] = JobSeries()
        return series

    def set_last_success(self, job_id: str, at: float) -> None:
        """A job's last success, on any replica."""
        self.job(job_id).last_success.set(at)


def _version() -> str:
    try:
        return version("maintd")
    except PackageNotFoundError:
        return "unknown"
