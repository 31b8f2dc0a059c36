"""The per-job metrics: plain values a run updates, rendered as Prometheus families when scraped.

prometheus_client's labelled metrics cost every run: ``labels()`` validates and
locks, each series holds a mutex per value, and making the series of one job
(eleven of them, two histograms) takes about 100 us, a tenth of a burst run's
CPU (bench/burst.py). The engine updates these values from its event loop only,
and ``/metrics`` reads them there too (an ``async`` route), so plain attributes
need no lock. :class:`JobFamilies` renders them exactly as prometheus_client
renders its own Counter, Gauge and Histogram (tests/unit/test_metrics.py).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# Maintenance jobs run from milliseconds to hours.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200, float("inf"))
# A fire is late by scheduler lag (ms) plus the claim round trip.
LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, float("inf"))

FIRE_OUTCOMES = ("ran", "taken", "skipped", "missed")
RUN_STATUSES = ("succeeded", "failed", "cancelled", "timed_out", "lost")


class Count:
    """A counter's value."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class Level:
    """A gauge's value."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1

    def set(self, value: float) -> None:
        self.value = value


class Buckets:
    """A histogram's values: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


@dataclass(slots=True)
class JobSeries:
    """The series of one job, made when it first uses them."""

    created: float = field(default_factory=time.time)
    fires: dict[str, Count] = field(default_factory=lambda: {outcome: Count() for outcome in FIRE_OUTCOMES})
    runs: dict[str, Count] = field(default_factory=lambda: {status: Count() for status in RUN_STATUSES})
    run_duration: Buckets = field(default_factory=lambda: Buckets(DURATION_BUCKETS))
    fire_lateness: Buckets = field(default_factory=lambda: Buckets(LATENESS_BUCKETS))
    running: Level = field(default_factory=Level)
    last_success: Level = field(default_factory=Level)


class JobFamilies(Collector):
    """The per-job families as /metrics shows them: every configured job's series, made
    or not. A series not made yet reads what a new one would (zeros, created when its job
    was registered), so the answer is the same as if every series had been made at
    registration; series of jobs no longer configured follow while they exist."""

    def __init__(self, registered: Callable[[], Mapping[str, float]], made: Callable[[], Mapping[str, JobSeries]]):
        self._registered = registered
        self._made = made

    def collect(self) -> Iterator[Metric]:
        made, registered = self._made(), self._registered()
        # Every unused series reads zeros: one blank serves them all, each with its job's registration time.
        blank = JobSeries()
        series: list[tuple[str, JobSeries, float]] = []
        for job_id, registered_at in registered.items():
            own = made.get(job_id)
            series.append((job_id, own, own.created) if own is not None else (job_id, blank, registered_at))
        series += [(job_id, own, own.created) for job_id, own in made.items() if job_id not in registered]

        runs = Metric("maintd_runs", "Runs that ended, by job and final status", "counter")
        durations = Metric("maintd_run_duration_seconds", "Duration of ended runs", "histogram")
        lateness = Metric("maintd_fire_lateness_seconds", "Delay from a fire time to the start of its run", "histogram")
        fires = Metric(
            "maintd_fires",
            "Scheduled fires seen by this replica, by outcome (ran, taken by another replica, skipped, missed)",
            "counter",
        )
        running = Metric("maintd_running_runs", "Runs in progress on this replica", "gauge")
        last_success = Metric(
            "maintd_last_success_timestamp_seconds",
            "Unix time of the job's last successful run, on any replica",
            "gauge",
        )
        for job_id, own, created in series:
            for status, count in own.runs.items():
                _add_counter(runs, {"job_id": job_id, "status": status}, count, created)
            _add_histogram(durations, {"job_id": job_id}, own.run_duration, created)
            _add_histogram(lateness, {"job_id": job_id}, own.fire_lateness, created)
            for outcome, count in own.fires.items():
                _add_counter(fires, {"job_id": job_id, "outcome": outcome}, count, created)
            running.add_sample("maintd_running_runs", {"job_id": job_id}, own.running.value)
            last_success.add_sample("maintd_last_success_timestamp_seconds", {"job_id": job_id}, own.last_success.value)
        yield from (runs, durations, lateness, fires, running, last_success)


def _add_counter(family: Metric, labels: dict[str, str], count: Count, created: float) -> None:
    family.add_sample(f"{family.name}_total", labels, count.value)
    family.add_sample(f"{family.name}_created", labels, created)


def _add_histogram(family: Metric, labels: dict[str, str], buckets: Buckets, created: float) -> None:
    total = 0
    for bound, count in zip(buckets.bounds, buckets.counts, strict=True):
        total += count
        family.add_sample(f"{family.name}_bucket", {**labels, "le": floatToGoString(bound)}, float(total))
    family.add_sample(f"{family.name}_count", labels, float(total))
    family.add_sample(f"{family.name}_sum", labels, buckets.sum)
    family.add_sample(f"{family.name}_created", labels, created)
