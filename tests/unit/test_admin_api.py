"""The admin HTTP API against an in-memory engine: routes, auth per route, errors, health, metrics."""

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter

from maintd.admin_api import build_routers, install_error_handlers
from maintd.admin_api.auth import Guard, TokenEntry, TokenTable
from maintd.admin_api.auth_failures import AuthFailures
from maintd.admin_api.interface import (
    ENDED_STATUSES,
    Actor,
    AdminEngine,
    AuditOut,
    JobBusy,
    JobNotFound,
    JobOut,
    JobState,
    ParamsRefused,
    ReplayIn,
    ReplayOut,
    RerunIn,
    RunEnded,
    RunLogLine,
    RunLogsOut,
    RunNotFound,
    RunOut,
    SchedulingSuspended,
    TriggerIn,
    TriggerOut,
)
from tests.asgi import asgi_get

pytestmark = pytest.mark.unit

NOW = datetime(2025, 3, 30, 0, 30, tzinfo=UTC)
CLIENT_HOST = "203.0.113.7"
VIEWER_TOKEN = "viewer-token"
OPERATOR_TOKEN = "operator-token"


def run(run_id: int, job_id: str, status: str = "succeeded") -> RunOut:
    ended = status in ENDED_STATUSES
    return RunOut(
        id=run_id,
        job_id=job_id,
        trigger="schedule",
        status=status,  # type: ignore[arg-type]
        scheduled_for=NOW,
        started_at=NOW,
        finished_at=NOW + timedelta(seconds=2) if ended else None,
        duration_s=2.0 if ended else None,
        node="node-a",
    )


def job(job_id: str) -> JobOut:
    fires = [NOW + timedelta(hours=h) for h in range(1, 6)]
    return JobOut(
        id=job_id,
        task="cleanup_sessions",
        schedule="@hourly",
        timezone="UTC",
        paused=False,
        running=False,
        next_run_time=fires[0],
        upcoming=fires,
        last_run=None,
    )


@dataclass
class FakeEngine:
    """An in-memory AdminEngine that records what the API asked of it."""

    jobs: dict[str, JobOut] = field(default_factory=lambda: {"cleanup": job("cleanup"), "report": job("report")})
    runs: dict[int, RunOut] = field(
        default_factory=lambda: {1: run(1, "cleanup"), 2: run(2, "report", "running"), 3: run(3, "cleanup", "failed")}
    )
    audit: list[AuditOut] = field(default_factory=list)
    # Run 3 logged three lines; line 2 was dropped to keep the log within bounds.
    logs: dict[int, list[RunLogLine]] = field(
        default_factory=lambda: {
            3: [
                RunLogLine(seq=1, at=NOW, level="info", event="run_started", fields={"attempt": 1}),
                RunLogLine(seq=2, at=NOW, level="warning", event="log_lines_dropped", fields={"dropped": 1}),
                RunLogLine(seq=4, at=NOW, level="warning", event="run_failed", fields={"error": "boom"}),
            ]
        }
    )
    not_ready: list[str] = field(default_factory=list)
    # Why the engine starts no run for now (SchedulingSuspended), if it does not.
    suspended: str | None = None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # What the requests with a body asked (the body as parsed, the Idempotency-Key).
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Idempotency keys seen: key -> the run its first request started.
    keys: dict[str, int] = field(default_factory=dict)

    def _job(self, job_id: str) -> JobOut:
        if job_id not in self.jobs:
            raise JobNotFound(job_id)
        return self.jobs[job_id]

    def _run(self, run_id: int) -> RunOut:
        if run_id not in self.runs:
            raise RunNotFound(run_id)
        return self.runs[run_id]

    def _record(self, action: str, target: str, actor: Actor) -> None:
        self.calls.append((action, {"target": target, "actor": actor}))
        self.audit.append(
            AuditOut(
                id=len(self.audit) + 1, at=NOW, principal=actor.name, action=action, target=target, client=actor.client
            )
        )

    async def list_jobs(
        self, *, state: JobState | None = None, limit: int | None = None, offset: int = 0
    ) -> list[JobOut]:
        self.calls.append(("list_jobs", {"state": state, "limit": limit, "offset": offset}))
        jobs = [job for job in self.jobs.values() if state is None or job.state == state]
        return jobs[offset : None if limit is None else offset + limit]

    async def get_job(self, job_id: str) -> JobOut:
        return self._job(job_id)

    async def trigger(
        self, job_id: str, actor: Actor, request: TriggerIn | None = None, *, idempotency_key: str | None = None
    ) -> TriggerOut:
        self.requests.append(("trigger", {"request": request, "idempotency_key": idempotency_key}))
        if idempotency_key is not None and idempotency_key in self.keys:
            run_id = self.keys[idempotency_key]
            return TriggerOut(job_id=job_id, run_id=run_id, status=self.runs[run_id].status, repeated=True)
        started = await self._start(job_id, actor, dry_run=bool(request and request.dry_run))
        if idempotency_key is not None:
            self.keys[idempotency_key] = started.run_id
        return started

    async def rerun(self, run_id: int, actor: Actor, request: RerunIn | None = None) -> TriggerOut:
        self.requests.append(("rerun", {"run_id": run_id, "request": request}))
        return await self._start(self._run(run_id).job_id, actor, dry_run=bool(request and request.dry_run))

    async def replay(self, job_id: str, actor: Actor, request: ReplayIn) -> ReplayOut:
        self._job(job_id)
        self._record("replay", job_id, actor)
        fires = [run.scheduled_for for run in self.runs.values() if run.job_id == job_id and run.status == "failed"]
        return ReplayOut(job_id=job_id, fires=[f for f in fires if f is not None], dry_run=request.dry_run)

    async def _start(self, job_id: str, actor: Actor, *, dry_run: bool) -> TriggerOut:
        current = self._job(job_id)
        if self.suspended is not None:
            raise SchedulingSuspended(self.suspended)
        running = [r.id for r in self.runs.values() if r.job_id == job_id and r.status == "running"]
        if running:
            raise JobBusy(job_id, running[0])
        new = run(max(self.runs) + 1, job_id, "running").model_copy(
            update={"trigger": "manual", "triggered_by": actor.name}
        )
        self.runs[new.id] = new
        self.jobs[job_id] = current.model_copy(update={"running": True})
        self._record("trigger", job_id, actor)
        return TriggerOut(job_id=job_id, run_id=new.id, status=new.status)

    async def _set_paused(self, job_id: str, actor: Actor, paused: bool) -> JobOut:
        self.jobs[job_id] = self._job(job_id).model_copy(update={"paused": paused})
        self._record("pause" if paused else "resume", job_id, actor)
        return self.jobs[job_id]

    async def pause(self, job_id: str, actor: Actor) -> JobOut:
        return await self._set_paused(job_id, actor, True)

    async def resume(self, job_id: str, actor: Actor) -> JobOut:
        return await self._set_paused(job_id, actor, False)

    async def list_runs(self, *, job_id: str | None, status: str | None, limit: int) -> list[RunOut]:
        self.calls.append(("list_runs", {"job_id": job_id, "status": status, "limit": limit}))
        runs = [r for r in self.runs.values() if job_id in (None, r.job_id) and status in (None, r.status)]
        return sorted(runs, key=lambda r: r.id, reverse=True)[:limit]

    async def get_run(self, run_id: int) -> RunOut:
        return self._run(run_id)

    async def cancel_run(self, run_id: int, actor: Actor) -> RunOut:
        current = self._run(run_id)
        if current.status != "running":
            raise RunEnded(run_id, current.status)
        self._record("cancel", str(run_id), actor)
        return current

    async def get_run_logs(self, run_id: int, *, after_seq: int, limit: int) -> RunLogsOut:
        self.calls.append(("get_run_logs", {"run_id": run_id, "after_seq": after_seq, "limit": limit}))
        self._run(run_id)
        lines = [line for line in self.logs.get(run_id, []) if line.seq > after_seq][:limit]
        return RunLogsOut(run_id=run_id, lines=lines, dropped=1 if run_id in self.logs else 0)

    async def list_audit(self, *, limit: int) -> list[AuditOut]:
        self.calls.append(("list_audit", {"limit": limit}))
        return self.audit[::-1][:limit]

    async def record_denied(self, actor: Actor, action: str, target: str) -> None:
        self.audit.append(
            AuditOut(
                id=len(self.audit) + 1,
                at=NOW,
                principal=actor.name,
                action=action,
                target=target,
                client=actor.client,
                detail={"outcome": "denied"},
            )
        )

    async def readiness(self) -> list[str]:
        return self.not_ready


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def build_app(
    engine: AdminEngine | None, registry: CollectorRegistry | None, failures: AuthFailures | None = None
) -> FastAPI:
    """The app wired the way the daemon wires it."""
    tokens = TokenTable(
        [
            TokenEntry(name="alice", role="viewer", sha256=sha256_hex(VIEWER_TOKEN)),
            TokenEntry(name="ops", role="operator", sha256=sha256_hex(OPERATOR_TOKEN)),
        ]
    )
    if failures is None:
        failures = AuthFailures(Counter("maintd_auth_failures", "test", ["reason"], registry=CollectorRegistry()))
    app = FastAPI()
    if engine is not None:
        app.state.engine = engine
    if registry is not None:
        app.state.metrics_registry = registry
    install_error_handlers(app)
    for router in build_routers(Guard(tokens, failures)):
        app.include_router(router)
    return app


def open_client(app: FastAPI) -> httpx.AsyncClient:
    # raise_app_exceptions=False: Starlette re-raises after answering a 500 (so the
    # server logs it); the test wants the answer the client got.
    transport = httpx.ASGITransport(app=app, client=(CLIENT_HOST, 40000), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://maintd")


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def app(engine: FakeEngine, registry: CollectorRegistry) -> FastAPI:
    return build_app(engine, registry)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with open_client(app) as client:
        yield client


@pytest.fixture
async def viewer(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with open_client(app) as client:
        client.headers["Authorization"] = f"Bearer {VIEWER_TOKEN}"
        yield client


@pytest.fixture
async def operator(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with open_client(app) as client:
        client.headers["Authorization"] = f"Bearer {OPERATOR_TOKEN}"
        yield client


READS = [
    ("GET", "/admin/jobs"),
    ("GET", "/admin/jobs/cleanup"),
    ("GET", "/admin/runs"),
    ("GET", "/admin/runs/1"),
    ("GET", "/admin/runs/1/logs"),
    ("GET", "/admin/audit"),
]
MUTATIONS = [
    ("POST", "/admin/trigger/cleanup"),
    ("POST", "/admin/jobs/cleanup/pause"),
    ("POST", "/admin/jobs/cleanup/resume"),
    ("POST", "/admin/runs/2/cancel"),
    ("POST", "/admin/runs/1/rerun"),
]


class TestAuthorization:
    @pytest.mark.parametrize("method, path", READS + MUTATIONS)
    @pytest.mark.parametrize(
        "authorization",
        [None, "Bearer wrong-token", f"Basic {VIEWER_TOKEN}", "Bearer"],
        ids=["none", "wrong", "basic", "empty"],
    )
    async def test_every_admin_route_is_401_without_a_valid_token(
        self, client: httpx.AsyncClient, engine: FakeEngine, method: str, path: str, authorization: str | None
    ) -> None:
        headers = {"Authorization": authorization} if authorization else {}
        response = await client.request(method, path, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert isinstance(response.json()["detail"], str)
        assert engine.calls == []

    @pytest.mark.parametrize("method, path", MUTATIONS)
    async def test_a_viewer_gets_403_on_every_mutating_route(
        self, viewer: httpx.AsyncClient, engine: FakeEngine, method: str, path: str
    ) -> None:
        response = await viewer.request(method, path)
        assert response.status_code == 403
        assert isinstance(response.json()["detail"], str)
        assert engine.calls == []

    @pytest.mark.parametrize("method, path", READS)
    async def test_a_viewer_reads_every_read_route(self, viewer: httpx.AsyncClient, method: str, path: str) -> None:
        response = await viewer.request(method, path)
        assert response.status_code == 200

    @pytest.mark.parametrize("method, path", MUTATIONS)
    async def test_the_engine_gets_the_tokens_principal_and_the_client_address(
        self, operator: httpx.AsyncClient, engine: FakeEngine, method: str, path: str
    ) -> None:
        response = await operator.request(method, path)
        assert response.status_code < 300
        [(_, args)] = engine.calls
        assert args["actor"] == Actor(name="ops", role="operator", client=CLIENT_HOST)

    @pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
    async def test_health_routes_are_open(self, client: httpx.AsyncClient, path: str) -> None:
        response = await client.get(path)
        assert response.status_code == 200


class TestJobs:
    async def test_list(self, viewer: httpx.AsyncClient) -> None:
        response = await viewer.get("/admin/jobs")
        assert [j["id"] for j in response.json()] == ["cleanup", "report"]

    async def test_get_returns_the_job_object(self, viewer: httpx.AsyncClient) -> None:
        body = (await viewer.get("/admin/jobs/cleanup")).json()
        assert body["id"] == "cleanup"
        assert len(body["upcoming"]) == 5
        assert datetime.fromisoformat(body["next_run_time"]) == NOW + timedelta(hours=1)
        assert {"task", "schedule", "timezone", "paused", "running", "last_run"} <= body.keys()

    async def test_trigger_answers_202_with_job_run_and_status(self, operator: httpx.AsyncClient) -> None:
        response = await operator.post("/admin/trigger/cleanup")
        assert response.status_code == 202
        assert response.json() == {"job_id": "cleanup", "run_id": 4, "status": "running"}

    async def test_trigger_is_409_while_a_run_is_in_progress(
        self, operator: httpx.AsyncClient, engine: FakeEngine
    ) -> None:
        response = await operator.post("/admin/trigger/report")
        assert response.status_code == 409
        assert "already running" in response.json()["detail"]
        assert max(engine.runs) == 3

    async def test_trigger_is_503_naming_why_the_replica_is_not_scheduling(
        self, operator: httpx.AsyncClient, engine: FakeEngine
    ) -> None:
        engine.suspended = "clock: +10.000s off the database's clock (more than 2s)"
        response = await operator.post("/admin/trigger/cleanup")
        assert response.status_code == 503
        assert response.json() == {
            "detail": "this replica is not scheduling: clock: +10.000s off the database's clock (more than 2s)"
        }
        assert max(engine.runs) == 3

    async def test_pause_then_resume_answer_the_job_object(self, operator: httpx.AsyncClient) -> None:
        paused = await operator.post("/admin/jobs/cleanup/pause")
        assert (paused.status_code, paused.json()["id"], paused.json()["paused"]) == (200, "cleanup", True)
        resumed = await operator.post("/admin/jobs/cleanup/resume")
        assert (resumed.status_code, resumed.json()["paused"]) == (200, False)

    @pytest.mark.parametrize(
        "method, path",
        [
            ("GET", "/admin/jobs/nope"),
            ("POST", "/admin/trigger/nope"),
            ("POST", "/admin/jobs/nope/pause"),
            ("POST", "/admin/jobs/nope/resume"),
        ],
    )
    async def test_unknown_job_is_404_json(self, operator: httpx.AsyncClient, method: str, path: str) -> None:
        response = await operator.request(method, path)
        assert response.status_code == 404
        assert response.json() == {"detail": "no job 'nope'"}


class TestOperatorRequests:
    async def test_trigger_passes_its_body_and_idempotency_key_to_the_engine(
        self, operator: httpx.AsyncClient, engine: FakeEngine
    ) -> None:
        body = {"params": {"batch_size": 500}, "reason": "lock storm", "dry_run": True}
        response = await operator.post("/admin/trigger/cleanup", json=body, headers={"Idempotency-Key": "k 1"})
        assert response.status_code == 202
        [(_, asked)] = engine.requests
        assert asked["idempotency_key"] == "k 1"
        assert asked["request"] == TriggerIn(params={"batch_size": 500}, reason="lock storm", dry_run=True)

    async def test_no_body_is_todays_trigger(self, operator: httpx.AsyncClient, engine: FakeEngine) -> None:
        assert (await operator.post("/admin/trigger/report")).status_code == 409  # run 2 is running
        assert (await operator.post("/admin/trigger/cleanup")).status_code == 202
        assert [asked["request"] for _, asked in engine.requests] == [None, None]

    async def test_a_repeated_key_answers_200_with_the_first_run(self, operator: httpx.AsyncClient) -> None:
        first = await operator.post("/admin/trigger/cleanup", headers={"Idempotency-Key": "k"})
        again = await operator.post("/admin/trigger/cleanup", headers={"Idempotency-Key": "k"})
        assert (first.status_code, again.status_code) == (202, 200)
        assert again.json() == first.json() == {"job_id": "cleanup", "run_id": 4, "status": "running"}

    @pytest.mark.parametrize(
        ("body", "loc"),
        [
            ({"reason": "x" * 501}, ["body", "reason"]),
            ({"params": {"table": "a\u0000b"}}, ["body", "params"]),
            ({"params": {"batch_size": float("nan")}}, ["body", "params"]),
            ({"reason": "a\u0000"}, ["body", "reason"]),
            ({"dry_run": "maybe"}, ["body", "dry_run"]),
            ({"params": [1]}, ["body", "params"]),
            ({"colour": "red"}, ["body", "colour"]),
        ],
    )
    async def test_a_bad_body_is_a_422_naming_the_field(
        self, operator: httpx.AsyncClient, engine: FakeEngine, body: dict[str, Any], loc: list[str]
    ) -> None:
        response = await operator.post(
            "/admin/trigger/cleanup", content=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422
        assert [error["loc"][: len(loc)] for error in response.json()["detail"]] == [loc]
        assert engine.requests == []

    @pytest.mark.parametrize("key", ["", "x" * 201, "caf\u00e9", "tab\there"])
    async def test_an_idempotency_key_must_be_1_to_200_printable_ascii_characters(
        self, operator: httpx.AsyncClient, engine: FakeEngine, key: str
    ) -> None:
        response = await operator.post("/admin/trigger/cleanup", headers={"Idempotency-Key": key.encode("utf-8")})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
        assert engine.requests == []

    async def test_an_engine_422_names_the_param(self, operator: httpx.AsyncClient, engine: FakeEngine) -> None:
        async def refuse(*args: Any, **kwargs: Any) -> TriggerOut:
            raise ParamsRefused("cleanup", [(("batch_size",), "must be at least 1", "value_error")])

        engine.trigger = refuse  # type: ignore[method-assign]
        response = await operator.post("/admin/trigger/cleanup", json={"params": {"batch_size": 0}})
        assert response.status_code == 422
        assert response.json() == {
            "detail": [
                {
                    "type": "value_error",
                    "loc": ["body", "params", "batch_size"],
                    "msg": "params.batch_size: must be at least 1",
                }
            ]
        }

    async def test_rerun_is_202_with_the_new_run(self, operator: httpx.AsyncClient, engine: FakeEngine) -> None:
        response = await operator.post("/admin/runs/1/rerun", json={"reason": "again", "dry_run": True})
        assert response.status_code == 202 and response.json()["run_id"] == 4
        assert engine.requests == [("rerun", {"run_id": 1, "request": RerunIn(reason="again", dry_run=True)})]
        assert (await operator.post("/admin/runs/99/rerun")).status_code == 404

    async def test_replay_answers_202_with_its_fires_and_200_for_a_dry_run(self, operator: httpx.AsyncClient) -> None:
        body = {"from": "2025-03-29T00:00:00+00:00", "to": "2025-03-31T00:00:00+00:00"}
        started = await operator.post("/admin/jobs/cleanup/replay", json=body)
        listed = await operator.post("/admin/jobs/cleanup/replay", json={**body, "dry_run": True})
        assert (started.status_code, listed.status_code) == (202, 200)
        assert started.json() == {"job_id": "cleanup", "fires": [NOW.isoformat()], "dry_run": False}
        assert listed.json()["dry_run"] is True

    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"from": "2025-03-29T00:00:00+00:00"},
            {"from": "2025-03-29T00:00:00", "to": "2025-03-30T00:00:00"},
            {"from": "2025-03-31T00:00:00+00:00", "to": "2025-03-30T00:00:00+00:00"},
        ],
        ids=["empty", "no to", "no offset", "to before from"],
    )
    async def test_a_bad_replay_range_is_a_422(self, operator: httpx.AsyncClient, body: dict[str, Any]) -> None:
        assert (await operator.post("/admin/jobs/cleanup/replay", json=body)).status_code == 422

    async def test_a_viewer_may_not_replay_and_is_audited(self, viewer: httpx.AsyncClient, engine: FakeEngine) -> None:
        body = {"from": "2025-03-29T00:00:00+00:00", "to": "2025-03-31T00:00:00+00:00"}
        assert (await viewer.post("/admin/jobs/cleanup/replay", json=body)).status_code == 403
        assert [(entry.action, entry.target) for entry in engine.audit] == [("replay", "cleanup")]


class TestRuns:
    async def test_list_defaults_to_50_of_any_job_and_status(
        self, viewer: httpx.AsyncClient, engine: FakeEngine
    ) -> None:
        response = await viewer.get("/admin/runs")
        assert [r["id"] for r in response.json()] == [3, 2, 1]
        assert engine.calls == [("list_runs", {"job_id": None, "status": None, "limit": 50})]

    async def test_list_passes_its_filters_to_the_engine(self, viewer: httpx.AsyncClient, engine: FakeEngine) -> None:
        response = await viewer.get("/admin/runs", params={"job_id": "cleanup", "status": "failed", "limit": 1000})
        assert [r["id"] for r in response.json()] == [3]
        assert engine.calls == [("list_runs", {"job_id": "cleanup", "status": "failed", "limit": 1000})]

    @pytest.mark.parametrize(
        "params",
        [{"limit": 0}, {"limit": 1001}, {"limit": -1}, {"limit": "ten"}, {"status": "bogus"}, {"status": "RUNNING"}],
    )
    async def test_list_rejects_bad_filters_with_422(
        self, viewer: httpx.AsyncClient, engine: FakeEngine, params: dict[str, Any]
    ) -> None:
        response = await viewer.get("/admin/runs", params=params)
        assert response.status_code == 422
        assert response.json()["detail"]
        assert engine.calls == []

    async def test_get_returns_the_run_object(self, viewer: httpx.AsyncClient) -> None:
        body = (await viewer.get("/admin/runs/3")).json()
        assert (body["id"], body["job_id"], body["status"], body["node"]) == (3, "cleanup", "failed", "node-a")

    @pytest.mark.parametrize("method, suffix", [("GET", ""), ("POST", "/cancel")])
    async def test_unknown_run_is_404_json(self, operator: httpx.AsyncClient, method: str, suffix: str) -> None:
        response = await operator.request(method, f"/admin/runs/99{suffix}")
        assert response.status_code == 404
        assert response.json() == {"detail": "no run 99"}

    @pytest.mark.parametrize("run_id", ["abc", "1.5", "0", "-1", str(2**63), "9" * 40])
    @pytest.mark.parametrize("method, suffix", [("GET", ""), ("POST", "/cancel")])
    async def test_a_run_id_that_is_not_a_bigint_is_422(
        self, operator: httpx.AsyncClient, engine: FakeEngine, run_id: str, method: str, suffix: str
    ) -> None:
        response = await operator.request(method, f"/admin/runs/{run_id}{suffix}")
        assert response.status_code == 422
        assert engine.calls == []

    async def test_cancel_of_a_run_in_progress_is_202_with_the_run(self, operator: httpx.AsyncClient) -> None:
        response = await operator.post("/admin/runs/2/cancel")
        assert response.status_code == 202
        assert (response.json()["id"], response.json()["job_id"]) == (2, "report")

    async def test_cancel_of_an_ended_run_is_409(self, operator: httpx.AsyncClient) -> None:
        response = await operator.post("/admin/runs/1/cancel")
        assert response.status_code == 409
        assert response.json() == {"detail": "run 1 has already ended (succeeded)"}


class TestRunLogs:
    async def test_answers_the_lines_with_offset_times_and_the_dropped_count(
        self, viewer: httpx.AsyncClient, engine: FakeEngine
    ) -> None:
        response = await viewer.get("/admin/runs/3/logs")
        assert response.status_code == 200
        body = response.json()
        assert (body["run_id"], body["dropped"]) == (3, 1)
        assert body["lines"][0] == {
            "seq": 1,
            "at": "2025-03-30T00:30:00+00:00",
            "level": "info",
            "event": "run_started",
            "fields": {"attempt": 1},
        }
        assert [line["seq"] for line in body["lines"]] == [1, 2, 4]
        assert engine.calls == [("get_run_logs", {"run_id": 3, "after_seq": 0, "limit": 1000})]

    async def test_after_seq_and_limit_reach_the_engine(self, viewer: httpx.AsyncClient, engine: FakeEngine) -> None:
        body = (await viewer.get("/admin/runs/3/logs", params={"after_seq": 1, "limit": 1})).json()
        assert [line["event"] for line in body["lines"]] == ["log_lines_dropped"]
        assert engine.calls == [("get_run_logs", {"run_id": 3, "after_seq": 1, "limit": 1})]

    async def test_a_run_without_logs_answers_no_lines(self, viewer: httpx.AsyncClient) -> None:
        response = await viewer.get("/admin/runs/1/logs")
        assert response.json() == {"run_id": 1, "lines": [], "dropped": 0}

    async def test_unknown_run_is_404_json(self, viewer: httpx.AsyncClient) -> None:
        response = await viewer.get("/admin/runs/99/logs")
        assert response.status_code == 404
        assert response.json() == {"detail": "no run 99"}

    @pytest.mark.parametrize(
        "params",
        [{"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"after_seq": -1}, {"after_seq": 2**31}, {"after_seq": "x"}],
    )
    async def test_bad_parameters_are_422(
        self, viewer: httpx.AsyncClient, engine: FakeEngine, params: dict[str, Any]
    ) -> None:
        response = await viewer.get("/admin/runs/3/logs", params=params)
        assert response.status_code == 422
        assert engine.calls == []

    @pytest.mark.parametrize("run_id", ["abc", "0", str(2**63)])
    async def test_a_run_id_that_is_not_a_bigint_is_422(
        self, viewer: httpx.AsyncClient, engine: FakeEngine, run_id: str
    ) -> None:
        response = await viewer.get(f"/admin/runs/{run_id}/logs")
        assert response.status_code == 422
        assert engine.calls == []


class TestAudit:
    async def test_lists_admin_actions_newest_first(self, operator: httpx.AsyncClient) -> None:
        await operator.post("/admin/jobs/cleanup/pause")
        await operator.post("/admin/jobs/cleanup/resume")
        body = (await operator.get("/admin/audit", params={"limit": 1})).json()
        assert [(a["principal"], a["action"], a["target"], a["client"]) for a in body] == [
            ("ops", "resume", "cleanup", CLIENT_HOST)
        ]

    async def test_limit_defaults_to_50(self, viewer: httpx.AsyncClient, engine: FakeEngine) -> None:
        await viewer.get("/admin/audit")
        assert engine.calls == [("list_audit", {"limit": 50})]

    @pytest.mark.parametrize("limit", ["0", "1001", "x"])
    async def test_bad_limit_is_422(self, viewer: httpx.AsyncClient, limit: str) -> None:
        response = await viewer.get("/admin/audit", params={"limit": limit})
        assert response.status_code == 422


class TestErrors:
    @pytest.mark.parametrize("path", ["/nope", "/admin/nope"])
    async def test_unknown_route_is_404_json(self, viewer: httpx.AsyncClient, path: str) -> None:
        response = await viewer.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
        assert "detail" in response.json()

    async def test_wrong_method_is_405_json(self, operator: httpx.AsyncClient) -> None:
        response = await operator.delete("/admin/jobs/cleanup")
        assert response.status_code == 405
        assert "detail" in response.json()

    async def test_an_unexpected_engine_error_is_500_json_without_internals(
        self, operator: httpx.AsyncClient, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def broken() -> list[JobOut]:
            raise RuntimeError("connection string postgresql://secret@db")

        monkeypatch.setattr(engine, "list_jobs", broken)
        response = await operator.get("/admin/jobs")
        assert response.status_code == 500
        assert response.json() == {"detail": "internal error"}

    async def test_admin_routes_are_503_json_until_the_engine_is_set(self) -> None:
        app = build_app(engine=None, registry=None)
        async with open_client(app) as client:
            anonymous = await client.get("/admin/jobs")
            client.headers["Authorization"] = f"Bearer {VIEWER_TOKEN}"
            starting = await client.get("/admin/jobs")
            app.state.engine = FakeEngine()
            started = await client.get("/admin/jobs")
        # Authentication comes first: a starting daemon tells strangers nothing.
        assert anonymous.status_code == 401
        assert (starting.status_code, starting.json()) == (503, {"detail": "starting"})
        assert started.status_code == 200


class TestHealth:
    async def test_healthz(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/healthz")
        assert (response.status_code, response.json()) == (200, {"status": "ok"})

    async def test_readyz_is_200_when_the_engine_has_no_reasons(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/readyz")
        assert (response.status_code, response.json()) == (200, {"status": "ready"})

    async def test_readyz_is_503_with_the_engines_reasons(self, client: httpx.AsyncClient, engine: FakeEngine) -> None:
        engine.not_ready = ["database: connection refused", "scheduler: not running"]
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {"status": "not ready", "reasons": engine.not_ready}

    async def test_readyz_is_503_when_the_check_itself_fails(
        self, client: httpx.AsyncClient, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def broken() -> list[str]:
            raise OSError("pool closed")

        monkeypatch.setattr(engine, "readiness", broken)
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {"status": "not ready", "reasons": ["readiness: check failed"]}

    async def test_readyz_is_503_starting_until_the_engine_is_set(self) -> None:
        async with open_client(build_app(engine=None, registry=None)) as client:
            response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {"status": "not ready", "reasons": ["starting"]}

    async def test_metrics_serves_the_registry_in_prometheus_text_format(
        self, client: httpx.AsyncClient, registry: CollectorRegistry
    ) -> None:
        Counter("maintd_test_runs", "Runs seen by this test.", ["job_id"], registry=registry).labels("cleanup").inc(3)
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"] == CONTENT_TYPE_LATEST
        assert 'maintd_test_runs_total{job_id="cleanup"} 3.0' in response.text.splitlines()

    async def test_metrics_is_503_json_until_the_registry_is_set(self, engine: FakeEngine) -> None:
        async with open_client(build_app(engine=engine, registry=None)) as client:
            response = await client.get("/metrics")
        assert (response.status_code, response.json()) == (503, {"detail": "starting"})


class TestOpenAPI:
    CONTRACT = {
        "/healthz": {"get"},
        "/readyz": {"get"},
        "/metrics": {"get"},
        "/admin/jobs": {"get"},
        "/admin/jobs/{job_id}": {"get"},
        "/admin/trigger/{job_id}": {"post"},
        "/admin/jobs/{job_id}/pause": {"post"},
        "/admin/jobs/{job_id}/resume": {"post"},
        "/admin/runs": {"get"},
        "/admin/runs/{run_id}": {"get"},
        "/admin/runs/{run_id}/cancel": {"post"},
        "/admin/runs/{run_id}/logs": {"get"},
        "/admin/runs/{run_id}/rerun": {"post"},
        "/admin/jobs/{job_id}/replay": {"post"},
        "/admin/audit": {"get"},
    }

    def test_schema_has_every_contract_route(self, app: FastAPI) -> None:
        paths = app.openapi()["paths"]
        assert {path: set(ops) for path, ops in paths.items()} == self.CONTRACT

    def test_admin_routes_declare_bearer_auth_and_health_routes_do_not(self, app: FastAPI) -> None:
        schema = app.openapi()
        assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        for path, ops in schema["paths"].items():
            for op in ops.values():
                assert ("security" in op) == path.startswith("/admin/"), path

    @pytest.mark.parametrize(
        "path, method, code, model",
        [
            ("/admin/jobs/{job_id}", "get", "200", "JobOut"),
            ("/admin/trigger/{job_id}", "post", "202", "TriggerOut"),
            ("/admin/jobs/{job_id}/pause", "post", "200", "JobOut"),
            ("/admin/runs/{run_id}", "get", "200", "RunOut"),
            ("/admin/runs/{run_id}/cancel", "post", "202", "RunOut"),
            ("/admin/runs/{run_id}/logs", "get", "200", "RunLogsOut"),
            ("/admin/runs/{run_id}/logs", "get", "404", "ErrorOut"),
            ("/admin/trigger/{job_id}", "post", "409", "ErrorOut"),
            ("/admin/jobs/{job_id}", "get", "404", "ErrorOut"),
            ("/readyz", "get", "503", "NotReady"),
        ],
    )
    def test_responses_declare_their_models(self, app: FastAPI, path: str, method: str, code: str, model: str) -> None:
        response = app.openapi()["paths"][path][method]["responses"][code]
        assert response["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}

    def test_every_status_a_route_can_answer_is_declared(self, app: FastAPI) -> None:
        paths = app.openapi()["paths"]
        for path, ops in paths.items():
            for method, op in ops.items():
                declared = set(op["responses"])
                if path.startswith("/admin/"):
                    assert {"401", "422", "429", "503"} <= declared, (method, path)
                if method == "post":
                    assert {"403", "404"} <= declared, (method, path)
                assert "422" in declared, (method, path)
        assert "409" in paths["/admin/trigger/{job_id}"]["post"]["responses"]
        assert "409" in paths["/admin/runs/{run_id}/cancel"]["post"]["responses"]


class TestHostileInput:
    """A NUL or an unpaired surrogate in any string input is a 422 that never reaches the engine."""

    @pytest.mark.parametrize(
        "method, path, params",
        [
            ("GET", "/admin/runs", {"job_id": "\x00"}),
            ("GET", "/admin/runs", {"job_id": "clean\x00up"}),
            ("GET", "/admin/runs", {"limit": "5", "x\x00": "1"}),
            ("GET", "/admin/jobs/%00", None),
            ("GET", "/admin/jobs/a%00b", None),
            ("POST", "/admin/trigger/%00", None),
            ("POST", "/admin/jobs/%00/pause", None),
            ("POST", "/admin/jobs/%00/resume", None),
        ],
    )
    async def test_a_nul_in_a_path_or_query_parameter_is_422(
        self, operator: httpx.AsyncClient, engine: FakeEngine, method: str, path: str, params: dict[str, str] | None
    ) -> None:
        response = await operator.request(method, path, params=params)
        assert response.status_code == 422
        [error] = response.json()["detail"]
        assert error["loc"][0] in ("path", "query")
        assert "NUL" in error["msg"]
        assert engine.calls == [] and engine.audit == []

    async def test_a_nul_in_a_header_is_422(self, app: FastAPI, engine: FakeEngine) -> None:
        status, body = await asgi_get(
            app, "/admin/jobs", headers=[(b"authorization", f"Bearer {VIEWER_TOKEN}".encode()), (b"x-note", b"a\x00b")]
        )
        assert status == 422
        assert body["detail"][0]["loc"] == ["header", "x-note"]

    @pytest.mark.parametrize(
        "path, query, loc",
        [
            ("/admin/jobs/\ud800", b"", ["path", "job_id"]),
            ("/admin/runs/1\udfff", b"", ["path", "run_id"]),
            # Starlette decodes the query as UTF-8 with replacement, so a surrogate comes only from the path.
            ("/admin/runs", b"job_id=%00", ["query", "job_id"]),
        ],
    )
    async def test_an_unpaired_surrogate_is_422_and_the_answer_is_valid_json(
        self, app: FastAPI, engine: FakeEngine, path: str, query: bytes, loc: list[str]
    ) -> None:
        status, body = await asgi_get(
            app, path, query=query, headers=[(b"authorization", f"Bearer {OPERATOR_TOKEN}".encode())]
        )
        assert status == 422
        assert body["detail"][0]["loc"] == loc
        assert engine.calls == []

    async def test_a_viewers_refusal_with_a_nul_writes_no_audit_row(
        self, viewer: httpx.AsyncClient, engine: FakeEngine
    ) -> None:
        response = await viewer.post("/admin/jobs/%00/pause")
        assert response.status_code == 422
        assert engine.audit == []

    async def test_clean_unicode_passes(self, viewer: httpx.AsyncClient, engine: FakeEngine) -> None:
        response = await viewer.get("/admin/runs", params={"job_id": "nettoyage-été-🧹"})
        assert response.status_code == 200
        assert engine.calls == [("list_runs", {"job_id": "nettoyage-été-🧹", "status": None, "limit": 50})]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestFailedAuthentication:
    """Failed authentications are counted, logged at a bounded rate, and limited per client address."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def failures(self, registry: CollectorRegistry, clock: FakeClock) -> AuthFailures:
        counter = Counter("maintd_auth_failures", "Failed authentications", ["reason"], registry=registry)
        return AuthFailures(counter, clock=clock)

    @pytest.fixture
    def app(self, engine: FakeEngine, registry: CollectorRegistry, failures: AuthFailures) -> FastAPI:
        return build_app(engine, registry, failures)

    async def test_the_21st_failure_within_a_minute_is_429_with_retry_after_and_a_valid_token_still_works(
        self, client: httpx.AsyncClient, clock: FakeClock
    ) -> None:
        bad = {"Authorization": "Bearer guess"}
        statuses = []
        for _ in range(20):
            statuses.append((await client.get("/admin/jobs", headers=bad)).status_code)
            clock.now += 1
        assert statuses == [401] * 20
        limited = await client.get("/admin/jobs", headers=bad)
        assert limited.status_code == 429
        # A refused attempt counts too (the window keeps the last 20: the 2nd to this one);
        # the 2nd, made 19 s ago, ages out in 41 s, and then one more attempt is let through.
        assert limited.headers["Retry-After"] == "41"
        assert "detail" in limited.json()
        # Not a lock-out: the operator beside the guesser gets in.
        good = await client.get("/admin/jobs", headers={"Authorization": f"Bearer {VIEWER_TOKEN}"})
        assert good.status_code == 200
        # No token at all counts the same as a wrong one.
        assert (await client.get("/admin/jobs")).status_code == 429

    async def test_another_address_is_not_limited(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        for _ in range(21):
            await client.get("/admin/jobs", headers={"Authorization": "Bearer guess"})
        transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://maintd") as other:
            response = await other.get("/admin/jobs", headers={"Authorization": "Bearer guess"})
        assert response.status_code == 401

    async def test_the_limit_lifts_once_failures_age_out_of_the_window(
        self, client: httpx.AsyncClient, clock: FakeClock
    ) -> None:
        for _ in range(20):
            await client.get("/admin/jobs", headers={"Authorization": "Bearer guess"})
        assert (await client.get("/admin/jobs", headers={"Authorization": "Bearer guess"})).status_code == 429
        clock.now += 61
        assert (await client.get("/admin/jobs", headers={"Authorization": "Bearer guess"})).status_code == 401

    async def test_failures_are_counted_by_reason(self, client: httpx.AsyncClient, registry: CollectorRegistry) -> None:
        assert registry.get_sample_value("maintd_auth_failures_total", {"reason": "invalid"}) == 0
        for _ in range(3):
            await client.get("/admin/runs", headers={"Authorization": "Bearer guess"})
        await client.post("/admin/trigger/cleanup")
        await client.post("/admin/trigger/cleanup", headers={"Authorization": "Basic abc"})
        assert registry.get_sample_value("maintd_auth_failures_total", {"reason": "invalid"}) == 3
        assert registry.get_sample_value("maintd_auth_failures_total", {"reason": "missing"}) == 2

    async def test_300_failures_log_two_lines_without_the_token(
        self, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        for i in range(300):
            await client.get("/admin/jobs", headers={"Authorization": f"Bearer secret-guess-{i}"})
        lines = [r for r in caplog.records if r.name == "maintd.api"]
        events = [r.msg["event"] if isinstance(r.msg, dict) else r.getMessage() for r in lines]
        assert events == ["auth_failed", "auth_client_limited"]
        assert CLIENT_HOST in caplog.text
        assert "secret-guess" not in caplog.text

    async def test_log_lines_are_capped_across_addresses(self, app: FastAPI, caplog: pytest.LogCaptureFixture) -> None:
        for i in range(100):
            transport = httpx.ASGITransport(app=app, client=(f"10.0.{i // 256}.{i % 256}", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://maintd") as client:
                await client.get("/admin/jobs")
        assert len([r for r in caplog.records if r.name == "maintd.api"]) == 60


class TestDeniedMutations:
    @pytest.mark.parametrize(
        "path, action, target",
        [
            ("/admin/trigger/cleanup", "trigger", "cleanup"),
            ("/admin/jobs/cleanup/pause", "pause", "cleanup"),
            ("/admin/jobs/report/resume", "resume", "report"),
            ("/admin/runs/2/cancel", "cancel", "run:2"),
        ],
    )
    async def test_a_viewers_refused_mutation_is_audited_as_denied(
        self, viewer: httpx.AsyncClient, engine: FakeEngine, path: str, action: str, target: str
    ) -> None:
        response = await viewer.post(path)
        assert response.status_code == 403
        [row] = engine.audit
        assert (row.principal, row.action, row.target, row.client) == ("alice", action, target, CLIENT_HOST)
        assert row.detail == {"outcome": "denied"}
        assert engine.calls == []  # nothing else was asked of the engine

    async def test_the_403_goes_out_when_the_audit_write_fails(
        self, viewer: httpx.AsyncClient, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def broken(actor: Actor, action: str, target: str) -> None:
            raise OSError("database gone")

        monkeypatch.setattr(engine, "record_denied", broken)
        response = await viewer.post("/admin/jobs/cleanup/pause")
        assert response.status_code == 403

    async def test_an_unauthenticated_mutation_is_not_audited(
        self, client: httpx.AsyncClient, engine: FakeEngine
    ) -> None:
        assert (await client.post("/admin/jobs/cleanup/pause")).status_code == 401
        assert engine.audit == []


class TestUnknownQueryParameters:
    @pytest.mark.parametrize(
        "path, params",
        [
            ("/admin/runs", {"stauts": "failed"}),
            ("/admin/runs", {"job_id": "cleanup", "": "x"}),
            ("/admin/jobs", {"verbose": "1"}),
            ("/admin/runs/3/logs", {"after": "1"}),
        ],
    )
    async def test_a_query_parameter_the_route_does_not_declare_is_422(
        self, viewer: httpx.AsyncClient, engine: FakeEngine, path: str, params: dict[str, str]
    ) -> None:
        response = await viewer.get(path, params=params)
        assert response.status_code == 422
        [error] = response.json()["detail"]
        assert error["loc"][0] == "query" and error["msg"] == "unknown query parameter"
        assert engine.calls == []

    async def test_declared_parameters_pass(self, viewer: httpx.AsyncClient) -> None:
        response = await viewer.get("/admin/runs/3/logs", params={"after_seq": "1", "limit": "5"})
        assert response.status_code == 200
