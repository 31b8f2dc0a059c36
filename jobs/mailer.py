"""Sending mail through the ``[smtp]`` server with aiosmtplib.

Every way a send can fail (refused, unreachable, timed out, bad credentials)
surfaces as :class:`MailNotSent` carrying the server's own answer, such as
``550 5.7.1 relaying denied``, so a failed run says what the server said.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib

from maintd.jobs.mail import SmtpSettings


class MailError(Exception):
    """Mail could not be sent."""


class MailNotConfigured(MailError):
    """A job that sends mail runs without an ``[smtp]`` section."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} sends mail, but the config has no [smtp] section (host, port, from)")
        self.job_id = job_id


class MailNotSent(MailError):
    """The mail server refused the message or could not be reached."""

    def __init__(self, settings: SmtpSettings, answer: str) -> None:
        super().__init__(f"SMTP server {settings.host}:{settings.port} did not take the message: {answer}")
        self.answer = answer


def build_message(
    *,
    sender: str,
    to: Sequence[str],
    subject: str,
    text: str,
    html: str,
    date: datetime,
    message_id: str,
) -> EmailMessage:
    """A multipart/alternative message: plain text first, HTML preferred by clients that show it."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


async def send_message(settings: SmtpSettings, message: EmailMessage) -> dict[str, str]:
    """Send ``message``; return the recipients the server refused (when it took the others).

    Raises :class:`MailNotSent` when no recipient got it.
    """
    password = settings.password()
    if settings.username is not None and password is None:
        # Sending without the login would only earn a "530 authentication required".
        raise MailNotSent(settings, f"the password variable ${settings.password_env} is not set")
    try:
        refused, _ = await aiosmtplib.send(
            message,
            hostname=settings.host,
            port=settings.port,
            username=settings.username,
            password=password,
            use_tls=settings.security == "tls",
            # True: STARTTLS is required, never silently skipped; False: plain.
            start_tls=settings.security == "starttls",
            timeout=settings.timeout_s,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        answer = "; ".join(f"{r.code} {r.message} ({r.recipient})" for r in exc.recipients)
        raise MailNotSent(settings, answer) from exc
    except aiosmtplib.SMTPResponseException as exc:
        raise MailNotSent(settings, f"{exc.code} {exc.message}") from exc
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise MailNotSent(settings, str(exc) or exc.__class__.__name__) from exc
    return {recipient: f"{response.code} {response.message}" for recipient, response in refused.items()}
