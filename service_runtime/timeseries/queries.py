"""Bounded reads of one field of one monitor's samples: raw, or aggregated per window.

Everything here is built from validated parameters (no raw query passthrough) and scoped to one owner's
monitor through :class:`SeriesKey`. The same code runs over the embedded and the InfluxDB store. Summaries of
monitors (uptime, outages, latency) are the monitor service's (``services/monitor_svc/summaries``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from service_runtime.errors import InvalidArgument
from service_runtime.timeseries.port import (
    Aggregation,
    Point,
    SeriesKey,
    TimeSeriesStore,
    check_field_name,
    stats,
)

DEFAULT_MAX_POINTS = 1000
MAX_POINTS = 10_000
MIN_WINDOW = timedelta(seconds=1)


@dataclass(frozen=True)
class QueryResult:
    points: list[Point]
    window: timedelta | None  # None for raw samples
    aggregation: Aggregation | None


def check_range(start: datetime, end: datetime, *, field_path: str = "time_range") -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    if not start < end:
        raise InvalidArgument(field_path, "start_time must be before end_time")


def _window_to_fit(span: timedelta, max_points: int) -> timedelta:
    """The narrowest whole-second window for which epoch-aligned windows over ``span`` are at most max_points
    (a range that does not start on a window boundary touches one window more than span / window)."""
    per_point = span / max(1, max_points - 1)
    return max(MIN_WINDOW, timedelta(seconds=math.ceil(per_point.total_seconds())))


async def query_samples(
    store: TimeSeriesStore,
    key: SeriesKey,
    field_name: str,
    start: datetime,
    end: datetime,
    *,
    window: timedelta | None = None,
    aggregation: Aggregation | None = None,
    max_points: int = 0,
) -> QueryResult:
    """One field over ``[start, end)``: raw, or aggregated per window; never more than ``max_points``
    (0 means the default, 1000). The window is widened when the points would not fit; raw samples that
    would not fit are downsampled to the mean per window."""
    check_field_name(field_name)
    check_range(start, end)
    if max_points < 0 or max_points > MAX_POINTS:
        raise InvalidArgument("max_points", f"must be between 0 and {MAX_POINTS} (0 means {DEFAULT_MAX_POINTS})")
    limit = max_points or DEFAULT_MAX_POINTS
    span = end - start
    if window is not None:
        if window < MIN_WINDOW:
            raise InvalidArgument("window", "must be at least 1s")
        if aggregation is None:
            raise InvalidArgument("aggregation", "is required with a window")
        fitted = max(window, _window_to_fit(span, limit)) if math.ceil(span / window) + 1 > limit else window
        return QueryResult(await store.windows(key, field_name, start, end, fitted, aggregation), fitted, aggregation)
    if aggregation is not None:
        raise InvalidArgument("window", "is required with an aggregation")
    count = (await stats(store, key, field_name, start, end, [Aggregation.COUNT]))[Aggregation.COUNT] or 0
    if count <= limit:
        return QueryResult(await store.points(key, field_name, start, end, limit), None, None)
    fitted = _window_to_fit(span, limit)
    points = await store.windows(key, field_name, start, end, fitted, Aggregation.MEAN)
    return QueryResult(points, fitted, Aggregation.MEAN)
