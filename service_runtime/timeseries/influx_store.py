"""InfluxDB store over the HTTP API every InfluxDB serves: line protocol to ``/write``, InfluxQL to ``/query``.

That is InfluxDB 1.x natively, and 2.x and 3.x Core through their v1-compatibility endpoints (give a token).
Writes are buffered and sent in batches by a background task with retries and backoff, so an outage of the
database loses nothing that fits the buffer; when the buffer is full the oldest samples are dropped, counted
and logged. Given a spool directory (the monitor service gives one), the buffer is also on disk before
:meth:`InfluxStore.write` returns, so a restart or a crash during an outage loses nothing either (see
:mod:`.spool`); the same bound holds. Every query is built here from validated parts: field names match a
strict pattern, identifiers are double-quoted and strings single-quoted with escaping, and every query is
scoped to one owner and one monitor.

Batch summaries read the digests of :mod:`.digest`, which the store writes as it accepts samples (into a SQLite
file in the spool directory, which one process holds). They hold what this store wrote, so they answer for a
database whose samples this store writes: the monitor service's, one replica serving at a time. Hours they cannot
vouch for (samples from before they were kept, the time between a digest file's last write and its reopening,
hours past their retention) are read again from InfluxDB, merged, each sample once; a sample another process
wrote meanwhile, timed before the hours read again, is missed. Samples dropped from a full buffer stay counted in
them, though InfluxDB never got them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import math
import random
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
from influxdb_client.client.write.point import Point as LinePoint
from influxdb_client.domain.write_precision import WritePrecision

from service_runtime.errors import Unavailable
from service_runtime.timeseries.digest import HOUR_NS, SampleDigests, digest_rows, digest_rows_of_values
from service_runtime.timeseries.port import (
    ROLLUP_RETENTION,
    ROLLUP_WINDOW,
    Aggregation,
    Failure,
    Point,
    RangeDigest,
    Sample,
    SeriesKey,
    TimedValue,
    UptimeCounts,
    check_field_name,
    from_ns,
    hour_ceil,
    hour_floor,
    to_ns,
)
from service_runtime.timeseries.spool import LineSpool

log = logging.getLogger(__name__)
# httpx logs every request at INFO: one line per write and query buried the rest of the log (over half of it
# during an outage). The store logs its requests at DEBUG, its outages once, and counts what it writes.
logging.getLogger("httpx").setLevel(logging.WARNING)

MEASUREMENT = "check"
DIGEST_FILE = "digests.sqlite3"  # in the spool directory, which one process holds
_DIGESTED = ("is_up", "response_time_ms", "cert_days_left", "error_class", "message")
_COVERED_FROM = "covered_from"  # digest_meta: the digests hold every hour from this one on (but the stale ones)
_ALIVE = "alive"  # digest_meta: when samples were last digested
_COMPLETE_FROM = "complete_from"  # digest_meta: digest_last holds every check from then on (_EVER: all of them)
_EVER = -(2**62)
# A summary reads again at most this many hours the digests do not hold (the hours from its start to theirs); a
# range further back is read from the raw samples.
REREAD_HOURS = 50
T = TypeVar("T")
ROLLUP_MEASUREMENT = "uptime_1h"
MAX_NOTE_CHARS = 500
# Line protocol's escapes (as influxdb-client's Point writes them): keys and tag values, string field values.
_ESCAPE_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_STRING = str.maketrans({'"': r"\"", "\\": r"\\"})
# points_many names the series it wants up to this many, and reads every series in the range beyond. Naming
# costs InfluxDB 1.6 about what scanning does per series read (monitor ids matched by one regular expression of
# a few thousand alternatives, bench/alerting_bench.py measures both), so it scans only when nearly all are
# wanted: then one statement spares the matching.
FILTERED_SERIES_MAX = 90_000
NAMED_PER_STATEMENT = 5000  # monitor ids in one statement's regular expression (about 100 KB of InfluxQL)
STATEMENTS_IN_FLIGHT = 2  # InfluxDB answers one while we parse the other


# InfluxDB 1.x's answers to a write into a database (404) or retention policy (500) that does not exist.
_MISSING = re.compile(r'^\{"error":"(?:database not found|retention policy not found)')


class _Unreachable(Unavailable):
    """InfluxDB did not answer, or answered 5xx: worth trying again later."""

    def __init__(self, **fields: object) -> None:
        super().__init__("InfluxDB unreachable")
        self.fields = fields


def quote_identifier(name: str) -> str:
    """An InfluxQL identifier in double quotes."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(value: str) -> str:
    """An InfluxQL string literal in single quotes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def regex_of_names(names: Sequence[str]) -> str:
    """An InfluxQL regular expression literal matching exactly these strings. Letters, digits and ``_`` stand
    for themselves and every other character is written ``\\x{hex}``, so no name can end the literal or
    mean anything but itself."""
    return "/^(?:" + "|".join(map(_regex_literal, names)) + ")$/"


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_]+")


def _regex_literal(name: str) -> str:
    if _PLAIN_NAME.fullmatch(name):  # every id we make
        return name
    return "".join(c if _PLAIN_NAME.fullmatch(c) else f"\\x{{{ord(c):x}}}" for c in name)


def _duration(window: timedelta) -> str:
    micros = (window.days * 86_400 + window.seconds) * 1_000_000 + window.microseconds
    if micros <= 0:
        raise ValueError("window must be positive")
    return f"{micros}u"


def _call(how: Aggregation, field_name: str) -> str:
    column = quote_identifier(field_name)
    if how.percentile is not None:
        return f"percentile({column}, {how.percentile:g})"
    return f"{how.value}({column})"


@dataclass(frozen=True)
class InfluxConfig:
    """Where and how to reach InfluxDB."""

    url: str  # http(s)://host:port
    database: str
    retention_policy: str = "monitors_raw"
    raw_retention: timedelta = timedelta(days=30)
    rollup_retention_policy: str = "monitors_rollup"
    rollup_retention: timedelta = ROLLUP_RETENTION
    token: str = ""  # InfluxDB 2.x / 3.x
    username: str = ""
    password: str = ""
    timeout_s: float = 10.0
    batch_size: int = 5000
    buffer_limit: int = 100_000  # samples held while InfluxDB is unreachable
    flush_interval_s: float = 0.5
    report_interval_s: float = 60.0  # how often the samples written and dropped are logged (when any were)
    max_backoff_s: float = 10.0
    create_database: bool = True
    # Accepted samples are kept here until InfluxDB has them, so a restart or crash loses none (see spool.py).
    spool_dir: Path | None = None
    # The samples' digests (see digest.py): a file in the spool directory when there is one, else in memory. They
    # are kept this long (33 bytes a sample: 10,000 monitors checked every minute fill ~475 MB a day); summaries
    # of older hours read them again from InfluxDB when first asked.
    digest_path: Path | None = None
    digest_retention: timedelta = timedelta(days=3)
    # Other processes write samples too (monitor-service replicas, each with its own spool and digests): this
    # store's digests miss theirs, so summaries read the raw samples from InfluxDB instead.
    shared_writers: bool = False


class InfluxStore:
    """The production :class:`~service_runtime.timeseries.port.TimeSeriesStore`. Use :meth:`open`."""

    def __init__(self, config: InfluxConfig) -> None:
        self.config = config
        headers = {"Authorization": f"Token {config.token}"} if config.token else {}
        auth = (config.username, config.password) if config.username else None
        self._http = httpx.AsyncClient(
            base_url=config.url, headers=headers, auth=auth, timeout=httpx.Timeout(config.timeout_s)
        )
        self._buffer: collections.deque[str] = collections.deque()
        self._head = 0  # sequence number of the oldest buffered line
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = False
        self._flusher: asyncio.Task[None] | None = None
        self._spool: LineSpool | None = None
        self.dropped = 0  # samples lost to a full buffer or refused by InfluxDB
        self.written = 0
        self._full = False  # the buffer has overflowed and not yet drained below its bound
        self._outage_since: float | None = None  # monotonic time of the first failed attempt of an outage
        self._reported = (0, 0)  # written and dropped at the last periodic report
        self._reported_at = time.monotonic()
        # False until the database and retention policies are known to exist: at start when InfluxDB did not
        # answer, and again when a write is refused for want of them (dropped or never made).
        self._database_ready = True
        digest_path = config.digest_path or (config.spool_dir / DIGEST_FILE if config.spool_dir else None)
        if digest_path is not None:
            digest_path.parent.mkdir(parents=True, exist_ok=True)
        self._digest_file = sqlite3.connect(
            digest_path or ":memory:", timeout=5, check_same_thread=False, isolation_level=None
        )
        self._digest_file.execute("PRAGMA journal_mode=WAL")
        self._digests = SampleDigests(self._digest_file)
        self._digest_lock = asyncio.Lock()

    @classmethod
    async def open(cls, config: InfluxConfig) -> InfluxStore:
        """A store whose flusher is running, and whose database and retention policies exist (created when
        allowed) or will be made once InfluxDB answers: it may start before InfluxDB does."""
        store = cls(config)
        if config.spool_dir is not None:
            try:
                store._spool = await LineSpool.open(config.spool_dir, config.batch_size, store._accept)
            except BaseException:
                await store._http.aclose()
                raise
            if store._buffer:
                log.warning(
                    "time-series samples from before the restart, to be written",
                    extra={"buffered": len(store._buffer), "spool": str(config.spool_dir)},
                )
        if config.create_database:
            store._database_ready = await store._ensure_database()
        await store._cover_digests()
        store._flusher = asyncio.create_task(store._flush_forever(), name="influx-flusher")
        return store

    async def _cover_digests(self) -> None:
        """Say which hours the digests hold completely. They hold what this store writes from now on, and, when
        the database has no sample yet, everything; hours from before (and, for a digest file kept from an earlier
        run, the hours since it was last written to, when another process may have written) are read again from
        InfluxDB when a summary first needs them (:meth:`_complete_digests`)."""
        now = to_ns(datetime.now(UTC))
        covered, alive = self._digests.meta(_COVERED_FROM), self._digests.meta(_ALIVE)
        if covered is None:
            covered = _EVER if await self._database_is_empty() else _hour(now) + HOUR_NS

            def start_covering() -> None:
                self._digests.set_meta(_COVERED_FROM, covered)
                self._digests.set_meta(_COMPLETE_FROM, covered)

            await self._in_digests(start_covering)
        elif alive is not None and alive < now:
            gap = range(_hour(alive), _hour(now) + HOUR_NS, HOUR_NS)
            await self._in_digests(lambda: self._digests.mark_stale(gap))

    async def _database_is_empty(self) -> bool:
        try:
            body = await self._query(f"SHOW SERIES FROM {quote_identifier(MEASUREMENT)} LIMIT 1")
        except Unavailable:
            return False  # not known: the hours before are read again when needed
        return not _rows(body)

    async def _in_digests(self, work: Callable[[], T]) -> T:
        """Digest work on a worker thread, one at a time."""
        async with self._digest_lock:
            return await asyncio.to_thread(work)

    async def _ensure_database(self) -> bool:
        """Create the database and retention policies (``CREATE DATABASE`` does nothing if it exists). False
        when InfluxDB cannot be reached, so the flusher tries again before its next write."""
        db = quote_identifier(self.config.database)
        try:
            await self._admin(f"CREATE DATABASE {db}")
            existing = await self._admin(f"SHOW RETENTION POLICIES ON {db}")
            names = {row[0] for row in _rows(existing)}
            policies = [
                (self.config.retention_policy, self.config.raw_retention, " DEFAULT"),
                (self.config.rollup_retention_policy, self.config.rollup_retention, ""),
            ]
            for name, duration, default in policies:
                verb = "ALTER" if name in names else "CREATE"
                replication = "" if verb == "ALTER" else " REPLICATION 1"
                await self._admin(
                    f"{verb} RETENTION POLICY {quote_identifier(name)} ON {db}"
                    f" DURATION {_duration(duration)}{replication}{default}"
                )
        except _Unreachable as error:
            self._unavailable(**error.fields, database="not created yet")
            return False
        except Unavailable as error:
            # 2.x / 3.x manage buckets themselves and may refuse these statements: carry on with writes.
            log.warning("could not create database or retention policies", extra={"error": str(error)})
        return True

    async def _admin(self, statement: str) -> dict[str, Any]:
        """One statement of :meth:`_ensure_database`: _Unreachable when InfluxDB does not answer (or answers
        5xx), Unavailable when it refuses the statement."""
        try:
            reply = await self._http.post("/query", data={"q": statement})
        except httpx.HTTPError as error:
            raise _Unreachable(error=repr(error)) from error
        if reply.status_code >= 500:
            raise _Unreachable(status=reply.status_code, error=reply.text[:300])
        if reply.status_code != 200:
            raise Unavailable(f"InfluxDB refused {statement.split(' ON ')[0]!r} with HTTP {reply.status_code}")
        return _answer(reply, f"InfluxDB refused {statement.split(' ON ')[0]!r}")

    # --- writing -------------------------------------------------------------------------------------

    @staticmethod
    def line(sample: Sample) -> str:
        """The sample as one line of line protocol: what influxdb-client's ``Point`` makes of it, character
        for character (tests/runtime/test_influx_lines.py compares them on generated samples), built here because
        ``Point`` took most of a write's CPU: 13 µs a website sample here, against 6."""
        fields: dict[str, str] = {}
        for key, number in sample.fields.items():
            value = float(number)
            if math.isfinite(value):
                text = repr(value)
                fields[key] = text[:-2] if text.endswith(".0") else text
            else:
                fields.pop(key, None)
        for key, note in sample.notes.items():
            fields[key] = '"' + " ".join(note.split())[:MAX_NOTE_CHARS].translate(_ESCAPE_STRING) + '"'
        if not fields:
            return ""
        series = _series_of(sample.owner_id, sample.monitor_id, tuple(sample.tags.items()))
        field_text = ",".join([_key(key) + value for key, value in sorted(fields.items())])
        return f"{series} {field_text} {to_ns(sample.time)}"

    async def write(self, samples: Sequence[Sample]) -> None:
        """Accept samples: on disk first when the store has a spool (Unavailable if the disk refuses them), then
        buffered for the flusher."""
        lines = [self.line(s) for s in samples]
        if self._spool is not None:
            await self._spool.append(lines)  # hands them to _accept once synced, in the order they were synced
        else:
            self._accept(lines)
        rows, failures = digest_rows(samples, _note)
        now = to_ns(datetime.now(UTC))

        def add() -> None:
            with self._digest_file:
                self._digest_file.execute("BEGIN")
                self._digests.add_rows(rows, failures)
                self._digests.set_meta(_ALIVE, now)

        await self._in_digests(add)

    def _accept(self, lines: list[str]) -> None:
        self._buffer.extend(lines)
        overflow = len(self._buffer) - self.config.buffer_limit
        if overflow > 0:
            self._discard_front(overflow)
            self.dropped += overflow
            if not self._full:  # once per filling; what it drops after is in the periodic count
                self._full = True
                limit = self.config.buffer_limit
                log.error(
                    "time-series buffer full: oldest samples dropped",
                    extra={"dropped": overflow, "dropped_total": self.dropped, "buffer_limit": limit},
                )
        if self._buffer:
            self._drained.clear()
            self._wakeup.set()

    def _discard_front(self, count: int) -> None:
        count = min(count, len(self._buffer))
        for _ in range(count):
            self._buffer.popleft()
        self._head += count
        if self._spool is not None:
            self._spool.release(count)

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every accepted sample has been sent (or dropped); Unavailable after ``timeout_s``."""
        self._wakeup.set()
        try:
            async with asyncio.timeout(timeout_s):
                await self._drained.wait()
        except TimeoutError:
            raise Unavailable(f"InfluxDB did not accept {len(self._buffer)} buffered samples in {timeout_s}s") from None

    async def _flush_forever(self) -> None:
        backoff = 0.0
        while True:
            self._report_counts()
            if not self._buffer:
                self._drained.set()
                if self._closing:
                    return
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.flush_interval_s):
                        await self._wakeup.wait()
                continue
            outcome = await self._send_next()
            if outcome == "retry":
                if self._closing and self._spool is not None:
                    log.warning(
                        "InfluxDB unreachable at shutdown: samples kept in the spool for the next start",
                        extra={"buffered": len(self._buffer), "spool": str(self._spool.directory)},
                    )
                    return
                if self._closing and backoff >= self.config.max_backoff_s:
                    log.error(
                        "InfluxDB unreachable at shutdown: buffered samples lost", extra={"dropped": len(self._buffer)}
                    )
                    self.dropped += len(self._buffer)
                    self._discard_front(len(self._buffer))
                    continue
                backoff = min(self.config.max_backoff_s, max(0.2, backoff * 2))
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                continue
            backoff = 0.0

    def _unavailable(self, **why: object) -> None:
        """A write (or the database's creation) must wait: one warning when an outage starts, debug lines after."""
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning(
                "InfluxDB unavailable: samples are buffered until it answers",
                extra={**why, "buffered": len(self._buffer)},
            )
        else:
            log.debug("InfluxDB still unavailable", extra=why)

    def _available(self) -> None:
        if self._outage_since is not None:
            log.warning(
                "InfluxDB available again",
                extra={"outage_s": round(time.monotonic() - self._outage_since, 1), "buffered": len(self._buffer)},
            )
            self._outage_since = None

    def _report_counts(self, force: bool = False) -> None:
        """Every ``report_interval_s`` (or when closing), the samples written and dropped since the last report,
        if any were: a warning when some were dropped."""
        now = time.monotonic()
        if not force and now - self._reported_at < self.config.report_interval_s:
            return
        written, dropped = self.written - self._reported[0], self.dropped - self._reported[1]
        self._reported_at = now
        if not written and not dropped:
            return
        self._reported = (self.written, self.dropped)
        log.log(
            logging.WARNING if dropped else logging.INFO,
            "time-series samples written and dropped",
            extra={
                "written": written,
                "dropped": dropped,
                "written_total": self.written,
                "dropped_total": self.dropped,
                "buffered": len(self._buffer),
            },
        )

    async def _send_next(self) -> str:
        """Make the database and retention policies if they are missing, else send the oldest batch and let go
        of it once written (or refused for good). "retry" when InfluxDB must be tried again later."""
        if not self._database_ready and self.config.create_database:
            if not await self._ensure_database():
                return "retry"
            self._database_ready = True
            self._available()
            return "ok"
        first = self._head
        batch = list(itertools.islice(self._buffer, self.config.batch_size))
        outcome = await self._send(batch)
        if outcome != "retry":
            self._available()
            self._full = self._full and len(self._buffer) >= self.config.buffer_limit
            # Overflow may have discarded some of the batch's lines meanwhile: discard only what is left of it.
            self._discard_front(first + len(batch) - self._head)
        return outcome

    async def _send(self, batch: list[str]) -> str:
        params = {"db": self.config.database, "rp": self.config.retention_policy, "precision": "ns"}
        try:
            reply = await self._http.post("/write", params=params, content="\n".join(batch).encode())
        except httpx.HTTPError as error:
            self._unavailable(error=repr(error))
            return "retry"
        log.debug("influx write", extra={"status": reply.status_code, "batch": len(batch)})
        if reply.status_code == 204:
            self.written += len(batch)
            return "ok"
        if reply.status_code in (404, 500) and _MISSING.match(reply.text):
            # The database or a retention policy is missing (InfluxDB was empty when we started, or they were
            # dropped): the batch waits while they are made again, or, where we may not make them, until the
            # operator does.
            self._database_ready = False
            self._unavailable(status=reply.status_code, error=reply.text[:300])
            return "retry"
        if reply.status_code in (429,) or reply.status_code >= 500:
            self._unavailable(status=reply.status_code, error=reply.text[:300])
            return "retry"
        # 400 (a partial write: a line InfluxDB will never take), 401/403: retrying cannot help.
        self.dropped += len(batch)
        log.error(
            "InfluxDB rejected a batch",
            extra={"status": reply.status_code, "error": reply.text[:300], "batch": len(batch)},
        )
        return "dropped"

    # --- reading -------------------------------------------------------------------------------------

    async def ping(self, timeout_s: float = 1.0) -> None:
        """Unavailable unless InfluxDB answers its ``/ping`` within ``timeout_s``."""
        try:
            reply = await self._http.get("/ping", timeout=timeout_s)
        except httpx.HTTPError as error:
            raise Unavailable(f"time-series store unreachable ({type(error).__name__})") from error
        if reply.status_code != 204:
            raise Unavailable(f"time-series store answered its ping with HTTP {reply.status_code}")

    async def _query(
        self, q: str, *, method: str = "GET", database: str | None = "", epoch: str = "ns"
    ) -> dict[str, Any]:
        params = {"q": q, "epoch": epoch}
        if database is not None:
            params["db"] = database or self.config.database
            params["rp"] = self.config.retention_policy
        started = time.perf_counter()
        try:
            if method == "POST":
                reply = await self._http.post("/query", data=params)
            else:
                reply = await self._http.get("/query", params=params)
        except httpx.HTTPError as error:
            raise Unavailable(f"time-series store unreachable ({type(error).__name__})") from error
        if reply.status_code != 200:
            raise Unavailable(f"time-series query failed with HTTP {reply.status_code}")
        body = _answer(reply, "time-series query failed")
        log.debug("influxql", extra={"q": q, "ms": round((time.perf_counter() - started) * 1000, 2)})
        return body

    def _where(self, key: SeriesKey, start: datetime, end: datetime) -> str:
        return (
            f"{quote_identifier('owner')} = {quote_string(key.owner_id)}"
            f" AND {quote_identifier('monitor')} = {quote_string(key.monitor_id)}"
            f" AND time >= {to_ns(start)} AND time < {to_ns(end)}"
        )

    def _from(self) -> str:
        return f"{quote_identifier(self.config.retention_policy)}.{quote_identifier(MEASUREMENT)}"

    async def points(self, key: SeriesKey, field_name: str, start: datetime, end: datetime, limit: int) -> list[Point]:
        check_field_name(field_name)
        q = (
            f"SELECT {quote_identifier(field_name)} FROM {self._from()} WHERE {self._where(key, start, end)}"
            f" ORDER BY time ASC LIMIT {int(limit)}"
        )
        return [Point(from_ns(t), float(v)) for t, v in _rows(await self._query(q)) if v is not None]

    async def windows(
        self, key: SeriesKey, field_name: str, start: datetime, end: datetime, window: timedelta, how: Aggregation
    ) -> list[Point]:
        check_field_name(field_name)
        q = (
            f"SELECT {_call(how, field_name)}, count({quote_identifier(field_name)}) FROM {self._from()}"
            f" WHERE {self._where(key, start, end)} GROUP BY time({_duration(window)}) fill(none)"
        )
        return [Point(from_ns(t), float(v), int(n)) for t, v, n in _rows(await self._query(q)) if v is not None and n]

    async def points_many(
        self, field_name: str, series: Sequence[SeriesKey], start: datetime, end: datetime, limit_per_series: int
    ) -> dict[SeriesKey, list[TimedValue]]:
        """Up to :data:`FILTERED_SERIES_MAX` series: statements naming the wanted monitors. More: one
        statement over every series in the range. Either way grouped by owner and monitor, and only the
        wanted (owner, monitor) series are kept. A limit of 1 (the latest value) costs InfluxDB one point per
        series whatever the range."""
        check_field_name(field_name)
        wanted = set(series)
        if not wanted:
            return {}
        if len(wanted) <= FILTERED_SERIES_MAX:
            return await self.points_filtered(
                field_name, sorted(wanted, key=_series_order), start, end, limit_per_series
            )
        return await self.points_scanned(field_name, wanted, start, end, limit_per_series)

    def _select_latest(self, field_name: str, where: str, limit_per_series: int) -> str:
        column = quote_identifier(field_name)
        return (
            f"SELECT {column} FROM {self._from()} WHERE {where}"
            f" GROUP BY {quote_identifier('owner')}, {quote_identifier('monitor')}"
            f" ORDER BY time DESC LIMIT {max(1, int(limit_per_series))}"
        )

    async def points_scanned(
        self, field_name: str, wanted: set[SeriesKey], start: datetime, end: datetime, limit_per_series: int
    ) -> dict[SeriesKey, list[TimedValue]]:
        """:meth:`points_many` as one statement over every series in the range (the wanted ones kept)."""
        check_field_name(field_name)
        where = f"time >= {to_ns(start)} AND time < {to_ns(end)}"
        body = await self._query(self._select_latest(field_name, where, limit_per_series), method="POST", epoch="u")
        return _latest_points(body, wanted)

    async def points_filtered(
        self, field_name: str, series: Sequence[SeriesKey], start: datetime, end: datetime, limit_per_series: int
    ) -> dict[SeriesKey, list[TimedValue]]:
        """:meth:`points_many` as statements naming :data:`NAMED_PER_STATEMENT` monitors each, in one regular
        expression (``"monitor" =~ /^(a|b|...)$/``: InfluxDB 1.6 matches it against its index in a fraction
        of the time a hundred ``owner = .. AND monitor = ..`` terms take), :data:`STATEMENTS_IN_FLIGHT` at
        a time. The owner is checked here, as for a scan: a monitor id of another owner is read, not kept."""
        check_field_name(field_name)
        wanted = set(series)
        monitors = sorted({key.monitor_id for key in wanted})
        window = f"time >= {to_ns(start)} AND time < {to_ns(end)}"
        gate = asyncio.Semaphore(STATEMENTS_IN_FLIGHT)

        async def read(chunk: Sequence[str]) -> dict[SeriesKey, list[TimedValue]]:
            where = f"{quote_identifier('monitor')} =~ {regex_of_names(chunk)} AND {window}"
            async with gate:
                statement = self._select_latest(field_name, where, limit_per_series)
                body = await self._query(statement, method="POST", epoch="u")
            return _latest_points(body, wanted)

        chunks = [monitors[i : i + NAMED_PER_STATEMENT] for i in range(0, len(monitors), NAMED_PER_STATEMENT)]
        reads = [asyncio.ensure_future(read(chunk)) for chunk in chunks]
        result: dict[SeriesKey, list[TimedValue]] = {}
        try:
            for found in await asyncio.gather(*reads):
                result.update(found)
        finally:
            for pending in reads:  # one failed: the rest are not wanted
                pending.cancel()
        return result

    def _where_many(self, owner_id: str, monitor_ids: Sequence[str], start: datetime, end: datetime) -> str:
        monitors = " OR ".join(f"{quote_identifier('monitor')} = {quote_string(m)}" for m in monitor_ids)
        return (
            f"{quote_identifier('owner')} = {quote_string(owner_id)} AND ({monitors})"
            f" AND time >= {to_ns(start)} AND time < {to_ns(end)}"
        )

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
        calls = ", ".join(_call(how, field_name) for how in hows)
        empty = {how: (0.0 if how is Aggregation.COUNT else None) for how in hows}
        result = {m: dict(empty) for m in monitor_ids}
        up = f" AND {quote_identifier('is_up')} = 1" if successful_only else ""
        for chunk in _chunks(monitor_ids):
            where = self._where_many(owner_id, chunk, start, end) + up
            q = f"SELECT {calls} FROM {self._from()} WHERE {where} GROUP BY {quote_identifier('monitor')}"
            for tags, rows in _series(await self._query(q)):
                monitor = tags.get("monitor", "")
                if monitor in result and rows:
                    values = rows[0][1:]
                    result[monitor] = {
                        how: (None if v is None else float(v)) for how, v in zip(hows, values, strict=True)
                    }
        return result

    async def failures_many(
        self, owner_id: str, monitor_ids: Sequence[str], start: datetime, end: datetime, limit: int
    ) -> dict[str, list[Failure]]:
        result: dict[str, list[Failure]] = {m: [] for m in monitor_ids}
        columns = ", ".join(quote_identifier(c) for c in ("is_up", "error_class", "message"))
        for chunk in _chunks(monitor_ids):
            q = (
                f"SELECT {columns} FROM {self._from()} WHERE {self._where_many(owner_id, chunk, start, end)}"
                f" AND {quote_identifier('is_up')} = 0 GROUP BY {quote_identifier('monitor')}"
                f" ORDER BY time ASC LIMIT {int(limit)}"
            )
            for tags, rows in _series(await self._query(q)):
                monitor = tags.get("monitor", "")
                if monitor in result:
                    result[monitor] = [Failure(from_ns(t), str(e or ""), str(m or "")) for t, _, e, m in rows]
        return result

    async def first_times_many(
        self, owner_id: str, monitor_ids: Sequence[str], field_name: str, start: datetime, end: datetime
    ) -> dict[str, datetime]:
        """``first()`` is a selector: without GROUP BY time, InfluxQL answers with the first point's own time."""
        check_field_name(field_name)
        result: dict[str, datetime] = {}
        for chunk in _chunks(monitor_ids):
            q = (
                f"SELECT first({quote_identifier(field_name)}) FROM {self._from()}"
                f" WHERE {self._where_many(owner_id, chunk, start, end)} GROUP BY {quote_identifier('monitor')}"
            )
            for tags, rows in _series(await self._query(q)):
                monitor = tags.get("monitor", "")
                if monitor in chunk and rows and rows[0][1] is not None:
                    result[monitor] = from_ns(int(rows[0][0]))
        return result

    async def next_up(self, key: SeriesKey, after: datetime, end: datetime) -> datetime | None:
        q = (
            f"SELECT {quote_identifier('is_up')} FROM {self._from()}"
            f" WHERE {quote_identifier('owner')} = {quote_string(key.owner_id)}"
            f" AND {quote_identifier('monitor')} = {quote_string(key.monitor_id)}"
            f" AND time > {to_ns(after)} AND time < {to_ns(end)} AND {quote_identifier('is_up')} = 1"
            " ORDER BY time ASC LIMIT 1"
        )
        rows = _rows(await self._query(q))
        return from_ns(rows[0][0]) if rows else None

    async def enforce_retention(self, now: datetime | None = None) -> int:
        """InfluxDB expires samples and rollups itself, through the retention policies made by :meth:`open`; the
        digests of samples older than the digest retention (or the raw one, if shorter) are dropped here, and the
        hours they covered are read again from InfluxDB by the summaries that need them."""
        kept = min(self.config.digest_retention, self.config.raw_retention)
        cutoff = to_ns((now or datetime.now(UTC)) - kept)
        raw_cutoff = to_ns((now or datetime.now(UTC)) - self.config.raw_retention)

        def prune() -> None:
            with self._digest_file:
                self._digest_file.execute("BEGIN")
                self._digests.prune(cutoff)
                self._digests.forget_checks_before(raw_cutoff)  # InfluxDB has dropped them too
                covered = self._digests.meta(_COVERED_FROM)
                whole_from = _hour(cutoff) + (HOUR_NS if cutoff % HOUR_NS else 0)
                if covered is None or covered < whole_from:
                    self._digests.set_meta(_COVERED_FROM, whole_from)

        await self._in_digests(prune)
        return 0

    def _rollup_from(self) -> str:
        return f"{quote_identifier(self.config.rollup_retention_policy)}.{quote_identifier(ROLLUP_MEASUREMENT)}"

    async def roll_up(self, start: datetime, end: datetime) -> int:
        first, last = hour_ceil(start), hour_floor(end)
        if first >= last:
            return 0
        up = quote_identifier("is_up")
        q = (
            f"SELECT count({up}), sum({up}) FROM {self._from()} WHERE time >= {to_ns(first)} AND time < {to_ns(last)}"
            f" GROUP BY time(1h), {quote_identifier('owner')}, {quote_identifier('monitor')} fill(none)"
        )
        lines = []
        for tags, rows in _series(await self._query(q)):
            for t, checks, ups in rows:
                if checks:
                    line = (
                        LinePoint(ROLLUP_MEASUREMENT)
                        .tag("owner", tags.get("owner", ""))
                        .tag("monitor", tags.get("monitor", ""))
                        .field("checks", int(checks))
                        .field("up", int(ups or 0))
                        .time(int(t), WritePrecision.NS)
                    )
                    lines.append(line.to_line_protocol())
        size = self.config.batch_size
        for i in range(0, len(lines), size):
            await self._write_now(lines[i : i + size], self.config.rollup_retention_policy)
        return len(lines)

    async def _write_now(self, lines: list[str], retention_policy: str) -> None:
        """Write at once (not through the buffer); Unavailable when InfluxDB does not take it."""
        params = {"db": self.config.database, "rp": retention_policy, "precision": "ns"}
        try:
            reply = await self._http.post("/write", params=params, content="\n".join(lines).encode())
        except httpx.HTTPError as error:
            raise Unavailable(f"time-series store unreachable ({type(error).__name__})") from error
        if reply.status_code != 204:
            raise Unavailable(f"time-series write failed with HTTP {reply.status_code}: {reply.text[:200]}")

    async def rolled_up_until(self) -> datetime | None:
        rows = _rows(await self._query(f"SELECT last({quote_identifier('checks')}) FROM {self._rollup_from()}"))
        return from_ns(int(rows[0][0])) + ROLLUP_WINDOW if rows else None

    async def uptime_counts_many(
        self, owner_id: str, monitor_ids: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, UptimeCounts]:
        result = {m: UptimeCounts() for m in monitor_ids}
        for chunk in _chunks(monitor_ids):
            q = (
                f"SELECT sum({quote_identifier('checks')}), sum({quote_identifier('up')}) FROM {self._rollup_from()}"
                f" WHERE {self._where_many(owner_id, chunk, start, end)} GROUP BY {quote_identifier('monitor')}"
            )
            for tags, rows in _series(await self._query(q)):
                monitor = tags.get("monitor", "")
                if monitor in result and rows:
                    result[monitor] = UptimeCounts(int(rows[0][1] or 0), int(rows[0][2] or 0))
        return result

    async def digests(
        self, owner_id: str, monitor_ids: Sequence[str], start: datetime, end: datetime, carry_from: datetime
    ) -> dict[str, RangeDigest]:
        """From the digests this store keeps as it writes (see :mod:`.digest`), no raw sample read once they hold
        the range's hours: a first summary of hours from before they were kept reads those hours again
        (:meth:`_complete_digests`), and a monitor whose state before the range the digests cannot tell (none of
        its samples since they are complete) has it looked for in InfluxDB."""
        if self.config.shared_writers:
            return await self._raw_digests(owner_id, monitor_ids, start, end, carry_from)
        covered = await self._complete_digests(start, end)
        if covered is None:
            return await self._raw_digests(owner_id, monitor_ids, start, end, carry_from)
        elsewhere: dict[str, float] = {}
        if to_ns(carry_from) < covered:
            unknown = await self._in_digests(
                functools.partial(self._digests.without_state, owner_id, monitor_ids, covered, start)
            )
            # A monitor whose latest check is older than the hours held was last in that state. When the digests
            # have seen every check (from an empty database), one first checked after those hours began, or never,
            # has no earlier state. Others are asked.
            latest = await self._in_digests(functools.partial(self._digests.latest_checks, owner_id, unknown))
            every_check = await self._in_digests(functools.partial(self._digests.meta, _COMPLETE_FROM)) == _EVER
            ask = []
            for monitor_id in unknown:
                last_ns, last_up, first_ns = latest.get(monitor_id, (None, 0.0, None))
                if last_ns is not None and last_ns < covered:
                    elsewhere[monitor_id] = last_up
                elif not (every_check and (first_ns is None or first_ns >= covered)):
                    ask.append(monitor_id)
            if ask:
                elsewhere.update(await self._last_states(owner_id, ask, carry_from, from_ns(covered)))
        read = functools.partial(
            self._digests.read, owner_id, monitor_ids, start, end, max(carry_from, from_ns(covered)), elsewhere
        )
        return await self._in_digests(read)

    async def _complete_digests(self, start: datetime, end: datetime) -> int | None:
        """Read again from InfluxDB the hours from ``start``'s to those the digests hold completely (at most
        :data:`REREAD_HOURS` of them), and the hours marked stale; returns the time from which they hold every
        hour, or None for a range too far before it (read from the raw samples then)."""
        covered = await self._in_digests(functools.partial(self._digests.meta, _COVERED_FROM))
        assert covered is not None
        first = _hour(to_ns(start))
        if covered - first > REREAD_HOURS * HOUR_NS:
            return None
        stale = await self._in_digests(self._digests.stale_hours)
        missing = sorted({*range(first, covered, HOUR_NS), *stale})
        if missing:  # InfluxDB first takes what was accepted (the spool's lines from before a restart among them)
            await self.flush(timeout_s=self.config.timeout_s)
        for hour in missing:
            await self._reread_hour(hour)
        if first < covered:
            covered = first
            await self._in_digests(lambda: self._digests.set_meta(_COVERED_FROM, first))
        return covered

    async def _reread_hour(self, hour: int) -> None:
        """One hour's samples of every series, read from InfluxDB and merged into the digests (each sample once)."""
        columns = ", ".join(quote_identifier(c) for c in _DIGESTED)
        q = (
            f"SELECT {columns} FROM {self._from()} WHERE time >= {hour} AND time < {hour + HOUR_NS}"
            f" GROUP BY {quote_identifier('owner')}, {quote_identifier('monitor')}"
        )
        body = await self._query(q, method="POST")
        if any(result.get("partial") for result in body.get("results", [])):
            raise Unavailable("time-series answer truncated by InfluxDB's max-row-limit")
        values = [
            (tags.get("owner", ""), tags.get("monitor", ""), int(t), is_up, response, cert, error_class, message)
            for tags, rows in _series(body)
            for t, is_up, response, cert, error_class, message in rows
        ]
        rows, failures = digest_rows_of_values(values, _note)

        def merge() -> None:
            with self._digest_file:
                self._digest_file.execute("BEGIN")
                self._digests.replace_hour(hour, rows, failures)
                self._digests.clear_stale(hour)

        await self._in_digests(merge)

    async def _last_states(
        self, owner_id: str, monitor_ids: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, float]:
        """The is_up of each monitor's last sample in ``[start, end)``, for those with one."""
        result: dict[str, float] = {}
        up = quote_identifier("is_up")
        for chunk in _chunks(sorted(monitor_ids), NAMED_PER_STATEMENT):
            q = (
                f"SELECT last({up}) FROM {self._from()} WHERE {quote_identifier('owner')} = {quote_string(owner_id)}"
                f" AND {quote_identifier('monitor')} =~ {regex_of_names(chunk)}"
                f" AND time >= {to_ns(start)} AND time < {to_ns(end)} GROUP BY {quote_identifier('monitor')}"
            )
            for tags, rows in _series(await self._query(q, method="POST")):
                if rows and rows[0][1] is not None:
                    result[tags.get("monitor", "")] = float(rows[0][1])
        return result

    async def _raw_digests(
        self, owner_id: str, monitor_ids: Sequence[str], start: datetime, end: datetime, carry_from: datetime
    ) -> dict[str, RangeDigest]:
        """:meth:`digests` from the raw samples, for a range the digests do not hold: four statements grouped by
        monitor, sent together (counts, sums and the last certificate; response-time
        percentiles of the successful samples; the first sample's time, as ``first()`` alone answers with it; the
        last state before the range), then one more for the is_up series of the monitors that failed. Up to
        :data:`NAMED_PER_STATEMENT` monitors are named in one regular expression; more are read as every series
        of the owner's, the wanted ones kept."""
        wanted = set(monitor_ids)
        if not wanted:
            return {}
        owner = f"{quote_identifier('owner')} = {quote_string(owner_id)}"
        scope = owner
        if len(wanted) <= NAMED_PER_STATEMENT:
            scope += f" AND {quote_identifier('monitor')} =~ {regex_of_names(sorted(wanted))}"
        in_range = f"{scope} AND time >= {to_ns(start)} AND time < {to_ns(end)}"
        is_up, response, cert = (quote_identifier(n) for n in ("is_up", "response_time_ms", "cert_days_left"))
        by_monitor = f"GROUP BY {quote_identifier('monitor')}"
        statements = [
            f"SELECT count({is_up}), sum({is_up}), last({cert}) FROM {self._from()} WHERE {in_range} {by_monitor}",
            f"SELECT percentile({response}, 50), percentile({response}, 95), percentile({response}, 99)"
            f" FROM {self._from()} WHERE {in_range} AND {is_up} = 1 {by_monitor}",
            f"SELECT first({is_up}) FROM {self._from()} WHERE {in_range} {by_monitor}",
            f"SELECT last({is_up}) FROM {self._from()}"
            f" WHERE {scope} AND time >= {to_ns(carry_from)} AND time < {to_ns(start)} {by_monitor}",
        ]
        gate = asyncio.Semaphore(STATEMENTS_IN_FLIGHT)

        async def run(statement: str) -> list[tuple[str, list[Any]]]:
            async with gate:
                body = await self._query(statement, method="POST")
            if any(result.get("partial") for result in body.get("results", [])):
                raise Unavailable("time-series answer truncated by InfluxDB's max-row-limit")
            return [(tags.get("monitor", ""), rows) for tags, rows in _series(body) if rows]

        counted, timed, firsts, before = await asyncio.gather(*map(run, statements))
        found: dict[str, dict[str, Any]] = {m: {} for m in wanted}
        for monitor, rows in counted:
            if monitor in found:
                _, checks, up, cert_days = rows[0]
                found[monitor].update(checks=int(checks or 0), up=round(up or 0), cert_days_left=_float(cert_days))
        for monitor, rows in timed:
            if monitor in found:
                found[monitor]["response_time"] = tuple(_float(v) for v in rows[0][1:4])
        for monitor, rows in firsts:
            if monitor in found and rows[0][1] is not None:
                found[monitor]["first_time"] = from_ns(int(rows[0][0]))
        for monitor, rows in before:
            if monitor in found:
                found[monitor]["carried"] = _float(rows[0][1])
        failing = sorted(m for m, f in found.items() if f.get("up", 0) < f.get("checks", 0) or f.get("carried") == 0)
        columns = ", ".join(quote_identifier(c) for c in ("is_up", "error_class", "message"))
        series = await asyncio.gather(
            *(
                run(
                    f"SELECT {columns} FROM {self._from()} WHERE {owner}"
                    f" AND {quote_identifier('monitor')} =~ {regex_of_names(chunk)}"
                    f" AND time >= {to_ns(start)} AND time < {to_ns(end)} AND {is_up} >= 0 {by_monitor}"
                    " ORDER BY time ASC"
                )
                for chunk in _chunks(failing, NAMED_PER_STATEMENT)
            )
        )
        for monitor, rows in (item for answer in series for item in answer):
            if monitor in found:
                found[monitor]["is_up_series"] = [
                    (from_ns(int(t)), float(u), str(e or ""), str(m or "")) for t, u, e, m in rows if u is not None
                ]
        return {m: RangeDigest(**fields) for m, fields in found.items()}

    async def close(self) -> None:
        """Send what is buffered, then close the connection pool. With a spool, what InfluxDB does not take at
        once stays there for the next start; without one, it is retried up to the maximum backoff, then lost."""
        self._closing = True
        self._wakeup.set()
        if self._flusher is not None:
            try:
                async with asyncio.timeout(self.config.max_backoff_s * 4 + self.config.timeout_s):
                    await self._flusher
            except TimeoutError:
                log.error("InfluxDB flusher did not finish", extra={"buffered": len(self._buffer)})
        self._report_counts(force=True)
        if self._spool is not None:
            await self._spool.close()
        await self._http.aclose()
        async with self._digest_lock:
            self._digest_file.close()


# Field names and series (owner, monitor, location) come back sample after sample: each is escaped once
# (translate took a microsecond a call).
@functools.lru_cache(maxsize=1000)
def _key(key: str) -> str:
    """A field's key and its equals sign."""
    return key.translate(_ESCAPE_KEY) + "="


@functools.lru_cache(maxsize=100_000)
def _series_of(owner_id: str, monitor_id: str, tags: tuple[tuple[str, str], ...]) -> str:
    """The measurement and tags of a sample's line: the same for every sample of a monitor at a location."""
    named = {"owner": owner_id, "monitor": monitor_id, **dict(tags)}
    text = ",".join(
        f"{key.translate(_ESCAPE_KEY)}={_tag_value(value)}" for key, value in sorted(named.items()) if key and value
    )
    return f"{MEASUREMENT},{text}" if text else MEASUREMENT


def _tag_value(value: str) -> str:
    escaped = value.translate(_ESCAPE_KEY)
    return escaped + " " if escaped.endswith("\\") else escaped


def _answer(reply: httpx.Response, failed: str) -> dict[str, Any]:
    """The JSON of a /query answer (orjson: a warm start reads tens of megabytes); Unavailable, ``failed``
    and InfluxDB's error, when a statement failed."""
    try:
        body: dict[str, Any] = orjson.loads(reply.content)
    except orjson.JSONDecodeError as error:
        raise Unavailable("time-series store answered something that is not JSON") from error
    errors = [r["error"] for r in body.get("results", []) if "error" in r]
    if errors:
        raise Unavailable(f"{failed}: {errors[0]}")
    return body


def _series(body: dict[str, Any]) -> list[tuple[dict[str, str], list[list[Any]]]]:
    return [
        (series.get("tags") or {}, series.get("values", []))
        for result in body.get("results", [])
        for series in result.get("series", [])
    ]


def _latest_points(body: dict[str, Any], wanted: set[SeriesKey]) -> dict[SeriesKey, list[TimedValue]]:
    """Rows of a ``GROUP BY owner, monitor ORDER BY time DESC`` statement with times in microseconds (InfluxDB's
    ``epoch=u``: shorter than nanoseconds, and what a datetime holds), per wanted series, oldest first."""
    if any(result.get("partial") for result in body.get("results", [])):
        # InfluxDB's [http] max-row-limit cut the answer short: refuse rather than hand back a partial history.
        raise Unavailable("time-series answer truncated by InfluxDB's max-row-limit")
    result: dict[SeriesKey, list[TimedValue]] = {}
    for tags, rows in _series(body):
        key = SeriesKey(tags.get("owner", ""), tags.get("monitor", ""))
        if key in wanted:
            points = [(t / 1e6, float(v)) for t, v in reversed(rows) if v is not None]
            if points:
                result[key] = points
    return result


def _series_order(key: SeriesKey) -> tuple[str, str]:
    return (key.owner_id, key.monitor_id)


def _rows(body: dict[str, Any]) -> list[list[Any]]:
    return [row for _, rows in _series(body) for row in rows]


def _note(note: str) -> str:
    """What InfluxDB keeps of a note: its line's string field (see :meth:`InfluxStore.line`)."""
    return " ".join(note.split())[:MAX_NOTE_CHARS]


def _hour(ns: int) -> int:
    return ns - ns % HOUR_NS


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _chunks(monitor_ids: Sequence[str], size: int = 100) -> list[Sequence[str]]:
    """Monitor ids in groups small enough for one InfluxQL statement."""
    return [monitor_ids[i : i + size] for i in range(0, len(monitor_ids), size)]
