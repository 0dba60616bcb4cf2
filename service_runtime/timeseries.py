"""The time-series port: where check samples are written and read back.

:class:`TimeSeriesStore` is what services depend on. :class:`SqliteSampleStore` is the embedded
implementation (one SQLite file in the data directory, shared by the services of one machine); the InfluxDB
implementation arrives with the time-series issue behind the same interface. Every read is scoped to an owner
and a monitor, so nobody reads another user's samples.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy.engine import make_url

from service_runtime.errors import InvalidArgument

_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Sample:
    """One check's measurements at one instant, tagged with its owner and monitor."""

    owner_id: str
    monitor_id: str
    time: datetime
    fields: Mapping[str, float]
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Point:
    """One value of one field."""

    time: datetime
    value: float


class TimeSeriesStore(Protocol):
    """Write samples; read one field of one monitor of one owner over a time range."""

    async def write(self, samples: Sequence[Sample]) -> None: ...

    async def query(
        self, owner_id: str, monitor_id: str, field_name: str, start: datetime, end: datetime, limit: int
    ) -> list[Point]: ...

    async def close(self) -> None: ...


def _ns(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return int(moment.timestamp() * 1_000_000) * 1000


def check_field_name(name: str, *, field_path: str = "field") -> None:
    """Field names are identifiers we chose; anything else is refused before it reaches a query."""
    if not _FIELD_NAME.match(name):
        raise InvalidArgument(field_path, "must be a lower_snake_case field name of at most 63 characters")


class SqliteSampleStore:
    """Embedded time-series store: one row per sample, fields and tags as JSON, indexed by owner/monitor/time.

    SQLite calls are short and run on a single worker thread so the event loop never blocks on the file.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(path, timeout=5, check_same_thread=False, isolation_level=None)
        self._connection.executescript(
            """
            PRAGMA journal_mode=WAL;
            PRAGMA synchronous=NORMAL;
            PRAGMA busy_timeout=5000;
            CREATE TABLE IF NOT EXISTS samples (
                owner_id TEXT NOT NULL,
                monitor_id TEXT NOT NULL,
                time_ns INTEGER NOT NULL,
                fields TEXT NOT NULL,
                tags TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS samples_by_monitor_time ON samples (owner_id, monitor_id, time_ns);
            """
        )
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str) -> SqliteSampleStore:
        """Open the store named by ``sqlite:///path``."""
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite" or not parsed.database:
            raise ValueError(f"not an embedded time-series URL: {url!r}")
        return cls(Path(parsed.database))

    async def write(self, samples: Sequence[Sample]) -> None:
        rows = [
            (s.owner_id, s.monitor_id, _ns(s.time), json.dumps(dict(s.fields)), json.dumps(dict(s.tags)))
            for s in samples
        ]
        if not rows:
            return

        def insert() -> None:
            with self._connection:
                self._connection.execute("BEGIN")
                self._connection.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?)", rows)

        async with self._lock:
            await asyncio.to_thread(insert)

    async def query(
        self, owner_id: str, monitor_id: str, field_name: str, start: datetime, end: datetime, limit: int
    ) -> list[Point]:
        check_field_name(field_name)

        def select() -> list[tuple[int, float]]:
            cursor = self._connection.execute(
                "SELECT time_ns, json_extract(fields, ?) FROM samples"
                " WHERE owner_id = ? AND monitor_id = ? AND time_ns >= ? AND time_ns < ?"
                " AND json_extract(fields, ?) IS NOT NULL ORDER BY time_ns LIMIT ?",
                (f"$.{field_name}", owner_id, monitor_id, _ns(start), _ns(end), f"$.{field_name}", limit),
            )
            return cursor.fetchall()

        async with self._lock:
            rows = await asyncio.to_thread(select)
        return [Point(datetime.fromtimestamp(ns / 1e9, UTC), float(value)) for ns, value in rows]

    async def close(self) -> None:
        async with self._lock:
            self._connection.close()


def open_timeseries_store(url: str) -> TimeSeriesStore:
    """The store named by ``MONITORS_TIMESERIES_URL`` (embedded SQLite for now)."""
    if make_url(url).get_backend_name() == "sqlite":
        return SqliteSampleStore.from_url(url)
    raise ValueError(f"unsupported time-series URL {url!r}; the InfluxDB store arrives with its own issue")
