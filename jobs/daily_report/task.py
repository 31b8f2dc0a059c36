"""The ``daily_report`` task: what happened yesterday, mailed to the on-call admins once a day.

Gather (runs, failures, longest runs, unrun fires, jobs needing attention,
optionally sessions) in one database snapshot; decide what needs attention;
render text and HTML; send one email; return a small result.

Sent once per report day, whatever triggers, retries or replicas run the job.
The day's row in ``maintd.report_deliveries`` is the claim:

1. claim: insert it as ``sending`` for this run, or take it over when the last
   attempt ``failed`` or the run that claimed it has ended (crashed, lost,
   cancelled mid-send). A row that is ``sent``, or ``sending`` by a live run,
   makes this run return ``{"sent": false, "reason": ...}`` without sending;
2. send through ``[smtp]``;
3. mark ``sent``; if the server refused or was unreachable, mark ``failed``
   with its answer and fail the run, so a retry (or the next trigger) sends it.

A crash between the server accepting the mail and step 3 leaves the claim to a
dead run, so the next run of that day sends it again: at-least-once, because a
duplicate mail is better than a report lost in silence. The message keeps one
Message-ID per job and day, so mail clients can recognize such a duplicate,
and the next days' reports list any earlier report never confirmed sent.
"""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, model_validator

from maintd.jobs.context import JobContext
from maintd.jobs.daily_report import store
from maintd.jobs.daily_report.data import (
    ReportData,
    ReportPeriod,
    SessionStats,
    attention_items,
    report_period,
)
from maintd.jobs.daily_report.render import render_report
from maintd.jobs.identifiers import Identifier, TableName
from maintd.jobs.mail import EmailAddresses, SmtpSettings
from maintd.jobs.mailer import MailNotConfigured, build_message, send_message
from maintd.jobs.registry import task

MAX_FAILURES_LISTED = 20
LONGEST_RUNS_LISTED = 5
# How far back the report looks for earlier reports never confirmed sent.
UNSENT_LOOKBACK_DAYS = 7


class DailyReportParams(BaseModel):
    """``[jobs.<id>.params]`` of a ``daily_report`` job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to: EmailAddresses = Field(description="recipients' addresses")
    subject: str = Field(
        "[maintd]", max_length=100, pattern=r"^[^\r\n]*$", description="prefix of the subject line; may be empty"
    )
    period: Literal["previous_day", "last_24h"] = Field(
        "previous_day",
        description="previous_day: the calendar day before the fire, in the job's timezone (23-25 hours); "
        "last_24h: the 24 hours before the fire",
    )
    sessions_table: TableName | None = Field(None, description="table of sessions to count, e.g. app.sessions")
    expires_column: Identifier | None = Field(None, description="its expiry column (timestamptz)")
    created_column: Identifier | None = Field(None, description="its creation column, to count sessions created")

    @model_validator(mode="after")
    def _sessions_together(self) -> DailyReportParams:
        if (self.sessions_table is None) != (self.expires_column is None):
            raise ValueError("sessions_table and expires_column go together")
        if self.created_column is not None and self.sessions_table is None:
            raise ValueError("created_column needs sessions_table")
        return self


# The recipients are the config's alone (an operator would otherwise mail the run history
# anywhere); how the report is titled and what period it covers may change for one run.
@task("daily_report", overridable=("subject", "period"), dry_run=True)
async def daily_report(ctx: JobContext, params: DailyReportParams) -> dict[str, Any]:
    """Mail a report of the previous day's runs to the admins, once per day."""
    if ctx.smtp is None and not ctx.dry_run:
        raise MailNotConfigured(ctx.job_id)
    now = ctx.now()
    # The fire time, not the clock, picks the day: a retry after midnight, or a catch-up
    # the morning after an outage, reports the day its fire was for.
    period = report_period(params.period, ctx.scheduled_for, ctx.timezone)
    data = await _gather(ctx, params, period, now)
    rendered = render_report(data)
    if ctx.dry_run:
        # What would be sent, as it would be sent; the day is neither claimed nor marked.
        ctx.log.info("daily_report_dry_run", report_date=period.report_date.isoformat(), subject=rendered.subject)
        return {
            "dry_run": True,
            "sent": False,
            "report_date": period.report_date.isoformat(),
            "period": [period.start.isoformat(), period.end.isoformat()],
            "recipients": len(params.to),
            "subject": rendered.subject,
            "text": rendered.text,
        }
    assert ctx.smtp is not None
    message = build_message(
        sender=ctx.smtp.from_address,
        to=params.to,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        date=now,
        message_id=_message_id(ctx.job_id, period, ctx.smtp.from_address),
    )
    return await _deliver(ctx, ctx.smtp, period, message, params.to)


async def _deliver(
    ctx: JobContext, smtp: SmtpSettings, period: ReportPeriod, message: EmailMessage, to: list[str]
) -> dict[str, Any]:
    """Claim the day, send, mark it sent (the protocol in the module docstring)."""
    day = period.report_date
    claim = store.Claim(ctx.job_id, period, ctx.run_id, ctx.now(), to, message["Message-ID"])
    # A run whose lease ran out may be running again elsewhere: that run sends the day's report.
    ctx.raise_if_cancelled()
    if await store.claim_delivery(ctx.pool, claim) is None:
        return await _not_sent(ctx, period)
    try:
        refused = await send_message(smtp, message)
    except Exception as exc:
        # Release the claim with the server's answer, so a retry sends it.
        await store.mark_failed(ctx.pool, ctx.job_id, day, ctx.run_id, str(exc))
        ctx.log.warning("daily_report_not_sent", report_date=day.isoformat(), error=str(exc))
        raise
    if not await store.mark_sent(ctx.pool, ctx.job_id, day, ctx.run_id, ctx.now()):
        ctx.log.warning("daily_report_sent_twice", report_date=day.isoformat())
    if refused:
        ctx.log.warning("daily_report_recipients_refused", report_date=day.isoformat(), refused=refused)
    ctx.log.info("daily_report_sent", report_date=day.isoformat(), recipients=len(to), subject=message["Subject"])
    result: dict[str, Any] = {
        "sent": True,
        "report_date": day.isoformat(),
        "period": [period.start.isoformat(), period.end.isoformat()],
        "recipients": len(to) - len(refused),
        "subject": message["Subject"],
    }
    if refused:
        result["refused"] = refused
    return result


async def _gather(ctx: JobContext, params: DailyReportParams, period: ReportPeriod, now: datetime) -> ReportData:
    """Read everything the report shows; the run history in one consistent snapshot."""
    async with ctx.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        jobs = await store.runs_by_job(conn, period, ctx.run_id)
        dry_runs = await store.dry_runs_by_job(conn, period)
        failures, failures_total = await store.failures(conn, period, MAX_FAILURES_LISTED)
        longest = await store.longest_runs(conn, period, LONGEST_RUNS_LISTED)
        unrun = await store.unrun_fires(conn, period)
        health = await store.job_health(conn, period.start, ctx.run_id)
        unsent = await store.unsent_reports(conn, ctx.job_id, period.report_date, UNSENT_LOOKBACK_DAYS)
    sessions = None
    if params.sessions_table is not None and params.expires_column is not None:
        try:
            sessions = await store.session_stats(
                ctx.pool, period, now, params.sessions_table, params.expires_column, params.created_column
            )
        except asyncpg.PostgresError as exc:
            # The run history is what the admin needs most; a wrong sessions table shows in the
            # report itself instead of keeping the whole report from going out.
            ctx.log.warning("daily_report_sessions_failed", table=params.sessions_table, error=str(exc))
            sessions = SessionStats(
                params.sessions_table,
                created=None,
                expired=0,
                deleted=None,
                active=0,
                awaiting_cleanup=0,
                error=str(exc),
            )
    return ReportData(
        job_id=ctx.job_id,
        period=period,
        generated_at=now,
        subject_prefix=params.subject,
        jobs=jobs,
        failures=failures,
        failures_total=failures_total,
        longest=longest,
        unrun=unrun,
        attention=attention_items(health, unsent, ctx.job_id, now),
        sessions=sessions,
        dry_runs=dry_runs,
    )


async def _not_sent(ctx: JobContext, period: ReportPeriod) -> dict[str, Any]:
    """Say whose claim on the day stands; this run succeeds without sending."""
    day = period.report_date.isoformat()
    delivery = await store.get_delivery(ctx.pool, ctx.job_id, period.report_date)
    assert delivery is not None, "a claim lost to a conflict has a row; rows are never deleted"
    if delivery.sent_at is not None:
        reason = f"already sent at {delivery.sent_at.isoformat()} by run {delivery.run_id}"
    elif delivery.state == "sending":
        reason = f"being sent by run {delivery.run_id} on {delivery.node}"
    else:
        # That run failed between our claim and this look; its retry, or the next run, sends it.
        reason = f"run {delivery.run_id} just failed to send it: {delivery.error}"
    ctx.log.info("daily_report_skipped", report_date=day, reason=reason)
    return {"sent": False, "report_date": day, "reason": reason}


def _message_id(job_id: str, period: ReportPeriod, sender: str) -> str:
    """One Message-ID per job and day, so a resent report is recognizably the same message."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "maintd"
    return f"<daily-report.{job_id}.{period.report_date.isoformat()}@{domain}>"
