"""Embedded time-series store: one SQLite file in the data directory, the default for `make run`.

One row per sample; numeric fields, tags and notes as JSON, indexed by owner, monitor and time.
Aggregates are computed in Python with the same semantics as the InfluxDB store (see the port).
SQLite calls run on a worker thread, one at a time, so the event loop never blocks on the file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TypeVar

from service_runtime.errors import Unavailable
from service_runtime.timeseries.digest import SampleDigests, digest_rows, digest_rows_of_values
from service_runtime.timeseries.port import (
    ROLLUP_RETENTION,
    Aggregation,
    Failure,
    Point,
    RangeDigest,
    Sample,
    SeriesKey,
    TimedValue,
    UptimeCounts,
    aggregate,
    check_field_name,
    from_ns,
    hour_ceil,
    hour_floor,
    to_ns,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

_SCHEMA = """
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
PRAGMA busy_timeout=5000;
CREATE TABLE IF NOT EXISTS samples (
    owner_id TEXT NOT NULL,
    monitor_id TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    fields TEXT NOT NULL,
    tags TEXT NOT NULL,
    notes TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS samples_by_monitor_time ON samples (owner_id, monitor_id, time_ns);
CREATE INDEX IF NOT EXISTS samples_by_time ON samples (time_ns);
CREATE TABLE IF NOT EXISTS uptime_1h (
    owner_id TEXT NOT NULL,
    monitor_id TEXT NOT NULL,
    hour_ns INTEGER NOT NULL,
    checks INTEGER NOT NULL,
    up INTEGER NOT NULL,
    PRIMARY KEY (owner_id, monitor_id, hour_ns)
);
CREATE INDEX IF NOT EXISTS uptime_1h_by_hour ON uptime_1h (hour_ns);
"""
_HOUR_NS = 3_600_000_000_000
_BACKFILLED = "backfilled"  # digest_meta: the samples from before digests existed are digested
SERIES_PER_STATEMENT = 400  # 800 bound parameters, under SQLite's old default limit of 999
_SERIES = "owner_id = ? AND monitor_id = ? AND time_ns >= ? AND time_ns < ?"


class SqliteSampleStore:
    """The embedded :class:`~service_runtime.timeseries.port.TimeSeriesStore`."""

    def __init__(
        self, path: Path, raw_retention: timedelta = timedelta(days=30), rollup_retention: timedelta = ROLLUP_RETENTION
    ) -> None:
        self.path = path
        self.raw_retention = raw_retention
        self.rollup_retention = rollup_retention
        path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(path, timeout=5, check_same_thread=False, isolation_level=None)
        columns = {row[1] for row in self._connection.execute("PRAGMA table_info(samples)")}
        if columns and "notes" not in columns:  # a file from before notes existed
            self._connection.execute("ALTER TABLE samples ADD COLUMN notes TEXT NOT NULL DEFAULT '{}'")
        self._connection.executescript(_SCHEMA)
        self._digests = SampleDigests(self._connection)
        self._backfilled = self._backfill_digests()
        self._lock = asyncio.Lock()

    def _backfill_digests(self) -> bool:
        """Digest the samples of a file from before digests existed (once: the migration to them), in one
        transaction, so that an interrupted backfill starts over. False when another process holds the file's
        write lock (it is backfilling, or writing): then :meth:`digests` tries again."""
        if self._digests.meta(_BACKFILLED) is not None:
            return True
        try:
            self._connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            log.warning("time-series digests not built yet: the file is busy", extra={"error": str(error)})
            return False
        with self._connection:
            if self._digests.meta(_BACKFILLED) is not None:  # another process did it meanwhile
                return True
            if self._connection.execute("SELECT 1 FROM samples LIMIT 1").fetchone():
                log.info(
                    "digesting the time-series samples from before digests existed", extra={"file": str(self.path)}
                )
            self._connection.execute("DELETE FROM digest_1h")
            self._connection.execute("DELETE FROM digest_failures")
            rows = self._connection.execute(
                "SELECT owner_id, monitor_id, time_ns, json_extract(fields, '$.is_up'),"
                " json_extract(fields, '$.response_time_ms'), json_extract(fields, '$.cert_days_left'),"
                " json_extract(notes, '$.error_class'), json_extract(notes, '$.message') FROM samples"
            )
            while chunk := rows.fetchmany(50_000):
                self._digests.add_rows(*digest_rows_of_values(chunk))
            self._digests.set_meta(_BACKFILLED, 1)
        return True

    async def _run(self, work: Callable[[], T]) -> T:
        async with self._lock:
            return await asyncio.to_thread(work)

    async def write(self, samples: Sequence[Sample]) -> None:
        rows = [
            (
                s.owner_id,
                s.monitor_id,
                to_ns(s.time),
                # NaN and infinities dropped, as the line protocol drops them: json.dumps would write NaN,
                # which SQLite's JSON functions reject, failing every later query and rollup over the file.
                json.dumps({k: float(v) for k, v in s.fields.items() if math.isfinite(v)}),
                json.dumps(dict(s.tags)),
                json.dumps(dict(s.notes)),
            )
            for s in samples
        ]
        if not rows:
            return
        digest, failures = digest_rows(samples)

        def insert() -> None:
            with self._connection:
                self._connection.execute("BEGIN")
                self._connection.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._digests.add_rows(digest, failures)

        await self._run(insert)

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Writes are durable when :meth:`write` returns."""

    def _values(
        self,
        key: SeriesKey,
        field_name: str,
        start: datetime,
        end: datetime,
        limit: int,
        successful_only: bool = False,
    ) -> list[tuple[int, float]]:
        check_field_name(field_name)
        path = f"$.{field_name}"
        up = " AND json_extract(fields, '$.is_up') = 1" if successful_only else ""
        cursor = self._connection.execute(
            f"SELECT time_ns, json_extract(fields, ?) AS v FROM samples WHERE {_SERIES} AND v IS NOT NULL{up}"
            " ORDER BY time_ns LIMIT ?",
            (path, key.owner_id, key.monitor_id, to_ns(start), to_ns(end), limit),
        )
        return [(int(t), float(v)) for t, v in cursor.fetchall()]

    async def points(self, key: SeriesKey, field_name: str, start: datetime, end: datetime, limit: int) -> list[Point]:
        check_field_name(field_name)
        rows = await self._run(lambda: self._values(key, field_name, start, end, limit))
        return [Point(from_ns(t), v) for t, v in rows]

    async def points_many(
        self, field_name: str, series: Sequence[SeriesKey], start: datetime, end: datetime, limit_per_series: int
    ) -> dict[SeriesKey, list[TimedValue]]:
        """One statement per :data:`SERIES_PER_STATEMENT` series (row values matched by the samples' index)."""
        check_field_name(field_name)
        keys = sorted(set(series), key=lambda k: (k.owner_id, k.monitor_id))
        path, first, last, limit = f"$.{field_name}", to_ns(start), to_ns(end), max(1, int(limit_per_series))

        def select(chunk: Sequence[SeriesKey]) -> list[tuple[str, str, int, float]]:
            wanted = ", ".join("(?, ?)" for _ in chunk)
            cursor = self._connection.execute(
                "SELECT owner_id, monitor_id, time_ns, v FROM ("
                " SELECT owner_id, monitor_id, time_ns, json_extract(fields, ?) AS v,"
                "  row_number() OVER (PARTITION BY owner_id, monitor_id ORDER BY time_ns DESC) AS newest"
                f" FROM samples WHERE (owner_id, monitor_id) IN (VALUES {wanted}) AND time_ns >= ? AND time_ns < ?"
                "  AND json_extract(fields, ?) IS NOT NULL"
                ") WHERE newest <= ? ORDER BY owner_id, monitor_id, time_ns",
                (path, *[part for key in chunk for part in (key.owner_id, key.monitor_id)], first, last, path, limit),
            )
            return cursor.fetchall()

        result: dict[SeriesKey, list[TimedValue]] = {}
        for i in range(0, len(keys), SERIES_PER_STATEMENT):
            rows = await self._run(partial(select, keys[i : i + SERIES_PER_STATEMENT]))
            for owner_id, monitor_id, t, v in rows:
                result.setdefault(SeriesKey(owner_id, monitor_id), []).append((int(t) / 1e9, float(v)))
        return result

    async def windows(
        self, key: SeriesKey, field_name: str, start: datetime, end: datetime, window: timedelta, how: Aggregation
    ) -> list[Point]:
        check_field_name(field_name)
        width = to_ns_delta(window)
        rows = await self._run(lambda: self._values(key, field_name, start, end, -1))
        grouped: dict[int, list[float]] = {}
        for t, v in rows:
            grouped.setdefault(t - t % width, []).append(v)
        result = []
        for window_start, values in grouped.items():
            value = aggregate(values, how)
            if value is not None:
                result.append(Point(from_ns(window_start), value, len(values)))
        return result

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
        check_field_name(field_name)
        result = {}
        for monitor_id in monitor_ids:
            key = SeriesKey(owner_id, monitor_id)
            read = partial(self._values, key, field_name, start, end, -1, successful_only)
            values = [v for _, v in await self._run(read)]
            result[monitor_id] = {how: aggregate(values, how) for how in hows}
        return result

    async def failures_many(
        self, owner_id: str, monitor_ids: Sequence[str], start: datetime, end: datetime, limit: int
    ) -> dict[str, list[Failure]]:
        def select(monitor_id: str) -> list[tuple[int, str]]:
            cursor = self._connection.execute(
                f"SELECT time_ns, notes FROM samples WHERE {_SERIES} AND json_extract(fields, '$.is_up') = 0"
                " ORDER BY time_ns LIMIT ?",
                (owner_id, monitor_id, to_ns(start), to_ns(end), limit),
            )
            return cursor.fetchall()

        result = {}
        for monitor_id in monitor_ids:
            failures = []
            for t, notes_json in await self._run(partial(select, monitor_id)):
                notes = json.loads(notes_json)
                failures.append(Failure(from_ns(t), str(notes.get("error_class", "")), str(notes.get("message", ""))))
            result[monitor_id] = failures
        return result

    async def first_times_many(
        self, owner_id: str, monitor_ids: Sequence[str], field_name: str, start: datetime, end: datetime
    ) -> dict[str, datetime]:
        check_field_name(field_name)
        path = f"$.{field_name}"

        def select(monitor_id: str) -> tuple[int | None]:
            row: tuple[int | None] = self._connection.execute(
                f"SELECT min(time_ns) FROM samples WHERE {_SERIES} AND json_extract(fields, ?) IS NOT NULL",
                (owner_id, monitor_id, to_ns(start), to_ns(end), path),
            ).fetchone()
            return row

        result = {}
        for monitor_id in monitor_ids:
            (first,) = await self._run(partial(select, monitor_id))
            if first is not None:
                result[monitor_id] = from_ns(int(first))
        return result

    async def next_up(self, key: SeriesKey, after: datetime, end: datetime) -> datetime | None:
        def select() -> tuple[int] | None:
            row: tuple[int] | None = self._connection.execute(
                "SELECT time_ns FROM samples WHERE owner_id = ? AND monitor_id = ? AND time_ns > ? AND time_ns < ?"
                " AND json_extract(fields, '$.is_up') = 1 ORDER BY time_ns LIMIT 1",
                (key.owner_id, key.monitor_id, to_ns(after), to_ns(end)),
            ).fetchone()
            return row

        row = await self._run(select)
        return None if row is None else from_ns(row[0])

    async def enforce_retention(self, now: datetime | None = None) -> int:
        """Drop samples older than the raw retention and rollups older than theirs; returns how many samples."""
        now = now or datetime.now(UTC)
        cutoff, rollup_cutoff = to_ns(now - self.raw_retention), to_ns(now - self.rollup_retention)

        def delete() -> int:
            with self._connection:
                self._connection.execute("BEGIN")
                self._connection.execute("DELETE FROM uptime_1h WHERE hour_ns < ?", (rollup_cutoff,))
                self._digests.prune(cutoff)
                return self._connection.execute("DELETE FROM samples WHERE time_ns < ?", (cutoff,)).rowcount

        return await self._run(delete)

    async def roll_up(self, start: datetime, end: datetime) -> int:
        first, last = to_ns(hour_ceil(start)), to_ns(hour_floor(end))

        def upsert() -> int:
            with self._connection:
                self._connection.execute("BEGIN")
                cursor = self._connection.execute(
                    "INSERT OR REPLACE INTO uptime_1h"
                    " SELECT owner_id, monitor_id, time_ns - time_ns % ?, count(v), sum(v)"
                    " FROM (SELECT owner_id, monitor_id, time_ns, json_extract(fields, '$.is_up') AS v FROM samples"
                    "       WHERE time_ns >= ? AND time_ns < ?)"
                    " WHERE v IS NOT NULL GROUP BY owner_id, monitor_id, time_ns - time_ns % ?",
                    (_HOUR_NS, first, last, _HOUR_NS),
                )
                return cursor.rowcount

        return await self._run(upsert) if first < last else 0

    async def rolled_up_until(self) -> datetime | None:
        row = await self._run(lambda: self._connection.execute("SELECT max(hour_ns) FROM uptime_1h").fetchone())
        return None if row is None or row[0] is None else from_ns(int(row[0]) + _HOUR_NS)

    async def uptime_counts_many(
        self, owner_id: str, monitor_ids: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, UptimeCounts]:
        def select(monitor_id: str) -> tuple[int | None, int | None]:
            row: tuple[int | None, int | None] = self._connection.execute(
                "SELECT sum(checks), sum(up) FROM uptime_1h"
                " WHERE owner_id = ? AND monitor_id = ? AND hour_ns >= ? AND hour_ns < ?",
                (owner_id, monitor_id, to_ns(start), to_ns(end)),
            ).fetchone()
            return row

        result = {}
        for monitor_id in monitor_ids:
            checks, up = await self._run(partial(select, monitor_id))
            result[monitor_id] = UptimeCounts(int(checks or 0), int(up or 0))
        return result

    async def digests(
        self, owner_id: str, monitor_ids: Sequence[str], start: datetime, end: datetime, carry_from: datetime
    ) -> dict[str, RangeDigest]:
        """From the digest rows written with the samples (see :mod:`.digest`): three statements for any number
        of monitors, no raw sample read."""
        if not self._backfilled:
            self._backfilled = await self._run(self._backfill_digests)
            if not self._backfilled:
                raise Unavailable("time-series digests are being built; try again shortly")
        return await self._run(partial(self._digests.read, owner_id, monitor_ids, start, end, carry_from))

    async def close(self) -> None:
        async with self._lock:
            self._connection.close()


def to_ns_delta(window: timedelta) -> int:
    return (window.days * 86_400 + window.seconds) * 1_000_000_000 + window.microseconds * 1000
