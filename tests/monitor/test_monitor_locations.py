"""A monitor may name only a location some runner has served or the deployment declares: otherwise it would
stay PENDING forever with nothing to say why.

A real monitor service in the test's loop, on SQLite and on MariaDB; runners are fake WatchAssignments streams
opened with the runners' token (harness/monitor_service.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2

from harness.monitor_service import Metadata, Served, pb, serve_monitors
from harness.rpc import rich_details
from monitors.v1 import common_pb2


def located(*locations: str) -> pb.Monitor:
    return pb.Monitor(
        spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url="https://example.com/")),
        locations=list(locations),
    )


async def create(served: Served, who: Metadata, *locations: str) -> pb.Monitor:
    created: pb.CreateMonitorResponse = await served.stub.CreateMonitor(
        pb.CreateMonitorRequest(monitor=located(*locations)), metadata=who, timeout=10
    )
    return created.monitor


def violations(error: grpc.RpcError) -> dict[str, str]:
    (bad,) = [d for d in rich_details(error) if isinstance(d, error_details_pb2.BadRequest)]
    return {v.field: v.description for v in bad.field_violations}


async def refused(served: Served, *locations: str) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(served, served.alice, *locations)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return violations(caught.value)


async def test_a_location_no_runner_has_served_is_refused_naming_the_known_ones(
    database_url: str, tmp_path: Path
) -> None:
    async with serve_monitors(database_url, tmp_path) as served:
        described = await refused(served, "mars")
        assert list(described) == ["monitor.locations[0]"]
        assert "'mars'" in described["monitor.locations[0]"]
        assert "known locations: none yet" in described["monitor.locations[0]"]
        assert "MONITORS_LOCATIONS" in described["monitor.locations[0]"]

        await served.connect_runner("runner-eu", "eu")
        await served.connect_runner("runner-us", "us")
        monitor = await create(served, served.alice, "eu", "us")
        assert list(monitor.locations) == ["eu", "us"]
        # The first unknown one is named, with every known one listed.
        described = await refused(served, "eu", "mars")
        assert list(described) == ["monitor.locations[1]"]
        assert "known locations: eu, us " in described["monitor.locations[1]"]
        # No location at all means any runner: always accepted.
        await create(served, served.alice)


async def test_a_served_location_stays_known_after_its_runners_leave_and_the_service_restarts(
    database_url: str, tmp_path: Path
) -> None:
    async with serve_monitors(database_url, tmp_path) as served:
        await served.connect_runner("runner-eu", "eu")
    # The same database, a new process's worth of state and no runner connected.
    async with serve_monitors(database_url, tmp_path) as restarted:
        monitor = await create(restarted, restarted.bob, "eu")
        assert list(monitor.locations) == ["eu"]


async def test_a_declared_location_is_accepted_before_any_runner_serves_it(database_url: str, tmp_path: Path) -> None:
    async with serve_monitors(database_url, tmp_path, {"MONITORS_LOCATIONS": "ap-south, sa-east"}) as served:
        monitor = await create(served, served.alice, "sa-east", "ap-south")
        assert list(monitor.locations) == ["sa-east", "ap-south"]
        described = await refused(served, "eu")
        assert "known locations: ap-south, sa-east " in described["monitor.locations[0]"]


async def test_update_refuses_a_new_unknown_location_but_keeps_ones_accepted_before(
    database_url: str, tmp_path: Path
) -> None:
    async with serve_monitors(database_url, tmp_path, {"MONITORS_LOCATIONS": "eu"}) as served:
        monitor = await create(served, served.alice, "eu")

    async def update(locations: Sequence[str], paths: Sequence[str]) -> pb.Monitor:
        changed = pb.Monitor(id=monitor.id, display_name="renamed", locations=list(locations))
        request = pb.UpdateMonitorRequest(monitor=changed, update_mask=field_mask_pb2.FieldMask(paths=list(paths)))
        updated: pb.UpdateMonitorResponse = await served.stub.UpdateMonitor(request, metadata=served.alice, timeout=10)
        return updated.monitor

    # "eu" is no longer declared and no runner ever served it: the monitor that has it keeps working.
    async with serve_monitors(database_url, tmp_path) as served:
        assert (await update([], ["display_name"])).display_name == "renamed"
        assert list((await update(["eu"], ["locations"])).locations) == ["eu"]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await update(["eu", "mars"], ["locations"])
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert list(violations(caught.value)) == ["monitor.locations[1]"]


async def test_a_malformed_declared_location_stops_the_service_naming_the_setting(
    database_url: str, tmp_path: Path
) -> None:
    with pytest.raises(Exception, match="MONITORS_LOCATIONS names 'EU West'"):
        async with serve_monitors(database_url, tmp_path, {"MONITORS_LOCATIONS": "eu,EU West"}):
            pass
