"""The InfluxDB store's spool on disk: what one store accepted and InfluxDB never took is written by the next
store opened on the same directory, a torn last line is skipped, the buffer's bound holds for what is read
back, and one process at a time holds the directory. (A monitor service killed during an outage:
test_lossless_restarts.py.)"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from harness.external import InfluxDBServer
from harness.influx import samples, stored_values
from service_runtime.timeseries import InfluxConfig, InfluxStore
from service_runtime.timeseries.spool import SpoolInUse


def spooled(server: InfluxDBServer, database: str, spool: Path, buffer_limit: int = 100_000) -> InfluxConfig:
    return InfluxConfig(
        url=server.url,
        database=database,
        flush_interval_s=0.05,
        max_backoff_s=0.5,
        timeout_s=2,
        spool_dir=spool,
        buffer_limit=buffer_limit,
    )


async def test_samples_a_closed_store_could_not_send_are_sent_by_the_next_one(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    server = InfluxDBServer(tmp_path / "influxdb")
    (tmp_path / "influxdb").mkdir()
    first = await InfluxStore.open(spooled(server, "handover", tmp_path / "spool"))
    await first.write(samples(now, 12))
    await first.close()  # InfluxDB down: kept, not dropped
    assert (first.written, first.dropped) == (0, 0)
    server.start()
    try:
        second = await InfluxStore.open(spooled(server, "handover", tmp_path / "spool"))
        await second.flush(timeout_s=20)
        assert stored_values(server, "handover") == [float(i) for i in range(12)]
        assert not list((tmp_path / "spool").glob("*.lp"))
        await second.close()
    finally:
        server.stop()


async def test_a_torn_last_line_is_skipped_and_the_bound_holds_for_what_is_read_back(
    tmp_path: Path, influxdb: InfluxDBServer, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    spool = tmp_path / "spool"
    spool.mkdir()
    lines = [InfluxStore.line(sample) for sample in samples(now, 8)]
    (spool / "000000000000.lp").write_text("\n".join(lines[:5]) + "\n")
    (spool / "000000000001.lp").write_text("\n".join(lines[5:]) + "\n" + lines[0][:20])  # crashed mid-append
    store = await InfluxStore.open(spooled(influxdb, "torn", spool, buffer_limit=6))
    await store.flush(timeout_s=20)
    assert stored_values(influxdb, "torn") == [float(i) for i in range(2, 8)]
    assert (store.written, store.dropped) == (6, 2)
    assert "buffer full" in caplog.text
    await store.close()


async def test_one_process_at_a_time_holds_a_spool(tmp_path: Path, influxdb: InfluxDBServer) -> None:
    store = await InfluxStore.open(spooled(influxdb, "held", tmp_path / "spool"))
    with pytest.raises(SpoolInUse, match="in use by another process"):
        await InfluxStore.open(spooled(influxdb, "held", tmp_path / "spool"))
    await store.close()
    again = await InfluxStore.open(spooled(influxdb, "held", tmp_path / "spool"))
    await again.close()


async def test_while_influxdb_keeps_up_the_spool_is_emptied_not_grown(tmp_path: Path, influxdb: InfluxDBServer) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    store = await InfluxStore.open(spooled(influxdb, "steady", tmp_path / "spool"))
    for second in range(20):
        await store.write(samples(now.replace(second=second), 1))
        await store.flush()
    segments = list((tmp_path / "spool").glob("*.lp"))
    assert len(segments) == 1
    assert segments[0].stat().st_size == 0
    await store.close()
    assert stored_values(influxdb, "steady") == [0.0] * 20
