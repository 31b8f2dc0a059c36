"""The overview's schedules in words."""

from __future__ import annotations

import pytest

from maintd.admin_api.console.schedule_words import describe_schedule

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("0 0 * * *", "At 00:00 every day"),
        ("@daily", "At 00:00 every day"),
        ("@hourly", "Every hour"),
        ("every 30s", "Every 30 seconds"),
        ("every 1h", "Every hour"),
        ("*/5 * * * *", "Every 5 minutes"),
        ("0 9 * * mon-fri", "At 09:00 on Monday to Friday"),
        ("0 6,18 * * *", "At 06:00, 18:00 every day"),
        ("0 0 1,15 * mon", "At 00:00 on day 1,15 of the month or on Monday"),
        ("0 0 1 1 *", "At 00:00 on day 1 of the month in January"),
        ("5 8-18 * * *", "At minute 5 past hour 8-18 every day"),
        ("30 */2 * * *", "At minute 30 of every 2 hours"),
    ],
)
def test_schedules_read_as_words(expression: str, words: str) -> None:
    assert describe_schedule(expression) == words
