"""A job's duration chart: its last runs as bars of an inline SVG, drawn on the server
(no chart library, nothing to load), with the figures a screen reader reads instead."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from maintd.admin_api.console.interface import DurationPoint

WIDTH = 600
HEIGHT = 120
GAP = 1


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    point: DurationPoint


@dataclass(frozen=True)
class DurationChart:
    bars: list[Bar]
    count: int
    median_s: float | None
    p95_s: float | None
    max_s: float | None
    width: int = WIDTH
    height: int = HEIGHT


def duration_chart(newest_first: Sequence[DurationPoint], slots: int) -> DurationChart:
    """Bars oldest to newest, left to right, one slot each of ``slots``; heights relative to the longest."""
    points = list(reversed(newest_first))
    if not points:
        return DurationChart([], 0, None, None, None)
    durations = sorted(max(p.duration_s, 0.0) for p in points)
    longest = durations[-1] or 1.0
    slot = WIDTH / slots
    bars = []
    for index, point in enumerate(points):
        height = max(HEIGHT * max(point.duration_s, 0.0) / longest, 1.0)
        bars.append(Bar(index * slot, HEIGHT - height, max(slot - GAP, 1.0), height, point))
    p95 = durations[min(len(durations) - 1, round(0.95 * (len(durations) - 1)))]
    return DurationChart(bars, len(points), statistics.median(durations), p95, durations[-1])
