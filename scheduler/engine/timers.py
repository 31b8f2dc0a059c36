"""APScheduler's part: when fires are due. One timer per schedule, shared by the
jobs on it, and one per retry; each hands its due fire times to the engine.

Jobs sharing a schedule fire at the same instants, and APScheduler's work per
fire (the next fire time, the job store update) is then paid once per schedule
instead of once per job.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.job import Job as APJob
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from maintd.scheduler.config.model import JobConfig
from maintd.scheduler.engine.fire_executor import FireExecutor, fire_placeholder
from maintd.scheduler.engine.trigger import ScheduleTrigger
from maintd.scheduler.store.records import Run

_EXECUTOR = "maintd"

# The ids of the jobs due, and their fire times (several when the loop was blocked past some).
FiresHandler = Callable[[list[str], list[datetime]], None]
# The failed run to retry, and the retry's fire times.
RetryHandler = Callable[[Run, list[datetime]], None]


class Timers:
    def __init__(self, *, on_fires: FiresHandler, on_retry: RetryHandler) -> None:
        self.on_fires = on_fires
        self.on_retry = on_retry
        # Kept at hand: it holds the timers sorted by their next fire, so the fires coming
        # due are found without a walk over every timer (the claims ahead look 4 times a second).
        self._store = MemoryJobStore()
        self._scheduler = AsyncIOScheduler(timezone=UTC, jobstores={"default": self._store})
        self._scheduler.add_executor(FireExecutor(self._hand_over), alias=_EXECUTOR)
        # APScheduler job id -> the ids of the jobs sharing that schedule.
        self._job_ids: dict[str, list[str]] = {}

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    @staticmethod
    def _timer_id(job: JobConfig) -> str:
        return f"timer:{job.timezone.key}:{job.schedule.expression}"

    def add(self, job: JobConfig) -> None:
        timer_id = self._timer_id(job)
        if timer_id not in self._job_ids:
            self._job_ids[timer_id] = []
            self._scheduler.add_job(
                fire_placeholder,
                trigger=ScheduleTrigger(job.schedule),
                id=timer_id,
                name=timer_id,
                executor=_EXECUTOR,
                # Late fires are never dropped by APScheduler: the engine records them.
                misfire_grace_time=None,
                coalesce=False,
            )
        self._job_ids[timer_id].append(job.id)

    def remove(self, job: JobConfig) -> None:
        timer_id = self._timer_id(job)
        self._job_ids[timer_id].remove(job.id)
        if not self._job_ids[timer_id]:
            del self._job_ids[timer_id]
            self._scheduler.remove_job(timer_id)

    def add_retry(self, retry_id: str, at: datetime, run: Run) -> bool:
        """Fire a retry of ``run`` at ``at``; False if that retry is set already."""
        if self._scheduler.get_job(retry_id) is not None:
            return False
        self._scheduler.add_job(
            fire_placeholder,
            trigger=DateTrigger(run_date=at, timezone=UTC),
            id=retry_id,
            executor=_EXECUTOR,
            misfire_grace_time=None,
            kwargs={"retry_of": run},
        )
        return True

    def due_before(self, until: datetime) -> list[tuple[str, datetime]]:
        """The next scheduled fire of each job, where it comes before ``until``."""
        return [
            (job_id, apjob.next_run_time.astimezone(UTC))
            for apjob in self._store.get_due_jobs(until)
            if apjob.next_run_time is not None and apjob.next_run_time < until
            for job_id in self._job_ids.get(apjob.id, ())
        ]

    def next_fire_time(self) -> datetime | None:
        """The earliest pending fire, retries included."""
        # In UTC: aware datetimes sharing a zone compare by wall time, ignoring DST's fold.
        # (The store orders its timers by UTC timestamp.)
        first = self._store.get_next_run_time()
        return None if first is None else first.astimezone(UTC)

    def wakeup(self) -> None:
        """Look for due fires now rather than at the time APScheduler computed: the clock
        it waits on was moved (a frozen test clock, see maintd.testing)."""
        self._scheduler.wakeup()

    def _hand_over(self, apjob: APJob, run_times: list[datetime]) -> None:
        retry_of: Run | None = apjob.kwargs.get("retry_of")
        if retry_of is not None:
            self.on_retry(retry_of, run_times)
        else:
            self.on_fires(self._job_ids[apjob.id], run_times)
