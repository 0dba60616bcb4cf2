"""A real monitor service in the test's own event loop, on the database ``database_url`` names (SQLite or a fresh
MariaDB database), with two users and a fake runner that reports results with the runner's token.

Use it from an async fixture: ``async with serve_monitors(database_url, tmp_path) as served: yield served``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from harness.services import free_port, role_tokens_env
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc
from service_runtime.auth import Principal
from service_runtime.database import Database, open_database
from service_runtime.secretbox import new_master_key
from service_runtime.server import ServiceHost
from service_runtime.settings import Settings
from service_runtime.timeseries import SqliteSampleStore, TimeSeriesStore
from services.monitor_svc.accounts.admin import create_api_key
from services.monitor_svc.accounts.store import AccountStore
from services.monitor_svc.checks import Checker
from services.monitor_svc.monitors import Monitors
from services.monitor_svc.schema import MIGRATIONS, VERSION_TABLE
from services.monitor_svc.server import build_server, monitor_domain
from services.monitor_svc.store import MonitorStore

pb = monitor_service_pb2
if TYPE_CHECKING:  # the asyncio stub exists in the typed stubs only; at run time the stub is the same class
    Stub = monitor_service_pb2_grpc.MonitorServiceAsyncStub
Metadata = tuple[tuple[str, str], ...]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Served:
    host: ServiceHost
    settings: Settings
    channel: grpc.aio.Channel
    stub: Stub
    runner: Metadata  # the runners' role token
    alert_service: Metadata  # the alert service's role token (WatchMonitorEvents)
    operator: Metadata  # the operator's token (GetDeploymentStatus's fleet view)
    alice: Metadata
    bob: Metadata
    runners: list[grpc.aio.UnaryStreamCall[pb.WatchAssignmentsRequest, pb.WatchAssignmentsResponse]] = field(
        default_factory=list
    )
    port: int = 0  # where it listens (on 127.0.0.1), for processes such as a real runner

    async def connect_runner(self, runner_id: str = "r1", location: str = "eu", dedicated_to: str = "") -> set[str]:
        """Register a fake runner (its assignment stream stays open); the ids of the monitors it was given."""
        return {a.monitor.id for a in await self.connect_runner_for_assignments(runner_id, location, dedicated_to)}

    async def connect_runner_for_assignments(
        self, runner_id: str = "r1", location: str = "eu", dedicated_to: str = ""
    ) -> list[pb.Assignment]:
        """Register a fake runner (dedicated to one monitor with ``dedicated_to``); its first full set."""
        request = pb.WatchAssignmentsRequest(runner_id=runner_id, location=location, dedicated_monitor_id=dedicated_to)
        call = self.stub.WatchAssignments(request, metadata=self.runner)
        self.runners.append(call)
        assigned: list[pb.Assignment] = []
        while True:
            page = await asyncio.wait_for(call.read(), 10)
            assert isinstance(page, pb.WatchAssignmentsResponse)
            assigned.extend(page.upserts)
            if not page.full_sync_continues:
                return assigned

    async def report(self, runner_id: str, *results: common_pb2.CheckResult) -> pb.ReportResultsResponse:
        reply: pb.ReportResultsResponse = await self.stub.ReportResults(
            iter([pb.ReportResultsRequest(runner_id=runner_id, results=results)]), metadata=self.runner, timeout=10
        )
        assert reply.accepted == len(results), reply
        return reply


def result(monitor_id: str, at: datetime, is_up: bool, response_ms: float = 20.0) -> common_pb2.CheckResult:
    message = common_pb2.CheckResult(
        monitor_id=monitor_id,
        is_up=is_up,
        fields={"response_time_ms": response_ms, "status_code": 200.0 if is_up else 500.0},
        error_class=common_pb2.ERROR_CLASS_UNSPECIFIED if is_up else common_pb2.ERROR_CLASS_STATUS,
        message="" if is_up else "HTTP 500",
    )
    message.check_time.FromDatetime(at)
    return message


@asynccontextmanager
async def serve_monitors(
    database_url: str, tmp_path: Path, env: Mapping[str, str] | None = None
) -> AsyncIterator[Served]:
    """The monitor service on ``database_url`` (and an embedded time-series file unless ``env`` names one)."""
    values = {
        "MONITORS_DATA_DIR": str(tmp_path),
        "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}",
        "MONITORS_DATABASE_URL": database_url,
        "MONITORS_MASTER_KEY": new_master_key(),
        "MONITORS_MIN_INTERVAL_S": "1",
        "MONITORS_DRAIN_DELAY_S": "0",
        **role_tokens_env("served"),
        **(env or {}),
    }
    settings = Settings.from_env("monitor", values, listen="127.0.0.1:0")
    alice = await create_api_key(settings, "alice.overview@example.com", "k")
    bob = await create_api_key(settings, "bob.overview@example.com", "k")
    host = await build_server(settings)
    port = await host.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    served = Served(
        host,
        settings,
        channel,
        monitor_service_pb2_grpc.MonitorServiceStub(channel),
        bearer(settings.role_token("runner")),
        bearer(settings.role_token("alert")),
        bearer(settings.role_token("operator")),
        bearer(alice),
        bearer(bob),
        port=port,
    )
    try:
        yield served
    finally:
        for call in served.runners:
            call.cancel()
        await channel.close()
        await host.stop()


@dataclass
class MonitorDomain:
    """The monitors' domain as the monitor service wires it (``server.monitor_domain``), without gRPC, and a
    user to call it as."""

    database: Database
    monitors: Monitors
    timeseries: TimeSeriesStore
    caller: Principal

    @property
    def store(self) -> MonitorStore:
        return self.monitors.store


@asynccontextmanager
async def open_monitor_domain(
    database_url: str,
    tmp_path: Path,
    timeseries: TimeSeriesStore | None = None,
    env: Mapping[str, str] | None = None,
    email: str = "domain@example.com",
) -> AsyncIterator[MonitorDomain]:
    """The domain on ``database_url`` (migrated), an embedded time-series file unless ``timeseries`` is given,
    and a user ``email``; the settings are the defaults with ``env`` over them."""
    settings = Settings.from_env("monitor", {"MONITORS_DATA_DIR": str(tmp_path), **(env or {})})
    database = await open_database(database_url, MIGRATIONS, VERSION_TABLE)
    series = timeseries if timeseries is not None else SqliteSampleStore(tmp_path / "samples.sqlite3")
    try:
        monitors = monitor_domain(
            settings, database, series, Checker(), settings.secret_box(), settings.declared_locations
        )
        user = await AccountStore(database).ensure_user(email)
        yield MonitorDomain(database, monitors, series, Principal(user.id, user.email, "key_domain"))
    finally:
        await series.close()
        await database.close()
