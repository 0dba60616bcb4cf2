"""The InfluxDB store through InfluxDB's absence: started before InfluxDB, or finding its database gone, it keeps
every accepted sample and makes the database and retention policies once InfluxDB answers."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from service_runtime.timeseries import InfluxConfig, InfluxStore, Sample
from tests.harness.external import InfluxDBServer


def samples(start: datetime, count: int, monitor_id: str = "mon_1") -> list[Sample]:
    return [
        Sample("usr_a", monitor_id, start + timedelta(seconds=i), {"is_up": 1.0, "n": float(i)}) for i in range(count)
    ]


def influxql(server: InfluxDBServer, q: str, method: str = "GET") -> list[list[object]]:
    data = urllib.parse.urlencode({"q": q}).encode()
    request = (
        urllib.request.Request(f"{server.url}/query", data=data, method="POST")
        if method == "POST"
        else urllib.request.Request(f"{server.url}/query?{data.decode()}")
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        result = json.loads(reply.read())["results"][0]
    return [row for series in result.get("series", []) for row in series["values"]]


def stored_values(server: InfluxDBServer, database: str, monitor_id: str = "mon_1") -> list[float]:
    rows = influxql(server, f'SELECT n FROM "{database}"."monitors_raw"."check" WHERE monitor = \'{monitor_id}\'')
    return [float(str(row[1])) for row in rows]


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
