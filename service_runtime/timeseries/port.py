"""The time-series port: what services depend on, whichever store is behind it.

Samples are written tagged with their owner and monitor; every read names both, so nobody reads another
user's data. Stores: :mod:`.sqlite_store` (embedded) and :mod:`.influx_store` (InfluxDB over its HTTP API).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from service_runtime.errors import InvalidArgument

_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class Aggregation(StrEnum):
    """How the values in a window (or a whole range) are combined."""

    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    FIRST = "first"
    LAST = "last"
    COUNT = "count"
    SUM = "sum"
    P50 = "p50"
    P95 = "p95"
    P99 = "p99"

    @property
    def percentile(self) -> float | None:
        return {"p50": 50.0, "p95": 95.0, "p99": 99.0}.get(self.value)


@dataclass(frozen=True)
class Sample:
    """One check's measurements at one instant.

    ``fields`` are numbers (is_up as 0/1, response_time_ms, price...); ``tags`` index the sample
    (location, provider); ``notes`` are short strings kept with it (error_class, message).
    """

    owner_id: str
    monitor_id: str
    time: datetime
    fields: Mapping[str, float]
    tags: Mapping[str, str] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SeriesKey:
    """Whose data, which monitor: every read is scoped by both."""

    owner_id: str
    monitor_id: str


@dataclass(frozen=True)
class Point:
    """One value of one field: a raw sample, or an aggregate of ``count`` samples in the window at ``time``."""

    time: datetime
    value: float
    count: int = 1


TimedValue = tuple[float, float]
"""A raw value and its time in seconds since the epoch (what :meth:`TimeSeriesStore.points_many` returns)."""

ROLLUP_WINDOW = timedelta(hours=1)
ROLLUP_RETENTION = timedelta(days=400)


@dataclass(frozen=True)
class UptimeCounts:
    """Checks and successful checks of one monitor over a range."""

    checks: int = 0
    up: int = 0

    def __add__(self, other: UptimeCounts) -> UptimeCounts:
        return UptimeCounts(self.checks + other.checks, self.up + other.up)


@dataclass(frozen=True)
class Failure:
    """A sample whose is_up was 0, with its notes."""

    time: datetime
    error_class: str
    message: str


@dataclass(frozen=True)
class RangeDigest:
    """What summaries of a monitor over a range need, read for many monitors at once (:meth:`TimeSeriesStore.digests`).

    ``checks`` and ``up`` count its is_up samples in the range and those equal to 1; ``first_time`` is the time of
    the first of them; ``carried`` the is_up of its last sample before the range (None without one);
    ``response_time`` the nearest-rank p50, p95 and p99 of response_time_ms over its successful samples;
    ``cert_days_left`` the last such value in the range. ``is_up_series`` is filled only for a monitor that failed in
    the range or whose carried state is 0: its is_up samples in the range, oldest first, as (time, is_up, error
    class, message), from which outages and their ends are built without a query per outage; every failed one and
    the first successful one after each run of them, at least (the first of the range, too), or all of them."""

    checks: int = 0
    up: int = 0
    first_time: datetime | None = None
    carried: float | None = None
    response_time: tuple[float | None, float | None, float | None] = (None, None, None)
    cert_days_left: float | None = None
    is_up_series: list[tuple[datetime, float, str, str]] = field(default_factory=list)


class TimeSeriesStore(Protocol):
    """Write samples; read one field of one series over a half-open range ``[start, end)``.

    Windows are aligned to the Unix epoch, empty windows are left out, and ``Point.time`` is a window's
    start. Percentiles are nearest-rank (InfluxQL's ``PERCENTILE``): the value at rank
    ``floor(n * p / 100 + 0.5)`` of the sorted values, none when that rank is 0.
    """

    async def write(self, samples: Sequence[Sample]) -> None:
        """Accept samples. A buffered store may send them later; :meth:`flush` waits until it has."""
        ...

    async def flush(self, timeout_s: float = 10.0) -> None: ...

    async def points(self, key: SeriesKey, field_name: str, start: datetime, end: datetime, limit: int) -> list[Point]:
        """Raw values, oldest first, at most ``limit``."""
        ...

    async def windows(
        self, key: SeriesKey, field_name: str, start: datetime, end: datetime, window: timedelta, how: Aggregation
    ) -> list[Point]:
        """One aggregate per non-empty window, oldest first."""
        ...

    async def points_many(
        self, field_name: str, series: Sequence[SeriesKey], start: datetime, end: datetime, limit_per_series: int
    ) -> dict[SeriesKey, list[TimedValue]]:
        """Raw values of one field for each of many series (of any owners; 100,000 is a normal count), in
        few queries: the latest ``limit_per_series`` of each series in the range, oldest first, as (seconds
        since the epoch, value) pairs. Series with no value in the range are left out. For the alert
        service's warm starts and reconciliation, which read on behalf of each series' owner and keep
        seconds: a datetime per point cost as much as the rest of the read."""
        ...

    async def stats_many(
        self,
        owner_id: str,
        monitor_ids: Sequence[str],
        field_name: str,
        start: datetime,
        end: datetime,
        hows: Sequence[Aggregation],
        *,
        successful_only: bool = False,
    ) -> dict[str, dict[Aggregation, float | None]]:
        """Aggregates over the whole range for each of an owner's monitors (one InfluxQL statement per
        hundred monitors); None where there is no value, COUNT 0. ``successful_only``: of the samples whose
        is_up is 1 alone (a failed check's response time says how fast the error came, not the site)."""
        ...

    async def failures_many(
        self, owner_id: str, monitor_ids: Sequence[str], start: datetime, end: datetime, limit: int
    ) -> dict[str, list[Failure]]:
        """For each monitor, its samples with is_up == 0, oldest first, at most ``limit``."""
        ...

    async def first_times_many(
        self, owner_id: str, monitor_ids: Sequence[str], field_name: str, start: datetime, end: datetime
    ) -> dict[str, datetime]:
        """For each monitor with a value of the field in the range, the time of its first (one statement per
        hundred monitors); monitors without one are left out."""
        ...

    async def next_up(self, key: SeriesKey, after: datetime, end: datetime) -> datetime | None:
        """The time of the first sample with is_up == 1 strictly after ``after`` and before ``end``."""
        ...

    async def enforce_retention(self, now: datetime | None = None) -> int:
        """Drop raw samples older than the store's raw retention (30 days by default), and hourly rollups
        older than the rollup retention (400 days); returns how many raw samples went."""
        ...

    async def roll_up(self, start: datetime, end: datetime) -> int:
        """(Re)compute the hourly uptime rollups (checks and successful checks of every series) of the whole
        hours in ``[start, end)`` from the raw samples, replacing earlier ones; returns how many were written.
        Rollups outlive raw samples, so long-range uptime stays cheap and survives raw retention."""
        ...

    async def rolled_up_until(self) -> datetime | None:
        """The end of the latest hour that has a rollup, or None before the first roll-up."""
        ...

    async def uptime_counts_many(
        self, owner_id: str, monitor_ids: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, UptimeCounts]:
        """Checks and successful checks from the hourly rollups whose hour starts in ``[start, end)``."""
        ...

    async def digests(
        self, owner_id: str, monitor_ids: Sequence[str], start: datetime, end: datetime, carry_from: datetime
    ) -> dict[str, RangeDigest]:
        """A :class:`RangeDigest` of each of an owner's monitors over ``[start, end)`` (carried state looked for in
        ``[carry_from, start)``), in a few statements grouped by monitor whatever their number: never one per
        monitor. Monitors with no sample get an empty digest."""
        ...

    async def close(self) -> None: ...


def check_field_name(name: str, *, field_path: str = "field") -> None:
    """Field names are identifiers we chose; anything else is refused before it reaches a query."""
    if not _FIELD_NAME.match(name):
        raise InvalidArgument(field_path, "must be a lower_snake_case field name of at most 63 characters")


def to_ns(moment: datetime) -> int:
    """Nanoseconds since the epoch of an aware datetime (microsecond precision)."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def from_ns(ns: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)


def nearest_rank(sorted_values: Sequence[float], percentile: float) -> float | None:
    """InfluxQL's PERCENTILE over already sorted values."""
    rank = int(len(sorted_values) * percentile / 100 + 0.5)
    if rank < 1 or rank > len(sorted_values):
        return None
    return sorted_values[rank - 1]


def aggregate(values_in_time_order: Sequence[float], how: Aggregation) -> float | None:
    """``how`` over values given oldest first; None for no values."""
    values = values_in_time_order
    if not values:
        return None if how is not Aggregation.COUNT else 0.0
    match how:
        case Aggregation.MEAN:
            return sum(values) / len(values)
        case Aggregation.MIN:
            return min(values)
        case Aggregation.MAX:
            return max(values)
        case Aggregation.FIRST:
            return values[0]
        case Aggregation.LAST:
            return values[-1]
        case Aggregation.COUNT:
            return float(len(values))
        case Aggregation.SUM:
            return float(sum(values))
    percentile = how.percentile
    assert percentile is not None
    return nearest_rank(sorted(values), percentile)


async def stats(
    store: TimeSeriesStore,
    key: SeriesKey,
    field_name: str,
    start: datetime,
    end: datetime,
    hows: Sequence[Aggregation],
    *,
    successful_only: bool = False,
) -> dict[Aggregation, float | None]:
    """Aggregates of one monitor over the whole range."""
    found = await store.stats_many(
        key.owner_id, [key.monitor_id], field_name, start, end, hows, successful_only=successful_only
    )
    return found[key.monitor_id]


async def failures(store: TimeSeriesStore, key: SeriesKey, start: datetime, end: datetime, limit: int) -> list[Failure]:
    """One monitor's failed samples, oldest first."""
    return (await store.failures_many(key.owner_id, [key.monitor_id], start, end, limit))[key.monitor_id]


def hour_floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def hour_ceil(moment: datetime) -> datetime:
    floor = hour_floor(moment)
    return floor if floor == moment else floor + ROLLUP_WINDOW


async def roll_up_pending(
    store: TimeSeriesStore, raw_retention: timedelta, now: datetime | None = None, chunk: timedelta = timedelta(days=1)
) -> int:
    """Roll up every whole hour since the last roll-up (or since raw retention began), redoing the latest
    rolled hour in case late samples arrived; returns how many rollups were written. Run hourly."""
    now = now or datetime.now(UTC)
    last_whole_hour = hour_floor(now)
    until = await store.rolled_up_until()
    start = hour_floor(now - raw_retention) if until is None else until - ROLLUP_WINDOW
    written = 0
    while start < last_whole_hour:
        stop = min(start + chunk, last_whole_hour)
        written += await store.roll_up(start, stop)
        start = stop
    return written
