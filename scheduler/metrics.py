"""Prometheus metrics the daemon keeps; ``/metrics`` serves this registry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

# Maintenance jobs run from milliseconds to hours.
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200, float("inf"))
# A fire is late by scheduler lag (ms) plus the claim round trip.
_LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, float("inf"))


class Metrics:
    """The daemon's metrics, in a registry of their own (tests build several daemons)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The series of the jobs that have used them (see JobFamilies), and when each
        # configured job was registered (its series' _created).
        self._jobs: dict[str, JobSeries] = {}
        self._registered: dict[str, float] = {}
        # The per-job metrics (registry=None) are served by JobFamilies, registered in
        # their place below: /metrics lists the families in this order.
        self.runs = Counter(
            "maintd_runs", "Runs that ended, by job and final status", ["job_id", "status"], registry=None
        )
        self.run_duration = Histogram(
            "maintd_run_duration_seconds",
            "Duration of ended runs",
            ["job_id"],
            buckets=_DURATION_BUCKETS,
            registry=None,
        )
        self.fire_lateness = Histogram(
            "maintd_fire_lateness_seconds",
            "Delay from a fire time to the start of its run",
            ["job_id"],
            buckets=_LATENESS_BUCKETS,
            registry=None,
        )
        self.fires = Counter(
            "maintd_fires",
            "Scheduled fires seen by this replica, by outcome (ran, taken by another replica, skipped, missed)",
            ["job_id", "outcome"],
            registry=None,
        )
        self.running = Gauge("maintd_running_runs", "Runs in progress on this replica", ["job_id"], registry=None)
        self.last_success = Gauge(
            "maintd_last_success_timestamp_seconds",
            "Unix time of the job's last successful run, on any replica",
            ["job_id"],
            registry=None,
        )
        self.registry.register(JobFamilies(self))
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

    @property
    def per_job(self) -> tuple[MetricWrapperBase, ...]:
        """The metrics with a series per job, in the order /metrics lists them."""
        return (self.runs, self.run_duration, self.fire_lateness, self.fires, self.running, self.last_success)

    def register_job(self, job_id: str) -> None:
        """A configured job: its series read 0 from now on instead of missing. They are made
        when first used (a fire claimed ahead makes them before its time): 10,000 idle jobs
        would otherwise hold 130,000 series objects, 140 MB, for zeros."""
        self._registered.setdefault(job_id, time.time())

    def registered(self) -> dict[str, float]:
        """The configured jobs, in order of registration, with when each was registered."""
        return self._registered

    def _make_series(self, job_id: str) -> JobSeries:
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
        self._registered.pop(job_id, None)
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
        return self._jobs.get(job_id) or self._make_series(job_id)

    def set_last_success(self, job_id: str, at: float) -> None:
        """A job's last success, on any replica: one series set, the job's others left unmade."""
        self.last_success.labels(job_id).set(at)


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
# The values of the label beside job_id, per metric of Metrics.per_job (none: job_id only).
_SECOND_LABEL: tuple[tuple[str, ...], ...] = (RUN_STATUSES, (), (), FIRE_OUTCOMES, (), ())


class JobFamilies(Collector):
    """The per-job metric families as /metrics shows them: every configured job's series,
    made or not. A series not made yet reads what a new one would (zeros, and its
    _created the job's registration), so the answer is the same as if every series had
    been made at registration; series of jobs no longer configured follow while they exist."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        # What an unused series of each family reads, with job_id "": read once from
        # series made for that and removed again.
        self._blank: list[list[Sample]] = []
        for metric, others in zip(metrics.per_job, _SECOND_LABEL, strict=True):
            label_sets = [("", value) for value in others] if others else [("",)]
            for labels in label_sets:
                metric.labels(*labels)
            [family] = metric.collect()
            self._blank.append(family.samples)
            for labels in label_sets:
                metric.remove(*labels)

    def collect(self) -> Iterator[Metric]:
        registered = self._metrics.registered()
        for metric, blank in zip(self._metrics.per_job, self._blank, strict=True):
            [family] = metric.collect()
            made: dict[str, list[Sample]] = {}
            for sample in family.samples:
                made.setdefault(sample.labels["job_id"], []).append(sample)
            samples: list[Sample] = []
            for job_id, registered_at in registered.items():
                if (own := made.pop(job_id, None)) is not None:
                    samples += own
                    continue
                for sample in blank:
                    value = registered_at if sample.name.endswith("_created") else sample.value
                    samples.append(sample._replace(labels={**sample.labels, "job_id": job_id}, value=value))
            for own in made.values():  # a job no longer configured, whose series still exist
                samples += own
            family.samples = samples
            yield family


def _version() -> str:
    try:
        return version("maintd")
    except PackageNotFoundError:
        return "unknown"
