"""The ``maintd`` command line: the daemon, config checks, migrations, previews and admin commands.

The parser is built from the standard library alone and each command imports
what it needs when it runs: ``maintd --help``, ``preview`` and the admin
commands answer in a fraction of the time it takes to load the daemon's web
framework, database driver and scheduler (``bench/cli.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from maintd.scheduler.cli.client import add_client_commands
from maintd.scheduler.cli.exit_codes import EX_CONFIG, EX_OK, EX_UNAVAILABLE, EX_USAGE
from maintd.scheduler.config.errors import ConfigError

if TYPE_CHECKING:
    from maintd.scheduler.config.model import Config


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or EX_OK)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EX_CONFIG
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The command line: every command declared, none of their modules imported."""
    parser = argparse.ArgumentParser(prog="maintd", description="Scheduler daemon for periodic maintenance jobs.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: object, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    def with_config(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--config", type=Path, help="config file (default: $MAINTD_CONFIG, else ./config.toml)")

    with_config(command("run", cmd_run, "run the daemon: scheduler and HTTP API"))
    with_config(command("check-config", cmd_check_config, "validate a config file; exit 78 on any problem"))
    with_config(command("migrate", cmd_migrate, "apply the daemon's schema migrations and exit"))

    preview = command("preview", cmd_preview, "print the next fire times of a schedule expression")
    preview.add_argument("expression", metavar="EXPR", help="crontab, @alias or 'every N'")
    preview.add_argument("--timezone", default="UTC", help="IANA zone (default UTC)")
    preview.add_argument("--count", type=int, default=5, help="how many fire times (default 5)")
    preview.add_argument("--after", help="ISO 8601 instant; fire times strictly after it (default now)")

    token = command("token", cmd_token, "print a fresh admin token and the config lines to paste")
    token.add_argument("--name", default="ops", help="principal recorded in the audit log (default ops)")
    token.add_argument("--role", choices=["viewer", "operator"], default="operator")

    add_client_commands(command, with_config)

    run_job = command(
        "run-job", cmd_run_job, "run one job once in this process, without the daemon; recorded like any run"
    )
    with_config(run_job)
    run_job.add_argument("job_id", metavar="JOB")
    run_job.add_argument("--json", action="store_true", help="print the recorded run as JSON")
    run_job.epilog = (
        "The run is recorded in the daemon's database (trigger manual, triggered_by run-job:<user>);\n"
        "the job's logs go to stderr. Ctrl-C cancels the run.\n\n"
        "exit status:\n  0    the run succeeded\n  1    it failed, timed out or was cancelled; or it could not\n"
        "       start (unknown job, a run in progress and overlap = 'forbid')\n"
        "  69   the database cannot be reached\n  78   invalid config\n  130  interrupted by Ctrl-C (the run is cancelled)"
    )
    run_job.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def _load(args: argparse.Namespace) -> Config:
    from maintd.scheduler.config.model import load_config

    return load_config(args.config)  # None: $MAINTD_CONFIG, else ./config.toml


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    print(f"{config.path}: OK ({len(config.jobs)} jobs)")
    return EX_OK


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    config = _load(args)  # exits 78 before anything binds a port
    from maintd.scheduler.server import PortUnavailable, bind_listener
    from maintd.scheduler.store.database import DatabaseUnavailable
    from maintd.scheduler.store.migrate import SchemaNewerThanCode

    # The port first, before the database, migrations or the engine: a busy port is
    # one line and exit 69, not a stop after everything else has started.
    try:
        listener = bind_listener(config.server)
    except PortUnavailable as exc:
        return _unavailable(exc)
    from maintd.scheduler.app import create_app
    from maintd.scheduler.logs import configure_logging
    from maintd.scheduler.server import serve
    from maintd.scheduler.systemd import ServiceNotifier

    configure_logging()
    # SIGHUP reloads once the engine runs (scheduler/config/reload.py); until then it must
    # not end the process, which is its default action.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    systemd = ServiceNotifier.from_env()  # a no-op outside systemd (no $NOTIFY_SOCKET)
    try:
        asyncio.run(serve(create_app(config, systemd=systemd), listener, config.server, systemd))
    except DatabaseUnavailable as exc:
        return _unavailable(exc)
    except SchemaNewerThanCode as exc:
        # Not retried (78 is in the unit's RestartPreventExitStatus): only an upgrade helps.
        print(f"maintd run: {exc}", file=sys.stderr)
        return EX_CONFIG
    finally:
        listener.close()
        systemd.close()
    return EX_OK


def _unavailable(exc: Exception) -> int:
    """One line for a resource the daemon cannot get at start; systemd's Restart=on-failure retries 69."""
    print(f"maintd run: {' '.join(str(exc).split())}", file=sys.stderr)
    return EX_UNAVAILABLE


def cmd_migrate(args: argparse.Namespace) -> int:
    import asyncio

    config = _load(args)
    from maintd.scheduler.store.database import DatabaseUnavailable, open_store
    from maintd.scheduler.store.migrate import SchemaNewerThanCode

    async def migrate() -> None:
        async with open_store(config):
            pass

    try:
        asyncio.run(migrate())
    except DatabaseUnavailable as exc:
        print(f"maintd migrate: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    except SchemaNewerThanCode as exc:
        print(f"maintd migrate: {exc}", file=sys.stderr)
        return EX_CONFIG
    print("migrations applied")
    return EX_OK


def cmd_preview(args: argparse.Namespace) -> int:
    from datetime import datetime

    from maintd.scheduler.schedules import ScheduleError, parse_timezone, preview

    try:
        zone = parse_timezone(args.timezone)
        after = datetime.now(zone) if args.after is None else datetime.fromisoformat(args.after)
        if after.tzinfo is None:
            after = after.replace(tzinfo=zone)
        if args.count < 1:
            raise ValueError("--count must be at least 1")
        times = preview(args.expression, args.timezone, args.count, after)
    except (ScheduleError, ValueError) as exc:
        print(f"maintd preview: {exc}", file=sys.stderr)
        return EX_USAGE
    for fire in times:
        print(fire.isoformat())
    return EX_OK


def cmd_run_job(args: argparse.Namespace) -> int:
    import asyncio

    config = _load(args)
    from maintd.scheduler.cli.live import AboveLiveLine, LiveLine
    from maintd.scheduler.cli.run_job import run_job
    from maintd.scheduler.logs import configure_logging

    line = LiveLine(sys.stderr)
    # Readable log lines above the progress line, even when stderr is a file: a person runs this.
    configure_logging(stream=AboveLiveLine(line), json=False)  # type: ignore[arg-type]
    return asyncio.run(run_job(config, args.job_id, line=line, out=sys.stdout, as_json=args.json))


def cmd_token(args: argparse.Namespace) -> int:
    from maintd.admin_api.auth import new_token

    token, digest = new_token()
    # The secret on a line of its own, apart from the lines to paste: config.toml holds
    # only its sha256 (and may be world-readable), never the token.
    print(f"Token for {args.name!r}, shown once: keep it secret; the admin commands read it from $MAINTD_TOKEN.")
    print(token)
    print()
    print("Paste these lines into config.toml (the token's sha256, not the token):")
    print(token_block(args.name, args.role, digest))
    return EX_OK


def token_block(name: str, role: str, digest: str) -> str:
    """The ``[[admin.tokens]]`` lines for a token, by its sha256 alone."""
    # A JSON string is a TOML basic string: quotes and backslashes in a name come out escaped.
    return f"[[admin.tokens]]\nname = {json.dumps(name)}\nrole = {json.dumps(role)}\nsha256 = {json.dumps(digest)}"


if __name__ == "__main__":
    sys.exit(main())
