"""The console's replay form: whole days in the browser's zone, a dry run until confirmed."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from maintd.admin_api.console.pages.replay import ReplayForm
from maintd.admin_api.interface import Unprocessable

pytestmark = pytest.mark.unit
BERLIN = ZoneInfo("Europe/Berlin")


def test_the_days_run_from_the_first_midnight_to_the_end_of_the_last_day_in_the_browsers_zone() -> None:
    asked = ReplayForm.read({"from": "2026-10-24", "to": "2026-10-25", "reason": " outage "}).request(BERLIN)
    assert asked.from_ == datetime(2026, 10, 24, tzinfo=BERLIN)
    assert asked.to == datetime(2026, 10, 26, tzinfo=BERLIN) - timedelta(microseconds=1)
    assert (asked.dry_run, asked.reason) == (True, "outage")
    assert ReplayForm.read({"from": "2026-10-24", "to": "2026-10-24", "confirm": "1"}).request(BERLIN).dry_run is False


@pytest.mark.parametrize(
    ("first", "last", "field"),
    [
        ("", "2026-01-01", "from"),
        ("2026-01-01", "9999-12-31", "from"),
        ("2026-01-02", "2026-01-01", "Value error, 'to' must not be before 'from'"),
    ],
)
def test_a_range_that_is_no_range_is_refused(first: str, last: str, field: str) -> None:
    with pytest.raises(Unprocessable) as refused:
        ReplayForm.read({"from": first, "to": last}).request(BERLIN)
    assert refused.value.errors[0]["msg"].startswith(field)
