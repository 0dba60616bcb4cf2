"""What the InfluxDB store logs: its requests at DEBUG (none of httpx's per-request INFO lines), one warning when
an outage starts and one when it ends however often it retries, one error when the buffer fills however much it
drops, and periodically the samples written and dropped. A rollup failing for an outage is one line, without
a traceback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness.external import InfluxDBServer
from harness.influx import samples
from service_runtime.server import every
from service_runtime.timeseries import InfluxConfig, InfluxStore
from service_runtime.timeseries.port import roll_up_pending

STORE_LOGGER = "service_runtime.timeseries.influx_store"


async def until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def records(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == STORE_LOGGER and r.getMessage() == message]


def config(server: InfluxDBServer, database: str, **overrides: float) -> InfluxConfig:
    return InfluxConfig(
        url=server.url,
        database=database,
        flush_interval_s=0.05,
        max_backoff_s=0.2,
        timeout_s=2,
        report_interval_s=overrides.pop("report_interval_s", 0.3),
        buffer_limit=int(overrides.pop("buffer_limit", 100_000)),
    )


async def test_an_outage_is_one_warning_at_its_start_and_one_at_its_end_and_requests_log_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    now = datetime.now(UTC).replace(microsecond=0)
    server = InfluxDBServer(tmp_path)
    store = await InfluxStore.open(config(server, "quiet"))
    try:
        await store.write(samples(now, 10))
        await until(lambda: len(records(caplog, "InfluxDB still unavailable")) >= 3)  # retried, quietly
        server.start()
        await store.flush(timeout_s=20)
        for second in range(3):
            await store.write(samples(now + timedelta(seconds=10 + second), 1))
            await store.flush()
        await until(lambda: sum(r.__dict__.get("written", 0) for r in records(caplog, COUNTS)) == 13)
    finally:
        await store.close()
        server.stop()
    loud = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [
        ("WARNING", "InfluxDB unavailable: samples are buffered until it answers"),
        ("WARNING", "InfluxDB available again"),
    ]
    assert [r for r in caplog.records if r.name.startswith("httpx") and r.levelno >= logging.INFO] == []
    writes = records(caplog, "influx write")
    assert len(writes) >= 4
    assert all(r.levelno == logging.DEBUG for r in writes)
    counts = records(caplog, COUNTS)
    assert all(r.levelno == logging.INFO and r.__dict__["dropped"] == 0 for r in counts)
    assert counts[-1].__dict__["written_total"] == 13


COUNTS = "time-series samples written and dropped"


async def test_a_full_buffer_is_one_error_and_what_it_drops_is_counted_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    server = InfluxDBServer(tmp_path)  # never started
    store = await InfluxStore.open(config(server, "full", buffer_limit=10, report_interval_s=0.2))
    try:
        for batch in range(4):
            await store.write(samples(now + timedelta(minutes=batch), 8))
        assert store.dropped == 22
        await until(lambda: sum(r.__dict__.get("dropped", 0) for r in records(caplog, COUNTS)) == 22)
    finally:
        await store.close()
    assert len(records(caplog, "time-series buffer full: oldest samples dropped")) == 1
    assert all(r.levelno == logging.WARNING for r in records(caplog, COUNTS))


async def test_a_rollup_failing_for_an_outage_is_one_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    server = InfluxDBServer(tmp_path)  # never started
    store = InfluxStore(config(server, "rollups"))
    job = asyncio.create_task(
        every(0.05, lambda: roll_up_pending(store, timedelta(days=30)), "hourly uptime rollups")()
    )
    try:
        await until(lambda: len([r for r in caplog.records if r.getMessage() == "background job failed"]) >= 2)
    finally:
        job.cancel()
        await store.close()
    failures = [r for r in caplog.records if r.getMessage() == "background job failed"]
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in failures)
    errors = [str(r.__dict__["error"]) for r in failures]
    assert all("unreachable" in error and len(error) < 200 for error in errors), errors
