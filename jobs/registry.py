"""The task registry: the ``@task`` decorator and lookup of a config's ``task`` value.

A config's ``task`` is either a built-in name (``sql``, ``cleanup_sessions``, ...)
or ``package.module:function`` naming an operator's own task, decorated the same
way. Params are a pydantic model taken from the function's ``params`` annotation,
so config values are validated at start, not at 3 a.m.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from maintd.jobs.context import JobContext

TaskFunc = Callable[..., Awaitable[Any]]

_MARK = "__maintd_task__"
# Modules holding the built-in tasks; imported on first lookup so that
# importing the registry stays cheap and free of cycles.
_BUILTIN_MODULES = (
    "maintd.jobs.sql",
    "maintd.jobs.daily_report.task",
    "maintd.jobs.cleanup_sessions",
    "maintd.jobs.prune_history",
)
_builtins: dict[str, TaskSpec] = {}


class NoParams(BaseModel):
    """Params of a task that takes none: any key given is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# A task's check of params for a dry run: why they cannot run dry (None: they can).
DryRunCheck = Callable[[Any], str | None]


@dataclass(frozen=True)
class TaskSpec:
    """A task the daemon can run: its name, function and params model, and what an
    operator may ask of it at trigger time: which params to override (``overridable``),
    and whether it can run dry (``dry_run``: it honours ``ctx.dry_run``;
    ``dry_run_check``: why given params cannot, checked before the run starts)."""

    name: str
    func: TaskFunc
    params_model: type[BaseModel]
    description: str
    overridable: frozenset[str] = frozenset()
    dry_run: bool = False
    dry_run_check: DryRunCheck | None = None

    async def __call__(self, ctx: JobContext, params: BaseModel) -> Any:
        return await self.func(ctx, params)


class TaskLookupError(LookupError):
    """A config's ``task`` names nothing runnable."""

    def __init__(self, ref: str, reason: str) -> None:
        super().__init__(f"unknown task {ref!r}: {reason}")
        self.ref = ref
        self.reason = reason


def task(
    name: str | None = None,
    *,
    overridable: Iterable[str] = (),
    dry_run: bool = False,
    dry_run_check: DryRunCheck | None = None,
) -> Callable[[TaskFunc], TaskFunc]:
    """Mark an async function ``(ctx, params)`` as a maintd task.

    The params model is the annotation of the ``params`` argument (a pydantic
    model); a function without one takes no params. ``overridable``: the params an
    operator may change for one run at trigger time (none by default: a param such
    as a table name or a statement is the config's alone). ``dry_run=True``: the
    task honours ``ctx.dry_run`` (does the work's reading, changes nothing, returns
    what it would do); ``dry_run_check(params)`` says why params cannot run dry.
    """

    def mark(func: TaskFunc) -> TaskFunc:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"task {func.__qualname__} must be an async function")
        hints = typing.get_type_hints(func)
        model = hints.get("params", NoParams)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"task {func.__qualname__}: params must be annotated with a pydantic model")
        unknown = sorted(set(overridable) - set(model.model_fields))
        if unknown:
            raise TypeError(f"task {func.__qualname__}: overridable names no field of its params: {unknown}")
        if dry_run_check is not None and not dry_run:
            raise TypeError(f"task {func.__qualname__}: dry_run_check without dry_run=True")
        spec = TaskSpec(
            name=name or func.__name__,
            func=func,
            params_model=model,
            description=inspect.getdoc(func) or "",
            overridable=frozenset(overridable),
            dry_run=dry_run,
            dry_run_check=dry_run_check,
        )
        setattr(func, _MARK, spec)
        if func.__module__ in _BUILTIN_MODULES:
            _builtins[spec.name] = spec
        return func

    return mark


def builtin_tasks() -> dict[str, TaskSpec]:
    """The built-in tasks by name."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    return dict(_builtins)


def resolve_task(ref: str) -> TaskSpec:
    """Find the task a config names, importing an operator's module if needed."""
    if ":" not in ref:
        specs = builtin_tasks()
        if ref not in specs:
            known = ", ".join(sorted(specs))
            raise TaskLookupError(ref, f"not a built-in task ({known}) nor 'package.module:function'")
        return specs[ref]
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise TaskLookupError(ref, "expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure is the operator's to see
        raise TaskLookupError(ref, f"cannot import {module_name!r}: {exc}{_renamed_hint(exc)}") from exc
    func = getattr(module, attr, None)
    if func is None:
        raise TaskLookupError(ref, f"module {module_name!r} has no attribute {attr!r}")
    spec = getattr(func, _MARK, None)
    if not isinstance(spec, TaskSpec):
        raise TaskLookupError(ref, "not decorated with @maintd.task")
    return spec


# maintd's packages before they moved under the one name ``maintd``, and what a job imported from them.
_OLD_PACKAGES = ("jobs", "scheduler", "admin_api")
_PUBLIC_NAMES = ("task", "JobContext", "JobCancelled", "LeaseLost", "TaskSpec")


def _renamed_hint(exc: Exception) -> str:
    """A task module written for maintd before the rename imports ``jobs`` (or ``scheduler``):
    say what to import instead, whether that name is missing or is the user's own package."""
    if not isinstance(exc, ImportError) or exc.name is None:
        return ""
    root = exc.name.partition(".")[0]
    wanted = getattr(exc, "name_from", None) or str(exc).partition("cannot import name '")[2].partition("'")[0]
    missing_package = isinstance(exc, ModuleNotFoundError) and exc.name in _OLD_PACKAGES
    missing_name = root in _OLD_PACKAGES and wanted in _PUBLIC_NAMES
    if not (missing_package or missing_name):
        return ""
    return (
        f" (maintd's {root!r} is now 'maintd.{root}'; a job imports from 'maintd': from maintd import task, JobContext)"
    )
