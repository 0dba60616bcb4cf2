"""Digests of the samples, kept beside each store so that summaries of many monitors read no raw sample.

A digest row holds one monitor's hour: its checks (samples with an is_up) and successful checks, the first check's
time, the latest check's time and is_up, the latest certificate days, the successful checks' response times, and
every sample's time, is_up, response_time_ms and cert_days_left packed (25 bytes a sample); failed samples' notes
are kept apart. Rows grow as samples are written. A range's whole hours are summed by SQLite and its partial first
and last hours filtered sample by sample, so every figure is what the raw samples give, exactly: counts, first
times, carried states, nearest-rank percentiles, outages and their causes.

:meth:`SampleDigests.read` answers :meth:`~service_runtime.timeseries.port.TimeSeriesStore.digests` for 10,000
monitors' day in five statements over ~250,000 rows, where reading the raw samples took 15 s (the embedded file:
2.9 million JSON rows) to 18 s (InfluxDB 1.6 spends ~1 µs a field value and ~50 µs a series a statement, and ~5 s
of CPU on each percentile of 10,000 monitors' day; a digest measurement in InfluxDB, 240,000 points of a few
fields, took it 1.7 to 4 s of CPU to read, hence SQLite).

The rows live in SQLite: in the embedded store's own file, written in the same transaction as the samples; for
the InfluxDB store in a file of its own in its spool directory (see :class:`~.influx_store.InfluxStore`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from service_runtime.timeseries.port import RangeDigest, Sample, from_ns, to_ns

HOUR_NS = 3_600_000_000_000
SAMPLE = np.dtype([("time_ns", "<i8"), ("is_up", "i1"), ("response_time_ms", "<f8"), ("cert_days_left", "<f8")])
_PACK = struct.Struct("<qbdd")
NO_UP = -1  # is_up absent (1 is up, 0 is down)

SCHEMA = """
CREATE TABLE IF NOT EXISTS digest_1h (
    owner_id TEXT NOT NULL,
    monitor_id TEXT NOT NULL,
    hour_ns INTEGER NOT NULL,
    checks INTEGER NOT NULL,  -- samples with an is_up
    up INTEGER NOT NULL,  -- of those, is_up 1
    first_ns INTEGER,  -- the earliest of them
    up_ns INTEGER NOT NULL,  -- the latest of them, -1 without one
    last_up INTEGER,  -- its is_up
    cert_ns INTEGER,  -- the latest sample with a cert_days_left
    cert REAL,  -- its cert_days_left
    latencies BLOB NOT NULL,  -- response_time_ms of the samples with is_up 1, float64 each
    samples BLOB NOT NULL,  -- SAMPLE records, in the order they were written
    PRIMARY KEY (owner_id, monitor_id, hour_ns)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS digest_failures (
    owner_id TEXT NOT NULL,
    monitor_id TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    error_class TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS digest_failures_by_monitor ON digest_failures (owner_id, monitor_id, time_ns);
CREATE TABLE IF NOT EXISTS digest_last (  -- each monitor's latest check, kept while its hours' rows go
    owner_id TEXT NOT NULL,
    monitor_id TEXT NOT NULL,
    up_ns INTEGER NOT NULL,
    last_up INTEGER NOT NULL,
    first_ns INTEGER NOT NULL,  -- its first check
    PRIMARY KEY (owner_id, monitor_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS digest_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS digest_stale (hour_ns INTEGER PRIMARY KEY);  -- hours to read again from the samples
"""
# Every expression of the SET sees the row as it was before the update; at equal times the later write wins.
_UPSERT = (
    "INSERT INTO digest_1h VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (owner_id, monitor_id, hour_ns) DO UPDATE SET"
    " checks = checks + excluded.checks, up = up + excluded.up,"
    " first_ns = CASE WHEN first_ns IS NULL OR excluded.first_ns < first_ns THEN excluded.first_ns ELSE first_ns END,"
    " last_up = CASE WHEN excluded.up_ns >= up_ns THEN excluded.last_up ELSE last_up END,"
    " up_ns = max(up_ns, excluded.up_ns),"
    " cert = CASE WHEN excluded.cert_ns >= coalesce(cert_ns, -1) THEN excluded.cert ELSE cert END,"
    " cert_ns = CASE WHEN excluded.cert_ns >= coalesce(cert_ns, -1) THEN excluded.cert_ns ELSE cert_ns END,"
    " latencies = CAST(latencies || excluded.latencies AS BLOB), samples = CAST(samples || excluded.samples AS BLOB)"
)
_UPSERT_LAST = (
    "INSERT INTO digest_last VALUES (?, ?, ?, ?, ?) ON CONFLICT (owner_id, monitor_id) DO UPDATE SET"
    " last_up = CASE WHEN excluded.up_ns >= up_ns THEN excluded.last_up ELSE last_up END,"
    " up_ns = max(up_ns, excluded.up_ns), first_ns = min(first_ns, excluded.first_ns)"
)
_SCOPE = "owner_id = ? AND monitor_id IN (SELECT value FROM json_each(?))"

Note = Callable[[str], str]
# owner, monitor, hour, checks, up, first_ns, up_ns, last_up, cert_ns, cert, latencies, samples
DigestRow = tuple[str, str, int, int, int, int | None, int, int | None, int | None, float | None, bytes, bytes]
FailureRow = tuple[str, str, int, str, str]  # owner, monitor, time, error class, message
Percentiles = tuple[float | None, float | None, float | None]


def _finite(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else math.nan


def _same(note: str) -> str:
    return note


def digest_rows(samples: Iterable[Sample], note: Note = _same) -> tuple[list[DigestRow], list[FailureRow]]:
    """The digest rows (one per monitor and hour) and failure rows of ``samples``; ``note`` makes of a note what
    the store keeps of it (InfluxDB's lines collapse whitespace and cut)."""
    return digest_rows_of_values(
        (
            s.owner_id,
            s.monitor_id,
            to_ns(s.time),
            s.fields.get("is_up"),
            s.fields.get("response_time_ms"),
            s.fields.get("cert_days_left"),
            s.notes.get("error_class"),
            s.notes.get("message"),
        )
        for s in samples
    )


Values = tuple[str, str, int, float | None, float | None, float | None, str | None, str | None]


def digest_rows_of_values(values: Iterable[Values], note: Note = _same) -> tuple[list[DigestRow], list[FailureRow]]:
    """:func:`digest_rows` of samples given as (owner, monitor, time in ns, is_up, response_time_ms,
    cert_days_left, error class, message). Non-finite values are left out, as both stores leave them out."""
    grouped: dict[tuple[str, str, int], list[Any]] = {}
    failures = []
    pack = _PACK.pack
    for owner_id, monitor_id, t, up_value, response, cert, error_class, message in values:
        if up_value is None and response is None and cert is None:
            continue
        up = NO_UP if up_value is None or not math.isfinite(up_value) else 1 if up_value == 1 else 0
        response, cert = _finite(response), _finite(cert)
        key = (owner_id, monitor_id, t - t % HOUR_NS)
        # checks, up, first_ns, up_ns, last_up, cert_ns, cert, latencies, packed samples (as in _row)
        group = grouped.get(key)
        if group is None:
            group = grouped[key] = [0, 0, None, -1, None, None, None, [], []]
        group[8].append(pack(t, up, response, cert))
        if up != NO_UP:
            group[0] += 1
            if group[2] is None or t < group[2]:
                group[2] = t
            if t >= group[3]:
                group[3], group[4] = t, up
            if up == 1:
                group[1] += 1
                if response == response:  # not NaN
                    group[7].append(response)
            else:
                failures.append((owner_id, monitor_id, t, note(error_class or ""), note(message or "")))
        if cert == cert and (group[5] is None or t >= group[5]):
            group[5], group[6] = t, cert
    rows = [
        (*key, n, u, first, up_ns, last_up, cert_ns, cert, struct.pack(f"<{len(times)}d", *times), b"".join(packed))
        for key, (n, u, first, up_ns, last_up, cert_ns, cert, times, packed) in grouped.items()
    ]
    return rows, failures


def _row(owner_id: str, monitor_id: str, hour_ns: int, records: np.ndarray) -> DigestRow:
    """The digest row of a monitor's samples of one hour (in the order they were written)."""
    times, ups = records["time_ns"], records["is_up"]
    checked = ups != NO_UP
    checks, up = int(np.count_nonzero(checked)), int(np.count_nonzero(ups == 1))
    first_ns, up_ns, last_up = None, -1, None
    if checks:
        first_ns = int(times[checked].min())
        at = _latest(times, checked)
        up_ns, last_up = int(times[at]), int(ups[at])
    certs = records["cert_days_left"]
    has_cert = ~np.isnan(certs)
    cert_ns, cert = None, None
    if has_cert.any():
        at = _latest(times, has_cert)
        cert_ns, cert = int(times[at]), float(certs[at])
    responses = records["response_time_ms"]
    latencies = responses[(ups == 1) & ~np.isnan(responses)].astype("<f8")
    return (
        owner_id,
        monitor_id,
        hour_ns,
        checks,
        up,
        first_ns,
        up_ns,
        last_up,
        cert_ns,
        cert,
        latencies.tobytes(),
        records.tobytes(),
    )


def _latest(times: np.ndarray, among: np.ndarray) -> int:
    """The index of the latest time among ``among`` (the last written of equal ones)."""
    indices = np.flatnonzero(among)
    chosen = times[indices]
    return int(indices[len(chosen) - 1 - int(np.argmax(chosen[::-1]))])


class SampleDigests:
    """The digest rows on one SQLite connection. Every method runs synchronously on the caller's thread (the
    stores call them from their SQLite worker, one at a time); writes join the caller's transaction."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        connection.executescript(SCHEMA)

    def meta(self, name: str) -> int | None:
        row = self._connection.execute("SELECT value FROM digest_meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def set_meta(self, name: str, value: int) -> None:
        self._connection.execute("INSERT OR REPLACE INTO digest_meta VALUES (?, ?)", (name, value))

    def mark_stale(self, hours: Iterable[int]) -> None:
        self._connection.executemany("INSERT OR IGNORE INTO digest_stale VALUES (?)", [(h,) for h in hours])

    def clear_stale(self, hour_ns: int) -> None:
        self._connection.execute("DELETE FROM digest_stale WHERE hour_ns = ?", (hour_ns,))

    def stale_hours(self) -> list[int]:
        return [int(h) for (h,) in self._connection.execute("SELECT hour_ns FROM digest_stale ORDER BY hour_ns")]

    def add(self, samples: Iterable[Sample], note: Note = _same) -> None:
        """Append ``samples``."""
        rows, failures = digest_rows(samples, note)
        self.add_rows(rows, failures)

    def add_rows(self, rows: Sequence[DigestRow], failures: Sequence[FailureRow]) -> None:
        self._connection.executemany(_UPSERT, rows)
        self._connection.executemany(_UPSERT_LAST, [(r[0], r[1], r[6], r[7], r[5]) for r in rows if r[6] >= 0])
        if failures:
            self._connection.executemany("INSERT INTO digest_failures VALUES (?, ?, ?, ?, ?)", failures)

    def prune(self, cutoff_ns: int) -> None:
        """Forget samples older than ``cutoff_ns`` (the hour it falls in keeps its later samples)."""
        hour = cutoff_ns - cutoff_ns % HOUR_NS
        self._connection.execute("DELETE FROM digest_1h WHERE hour_ns < ?", (hour,))
        self._connection.execute("DELETE FROM digest_failures WHERE time_ns < ?", (cutoff_ns,))
        kept = []
        for owner_id, monitor_id, blob in self._connection.execute(
            "SELECT owner_id, monitor_id, samples FROM digest_1h WHERE hour_ns = ?", (hour,)
        ).fetchall():
            records = np.frombuffer(blob, SAMPLE)
            records = records[records["time_ns"] >= cutoff_ns]
            if len(records):
                kept.append(_row(owner_id, monitor_id, hour, records))
        self._connection.execute("DELETE FROM digest_1h WHERE hour_ns = ?", (hour,))
        self.add_rows(kept, [])

    def replace_hour(self, hour_ns: int, rows: Sequence[DigestRow], failures: Sequence[FailureRow]) -> None:
        """Make the hour's rows hold the samples they held and those of ``rows`` and ``failures`` (the hour read
        again from the raw samples), each (monitor, time) once, as InfluxDB keeps one point per series and time."""
        held = {
            (owner_id, monitor_id): blob
            for owner_id, monitor_id, blob in self._connection.execute(
                "SELECT owner_id, monitor_id, samples FROM digest_1h WHERE hour_ns = ?", (hour_ns,)
            )
        }
        for row in rows:
            held[(row[0], row[1])] = held.get((row[0], row[1]), b"") + row[-1]
        merged = []
        for (owner_id, monitor_id), blob in held.items():
            records = np.frombuffer(blob, SAMPLE)
            _, first_of_each = np.unique(records["time_ns"], return_index=True)
            merged.append(_row(owner_id, monitor_id, hour_ns, records[np.sort(first_of_each)]))
        known = set(
            self._connection.execute(
                "SELECT owner_id, monitor_id, time_ns FROM digest_failures WHERE time_ns >= ? AND time_ns < ?",
                (hour_ns, hour_ns + HOUR_NS),
            )
        )
        self._connection.execute("DELETE FROM digest_1h WHERE hour_ns = ?", (hour_ns,))
        self.add_rows(merged, [f for f in failures if f[:3] not in known])

    def latest_checks(self, owner_id: str, monitor_ids: Sequence[str]) -> dict[str, tuple[int, float, int]]:
        """Each monitor's latest check (time, is_up) and the time of its first, for those with one."""
        return {
            monitor_id: (int(up_ns), float(last_up), int(first_ns))
            for monitor_id, up_ns, last_up, first_ns in self._connection.execute(
                f"SELECT monitor_id, up_ns, last_up, first_ns FROM digest_last WHERE {_SCOPE}",
                (owner_id, _json_list(monitor_ids)),
            )
        }

    def forget_checks_before(self, cutoff_ns: int) -> None:
        self._connection.execute("DELETE FROM digest_last WHERE up_ns < ?", (cutoff_ns,))

    def without_state(self, owner_id: str, monitor_ids: Sequence[str], since_ns: int, start: datetime) -> list[str]:
        """The monitors with no check in the hours from ``since_ns`` to ``start``'s, that one left out (its checks
        may all come after ``start``: the state before it may then be older)."""
        first = to_ns(start)
        known = {
            monitor_id
            for (monitor_id,) in self._connection.execute(
                f"SELECT DISTINCT monitor_id FROM digest_1h WHERE {_SCOPE} AND hour_ns >= ? AND hour_ns < ?"
                " AND up_ns >= 0",
                (owner_id, _json_list(monitor_ids), since_ns, first - first % HOUR_NS),
            )
        }
        return [m for m in monitor_ids if m not in known]

    def read(
        self,
        owner_id: str,
        monitor_ids: Sequence[str],
        start: datetime,
        end: datetime,
        carry_from: datetime,
        carried_elsewhere: Mapping[str, float] | None = None,
    ) -> dict[str, RangeDigest]:
        """:meth:`~service_runtime.timeseries.port.TimeSeriesStore.digests` from the rows, in five statements for
        any number of monitors: the whole hours' sums (and their latest certificates), the partial hours' samples,
        the checks before the range, and for the monitors that failed, their samples and failures' notes. The
        carried state is looked for in the whole hours from ``carry_from`` on, else taken from ``carried_elsewhere``
        (the state before those hours, found by the caller). ``is_up_series`` holds the failed samples and the
        first successful one after each run of them: what outages are built from."""
        wanted = sorted(set(monitor_ids))
        if not wanted:
            return {}
        ids = _json_list(wanted)
        first, last = to_ns(start), to_ns(end)
        head = first - first % HOUR_NS
        whole_from, whole_to = head if head == first else head + HOUR_NS, last - last % HOUR_NS
        edges = sorted({h for h in (head, whole_to) if h < last and not whole_from <= h < whole_to})
        whole: dict[str, tuple[int, int, int | None, bytes]] = {}
        certs: dict[str, tuple[int, float]] = {}
        parts, parameters = [], []
        if whole_from < whole_to:
            parts.append(
                "SELECT 0, monitor_id, sum(checks), sum(up), min(first_ns), CAST(group_concat(latencies, '') AS BLOB)"
                f" FROM digest_1h WHERE {_SCOPE} AND hour_ns >= ? AND hour_ns < ? GROUP BY monitor_id"
            )
            parameters += [owner_id, ids, whole_from, whole_to]
            for monitor_id, cert, cert_ns in self._connection.execute(
                f"SELECT monitor_id, cert, max(cert_ns) FROM digest_1h WHERE {_SCOPE} AND hour_ns >= ? AND hour_ns < ?"
                " AND cert_ns IS NOT NULL GROUP BY monitor_id",  # SQLite takes cert from the row of max(cert_ns)
                (owner_id, ids, whole_from, whole_to),
            ):
                certs[monitor_id] = (int(cert_ns), float(cert))
        if edges:
            parts.append(
                "SELECT 1, monitor_id, NULL, NULL, NULL, CAST(group_concat(samples, '') AS BLOB) FROM digest_1h"
                f" WHERE {_SCOPE} AND hour_ns IN (SELECT value FROM json_each(?)) GROUP BY monitor_id"
            )
            parameters += [owner_id, ids, json.dumps(edges)]
        edge_rows = []
        # The whole hours' sums and the partial hours' samples in one statement, each monitor's edge rows in order.
        for part, monitor_id, checks, up, first_ns, blob in self._connection.execute(
            " UNION ALL ".join(parts) + " ORDER BY 1, 2", parameters
        ):
            if part == 0:
                whole[monitor_id] = (int(checks), int(up), first_ns, blob or b"")
            else:
                edge_rows.append((monitor_id, blob))
        carry_ns = to_ns(carry_from)
        states = dict(carried_elsewhere or {})
        for monitor_id, last_up, _ in self._connection.execute(
            f"SELECT monitor_id, last_up, max(up_ns) FROM digest_1h WHERE {_SCOPE} AND hour_ns >= ? AND hour_ns < ?"
            " AND up_ns >= 0 GROUP BY monitor_id",  # SQLite takes last_up from the row of max(up_ns)
            (owner_id, ids, carry_ns + (-carry_ns) % HOUR_NS, head),
        ):
            states[monitor_id] = float(last_up)
        edge = _edge_figures(edge_rows, first, last)
        result = {}
        failing = []
        for monitor_id in wanted:
            checks, up, first_ns, latencies = whole.get(monitor_id, (0, 0, None, b""))
            edge_checks, edge_up, edge_first, carried, cert_at, edge_latencies = edge.get(
                monitor_id, (0, 0, None, None, None, None)
            )
            if carried is None:
                carried = states.get(monitor_id)
            checks, up = checks + edge_checks, up + edge_up
            if edge_first is not None and (first_ns is None or edge_first < first_ns):
                first_ns = edge_first
            cert = certs.get(monitor_id)
            if cert_at is not None and (cert is None or cert_at[0] >= cert[0]):
                cert = cert_at
            values = np.frombuffer(latencies, "<f8")
            if edge_latencies is not None and len(edge_latencies):
                values = np.concatenate((values, edge_latencies))
            result[monitor_id] = RangeDigest(
                checks=checks,
                up=up,
                first_time=None if first_ns is None else from_ns(first_ns),
                carried=carried,
                response_time=_nearest_ranks(np.sort(values)),
                cert_days_left=None if cert is None else cert[1],
            )
            if up < checks or carried == 0:
                failing.append(monitor_id)
        if failing:
            for monitor_id, series in self._outage_series(owner_id, failing, first, last).items():
                result[monitor_id] = dataclasses.replace(result[monitor_id], is_up_series=series)
        return result

    def _outage_series(
        self, owner_id: str, monitor_ids: Sequence[str], first: int, last: int
    ) -> dict[str, list[tuple[datetime, float, str, str]]]:
        """The failed samples in ``[first, last)`` of each monitor, oldest first, each run of them followed by the
        first successful sample after it (and the range's first sample, which may end an outage carried into
        it), with the failures' notes."""
        ids = _json_list(monitor_ids)
        notes: dict[tuple[str, int], tuple[str, str]] = {}
        for monitor_id, t, error_class, message in self._connection.execute(
            f"SELECT monitor_id, time_ns, error_class, message FROM digest_failures WHERE {_SCOPE}"
            " AND time_ns >= ? AND time_ns < ?",
            (owner_id, ids, first, last),
        ):
            notes.setdefault((monitor_id, t), (error_class, message))
        found = {}
        for monitor_id, blob in self._connection.execute(
            f"SELECT monitor_id, CAST(group_concat(samples, '') AS BLOB) FROM digest_1h WHERE {_SCOPE}"
            " AND hour_ns >= ? AND hour_ns < ? GROUP BY monitor_id",
            (owner_id, ids, first - first % HOUR_NS, last),
        ):
            records = np.frombuffer(blob, SAMPLE)
            at, up = records["time_ns"], records["is_up"]
            mine = (at >= first) & (at < last) & (up != NO_UP)
            at, up = at[mine], up[mine]
            order = np.argsort(at, kind="stable")
            at, up = at[order], up[order]
            down = up == 0
            keep = down | np.r_[True, down[:-1]] if len(up) else down
            found[monitor_id] = [
                (from_ns(t), float(u), *(notes.get((monitor_id, t), ("", "")) if u == 0 else ("", "")))
                for t, u in zip(at[keep].tolist(), up[keep].tolist(), strict=True)
            ]
        return found


def _json_list(names: Iterable[str]) -> str:
    return json.dumps(sorted(set(names)))


def _nearest_ranks(ordered: np.ndarray) -> Percentiles:
    """p50, p95 and p99 by nearest rank (the port's :func:`~.port.nearest_rank`) of sorted values."""
    n = len(ordered)
    picked: list[float | None] = []
    for percentile in (50.0, 95.0, 99.0):
        rank = int(n * percentile / 100 + 0.5)
        picked.append(float(ordered[rank - 1]) if 1 <= rank <= n else None)
    return picked[0], picked[1], picked[2]


EdgeFigures = tuple[int, int, int | None, float | None, tuple[int, float] | None, Any]


def _edge_figures(rows: Sequence[tuple[str, bytes]], first: int, last: int) -> dict[str, EdgeFigures]:
    """Each monitor's figures from the samples of the range's partial hours (one blob a monitor, monitors
    ascending), all monitors at once: checks, successful checks, first check time and certificate (time, days) in
    ``[first, last)``, the latest check's is_up before ``first`` (None without one), and the successful checks'
    response times."""
    if not rows:
        return {}
    monitors = [monitor_id for monitor_id, _ in rows]
    blobs = [blob for _, blob in rows]
    size = len(monitors)
    records = np.frombuffer(b"".join(blobs), SAMPLE)
    owner = np.repeat(np.arange(size), [len(b) // SAMPLE.itemsize for b in blobs])
    times, ups = records["time_ns"], records["is_up"]
    inside = (times >= first) & (times < last)
    checked = inside & (ups != NO_UP)
    checks = np.bincount(owner[checked], minlength=size).tolist()
    up = np.bincount(owner[checked & (ups == 1)], minlength=size).tolist()
    firsts = _first_by_owner(owner[checked], times[checked], size)
    prior = (times < first) & (ups != NO_UP)
    carried = _last_by_time(owner[prior], times[prior], ups[prior].astype(np.float64), size).tolist()
    certs = records["cert_days_left"]
    has_cert = inside & ~np.isnan(certs)
    cert_values = _last_by_time(owner[has_cert], times[has_cert], certs[has_cert], size).tolist()
    cert_times = _last_by_time(owner[has_cert], times[has_cert], times[has_cert].astype(np.float64), size).tolist()
    successful = checked & (ups == 1) & ~np.isnan(records["response_time_ms"])
    latencies = records["response_time_ms"][successful]
    bounds = np.searchsorted(owner[successful], np.arange(size + 1)).tolist()
    return {
        monitor_id: (
            checks[i],
            up[i],
            firsts[i],
            None if math.isnan(carried[i]) else carried[i],
            None if math.isnan(cert_values[i]) else (int(cert_times[i]), cert_values[i]),
            latencies[bounds[i] : bounds[i + 1]],
        )
        for i, monitor_id in enumerate(monitors)
    }


def _first_by_owner(owner: np.ndarray, times: np.ndarray, size: int) -> list[int | None]:
    """Each owner's smallest time (owners ascending), None for an owner without one."""
    result: list[int | None] = [None] * size
    if len(owner):
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        for at, value in zip(owner[starts].tolist(), np.minimum.reduceat(times, starts).tolist(), strict=True):
            result[at] = value
    return result


def _last_by_time(owner: np.ndarray, times: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Each owner's value at its largest time (the last written of those), owners ascending; NaN for an owner
    without one. Linear: no sort."""
    result = np.full(size, np.nan)
    if len(owner):
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        latest = np.maximum.reduceat(times, starts)
        segment = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(owner)]))
        at_latest = np.where(times == latest[segment], np.arange(len(owner)), -1)
        result[owner[starts]] = values[np.maximum.reduceat(at_latest, starts)]
    return result
