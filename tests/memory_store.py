"""An in-memory run store for the unit ring: :class:`MemoryStore`.

It answers every call of :class:`~maintd.scheduler.store.run_store.RunStore`
the way the SQL of ``scheduler/store/sql/queries.sql`` does on the schema of
``scheduler/store/migrations/``: a fire key (job, fire time, attempt) is
inserted once, an exclusive job has one running run, claims of a paused job's
fires insert nothing, the reapers end silent runs as ``lost`` (or ``missed``
when claimed ahead and never started), an outcome that comes after that keeps
the record and is stored beside it as ``late_outcome``, and so on. Ids follow
PostgreSQL's identity columns, gaps included (a claim that conflicts uses one
up), jsonb values are stored as JSON text (so a result reads back as the API
shows it), and a value the schema refuses raises the error asyncpg would.

``clock`` is the database's clock (``now()``), read once per call as one
statement reads it once; pass the test's own to control leases and heartbeats.
The state is public (``runs``, ``job_state``, ``nodes``, ``audit``,
``alert_state``, ``run_logs``), and ``calls`` records every call with its
arguments, as procrastinate's ``InMemoryConnector`` records its queries.
Subclass a method to inject a fault.

No I/O: ``pool`` raises when used; ``dedicated_connection`` gives a stand-in
that takes LISTEN callbacks (``request_cancel`` notifies them) and answers
``SELECT 1``. Where PostgreSQL sorts text by the database's collation (node
and job names), this store sorts by code point; rows that SQL returns in no
stated order come back by id. ``tests/integration/test_store_contract.py``
runs the same scenarios against both stores.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import json
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Concatenate, NamedTuple, ParamSpec, TypeVar

import asyncpg

from maintd.admin_api.interface import AuditOut, RunLogLine
from maintd.scheduler.run_logs import LogBatch
from maintd.scheduler.store.records import Run, run_from_row
from maintd.scheduler.store.run_store import (
    Claim,
    ClaimBlockers,
    EarlierRequest,
    IdempotencyKey,
    NewAuditEntry,
    RunStore,
)

Clock = Callable[[], datetime]
FireKey = tuple[str, datetime, int]

CANCEL_CHANNEL = "maintd_cancel"
_TRIGGERS = frozenset({"schedule", "manual", "catch_up", "retry", "replay"})
# Triggers whose rows hold no fire key (runs_fire_key): manual runs and replays.
_UNKEYED = frozenset({"manual", "replay"})
_STATUSES = frozenset({"running", "succeeded", "failed", "cancelled", "timed_out", "lost", "skipped", "missed"})
# Nodes silent this long are forgotten by the next node heartbeat.
_FORGET_NODES_AFTER = timedelta(days=1)


class Call(NamedTuple):
    """One call made to the store: the method's name and its arguments by name."""

    method: str
    args: dict[str, Any]


@dataclass(frozen=True)
class StoredRun:
    """One row of ``maintd.runs``; jsonb columns hold JSON text, times are UTC."""

    id: int
    job_id: str
    trigger: str
    status: str
    scheduled_for: datetime
    attempt: int
    exclusive: bool
    node: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    result: str | None = None
    error: str | None = None
    progress: str | None = None
    triggered_by: str | None = None
    cancel_requested_by: str | None = None
    log_lines_dropped: int = 0
    late_outcome: str | None = None
    params: str | None = None
    overrides: str | None = None
    reason: str | None = None
    dry_run: bool = False
    rerun_of: int | None = None

    @property
    def fire_key(self) -> FireKey | None:
        """The key of ``runs_fire_key`` (manual runs and replays have none)."""
        return None if self.trigger in _UNKEYED else (self.job_id, self.scheduled_for, self.attempt)

    @property
    def replay_key(self) -> tuple[str, datetime] | None:
        """The key of ``runs_replay_once``: a replay running or succeeded."""
        if self.trigger == "replay" and self.status in ("running", "succeeded"):
            return (self.job_id, self.scheduled_for)
        return None

    @property
    def success(self) -> bool:
        """A success as the dead-man's switch, alerts, replay and the report count it: not a dry run."""
        return self.status == "succeeded" and not self.dry_run

    @property
    def holds_job(self) -> bool:
        """Counted by ``runs_one_running``: a running exclusive run."""
        return self.status == "running" and self.exclusive

    def out(self) -> Run:
        row = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        for column in ("result", "progress", "late_outcome", "params", "overrides"):
            row[column] = _from_jsonb(row[column])
        return run_from_row(row)


@dataclass(frozen=True)
class StoredLogLine:
    """One row of ``maintd.run_logs``."""

    at: datetime
    level: str
    event: str
    fields: str  # JSON text


@dataclass(frozen=True)
class StoredAlert:
    """One row of ``maintd.alert_state``."""

    last_sent_at: datetime
    node: str
    run_id: int | None = None
    after_success: datetime | None = None


P = ParamSpec("P")
R = TypeVar("R")


def _recorded(
    method: Callable[Concatenate[MemoryStore, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[MemoryStore, P], Coroutine[Any, Any, R]]:
    """Append each call to ``store.calls`` before answering it."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    async def recorded(store: MemoryStore, *args: P.args, **kwargs: P.kwargs) -> R:
        arguments = signature.bind(store, *args, **kwargs).arguments
        store.calls.append(Call(method.__name__, {name: value for name, value in arguments.items() if name != "self"}))
        return await method(store, *args, **kwargs)

    return recorded


class _NoPool:
    """Stands for the pool: unit tests do no I/O, so any use of it is a test's mistake."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"MemoryStore has no database: pool.{name} was used")


class MemoryConnection:
    """What :meth:`MemoryStore.dedicated_connection` gives: LISTEN callbacks, and a
    ``SELECT 1`` that answers until the connection is closed."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._closed = False
        self.listeners: dict[str, list[Callable[..., Any]]] = {}

    def is_closed(self) -> bool:
        return self._closed

    async def add_listener(self, channel: str, callback: Callable[..., Any]) -> None:
        self.listeners.setdefault(channel, []).append(callback)

    async def remove_listener(self, channel: str, callback: Callable[..., Any]) -> None:
        self.listeners.get(channel, []).remove(callback)

    async def execute(self, query: str, *args: Any) -> str:
        if self._closed:
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection is closed")
        if query.strip().upper() != "SELECT 1" or args:
            raise AssertionError(f"MemoryStore runs no SQL: {query!r}")
        return "SELECT 1"

    async def close(self, *, timeout: float | None = None) -> None:
        self.terminate()

    def terminate(self) -> None:
        self._closed = True
        if self in self._store.connections:
            self._store.connections.remove(self)


class MemoryStore(RunStore):
    """The run store's state in dicts, for unit tests; see the module's docstring."""

    def __init__(self, clock: Clock = lambda: datetime.now(UTC)) -> None:
        super().__init__(_NoPool(), "memory:")
        self.clock = clock
        self.calls: list[Call] = []
        self.runs: dict[int, StoredRun] = {}
        self.job_state: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, datetime]] = {}
        self.audit: list[AuditOut] = []
        self.alert_state: dict[tuple[str, str], StoredAlert] = {}
        self.run_logs: dict[int, dict[int, StoredLogLine]] = {}
        self.connections: list[MemoryConnection] = []
        # NOTIFY payloads sent, in order: (channel, payload).
        self.notices: list[tuple[str, str]] = []
        self._run_ids = 0
        self._audit_ids = 0
        self._fire_keys: dict[FireKey, int] = {}
        self._holding: dict[str, int] = {}  # job_id -> its running exclusive run
        self._replay_keys: dict[tuple[str, datetime], int] = {}
        # maintd.idempotency_keys: (principal, job_id, key) -> (body sha256, run id, created at)
        self.idempotency_keys: dict[tuple[str, str, str], tuple[str, int | None, datetime]] = {}

    def called(self, method: str) -> list[dict[str, Any]]:
        """The arguments of each call of ``method``, oldest first."""
        return [call.args for call in self.calls if call.method == method]

    def _now(self) -> datetime:
        return _utc(self.clock())

    # -- rows -----------------------------------------------------------------

    def _insert(self, **columns: Any) -> StoredRun | None:
        """INSERT ... ON CONFLICT DO NOTHING: the id is drawn before the conflict is
        found, as an identity column draws it; None when a unique index holds the row."""
        self._run_ids += 1
        row = _checked(StoredRun(id=self._run_ids, **columns))
        if (key := row.fire_key) is not None and key in self._fire_keys:
            return None
        if row.holds_job and row.job_id in self._holding:
            return None
        if (replay := row.replay_key) is not None and replay in self._replay_keys:
            return None
        self._put(row)
        return row

    def _put(self, row: StoredRun) -> None:
        old = self.runs.get(row.id)
        if old is not None and old.holds_job and not row.holds_job:
            del self._holding[row.job_id]
        if row.holds_job:
            self._holding[row.job_id] = row.id
        if old is not None and (replay := old.replay_key) is not None and row.replay_key is None:
            del self._replay_keys[replay]
        if (replay := row.replay_key) is not None:
            self._replay_keys[replay] = row.id
        if (key := row.fire_key) is not None:
            self._fire_keys[key] = row.id
        self.runs[row.id] = row

    def _update(self, changes: Sequence[tuple[StoredRun, dict[str, Any]]]) -> list[StoredRun]:
        """One UPDATE: every new row is checked before any is written."""
        updated = [_checked(dataclasses.replace(row, **change)) for row, change in changes]
        for row in updated:
            self._put(row)
        return updated

    def _fire_row(self, job_id: str, scheduled_for: datetime | None, attempt: int) -> StoredRun | None:
        if scheduled_for is None:
            return None
        run_id = self._fire_keys.get((job_id, _utc(scheduled_for), attempt))
        return None if run_id is None else self.runs[run_id]

    def _paused(self, job_id: str) -> bool:
        state = self.job_state.get(job_id)
        return bool(state and state["paused"])

    def _running(self) -> list[StoredRun]:
        return [row for row in self.runs.values() if row.status == "running"]

    def _by_ids(self, run_ids: Sequence[int]) -> list[StoredRun]:
        """The rows of ``WHERE r.id = f.id`` over an unnest: each row once, by id."""
        return [self.runs[run_id] for run_id in sorted(set(run_ids)) if run_id in self.runs]

    # -- claims -----------------------------------------------------------------

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def dedicated_connection(self) -> MemoryConnection:
        connection = MemoryConnection(self)
        self.connections.append(connection)
        return connection

    @_recorded
    async def claim_run(self, claim: Claim, *, via: Any = None) -> Run | None:
        if not claim.ignore_pause and self._paused(claim.job_id):
            return None
        row = self._insert(**self._claimed(claim))
        return row.out() if row else None

    def _claimed(self, claim: Claim) -> dict[str, Any]:
        return dict(
            job_id=claim.job_id,
            trigger=claim.trigger,
            status="running",
            scheduled_for=_utc(claim.scheduled_for),
            attempt=claim.attempt,
            exclusive=claim.exclusive,
            started_at=_utc_or_none(claim.started_at),
            heartbeat_at=self._now(),
            triggered_by=claim.triggered_by,
            node=claim.node,
            params=_to_jsonb(claim.params),
            overrides=_to_jsonb(claim.overrides),
            reason=claim.reason,
            dry_run=claim.dry_run,
            rerun_of=claim.rerun_of,
        )

    @_recorded
    async def claim_keyed_run(
        self, claim: Claim, key: IdempotencyKey, at: datetime, window: timedelta
    ) -> Run | EarlierRequest | None:
        index = (key.principal, key.job_id, key.key)
        earlier = self.idempotency_keys.get(index)
        if earlier is not None and not earlier[2] <= _utc(at) - window:
            return EarlierRequest(earlier[0], earlier[1])
        run = await self.claim_run(claim)
        if run is not None:  # else the transaction rolls back: the key stays as it was
            self.idempotency_keys[index] = (key.body_sha256, run.id, _utc(at))
        return run

    # -- replays -----------------------------------------------------------------

    def _covered(self, job_id: str, fire: datetime) -> bool:
        """A fire that succeeded, or whose replay runs or succeeded: nothing to replay."""
        return any(
            row.job_id == job_id
            and row.scheduled_for == fire
            and row.trigger != "manual"
            and (row.success or (row.status == "running" and row.trigger != "replay") or row.replay_key is not None)
            for row in self.runs.values()
        )

    @_recorded
    async def replayable_fires(self, job_id: str, since: datetime, until: datetime, limit: int) -> list[datetime]:
        since, until = _utc(since), _utc(until)
        fires = {
            row.scheduled_for
            for row in self.runs.values()
            if row.job_id == job_id and row.trigger not in _UNKEYED and since <= row.scheduled_for <= until
        }
        return _limited(sorted(fire for fire in fires if not self._covered(job_id, fire)), limit)

    @_recorded
    async def claim_replay(self, claim: Claim) -> Run | None:
        fire = _utc(claim.scheduled_for)
        if any(
            row.job_id == claim.job_id and row.scheduled_for == fire and row.trigger not in _UNKEYED and row.success
            for row in self.runs.values()
        ):
            return None
        row = self._insert(**{**self._claimed(claim), "trigger": "replay", "attempt": 1, "rerun_of": None})
        return row.out() if row else None

    @_recorded
    async def replay_blockers(self, job_id: str, fire: datetime) -> tuple[bool, int | None]:
        fire = _utc(fire)
        covered = any(
            row.job_id == job_id
            and row.scheduled_for == fire
            and row.trigger != "manual"
            and (row.success or (row.trigger == "replay" and row.status == "running"))
            for row in self.runs.values()
        )
        return covered, self._holding.get(job_id)

    @_recorded
    async def claim_fires(
        self, fires: Sequence[tuple[str, datetime, bool]], started_at: datetime, node: str
    ) -> list[Run]:
        return self._claim_first_attempts(fires, _utc(started_at), node)

    @_recorded
    async def claim_ahead(self, fires: Sequence[tuple[str, datetime, bool]], node: str) -> list[Run]:
        return self._claim_first_attempts(fires, None, node)

    def _claim_first_attempts(
        self, fires: Sequence[tuple[str, datetime, bool]], started_at: datetime | None, node: str
    ) -> list[Run]:
        _not_empty(fires)
        now = self._now()
        # Inserted in (job_id, scheduled_for) order, so within one statement a job's
        # earlier fire takes its exclusive slot before a later one.
        unpaused = [(job_id, _utc(fire), exclusive) for job_id, fire, exclusive in fires if not self._paused(job_id)]
        won = []
        for job_id, fire, exclusive in sorted(unpaused, key=lambda f: (f[0], f[1])):
            row = self._insert(
                job_id=job_id,
                trigger="schedule",
                status="running",
                scheduled_for=fire,
                attempt=1,
                exclusive=exclusive,
                started_at=started_at,
                heartbeat_at=now,
                node=node,
            )
            if row is not None:
                won.append(row.out())
        return won

    @_recorded
    async def mark_started(self, started: Sequence[tuple[int, datetime]]) -> None:
        _not_empty(started)
        at = dict(reversed(started))  # the first time given for a run
        rows = self._by_ids([run_id for run_id, _ in started])
        self._update([(row, {"started_at": _utc(at[row.id])}) for row in rows if row.started_at is None])

    @_recorded
    async def taken_fires(self, fires: Sequence[tuple[str, datetime]]) -> set[tuple[str, datetime]]:
        _not_empty(fires)
        taken = set()
        for job_id, fire in fires:
            row = self._fire_row(job_id, fire, 1)
            if row is not None:
                taken.add((row.job_id, row.scheduled_for))
        return taken

    @_recorded
    async def claim_blockers(self, job_id: str, scheduled_for: datetime | None, attempt: int) -> ClaimBlockers:
        fire = self._fire_row(job_id, scheduled_for, attempt)
        running_id = self._holding.get(job_id)
        silent_s = None
        if running_id is not None and (heartbeat := self.runs[running_id].heartbeat_at) is not None:
            silent_s = (self._now() - heartbeat).total_seconds()
        return ClaimBlockers(fire.id if fire else None, self._paused(job_id), running_id, silent_s)

    @_recorded
    async def running_run_of_job(self, job_id: str) -> Run | None:
        run_id = self._holding.get(job_id)
        return None if run_id is None else self.runs[run_id].out()

    @_recorded
    async def record_unrun_fire(
        self,
        job_id: str,
        trigger: str,
        status: str,
        scheduled_for: datetime,
        attempt: int,
        at: datetime,
        reason: str,
        node: str,
    ) -> Run | None:
        row = self._insert(
            job_id=job_id,
            trigger=trigger,
            status=status,
            scheduled_for=_utc(scheduled_for),
            attempt=attempt,
            exclusive=False,
            finished_at=_utc_or_none(at),
            error=reason,
            node=node,
        )
        return row.out() if row else None

    @_recorded
    async def record_missed_fires(
        self, fires: Sequence[tuple[str, datetime, str]], at: datetime, node: str
    ) -> list[Run]:
        _not_empty(fires)
        recorded = []
        for job_id, scheduled_for, reason in fires:
            row = self._insert(
                job_id=job_id, trigger="schedule", status="missed", scheduled_for=_utc(scheduled_for), attempt=1,
                exclusive=False, finished_at=_utc_or_none(at), error=reason, node=node,
            )  # fmt: skip
            if row:
                recorded.append(row.out())
        return recorded

    # -- outcomes -----------------------------------------------------------------

    @_recorded
    async def finish_run(self, run_id: int, status: str, at: datetime, result: Any, error: str | None) -> Run | None:
        row = self.runs.get(run_id)
        if row is None or row.status != "running":
            return None
        change = {"status": status, "finished_at": _utc_or_none(at), "result": _to_jsonb(result), "error": error}
        [updated] = self._update([(row, change)])
        return updated.out()

    @_recorded
    async def finish_runs(
        self, outcomes: Sequence[tuple[int, str, datetime, Any, str | None, datetime | None, dict[str, Any] | None]]
    ) -> list[Run]:
        _not_empty(outcomes)
        given = {outcome[0]: outcome for outcome in reversed(outcomes)}  # the first outcome given for a run
        changes = []
        for row in self._by_ids([outcome[0] for outcome in outcomes]):
            _, status, at, result, error, started_at, params = given[row.id]
            result_json = _to_jsonb(result)
            params_json = row.params if row.params is not None else _to_jsonb(params)
            if row.status == "running":
                started = row.started_at or _utc_or_none(started_at)
                change = {"status": status, "finished_at": _utc_or_none(at), "result": result_json, "error": error}
                changes.append((row, {**change, "started_at": started, "late_outcome": None, "params": params_json}))
            elif row.status in ("lost", "missed") and row.late_outcome is None:
                late = {
                    "status": status,
                    "finished_at": None if at is None else _utc(at).isoformat(),
                    "error": error,
                    "result": _from_jsonb(result_json),
                }
                changes.append((row, {"late_outcome": _to_jsonb(late), "params": params_json}))
        return [row.out() for row in self._update(changes)]

    @_recorded
    async def set_progress(self, run_id: int, progress: dict[str, Any]) -> bool:
        row = self.runs.get(run_id)
        if row is None or row.status != "running":
            return False
        self._update([(row, {"progress": _to_jsonb(progress)})])
        return True

    # -- leases -----------------------------------------------------------------

    @_recorded
    async def heartbeat(self, run_ids: Sequence[int], *, via: Any = None) -> dict[int, str | None]:
        now = self._now()
        rows = [row for row in self._by_ids(list(run_ids)) if row.status == "running"]
        return {row.id: row.cancel_requested_by for row in self._update([(row, {"heartbeat_at": now}) for row in rows])}

    @_recorded
    async def reap_lost_runs(self, lease: timedelta) -> list[Run]:
        now = self._now()
        changes = []
        for row in self._running():
            if row.heartbeat_at is None or not row.heartbeat_at < now - lease:
                continue
            last = _pg_text(row.heartbeat_at)
            if row.started_at is None:
                error = (
                    f"missed: node {row.node} claimed this fire ahead and stopped heartbeating"
                    f" before it was due (last at {last})"
                )
            else:
                error = f"lost: node {row.node} stopped heartbeating (last at {last})"
            changes.append((row, _reaped(row, now, error)))
        return [row.out() for row in self._update(changes)]

    @_recorded
    async def reap_own_runs(self, run_ids: Sequence[int], reason: str) -> list[Run]:
        now = self._now()
        rows = [row for row in self._by_ids(list(run_ids)) if row.status == "running"]
        changes = [
            (row, _reaped(row, now, ("missed: " if row.started_at is None else "lost: ") + reason)) for row in rows
        ]
        return [row.out() for row in self._update(changes)]

    @_recorded
    async def reap_node_runs(self, node: str) -> list[Run]:
        now = self._now()
        changes = []
        for row in self._running():
            if row.node != node:
                continue
            prefix = "missed: " if row.started_at is None else "lost: "
            last = _pg_text(row.heartbeat_at)
            changes.append((row, _reaped(row, now, f"{prefix}node {node} restarted (last heartbeat at {last})")))
        return [row.out() for row in self._update(changes)]

    @_recorded
    async def request_cancel(self, run_id: int, by: str) -> Run | None:
        row = self.runs.get(run_id)
        if row is None or row.status != "running":
            return None
        [updated] = self._update([(row, {"cancel_requested_by": by})])
        # json_build_object's own spacing, as the listeners receive it.
        self._notify(CANCEL_CHANNEL, f'{{"run_id" : {run_id}, "by" : {json.dumps(by)}}}')
        return updated.out()

    def _notify(self, channel: str, payload: str) -> None:
        """Deliver like NOTIFY: after the statement, on the event loop, to every listener."""
        self.notices.append((channel, payload))
        loop = asyncio.get_running_loop()
        for connection in list(self.connections):
            for callback in connection.listeners.get(channel, []):
                loop.call_soon(callback, connection, 0, channel, payload)

    # -- nodes -----------------------------------------------------------------

    @_recorded
    async def node_heartbeat(self, node: str, lease: timedelta) -> list[str]:
        return self._node_heartbeat(node, lease)

    @_recorded
    async def node_heartbeat_at(self, node: str, lease: timedelta) -> tuple[list[str], datetime]:
        return self._node_heartbeat(node, lease), self._now()

    def _node_heartbeat(self, node: str, lease: timedelta) -> list[str]:
        now = self._now()
        # The SELECT sees the table as it was before the statement's upsert and delete.
        live = {name for name, row in self.nodes.items() if row["heartbeat_at"] > now - lease}
        if node in self.nodes:
            self.nodes[node]["heartbeat_at"] = now
        else:
            self.nodes[node] = {"started_at": now, "heartbeat_at": now}
        for name in [name for name, row in self.nodes.items() if row["heartbeat_at"] < now - _FORGET_NODES_AFTER]:
            if name != node:
                del self.nodes[name]
        return sorted(live | {node})

    @_recorded
    async def node_stopped(self, node: str) -> None:
        self.nodes.pop(node, None)

    # -- reads -----------------------------------------------------------------

    @_recorded
    async def last_successes(self, job_ids: Sequence[str]) -> dict[str, datetime]:
        newest: dict[str, datetime] = {}
        for row in self.runs.values():  # by id: the newest success is written last
            if row.job_id in job_ids and row.success and row.finished_at is not None:
                newest[row.job_id] = row.finished_at
        return newest

    @_recorded
    async def successes_since(
        self, from_id: int, running: Sequence[int] = ()
    ) -> tuple[dict[str, datetime], int, list[int]]:
        newest: dict[str, datetime] = {}
        for row in sorted(self.runs.values(), key=lambda row: row.id):
            if (row.id >= from_id or row.id in running) and row.success and row.finished_at is not None:
                newest[row.job_id] = row.finished_at
        return newest, max(self.runs, default=0) + 1, sorted(row.id for row in self._running())

    @_recorded
    async def runs_to_retry(self, job_ids: Sequence[str], since: datetime) -> list[Run]:
        since = _utc(since)
        return [
            row.out()
            for row in self.runs.values()
            if row.job_id in job_ids
            and row.status in ("failed", "timed_out", "lost")
            and row.finished_at is not None
            and row.finished_at > since
            and not row.dry_run
            and row.trigger != "replay"
            and (row.job_id, row.scheduled_for, row.attempt + 1) not in self._fire_keys
        ]

    @_recorded
    async def get_run(self, run_id: int) -> Run | None:
        row = self.runs.get(run_id)
        return row.out() if row else None

    @_recorded
    async def list_runs(self, *, job_id: str | None, status: str | None, limit: int) -> list[Run]:
        rows = [
            row
            for row in sorted(self.runs.values(), key=lambda row: row.id, reverse=True)
            if (job_id is None or row.job_id == job_id) and (status is None or row.status == status)
        ]
        return [row.out() for row in _limited(rows, limit)]

    @_recorded
    async def last_runs(self, job_ids: Sequence[str]) -> dict[str, Run]:
        newest: dict[str, StoredRun] = {}
        for row in sorted(self.runs.values(), key=lambda row: row.id):
            if row.job_id in job_ids:
                newest[row.job_id] = row
        return {job_id: row.out() for job_id, row in newest.items()}

    @_recorded
    async def last_statuses(self, job_ids: Sequence[str]) -> dict[str, str]:
        newest: dict[str, str] = {}
        for row in sorted(self.runs.values(), key=lambda row: row.id):
            if row.job_id in job_ids and not row.dry_run:
                newest[row.job_id] = row.status
        return newest

    @_recorded
    async def running_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self._running():
            counts[row.job_id] = counts.get(row.job_id, 0) + 1
        return counts

    @_recorded
    async def last_fires(self, job_ids: Sequence[str], before: datetime) -> dict[str, datetime | None]:
        before = _utc(before)
        fires: dict[str, datetime | None] = dict.fromkeys(job_ids)
        for row in self.runs.values():
            if row.job_id in fires and row.trigger in ("schedule", "catch_up") and row.scheduled_for < before:
                last = fires[row.job_id]
                fires[row.job_id] = row.scheduled_for if last is None else max(last, row.scheduled_for)
        return fires

    # -- jobs and audit -----------------------------------------------------------------

    @_recorded
    async def register_jobs(self, job_ids: Sequence[str], at: datetime) -> None:
        for job_id in job_ids:
            if job_id not in self.job_state:
                self.job_state[job_id] = _job_state(job_id, _utc(at))

    @_recorded
    async def job_states(self, job_ids: Sequence[str] | None = None) -> dict[str, Mapping[str, Any]]:
        return {job_id: dict(state) for job_id, state in self.job_state.items() if job_ids is None or job_id in job_ids}

    @_recorded
    async def set_paused(self, job_id: str, paused: bool, at: datetime, by: str, audit: NewAuditEntry) -> None:
        at = _utc(at)
        state = self.job_state.get(job_id) or _job_state(job_id, at)
        entry = self._audit_entry(audit)
        self.job_state[job_id] = {**state, "paused": paused, "changed_at": at, "changed_by": by}
        self.audit.append(entry)

    @_recorded
    async def add_audit(self, audit: NewAuditEntry) -> None:
        self.audit.append(self._audit_entry(audit))

    def _audit_entry(self, audit: NewAuditEntry) -> AuditOut:
        detail = _from_jsonb(_to_jsonb(audit.detail))
        self._audit_ids += 1
        return AuditOut(
            id=self._audit_ids,
            at=_utc(audit.at),
            principal=audit.principal,
            action=audit.action,
            target=audit.target,
            client=audit.client,
            detail=detail,
        )

    @_recorded
    async def list_audit(self, limit: int) -> list[AuditOut]:
        return [entry.model_copy(deep=True) for entry in _limited(list(reversed(self.audit)), limit)]

    @_recorded
    async def ping(self, timeout: float) -> datetime:
        return self._now()

    # -- alerts -----------------------------------------------------------------

    @_recorded
    async def failure_streak(self, job_id: str, run_id: int, finished_at: datetime) -> int:
        upto = (_utc(finished_at), run_id)
        ended = [
            (row.finished_at, row.id, row.status)
            for row in self.runs.values()
            if row.job_id == job_id
            and row.finished_at is not None
            and (row.finished_at, row.id) <= upto
            and not row.dry_run
        ]
        successes = [(at, id_) for at, id_, status in ended if status == "succeeded"]
        last_success = max(successes, default=None)
        return sum(
            1
            for at, id_, status in ended
            if status in ("failed", "timed_out", "lost", "cancelled")
            and (last_success is None or not (at, id_) <= last_success)
        )

    @_recorded
    async def claim_run_alert(self, job_id: str, run_id: int, at: datetime, node: str, min_interval: timedelta) -> bool:
        at = _utc(at)
        sent = self.alert_state.get((job_id, "run"))
        if sent is not None and (sent.run_id == run_id or not sent.last_sent_at <= at - min_interval):
            return False
        self.alert_state[(job_id, "run")] = StoredAlert(last_sent_at=at, node=node, run_id=run_id)
        return True

    @_recorded
    async def claim_overdue_alert(self, job_id: str, at: datetime, node: str) -> bool:
        successes = [
            row.finished_at
            for row in self.runs.values()
            if row.job_id == job_id and row.success and row.finished_at is not None
        ]
        after_success = max(successes, default=None)
        sent = self.alert_state.get((job_id, "overdue"))
        if sent is not None and sent.after_success == after_success:
            return False
        self.alert_state[(job_id, "overdue")] = StoredAlert(
            last_sent_at=_utc(at), node=node, after_success=after_success
        )
        return True

    # -- run logs -----------------------------------------------------------------

    @_recorded
    async def write_runs_logs(self, batches: Sequence[tuple[int, LogBatch]]) -> None:
        # One transaction: every row is checked before any is written.
        for run_id, batch in batches:
            if (batch.lines or batch.marker() is not None) and run_id not in self.runs:
                raise asyncpg.exceptions.ForeignKeyViolationError(
                    f'insert or update on table "run_logs" violates foreign key constraint: no run {run_id}'
                )
            if any(line.seq < 1 for line in batch.lines):
                raise asyncpg.exceptions.CheckViolationError('new row for relation "run_logs" violates seq >= 1')
        for run_id, batch in batches:
            lines = self.run_logs.setdefault(run_id, {})
            for line in batch.lines:
                lines.setdefault(
                    line.seq, StoredLogLine(_utc(line.at), line.level, line.event, _jsonb_text(line.fields_json))
                )
        for run_id, batch in batches:
            if (marker := batch.marker()) is None:
                continue
            assert batch.gap_after is not None
            lines = self.run_logs.setdefault(run_id, {})
            if batch.keep_from is not None:
                for seq in [seq for seq in lines if batch.gap_after + 1 < seq < batch.keep_from]:
                    del lines[seq]
            fields = _jsonb_text(json.dumps(marker.fields, default=str))
            lines[batch.gap_after + 1] = StoredLogLine(_utc(marker.at), "warning", marker.event, fields)
            self._update([(self.runs[run_id], {"log_lines_dropped": batch.dropped})])

    @_recorded
    async def run_log_lines_dropped(self, run_id: int) -> int | None:
        row = self.runs.get(run_id)
        return None if row is None else row.log_lines_dropped

    @_recorded
    async def run_log_lines(self, run_id: int, after_seq: int, limit: int) -> list[RunLogLine]:
        lines = sorted((seq, line) for seq, line in self.run_logs.get(run_id, {}).items() if seq > after_seq)
        return [
            RunLogLine(seq=seq, at=line.at, level=line.level, event=line.event, fields=json.loads(line.fields))
            for seq, line in _limited(lines, limit)
        ]


# -- values as PostgreSQL stores them ---------------------------------------------


def _utc(at: datetime) -> datetime:
    """A timestamptz as asyncpg sends it (a naive time is local) and reads it back (UTC)."""
    return at.astimezone(UTC)


def _utc_or_none(at: datetime | None) -> datetime | None:
    return None if at is None else _utc(at)


def _to_jsonb(value: Any) -> str | None:
    """A value through the pool's jsonb codec (``json.dumps(default=str)``); None is NULL."""
    if value is None:
        return None
    return _jsonb_text(json.dumps(value, default=str))


def _jsonb_text(text: str) -> str:
    """JSON text as jsonb takes it: no NaN or infinity, no NUL."""
    try:
        json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise asyncpg.exceptions.InvalidTextRepresentationError(f"invalid input syntax for type json: {exc}") from exc
    if "\\u0000" in text:
        raise asyncpg.exceptions.UntranslatableCharacterError("unsupported Unicode escape sequence")
    return text


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _from_jsonb(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _pg_text(at: datetime | None) -> str:
    """A timestamptz cast to text in the pool's UTC session: ``2026-05-01 00:00:00.5+00``."""
    if at is None:
        return ""
    at = _utc(at)
    text = at.strftime("%Y-%m-%d %H:%M:%S")
    if at.microsecond:
        text += f".{at.microsecond:06d}".rstrip("0")
    return text + "+00"


def _checked(row: StoredRun) -> StoredRun:
    """The CHECK constraints of ``maintd.runs``."""
    valid = (
        row.trigger in _TRIGGERS
        and row.status in _STATUSES
        and row.attempt >= 1
        and (row.status == "running") == (row.finished_at is None)
    )
    if not valid:
        raise asyncpg.exceptions.CheckViolationError(f'new row for relation "runs" violates a check constraint: {row}')
    return row


def _reaped(row: StoredRun, now: datetime, error: str) -> dict[str, Any]:
    return {"status": "missed" if row.started_at is None else "lost", "finished_at": now, "error": error}


def _job_state(job_id: str, first_seen: datetime) -> dict[str, Any]:
    return {"job_id": job_id, "paused": False, "first_seen": first_seen, "changed_at": None, "changed_by": None}


def _limited(rows: list[Any], limit: int | None) -> list[Any]:
    """``LIMIT $n``: NULL is no limit, a negative one an error."""
    if limit is None:
        return rows
    if limit < 0:
        raise asyncpg.exceptions.InvalidRowCountInLimitClauseError("LIMIT must not be negative")
    return rows[:limit]


def _not_empty(batch: Sequence[Any]) -> None:
    """RunStore's batch calls unzip their argument into columns: an empty one raises."""
    if not batch:
        raise ValueError("not enough values to unpack (expected columns, got 0)")
