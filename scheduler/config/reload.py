"""SIGHUP: re-read config.toml and apply what can change without a restart.

Jobs are added, changed and removed; admin tokens, ``[smtp]`` and ``[alerts]``
are replaced. A run in progress finishes under the settings it started with.
What only a restart can apply (``[server]``, ``[database]``, the scheduler's
lease and the like) is logged as such and otherwise left as it was. A new
config with any problem is rejected as a whole, with the same lines as
``maintd check-config``, and the running one stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from maintd.scheduler.config.model import Config, ConfigError, load_config
from maintd.scheduler.store.run_store import NewAuditEntry

log = structlog.get_logger("maintd.reload")

# Sections read at start only; a reload applies the rest ([jobs], [admin], [smtp], [alerts]) at once.
_RESTART_SECTIONS = ("server", "database", "scheduler")


@dataclass(frozen=True)
class ConfigDiff:
    """What differs between the running config and a new one."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # job id -> setting -> [old, new]
    changed: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    # Other sections applied live (admin tokens, smtp, alerts), by name.
    replaced: list[str] = field(default_factory=list)
    # Keys that changed but apply only after a restart.
    needs_restart: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.replaced or self.needs_restart)

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "replaced": self.replaced,
            "needs_restart": self.needs_restart,
        }


def diff_configs(old: Config, new: Config) -> ConfigDiff:
    old_jobs = {job_id: job.describe() for job_id, job in old.jobs.items()}
    new_jobs = {job_id: job.describe() for job_id, job in new.jobs.items()}
    changed = {}
    for job_id in sorted(old_jobs.keys() & new_jobs.keys()):
        settings = {
            key: [old_jobs[job_id][key], new_jobs[job_id][key]]
            for key in new_jobs[job_id]
            if old_jobs[job_id][key] != new_jobs[job_id][key]
        }
        if settings:
            changed[job_id] = settings
    replaced = [
        name
        for name, before, after in (
            ("admin.tokens", old.admin, new.admin),
            ("smtp", old.smtp, new.smtp),
            ("alerts", old.alerts, new.alerts),
        )
        if before != after
    ]
    needs_restart = []
    for section in _RESTART_SECTIONS:
        before, after = getattr(old, section), getattr(new, section)
        for key in type(before).model_fields:
            if getattr(before, key) != getattr(after, key) and not (section == "scheduler" and key == "timezone"):
                needs_restart.append(f"{section}.{key}")
    return ConfigDiff(
        added=sorted(new_jobs.keys() - old_jobs.keys()),
        removed=sorted(old_jobs.keys() - new_jobs.keys()),
        changed=changed,
        replaced=replaced,
        needs_restart=needs_restart,
    )


class Reloader:
    """Reloads one config file into a running daemon; one reload at a time."""

    def __init__(
        self,
        config: Config,
        *,
        apply: Callable[[Config, ConfigDiff], Awaitable[None]],
        audit: Callable[[NewAuditEntry], Awaitable[None]],
        clock: Callable[[], datetime],
        announce: tuple[Callable[[], None], Callable[[], None]] | None = None,
    ) -> None:
        """``announce``: called as a reload begins and once it has ended (systemd's
        RELOADING=1 and READY=1)."""
        self.config = config
        self._announce = announce
        self._apply = apply
        self._audit = audit
        self._clock = clock
        self._lock = asyncio.Lock()
        self._closed = False

    async def close(self) -> None:
        """The daemon is stopping: a reload under way is let finish, later ones are ignored."""
        self._closed = True
        async with self._lock:
            pass

    async def reload(self, path: Path | None = None) -> ConfigDiff | None:
        """Apply the file's current content; None when it was rejected or ignored."""
        async with self._lock:
            path = path or self.config.path
            if self._closed:
                log.warning("config_reload_ignored", path=str(path), reason="the daemon is stopping")
                return None
            if self._announce is None:
                return await self._reload(path)
            began, ended = self._announce
            began()
            try:
                return await self._reload(path)
            finally:
                ended()

    async def _reload(self, path: Path | None) -> ConfigDiff | None:
        try:
            new = load_config(path)
        except ConfigError as exc:
            log.error("config_reload_rejected", path=str(path), problems=exc.problems, kept="the running config")
            return None
        diff = diff_configs(self.config, new)
        if diff.empty:
            log.info("config_reload_unchanged", path=str(path))
            return diff
        await self._apply(new, diff)
        self.config = new
        if diff.needs_restart:
            log.warning("config_reload_needs_restart", keys=diff.needs_restart)
        log.info("config_reloaded", path=str(path), **diff.as_dict())
        await self._audit(NewAuditEntry(self._clock(), "SIGHUP", "reload", str(path), None, diff.as_dict()))
        return diff


@contextlib.contextmanager
def reload_on_sighup(reloader: Reloader) -> Iterator[None]:
    """While inside, SIGHUP reloads the config (``systemctl reload maintd``)."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[Any]] = set()

    def on_sighup() -> None:
        task = loop.create_task(_reload_logged(reloader), name="maintd-reload")
        pending.add(task)
        task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        # Not the default action (ending the process) for a reload sent while it stops.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


async def _reload_logged(reloader: Reloader) -> None:
    try:
        await reloader.reload()
    except Exception as exc:  # a reload must never take the daemon down
        log.exception("config_reload_failed", error=repr(exc))
