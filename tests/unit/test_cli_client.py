"""``maintd jobs`` asks the daemon for pages of jobs: never all of them in one answer."""

from __future__ import annotations

from typing import Any

import pytest

from maintd.scheduler.cli import listing

pytestmark = pytest.mark.unit


class FakeDaemon:
    """The API's ``GET /admin/jobs`` over a list of job ids, noting the query of each call."""

    def __init__(self, jobs: list[str]) -> None:
        self.jobs = jobs
        self.asked: list[dict[str, Any]] = []

    def call(self, method: str, path: str, *, params: dict[str, Any]) -> list[dict[str, str]]:
        assert (method, path) == ("GET", "/admin/jobs")
        self.asked.append(params)
        offset, limit = params.get("offset", 0), params.get("limit", len(self.jobs))
        return [{"id": job_id} for job_id in self.jobs[offset : offset + limit]]


@pytest.mark.parametrize("count", [0, 1, listing.JOBS_PAGE - 1, listing.JOBS_PAGE, 2 * listing.JOBS_PAGE + 3])
def test_every_job_a_page_at_a_time(count: int) -> None:
    daemon = FakeDaemon([f"job_{n}" for n in range(count)])
    listed = listing.fetch_jobs(daemon, state=None, limit=None, offset=0)  # type: ignore[arg-type]
    assert [job["id"] for job in listed] == daemon.jobs
    assert all(params["limit"] == listing.JOBS_PAGE for params in daemon.asked)
    assert len(daemon.asked) == count // listing.JOBS_PAGE + 1


def test_a_state_and_a_limit_are_passed_on() -> None:
    daemon = FakeDaemon(["a", "b", "c"])
    listed = listing.fetch_jobs(daemon, state="failing", limit=2, offset=1)  # type: ignore[arg-type]
    assert [job["id"] for job in listed] == ["b", "c"]
    assert daemon.asked == [{"state": "failing", "limit": 2, "offset": 1}]
