"""Reported results are neither lost nor counted twice: a runner reporting before its assignment stream is back
(after a restart or reconnect), a report resent after its answer was missed, a monitor deleted while its results
are recorded, two locations reporting at once, and numbers JSON cannot hold (NaN, infinities)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from harness.checks import providers
from harness.http import HttpServer, Reply
from harness.monitor_service import MonitorDomain, open_monitor_domain, serve_monitors
from harness.monitor_service import result as served_result
from harness.services import free_port
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc
from service_runtime.settings import Settings
from service_runtime.timeseries import Sample, SeriesKey, SqliteSampleStore
from service_runtime.timeseries.port import roll_up_pending
from service_runtime.timeseries.queries import query_samples
from services.monitor_svc.accounts.admin import create_api_key
from services.monitor_svc.checks import CheckConfig, Checker
from services.monitor_svc.domain import CheckResult, CryptoPriceSpec, Monitor, MonitorDraft, MonitorState, WebsiteSpec
from services.monitor_svc.runner.client import CHANNEL_OPTIONS, RunnerClient
from services.monitor_svc.runner.scheduler import Scheduler
from services.monitor_svc.server import build_server

pb = monitor_service_pb2


class GatedSampleStore(SqliteSampleStore):
    """The real SQLite store, whose next write, once done, waits for ``gate`` (a write outliving its caller)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate: asyncio.Event | None = None
        self.written = asyncio.Event()

    async def write(self, samples: Sequence[Sample]) -> None:
        await super().write(samples)
        self.written.set()
        if self.gate is not None:
            await self.gate.wait()

    def count(self, monitor_id: str) -> int:
        row = self._connection.execute("SELECT count(*) FROM samples WHERE monitor_id = ?", (monitor_id,)).fetchone()
        return int(row[0])


class Domain(MonitorDomain):
    timeseries: GatedSampleStore

    async def monitor(self, **draft: object) -> Monitor:
        spec = draft.pop("spec", WebsiteSpec("https://example.com/"))
        return await self.monitors.create(self.caller, MonitorDraft(spec=spec, **draft))  # type: ignore[arg-type]


@pytest.fixture
async def domain(database_url: str, tmp_path: Path) -> AsyncIterator[Domain]:
    gated = GatedSampleStore(tmp_path / "ts.sqlite3")
    # Declared: results arrive from locations whose runners are fakes that never connect.
    declared = {"MONITORS_LOCATIONS": "eu,us"}
    async with open_monitor_domain(database_url, tmp_path, gated, declared, "results@example.com") as opened:
        yield Domain(opened.database, opened.monitors, gated, opened.caller)


def failure(monitor: Monitor, time: datetime, location: str = "eu") -> CheckResult:
    return CheckResult(monitor.id, time, False, timedelta(seconds=0.1), error_class="status", location=location)


async def test_a_resent_batch_is_stored_once(domain: Domain) -> None:
    monitor = await domain.monitor(retries=1)  # DOWN only after two failures in a row
    first = datetime.now(UTC)
    batch = [(monitor, failure(monitor, first))]
    await domain.monitors.record_many(batch)
    again = await domain.monitors.record_many(batch)  # the runner missed the answer and sent it again
    assert (again[0].consecutive_failures, again[0].state) == (1, MonitorState.PENDING)
    status = await domain.store.status(monitor)
    assert (status.consecutive_failures, status.state) == (1, MonitorState.PENDING)
    assert domain.timeseries.count(monitor.id) == 1
    # Resent along with a newer result: only the newer one counts.
    await domain.monitors.record_many([*batch, (monitor, failure(monitor, first + timedelta(seconds=60)))])
    status = await domain.store.status(monitor)
    assert (status.consecutive_failures, status.state) == (2, MonitorState.DOWN)
    assert domain.timeseries.count(monitor.id) == 2


async def test_a_batch_resent_while_the_first_is_still_recorded_is_stored_once(domain: Domain) -> None:
    """The report's deadline passes while the server is writing it (the call is cancelled), and the runner sends
    the batch again at once: the first recording completes and the resend finds it."""
    monitor = await domain.monitor(retries=1)
    batch = [(monitor, failure(monitor, datetime.now(UTC)))]
    domain.timeseries.gate = asyncio.Event()
    first = asyncio.create_task(domain.monitors.record_many(batch))
    await domain.timeseries.written.wait()
    first.cancel()  # the caller gave up after the samples were written, before the status was
    resend = asyncio.create_task(domain.monitors.record_many(batch))
    await asyncio.sleep(0.05)
    domain.timeseries.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await first
    await resend
    status = await domain.store.status(monitor)
    assert (status.consecutive_failures, status.state) == (1, MonitorState.PENDING)
    assert domain.timeseries.count(monitor.id) == 1


async def test_two_locations_reporting_at_once_both_count(domain: Domain) -> None:
    monitor = await domain.monitor(locations=("eu", "us"))
    for round_ in range(1, 11):
        now = datetime.now(UTC)
        await asyncio.gather(
            *(domain.monitors.record_many([(monitor, failure(monitor, now, loc))]) for loc in ("eu", "us"))
        )
        status = await domain.store.status(monitor)
        assert {loc: e.failures for loc, e in status.location_results.items()} == {"eu": round_, "us": round_}
    assert status.state == MonitorState.DOWN


async def test_results_of_a_deleted_monitor_do_not_fail_the_batch(domain: Domain) -> None:
    keeper = await domain.monitor()
    gone = await domain.monitor(spec=WebsiteSpec("https://example.com/gone"))
    await domain.monitors.delete(domain.caller, gone.id)  # deleted after the servicer looked its owner up
    now = datetime.now(UTC)
    await domain.monitors.record_many([(keeper, failure(keeper, now)), (gone, failure(gone, now))])
    assert (await domain.store.status(keeper)).consecutive_failures == 1
    # And racing: each batch is recorded, or its monitor is deleted first, never an error.
    for i in range(10):
        doomed = await domain.monitor(spec=WebsiteSpec(f"https://example.com/{i}"))
        now = datetime.now(UTC) + timedelta(seconds=i + 1)
        batch = [(keeper, failure(keeper, now)), (doomed, failure(doomed, now))]
        await asyncio.gather(domain.monitors.record_many(batch), domain.monitors.delete(domain.caller, doomed.id))
    assert (await domain.store.status(keeper)).consecutive_failures == 11


async def test_numbers_json_cannot_hold_are_dropped_and_the_store_keeps_working(domain: Domain) -> None:
    monitor = await domain.monitor()
    other = await domain.monitor(spec=WebsiteSpec("https://example.com/other"))
    hours_ago = datetime.now(UTC) - timedelta(hours=2)
    for value in (math.nan, math.inf, -math.inf):
        result = CheckResult(monitor.id, hours_ago, True, timedelta(0), fields={"price": value, "latency_ms": 5.0})
        hours_ago += timedelta(seconds=1)
        status = await domain.monitors.record(monitor, result)
        assert dict(status.last_result.fields) == {"latency_ms": 5.0}  # type: ignore[union-attr]
    await domain.monitors.record(other, CheckResult(other.id, hours_ago, True, timedelta(0)))
    stored = await domain.store.status(monitor)
    assert dict(stored.last_result.fields) == {"latency_ms": 5.0}  # type: ignore[union-attr]
    now = datetime.now(UTC)
    key = SeriesKey(monitor.owner_id, monitor.id)
    latency = await query_samples(domain.timeseries, key, "latency_ms", now - timedelta(days=1), now)
    assert [p.value for p in latency.points] == [5.0, 5.0, 5.0]
    assert (await query_samples(domain.timeseries, key, "price", now - timedelta(days=1), now)).points == []
    assert await roll_up_pending(domain.timeseries, timedelta(days=30)) > 0  # every user's rollups still run


async def test_the_sqlite_store_drops_numbers_json_cannot_hold(tmp_path: Path) -> None:
    store = SqliteSampleStore(tmp_path / "ts.sqlite3")
    now = datetime.now(UTC)
    await store.write([Sample("u", "m", now - timedelta(minutes=1), {"price": math.nan, "is_up": 1.0})])
    result = await query_samples(store, SeriesKey("u", "m"), "is_up", now - timedelta(hours=1), now)
    assert [p.value for p in result.points] == [1.0]
    await store.close()


@pytest.mark.parametrize("price", ["NaN", "Infinity", "-Infinity"])
async def test_a_price_that_is_not_a_number_fails_the_check(price: str) -> None:
    with HttpServer() as server:
        server.routes["/v2/prices/BTC-USD/spot"] = Reply.json({"data": {"amount": price}})
        server.routes["/api/v3/ticker/price"] = Reply.json({"symbol": "BTCUSDT", "price": "70100.1"})
        checker = Checker(CheckConfig(providers=providers(server)))
        alone = await checker.run(CryptoPriceSpec("BTC-USD", ("coinbase",)), 5)
        assert (alone.is_up, alone.error_class) == (False, "provider")
        assert "is not a positive number" in alone.message
        fallback = await checker.run(CryptoPriceSpec("BTC-USD", ("coinbase", "binance")), 5)
        assert (fallback.is_up, fallback.fields["price"], fallback.tags["provider"]) == (True, 70100.1, "binance")
        await checker.close()


async def test_results_reported_before_the_runner_watches_again_are_kept_and_stored(tmp_path: Path) -> None:
    """After a restart or reconnect, a runner's report can reach the service before its assignment stream does.
    The service then does not know the runner yet: the results must wait on the runner, not be dropped."""
    values = {"MONITORS_DATA_DIR": str(tmp_path), "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}"}
    settings = Settings.from_env("monitor", values, listen="127.0.0.1:0")
    key = await create_api_key(settings, "held.results@example.com", "k")
    host = await build_server(settings)
    port = await host.start()
    checker = Checker()
    scheduler = Scheduler(checker)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
    synced = asyncio.Event()

    async def on_synced() -> None:
        synced.set()

    client = RunnerClient(
        channel, settings.role_token("runner"), "r1", "local", scheduler, flush_interval_s=0.1, on_synced=on_synced
    )
    tasks = [asyncio.create_task(client.report_forever())]
    try:
        stub = monitor_service_pb2_grpc.MonitorServiceStub(channel)
        md = (("authorization", f"Bearer {key}"),)
        spec = common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url="https://example.com/"))
        request = pb.CreateMonitorRequest(monitor=pb.Monitor(spec=spec, interval=duration_pb2.Duration(seconds=60)))
        monitor = (await stub.CreateMonitor(request, metadata=md, timeout=5)).monitor
        start = datetime.now(UTC) - timedelta(seconds=10)
        held = [CheckResult(monitor.id, start + timedelta(seconds=i), True, timedelta(seconds=0.01)) for i in range(5)]
        for result in held:
            scheduler.results.put_nowait(result)
        await asyncio.sleep(1.0)  # the report loop has tried, and the runner is not registered
        assert (client.reported, client.rejected) == (0, 0)
        tasks.append(asyncio.create_task(client.watch_forever()))
        await asyncio.wait_for(synced.wait(), 10)
        for _ in range(150):  # the report loop's backoff is at most 10 s
            if client.reported >= len(held):
                break
            await asyncio.sleep(0.1)
        assert (client.reported, client.rejected, client.dropped) == (5, 0, 0)
        status = (await stub.GetMonitorStatus(pb.GetMonitorStatusRequest(id=monitor.id), metadata=md, timeout=5)).status
        assert status.last_check_time.ToDatetime(UTC) == held[-1].time
        samples = await stub.QuerySamples(
            pb.QuerySamplesRequest(monitor_id=monitor.id, field="is_up"), metadata=md, timeout=5
        )
        assert len(samples.points) == len(held)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
        await checker.close()
        await host.stop()


async def test_a_result_with_an_invalid_duration_is_rejected_alone(database_url: str, tmp_path: Path) -> None:
    """A result whose duration is not a valid Duration (or one no timedelta holds) is refused by itself: the rest
    of its batch is recorded and the call succeeds. Failing the call (INTERNAL) made the runner keep the batch and
    resend it, failing forever."""
    async with serve_monitors(database_url, tmp_path) as served:
        spec = common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url="https://example.com/"))
        request = pb.CreateMonitorRequest(monitor=pb.Monitor(spec=spec, interval=duration_pb2.Duration(seconds=60)))
        monitor = (await served.stub.CreateMonitor(request, metadata=served.alice, timeout=5)).monitor
        assert monitor.id in await served.connect_runner("r1")
        now = datetime.now(UTC)
        good = served_result(monitor.id, now - timedelta(seconds=1), True)
        too_long = served_result(monitor.id, now, True)
        too_long.duration.seconds = 2**62
        mixed_signs = served_result(monitor.id, now, True)  # not a Duration: nanos and seconds of opposite signs
        mixed_signs.duration.seconds, mixed_signs.duration.nanos = 1, -1
        reply = await served.stub.ReportResults(
            iter([pb.ReportResultsRequest(runner_id="r1", results=[good, too_long, mixed_signs])]),
            metadata=served.runner,
            timeout=10,
        )
        assert (reply.accepted, reply.rejected) == (1, 2)
        status = await served.stub.GetMonitorStatus(
            pb.GetMonitorStatusRequest(id=monitor.id), metadata=served.alice, timeout=5
        )
        assert status.status.last_check_time.ToDatetime(UTC) == good.check_time.ToDatetime(UTC)
