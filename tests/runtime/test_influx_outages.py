"""The InfluxDB store through InfluxDB's absence: started before InfluxDB, or finding its database gone, it keeps
every accepted sample and makes the database and retention policies once InfluxDB answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from harness.external import InfluxDBServer
from harness.influx import influxql, samples, stored_values
from service_runtime.timeseries import InfluxConfig, InfluxStore


def config(server: InfluxDBServer, database: str) -> InfluxConfig:
    return InfluxConfig(url=server.url, database=database, flush_interval_s=0.05, max_backoff_s=0.5, timeout_s=2)


async def test_a_store_opened_before_influxdb_keeps_every_sample_and_makes_the_database(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    server = InfluxDBServer(tmp_path)  # not started: nothing listens on its port yet
    store = await InfluxStore.open(config(server, "late"))
    try:
        await store.write(samples(now, 30))
        server.start()
        await store.write(samples(now + timedelta(seconds=30), 20))
        await store.flush(timeout_s=20)
        assert stored_values(server, "late") == [float(i) for i in range(30)] + [float(i) for i in range(20)]
        policies = {row[0]: row[1] for row in influxql(server, 'SHOW RETENTION POLICIES ON "late"')}
        assert policies["monitors_raw"] == "720h0m0s"
        assert policies["monitors_rollup"] == "9600h0m0s"
        assert (store.written, store.dropped) == (50, 0)
    finally:
        await store.close()
        server.stop()


async def test_a_database_or_retention_policy_dropped_under_a_running_store_is_made_again_and_no_sample_is_lost(
    influxdb: InfluxDBServer,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    store = await InfluxStore.open(config(influxdb, "dropped"))
    try:
        await store.write(samples(now, 5))
        await store.flush()
        influxql(influxdb, 'DROP DATABASE "dropped"', method="POST")
        await store.write(samples(now + timedelta(seconds=5), 7))  # answered 404 "database not found" at first
        await store.flush(timeout_s=20)
        assert stored_values(influxdb, "dropped") == [float(i) for i in range(7)]
        influxql(influxdb, 'DROP RETENTION POLICY "monitors_raw" ON "dropped"', method="POST")
        await store.write(samples(now + timedelta(seconds=12), 3))  # answered 400 "retention policy not found"
        await store.flush(timeout_s=20)
        assert stored_values(influxdb, "dropped") == [float(i) for i in range(3)]
        assert (store.written, store.dropped) == (15, 0)
    finally:
        await store.close()
