"""GetDeploymentStatus: a user sees where their own monitors run; the fleet is the operator's view.

A real monitor service with two runner processes in two locations, two users with monitors in one location
each, and an operator calling with the operator's token (MONITORS_OPERATOR_TOKEN).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

import grpc
import pytest
from google.protobuf import duration_pb2

from harness.http import HttpServer, Reply
from harness.rpc import auth
from harness.services import ServiceProcess, Stack, role_tokens_env
from harness.waiting import eventually
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc
from service_runtime.settings import Role

pb = monitor_service_pb2
T = TypeVar("T")
TOKENS = role_tokens_env("deployment-status")
OPERATOR_TOKEN = TOKENS["MONITORS_OPERATOR_TOKEN"]
Metadata = tuple[tuple[str, str]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Declared: the test creates monitors in both locations before their runners first connect.
    env = {"MONITORS_MIN_INTERVAL_S": "1", "MONITORS_LOCATIONS": "east,west", **TOKENS}
    with Stack(tmp_path_factory.mktemp("deployment"), env) as started:
        yield started


@pytest.fixture(scope="module")
def stub(stack: Stack) -> Iterator[monitor_service_pb2_grpc.MonitorServiceStub]:
    with grpc.insecure_channel(stack.address("monitor")) as channel:
        yield monitor_service_pb2_grpc.MonitorServiceStub(channel)


def monitor_in(url: str, location: str) -> pb.CreateMonitorRequest:
    return pb.CreateMonitorRequest(
        monitor=pb.Monitor(
            spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=url)),
            interval=duration_pb2.Duration(seconds=5),
            timeout=duration_pb2.Duration(seconds=1),
            locations=[location],
        )
    )


def runner_view(response: pb.GetDeploymentStatusResponse) -> list[tuple[str, str, int]]:
    return [(r.runner_id, r.location, r.assigned_monitors) for r in response.runners]


def test_users_see_their_own_monitors_placement_and_operators_the_fleet(
    stack: Stack, stub: monitor_service_pb2_grpc.MonitorServiceStub
) -> None:
    alice, bob, operator = (
        auth(stack.create_api_key("alice.deploy@example.com")),
        auth(stack.create_api_key("bob.deploy@example.com")),
        auth(OPERATOR_TOKEN),
    )

    def status(who: Metadata) -> pb.GetDeploymentStatusResponse:
        return stub.GetDeploymentStatus(pb.GetDeploymentStatusRequest(), metadata=who, timeout=5)

    with HttpServer() as target:
        target.routes["/"] = Reply(200, b"ok")
        # Created before any runner is connected: unassigned, each user's counted apart.
        stub.CreateMonitor(monitor_in(target.url("/"), "east"), metadata=alice, timeout=5)
        for _ in range(2):
            stub.CreateMonitor(monitor_in(target.url("/"), "west"), metadata=bob, timeout=5)
        assert (status(alice).unassigned_monitors, status(bob).unassigned_monitors) == (1, 2)
        assert status(operator).unassigned_monitors == 3

        runners: list[ServiceProcess] = []
        try:
            for runner_id, location in (("runner-east", "east"), ("runner-west", "west")):
                runners.append(stack.runner(runner_id, location, MONITORS_EGRESS="private-allowed"))
                runners[-1].start()
            fleet = [("runner-east", "east", 1), ("runner-west", "west", 2)]
            assert eventually(lambda: runner_view(status(operator)) == fleet)
            assert status(operator).unassigned_monitors == 0

            seen_by_alice, seen_by_bob = status(alice), status(bob)
            assert runner_view(seen_by_alice) == [("runner-east", "east", 1)]
            assert runner_view(seen_by_bob) == [("runner-west", "west", 2)]
            assert (seen_by_alice.unassigned_monitors, seen_by_bob.unassigned_monitors) == (0, 0)
            # Which locations exist is everyone's to know: it is what a monitor's locations may name.
            assert list(seen_by_alice.locations) == list(seen_by_bob.locations) == ["east", "west"]

            carol = auth(stack.create_api_key("carol.deploy@example.com"))
            assert runner_view(status(carol)) == []
            assert status(carol).unassigned_monitors == 0
        finally:
            for runner in runners:
                runner.stop()


def test_the_operators_token_still_cannot_call_users_methods_nor_the_runners(
    stack: Stack, stub: monitor_service_pb2_grpc.MonitorServiceStub
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListMonitors(pb.ListMonitorsRequest(), metadata=auth(OPERATOR_TOKEN), timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    watch = stub.WatchAssignments(
        pb.WatchAssignmentsRequest(runner_id="operator", location="east"), metadata=auth(OPERATOR_TOKEN), timeout=5
    )
    with pytest.raises(grpc.RpcError) as caught:
        next(watch)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("role", ["runner", "alert"])
def test_the_fleet_view_is_the_operators_alone(
    stack: Stack, stub: monitor_service_pb2_grpc.MonitorServiceStub, role: Role
) -> None:
    """A runner (it runs users' checks) or the alert service sees no runner names nor the size of the fleet."""
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetDeploymentStatus(pb.GetDeploymentStatusRequest(), metadata=auth(stack.role_token(role)), timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
