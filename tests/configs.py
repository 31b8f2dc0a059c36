"""Building test configs from plain dicts, the way config.toml would spell them."""

from __future__ import annotations

from typing import Any

from maintd.scheduler.config.model import Config, parse_config


def make_config(jobs: dict[str, dict[str, Any]], **sections: Any) -> Config:
    raw: dict[str, Any] = {"jobs": jobs, **sections}
    raw.setdefault("scheduler", {}).setdefault("shutdown_grace", "5s")
    return parse_config(raw)


def sql_job(sql: str = "SELECT 1", schedule: str = "@daily", **options: Any) -> dict[str, Any]:
    return {"task": "sql", "schedule": schedule, "params": {"sql": sql}, **options}


def sleep_job(seconds: float = 60, schedule: str = "@yearly", **options: Any) -> dict[str, Any]:
    params = {"seconds": seconds, **options.pop("params", {})}
    return {"task": "tests.tasks:sleep", "schedule": schedule, "params": params, **options}
