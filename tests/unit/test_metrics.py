"""The per-job series are made when first used, and /metrics reads as if all were made at registration."""

from __future__ import annotations

import re

from prometheus_client import generate_latest

from maintd.scheduler.metrics import Metrics

JOBS = ("alpha", "beta", "gamma", "delta")


def _use(metrics: Metrics) -> None:
    metrics.job("beta").runs["failed"].inc()
    metrics.job("beta").run_duration.observe(0.2)
    metrics.job("delta").fires["taken"].inc()
    metrics.set_last_success("gamma", 1_700_000_000.0)
    metrics.overdue.labels("alpha").set(1)


def _text(metrics: Metrics) -> str:
    # _created samples read when each series was made: the one figure that may differ.
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", generate_latest(metrics.registry).decode())


def test_unused_series_read_as_series_made_at_registration() -> None:
    lazy, eager = Metrics(), Metrics()
    for job_id in JOBS:
        lazy.register_job(job_id)
        eager.register_job(job_id)
        eager.job(job_id)  # every series made now, as a daemon did before
    _use(lazy)
    _use(eager)
    text = _text(lazy)
    assert text == _text(eager)
    assert 'maintd_runs_total{job_id="alpha",status="succeeded"} 0.0' in text
    assert 'maintd_fire_lateness_seconds_bucket{job_id="gamma",le="+Inf"} 0.0' in text
    assert 'maintd_last_success_timestamp_seconds{job_id="gamma"} 1.7e+09' in text
    assert lazy.registry.get_sample_value("maintd_fires_total", {"job_id": "alpha", "outcome": "ran"}) == 0


def test_an_unused_series_is_created_when_its_job_was_registered() -> None:
    metrics = Metrics()
    metrics.register_job("alpha")
    registered = metrics.registered()["alpha"]
    created = metrics.registry.get_sample_value("maintd_runs_created", {"job_id": "alpha", "status": "lost"})
    assert created == registered


def test_idle_jobs_hold_no_series_and_a_removed_job_reads_nothing() -> None:
    metrics = Metrics()
    for job_id in JOBS:
        metrics.register_job(job_id)
    assert not list(metrics.runs.collect())[0].samples  # nothing made for zeros
    metrics.job("beta").runs["succeeded"].inc()
    metrics.unregister_job("beta")
    metrics.unregister_job("gamma")
    text = generate_latest(metrics.registry).decode()
    assert 'job_id="beta"' not in text and 'job_id="gamma"' not in text
    assert 'maintd_running_runs{job_id="delta"} 0.0' in text
