"""Queries over the time-series port: bounded sample reads and monitor summaries.

Everything here is built from validated parameters (no raw query passthrough) and scoped to one owner's
monitor through :class:`SeriesKey`. The same code runs over the embedded and the InfluxDB store.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from service_runtime.errors import InvalidArgument
from service_runtime.timeseries.port import (
    Aggregation,
    Failure,
    Point,
    SeriesKey,
    TimeSeriesStore,
    UptimeCounts,
    check_field_name,
    hour_ceil,
    hour_floor,
    stats,
)

DEFAULT_MAX_POINTS = 1000
MAX_POINTS = 10_000
MIN_WINDOW = timedelta(seconds=1)
# Outages are built from failed samples; a range with more failures than this is summarised from the first
# ones only (and says so with ``truncated``).
MAX_FAILURES = 10_000
# Longer ranges count checks from hourly rollups (see uptime_counts).
LONG_RANGE = timedelta(days=2)


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


@dataclass(frozen=True)
class Outage:
    start: datetime
    end: datetime | None  # None while ongoing
    duration: timedelta
    error_class: str
    cause: str


@dataclass(frozen=True)
class AvailabilitySummary:
    uptime_percent: float | None  # None without any check in the range
    checks: int
    failed_checks: int
    outages: list[Outage] = field(default_factory=list)
    truncated: bool = False


@dataclass(frozen=True)
class WebsiteSummary:
    availability: AvailabilitySummary
    response_time_p50_ms: float | None
    response_time_p95_ms: float | None
    response_time_p99_ms: float | None
    cert_days_left: float | None


@dataclass(frozen=True)
class CryptoPriceSummary:
    samples: int
    first: float | None
    last: float | None
    min: float | None
    max: float | None
    mean: float | None
    change_absolute: float | None
    change_percent: float | None
    volatility: float | None  # sample standard deviation of sample-to-sample returns


async def summarize_availability_many(
    store: TimeSeriesStore,
    owner_id: str,
    monitor_ids: Sequence[str],
    start: datetime,
    end: datetime,
    now: datetime | None = None,
) -> dict[str, AvailabilitySummary]:
    """Uptime and outages from the ``is_up`` field of each of an owner's monitors. An outage runs from its
    first failed check to the next successful one; one still failing at the end of the range is ongoing."""
    check_range(start, end)
    counts = await uptime_counts(store, owner_id, monitor_ids, start, end)
    failing = [m for m in monitor_ids if counts[m].up < counts[m].checks]
    failures = await store.failures_many(owner_id, failing, start, end, MAX_FAILURES) if failing else {}
    horizon = min(end, now or datetime.now(UTC))
    summaries = {}
    for monitor_id in monitor_ids:
        checks, up = counts[monitor_id].checks, counts[monitor_id].up
        if checks == 0:
            summaries[monitor_id] = AvailabilitySummary(None, 0, 0)
            continue
        found = failures.get(monitor_id, [])
        summaries[monitor_id] = AvailabilitySummary(
            uptime_percent=up / checks * 100,
            checks=checks,
            failed_checks=checks - up,
            outages=await _outages(store, SeriesKey(owner_id, monitor_id), found, end, horizon),
            truncated=len(found) >= MAX_FAILURES,
        )
    return summaries


async def uptime_counts(
    store: TimeSeriesStore, owner_id: str, monitor_ids: Sequence[str], start: datetime, end: datetime
) -> dict[str, UptimeCounts]:
    """Checks and successful checks in ``[start, end)``. A range longer than two days takes its whole,
    rolled-up hours from the hourly rollups and only its ragged ends from raw samples, so a 90-day summary
    reads ~2,000 rollups a monitor instead of ~26,000 samples, and still counts hours whose raw samples
    retention has dropped. Outages are listed from raw samples, so only within raw retention."""

    async def raw(a: datetime, b: datetime) -> dict[str, UptimeCounts]:
        if a >= b:
            return {m: UptimeCounts() for m in monitor_ids}
        found = await store.stats_many(owner_id, monitor_ids, "is_up", a, b, [Aggregation.COUNT, Aggregation.SUM])
        return {
            m: UptimeCounts(int(v[Aggregation.COUNT] or 0), round(v[Aggregation.SUM] or 0)) for m, v in found.items()
        }

    if end - start <= LONG_RANGE:
        return await raw(start, end)
    until = await store.rolled_up_until()
    first = hour_ceil(start)
    last = min(hour_floor(end), until) if until is not None else first
    if last <= first:
        return await raw(start, end)
    head, middle, tail = await asyncio.gather(
        raw(start, first), store.uptime_counts_many(owner_id, monitor_ids, first, last), raw(last, end)
    )
    return {m: head[m] + middle[m] + tail[m] for m in monitor_ids}


async def _outages(
    store: TimeSeriesStore, key: SeriesKey, failures: Sequence[Failure], end: datetime, horizon: datetime
) -> list[Outage]:
    outages: list[Outage] = []
    index = 0
    while index < len(failures):
        first = failures[index]
        recovered = await store.next_up(key, first.time, end)
        if recovered is None:
            ongoing = max(horizon - first.time, timedelta(0))
            outages.append(Outage(first.time, None, ongoing, first.error_class, first.message))
            break
        outages.append(Outage(first.time, recovered, recovered - first.time, first.error_class, first.message))
        while index < len(failures) and failures[index].time < recovered:
            index += 1
    return outages


async def summarize_availability(
    store: TimeSeriesStore, key: SeriesKey, start: datetime, end: datetime, now: datetime | None = None
) -> AvailabilitySummary:
    """:func:`summarize_availability_many` of one monitor."""
    return (await summarize_availability_many(store, key.owner_id, [key.monitor_id], start, end, now))[key.monitor_id]


async def summarize_websites(
    store: TimeSeriesStore,
    owner_id: str,
    monitor_ids: Sequence[str],
    start: datetime,
    end: datetime,
    now: datetime | None = None,
) -> dict[str, WebsiteSummary]:
    """Website summaries of several of an owner's monitors, a few queries for all of them."""
    percentiles = [Aggregation.P50, Aggregation.P95, Aggregation.P99]
    availability, times, certs = await asyncio.gather(
        summarize_availability_many(store, owner_id, monitor_ids, start, end, now),
        store.stats_many(owner_id, monitor_ids, "response_time_ms", start, end, percentiles),
        store.stats_many(owner_id, monitor_ids, "cert_days_left", start, end, [Aggregation.LAST]),
    )
    return {
        m: WebsiteSummary(
            availability[m],
            times[m][Aggregation.P50],
            times[m][Aggregation.P95],
            times[m][Aggregation.P99],
            certs[m][Aggregation.LAST],
        )
        for m in monitor_ids
    }


async def summarize_website(
    store: TimeSeriesStore, key: SeriesKey, start: datetime, end: datetime, now: datetime | None = None
) -> WebsiteSummary:
    """:func:`summarize_websites` of one monitor."""
    return (await summarize_websites(store, key.owner_id, [key.monitor_id], start, end, now))[key.monitor_id]


async def summarize_crypto_price(
    store: TimeSeriesStore, key: SeriesKey, start: datetime, end: datetime
) -> CryptoPriceSummary:
    """Price statistics over the range. Volatility is taken over at most 10,000 points (window means when
    there are more samples)."""
    check_range(start, end)
    hows = [Aggregation.COUNT, Aggregation.FIRST, Aggregation.LAST, Aggregation.MIN, Aggregation.MAX, Aggregation.MEAN]
    price = await stats(store, key, "price", start, end, hows)
    samples = int(price[Aggregation.COUNT] or 0)
    if samples == 0:
        return CryptoPriceSummary(0, None, None, None, None, None, None, None, None)
    series = await query_samples(store, key, "price", start, end, max_points=MAX_POINTS)
    prices = [p.value for p in series.points]
    returns = [b / a - 1 for a, b in itertools.pairwise(prices) if a != 0]
    first, last = price[Aggregation.FIRST], price[Aggregation.LAST]
    assert first is not None
    assert last is not None
    return CryptoPriceSummary(
        samples=samples,
        first=first,
        last=last,
        min=price[Aggregation.MIN],
        max=price[Aggregation.MAX],
        mean=price[Aggregation.MEAN],
        change_absolute=last - first,
        change_percent=(last - first) / first * 100 if first else None,
        volatility=statistics.stdev(returns) if len(returns) >= 2 else None,
    )
