"""The per-job series: plain values that /metrics renders exactly as prometheus_client's own
metrics would, made when first used, read as if all were made at registration."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from maintd.scheduler.job_series import DURATION_BUCKETS, FIRE_OUTCOMES, LATENESS_BUCKETS, RUN_STATUSES
from maintd.scheduler.metrics import Metrics

JOBS = ("alpha", "beta", "gamma", "delta")


def _use(metrics: Metrics) -> None:
    metrics.job("beta").runs["failed"].inc()
    metrics.job("beta").run_duration.observe(0.2)
    metrics.job("beta").run_duration.observe(5)  # on a bound: counted in that bucket
    metrics.job("beta").fire_lateness.observe(120)  # beyond the last finite bound
    metrics.job("beta").running.inc()
    metrics.job("delta").fires["taken"].inc()
    metrics.set_last_success("gamma", 1_700_000_000.0)
    metrics.overdue.labels("alpha").set(1)


def _the_same_in_prometheus_client(registry: CollectorRegistry) -> None:
    """What _use records, in prometheus_client's metrics, every series made at once."""
    runs = Counter("maintd_runs", "Runs that ended, by job and final status", ["job_id", "status"], registry=None)
    durations = Histogram(
        "maintd_run_duration_seconds", "Duration of ended runs", ["job_id"], buckets=DURATION_BUCKETS, registry=None
    )
    lateness = Histogram(
        "maintd_fire_lateness_seconds",
        "Delay from a fire time to the start of its run",
        ["job_id"],
        buckets=LATENESS_BUCKETS,
        registry=None,
    )
    fires = Counter(
        "maintd_fires",
        "Scheduled fires seen by this replica, by outcome (ran, taken by another replica, skipped, missed)",
        ["job_id", "outcome"],
        registry=None,
    )
    running = Gauge("maintd_running_runs", "Runs in progress on this replica", ["job_id"], registry=None)
    last_success = Gauge(
        "maintd_last_success_timestamp_seconds",
        "Unix time of the job's last successful run, on any replica",
        ["job_id"],
        registry=None,
    )
    for job_id in JOBS:
        for status in RUN_STATUSES:
            runs.labels(job_id, status)
        durations.labels(job_id)
        lateness.labels(job_id)
        for outcome in FIRE_OUTCOMES:
            fires.labels(job_id, outcome)
        running.labels(job_id)
        last_success.labels(job_id)
    runs.labels("beta", "failed").inc()
    durations.labels("beta").observe(0.2)
    durations.labels("beta").observe(5)
    lateness.labels("beta").observe(120)
    running.labels("beta").inc()
    fires.labels("delta", "taken").inc()
    last_success.labels("gamma").set(1_700_000_000.0)
    for metric in (runs, durations, lateness, fires, running, last_success):
        registry.register(metric)


def _text(registry: CollectorRegistry) -> str:
    # _created samples read when each series was made: the one figure that may differ.
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", generate_latest(registry).decode())


PER_JOB = ("maintd_runs", "maintd_run_duration_seconds", "maintd_fire_lateness_seconds", "maintd_fires",
           "maintd_running_runs", "maintd_last_success_timestamp_seconds")  # fmt: skip


def _per_job_families(text: str) -> str:
    def family(line: str) -> str:
        name = re.sub(r"^# (HELP|TYPE) ", "", line).split(" ")[0].split("{")[0]
        return re.sub(r"_(total|created|bucket|count|sum)$", "", name)

    return "".join(f"{line}\n" for line in text.splitlines() if family(line) in PER_JOB)


def test_per_job_series_render_as_prometheus_clients_own_metrics() -> None:
    metrics = Metrics()
    for job_id in JOBS:
        metrics.register_job(job_id)
    _use(metrics)
    expected = CollectorRegistry()
    _the_same_in_prometheus_client(expected)
    ours = _text(metrics.registry)
    assert _per_job_families(ours) == _text(expected)
    samples = [line for line in _text(expected).splitlines() if not line.startswith("#")]
    # Per job: runs and fires (_total, _created), two histograms (buckets, _count, _sum, _created), two gauges.
    assert len(samples) == len(JOBS) * (5 * 2 + 4 * 2 + (14 + 3) + (11 + 3) + 1 + 1)
    assert 'maintd_run_duration_seconds_bucket{job_id="beta",le="5.0"} 2.0' in ours
    assert 'maintd_fire_lateness_seconds_bucket{job_id="beta",le="+Inf"} 1.0' in ours
    assert 'maintd_fire_lateness_seconds_bucket{job_id="beta",le="5.0"} 0.0' in ours


def test_unused_series_read_as_series_made_at_registration() -> None:
    lazy, eager = Metrics(), Metrics()
    for job_id in JOBS:
        lazy.register_job(job_id)
        eager.register_job(job_id)
        eager.job(job_id)  # every series made now
    _use(lazy)
    _use(eager)
    text = _text(lazy.registry)
    assert text == _text(eager.registry)
    assert 'maintd_runs_total{job_id="alpha",status="succeeded"} 0.0' in text
    assert 'maintd_last_success_timestamp_seconds{job_id="gamma"} 1.7e+09' in text
    assert lazy.registry.get_sample_value("maintd_fires_total", {"job_id": "alpha", "outcome": "ran"}) == 0


def test_an_unused_series_is_created_when_its_job_was_registered() -> None:
    metrics = Metrics()
    metrics.register_job("alpha")
    registered = metrics.registered()["alpha"]
    created = metrics.registry.get_sample_value("maintd_runs_created", {"job_id": "alpha", "status": "lost"})
    assert created == registered


def test_a_removed_job_reads_nothing_and_a_job_used_after_removal_still_shows() -> None:
    metrics = Metrics()
    for job_id in JOBS:
        metrics.register_job(job_id)
    metrics.job("beta").runs["succeeded"].inc()
    metrics.overdue.labels("gamma").set(1)
    metrics.unregister_job("beta")
    metrics.unregister_job("gamma")
    # A run of a removed job that was still going ends after its removal: it is counted.
    metrics.job("alpha-old").runs["failed"].inc()
    text = generate_latest(metrics.registry).decode()
    assert 'job_id="beta"' not in text and 'job_id="gamma"' not in text
    assert 'maintd_running_runs{job_id="delta"} 0.0' in text
    assert 'maintd_runs_total{job_id="alpha-old",status="failed"} 1.0' in text
