"""Config validation: every problem reported with its key path, all at once, defaults named."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from maintd.scheduler.config.model import ConfigError, parse_config

pytestmark = pytest.mark.unit


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(tomllib.loads(text), environ=environ or {})
    return caught.value.problems


def valid(text: str, environ: dict[str, str] | None = None) -> Any:
    return parse_config(tomllib.loads(text), path=Path("/etc/maintd/config.toml"), environ=environ or {})


GOOD_JOB = """
[jobs.vacuum]
task = "sql"
schedule = "@hourly"
[jobs.vacuum.params]
sql = "SELECT 1"
"""


def test_defaults() -> None:
    config = valid(GOOD_JOB)
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.database.dsn == "embedded" and config.embedded_database
    assert config.database.data_dir == Path("/etc/maintd/var/postgres")
    assert config.scheduler.timezone.key == "UTC"
    assert config.scheduler.shutdown_grace == timedelta(seconds=30)
    assert config.scheduler.lease == timedelta(seconds=30)
    job = config.jobs["vacuum"]
    assert (job.overlap, job.catch_up, job.retries, job.timeout) == ("forbid", "once", 0, None)
    assert job.timezone.key == "UTC"
    assert job.params.sql == "SELECT 1"
    assert config.admin.tokens == []
    assert config.server.trusted_proxies == []


def test_misfire_grace_defaults_to_a_minute_and_a_job_may_set_its_own() -> None:
    assert valid(GOOD_JOB).jobs["vacuum"].misfire_grace == timedelta(minutes=1)
    config = valid('[scheduler]\nmisfire_grace = "5m"\n' + GOOD_JOB)
    assert config.jobs["vacuum"].misfire_grace == timedelta(minutes=5)
    config = valid('[scheduler]\nmisfire_grace = "5m"\n' + GOOD_JOB.replace("@hourly", '@hourly"\nmisfire_grace = "2h'))
    assert config.jobs["vacuum"].misfire_grace == timedelta(hours=2)
    assert problems(
        '[scheduler]\nmisfire_grace = "0s"\n' + GOOD_JOB.replace("@hourly", '@hourly"\nmisfire_grace = "0s')
    ) == [
        "scheduler.misfire_grace: must be longer than 0s",
        "jobs.vacuum.misfire_grace: must be longer than 0s",
    ]


def test_job_timezone_falls_back_to_scheduler_timezone() -> None:
    config = valid('[scheduler]\ntimezone = "Europe/Berlin"\n' + GOOD_JOB)
    assert config.jobs["vacuum"].timezone.key == "Europe/Berlin"
    config = valid(
        '[scheduler]\ntimezone = "Europe/Berlin"\n' + GOOD_JOB.replace("@hourly", '@hourly"\ntimezone = "Asia/Tokyo')
    )
    assert config.jobs["vacuum"].timezone.key == "Asia/Tokyo"


def test_invalid_cron_names_key_and_field() -> None:
    assert problems(GOOD_JOB.replace("@hourly", "61 * * * *")) == [
        "jobs.vacuum.schedule: invalid cron expression '61 * * * *': minute must be 0-59"
    ]


def test_unknown_task() -> None:
    [problem] = problems(GOOD_JOB.replace('task = "sql"', 'task = "vacuum_everything"'))
    assert problem.startswith("jobs.vacuum.task: unknown task 'vacuum_everything'")


def test_task_path_that_does_not_import() -> None:
    [problem] = problems(GOOD_JOB.replace('task = "sql"', 'task = "no_such_pkg.mod:run"'))
    assert problem.startswith("jobs.vacuum.task: unknown task 'no_such_pkg.mod:run': cannot import 'no_such_pkg.mod'")


def test_task_path_to_undecorated_function() -> None:
    [problem] = problems(
        GOOD_JOB.replace('task = "sql"', 'task = "os.path:join"').replace('[jobs.vacuum.params]\nsql = "SELECT 1"', "")
    )
    assert problem == "jobs.vacuum.task: unknown task 'os.path:join': not decorated with @maintd.task"


def test_operator_task_by_path_with_typed_params() -> None:
    config = valid('[jobs.nap]\ntask = "tests.tasks:sleep"\nschedule = "every 5m"\n[jobs.nap.params]\nseconds = 2.5\n')
    assert config.jobs["nap"].params.seconds == 2.5
    [problem] = problems(
        '[jobs.nap]\ntask = "tests.tasks:sleep"\nschedule = "every 5m"\n[jobs.nap.params]\nseconds = "long"\n'
    )
    assert problem.startswith("jobs.nap.params.seconds: ")


def test_unknown_timezone() -> None:
    [problem] = problems(GOOD_JOB.replace("@hourly", '@hourly"\ntimezone = "Mars/Olympus'))
    assert problem.startswith("jobs.vacuum.timezone: unknown timezone 'Mars/Olympus'")
    [problem] = problems('[scheduler]\ntimezone = "Nowhere"\n' + GOOD_JOB)
    assert problem.startswith("scheduler.timezone: unknown timezone 'Nowhere'")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"10 minutes"', "jobs.vacuum.timeout: invalid duration '10 minutes'"),
        ('"10"', "jobs.vacuum.timeout: invalid duration '10'"),
        ("600", "jobs.vacuum.timeout: expected a duration string such as '30s', got 600"),
        ('"0s"', "jobs.vacuum.timeout: must be longer than 0s"),
    ],
)
def test_bad_duration(value: str, expected: str) -> None:
    [problem] = problems(GOOD_JOB.replace('schedule = "@hourly"', f'schedule = "@hourly"\ntimeout = {value}'))
    assert problem.startswith(expected)


def test_unknown_key_is_an_error_not_ignored() -> None:
    assert problems(GOOD_JOB.replace("schedule =", "shedule =")) == [
        "jobs.vacuum.schedule: required key is missing",
        "jobs.vacuum.shedule: unknown key",
    ]
    assert problems("[server]\nprot = 80\n") == ["server.prot: unknown key"]
    assert problems("[sever]\n") == ["sever: unknown key"]


def test_unknown_param_key() -> None:
    assert problems(GOOD_JOB + 'sqll = "x"\n') == ["jobs.vacuum.params.sqll: unknown key"]


def test_missing_required_param() -> None:
    assert problems(GOOD_JOB.replace('sql = "SELECT 1"', "")) == ["jobs.vacuum.params.sql: required key is missing"]


def test_out_of_range_numbers() -> None:
    found = problems(
        "[server]\nport = 70000\n" + GOOD_JOB.replace('schedule = "@hourly"', 'schedule = "@hourly"\nretries = -1')
    )
    assert found == [
        "server.port: input should be less than or equal to 65535, got 70000",
        "jobs.vacuum.retries: input should be greater than or equal to 0, got -1",
    ]


def test_a_jobs_own_alert_threshold() -> None:
    with_k = GOOD_JOB.replace('schedule = "@hourly"', 'schedule = "@hourly"\nalert_after_failures = 3')
    config = valid(with_k + GOOD_JOB.replace("vacuum", "analyze"))
    assert (config.jobs["vacuum"].alert_after_failures, config.jobs["analyze"].alert_after_failures) == (3, None)
    assert config.alert_thresholds == {"vacuum": 3}  # the others use [alerts].after_failures
    assert problems(with_k.replace("= 3", "= 0")) == [
        "jobs.vacuum.alert_after_failures: input should be greater than or equal to 1, got 0"
    ]


def test_bad_enums() -> None:
    found = problems(
        GOOD_JOB.replace('schedule = "@hourly"', 'schedule = "@hourly"\noverlap = "sometimes"\ncatch_up = "all"')
    )
    assert found == [
        "jobs.vacuum.overlap: must be 'forbid' or 'allow', got 'sometimes'",
        "jobs.vacuum.catch_up: must be 'once' or 'none', got 'all'",
    ]


def test_all_problems_at_once() -> None:
    text = """
[jobs.a]
task = "nope"
schedule = "* * *"
[jobs.b]
task = "sql"
schedule = "every 0s"
timezone = "Nowhere/Land"
"""
    found = problems(text)
    assert [p.split(":")[0] for p in found] == [
        "jobs.a.schedule",
        "jobs.a.task",
        "jobs.b.timezone",
        "jobs.b.schedule",
        "jobs.b.params.sql",
    ]


def test_tokens() -> None:
    good = "a" * 64
    config = valid(f'[[admin.tokens]]\nname = "ops"\nrole = "operator"\nsha256 = "{good}"\n')
    assert config.admin.tokens[0].role == "operator"
    found = problems(
        f'[[admin.tokens]]\nname = "ops"\nrole = "root"\nsha256 = "xyz"\n'
        f'[[admin.tokens]]\nname = "a"\nrole = "viewer"\nsha256 = "{good}"\n'
        f'[[admin.tokens]]\nname = "b"\nrole = "viewer"\nsha256 = "{good.upper()}"\n'
    )
    assert found[0] == "admin.tokens[0].role: must be 'viewer' or 'operator', got 'root'"
    assert found[1].startswith("admin.tokens[0].sha256: must be 64 hex digits")
    assert len(found) == 2
    assert problems(
        f'[[admin.tokens]]\nname = "a"\nrole = "viewer"\nsha256 = "{good}"\n'
        f'[[admin.tokens]]\nname = "b"\nrole = "viewer"\nsha256 = "{good.upper()}"\n'
    ) == ["admin.tokens[1].sha256: same token as admin.tokens[0]"]


def test_trusted_proxies_are_addresses_or_networks() -> None:
    config = valid('[server]\ntrusted_proxies = ["10.0.0.5", "10.1.0.0/16", "fd00::/8"]\n')
    assert [str(n) for n in config.server.trusted_proxies] == ["10.0.0.5/32", "10.1.0.0/16", "fd00::/8"]
    assert problems('[server]\ntrusted_proxies = ["10.1.2.3/16", "proxy.local", 3]\n') == [
        "server.trusted_proxies[0]: not an address or network: 10.1.2.3/16 has host bits set",
        "server.trusted_proxies[1]: not an address or network: 'proxy.local' does not appear to be an IPv4 or IPv6 network",
        "server.trusted_proxies[2]: expected an address or network such as '10.0.0.0/8', got 3",
    ]
    assert problems('[server]\ntrusted_proxies = "10.0.0.5"\n') == [
        "server.trusted_proxies: input should be a valid list, got '10.0.0.5'"
    ]


def test_dsn_from_environment_overrides_file() -> None:
    config = valid(GOOD_JOB, environ={"MAINTD_DATABASE_DSN": "postgresql://app@db:5432/app"})
    assert config.database.dsn == "postgresql://app@db:5432/app"
    assert not config.embedded_database
    [problem] = problems('[database]\ndsn = "mysql://x"\n')
    assert problem.startswith("database.dsn: must be 'embedded' or a 'postgresql://' URL")


def test_data_dir_relative_to_state_directory_under_systemd() -> None:
    config = valid(GOOD_JOB, environ={"STATE_DIRECTORY": "/var/lib/maintd:/var/lib/other"})
    assert config.database.data_dir == Path("/var/lib/maintd/var/postgres")


def test_invalid_job_id() -> None:
    [problem] = problems(GOOD_JOB.replace("jobs.vacuum", 'jobs."bad id/x"'))
    assert problem.startswith("jobs.bad id/x: invalid job id")


def test_toml_syntax_error_names_line(tmp_path: Path) -> None:
    from maintd.scheduler.config.model import load_config

    path = tmp_path / "config.toml"
    path.write_text('[server]\nport = 8080\nhost = "127.0.0.1\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert problem.startswith(f"{path}: TOML syntax error: ")
    assert "line 3" in problem


def test_missing_file(tmp_path: Path) -> None:
    from maintd.scheduler.config.model import load_config

    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.toml")
    assert caught.value.problems == [f"{tmp_path / 'nope.toml'}: cannot read config: No such file or directory"]


def test_shipped_config_is_valid(repo_root: Path) -> None:
    from maintd.scheduler.config.model import load_config

    config = load_config(repo_root / "config.toml", environ={})
    assert config.embedded_database
    assert config.jobs


def test_commented_examples_in_shipped_config_are_valid(repo_root: Path) -> None:
    import re

    text = (repo_root / "config.toml").read_text()
    # Uncomment what is TOML (tables and key = value lines), not the prose.
    examples = re.sub(r"^# (\[.*\]|[a-z_0-9]+ = .*)$", r"\1", text, flags=re.M)
    examples = examples.replace('sha256 = "..."', f'sha256 = "{"0" * 64}"')
    config = parse_config(tomllib.loads(examples), environ={})
    assert {"cleanup_sessions", "daily_report"} <= set(config.jobs)
    assert config.smtp is not None and config.smtp.password_env == "MAINTD_SMTP_PASSWORD"
    assert config.alerts.webhooks[0].url_env == "MAINTD_SLACK_WEBHOOK_URL" and config.alerts.email is not None
    assert config.server.trusted_proxies
