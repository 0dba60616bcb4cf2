"""The digests batch summaries are read from (service_runtime/timeseries/digest.py), on both stores: a batch reads no
raw sample, and gives each monitor's own summary (from the raw samples) whatever the range's edges, after a
restart, for samples written before the digests existed (the embedded file's backfill, InfluxDB's hours read
again), and for samples written while InfluxDB was down and sent by the next process."""

from __future__ import annotations

import dataclasses
import itertools
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from harness.external import InfluxDBServer
from harness.summaries import H0, KINDS, MINUTE, NOW, OWNER, check, count_statements, histories
from service_runtime.errors import Unavailable
from service_runtime.timeseries import (
    InfluxConfig,
    InfluxStore,
    Sample,
    SeriesKey,
    SqliteSampleStore,
    TimeSeriesStore,
    influx_store,
)
from service_runtime.timeseries.digest import SCHEMA
from services.monitor_svc.summaries.overview import summarize_many
from services.monitor_svc.summaries.queries import summarize_availability, summarize_crypto_price, summarize_website

# Edges inside hours (a head hour whose earlier samples tell the state before the range; a tail hour), a range
# inside one hour, one across two partial hours, and whole hours.
RANGES = [
    (H0 + 17 * MINUTE, H0 + 103 * MINUTE),
    (H0 + 62 * MINUTE, H0 + 98 * MINUTE),
    (H0 + 50 * MINUTE, H0 + 71 * MINUTE),
    (H0 - 33 * MINUTE, H0 + 120 * MINUTE),
    (H0, H0 + 2 * 60 * MINUTE),
]
_databases = itertools.count()


def influx_config(server: InfluxDBServer, database: str, spool: Path | None = None) -> InfluxConfig:
    return InfluxConfig(
        url=server.url, database=database, flush_interval_s=0.05, max_backoff_s=0.5, timeout_s=5, spool_dir=spool
    )


@pytest.fixture(params=["embedded", "influxdb"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TimeSeriesStore]:
    opened: TimeSeriesStore
    if request.param == "embedded":
        opened = SqliteSampleStore(tmp_path / "ts.sqlite3")
    else:
        server: InfluxDBServer = request.getfixturevalue("influxdb")
        opened = await InfluxStore.open(influx_config(server, f"digests_{next(_databases)}"))
    yield opened
    await opened.close()


async def write_histories(store: TimeSeriesStore) -> None:
    await store.write([s for samples in histories().values() for s in samples])
    await store.flush()


async def assert_batches_are_own_summaries(store: TimeSeriesStore, ranges: list[tuple[datetime, datetime]]) -> None:
    for start, end in ranges:
        batch = await summarize_many(store, OWNER, list(KINDS.items()), start, end, now=NOW)
        for monitor_id, kind in KINDS.items():
            key = SeriesKey(OWNER, monitor_id)
            if kind == "website":
                alone: object = await summarize_website(store, key, start, end, now=NOW)
            elif kind == "crypto_price":
                alone = await summarize_crypto_price(store, key, start, end, now=NOW)
            else:
                alone = await summarize_availability(store, key, start, end, now=NOW)
            assert batch[monitor_id] == alone, (monitor_id, start, end)


async def test_batch_summaries_are_the_raw_summaries_at_any_range_edges(store: TimeSeriesStore) -> None:
    await write_histories(store)
    await assert_batches_are_own_summaries(store, RANGES)
    # The edges do reach the branches: a state carried from the head hour, outages cut by the range.
    start, end = RANGES[0]
    batch = await summarize_many(store, OWNER, [("mon_before", "website"), ("mon_ongoing", "website")], start, end)
    assert batch["mon_before"].availability.outages[0].start == start  # type: ignore[union-attr]
    assert batch["mon_ongoing"].availability.outages[-1].start == H0 + 100 * MINUTE  # type: ignore[union-attr]


async def test_a_batch_summary_reads_no_raw_sample(store: TimeSeriesStore, monkeypatch: pytest.MonkeyPatch) -> None:
    await write_histories(store)
    if isinstance(store, InfluxStore):
        statements = count_statements(store, monkeypatch)
        await summarize_many(store, OWNER, [(m, "website") for m in KINDS if KINDS[m] == "website"], *RANGES[0])
        assert statements() == 0, "no InfluxQL statement"
        return
    assert isinstance(store, SqliteSampleStore)
    connection = store._connection
    read: list[str] = []

    class Recording:
        def execute(self, sql: str, *args: object) -> object:
            read.append(sql)
            return connection.execute(sql, *args)  # type: ignore[arg-type]

        def __getattr__(self, name: str) -> object:
            return getattr(connection, name)

    monkeypatch.setattr(store._digests, "_connection", Recording())
    monkeypatch.setattr(store, "_connection", Recording())
    await summarize_many(store, OWNER, [(m, "website") for m in KINDS if KINDS[m] == "website"], *RANGES[0])
    assert read
    assert not [sql for sql in read if "FROM samples" in sql]


async def test_embedded_digests_survive_a_restart_and_are_built_for_a_file_from_before_them(tmp_path: Path) -> None:
    path = tmp_path / "ts.sqlite3"
    store = SqliteSampleStore(path)
    await write_histories(store)
    await store.close()
    reopened = SqliteSampleStore(path)
    await assert_batches_are_own_summaries(reopened, RANGES[:2])
    await reopened.close()
    with sqlite3.connect(path) as connection:  # the file as it was before digests existed
        for table in ("digest_1h", "digest_failures", "digest_meta", "digest_stale"):
            connection.execute(f"DROP TABLE {table}")
    backfilled = SqliteSampleStore(path)
    counted = backfilled._connection.execute("SELECT sum(checks) FROM digest_1h").fetchone()[0]
    assert counted == sum(len(samples) for samples in histories().values())
    await assert_batches_are_own_summaries(backfilled, RANGES)
    await backfilled.close()


async def test_a_second_process_opens_a_file_another_is_digesting_and_summarises_once_it_is_done(
    tmp_path: Path,
) -> None:
    """The embedded file is shared by the monitor and alert services: the one that does not build the digests of
    an older file (the other holds its write lock meanwhile) starts all the same, and its batch summaries wait
    for them (UNAVAILABLE until then)."""
    path = tmp_path / "ts.sqlite3"
    store = SqliteSampleStore(path)
    await write_histories(store)
    await store.close()
    with sqlite3.connect(path) as connection:
        for table in ("digest_1h", "digest_failures", "digest_meta", "digest_stale"):
            connection.execute(f"DROP TABLE {table}")
    other = sqlite3.connect(path, isolation_level=None)
    other.executescript(SCHEMA)  # the other process made the tables and is building the digests
    other.execute("BEGIN IMMEDIATE")
    try:
        second = SqliteSampleStore(path)
        with pytest.raises(Unavailable):
            await summarize_many(second, OWNER, list(KINDS.items()), *RANGES[0])
    finally:
        other.rollback()
        other.close()
    await assert_batches_are_own_summaries(second, RANGES[:1])
    await second.close()


async def test_influx_hours_written_before_the_digests_are_read_again_once(influxdb: InfluxDBServer) -> None:
    database = f"digests_{next(_databases)}"
    writer = await InfluxStore.open(influx_config(influxdb, database))
    await write_histories(writer)
    await writer.close()
    store = await InfluxStore.open(influx_config(influxdb, database))  # digests in memory: they hold nothing yet
    try:
        await assert_batches_are_own_summaries(store, RANGES)
        assert not await store._in_digests(store._digests.stale_hours)
    finally:
        await store.close()


async def test_a_state_older_than_the_digests_is_carried_into_a_range_their_first_hour_starts(
    influxdb: InfluxDBServer,
) -> None:
    """A monitor down two hours before the range, checked again only once the range has begun: the digests (read
    again from an hour before it) do not hold its state before the range, which InfluxDB still tells."""
    database = f"digests_{next(_databases)}"
    writer = await InfluxStore.open(influx_config(influxdb, database))
    late = [check("mon_late", -120, False)] + [check("mon_late", m, True) for m in range(20, 120, 5)]
    await writer.write([s for samples in histories().values() for s in samples] + late)
    await writer.flush()
    await writer.close()
    store = await InfluxStore.open(influx_config(influxdb, database))
    try:
        await summarize_many(store, OWNER, [("mon_steady", "website")], H0 - 33 * MINUTE, H0 + MINUTE, now=NOW)
        start, end = H0 + 10 * MINUTE, H0 + 103 * MINUTE
        batch = await summarize_many(store, OWNER, [("mon_late", "website")], start, end, now=NOW)
        assert batch["mon_late"] == await summarize_website(store, SeriesKey(OWNER, "mon_late"), start, end, now=NOW)
        assert batch["mon_late"].availability.outages[0].start == start
    finally:
        await store.close()


@pytest.mark.parametrize("reread_hours", [50, 1])
async def test_influx_hours_past_the_digest_retention_are_read_again_or_from_the_samples(
    influxdb: InfluxDBServer, monkeypatch: pytest.MonkeyPatch, reread_hours: int
) -> None:
    """Hours the digests no longer hold are read again into them, or, for a range too far back (more than
    REREAD_HOURS before what they hold), the summaries come from the raw samples."""
    monkeypatch.setattr(influx_store, "REREAD_HOURS", reread_hours)
    config = influx_config(influxdb, f"digests_{next(_databases)}")
    store = await InfluxStore.open(dataclasses.replace(config, digest_retention=timedelta(days=1)))
    try:
        await write_histories(store)
        await store.enforce_retention()  # the histories are two days old: their digests go
        assert not store._digest_file.execute("SELECT count(*) FROM digest_1h").fetchone()[0]
        await assert_batches_are_own_summaries(store, RANGES)
        held = store._digest_file.execute("SELECT count(*) FROM digest_1h").fetchone()[0]
        assert bool(held) == (reread_hours == 50)
    finally:
        await store.close()


async def test_digests_count_what_was_written_during_an_influxdb_outage_and_sent_after_a_restart(
    tmp_path: Path,
) -> None:
    server = InfluxDBServer(tmp_path / "influxdb")
    (tmp_path / "influxdb").mkdir()
    spool = tmp_path / "spool"
    first = await InfluxStore.open(influx_config(server, "outage", spool))  # InfluxDB is down
    await first.write([s for samples in histories().values() for s in samples])
    await first.close()  # kept in the spool, digested in the spool's digest file
    server.start()
    try:
        second = await InfluxStore.open(influx_config(server, "outage", spool))
        await second.flush(timeout_s=20)
        # The digests held the samples before InfluxDB did; each is counted once now that it does too.
        await assert_batches_are_own_summaries(second, RANGES[:1] + RANGES[-1:])
        await second.close()
    finally:
        server.stop()
    assert (spool / "digests.sqlite3").exists()
    assert timedelta(0) < NOW - H0


async def test_replicas_writing_apart_each_summarise_what_both_wrote(influxdb: InfluxDBServer, tmp_path: Path) -> None:
    """Monitor-service replicas each write their own runners' samples, with digests of their own: a replica's
    batch summary must count what the other wrote (with shared_writers it reads the raw samples)."""
    database = f"digests_{next(_databases)}"
    halves: list[dict[str, list[Sample]]] = [{}, {}]
    for i, (monitor_id, samples) in enumerate(sorted(histories().items())):
        halves[i % 2][monitor_id] = list(samples)
    stores = [
        await InfluxStore.open(
            dataclasses.replace(influx_config(influxdb, database, tmp_path / f"spool-{n}"), shared_writers=True)
        )
        for n in range(2)
    ]
    try:
        for store, half in zip(stores, halves, strict=True):
            await store.write([s for samples in half.values() for s in samples])
            await store.flush()
        for store in stores:
            await assert_batches_are_own_summaries(store, RANGES[:1])
    finally:
        for store in stores:
            await store.close()
