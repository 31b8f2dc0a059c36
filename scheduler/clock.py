"""The daemon's clock. Read through this one function so a frozen test clock governs it."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
