"""What an operator asks of a run started by hand, checked before anything is claimed:
params for this run only, a reason, a dry run.

Overrides are merged over the job's configured params and validated by the task's
own model, as the config was; only the params the task declares overridable may
change (``@task(overridable=...)``). A dry run needs a task that declares it
(``@task(dry_run=True)``) and params its check accepts. Every refusal is an
:class:`~maintd.admin_api.interface.Unprocessable` naming the field, before any
claim, so a refused request leaves nothing behind (nor uses an idempotency key).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from maintd.admin_api.interface import DryRunRefused, ParamsRefused, ReasonRequired
from maintd.scheduler.config.model import JobConfig


@dataclass(frozen=True)
class ManualRequest:
    """A request checked: the params the run runs with (JSON, as the config spells them),
    the overrides among them (None: none), its reason and whether it is dry."""

    params: dict[str, Any]
    overrides: dict[str, Any] | None
    reason: str | None
    dry_run: bool


def check_request(
    job: JobConfig, overrides: Mapping[str, Any], *, dry_run: bool, reason: str | None, require_reason: bool
) -> ManualRequest:
    """The run ``job`` gets for this request; raises the 422 of the first kind of problem found."""
    if require_reason and not (reason and reason.strip()):
        raise ReasonRequired()
    spec = job.task
    refused = sorted(set(overrides) - spec.overridable)
    if refused:
        allowed = ", ".join(sorted(spec.overridable)) or "none"
        raise ParamsRefused(
            job.id,
            [
                (
                    (name,),
                    f"task {spec.name!r} "
                    + ("has no such param" if name not in spec.params_model.model_fields else "lets no run change it")
                    + f" (overridable: {allowed})",
                    "not_overridable",
                )
                for name in refused
            ],
        )
    try:
        params = spec.params_model.model_validate({**job.params.model_dump(mode="json"), **overrides})
    except ValidationError as exc:
        raise ParamsRefused(
            job.id, [(tuple(error["loc"]), error["msg"], error["type"]) for error in exc.errors(include_url=False)]
        ) from None
    if dry_run:
        if not spec.dry_run:
            raise DryRunRefused(job.id, f"task {spec.name!r} does not support dry runs")
        if spec.dry_run_check is not None and (why := spec.dry_run_check(params)) is not None:
            raise DryRunRefused(job.id, why)
    return ManualRequest(params.model_dump(mode="json"), dict(overrides) or None, reason, dry_run)
