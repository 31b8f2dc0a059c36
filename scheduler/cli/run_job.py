"""``maintd run-job JOB``: one run of a job in this process, without the daemon.

The run is claimed and recorded in the daemon's database like a manual trigger
(``triggered_by = run-job:<os user>``, ``node`` this process), so the run history,
the overlap rule and the replicas' reaper all see it. Progress and exit status
are those of ``maintd trigger --wait``; Ctrl-C (or SIGTERM) cancels the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import signal
import socket
from datetime import timedelta
from typing import TextIO

from maintd.admin_api.interface import Actor, AdminError, RunEnded, RunOut, TriggerOut
from maintd.scheduler.cli.exit_codes import EX_FAILED, EX_UNAVAILABLE
from maintd.scheduler.cli.live import LiveLine, report_end
from maintd.scheduler.config.model import Config
from maintd.scheduler.engine import Engine
from maintd.scheduler.store.database import DatabaseUnavailable, open_store
from maintd.scheduler.store.run_store import RunStore

POLL_S = 0.5


def one_off_engine(config: Config, store: RunStore, node: str | None = None) -> Engine:
    """An engine for :meth:`Engine.run_once`: never started, and claiming no fires ahead,
    so the replicas do not count this short-lived process as one of them. Its node is this
    process (host:pid), never the configured one: a daemon restarted under that name ends
    what its previous process left running, and this run is not that."""
    return Engine(config, store, node=node or f"{socket.gethostname()}:{os.getpid()}", claim_ahead=timedelta(0))


def run_job_actor() -> Actor:
    """The principal recorded on the run and in the audit log: ``run-job:<os user>``."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no passwd entry (some containers)
        user = f"uid{os.getuid()}"
    return Actor(name=f"run-job:{user}", role="operator", client=socket.gethostname())


async def run_job(config: Config, job_id: str, *, line: LiveLine, out: TextIO, as_json: bool = False) -> int:
    """Open the database like the daemon does (migrations included), run the job once, report it."""
    try:
        async with open_store(config) as store:
            return await follow_run_once(
                one_off_engine(config, store), job_id, run_job_actor(), line=line, out=out, as_json=as_json
            )
    except DatabaseUnavailable as exc:
        line.clear()
        line.stream.write(f"maintd run-job: {exc}\n")
        return EX_UNAVAILABLE


async def follow_run_once(
    engine: Engine, job_id: str, actor: Actor, *, line: LiveLine, out: TextIO, as_json: bool = False
) -> int:
    """Run the job on ``engine`` showing its progress on ``line``; return the exit status."""
    loop = asyncio.get_running_loop()
    run_id: int | None = None
    stopped_by: int | None = None  # the signal that asked the run to stop
    cancels: list[asyncio.Task[None]] = []

    async def cancel(run: int) -> None:
        with contextlib.suppress(RunEnded):  # it ended first: nothing to cancel
            await engine.admin.cancel_run(run, actor)

    def started(trigger: TriggerOut) -> None:
        nonlocal run_id
        run_id = trigger.run_id
        if stopped_by is not None:
            cancels.append(loop.create_task(cancel(run_id)))

    def stop(signum: int) -> None:
        nonlocal stopped_by
        if stopped_by is not None:
            return
        stopped_by = signum
        if run_id is not None:
            line.print_above(f"{signal.Signals(signum).name}: cancelling run {run_id}\n")
            cancels.append(loop.create_task(cancel(run_id)))

    signals = [signal.SIGINT, signal.SIGTERM]
    for signum in signals:
        loop.add_signal_handler(signum, stop, signum)
    running = loop.create_task(engine.run_once(job_id, actor, on_started=started))
    began = loop.time()
    try:
        while not running.done():
            await asyncio.wait({running}, timeout=POLL_S)
            if run_id is not None and not running.done() and not as_json:
                with contextlib.suppress(Exception):  # progress is a nicety; the run goes on
                    run = await engine.admin.get_run(run_id)
                    line.update(run.model_dump(mode="json"), loop.time() - began)
        ended: RunOut = running.result()
    except AdminError as exc:  # no such job, or a run in progress and overlap forbidden
        line.clear()
        line.stream.write(f"maintd run-job: {exc}\n")
        return 128 + stopped_by if stopped_by else EX_FAILED
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        await asyncio.gather(*cancels, return_exceptions=True)
        line.clear()
    status = report_end(ended.model_dump(mode="json"), as_json=as_json, out=out, err=line.stream)
    return 128 + stopped_by if stopped_by else status
