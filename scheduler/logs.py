"""structlog setup: JSON lines for the journal, readable lines on a terminal.

Every event is a stable snake_case name with key-value fields; what a run logs
carries ``job_id`` and ``run_id``, and is also kept with the run
(:mod:`scheduler.run_logs`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from maintd.scheduler import json_text
from maintd.scheduler.run_logs import RUN_LOGS


def configure_logging(
    *, level: str = "info", stream: TextIO | None = None, json: bool | None = None, through_stdlib: bool = False
) -> None:
    """Render structlog's events and the stdlib's records (uvicorn, asyncpg, apscheduler,
    a job's own ``logging``) alike, as lines on one stream.

    structlog's own events are rendered and written directly: through the stdlib they
    cost twice as much (20 against 10 us a line, and a burst of 1,000 runs logs 2,000
    lines: bench/claims.py). ``through_stdlib`` routes them through the stdlib too, for
    tests that read events with pytest's caplog.
    """
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Keeps what a run logs with the run (maintd.run_logs), whichever logger it used.
        RUN_LOGS,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=json_text.dumps)
        if json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    handler = logging.StreamHandler(stream)
    if through_stdlib:
        structlog.configure(
            processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=True,
        )
    else:
        structlog.configure(
            processors=[*shared, structlog.processors.format_exc_info, renderer],
            logger_factory=lambda name="": _LineWriter(handler, name),
            wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
            cache_logger_on_first_use=True,
        )
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    # The Logging HOWTO's "Optimization" switches: no record needs the caller's frame,
    # thread, process or multiprocessing names, and collecting them costs every call
    # (a burst of 1,000 runs logs 2,000 lines: bench/claims.py).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # APScheduler logs every fire at INFO; the daemon logs runs itself.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # httpx logs every request's full URL at INFO, and an alert webhook's URL is often a secret.
    logging.getLogger("httpx").setLevel(logging.WARNING)


class _LineWriter:
    """Where structlog's own events go: the rendered line, onto the stream of the stdlib
    handler and under its lock, so lines of both never interleave."""

    def __init__(self, handler: logging.StreamHandler[TextIO], name: str) -> None:
        self._handler = handler
        self.name = name  # for add_logger_name

    def msg(self, message: str) -> None:
        with self._handler.lock:  # type: ignore[union-attr]  # created with the handler
            self._handler.stream.write(message + "\n")
            self._handler.stream.flush()

    debug = info = warning = warn = error = err = critical = exception = fatal = log = msg
