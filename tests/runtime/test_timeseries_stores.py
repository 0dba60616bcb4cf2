"""What each time-series store does beyond the shared contract: InfluxDB buffering through an outage,
overflow accounting, its retention policy; SQLite retention and reopening; URL parsing."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness.clock import midnight_days_ago
from harness.external import InfluxDBServer
from service_runtime.errors import Unavailable
from service_runtime.timeseries import (
    Aggregation,
    InfluxConfig,
    InfluxStore,
    Sample,
    SeriesKey,
    SqliteSampleStore,
    open_timeseries_store,
)
from service_runtime.timeseries.port import stats

KEY = SeriesKey("usr_a", "mon_1")


def samples(start: datetime, count: int) -> list[Sample]:
    return [Sample("usr_a", "mon_1", start + timedelta(seconds=i), {"is_up": 1.0, "n": float(i)}) for i in range(count)]


def influxql(server: InfluxDBServer, q: str) -> list[list[object]]:
    url = f"{server.url}/query?{urllib.parse.urlencode({'q': q})}"
    with urllib.request.urlopen(url, timeout=5) as reply:
        result = json.loads(reply.read())["results"][0]
    return [row for series in result.get("series", []) for row in series["values"]]


async def test_an_influxdb_outage_loses_nothing_that_fits_the_buffer(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    with InfluxDBServer(tmp_path) as server:
        store = await InfluxStore.open(
            InfluxConfig(url=server.url, database="outage", flush_interval_s=0.05, max_backoff_s=0.5, timeout_s=2)
        )
        await store.write(samples(now, 100))
        await store.flush()
        server.stop()
        await store.write(samples(now + timedelta(seconds=100), 400))  # InfluxDB is down
        with pytest.raises(Unavailable):
            await store.flush(timeout_s=1.5)
        server.start()  # same port, same data directory
        await store.flush(timeout_s=20)
        found = await stats(store, KEY, "n", now, now + timedelta(hours=1), [Aggregation.COUNT, Aggregation.MAX])
        assert found == {Aggregation.COUNT: 500.0, Aggregation.MAX: 399.0}
        assert (store.dropped, store.written) == (0, 500)
        await store.close()


async def test_a_full_buffer_drops_the_oldest_and_counts_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    with InfluxDBServer(tmp_path) as server:
        store = await InfluxStore.open(
            InfluxConfig(url=server.url, database="overflow", buffer_limit=50, flush_interval_s=0.05, max_backoff_s=0.5)
        )
        server.stop()
        await store.write(samples(now, 80))
        assert store.dropped == 30
        assert "buffer full" in caplog.text
        server.start()
        await store.flush(timeout_s=20)
        points = await store.points(KEY, "n", now, now + timedelta(hours=1), 1000)
        assert [p.value for p in points] == [float(i) for i in range(30, 80)]
        await store.close()


async def test_influxdb_database_and_raw_retention_policy_are_created(influxdb: InfluxDBServer) -> None:
    store = await InfluxStore.open(
        InfluxConfig(url=influxdb.url, database="retention", raw_retention=timedelta(days=7))
    )
    policies = influxql(influxdb, 'SHOW RETENTION POLICIES ON "retention"')
    assert ["monitors_raw", "168h0m0s", "24h0m0s", 1, True] in policies
    await store.close()
    # Opening again with another retention changes the policy instead of failing.
    store = await InfluxStore.open(InfluxConfig(url=influxdb.url, database="retention"))
    assert ["monitors_raw", "720h0m0s", "24h0m0s", 1, True] in influxql(
        influxdb, 'SHOW RETENTION POLICIES ON "retention"'
    )
    await store.close()


async def test_a_sample_influxdb_refuses_is_dropped_not_retried_forever(influxdb: InfluxDBServer) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    store = await InfluxStore.open(InfluxConfig(url=influxdb.url, database="conflict", flush_interval_s=0.05))
    await store.write([Sample("usr_a", "mon_1", now, {"n": 1.0})])
    await store.flush()
    # The same field as a string in the same shard: InfluxDB answers 400 (field type conflict).
    await store.write([Sample("usr_a", "mon_1", now + timedelta(seconds=1), {}, notes={"n": "text"})])
    await store.flush(timeout_s=5)
    assert store.dropped == 1
    await store.close()


async def test_unreachable_influxdb_reads_are_unavailable() -> None:
    store = InfluxStore(InfluxConfig(url="http://127.0.0.1:9", database="x", timeout_s=1))
    with pytest.raises(Unavailable):
        await store.points(KEY, "n", midnight_days_ago(2), midnight_days_ago(1), 10)
    await store.close()


async def test_sqlite_retention_drops_only_old_samples(tmp_path: Path) -> None:
    store = SqliteSampleStore(tmp_path / "ts.sqlite3", raw_retention=timedelta(days=30))
    now = midnight_days_ago(0)
    await store.write(samples(now - timedelta(days=31), 3) + samples(now - timedelta(days=29), 2))
    assert await store.enforce_retention(now) == 3
    remaining = await store.points(KEY, "n", now - timedelta(days=60), now, 100)
    assert [p.time for p in remaining] == [now - timedelta(days=29), now - timedelta(days=29) + timedelta(seconds=1)]
    await store.close()


async def test_sqlite_samples_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "ts.sqlite3"
    store = await open_timeseries_store(f"sqlite:///{path}")
    start = midnight_days_ago(1)
    await store.write(samples(start, 2))
    await store.close()
    reopened = SqliteSampleStore(path)
    assert [p.value for p in await reopened.points(KEY, "n", start, start + timedelta(1), 10)] == [0.0, 1.0]
    await reopened.close()


async def test_influxdb_url_names_host_database_and_credentials(influxdb: InfluxDBServer) -> None:
    host_port = influxdb.url.removeprefix("http://")
    store = await open_timeseries_store(f"influxdb://{host_port}/from_url?rp=raw_rp&token=t0k", timedelta(days=3))
    assert isinstance(store, InfluxStore)
    assert (store.config.database, store.config.retention_policy, store.config.token) == ("from_url", "raw_rp", "t0k")
    assert store.config.raw_retention == timedelta(days=3)
    await store.close()


@pytest.mark.parametrize("url", ["influxdb://host:8086", "influxdb:///db", "postgres://x/y", "sqlite://"])
async def test_unusable_time_series_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        await open_timeseries_store(url)
