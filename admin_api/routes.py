"""The ``/admin/*`` routes of the contract, and :func:`build_routers`, everything the daemon mounts.

Reads need any known token, mutations the operator role; the engine records
the audit row for each mutation from the :class:`~admin_api.interface.Actor`
passed to it (and :class:`~admin_api.auth.Guard` the row of a viewer's refused
one). Every string a route reads is checked first (:mod:`admin_api.safe_input`),
and a query parameter the route does not declare is refused (:mod:`admin_api.strict_query`).
"""

# No `from __future__ import annotations` here: FastAPI must resolve the
# Viewer/operator aliases, which are local to admin_router, at definition time.
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Response
from fastapi import status as http_status

from maintd.admin_api import api_docs, health
from maintd.admin_api.auth import Guard
from maintd.admin_api.errors import responses
from maintd.admin_api.interface import (
    Actor,
    AdminEngine,
    AuditOut,
    JobOut,
    JobState,
    ReplayIn,
    ReplayOut,
    RerunIn,
    RunLogsOut,
    RunOut,
    RunStatus,
    TriggerIn,
    TriggerOut,
)
from maintd.admin_api.safe_input import NO_NUL, reject_unsafe_strings
from maintd.admin_api.state import require_engine
from maintd.admin_api.strict_query import reject_unknown_query

# Run ids are PostgreSQL bigints: a larger number is not a run (and must not
# reach the database as an overflow, a 500).
_BIGINT_MAX = 2**63 - 1

Engine = Annotated[AdminEngine, Depends(require_engine)]
# String parameters declare in the schema what admin_api.safe_input enforces for every
# input: no NUL (PostgreSQL cannot store it in text).
JobId = Annotated[str, Path(pattern=NO_NUL)]
JobIdFilter = Annotated[str | None, Query(pattern=NO_NUL, description="Only runs of this job.")]
RunId = Annotated[int, Path(ge=1, le=_BIGINT_MAX)]
Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many rows, newest first.")]
# Log line numbers are PostgreSQL integers.
AfterSeq = Annotated[int, Query(ge=0, le=2**31 - 1, description="Only lines after this one: to follow a run.")]
LogLimit = Annotated[int, Query(ge=1, le=1000, description="At most this many lines, oldest first.")]
# Jobs are paged by position in the config's order: the list is the config, held in
# memory, so an offset costs nothing, and a page number is what a console shows.
JobLimit = Annotated[int | None, Query(ge=1, le=1000, description="At most this many jobs (default: all).")]
JobOffset = Annotated[int, Query(ge=0, le=2**31 - 1, description="Skip this many jobs first (of those in `state`).")]
JobStateFilter = Annotated[JobState | None, Query(description="Only jobs in this state (the job object's `state`).")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x20-\x7e]+$",
        description="1-200 printable ASCII characters: the same key and body within 24 h answer the first "
        "request's run (200); the same key with another body is a 422. Per principal and job.",
    ),
]


def admin_router(guard: Guard) -> APIRouter:
    """The ``/admin/*`` routes, admitted by ``guard``."""
    # Parameter order matters: the actor comes before the engine so an
    # unauthenticated caller gets 401 even while the daemon starts.
    Viewer = Annotated[Actor, Depends(guard.viewer)]
    # An operator, named by the audit action of the mutation (a viewer's refusal is audited as such).
    Triggering = Annotated[Actor, Depends(guard.operator("trigger"))]
    Pausing = Annotated[Actor, Depends(guard.operator("pause"))]
    Resuming = Annotated[Actor, Depends(guard.operator("resume"))]
    Cancelling = Annotated[Actor, Depends(guard.operator("cancel"))]
    Rerunning = Annotated[Actor, Depends(guard.operator("rerun"))]
    Replaying = Annotated[Actor, Depends(guard.operator("replay"))]

    # Every status a route can answer is declared, so clients (and the schema fuzzing
    # in tests/integration/test_api_fuzzing.py) can rely on the schema: 401 no valid
    # token, 429 too many failed ones, 422 a bad parameter, 503 starting (and, on
    # trigger, a replica that is not scheduling).
    router = APIRouter(
        prefix="/admin",
        tags=["admin"],
        responses=responses(401, 422, 429, 503),
        # In this order: a parameter name holding a NUL is refused as such, not as unknown.
        dependencies=[Depends(reject_unsafe_strings), Depends(reject_unknown_query)],
    )
    # Every mutation names a job or run (404); trigger and cancel can also conflict (409).
    mutating = responses(403, 404)
    conflicting = responses(403, 404, 409)
    # A body that is not even text (invalid UTF-8) is refused as FastAPI reads it, before
    # any other check: 400.
    with_body = responses(400)

    @router.get("/jobs")
    async def list_jobs(
        _: Viewer, engine: Engine, state: JobStateFilter = None, limit: JobLimit = None, offset: JobOffset = 0
    ) -> list[JobOut]:
        """The configured jobs with their live state, in the config's order; optionally only
        those in one ``state``, and a page of them (``limit``, ``offset``)."""
        return await engine.list_jobs(state=state, limit=limit, offset=offset)

    @router.get("/jobs/{job_id}", responses=responses(404))
    async def get_job(job_id: JobId, _: Viewer, engine: Engine) -> JobOut:
        """One job with its next fire times and last run."""
        return await engine.get_job(job_id)

    @router.post(
        "/trigger/{job_id}",
        status_code=http_status.HTTP_202_ACCEPTED,
        responses={**conflicting, **with_body, 200: {"model": TriggerOut, "description": "The run of an earlier request with "
                                        "the same Idempotency-Key and body"}},
    )  # fmt: skip
    async def trigger(
        job_id: JobId,
        actor: Triggering,
        engine: Engine,
        response: Response,
        body: Annotated[TriggerIn | None, Body()] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> TriggerOut:
        """Start a run now, optionally with params for this run, a reason, as a dry run;
        409 when the job forbids overlap and a run is in progress anywhere."""
        started = await engine.trigger(job_id, actor, body, idempotency_key=idempotency_key)
        if started.repeated:
            response.status_code = http_status.HTTP_200_OK
        return started

    @router.post("/jobs/{job_id}/replay", status_code=http_status.HTTP_202_ACCEPTED,
                 responses={**mutating, **with_body,
                            200: {"model": ReplayOut, "description": "dry_run: the fires it would run"}})  # fmt: skip
    async def replay(job_id: JobId, actor: Replaying, engine: Engine, response: Response, body: ReplayIn) -> ReplayOut:
        """Run, one after another on this replica, each fire from ``from`` to ``to`` that was
        missed, skipped, or failed and never succeeded (at most 1,000); ``dry_run``: only list them."""
        replay = await engine.replay(job_id, actor, body)
        if replay.dry_run:
            response.status_code = http_status.HTTP_200_OK
        return replay

    @router.post("/jobs/{job_id}/pause", responses=mutating)
    async def pause(job_id: JobId, actor: Pausing, engine: Engine) -> JobOut:
        """Stop scheduled fires on every replica, across restarts, until resumed."""
        return await engine.pause(job_id, actor)

    @router.post("/jobs/{job_id}/resume", responses=mutating)
    async def resume(job_id: JobId, actor: Resuming, engine: Engine) -> JobOut:
        """Undo a pause."""
        return await engine.resume(job_id, actor)

    @router.get("/runs")
    async def list_runs(
        _: Viewer,
        engine: Engine,
        job_id: JobIdFilter = None,
        status: RunStatus | None = None,
        limit: Limit = 50,
    ) -> list[RunOut]:
        """Runs, newest first, optionally of one job and in one status."""
        return await engine.list_runs(job_id=job_id, status=status, limit=limit)

    @router.get("/runs/{run_id}", responses=responses(404))
    async def get_run(run_id: RunId, _: Viewer, engine: Engine) -> RunOut:
        """One run, with its result or error."""
        return await engine.get_run(run_id)

    @router.post("/runs/{run_id}/cancel", status_code=http_status.HTTP_202_ACCEPTED, responses=conflicting)
    async def cancel_run(run_id: RunId, actor: Cancelling, engine: Engine) -> RunOut:
        """Ask the replica running it to cancel the run; 409 when it has already ended."""
        return await engine.cancel_run(run_id, actor)

    @router.post(
        "/runs/{run_id}/rerun", status_code=http_status.HTTP_202_ACCEPTED, responses={**conflicting, **with_body}
    )
    async def rerun(
        run_id: RunId, actor: Rerunning, engine: Engine, body: Annotated[RerunIn | None, Body()] = None
    ) -> TriggerOut:
        """Start a manual run now as the run was asked for (its overrides over the current
        config, its dry run and reason unless the body says otherwise); 409 as a trigger."""
        return await engine.rerun(run_id, actor, body)

    @router.get("/runs/{run_id}/logs", responses=responses(404))
    async def get_run_logs(
        run_id: RunId, _: Viewer, engine: Engine, after_seq: AfterSeq = 0, limit: LogLimit = 1000
    ) -> RunLogsOut:
        """What the run logged, oldest first; poll with ``after_seq`` = the last ``seq`` seen to follow it."""
        return await engine.get_run_logs(run_id, after_seq=after_seq, limit=limit)

    @router.get("/audit")
    async def list_audit(_: Viewer, engine: Engine, limit: Limit = 50) -> list[AuditOut]:
        """Admin actions, newest first: who did what to which target, when."""
        return await engine.list_audit(limit=limit)

    return router


def build_routers(guard: Guard) -> list[APIRouter]:
    """Every router of the API: the open health routes, the API's documentation, and the
    admin routes admitted by ``guard``."""
    return [health.router, api_docs.router, admin_router(guard)]
