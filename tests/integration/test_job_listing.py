"""``GET /admin/jobs`` with its state filter and paging, on a real engine and database.

One job in each state, made so by real runs, a pause and a moved clock; the
rest are jobs that never ran (``ok``), so that pages have something to page.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter

from maintd.admin_api import build_routers, install_error_handlers
from maintd.admin_api.auth import Guard, TokenEntry, TokenTable
from maintd.admin_api.auth_failures import AuthFailures
from maintd.scheduler.engine import Engine
from tests.configs import make_config, sleep_job
from tests.engines import OPS, StartEngine, beat, run_to_end
from tests.tasks import FailParams  # noqa: F401 - tests.tasks:fail is referenced by name below

pytestmark = pytest.mark.integration

TOKEN = "viewer-token-for-the-listing-tests"
# In config order; the first five are in the state their name says once set up.
STATES = {"overdue": "overdue", "paused": "paused", "running": "running", "failing": "failing", "ran_ok": "ok"}
IDLE = [f"idle_{n:02d}" for n in range(7)]
ALL = [*STATES, *IDLE]


class MovableClock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Listing:
    engine: Engine
    http: httpx.AsyncClient

    async def get(self, **params: Any) -> httpx.Response:
        return await self.http.get("/admin/jobs", params=params)

    async def ids(self, **params: Any) -> list[str]:
        answer = await self.get(**params)
        assert answer.status_code == 200, answer.text
        return [job["id"] for job in answer.json()]


@pytest.fixture
async def listing(start_engine: StartEngine) -> AsyncIterator[Listing]:
    clock = MovableClock()
    config = make_config(
        {
            "overdue": sleep_job(0, expect_success_within="1h"),
            "paused": sleep_job(0),
            "running": sleep_job(60),
            "failing": {"task": "tests.tasks:fail", "schedule": "@yearly"},
            "ran_ok": sleep_job(0),
            **{job_id: sleep_job(0) for job_id in IDLE},
        }
    )
    engine = await start_engine(config, clock=clock)
    assert (await run_to_end(engine, "ran_ok")).status == "succeeded"
    assert (await run_to_end(engine, "failing")).status == "failed"
    await engine.admin.pause("paused", OPS)
    running = await engine.admin.trigger("running", OPS)
    clock.offset = timedelta(minutes=61)  # "overdue" has not succeeded within its hour
    await beat(engine)
    app = FastAPI()
    app.state.engine = engine.admin
    install_error_handlers(app)
    tokens = TokenTable([TokenEntry(name="alice", role="viewer", sha256=hashlib.sha256(TOKEN.encode()).hexdigest())])
    failures = AuthFailures(Counter("maintd_auth_failures", "test", ["reason"], registry=CollectorRegistry()))
    for router in build_routers(Guard(tokens, failures)):
        app.include_router(router)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://maintd") as http:
        http.headers["Authorization"] = f"Bearer {TOKEN}"
        yield Listing(engine, http)
    await engine.admin.cancel_run(running.run_id, OPS)
    await engine.idle()


async def test_without_parameters_every_job_in_config_order_with_its_state(listing: Listing) -> None:
    answer = await listing.get()
    assert answer.status_code == 200
    jobs = answer.json()
    assert [job["id"] for job in jobs] == ALL
    assert {job["id"]: job["state"] for job in jobs} == {**STATES, **dict.fromkeys(IDLE, "ok")}
    assert jobs == [job.model_dump(mode="json") for job in await listing.engine.admin.list_jobs()]
    single = (await listing.http.get("/admin/jobs/paused")).json()
    assert single["state"] == "paused" and single == jobs[1]


async def test_each_state_filter_lists_exactly_the_jobs_in_that_state(listing: Listing) -> None:
    expected = {state: [job_id] for job_id, state in STATES.items()} | {"ok": ["ran_ok", *IDLE]}
    for state, job_ids in expected.items():
        answer = await listing.get(state=state)
        assert [job["id"] for job in answer.json()] == job_ids, state
        assert {job["state"] for job in answer.json()} == {state}


async def test_pages_cover_every_job_once_in_order(listing: Listing) -> None:
    pages = [await listing.ids(limit=5, offset=offset) for offset in range(0, len(ALL), 5)]
    assert [len(page) for page in pages] == [5, 5, 2]
    assert [job_id for page in pages for job_id in page] == ALL
    assert await listing.ids(limit=1) == ALL[:1]
    assert await listing.ids(limit=1, offset=len(ALL) - 1) == ALL[-1:]
    assert await listing.ids(offset=len(ALL)) == []
    assert await listing.ids(offset=10_000, limit=3) == []
    assert await listing.ids(limit=1000) == ALL
    assert await listing.ids(offset=3) == ALL[3:]
    # Paging counts among the jobs in the state asked for.
    assert await listing.ids(state="ok", limit=2, offset=1) == IDLE[:2]
    assert await listing.ids(state="ok", offset=8) == []


BAD_QUERIES = [
    {"limit": "0"},
    {"limit": "1001"},
    {"limit": "-1"},
    {"limit": "ten"},
    {"limit": ""},
    {"offset": "-1"},
    {"offset": str(2**31)},
    {"offset": "1.5"},
    {"offset": str(2**70)},
    {"state": "broken"},
    {"state": ""},
    {"state": "OK"},
    {"page": "2"},
]


async def test_bad_parameters_are_a_json_422_naming_the_parameter(listing: Listing) -> None:
    for query in BAD_QUERIES:
        answer = await listing.get(**query)
        assert answer.status_code == 422, (query, answer.text)
        [problem] = answer.json()["detail"]
        assert problem["loc"] == ["query", next(iter(query))], query


async def test_a_page_costs_the_same_statements_whatever_its_size(
    listing: Listing, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = listing.engine.store
    calls: list[str] = []
    for name in ("job_states", "last_runs", "last_statuses", "running_counts", "last_successes", "get_run"):
        method = getattr(store, name)

        def counted(*args: Any, _name: str = name, _method: Any = method, **kwargs: Any) -> Any:
            calls.append(_name)
            return _method(*args, **kwargs)

        monkeypatch.setattr(store, name, counted)
    counts = []
    for params in ({"limit": 1}, {"limit": 12}, {}, {"state": "ok", "limit": 1}, {"state": "ok"}):
        calls.clear()
        assert await listing.ids(**params)
        counts.append(len(calls))
    assert counts[0] == counts[1] == counts[2] == 4
    assert counts[3] == counts[4]
