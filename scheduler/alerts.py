"""Alerts: tell someone when a job's run ends badly or the job is overdue.

The engine calls :meth:`Alerter.run_ended` and :meth:`Alerter.job_overdue`;
both return at once. Deciding (a database round trip or two) and delivering
happen in background tasks the alerter owns, so a slow, failing or unreachable
receiver never holds up or breaks a run, and :meth:`Alerter.close` bounds how
long shutdown waits for them.

The rules, cluster-wide (several replicas share the database):

- A run that ended with a status in ``[alerts].on`` (failed, timed_out, lost)
  alerts when it is the K-th or later run in a row without success
  (``after_failures``; skipped and missed fires do not count, a cancelled run
  counts but never alerts itself), at most once per job per ``min_interval``.
  A success resets the count. Replicas claim the alert in one statement on
  ``maintd.alert_state``: one of them sends it, never two.
- An overdue job (the dead-man's switch) alerts once per episode. An episode is
  the time after one last success, so the next success ends it and the next
  overdue spell alerts again. Overdue alerts are not counted against
  ``min_interval`` (nor it against them): "never succeeds any more" is news even
  right after a failure alert, and the episode already limits them to one.
- Each channel (every webhook, the email) is delivered on its own and retried
  after 1 s, 5 s and 25 s, then given up: logged and counted in
  ``maintd_alerts_sent_total{outcome="failed"}``. A claimed alert whose delivery
  fails is not handed to another replica: the log says it was not delivered.
"""

from __future__ import annotations

import asyncio
import functools
import html
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import make_msgid, parseaddr
from typing import Any, Literal

import httpx
import structlog

from maintd.jobs.durations import format_duration
from maintd.jobs.mail import SmtpSettings
from maintd.jobs.mailer import MailError, build_message, send_message
from maintd.scheduler.clock import utcnow
from maintd.scheduler.config.alerts import AlertsConfig, WebhookConfig
from maintd.scheduler.metrics import Metrics
from maintd.scheduler.store.records import Run, run_out
from maintd.scheduler.store.run_store import RunStore

AlertEvent = Literal["run_failed", "run_timed_out", "run_lost", "job_overdue"]
# Seconds before each retry of a delivery: four attempts over about half a minute.
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (1.0, 5.0, 25.0)
WEBHOOK_TIMEOUT_S = 10.0
_ALERTING_STATUSES = frozenset({"failed", "timed_out", "lost"})
_VERBS = {"failed": "failed", "timed_out": "timed out", "lost": "was lost"}
# Slack shows about 4,000 characters of text; one line of reason is enough for a glance.
_REASON_CHARS = 300
_ERROR_TAIL_LINES = 40
_ERROR_TAIL_CHARS = 6000


@dataclass(frozen=True)
class Alert:
    """One alert, rendered for every channel."""

    event: AlertEvent
    job_id: str
    text: str  # one line, Slack-compatible
    subject: str
    body: str
    payload: dict[str, Any]


# -- rendering (pure) --------------------------------------------------------


def run_alert(run: Run, *, failures: int, node: str, at: datetime) -> Alert:
    """The alert for a run that ended failed, timed_out or lost, the ``failures``-th in a row."""
    verb = _VERBS[run.status]
    in_a_row = f", {failures} in a row" if failures > 1 else ""
    reason = error_summary(run.error) or run.status
    text = f"maintd: job {run.job_id} {verb} (run {run.id} on {run.node}{in_a_row}): {reason}"
    subject = f"[maintd] {run.job_id} {verb} (run {run.id}{in_a_row})"
    lines = [
        text,
        "",
        f"Job:        {run.job_id}",
        f"Run:        {run.id} (trigger {run.trigger}, attempt {run.attempt})",
        f"Status:     {run.status}",
        f"Scheduled:  {_iso(run.scheduled_for)}",
        f"Started:    {_iso(run.started_at)}",
        f"Finished:   {_iso(run.finished_at)}",
        f"Ran on:     {run.node}",
        f"Runs without success in a row: {failures}",
    ]
    if run.error:
        lines += ["", "Error (its end):", error_tail(run.error)]
    lines += ["", f"Sent by maintd on {node} at {at.isoformat()}."]
    event: AlertEvent = f"run_{run.status}"  # type: ignore[assignment]
    payload = _payload(text, event, run.job_id, run=run, failures=failures, node=node, at=at)
    return Alert(event, run.job_id, _slack_escape(text), subject, "\n".join(lines) + "\n", payload)


def overdue_alert(job_id: str, *, last_success: datetime | None, window: timedelta, node: str, at: datetime) -> Alert:
    """The alert for a job without a success within ``window`` (the dead-man's switch)."""
    within = format_duration(window)
    since = f"last success {last_success.isoformat()}" if last_success else "it never succeeded"
    text = f"maintd: job {job_id} is overdue: no success within {within} ({since})"
    subject = f"[maintd] {job_id} overdue: no success within {within}"
    body = "\n".join(
        [
            text,
            "",
            f"Job:          {job_id}",
            f"Expected:     a success within {within}",
            f"Last success: {_iso(last_success) if last_success else 'never'}",
            "",
            "Whether it failed, never ran or is paused: see GET /admin/jobs/" + job_id + " and its runs.",
            "",
            f"Sent by maintd on {node} at {at.isoformat()}.",
        ]
    )
    payload = _payload(
        text,
        "job_overdue",
        job_id,
        run=None,
        failures=None,
        node=node,
        at=at,
        last_success=last_success,
        window=within,
    )
    return Alert("job_overdue", job_id, _slack_escape(text), subject, body + "\n", payload)


def _payload(
    text: str,
    event: AlertEvent,
    job_id: str,
    *,
    run: Run | None,
    failures: int | None,
    node: str,
    at: datetime,
    last_success: datetime | None = None,
    window: str | None = None,
) -> dict[str, Any]:
    # Every key in every event, null where it does not apply: receivers need no branches.
    return {
        "text": _slack_escape(text),
        "event": event,
        "job_id": job_id,
        # The run object exactly as GET /admin/runs/{id} serializes it.
        "run": run_out(run).model_dump(mode="json") if run is not None else None,
        "consecutive_failures": failures,
        "last_success": last_success.isoformat() if last_success else None,
        "expect_success_within": window,
        "node": node,
        "at": at.isoformat(),
    }


def error_summary(error: str | None) -> str:
    """One line of an error: a traceback's last line (the exception), or the message itself."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= _REASON_CHARS else line[: _REASON_CHARS - 1] + "…"


def error_tail(error: str) -> str:
    """The end of an error, where a traceback says what went wrong, bounded for a mail body."""
    tail = "\n".join(error.rstrip().splitlines()[-_ERROR_TAIL_LINES:])
    return tail if len(tail) <= _ERROR_TAIL_CHARS else "…" + tail[-_ERROR_TAIL_CHARS:]


def should_alert(status: str, failures: int, config: AlertsConfig, after_failures: int | None = None) -> bool:
    """Whether a run that ended with ``status``, the ``failures``-th without success in a row, alerts.

    ``after_failures`` is a job's own K, overriding ``[alerts].after_failures``."""
    threshold = config.after_failures if after_failures is None else after_failures
    return status in _ALERTING_STATUSES and status in config.on and failures >= threshold


def _slack_escape(text: str) -> str:
    # Slack reads <...> as links and mentions: the three characters it asks to escape.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else "-"


# -- delivery ----------------------------------------------------------------


class DeliveryFailed(Exception):
    """One delivery attempt failed; ``retry`` says whether another attempt may succeed."""

    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.retry = retry


class Alerter:
    """Decides which run endings and overdue jobs alert, and delivers the alerts in the background."""

    def __init__(
        self,
        config: AlertsConfig,
        store: RunStore,
        *,
        node: str,
        smtp: SmtpSettings | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = utcnow,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        after_failures: Mapping[str, int] | None = None,
    ) -> None:
        self.config = config
        # Jobs with a K of their own (a per-job override); the others use [alerts].after_failures.
        self.after_failures = dict(after_failures or {})
        self.store = store
        self.node = node
        self.smtp = smtp
        self.metrics = metrics
        self.clock = clock
        self.retry_delays = tuple(retry_delays)
        self.log = structlog.get_logger("maintd.alerts").bind(node=node)
        self._http = httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S, follow_redirects=False)
        self._tasks: set[asyncio.Task[None]] = set()
        # The last success each overdue job was seen with: the episode already claimed
        # (by this replica or another), so that each check does not ask the database.
        self._overdue_seen: dict[str, datetime | None] = {}
        self._closed = False

    @property
    def enabled(self) -> bool:
        return self.config.enabled and not self._closed

    async def run_ended(self, run: Run) -> None:
        """A run's outcome was recorded. Returns at once; alerting goes on in the background."""
        if not self.enabled or run.status not in _ALERTING_STATUSES or run.status not in self.config.on:
            # A success needs nothing: the failure count restarts from the runs
            # themselves, and an overdue episode ends because the last success changed.
            return
        if run.dry_run:  # asked to change nothing: its outcome is the operator's to read, not news
            return
        self._spawn(self._alert_run(run), name=f"alert:run:{run.id}")

    async def job_overdue(self, job_id: str, last_success: datetime | None, window: timedelta, now: datetime) -> None:
        """A job has had no success within ``window``; call it at every check, it alerts once per episode."""
        if not self.enabled or "overdue" not in self.config.on:
            return
        if job_id in self._overdue_seen and self._overdue_seen[job_id] == last_success:
            return
        self._overdue_seen[job_id] = last_success
        self._spawn(self._alert_overdue(job_id, last_success, window, now), name=f"alert:overdue:{job_id}")

    async def idle(self) -> None:
        """Wait until every pending decision and delivery has finished (tests)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self, timeout: timedelta) -> None:
        """Stop taking alerts; wait up to ``timeout`` for pending deliveries, then abandon them."""
        self._closed = True
        pending = set(self._tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=max(timeout.total_seconds(), 0))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            self.log.warning("alerts_abandoned", pending=len(pending), waited_s=timeout.total_seconds())
        await self._http.aclose()

    # -- deciding --------------------------------------------------------------

    async def _alert_run(self, run: Run) -> None:
        log = self.log.bind(job_id=run.job_id, run_id=run.id)
        at = self.clock()
        try:
            failures = await self.store.failure_streak(run.job_id, run.id, run.finished_at or at)
            if not should_alert(run.status, failures, self.config, self.after_failures.get(run.job_id)):
                log.debug("alert_not_due", status=run.status, failures=failures)
                return
            if not await self.store.claim_run_alert(run.job_id, run.id, at, self.node, self.config.min_interval):
                # Sent for this run by another replica, or the job's last alert is too recent.
                log.info(
                    "alert_suppressed",
                    status=run.status,
                    failures=failures,
                    min_interval=format_duration(self.config.min_interval),
                )
                return
        except Exception as exc:
            log.error("alert_check_failed", status=run.status, error=repr(exc))
            return
        await self._deliver(run_alert(run, failures=failures, node=self.node, at=at))

    async def _alert_overdue(
        self, job_id: str, last_success: datetime | None, window: timedelta, now: datetime
    ) -> None:
        log = self.log.bind(job_id=job_id)
        try:
            won = await self.store.claim_overdue_alert(job_id, now, self.node)
        except Exception as exc:
            self._overdue_seen.pop(job_id, None)  # ask again at the next check
            log.error("alert_check_failed", alert="job_overdue", error=repr(exc))
            return
        if won:
            await self._deliver(overdue_alert(job_id, last_success=last_success, window=window, node=self.node, at=now))

    # -- delivering -------------------------------------------------------------

    async def _deliver(self, alert: Alert) -> None:
        attempts: list[Awaitable[None]] = [
            self._with_retries(alert, "webhook", hook.target(), functools.partial(self._post, hook, alert.payload))
            for hook in self.config.webhooks
        ]
        if self.config.email is not None:
            to = self.config.email.to
            attempts.append(self._with_retries(alert, "email", ", ".join(to), lambda: self._mail(alert, to)))
        await asyncio.gather(*attempts)

    async def _with_retries(self, alert: Alert, channel: str, target: str, send: Callable[[], Awaitable[None]]) -> None:
        log = self.log.bind(job_id=alert.job_id, alert=alert.event, channel=channel, target=target)
        delays = (*self.retry_delays, None)
        for attempt, delay in enumerate(delays, start=1):
            try:
                await send()
            except Exception as exc:
                reason = str(exc) or exc.__class__.__name__
                retry = exc.retry if isinstance(exc, DeliveryFailed) else True
                if retry and delay is not None:
                    log.warning("alert_delivery_failed", attempt=attempt, reason=reason, retry_in_s=delay)
                    await asyncio.sleep(delay)
                    continue
                log.error("alert_not_delivered", attempts=attempt, reason=reason)
                self._count(channel, "failed")
                return
            log.info("alert_sent", attempt=attempt)
            self._count(channel, "sent")
            return

    async def _post(self, hook: WebhookConfig, payload: dict[str, Any]) -> None:
        try:
            url, headers = hook.resolve()
        except (LookupError, ValueError) as exc:
            raise DeliveryFailed(str(exc), retry=False) from exc
        try:
            response = await self._http.post(url, json=payload, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{exc.__class__.__name__}: {exc}".rstrip(": "), retry=True) from exc
        if not response.is_success:
            # 4xx other than timeouts and rate limits means this request will never do.
            retry = response.status_code >= 500 or response.status_code in (408, 429)
            snippet = response.text[:200].strip()
            raise DeliveryFailed(
                f"HTTP {response.status_code} {response.reason_phrase}" + (f": {snippet}" if snippet else ""),
                retry=retry,
            )

    async def _mail(self, alert: Alert, to: Sequence[str]) -> None:
        if self.smtp is None:  # config validation forbids it; a clear log line if it ever happens
            raise DeliveryFailed("alert mail needs an [smtp] section", retry=False)
        sender = self.smtp.from_address
        domain = parseaddr(sender)[1].rpartition("@")[2] or "maintd"
        message = build_message(
            sender=sender,
            to=to,
            subject=alert.subject,
            text=alert.body,
            html=f"<pre>{html.escape(alert.body)}</pre>\n",
            date=self.clock(),
            message_id=make_msgid("maintd-alert", domain=domain),
        )
        try:
            refused = await send_message(self.smtp, message)
        except MailError as exc:
            raise DeliveryFailed(str(exc), retry=True) from exc
        if refused:
            self.log.warning("alert_mail_refused", job_id=alert.job_id, refused=refused)

    def _count(self, channel: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.alerts_sent.labels(channel, outcome).inc()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # Everything above catches its own errors; this is the last guard for the caller.
            self.log.error("alert_task_crashed", task=task.get_name(), error=repr(exc))
