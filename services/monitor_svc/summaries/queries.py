"""Summaries of an owner's monitors over a range: uptime (time-weighted), outages, response-time percentiles,
certificate days, coin prices; the figures SummarizeMonitor gives, read through the time-series port.

The same code runs over the embedded and the InfluxDB store.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from service_runtime.timeseries.port import (
    Aggregation,
    Failure,
    SeriesKey,
    TimeSeriesStore,
    UptimeCounts,
    hour_ceil,
    hour_floor,
    stats,
)
from service_runtime.timeseries.queries import MAX_POINTS, check_range, query_samples

# Outages are built from failed samples; a range with more failures than this is summarised from the first
# ones only (and says so with ``truncated``).
MAX_FAILURES = 10_000
# Longer ranges count checks from hourly rollups (see uptime_counts).
LONG_RANGE = timedelta(days=2)


@dataclass(frozen=True)
class OutageCause:
    """One distinct (error class, message) among an outage's failed checks."""

    error_class: str
    message: str
    failed_checks: int
    first_time: datetime


@dataclass(frozen=True)
class Outage:
    start: datetime  # the range's start for an outage already under way then
    end: datetime | None  # None while ongoing
    duration: timedelta
    error_class: str  # of its first failed check in the range
    cause: str  # the message of that check
    causes: list[OutageCause] = field(default_factory=list)  # distinct, in order of first appearance


@dataclass(frozen=True)
class AvailabilitySummary:
    """``uptime_percent`` is time-weighted: each check's state (UP or DOWN) holds from that check until the
    next one, or until the end of the range (or now) for the last; the state found by the last check before
    the range holds from the range's start. It is 100 x (observed - downtime) / observed. ``checks`` and
    ``failed_checks`` count checks (pings and missed deadlines for a heartbeat), whatever their spacing."""

    uptime_percent: float | None  # None when nothing was observed in the range
    checks: int
    failed_checks: int
    outages: list[Outage] = field(default_factory=list)
    truncated: bool = False
    observed: timedelta = timedelta(0)
    downtime: timedelta = timedelta(0)


@dataclass(frozen=True)
class WebsiteSummary:
    availability: AvailabilitySummary
    # Over the successful checks only: a failing site that answers fast errors is not a fast site.
    response_time_p50_ms: float | None
    response_time_p95_ms: float | None
    response_time_p99_ms: float | None
    cert_days_left: float | None


@dataclass(frozen=True)
class CryptoPriceSummary:
    """Prices and absolute changes are in the pair's quote currency; ``change_percent`` is in percent
    (20.0 is +20 %); ``volatility`` is a fraction (0.01 is 1 %) and ``volatility_percent`` the same in
    percent. ``availability`` counts the fetches (a failed fetch writes no price)."""

    samples: int
    first: float | None
    last: float | None
    min: float | None
    max: float | None
    mean: float | None
    change_absolute: float | None
    change_percent: float | None
    volatility: float | None  # sample standard deviation of sample-to-sample returns, as a fraction
    availability: AvailabilitySummary = field(default_factory=lambda: AvailabilitySummary(None, 0, 0))

    @property
    def volatility_percent(self) -> float | None:
        return None if self.volatility is None else self.volatility * 100


# How far back the state a range starts in is looked for (the last check before the range): a heartbeat
# that went silent a month ago has written nothing since, and is still DOWN.
CARRY_IN_LOOKBACK = timedelta(days=400)
MAX_CAUSES = 10  # distinct causes kept per outage
READS_IN_FLIGHT = 8  # monitors whose outages and observed time are read at once


async def summarize_availability_many(
    store: TimeSeriesStore,
    owner_id: str,
    monitor_ids: Sequence[str],
    start: datetime,
    end: datetime,
    now: datetime | None = None,
) -> dict[str, AvailabilitySummary]:
    """Uptime and outages from the ``is_up`` field of each of an owner's monitors, time-weighted (see
    :class:`AvailabilitySummary`). An outage runs from its first failed check to the next successful one;
    one still failing at the end of the range is ongoing. Hours whose raw samples retention has dropped are
    weighted from their hourly rollups, where each check counts for an equal share of the time."""
    check_range(start, end)
    horizon = min(end, now or datetime.now(UTC))
    keys = {m: SeriesKey(owner_id, m) for m in monitor_ids}
    counts, before = await asyncio.gather(
        uptime_counts(store, owner_id, monitor_ids, start, end),
        store.points_many("is_up", list(keys.values()), _minus(start, CARRY_IN_LOOKBACK), start, 1),
    )
    carried = {m: before[k][-1][1] for m, k in keys.items() if before.get(k)}
    # Only a monitor with no check before the range is observed from its first check in it.
    new = [m for m in keys if m not in carried and counts[m].checks]
    failing = [m for m in keys if counts[m].up < counts[m].checks or carried.get(m) == 0]
    firsts, failures, until = await asyncio.gather(
        store.first_times_many(owner_id, new, "is_up", start, end) if new else _nothing(),
        store.failures_many(owner_id, failing, start, end, MAX_FAILURES) if failing else _nothing(),
        store.rolled_up_until() if new and end - start > LONG_RANGE else _none(),
    )
    seen = [m for m in keys if counts[m].checks or m in carried]
    gate = asyncio.Semaphore(READS_IN_FLIGHT)

    async def summarize(monitor_id: str) -> AvailabilitySummary:
        key, found = keys[monitor_id], failures.get(monitor_id, [])
        outages: list[Outage] = []
        async with gate:
            if monitor_id in failures:
                outages = await _outages(store, key, found, start, end, horizon, carried.get(monitor_id) == 0)
            first_raw = firsts.get(monitor_id)
            observed, downtime = await _observed(
                store, key, start, horizon, until, monitor_id in carried, first_raw, outages
            )
        checks, up = counts[monitor_id].checks, counts[monitor_id].up
        return AvailabilitySummary(
            uptime_percent=(observed - downtime) / observed * 100 if observed > timedelta(0) else None,
            checks=checks,
            failed_checks=checks - up,
            outages=outages,
            truncated=len(found) >= MAX_FAILURES,
            observed=observed,
            downtime=downtime,
        )

    found = dict(zip(seen, await asyncio.gather(*(summarize(m) for m in seen)), strict=True))
    return {m: found.get(m) or AvailabilitySummary(None, 0, 0) for m in monitor_ids}


async def _observed(
    store: TimeSeriesStore,
    key: SeriesKey,
    start: datetime,
    horizon: datetime,
    until: datetime | None,
    carried: bool,
    first_raw: datetime | None,
    outages: Sequence[Outage],
) -> tuple[timedelta, timedelta]:
    """The time observed and the time DOWN of a monitor. Observation starts at the range's start when a
    check before it tells the state (``carried``), else at its first raw check in the range (``first_raw``);
    whole hours before that (raw retention dropped their samples) come from the hourly rollups, rolled up
    ``until`` (None: not read, for a range of two days or less)."""
    downtime = sum((o.duration for o in outages), timedelta(0))
    if carried:
        return max(horizon - start, timedelta(0)), downtime
    raw_from = first_raw or horizon
    observed = max(horizon - raw_from, timedelta(0))
    rolled_from, rolled_to = hour_ceil(start), min(hour_floor(raw_from), until) if until else start
    if rolled_from < rolled_to:
        rolled = (await store.uptime_counts_many(key.owner_id, [key.monitor_id], rolled_from, rolled_to))[
            key.monitor_id
        ]
        if rolled.checks:
            span = rolled_to - rolled_from
            observed += span
            downtime += span * (rolled.checks - rolled.up) / rolled.checks
    return observed, downtime


async def _nothing() -> dict[str, Any]:
    return {}


async def _none() -> None:
    return None


def _minus(moment: datetime, span: timedelta) -> datetime:
    """``moment - span``, but not before what the stores' 64-bit nanoseconds hold."""
    floor = datetime(1678, 1, 1, tzinfo=UTC)
    return floor if moment - floor < span else moment - span


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
    store: TimeSeriesStore,
    key: SeriesKey,
    failures: Sequence[Failure],
    start: datetime,
    end: datetime,
    horizon: datetime,
    down_at_start: bool,
) -> list[Outage]:
    """Outages from the failed checks in the range; ``down_at_start``: the last check before the range
    failed, so an outage runs from the range's start to the first successful check."""
    outages: list[Outage] = []
    times = [f.time for f in failures]
    index = 0
    while index < len(failures) or (down_at_start and not outages):
        carried = down_at_start and not outages
        since = start if carried else failures[index].time
        # next_up looks strictly after its time: from just before the range's start for a carried outage.
        recovered = await store.next_up(key, since - timedelta(microseconds=1) if carried else since, end)
        stop = len(failures) if recovered is None else bisect.bisect_left(times, recovered)
        inside = failures[index:stop]
        causes = _causes(inside)
        first_class, first_message = (causes[0].error_class, causes[0].message) if causes else ("", "")
        if recovered is None:
            ongoing = max(horizon - since, timedelta(0))
            outages.append(Outage(since, None, ongoing, first_class, first_message, causes))
            break
        outages.append(Outage(since, recovered, recovered - since, first_class, first_message, causes))
        index = max(stop, index)
    return outages


def _causes(failures: Sequence[Failure]) -> list[OutageCause]:
    """The distinct (error class, message) pairs of an outage's failed checks, first seen first; at most
    :data:`MAX_CAUSES` (the later ones are counted in none)."""
    seen: dict[tuple[str, str], list[Any]] = {}
    for failure in failures:
        entry = seen.get((failure.error_class, failure.message))
        if entry is not None:
            entry[0] += 1
        elif len(seen) < MAX_CAUSES:
            seen[(failure.error_class, failure.message)] = [1, failure.time]
    return [OutageCause(c, m, n, t) for (c, m), (n, t) in seen.items()]


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
    """Website summaries of several of an owner's monitors, a few queries for all of them. Response-time
    percentiles are over the successful checks only."""
    percentiles = [Aggregation.P50, Aggregation.P95, Aggregation.P99]
    availability, times, certs = await asyncio.gather(
        summarize_availability_many(store, owner_id, monitor_ids, start, end, now),
        store.stats_many(owner_id, monitor_ids, "response_time_ms", start, end, percentiles, successful_only=True),
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
    store: TimeSeriesStore, key: SeriesKey, start: datetime, end: datetime, now: datetime | None = None
) -> CryptoPriceSummary:
    """Price statistics over the range, with the fetches that failed (see :class:`CryptoPriceSummary` for
    the units). Volatility is taken over at most 10,000 points (window means when there are more samples)."""
    check_range(start, end)
    hows = [Aggregation.COUNT, Aggregation.FIRST, Aggregation.LAST, Aggregation.MIN, Aggregation.MAX, Aggregation.MEAN]
    price, availability = await asyncio.gather(
        stats(store, key, "price", start, end, hows), summarize_availability(store, key, start, end, now)
    )
    samples = int(price[Aggregation.COUNT] or 0)
    if samples == 0:
        return CryptoPriceSummary(0, None, None, None, None, None, None, None, None, availability)
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
        availability=availability,
    )
