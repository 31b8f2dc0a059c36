"""How many rows the next batch of a big delete takes: a fixed number, or as many as a time budget allows.

``batch_size = "auto"`` sizes each batch from how long the last one's statements
took, so that a fast server deletes in few large batches and a slow or busy one
in many small ones, every statement staying within ``max_statement``. Pure: it is
fed sizes and seconds, and does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from maintd.jobs.durations import duration_param

# The first batch of an automatic size: small enough to stay within any sane budget
# even with the table out of cache (a random heap page read per row).
FIRST_BATCH = 500
SMALLEST_BATCH = 10
# Whatever the budget and the measurements say: one batch's rows must not make a
# statement run for seconds when the server turns slow under it (a lock wait, a
# cold cache). At the ~1 us a row of a warm default server this is 50 ms.
LARGEST_BATCH = 50_000
# The size aims at this share of the budget, so the growth below never passes it.
TARGET_SHARE = 0.5
# At most this much larger per batch: a small batch's time is mostly fixed
# costs, and the rows beyond it may be colder than those measured.
MAX_GROWTH = 4.0
DEFAULT_MAX_STATEMENT = timedelta(milliseconds=50)
# Beyond this a "short" statement is no longer short: locks and snapshots held for seconds.
LONGEST_MAX_STATEMENT = timedelta(seconds=10)


class BatchSizer(Protocol):
    """Says how many rows the next batch takes, and learns from how long the last one took."""

    def next_size(self) -> int: ...

    def record(self, size: int, seconds: float) -> None:
        """The batch of ``size`` rows just done; its longest statement took ``seconds``."""


@dataclass
class FixedSize:
    """``batch_size = N``: every batch takes N rows, whatever it costs."""

    size: int

    def next_size(self) -> int:
        return self.size

    def record(self, size: int, seconds: float) -> None:
        pass


@dataclass
class BudgetSize:
    """``batch_size = "auto"``: each batch sized so its statements take about half of ``budget`` seconds.

    The last batch's time per row predicts the next; the size moves there at once
    when the batch was too slow (a cold cache, a lock wait: shrinking is never
    late) and at most ``MAX_GROWTH`` times larger when it was fast, always within
    ``[smallest, largest]``.
    """

    budget: float
    first: int = FIRST_BATCH
    smallest: int = SMALLEST_BATCH
    largest: int = LARGEST_BATCH
    size: int = field(init=False)

    def __post_init__(self) -> None:
        if self.budget <= 0:
            raise ValueError(f"budget must be positive, got {self.budget}")
        self.size = self._clamp(self.first)

    def next_size(self) -> int:
        return self.size

    def record(self, size: int, seconds: float) -> None:
        target = self.budget * TARGET_SHARE
        factor = MAX_GROWTH if seconds <= 0 else min(MAX_GROWTH, target / seconds)
        self.size = self._clamp(int(size * factor))

    def _clamp(self, size: int) -> int:
        return max(self.smallest, min(self.largest, size))


def _max_statement(value: Any) -> timedelta:
    duration = duration_param(value, "'50ms'")
    if not timedelta(0) < duration <= LONGEST_MAX_STATEMENT:
        raise ValueError(f"must be longer than 0ms and at most {LONGEST_MAX_STATEMENT.total_seconds():g}s")
    return duration


def spell_duration(value: timedelta) -> str:
    """The duration in its largest exact unit (``50ms``, ``2s``, ``90d``): read back by ``parse_duration``."""
    ms = round(value.total_seconds() * 1000)
    for unit, unit_ms in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % unit_ms == 0:
            return f"{ms // unit_ms}{unit}"
    return f"{ms}ms"


def _batch_size(value: Any) -> Any:
    # One clear message for both forms, instead of pydantic's one per member of the union.
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError(f'must be "auto" or a whole number of rows of at least 1, got {value!r}')


# A duration param that the run's stored params (JSON) spell as config does.
MaxStatement = Annotated[timedelta, BeforeValidator(_max_statement), PlainSerializer(spell_duration, return_type=str)]
BatchSize = Annotated[int | Literal["auto"], BeforeValidator(_batch_size)]


class BatchParams(BaseModel):
    """The params of a task that deletes in batches: how big each batch is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: BatchSize = Field(
        "auto", description='rows per batch (one transaction), or "auto": sized to keep statements within max_statement'
    )
    max_statement: MaxStatement = Field(
        DEFAULT_MAX_STATEMENT, description='with batch_size = "auto": how long one statement may take'
    )

    def sizer(self) -> BatchSizer:
        """A sizer for one table's batches (each table learns its own time per row)."""
        if self.batch_size == "auto":
            return BudgetSize(self.max_statement.total_seconds())
        return FixedSize(self.batch_size)
