"""MonitorFeed, the alert service's side of WatchMonitorEvents, against a real monitor service (in-process, embedded):
the sink hears the snapshot, changes and samples in order, and after the monitor service restarts it hears
feed_down and then a fresh snapshot."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import duration_pb2

from harness.external import InfluxDBServer
from harness.services import free_port
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc
from service_runtime.server import ServiceHost
from service_runtime.settings import Settings
from service_runtime.timeseries import Sample
from service_runtime.timeseries.influx_store import InfluxConfig, InfluxStore
from service_runtime.tls import open_channel
from services.alert_svc.domain import MonitorInfo, MonitorState, SampleEvent
from services.alert_svc.feed import CHANNEL_OPTIONS, FeedSink, MonitorFeed
from services.alert_svc.influx_ingest import InfluxIngest, IngestSettings, register_subscription
from services.monitor_svc.accounts.admin import create_api_key
from services.monitor_svc.server import build_server

pb = monitor_service_pb2


@dataclass
class RecordingSink:
    """A FeedSink that keeps every call, in order."""

    calls: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)

    async def feed_snapshot(self, monitors: list[MonitorInfo]) -> None:
        self.calls.put_nowait(("snapshot", monitors))

    async def feed_monitor(self, monitor: MonitorInfo) -> None:
        self.calls.put_nowait(("monitor", monitor))

    async def feed_deleted(self, monitor_id: str) -> None:
        self.calls.put_nowait(("deleted", monitor_id))

    async def feed_samples(self, samples: list[SampleEvent]) -> None:
        self.calls.put_nowait(("samples", samples))

    async def feed_down(self) -> None:
        self.calls.put_nowait(("down", None))

    async def next(self, timeout_s: float = 10.0) -> tuple[str, Any]:
        return await asyncio.wait_for(self.calls.get(), timeout_s)


@dataclass
class Monitor:
    settings: Settings
    key: str
    host: ServiceHost | None = None

    async def start(self) -> None:
        self.host = await build_server(self.settings)
        await self.host.start()

    async def stop(self) -> None:
        if self.host is not None:
            await self.host.stop()
            self.host = None


@pytest.fixture
async def monitor_service(tmp_path: Path) -> AsyncIterator[Monitor]:
    values = {
        "MONITORS_DATA_DIR": str(tmp_path),
        "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}",
        "MONITORS_MIN_INTERVAL_S": "1",
    }
    settings = Settings.from_env("monitor", values, listen=f"127.0.0.1:{free_port()}")
    service = Monitor(settings, await create_api_key(settings, "feed@example.com", "k"))
    await service.start()
    yield service
    await service.stop()


def website(name: str) -> pb.Monitor:
    return pb.Monitor(
        display_name=name,
        spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=f"https://example.com/{name}")),
        interval=duration_pb2.Duration(seconds=20),
        labels={"app": name},
    )


async def test_the_sink_hears_snapshot_changes_and_samples_then_down_and_a_new_snapshot_after_a_restart(
    monitor_service: Monitor,
) -> None:
    settings = monitor_service.settings
    user = (("authorization", f"Bearer {monitor_service.key}"),)
    runner = (("authorization", f"Bearer {settings.role_token('runner')}"),)
    channel = open_channel(settings.listen, settings, CHANNEL_OPTIONS)
    stub = monitor_service_pb2_grpc.MonitorServiceStub(channel)
    sink = RecordingSink()
    checked_sink: FeedSink = sink
    feed = MonitorFeed(channel, settings.role_token("alert"), checked_sink, include_results=True, max_backoff_s=0.5)
    # The monitor exists before the feed starts, so its first snapshot holds it (made after the feed had
    # started, it could come in the snapshot or as a change after it, as the two raced).
    first = (await stub.CreateMonitor(pb.CreateMonitorRequest(monitor=website("api")), metadata=user)).monitor
    task = asyncio.create_task(feed.run())
    assignments = None
    try:
        kind, snapshot = await sink.next()
        assert kind == "snapshot"
        [info] = snapshot
        assert (info.monitor_id, info.display_name, dict(info.labels), info.kind) == (
            first.id,
            "api",
            {"app": "api"},
            "website",
        )
        assert (info.state, info.paused, info.interval) == (MonitorState.PENDING, False, timedelta(seconds=20))
        assert info.state_change_time is not None
        assert info.state_change_time.tzinfo is not None

        second = (await stub.CreateMonitor(pb.CreateMonitorRequest(monitor=website("web")), metadata=user)).monitor
        kind, created = await sink.next()
        assert (kind, created.monitor_id, created.owner_id) == ("monitor", second.id, info.owner_id)

        assignments = stub.WatchAssignments(
            pb.WatchAssignmentsRequest(runner_id="r1", location="local"), metadata=runner
        )
        await asyncio.wait_for(assignments.read(), 10)
        at = datetime.now(UTC).replace(microsecond=250_000) - timedelta(seconds=5)
        failed = common_pb2.CheckResult(monitor_id=first.id, is_up=False, fields={"response_time_ms": 40.0})
        failed.check_time.FromDatetime(at)
        await stub.ReportResults(
            iter([pb.ReportResultsRequest(runner_id="r1", results=[failed])]), metadata=runner, timeout=10
        )
        kind, down = await sink.next()  # the state change comes before the results that caused it
        assert (kind, down.monitor_id, down.state) == ("monitor", first.id, MonitorState.DOWN)
        kind, samples = await sink.next()
        assert kind == "samples"
        assert samples == [
            SampleEvent(info.owner_id, first.id, at.timestamp(), {"response_time_ms": 40.0, "is_up": 0.0})
        ]

        await stub.DeleteMonitor(pb.DeleteMonitorRequest(id=second.id), metadata=user)
        assert await sink.next() == ("deleted", second.id)

        # The monitor service drains: the stream ends at once (not at the grace's end), the sink hears down.
        assignments.cancel()
        started = time.monotonic()
        await monitor_service.stop()
        assert time.monotonic() - started < settings.shutdown_grace_s / 2
        assert await sink.next() == ("down", None)
        await monitor_service.start()
        kind, again = await sink.next(timeout_s=15)
        assert kind == "snapshot"
        assert [(m.monitor_id, m.state) for m in again] == [(first.id, MonitorState.DOWN)]
        assert (feed.snapshots, feed.disconnects) == (2, 1)
    finally:
        if assignments is not None:
            assignments.cancel()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await channel.close()


async def test_a_wrong_token_never_reaches_the_sink(monitor_service: Monitor) -> None:
    settings = monitor_service.settings
    channel = open_channel(settings.listen, settings, CHANNEL_OPTIONS)
    sink = RecordingSink()
    feed = MonitorFeed(channel, monitor_service.key, sink, include_results=False, max_backoff_s=0.2)
    task = asyncio.create_task(feed.run())
    try:
        await asyncio.sleep(1.0)  # several refused attempts
        assert sink.calls.empty()
        assert (feed.snapshots, feed.up) == (0, False)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await channel.close()
    assert task.cancelled(), "stop is a clean cancellation"


async def test_a_cancelled_feed_ends_its_stream(monitor_service: Monitor) -> None:
    settings = monitor_service.settings
    channel = open_channel(settings.listen, settings, CHANNEL_OPTIONS)
    sink = RecordingSink()
    feed = MonitorFeed(channel, settings.role_token("alert"), sink, include_results=False)
    task = asyncio.create_task(feed.run())
    try:
        assert (await sink.next())[0] == "snapshot"
        host = monitor_service.host
        assert host is not None
        servicer = host.services[0].servicer
        assert servicer._events.subscriber_count() == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for _ in range(50):
            if servicer._events.subscriber_count() == 0:
                break
            await asyncio.sleep(0.1)
        assert servicer._events.subscriber_count() == 0
    finally:
        task.cancel()
        await channel.close()


# --- InfluxDB subscription ingest ------------------------------------------------------------------------


@dataclass
class SampleCollector:
    samples: list[SampleEvent] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def feed_samples(self, samples: list[SampleEvent]) -> None:
        self.samples.extend(samples)
        self.arrived.set()

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[SampleEvent]:
        async with asyncio.timeout(timeout_s):
            while len(self.samples) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.samples


async def test_influxdb_forwards_each_write_to_the_ingest_endpoint(influxdb: InfluxDBServer) -> None:
    config = InfluxConfig(url=influxdb.url, database="ingest", flush_interval_s=0.01)
    store = await InfluxStore.open(config)
    sink = SampleCollector()
    ingest = InfluxIngest(sink, "127.0.0.1:0", config.database)
    port = await ingest.start()
    try:
        destination = f"http://127.0.0.1:{port}"
        assert await register_subscription(config, [destination])
        assert not await register_subscription(config, [destination]), "registering again changes nothing"
        # InfluxDB starts forwarding once its subscriber service has seen the new subscription: probe until then.
        at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        async with asyncio.timeout(15):
            while not sink.samples:
                await store.write([Sample("probe", "m0", at, {"is_up": 1.0}, {}, {})])
                await store.flush()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sink.arrived.wait(), 0.5)
        sink.samples.clear()

        down = Sample(
            "u1",
            "m1",
            at + timedelta(microseconds=123_456),
            {"is_up": 0.0, "response_time_ms": 812.5, "status_code": 503.0},
            {"location": "eu west"},
            {"error_class": "status", "message": 'got 503 "Service, Unavailable" = down'},
        )
        up = Sample("u1", "m2", at + timedelta(seconds=1), {"is_up": 1.0, "price": 64_123.25}, {}, {})
        latencies: list[float] = []
        for sample in (down, up):
            started = time.perf_counter()
            await store.write([sample])
            await store.flush()
            await sink.wait_for(len(latencies) + 1)
            latencies.append(time.perf_counter() - started)
        assert sink.samples == [
            SampleEvent(
                "u1", "m1", down.time.timestamp(), {"is_up": 0.0, "response_time_ms": 812.5, "status_code": 503.0}
            ),
            SampleEvent("u1", "m2", up.time.timestamp(), {"is_up": 1.0, "price": 64_123.25}),
        ]
        assert max(latencies) < 1.0, latencies
        assert ingest.bad_lines == 0

        # A new address for the endpoint replaces the subscription.
        assert await register_subscription(config, ["http://127.0.0.1:1"])
    finally:
        await ingest.stop()
        await store.close()


async def post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        return await http.post(path, content=body, headers=headers or {})


async def test_the_ingest_endpoint_skips_and_counts_bad_lines_and_bounds_bodies() -> None:
    sink = SampleCollector()
    ingest = InfluxIngest(sink, "127.0.0.1:0", "monitors", max_body_bytes=4096)
    port = await ingest.start()
    try:
        body = "\n".join(
            [
                "check,owner=u1,monitor=m1 is_up=1,response_time_ms=12.5 1000000000000000000",
                "check,owner=u1,monitor=m1 is_up=",  # no value
                "check,monitor=m1 is_up=1 1000000000000000000",  # no owner
                "check,owner=u1,monitor=m1 is_up=abc 1000000000000000000",
                'check,owner=u1,monitor=m1 message="unterminated 1000000000000000000',
                "check,owner=u1,monitor=m1 is_up=1 notatime",
                "uptime_1h,owner=u1,monitor=m1 checks=60i 1000000000000000000",  # a rollup: not a sample
                r'check,owner=u\,1,monitor=m\ 2,location=a\=b is_up=0,status_code=500i,note="a, b=\"d\"" 2000000000',
                "\x00\xff garbage",
                "",
            ]
        ).encode()
        reply = await post(port, "/write?db=monitors&rp=monitors_raw&precision=ns", body)
        assert reply.status_code == 204
        assert sink.samples == [
            SampleEvent("u1", "m1", 1e9, {"is_up": 1.0, "response_time_ms": 12.5}),
            SampleEvent("u,1", "m 2", 2.0, {"is_up": 0.0, "status_code": 500.0}),
        ]
        assert ingest.bad_lines == 6

        zipped = gzip.compress(b"check,owner=u2,monitor=m3 is_up=1 1700000000000")
        reply = await post(port, "/write?db=monitors&precision=ms", zipped, {"Content-Encoding": "gzip"})
        assert reply.status_code == 204
        assert sink.samples[-1] == SampleEvent("u2", "m3", 1_700_000_000.0, {"is_up": 1.0})

        other_db = await post(port, "/write?db=elsewhere", b"check,owner=u9,monitor=m9 is_up=1 1")
        assert other_db.status_code == 204
        assert sink.samples[-1].owner_id == "u2", "another database's writes are not ours"

        assert (await post(port, "/write?db=monitors", b"x" * 5000)).status_code == 413
        bomb = gzip.compress(b"check,owner=u,monitor=m is_up=1 1\n" * 10_000)
        assert len(bomb) < 4096
        assert (await post(port, "/write?db=monitors", bomb, {"Content-Encoding": "gzip"})).status_code == 413
        assert (await post(port, "/write?db=monitors&precision=fortnight", b"")).status_code == 400
        assert (await post(port, "/query", b"")).status_code == 404
        assert ingest.refused == 4
        assert len(sink.samples) == 3
    finally:
        await ingest.stop()


def test_ingest_settings_come_from_the_environment() -> None:
    assert IngestSettings.from_env({}).destination == "http://127.0.0.1:50082"
    chosen = IngestSettings.from_env(
        {"MONITORS_ALERT_INGEST_LISTEN": "0.0.0.0:9000", "MONITORS_ALERT_INGEST_URL": "http://alert-0.alert:9000/"}
    )
    assert (chosen.listen, chosen.destination) == ("0.0.0.0:9000", "http://alert-0.alert:9000")
    with pytest.raises(ValueError, match="MONITORS_ALERT_INGEST_URL"):
        IngestSettings.from_env({"MONITORS_ALERT_INGEST_URL": "ftp://x"})
