"""How soon a runner reports: results are batched for up to the flush interval, except one that turns its
monitor up or down, which is what an alert waits for and goes at once (with whatever is held)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from google.protobuf import duration_pb2

from harness.services import free_port
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc
from service_runtime.settings import Settings
from services.monitor_svc.accounts.admin import create_api_key
from services.monitor_svc.checks import Checker
from services.monitor_svc.domain import CheckResult
from services.monitor_svc.runner.client import CHANNEL_OPTIONS, RunnerClient
from services.monitor_svc.runner.scheduler import Scheduler
from services.monitor_svc.server import build_server

pb = monitor_service_pb2


async def reported_within(client: RunnerClient, count: int, seconds: float) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while client.reported < count:
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_a_result_that_turns_a_monitor_down_or_up_is_reported_at_once(tmp_path: Path) -> None:
    values = {"MONITORS_DATA_DIR": str(tmp_path), "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}"}
    settings = Settings.from_env("monitor", values, listen="127.0.0.1:0")
    key = await create_api_key(settings, "urgent.results@example.com", "k")
    host = await build_server(settings)
    port = await host.start()
    checker = Checker()
    scheduler = Scheduler(checker)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
    synced = asyncio.Event()

    async def on_synced() -> None:
        synced.set()

    # A long flush interval, so that anything reported quickly was sent because it was urgent.
    client = RunnerClient(
        channel, settings.role_token("runner"), "r1", "local", scheduler, flush_interval_s=30, on_synced=on_synced
    )
    tasks = [asyncio.create_task(client.watch_forever())]
    try:
        await asyncio.wait_for(synced.wait(), 10)
        tasks.append(asyncio.create_task(client.report_forever()))
        stub = monitor_service_pb2_grpc.MonitorServiceStub(channel)
        md = (("authorization", f"Bearer {key}"),)
        spec = common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url="https://example.com/"))
        request = pb.CreateMonitorRequest(monitor=pb.Monitor(spec=spec, interval=duration_pb2.Duration(seconds=60)))
        monitor = (await stub.CreateMonitor(request, metadata=md, timeout=5)).monitor
        start = datetime.now(UTC) - timedelta(seconds=10)

        def result(second: int, up: bool) -> CheckResult:
            return CheckResult(monitor.id, start + timedelta(seconds=second), up, timedelta(milliseconds=5))

        scheduler.results.put_nowait(result(0, True))
        scheduler.results.put_nowait(result(1, True))
        assert not await reported_within(client, 1, 0.5)  # up and staying up: held for the batch
        scheduler.results.put_nowait(result(2, False))
        assert await reported_within(client, 3, 2)  # the turn to down goes at once, with what was held
        scheduler.results.put_nowait(result(3, False))
        assert not await reported_within(client, 4, 0.5)  # still down: held again
        scheduler.results.put_nowait(result(4, True))
        assert await reported_within(client, 5, 2)  # back up: at once
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
        await checker.close()
        await host.stop()
