"""How long an operator waits for the command line: ``maintd --help``, ``preview`` and ``jobs``.

Run: ``.venv/bin/python -m bench.cli [--rounds N] [--maintd PATH]`` (PostgreSQL
from ``$MAINTD_BENCH_DSN``, default ``postgresql://postgres@127.0.0.1:5432/postgres``;
the daemon gets a database of its own, dropped at the end even on error). Run it
under ``flock -x /tmp/maintd-bench.lock`` on a shared machine.

Why: the admin commands are clients of a running daemon, and ``preview`` and
``--help`` need no daemon at all; each should answer about as fast as the
interpreter starts (curl answers ``GET /admin/jobs`` in 0.01 s), not after
importing the daemon's web framework, database driver and scheduler. The goal
is 0.2 s for each.

Each figure is the wall time of the whole command as a shell runs it, from
spawning the console script (``--maintd``: another checkout's, e.g. the one
before a change) to its exit:

* ``maintd --help``;
* ``maintd preview '*/5 * * * *'``;
* ``maintd jobs`` as an operator runs it: the daemon's URL from the config
  (``$MAINTD_CONFIG``), against a real ``maintd run`` holding a few jobs;
* ``maintd jobs --url URL``: the same without reading the config.

**Baseline**, measured in the same run and the same rounds: ``python -c pass``
with the interpreter of the console script (same site-packages, same ``.pth``
files). Commands and baseline alternate within each round, so drift on a shared
machine falls on all of them alike. The summary shows each figure's median over
the rounds, its spread (min-max), and its ratio to the baseline's median.

Measured here (2 cores, shared; 15 rounds, median; ``python -c pass`` 0.02 s),
before the commands were made lazy and after: ``--help`` 0.494 s (21x) ->
0.043 s (1.9x); ``preview`` 0.599 s (26x) -> 0.061 s (2.7x); ``jobs`` from the
config 0.625 s (27x) -> 0.085 s (3.8x); ``jobs --url`` 0.540 s (23x) -> 0.085 s
(3.8x). What ``jobs`` still spends beyond the interpreter's start is about
0.025 s of ``http.client`` (with ``ssl`` and ``email``), the request itself, and
the table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx

from bench import scratch_database
from maintd.admin_api.auth import new_token

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
ROUNDS = 15
GOAL_S = 0.2
JOBS = 5
READY_TIMEOUT_S = 60.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_toml(dsn: str, port: int, token_sha256: str) -> str:
    lines = [
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n',
        f'[database]\ndsn = "{dsn}"\n',
        '[scheduler]\nshutdown_grace = "5s"\n',
        f'[[admin.tokens]]\nname = "bench"\nrole = "viewer"\nsha256 = "{token_sha256}"\n',
    ]
    for i in range(JOBS):
        lines.append(f'[jobs.job_{i}]\ntask = "sql"\nschedule = "@yearly"\n[jobs.job_{i}.params]\nsql = "SELECT 1"\n')
    return "\n".join(lines)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAINTD_", "PG", "NOTIFY_", "WATCHDOG_"))}
    return {**env, **extra}


@contextmanager
def running_daemon(maintd: str, dsn: str, workdir: Path) -> Iterator[tuple[Path, str, str]]:
    """A ``maintd run`` on a config of its own, ready; yield the config, its URL and a viewer token."""
    token, digest = new_token()
    port = free_port()
    config = workdir / "config.toml"
    config.write_text(config_toml(dsn, port, digest))
    subprocess.run([maintd, "migrate", "--config", str(config)], check=True, env=clean_env(), capture_output=True)
    log_path = workdir / "daemon.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [maintd, "run", "--config", str(config)], env=clean_env(), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_ready(process, url)
            yield config, url, token
        except Exception:
            print(log_path.read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=url, timeout=5) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"maintd run exited {process.returncode} before it was ready")
            try:
                if http.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.02)
    raise RuntimeError("maintd run was not ready in time")


def wall_time(command: Sequence[str], env: dict[str, str], cwd: Path) -> float:
    """Seconds from spawning ``command`` to its exit; it must succeed."""
    began = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return elapsed


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s ({min(values):.3f}-{max(values):.3f})"


async def run(args: argparse.Namespace) -> None:
    admin_dsn = os.environ.get("MAINTD_BENCH_DSN", DEFAULT_ADMIN_DSN)
    await (await asyncpg.connect(admin_dsn)).close()  # the admin DSN must answer before anything starts
    python = str(Path(args.maintd).parent / "python")
    async with scratch_database(admin_dsn, "maintd_bench_cli") as dsn:
        with tempfile.TemporaryDirectory(prefix="maintd-bench-cli-") as tmp:
            workdir = Path(tmp)
            with running_daemon(args.maintd, dsn, workdir) as (config, url, token):
                elsewhere = workdir / "elsewhere"  # no config.toml: only what each command is given
                elsewhere.mkdir()
                commands: dict[str, tuple[list[str], dict[str, str]]] = {
                    "python -c pass (baseline)": ([python, "-c", "pass"], clean_env()),
                    "maintd --help": ([args.maintd, "--help"], clean_env()),
                    "maintd preview '*/5 * * * *'": ([args.maintd, "preview", "*/5 * * * *"], clean_env()),
                    "maintd jobs (URL from the config)": (
                        [args.maintd, "jobs"],
                        clean_env(MAINTD_CONFIG=str(config), MAINTD_TOKEN=token),
                    ),
                    "maintd jobs --url URL": ([args.maintd, "jobs", "--url", url], clean_env(MAINTD_TOKEN=token)),
                }
                # Once untimed: every command works, and the files it reads are in the page cache.
                for command, env in commands.values():
                    wall_time(command, env, elsewhere)
                times: dict[str, list[float]] = {label: [] for label in commands}
                for number in range(1, args.rounds + 1):
                    for label, (command, env) in commands.items():
                        times[label].append(wall_time(command, env, elsewhere))
                    figures = ", ".join(f"{values[-1]:.3f}" for values in times.values())
                    print(f"  round {number:>2}: {figures} s", flush=True)
    baseline = statistics.median(times["python -c pass (baseline)"])
    print(f"\n== wall time of the whole command: median (min-max) of {args.rounds} rounds; ratio = / python -c pass")
    for label, values in times.items():
        median = statistics.median(values)
        goal = "" if label.startswith("python") else ("   within 0.2 s" if median <= GOAL_S else "   OVER 0.2 s")
        print(f"  {label:<36} {_spread(values)}   ratio {median / baseline:.1f}x{goal}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cli", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds (default {ROUNDS})")
    parser.add_argument(
        "--maintd",
        default=str(Path(sys.executable).parent / "maintd"),
        help="the maintd console script to run (default: this environment's)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    print(f"bench.cli: {args.rounds} rounds; {os.cpu_count()} CPUs; maintd {args.maintd}")
    print("  each round: " + ", ".join(["pass", "--help", "preview", "jobs (config)", "jobs --url"]))
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
