"""Per-run logs: what a run logs, captured from the logging pipeline and kept with the run.

:data:`RUN_LOGS` is a structlog processor (installed by
:func:`scheduler.logs.configure_logging`) that copies every event naming a run
this process is running (``run_id`` bound by the engine, through any logger,
stdlib ones included) into that run's :class:`RunLogBuffer`. The engine opens a
buffer when a run starts and writes it to ``maintd.run_logs`` while the run
runs and when it ends.

A buffer keeps a bounded head and tail of the run's lines: the first lines say
what the run set out to do, the last ones why it failed; the middle of a chatty
run is dropped, counted, and marked by one ``log_lines_dropped`` line where the
gap is. Line numbers (``seq``) are those of the whole log, so the gap shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

import orjson
import structlog

from maintd.scheduler import json_text

# Per run, at most this much is kept: enough for a batch job's story, small enough
# that a run stuck in a logging loop costs well under 1 MB of memory and 1,001 rows.
# Typical runs log a few lines (~1 KB): 90 days of a job firing every minute ~ 130 MB.
MAX_LINES = 1000
MAX_BYTES = 256 * 1024
# The head is kept whole; everything else is the tail, which keeps the newest lines.
HEAD_LINES = 100
HEAD_BYTES = 32 * 1024
# One line (its JSON) is at most about this big: a long value (a traceback, a big
# result) is cut, keeping both ends, so that one event cannot take the whole budget.
MAX_LINE_BYTES = 16 * 1024
MAX_VALUE_CHARS = 8 * 1024
# Nesting kept as JSON before the rest is shown as repr().
MAX_DEPTH = 8
DROPPED_EVENT = "log_lines_dropped"
# Lines of plain values are converted when read, or when this many wait (see RunLogBuffer.append).
_DEFERRED_MAX = 64

_log = structlog.get_logger("maintd.run_logs")

# Keys that are not fields of a line: its own columns, the run's identity (on the
# run object already), and structlog's stdlib plumbing.
_NOT_FIELDS = frozenset(
    {"event", "level", "timestamp", "job_id", "run_id", "node", "exc_info", "stack_info", "_record", "_from_structlog"}
)


class LogLine(NamedTuple):
    """One captured event, JSON-safe."""

    seq: int
    at: datetime
    level: str
    event: str
    fields_json: str  # its fields as JSON text, rendered once at capture and written as is
    size: int  # bytes of its JSON, what the byte bounds count

    @property
    def fields(self) -> dict[str, Any]:
        return json.loads(self.fields_json)


@dataclass(frozen=True)
class LogBatch:
    """What one flush writes: new lines, and the gap of dropped lines so far.

    Rows with ``gap_after < seq < keep_from`` are deleted (lines written earlier
    and dropped since), and the marker line at ``gap_after + 1`` says ``dropped``.
    """

    lines: list[LogLine]
    dropped: int = 0
    gap_after: int | None = None
    keep_from: int | None = None
    gap_at: datetime | None = None  # when the first dropped line was logged

    def marker(self) -> LogLine | None:
        """The line standing for the dropped ones, at the start of the gap."""
        if self.gap_after is None or self.gap_at is None:
            return None
        fields = {"dropped": self.dropped, "kept": f"the first {self.gap_after} lines and the newest ones"}
        return LogLine(self.gap_after + 1, self.gap_at, "warning", DROPPED_EVENT, json.dumps(fields), 0)

    def __bool__(self) -> bool:
        return bool(self.lines) or self.gap_after is not None


# Writes the batches of several runs at once (one transaction for a burst of runs).
ManyWriter = Callable[[list[tuple[int, LogBatch]]], Awaitable[None]]


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON: containers and scalars as they are, times in ISO 8601, the rest as repr()."""
    if isinstance(value, str):
        return storable(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        # PostgreSQL's jsonb (and strict JSON) has no NaN or infinity.
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if depth < MAX_DEPTH:
        if isinstance(value, Mapping):
            return {storable(str(k)): json_safe(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [json_safe(v, depth + 1) for v in value]
    return _repr(value)


def storable(text: str) -> str:
    """``text`` as PostgreSQL stores it: text and jsonb take neither NUL nor lone surrogates."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode(errors="backslashreplace").decode()
    return text


def _repr(value: Any) -> str:
    try:
        return storable(repr(value))
    except Exception as exc:  # a broken __repr__ must not break logging
        return f"<unrepresentable {type(value).__name__}: {exc!r}>"


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        # Keep both ends: a traceback's end holds the exception.
        half = MAX_VALUE_CHARS // 2
        return f"{value[:half]}\n[... {len(value) - MAX_VALUE_CHARS} characters cut ...]\n{value[-half:]}"
    return value


def line_from_event(seq: int, event_dict: Mapping[str, Any]) -> LogLine:
    """A captured line of a structlog event dict (after the shared processors ran)."""
    fields = {key: value for key, value in event_dict.items() if key not in _NOT_FIELDS}
    careful = event_dict.get("exc_info") or event_dict.get("stack_info")
    fields_json = None if careful else _plain_json(fields)
    if fields_json is None:
        fields = {key: _cut(json_safe(value)) for key, value in fields.items()}
        if event_dict.get("exc_info"):
            # Rendered now: the exception is only known while the event is being logged.
            rendered = structlog.processors.format_exc_info(None, "", {"exc_info": event_dict["exc_info"]})
            if "exception" in rendered:
                fields["exception"] = _cut(storable(rendered["exception"]))
        if event_dict.get("stack_info"):
            fields["stack"] = _cut(storable(str(event_dict["stack_info"])))
        fields_json = json_text.dumps(fields)
        if len(fields_json) > MAX_LINE_BYTES:
            fields_json = json.dumps({"fields_cut": _cut(fields_json)})
    event = _cut(storable(str(event_dict.get("event", ""))))
    level = storable(str(event_dict.get("level", "info")))
    size = len(fields_json.encode()) + len(event.encode()) + 64  # + seq, time, level
    return LogLine(seq, _timestamp(event_dict.get("timestamp")), level, event, fields_json, size)


# Field values taken as they are (most lines hold only these); anything else is made
# JSON-safe value by value.
_PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})


def _plain_event(event_dict: Mapping[str, Any]) -> bool:
    """Only plain scalar values (nothing that can change after the call), and no
    exception or stack to render while it is being logged."""
    return (
        not event_dict.get("exc_info")
        and not event_dict.get("stack_info")
        and all(type(value) in _PLAIN_TYPES for value in event_dict.values())
    )


def _plain_json(fields: dict[str, Any]) -> str | None:
    """The fields as JSON when every value is a short plain scalar, in one orjson call
    (1 us where the careful walk takes 5, and a burst of 1,000 runs captures 2,000
    lines); None when the fields need the careful walk."""
    if not all(type(value) in _PLAIN_TYPES for value in fields.values()):
        return None
    # orjson writes NaN and infinity as null; the careful walk keeps them readable.
    if not all(math.isfinite(value) for value in fields.values() if type(value) is float):
        return None
    try:
        raw = orjson.dumps(fields)
    except TypeError:  # a lone surrogate, an integer beyond 64 bits
        return None
    # A value that long may need cutting, and PostgreSQL's jsonb refuses NUL.
    if len(raw) > MAX_VALUE_CHARS or b"\\u0000" in raw:
        return None
    return raw.decode()


def _timestamp(value: Any) -> datetime:
    # The one TimeStamper put on the event, so the journal and the run's log agree.
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)


class RunLogBuffer:
    """The lines of one run not yet written, and which of its lines are kept."""

    def __init__(
        self,
        run_id: int,
        job_id: str,
        *,
        max_lines: int = MAX_LINES,
        max_bytes: int = MAX_BYTES,
        head_lines: int = HEAD_LINES,
        head_bytes: int = HEAD_BYTES,
    ) -> None:
        self.run_id = run_id
        self.job_id = job_id
        self._tail_lines = max_lines - head_lines
        self._tail_bytes = max_bytes - head_bytes
        self._head_lines, self._head_bytes = head_lines, head_bytes
        self._head_used = [0, 0]  # lines, bytes
        self._head_last = 0  # seq of the last head line; the head is closed once a line does not fit
        self._head_closed = False
        self._tail: deque[tuple[int, int, datetime]] = deque()  # (seq, size, at) of the kept tail lines
        self._tail_used = 0
        self._pending: dict[int, LogLine] = {}
        # Lines logged but not converted yet: (seq, the event dict), see append().
        self._deferred: list[tuple[int, dict[str, Any]]] = []
        self._next_seq = 1
        self.dropped = 0
        self._gap_at: datetime | None = None
        self._dropped_written = 0
        # Logging can come from a job's worker threads.
        self._lock = threading.Lock()
        # Held while a batch of this buffer is being written (RunLogCapture.flush).
        self._writing = asyncio.Lock()

    def append(self, event_dict: Mapping[str, Any]) -> None:
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
            if _plain_event(event_dict):
                # Converted when the buffer is read: a run's start logs one such line, and
                # a burst of 1,000 starts should not wait on 1,000 conversions. Plain values
                # cannot change meanwhile; a run logging in a loop is converted every so often.
                self._deferred.append((seq, dict(event_dict)))
                if len(self._deferred) >= _DEFERRED_MAX:
                    self._convert_deferred()
            else:
                self._convert_deferred()
                self._keep(line_from_event(seq, event_dict))

    def _convert_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        for seq, event_dict in deferred:
            self._keep(line_from_event(seq, event_dict))

    def _keep(self, line: LogLine) -> None:
        """Count a new line into the head or the tail, dropping the tail's oldest past its bounds."""
        if not self._head_closed and (
            self._head_used[0] < self._head_lines and self._head_used[1] + line.size <= self._head_bytes
        ):
            self._head_used[0] += 1
            self._head_used[1] += line.size
            self._head_last = line.seq
        else:
            self._head_closed = True
            self._tail.append((line.seq, line.size, line.at))
            self._tail_used += line.size
            while len(self._tail) > self._tail_lines or self._tail_used > self._tail_bytes:
                seq, size, at = self._tail.popleft()
                self._gap_at = self._gap_at or at
                self._tail_used -= size
                self._pending.pop(seq, None)
                self.dropped += 1
        if line.seq <= self._head_last or (self._tail and line.seq >= self._tail[0][0]):
            self._pending[line.seq] = line

    def take(self) -> LogBatch:
        """What is to be written now: the lines not written yet, and the gap if it grew."""
        with self._lock:
            self._convert_deferred()
            lines = list(self._pending.values())
            self._pending.clear()
            if self.dropped == self._dropped_written:
                return LogBatch(lines)
            keep_from = self._tail[0][0] if self._tail else self._next_seq
            return LogBatch(lines, self.dropped, self._head_last, keep_from, self._gap_at)

    def written(self, batch: LogBatch) -> None:
        with self._lock:
            self._dropped_written = max(self._dropped_written, batch.dropped)

    def restore(self, batch: LogBatch) -> None:
        """Give back a batch that could not be written, less the lines dropped meanwhile."""
        with self._lock:
            self._convert_deferred()
            keep_from = self._tail[0][0] if self._tail else self._next_seq
            kept = {line.seq: line for line in batch.lines if line.seq <= self._head_last or line.seq >= keep_from}
            self._pending = dict(sorted({**kept, **self._pending}.items()))


class RunLogCapture:
    """The structlog processor feeding the buffers of the runs in progress in this process."""

    def __init__(self) -> None:
        self._buffers: dict[int, RunLogBuffer] = {}

    def open(self, run_id: int, job_id: str, **bounds: int) -> RunLogBuffer:
        """Start keeping a run's lines (``bounds``: RunLogBuffer's, for tests)."""
        buffer = self._buffers[run_id] = RunLogBuffer(run_id, job_id, **bounds)
        return buffer

    def get(self, run_id: int) -> RunLogBuffer | None:
        return self._buffers.get(run_id)

    def close(self, run_id: int) -> RunLogBuffer | None:
        return self._buffers.pop(run_id, None)

    async def flush(
        self,
        run_ids: Iterable[int],
        write: ManyWriter,
        *,
        close: bool = False,
        failed: Callable[..., None] | None = None,
    ) -> None:
        """Write the buffers of ``run_ids`` (those of runs in progress on the caller's engine)
        with one call of ``write``.

        ``close``: the runs have ended and been recorded; their buffers go, written or not.
        A failed write is logged (through ``failed``, an event logger, where given), never
        raised: logs must not stop a run or a heartbeat."""
        buffers = sorted(
            (buffer for run_id in set(run_ids) if (buffer := self._buffers.get(run_id)) is not None),
            key=lambda buffer: buffer.run_id,
        )
        async with contextlib.AsyncExitStack() as writing:
            # One write at a time per buffer (a later batch's gap must not be overwritten by
            # an earlier one's), taken in run order.
            for buffer in buffers:
                await writing.enter_async_context(buffer._writing)
            batches = [(buffer, batch) for buffer in buffers if (batch := buffer.take())]
            if batches:
                try:
                    await write([(buffer.run_id, batch) for buffer, batch in batches])
                except Exception as exc:
                    for buffer, batch in batches:
                        buffer.restore(batch)
                    # runs=, not run_id=: this is about the daemon's writing, not something a run did.
                    (failed or _log.warning)(
                        "run_logs_not_written", runs=[b.run_id for b, _ in batches], error=repr(exc), closed=close
                    )
                else:
                    for buffer, batch in batches:
                        buffer.written(batch)
        if close:
            for buffer in buffers:
                self.close(buffer.run_id)

    def __call__(self, logger: Any, method_name: str, event_dict: structlog.typing.EventDict) -> Any:
        run_id = event_dict.get("run_id")
        buffer = self._buffers.get(run_id) if isinstance(run_id, int) else None
        # job_id too: run ids are per database, and tests run engines on several at once.
        if buffer is None or event_dict.get("job_id", buffer.job_id) != buffer.job_id:
            return event_dict
        # Events routed through the stdlib reach this before its level filter does; keep
        # what the journal gets. (structlog's own loggers filter by level before this.)
        if isinstance(logger, logging.Logger):
            level = logging.getLevelName(str(event_dict.get("level", method_name)).upper())
            if isinstance(level, int) and not logger.isEnabledFor(level):
                return event_dict
        try:
            buffer.append(event_dict)
        except Exception:  # capturing must never break the logging call of a job
            pass
        return event_dict


RUN_LOGS = RunLogCapture()
