"""``maintd jobs`` asks the daemon for pages of jobs: never all of them in one answer."""

from __future__ import annotations

import httpx
import pytest

from maintd.scheduler.cli import client

pytestmark = pytest.mark.unit


def _daemon(jobs: list[str], asked: list[dict[str, str]]) -> httpx.Client:
    def answer(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        asked.append(params)
        offset, limit = int(params.get("offset", 0)), int(params.get("limit", len(jobs)))
        return httpx.Response(200, json=[{"id": job_id} for job_id in jobs[offset : offset + limit]])

    return httpx.Client(transport=httpx.MockTransport(answer), base_url="http://maintd")


@pytest.mark.parametrize("count", [0, 1, client.JOBS_PAGE - 1, client.JOBS_PAGE, 2 * client.JOBS_PAGE + 3])
def test_every_job_a_page_at_a_time(count: int) -> None:
    jobs, asked = [f"job_{n}" for n in range(count)], []
    with _daemon(jobs, asked) as http:
        listed = client.fetch_jobs(http, state=None, limit=None, offset=0)
    assert [job["id"] for job in listed] == jobs
    assert all(int(params["limit"]) == client.JOBS_PAGE for params in asked)
    assert len(asked) == count // client.JOBS_PAGE + 1


def test_a_state_and_a_limit_are_passed_on() -> None:
    asked: list[dict[str, str]] = []
    with _daemon(["a", "b", "c"], asked) as http:
        listed = client.fetch_jobs(http, state="failing", limit=2, offset=1)
    assert [job["id"] for job in listed] == ["b", "c"]
    assert asked == [{"state": "failing", "limit": "2", "offset": "1"}]
