"""The composition root: the one place that wires config, database, engine and API together."""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from maintd.admin_api import build_routers, install_error_handlers
from maintd.admin_api.auth import Guard, TokenEntry, TokenTable
from maintd.admin_api.auth_failures import AuthFailures
from maintd.admin_api.console.routes import STATIC_PATH, console_router, static_files
from maintd.admin_api.console.sessions import SessionPolicy, Sessions
from maintd.scheduler.config.model import Config
from maintd.scheduler.config.reload import ConfigDiff, Reloader, reload_on_sighup
from maintd.scheduler.engine import Engine
from maintd.scheduler.metrics import Metrics
from maintd.scheduler.store.database import open_store
from maintd.scheduler.systemd import ServiceNotifier

log = structlog.get_logger("maintd.app")


def node_name(config: Config) -> str:
    """The name recorded on runs this process owns: configured, else host:pid."""
    return config.scheduler.node or f"{socket.gethostname()}:{os.getpid()}"


def create_app(config: Config, *, systemd: ServiceNotifier | None = None) -> FastAPI:
    """Build the daemon's ASGI app; its lifespan opens the database and runs the engine.

    ``systemd`` (shared with the server, which says READY and STOPPING) gets the
    engine's status and watchdog pings while the engine runs.
    """
    metrics = Metrics()
    notifier = systemd if systemd is not None else ServiceNotifier.disabled()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_store(config) as store:
            if not config.admin.tokens:
                log.warning("no_admin_tokens", hint="every /admin call answers 401; `maintd token` prints one to add")
            engine = Engine(config, store, node=node_name(config), metrics=metrics)
            await engine.start()
            # Start-up made ~150 objects per job that live as long as the process; keep
            # them out of every later full collection, which would otherwise pause the
            # first burst of fires (measured 37-270 ms with 1,000 jobs, bench/claims.py).
            gc.collect()
            gc.freeze()
            app.state.engine = engine.admin
            app.state.console = engine.console
            notifier.start(summary=engine.status_summary, healthy=lambda: engine.running)

            async def apply(new: Config, diff: ConfigDiff) -> None:
                await engine.apply_config(new, diff)
                tokens.replace(_token_entries(new))
                sessions.policy.ttl = new.admin.session_ttl

            reloader = Reloader(
                config,
                apply=apply,
                audit=store.add_audit,
                clock=engine.clock,
                announce=(notifier.reloading, notifier.reloaded),
            )
            # Until the engine has stopped: a SIGHUP during the drain reloads or is ignored,
            # never the default action (which ends the process mid-drain).
            with reload_on_sighup(reloader):
                try:
                    yield
                finally:
                    await reloader.close()
                    try:
                        await engine.stop(config.scheduler.shutdown_grace)
                    finally:
                        # Stopped after the drain, so STATUS= follows it; pings already
                        # stopped with the scheduler, after STOPPING=1 told systemd.
                        await notifier.stop()

    # /docs is served from the package's own assets (admin_api.api_docs), never a CDN.
    app = FastAPI(
        title="maintd",
        summary="Scheduler daemon for periodic maintenance jobs",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.metrics_registry = metrics.registry
    install_error_handlers(app)
    tokens = TokenTable(_token_entries(config))
    # One throttle for bad API tokens and failed console sign-ins.
    failures = AuthFailures(metrics.auth_failures)
    for router in build_routers(Guard(tokens, failures)):
        app.include_router(router)
    sessions = Sessions(tokens, failures, SessionPolicy(config.admin.session_ttl))
    app.include_router(console_router(sessions))
    app.mount(STATIC_PATH, static_files())
    return app


def _token_entries(config: Config) -> list[TokenEntry]:
    return [TokenEntry(name=t.name, role=t.role, sha256=t.sha256.lower()) for t in config.admin.tokens]
