"""When a burst's work lands: real ``maintd run`` replicas against bare APScheduler.

Run: ``.venv/bin/python -m bench.burst [--scenario burst|single|overload|all] [--rounds N]``
(PostgreSQL from ``$MAINTD_BENCH_DSN``, default
``postgresql://postgres@127.0.0.1:5432/postgres``; every phase gets a database
of its own, dropped at its end, even on error).

What an operator feels is when a job's work happens, so that is what is
measured, from outside: every job is an ``sql`` task running one ``INSERT``
of ``clock_timestamp()`` into a table of the bench's, and a fire's lateness is
that timestamp minus the fire's slot.

* **maintd**: 3 real ``maintd run`` processes (the daemon as shipped, pool of
  10 each) on one database, with N jobs ``every S`` (epoch-aligned, so all are
  due at once). An insert is matched to its run (same job, the latest run
  started before it; ``overlap = forbid`` keeps a job's runs apart), and the
  run gives the slot (``scheduled_for``). Each slot of the judged window is
  counted from ``maintd.runs``: run, failed, missed, skipped, lost, and fires
  with no row at all; an insert matched to no run, or two inserts for one run,
  count as duplicates.
* **bare**: one process, APScheduler 3's ``AsyncIOScheduler`` with the same N
  jobs on an epoch-aligned ``IntervalTrigger`` (``max_instances=1``,
  ``misfire_grace_time=60``), each running the same INSERT on a 10-connection
  asyncpg pool; the slot is the fire time APScheduler submitted.

The judged window is the slots after every process is ready (the first slot a
second after readiness, then ``--slots`` of them); the bench then waits until
every fire of the window has a final row (or a deadline) before it stops the
processes. Phases alternate their order from round to round; the summary gives
each figure's median over the rounds, its spread, and each round's ratio of
maintd to bare measured in that round.

Scenarios (the issue's figures): ``burst``: 1,000 jobs every 5 s, 6 slots;
``single``: 1 job every 1 s, 30 slots; ``overload``: 10,000 jobs every 10 s,
4 slots.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx

from bench import scratch_database

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REPLICAS = 3
POOL_SIZE = 10
BASE_PORT = 18600
HITS_TABLE = "CREATE TABLE bench_hits (job text NOT NULL, slot timestamptz, at timestamptz NOT NULL)"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The daemon as installed beside this interpreter (the venv's console script).
MAINTD = str(Path(sys.executable).parent / "maintd")


@dataclass(frozen=True)
class Scenario:
    name: str
    jobs: int
    every: int
    slots: int


SCENARIOS = {
    "burst": Scenario("burst", jobs=1000, every=5, slots=6),
    "single": Scenario("single", jobs=1, every=1, slots=30),
    "overload": Scenario("overload", jobs=10_000, every=10, slots=4),
}


def job_id(index: int) -> str:
    return f"job_{index:05d}"


@dataclass
class Window:
    """The judged slots, epoch-aligned."""

    first: datetime
    every: int
    slots: int

    @classmethod
    def after(cls, ready: float, every: int, slots: int) -> Window:
        first = math.ceil((ready + 1.0) / every) * every
        return cls(EPOCH + timedelta(seconds=first), every, slots)

    def times(self) -> list[datetime]:
        return [self.first + timedelta(seconds=self.every * n) for n in range(self.slots)]

    @property
    def last(self) -> datetime:
        return self.times()[-1]


@dataclass
class Side:
    """One phase's figures."""

    name: str
    fires: int
    lateness: list[float] = field(default_factory=list)
    rows: Counter[str] = field(default_factory=Counter)  # per status, "no row" for fires without one
    per_slot: dict[datetime, Counter[str]] = field(default_factory=dict)
    duplicates: int = 0
    durations: list[float] = field(default_factory=list)
    # maintd only: when the runs started (the work's lateness less its wait inside the run).
    start_lateness: list[float] = field(default_factory=list)
    runs_per_node: Counter[str] = field(default_factory=Counter)
    cpu_s: float = 0.0
    ready_s: float = 0.0
    # Transactions the database committed or rolled back while the window ran (statements
    # outside a transaction count one each): what a fire costs the server.
    transactions: int = 0

    @property
    def ran(self) -> int:
        return len(self.lateness)

    def pct(self, p: float) -> float:
        return _pct(self.lateness, p) if self.lateness else math.nan


# -- maintd ------------------------------------------------------------------


def _config(scenario: Scenario, dsn: str, index: int) -> str:
    lines = [
        "[server]",
        f"port = {BASE_PORT + index}",
        "[database]",
        f'dsn = "{dsn}"',
        f"pool_size = {POOL_SIZE}",
        "[scheduler]",
        f'node = "replica-{index}"',
    ]
    for n in range(scenario.jobs):
        name = job_id(n)
        lines += [
            f"[jobs.{name}]",
            'task = "sql"',
            f'schedule = "every {scenario.every}s"',
            f"[jobs.{name}.params]",
            f"sql = \"INSERT INTO bench_hits (job, at) VALUES ('{name}', clock_timestamp())\"",
        ]
    return "\n".join(lines) + "\n"


async def _transactions(conn: asyncpg.Connection) -> int:
    # The server publishes its counters with a delay of up to a second.
    value = await conn.fetchval(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
    )
    return int(value)


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _wait_ready(ports: list[int], procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        for port, proc in zip(ports, procs, strict=True):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"replica on port {port} exited with {proc.returncode}")
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica on port {port} not ready after {timeout:.0f} s")
                await asyncio.sleep(0.1)


async def _sleep_until(at: datetime) -> None:
    await asyncio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))


async def _wait_settled(conn: asyncpg.Connection, window: Window, fires: int, deadline: datetime) -> None:
    """Until every fire of the window has a final row, or the deadline."""
    await _sleep_until(window.last + timedelta(seconds=1))
    while datetime.now(UTC) < deadline:
        settled = await conn.fetchval(
            "SELECT count(DISTINCT (job_id, scheduled_for)) FROM maintd.runs"
            " WHERE scheduled_for BETWEEN $1 AND $2 AND status <> 'running'",
            window.first, window.last,
        )  # fmt: skip
        if settled >= fires:
            return
        await asyncio.sleep(0.5)


def _profilers(
    procs: list[subprocess.Popen[bytes]], window: Window, profile_dir: Path | None
) -> list[subprocess.Popen[bytes]]:
    """py-spy sampling each replica from the window's first slot to its last (``--profile``), only
    while it holds the GIL: where its CPU goes, not where it waits."""
    if profile_dir is None:
        return []
    seconds = int((window.last - datetime.now(UTC)).total_seconds()) + 2
    return [
        subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(proc.pid),
                "--duration",
                str(seconds),
                "--format",
                "raw",
                "--rate",
                "200",
                "--gil",
                "--output",
                str(profile_dir / f"replica-{index}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for index, proc in enumerate(procs)
    ]


async def run_maintd(scenario: Scenario, admin_dsn: str, workdir: Path, profile_dir: Path | None = None) -> Side:
    async with scratch_database(admin_dsn, "bench_burst") as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(HITS_TABLE)
            procs, ports, logs = [], [], []
            began = time.time()
            try:
                for index in range(REPLICAS):
                    path = workdir / f"replica-{index}.toml"
                    path.write_text(_config(scenario, dsn, index))
                    log = (workdir / f"replica-{index}.log").open("wb")
                    logs.append(log)
                    ports.append(BASE_PORT + index)
                    procs.append(
                        subprocess.Popen(
                            [MAINTD, "run", "--config", str(path)],
                            stdout=log,
                            stderr=subprocess.STDOUT,
                        )  # fmt: skip
                    )
                await _wait_ready(ports, procs, timeout=120)
                ready = time.time()
                window = Window.after(ready, scenario.every, scenario.slots)
                fires = scenario.jobs * scenario.slots
                await _sleep_until(window.first - timedelta(seconds=1))
                cpu_before = sum(_cpu_seconds(p.pid) for p in procs)
                transactions_before = await _transactions(conn)
                profilers = _profilers(procs, window, profile_dir)
                deadline = window.last + timedelta(seconds=max(30, 3 * scenario.every))
                await _wait_settled(conn, window, fires, deadline)
                cpu = sum(_cpu_seconds(p.pid) for p in procs) - cpu_before
                await asyncio.sleep(1.0)
                transactions = await _transactions(conn) - transactions_before
                for profiler in profilers:
                    profiler.wait()
            finally:
                for proc in procs:
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
                for proc in procs:
                    try:
                        proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                for log in logs:
                    log.close()
            side = await _judge_maintd(conn, scenario, window)
            side.cpu_s, side.ready_s, side.transactions = cpu, ready - began, transactions
            return side
        finally:
            await conn.close()


async def _judge_maintd(conn: asyncpg.Connection, scenario: Scenario, window: Window) -> Side:
    runs = await conn.fetch(
        "SELECT id, job_id, trigger, status, scheduled_for, started_at, finished_at, node FROM maintd.runs"
        " WHERE started_at IS NOT NULL ORDER BY job_id, started_at"
    )
    hits = await conn.fetch("SELECT job, at FROM bench_hits ORDER BY job, at")
    rows = await conn.fetch(
        "SELECT job_id, scheduled_for, status FROM maintd.runs WHERE scheduled_for BETWEEN $1 AND $2",
        window.first, window.last,
    )  # fmt: skip
    side = Side("maintd", scenario.jobs * scenario.slots)
    runs_by_job: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for run in runs:
        runs_by_job[run["job_id"]].append(run)
    starts = {job: [run["started_at"] for run in job_runs] for job, job_runs in runs_by_job.items()}
    hits_per_run: Counter[int] = Counter()
    judged = set(window.times())
    for hit in hits:
        job_runs = runs_by_job.get(hit["job"], [])
        # Started before the insert; a millisecond's slack for the two clocks' rounding.
        at = bisect.bisect_right(starts.get(hit["job"], []), hit["at"] + timedelta(milliseconds=1)) - 1
        if at < 0:
            side.duplicates += 1  # work with no run to account for it
            continue
        run = job_runs[at]
        hits_per_run[run["id"]] += 1
        if run["scheduled_for"] in judged:
            side.lateness.append((hit["at"] - run["scheduled_for"]).total_seconds())
            side.durations.append((run["finished_at"] - run["started_at"]).total_seconds())
            side.start_lateness.append((run["started_at"] - run["scheduled_for"]).total_seconds())
            side.runs_per_node[run["node"]] += 1
    side.duplicates += sum(n - 1 for n in hits_per_run.values() if n > 1)
    seen: dict[tuple[str, datetime], str] = {}
    for row in rows:
        seen[(row["job_id"], row["scheduled_for"])] = row["status"]
    for slot in window.times():
        counts: Counter[str] = Counter()
        for n in range(scenario.jobs):
            counts[seen.get((job_id(n), slot), "no row")] += 1
        side.per_slot[slot] = counts
        side.rows.update(counts)
    return side


# -- bare APScheduler ----------------------------------------------------------


async def _bare_process(dsn: str, jobs: int, every: int, until: float) -> None:
    """The baseline, in a process of its own (``--bare``)."""
    from apscheduler.events import EVENT_JOB_SUBMITTED, JobSubmissionEvent
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    pool = await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
    submitted: dict[str, list[datetime]] = defaultdict(list)

    def on_submitted(event: JobSubmissionEvent) -> None:
        submitted[event.job_id].append(event.scheduled_run_times[-1])

    async def hit(name: str) -> None:
        slot = submitted[name].pop(0)
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO bench_hits (job, slot, at) VALUES ($1, $2, clock_timestamp())", name, slot)

    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.add_listener(on_submitted, EVENT_JOB_SUBMITTED)
    trigger = IntervalTrigger(seconds=every, start_date=EPOCH, timezone=UTC)
    for n in range(jobs):
        scheduler.add_job(hit, trigger, args=[job_id(n)], id=job_id(n), max_instances=1, misfire_grace_time=60)
    scheduler.start()
    print("ready", flush=True)
    await asyncio.sleep(max(0.0, until - time.time()))
    scheduler.shutdown(wait=False)
    await pool.close()


async def run_bare(scenario: Scenario, admin_dsn: str) -> Side:
    async with scratch_database(admin_dsn, "bench_burst") as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(HITS_TABLE)
            began = time.time()
            # The process runs until the deadline; it knows its window only once ready, so the
            # deadline is generous and the bench stops it as soon as the window has settled.
            until = began + 600
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.burst", "--bare", dsn, str(scenario.jobs), str(scenario.every), str(until)],
                stdout=subprocess.PIPE,
            )  # fmt: skip
            try:
                assert proc.stdout is not None
                line = await asyncio.to_thread(proc.stdout.readline)
                if line.strip() != b"ready":
                    raise RuntimeError("the bare APScheduler process did not start")
                ready = time.time()
                window = Window.after(ready, scenario.every, scenario.slots)
                fires = scenario.jobs * scenario.slots
                await _sleep_until(window.first - timedelta(seconds=1))
                cpu_before = _cpu_seconds(proc.pid)
                transactions_before = await _transactions(conn)
                deadline = window.last + timedelta(seconds=max(30, 3 * scenario.every))
                await _sleep_until(window.last + timedelta(seconds=1))
                while datetime.now(UTC) < deadline:
                    done = await conn.fetchval(
                        "SELECT count(*) FROM bench_hits WHERE slot BETWEEN $1 AND $2", window.first, window.last
                    )
                    if done >= fires:
                        break
                    await asyncio.sleep(0.5)
                cpu = _cpu_seconds(proc.pid) - cpu_before
                await asyncio.sleep(1.0)
                transactions = await _transactions(conn) - transactions_before
            finally:
                proc.terminate()
                proc.wait(timeout=60)
            side = Side(
                "bare", scenario.jobs * scenario.slots, cpu_s=cpu, ready_s=ready - began, transactions=transactions
            )
            hits = await conn.fetch(
                "SELECT job, slot, at FROM bench_hits WHERE slot BETWEEN $1 AND $2", window.first, window.last
            )
            per_fire: Counter[tuple[str, datetime]] = Counter()
            for hit in hits:
                per_fire[(hit["job"], hit["slot"])] += 1
                side.lateness.append((hit["at"] - hit["slot"]).total_seconds())
            side.duplicates = sum(n - 1 for n in per_fire.values() if n > 1)
            for slot in window.times():
                ran = sum(1 for n in range(scenario.jobs) if per_fire[(job_id(n), slot)])
                side.per_slot[slot] = +Counter({"succeeded": ran, "no row": scenario.jobs - ran})
                side.rows.update(side.per_slot[slot])
            return side
        finally:
            await conn.close()


# -- report ------------------------------------------------------------------------


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:,.0f} ms"


def _report(side: Side) -> None:
    statuses = ", ".join(f"{status} {n}" for status, n in sorted(side.rows.items()))
    print(
        f"  {side.name}: ready after {side.ready_s:.1f} s; {side.fires} fires: {statuses}; "
        f"{side.duplicates} duplicates; CPU {side.cpu_s:.1f} s; "
        f"{side.transactions / side.fires:.1f} database transactions per fire"
    )
    print(
        f"    lateness of the INSERT: p50 {_ms(side.pct(0.5))}, p99 {_ms(side.pct(0.99))}, "
        f"max {_ms(side.pct(1.0))} ({side.ran} inserts)"
    )
    if side.durations:
        print(
            f"    run started: p50 {_ms(_pct(side.start_lateness, 0.5))}, p99 {_ms(_pct(side.start_lateness, 0.99))} "
            f"late; duration_s p50 {_ms(_pct(side.durations, 0.5))}, p99 {_ms(_pct(side.durations, 0.99))}; "
            f"runs per replica {dict(sorted(side.runs_per_node.items()))}"
        )
    for slot, counts in side.per_slot.items():
        print(f"    slot {slot:%H:%M:%S}: " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items())))


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f}x, spread {min(values):.2f}-{max(values):.2f}x"


def _summarise(scenario: Scenario, rounds: list[tuple[Side, Side]]) -> None:
    print(
        f"\n== {scenario.name}: {scenario.jobs} jobs every {scenario.every}s, {REPLICAS} replicas, {len(rounds)} round(s)"
    )
    for label, p in (("p50", 0.5), ("p99", 0.99)):
        maintd = [m.pct(p) for m, _ in rounds]
        bare = [b.pct(p) for _, b in rounds]
        ratios = [m / b for m, b in zip(maintd, bare, strict=True)]
        print(
            f"  INSERT lateness {label}: maintd {_ms(statistics.median(maintd))}, "
            f"bare {_ms(statistics.median(bare))}; maintd/bare {_spread(ratios)} "
            f"(rounds: {', '.join(f'{r:.2f}x' for r in ratios)})"
        )
    totals: Counter[str] = Counter()
    for maintd, _ in rounds:
        totals.update(maintd.rows)
    print(
        f"  maintd fires: {sum(m.fires for m, _ in rounds)}; "
        + ", ".join(f"{s} {n}" for s, n in sorted(totals.items()))
        + f"; duplicates {sum(m.duplicates for m, _ in rounds)}"
    )
    print(f"  bare fires run: {sum(b.ran for _, b in rounds)} of {sum(b.fires for _, b in rounds)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="burst")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each phase, interleaved (default 3)")
    parser.add_argument("--jobs", type=int, help="override the scenario's number of jobs")
    parser.add_argument("--slots", type=int, help="override the scenario's number of judged slots")
    parser.add_argument("--keep-logs", metavar="DIR", type=Path, help="keep each round's replica logs in DIR")
    parser.add_argument(
        "--profile", metavar="DIR", type=Path,
        help="sample each maintd replica with py-spy over the judged window (collapsed stacks in DIR)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    admin_dsn = os.environ.get("MAINTD_BENCH_DSN", DEFAULT_ADMIN_DSN)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    print(f"bench.burst: {os.cpu_count()} CPUs; scenarios {', '.join(names)}")
    began = time.time()
    for name in names:
        scenario = SCENARIOS[name]
        if args.jobs or args.slots:
            scenario = Scenario(name, args.jobs or scenario.jobs, scenario.every, args.slots or scenario.slots)
        rounds: list[tuple[Side, Side]] = []
        for number in range(1, args.rounds + 1):
            print(f"\n######## {name}, round {number} of {args.rounds}")
            with tempfile.TemporaryDirectory(prefix="bench-burst-") as workdir:
                if number % 2:
                    bare = asyncio.run(run_bare(scenario, admin_dsn))
                    maintd = asyncio.run(run_maintd(scenario, admin_dsn, Path(workdir), args.profile))
                else:
                    maintd = asyncio.run(run_maintd(scenario, admin_dsn, Path(workdir), args.profile))
                    bare = asyncio.run(run_bare(scenario, admin_dsn))
                if args.keep_logs:
                    shutil.copytree(workdir, args.keep_logs / f"{name}-round-{number}", dirs_exist_ok=True)
            _report(bare)
            _report(maintd)
            rounds.append((maintd, bare))
        _summarise(scenario, rounds)
    print(f"\ntotal bench time: {time.time() - began:.0f} s")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--bare":
        _, _, dsn, jobs, every, until = sys.argv
        asyncio.run(_bare_process(dsn, int(jobs), int(every), float(until)))
        sys.exit(0)
    sys.exit(main())
