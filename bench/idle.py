"""Many jobs, none due: what a ``maintd run`` with 1,000 and 10,000 crontab jobs costs while idle.

Run: ``.venv/bin/python -m bench.idle [--rounds N] [--jobs 1000,10000] [--idle-s S] [--maintd PATH]``
(PostgreSQL from ``$MAINTD_BENCH_DSN``, default
``postgresql://postgres@127.0.0.1:5432/postgres``; every daemon start gets a
database of its own, migrated before the clock starts, dropped at the end even
on error). Run it under ``flock /tmp/maintd-bench.lock`` on a shared machine.

Why: idle work must depend on what is running, not on what is configured. A
daemon whose jobs are all hours away should cost what bare APScheduler costs
holding the same jobs: nothing but memory.

Each round, for each job count N, the real ``maintd run`` (``--maintd``: the
console script of another checkout, e.g. the one before a change) starts on a
generated config of N ``sql`` jobs (``SELECT 1``), each on a crontab of its own
(a minute, an hour, a day of the month) that is not due within the next hours,
and the bench measures:

* **start**: from spawning the process to the first ``/readyz`` 200 (polled every 20 ms);
* **RSS**: ``VmRSS`` once settled (a few seconds after ready);
* **idle CPU**: user + system time of the process over ``--idle-s`` seconds with
  no request (from ``/proc/PID/stat``), as a percentage of one core;
* **/healthz max**: the slowest of ``/healthz`` polled at 20 Hz for 12 s, over a heartbeat at least
  (the daemon is otherwise idle), and its median;
* **/admin/jobs**: one ``GET /admin/jobs`` of all jobs, the same again, and one
  page (``?limit=100&offset=N/2``; ``n/a`` where the daemon does not page);
* **stop**: from SIGTERM to the process's exit.

**Baseline**, measured in the same run: bare APScheduler in a process of its
own adding the same N ``CronTrigger`` jobs (a no-op coroutine) to an
``AsyncIOScheduler`` and starting it: time to add, RSS, idle CPU over the same
window. The summary shows each figure's median over the rounds, its spread
(min-max), and maintd's ratio to the baseline.

Measured here (2 cores, shared; 3 rounds, median, 10,000 jobs; bare APScheduler
0.92-1.07 s to add them, 57 MB, 0 % idle), before the idle work was cut, after,
and after the month-by-month crontab walk (scheduler/cron_calendar.py): start
5.21 s -> 2.83 s -> 2.48 s; RSS 238 -> 92 -> 95 MB; idle CPU 1.50 % -> 0.35 % ->
0.40 % (1,000 jobs: 0.50 % -> 0.35 %: what is left is the same for any number
of jobs); /healthz max 18.3 -> 4.6 -> 4.9 ms; ``GET /admin/jobs`` of all 4.33 s
-> 2.54 s -> 0.49 s (again: 0.26 s; a page of 100: 10 ms). The first listing
computes 5 fire times of every job.
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx

from bench import scratch_database
from maintd.admin_api.auth import new_token

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
JOB_COUNTS = (1000, 10_000)
ROUNDS = 3
IDLE_S = 20.0
# Start-up settles (the catch-up of the moments before the start runs 2 s after it).
SETTLE_S = 3.0
HEALTHZ_HZ = 20
# Longer than a heartbeat (lease 30 s / 3): the beat's work is what may hold a request up.
HEALTHZ_S = 12.0
PAGE = 100
READY_TIMEOUT_S = 120.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- what is measured ----------------------------------------------------------


def quiet_hours(now: datetime) -> list[int]:
    """UTC hours far enough from now that no job of the bench comes due while it runs."""
    busy = {(now.hour + k) % 24 for k in range(-1, 3)}
    return [h for h in range(24) if h not in busy]


def crontabs(count: int, now: datetime) -> list[str]:
    """``count`` distinct crontab expressions (one APScheduler timer each), none due soon."""
    hours = quiet_hours(now)
    per_day = 60 * len(hours)
    assert count <= per_day * 28, "more jobs than distinct quiet minutes in 28 days"
    return [f"{i % 60} {hours[(i // 60) % len(hours)]} {1 + i // per_day} * *" for i in range(count)]


def config_toml(count: int, dsn: str, port: int, token_sha256: str, now: datetime) -> str:
    lines = [
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n',
        f'[database]\ndsn = "{dsn}"\n',
        '[scheduler]\ntimezone = "UTC"\nshutdown_grace = "5s"\n',
        f'[[admin.tokens]]\nname = "bench"\nrole = "viewer"\nsha256 = "{token_sha256}"\n',
    ]
    for i, expression in enumerate(crontabs(count, now)):
        lines.append(
            f'[jobs.job_{i:05d}]\ntask = "sql"\nschedule = "{expression}"\n'
            f'[jobs.job_{i:05d}.params]\nsql = "SELECT 1"\n'
        )
    return "\n".join(lines)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (children excluded)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def idle_cpu_percent(pid: int, seconds: float) -> float:
    before, began = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - began)


@dataclass
class Figures:
    start_s: float
    rss_mb: float
    idle_cpu_pct: float
    healthz_max_ms: float | None = None
    healthz_p50_ms: float | None = None
    jobs_all_s: float | None = None
    jobs_page_s: float | None = None
    jobs_again_s: float | None = None
    stop_s: float | None = None


# -- maintd ------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def measure_maintd(maintd: str, admin_dsn: str, count: int, idle_s: float, workdir: Path) -> Figures:
    async with scratch_database(admin_dsn, "maintd_bench_idle") as dsn:
        token, digest = new_token()
        port = free_port()
        config = workdir / f"idle-{count}.toml"
        config.write_text(config_toml(count, dsn, port, digest, datetime.now(UTC)))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MAINTD_", "PG", "NOTIFY_", "WATCHDOG_"))}
        # Migrations are applied before the clock starts: a restart finds them applied.
        subprocess.run([maintd, "migrate", "--config", str(config)], check=True, env=env, capture_output=True)
        log = (workdir / f"idle-{count}.log").open("w")
        began = time.monotonic()
        process = subprocess.Popen(
            [maintd, "run", "--config", str(config)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            figures = await asyncio.to_thread(_drive, process, began, f"http://127.0.0.1:{port}", token, count, idle_s)
            stopping = time.monotonic()
            process.terminate()
            await asyncio.to_thread(process.wait, 60)
            figures.stop_s = time.monotonic() - stopping
            return figures
        except Exception:
            log.flush()
            print((workdir / f"idle-{count}.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()


def _drive(process: subprocess.Popen[bytes], began: float, url: str, token: str, count: int, idle_s: float) -> Figures:
    with httpx.Client(base_url=url, timeout=120) as http:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"maintd run exited {process.returncode} before it was ready")
            try:
                if http.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - began > READY_TIMEOUT_S:
                raise RuntimeError("maintd run was not ready in time")
            time.sleep(0.02)
        figures = Figures(start_s=time.monotonic() - began, rss_mb=0.0, idle_cpu_pct=0.0)
        time.sleep(SETTLE_S)
        figures.rss_mb = rss_mb(process.pid)
        figures.idle_cpu_pct = idle_cpu_percent(process.pid, idle_s)
        latencies = []
        period, next_at = 1 / HEALTHZ_HZ, time.monotonic()
        for _ in range(int(HEALTHZ_S * HEALTHZ_HZ)):
            time.sleep(max(0.0, next_at - time.monotonic()))
            sent = time.monotonic()
            assert http.get("/healthz").status_code == 200
            latencies.append(time.monotonic() - sent)
            next_at += period
        figures.healthz_max_ms = 1000 * max(latencies)
        figures.healthz_p50_ms = 1000 * statistics.median(latencies)
        auth = {"Authorization": f"Bearer {token}"}
        sent = time.monotonic()
        answer = http.get("/admin/jobs", headers=auth)
        figures.jobs_all_s = time.monotonic() - sent
        assert answer.status_code == 200 and len(answer.json()) == count, answer.text[:200]
        sent = time.monotonic()
        assert http.get("/admin/jobs", headers=auth).status_code == 200
        figures.jobs_again_s = time.monotonic() - sent
        sent = time.monotonic()
        answer = http.get("/admin/jobs", headers=auth, params={"limit": PAGE, "offset": count // 2})
        if answer.status_code == 200:
            figures.jobs_page_s = time.monotonic() - sent
            assert len(answer.json()) == PAGE, answer.text[:200]
        return figures


# -- bare APScheduler ----------------------------------------------------------


# Run with ``python -c`` so that the baseline's RSS holds APScheduler and nothing of the bench's.
_BARE = """
import asyncio, sys, time
from datetime import timezone
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

count, hours = int(sys.argv[1]), [int(h) for h in sys.argv[2].split(",")]

async def noop():
    pass

async def main():
    scheduler = AsyncIOScheduler(timezone=timezone.utc)
    per_day = 60 * len(hours)
    began = time.monotonic()
    for i in range(count):
        trigger = CronTrigger(
            minute=i % 60, hour=hours[(i // 60) % len(hours)], day=1 + i // per_day, timezone=timezone.utc
        )
        scheduler.add_job(noop, trigger, id=f"job_{i:05d}", misfire_grace_time=None)
    scheduler.start()
    print(time.monotonic() - began, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def measure_bare(count: int, idle_s: float) -> Figures:
    """Bare APScheduler adding the same crontabs as ``CronTrigger`` jobs (see :func:`crontabs`)."""
    hours = ",".join(map(str, quiet_hours(datetime.now(UTC))))
    process = subprocess.Popen([sys.executable, "-c", _BARE, str(count), hours], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        added_s = float(process.stdout.readline())
        time.sleep(SETTLE_S)
        return Figures(start_s=added_s, rss_mb=rss_mb(process.pid), idle_cpu_pct=idle_cpu_percent(process.pid, idle_s))
    finally:
        process.terminate()
        process.wait(10)


# -- report ------------------------------------------------------------------


def _spread(values: list[float], unit: str, digits: int = 2) -> str:
    median = statistics.median(values)
    return f"{median:.{digits}f} {unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _figure(rounds: list[Figures], name: str) -> list[float] | None:
    values = [getattr(f, name) for f in rounds]
    return None if any(v is None for v in values) else values


def summarize(count: int, maintd: list[Figures], bare: list[Figures]) -> None:
    print(f"\n== {count} jobs: median (min-max) of {len(maintd)} round(s); ratio = maintd / bare APScheduler")
    rows = [
        ("start to /readyz 200 (bare: add + start)", "start_s", "s", 2, True),
        ("RSS settled", "rss_mb", "MB", 0, True),
        ("idle CPU", "idle_cpu_pct", "%", 2, True),
        ("/healthz max at 20 Hz", "healthz_max_ms", "ms", 1, False),
        ("/healthz median", "healthz_p50_ms", "ms", 2, False),
        ("GET /admin/jobs, all", "jobs_all_s", "s", 3, False),
        ("GET /admin/jobs, all again", "jobs_again_s", "s", 3, False),
        (f"GET /admin/jobs, one page of {PAGE}", "jobs_page_s", "s", 3, False),
        ("SIGTERM to exit", "stop_s", "s", 2, False),
    ]
    for label, name, unit, digits, against_bare in rows:
        values = _figure(maintd, name)
        text = "n/a" if values is None else _spread(values, unit, digits)
        if against_bare and values is not None and bare:
            baseline = [getattr(f, name) for f in bare]
            base = statistics.median(baseline)
            ratio = f"{statistics.median(values) / base:.1f}x" if base > 0 else "inf"
            text += f"   bare {_spread(baseline, unit, digits)}   ratio {ratio}"
        print(f"  {label:<42} {text}")


async def run(args: argparse.Namespace) -> None:
    admin_dsn = os.environ.get("MAINTD_BENCH_DSN", DEFAULT_ADMIN_DSN)
    # The admin DSN must answer before any process is spawned.
    await (await asyncpg.connect(admin_dsn)).close()
    results: dict[int, tuple[list[Figures], list[Figures]]] = {n: ([], []) for n in args.jobs}
    with tempfile.TemporaryDirectory(prefix="maintd-bench-idle-") as tmp:
        for number in range(1, args.rounds + 1):
            print(f"######## round {number} of {args.rounds}", flush=True)
            for count in args.jobs:
                bare = await asyncio.to_thread(measure_bare, count, args.idle_s)
                print(
                    f"  bare {count}: add {bare.start_s:.2f} s, RSS {bare.rss_mb:.0f} MB, idle CPU {bare.idle_cpu_pct:.2f} %",
                    flush=True,
                )
                figures = await measure_maintd(args.maintd, admin_dsn, count, args.idle_s, Path(tmp))
                page = "n/a" if figures.jobs_page_s is None else f"{figures.jobs_page_s:.3f} s"
                print(
                    f"  maintd {count}: ready {figures.start_s:.2f} s, RSS {figures.rss_mb:.0f} MB, idle CPU "
                    f"{figures.idle_cpu_pct:.2f} %, /healthz max {figures.healthz_max_ms:.1f} ms, "
                    f"/admin/jobs all {figures.jobs_all_s:.3f} s, page {page}",
                    flush=True,
                )
                results[count][0].append(figures)
                results[count][1].append(bare)
    for count, (maintd, bare) in results.items():
        summarize(count, maintd, bare)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds (default {ROUNDS})")
    parser.add_argument(
        "--jobs",
        type=lambda text: [int(n) for n in text.split(",")],
        default=list(JOB_COUNTS),
        help="job counts, comma-separated (default 1000,10000)",
    )
    parser.add_argument("--idle-s", type=float, default=IDLE_S, help=f"idle CPU window (default {IDLE_S:g} s)")
    parser.add_argument(
        "--maintd",
        default=str(Path(sys.executable).parent / "maintd"),
        help="the maintd console script to run (default: this environment's)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    print(
        f"bench.idle: {','.join(map(str, args.jobs))} crontab jobs, none due; {args.rounds} round(s); "
        f"idle window {args.idle_s:g} s; {os.cpu_count()} CPUs; maintd {args.maintd}"
    )
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
