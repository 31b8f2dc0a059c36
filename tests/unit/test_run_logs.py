"""Per-run log capture: the bounded head and tail, JSON-safe lines, and what is (not) captured."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import structlog

from maintd.scheduler.logs import configure_logging
from maintd.scheduler.run_logs import (
    DROPPED_EVENT,
    HEAD_BYTES,
    HEAD_LINES,
    MAX_BYTES,
    MAX_LINE_BYTES,
    MAX_LINES,
    MAX_VALUE_CHARS,
    RUN_LOGS,
    LogBatch,
    LogLine,
    RunLogBuffer,
    RunLogCapture,
    json_safe,
    line_from_event,
)

pytestmark = pytest.mark.unit

AT = "2026-05-04T03:00:00.123456Z"


def event(name: str = "batch_deleted", **fields: Any) -> dict[str, Any]:
    return {"event": name, "level": "info", "timestamp": AT, "job_id": "cleanup", "run_id": 7, **fields}


class Table:
    """``maintd.run_logs`` of one run, changed the way the SQL of ``RunStore.write_runs_logs`` changes it."""

    def __init__(self) -> None:
        self.rows: dict[int, LogLine] = {}
        self.dropped = 0

    async def write(self, batches: list[tuple[int, LogBatch]]) -> None:
        for _run_id, batch in batches:
            self._write(batch)

    def _write(self, batch: LogBatch) -> None:
        for line in batch.lines:
            self.rows.setdefault(line.seq, line)
        if (marker := batch.marker()) is not None:
            assert batch.gap_after is not None and batch.keep_from is not None
            for seq in [s for s in self.rows if batch.gap_after + 1 < s < batch.keep_from]:
                del self.rows[seq]
            self.rows[marker.seq] = marker
            self.dropped = batch.dropped

    def seqs(self) -> list[int]:
        return sorted(self.rows)


def run_log(**bounds: int) -> tuple[RunLogCapture, RunLogBuffer]:
    """A capture of its own (not the process's RUN_LOGS) with run 7's buffer open."""
    capture = RunLogCapture()
    return capture, capture.open(7, "cleanup", **bounds)


def fill(buffer: RunLogBuffer, count: int, start: int = 1, **fields: Any) -> None:
    for n in range(start, start + count):
        buffer.append(event(n=n, **fields))


class TestBounds:
    def test_the_defaults_leave_room_for_a_tail_bigger_than_the_head(self) -> None:
        # A failing job's last lines are what an admin needs most.
        assert MAX_LINES - HEAD_LINES > HEAD_LINES and MAX_BYTES - HEAD_BYTES > HEAD_BYTES

    async def test_a_short_log_is_kept_whole(self) -> None:
        (capture, buffer), table = run_log(), Table()
        fill(buffer, 30)
        await capture.flush([7], table.write)
        assert table.seqs() == list(range(1, 31))
        assert (buffer.dropped, table.dropped) == (0, 0)

    async def test_a_chatty_run_keeps_its_first_and_newest_lines_and_counts_the_rest(self) -> None:
        (capture, buffer), table = run_log(), Table()
        fill(buffer, 10 * MAX_LINES)
        await capture.flush([7], table.write)
        tail = MAX_LINES - HEAD_LINES
        assert len(table.rows) == MAX_LINES + 1  # and the marker
        assert table.seqs() == [*range(1, HEAD_LINES + 2), *range(10 * MAX_LINES - tail + 1, 10 * MAX_LINES + 1)]
        assert buffer.dropped == table.dropped == 10 * MAX_LINES - MAX_LINES
        marker = table.rows[HEAD_LINES + 1]
        assert (marker.event, marker.level, marker.fields["dropped"]) == (DROPPED_EVENT, "warning", 9 * MAX_LINES)
        assert table.rows[10 * MAX_LINES].fields == {"n": 10 * MAX_LINES}

    async def test_the_byte_bound_holds_for_big_lines(self) -> None:
        (capture, buffer), table = run_log(), Table()
        fill(buffer, 400, blob="x" * 4000)
        await capture.flush([7], table.write)
        kept = [line for line in table.rows.values() if line.event != DROPPED_EVENT]
        assert sum(line.size for line in kept) <= MAX_BYTES
        assert len(kept) < 400 and table.dropped == 400 - len(kept)
        assert table.rows[max(table.rows)].fields["n"] == 400

    async def test_lines_written_and_dropped_later_are_deleted_and_the_marker_follows_the_count(self) -> None:
        (capture, buffer), table = run_log(max_lines=10, head_lines=3), Table()
        fill(buffer, 8)
        await capture.flush([7], table.write)
        assert table.seqs() == list(range(1, 9))
        fill(buffer, 5, start=9)  # 13 lines: 3 head + 7 tail kept, 4 to 6 dropped
        await capture.flush([7], table.write)
        assert table.seqs() == [1, 2, 3, 4, *range(7, 14)]
        assert table.rows[4].event == DROPPED_EVENT and table.rows[4].fields["dropped"] == 3
        fill(buffer, 2, start=14)
        await capture.flush([7], table.write)
        assert table.seqs() == [1, 2, 3, 4, *range(9, 16)]
        assert table.rows[4].fields["dropped"] == table.dropped == 5

    async def test_the_marker_is_timed_when_the_gap_began(self) -> None:
        (capture, buffer), table = run_log(max_lines=4, head_lines=1), Table()
        for n in range(1, 10):
            buffer.append({**event(n=n), "timestamp": f"2026-05-04T03:00:0{n}Z"})
        await capture.flush([7], table.write)
        assert table.rows[2].at == datetime(2026, 5, 4, 3, 0, 2, tzinfo=UTC)

    async def test_a_failed_write_is_written_by_the_next_flush_less_what_was_dropped_meanwhile(self) -> None:
        (capture, buffer), table = run_log(max_lines=10, head_lines=3), Table()

        async def broken(batches: list[tuple[int, LogBatch]]) -> None:
            fill(buffer, 5, start=9)  # logged while the write is under way
            raise OSError("connection lost")

        fill(buffer, 8)
        await capture.flush([7], broken)  # logged, not raised: logs never stop a run
        await capture.flush([7], table.write)
        assert table.seqs() == [1, 2, 3, 4, *range(7, 14)]
        assert table.dropped == 3

    async def test_nothing_new_writes_nothing(self) -> None:
        (capture, buffer), batches = run_log(max_lines=4, head_lines=1), []

        async def write(written: list[tuple[int, LogBatch]]) -> None:
            batches.extend(written)

        fill(buffer, 9)
        await capture.flush([7], write)
        await capture.flush([7], write)
        assert len(batches) == 1


class TestLines:
    def test_fields_are_json_safe(self) -> None:
        class Thing:
            def __repr__(self) -> str:
                return "<Thing>"

        line = line_from_event(
            1,
            event(
                when=datetime(2026, 5, 4, tzinfo=UTC),
                amount=Decimal("1.5"),
                thing=Thing(),
                tags={"a"},
                ratio=math.nan,
                nested={"k": [1, (2, 3)], 4: None},
                text="nul\x00 and \udc80",
            ),
        )
        assert line.fields == {
            "when": "2026-05-04T00:00:00+00:00",
            "amount": "Decimal('1.5')",
            "thing": "<Thing>",
            "tags": ["a"],
            "ratio": "nan",
            "nested": {"k": [1, [2, 3]], "4": None},
            "text": "nul\\x00 and \\udc80",
        }
        json.dumps(line.fields, allow_nan=False).encode()

    def test_a_broken_repr_does_not_break_the_line(self) -> None:
        class Broken:
            def __repr__(self) -> str:
                raise RuntimeError("no")

        assert json_safe(Broken()).startswith("<unrepresentable Broken")

    def test_the_run_is_not_a_field_and_the_time_is_the_events(self) -> None:
        line = line_from_event(3, event(rows=5))
        assert (line.seq, line.event, line.level, line.fields) == (3, "batch_deleted", "info", {"rows": 5})
        assert line.at == datetime(2026, 5, 4, 3, 0, 0, 123456, tzinfo=UTC)

    def test_lines_of_plain_and_of_other_values_keep_their_order_and_values(self) -> None:
        # Lines of plain values are converted when read (RunLogBuffer.append); others at once,
        # so a value changed after the call is kept as it was when logged.
        buffer = RunLogBuffer(7, "cleanup")
        rows = [1]
        buffer.append(event("plain", rows=5, table="sessions"))
        buffer.append(event("mutable", rows=rows))
        rows.append(2)
        buffer.append(event("plain_again", done=True))
        batch = buffer.take()
        assert [(line.seq, line.event, line.fields) for line in batch.lines] == [
            (1, "plain", {"rows": 5, "table": "sessions"}),
            (2, "mutable", {"rows": [1]}),
            (3, "plain_again", {"done": True}),
        ]
        assert buffer.take().lines == []

    def test_a_long_value_keeps_both_ends_and_a_huge_line_is_cut(self) -> None:
        line = line_from_event(1, event(error="start " + "x" * 50_000 + " RuntimeError: boom"))
        assert line.fields["error"].startswith("start ") and line.fields["error"].endswith("RuntimeError: boom")
        assert "characters cut" in line.fields["error"] and len(line.fields["error"]) < MAX_VALUE_CHARS + 100
        huge = line_from_event(1, event(**{f"f{n}": "y" * 4000 for n in range(50)}))
        assert huge.size <= MAX_LINE_BYTES and list(huge.fields) == ["fields_cut"]


@pytest.fixture
def journal() -> Iterator[io.StringIO]:
    """The daemon's logging setup writing to a string; the session's setup is put back after."""
    saved, root = structlog.get_config(), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(stream=stream, json=True)
    yield stream
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def buffer() -> Iterator[RunLogBuffer]:
    opened = RUN_LOGS.open(7, "cleanup")
    yield opened
    RUN_LOGS.close(7)


def captured(buffer: RunLogBuffer) -> list[LogLine]:
    """The lines the buffer would write next."""
    return buffer.take().lines


class TestCapture:
    async def test_events_bound_to_the_run_are_captured_through_any_logger(
        self, journal: io.StringIO, buffer: RunLogBuffer
    ) -> None:
        with structlog.contextvars.bound_contextvars(job_id="cleanup", run_id=7):
            structlog.get_logger("maintd.test").info("batch_deleted", rows=500)
            logging.getLogger("thirdparty.module").warning("retrying %s in %ds", "connect", 2)
            await asyncio.to_thread(logging.getLogger("worker").info, "from a thread")
        lines = captured(buffer)
        assert [(line.level, line.event) for line in lines] == [
            ("info", "batch_deleted"),
            ("warning", "retrying connect in 2s"),
            ("info", "from a thread"),
        ]
        assert lines[0].fields == {"rows": 500, "logger": "maintd.test"}
        assert lines[1].fields == {"logger": "thirdparty.module"}
        # The journal still gets every event.
        assert len(journal.getvalue().splitlines()) == 3

    async def test_a_logger_bound_to_the_run_is_captured_outside_its_context(
        self, journal: io.StringIO, buffer: RunLogBuffer
    ) -> None:
        structlog.get_logger("maintd.run").bind(job_id="cleanup", run_id=7).info("run_started")
        assert [line.event for line in captured(buffer)] == ["run_started"]

    async def test_events_without_the_run_or_of_another_run_are_not_captured(
        self, journal: io.StringIO, buffer: RunLogBuffer
    ) -> None:
        structlog.get_logger("maintd.engine").info("engine_started")
        logging.getLogger("uvicorn.error").info("started")
        structlog.get_logger("maintd.engine").info("fire_skipped", job_id="cleanup", run_id=8)
        # Same run id, another database's run (another job): not this one's.
        structlog.get_logger("maintd.run").info("run_started", job_id="report", run_id=7)
        assert captured(buffer) == []
        assert len(journal.getvalue().splitlines()) == 4

    async def test_events_below_the_daemons_level_are_not_captured(
        self, journal: io.StringIO, buffer: RunLogBuffer
    ) -> None:
        with structlog.contextvars.bound_contextvars(job_id="cleanup", run_id=7):
            structlog.get_logger("maintd.test").debug("noise")
            logging.getLogger("thirdparty").debug("noise")
            structlog.get_logger("maintd.test").info("signal")
        assert [line.event for line in captured(buffer)] == ["signal"]

    async def test_an_exception_is_captured_with_its_traceback(
        self, journal: io.StringIO, buffer: RunLogBuffer
    ) -> None:
        with structlog.contextvars.bound_contextvars(job_id="cleanup", run_id=7):
            try:
                raise ValueError("bad row 42")
            except ValueError:
                structlog.get_logger("maintd.test").exception("row_failed", row=42)
                logging.getLogger("thirdparty").exception("stdlib says")
        lines = captured(buffer)
        assert [(line.level, line.event) for line in lines] == [("error", "row_failed"), ("error", "stdlib says")]
        for line in lines:
            assert "Traceback" in line.fields["exception"] and "ValueError: bad row 42" in line.fields["exception"]

    async def test_a_closed_buffer_captures_nothing_more(self, journal: io.StringIO, buffer: RunLogBuffer) -> None:
        log = structlog.get_logger("maintd.run").bind(job_id="cleanup", run_id=7)
        log.info("before")
        RUN_LOGS.close(7)
        log.info("after")
        assert [line.event for line in captured(buffer)] == ["before"]

    async def test_flush_logs_a_failed_write_and_close_lets_the_buffer_go(
        self, journal: io.StringIO, buffer: RunLogBuffer
    ) -> None:
        async def broken(batches: list[tuple[int, LogBatch]]) -> None:
            raise OSError("database away")

        structlog.get_logger("maintd.run").bind(job_id="cleanup", run_id=7).info("work")
        await RUN_LOGS.flush([7, 99], broken)
        assert RUN_LOGS.get(7) is buffer
        assert "run_logs_not_written" in journal.getvalue()
        await RUN_LOGS.flush([7], broken, close=True)
        assert RUN_LOGS.get(7) is None
