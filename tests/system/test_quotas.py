"""Per-user quotas: past the limit a create is RESOURCE_EXHAUSTED naming the limit, and other users are
unaffected; deleting makes room again."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2

from harness.rpc import auth, rich_details
from harness.services import Stack
from monitors.v1 import (
    common_pb2,
    monitor_service_pb2,
    monitor_service_pb2_grpc,
    notification_service_pb2,
    notification_service_pb2_grpc,
)

pb = monitor_service_pb2


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"MONITORS_MAX_MONITORS_PER_USER": "2", "MONITORS_MAX_CHANNELS_PER_USER": "1"}
    with Stack(tmp_path_factory.mktemp("quotas"), env) as started:
        yield started


def website(n: int) -> pb.CreateMonitorRequest:
    spec = common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=f"https://example.com/{n}"))
    return pb.CreateMonitorRequest(monitor=pb.Monitor(spec=spec))


def test_the_monitor_quota_is_per_user_and_names_the_limit(stack: Stack) -> None:
    alice, bob = (
        auth(stack.create_api_key("alice.quota@example.com")),
        auth(stack.create_api_key("bob.quota@example.com")),
    )
    with grpc.insecure_channel(stack.address("monitor")) as channel:
        stub = monitor_service_pb2_grpc.MonitorServiceStub(channel)
        first = stub.CreateMonitor(website(1), metadata=alice, timeout=5).monitor
        stub.CreateMonitor(website(2), metadata=alice, timeout=5)
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateMonitor(website(3), metadata=alice, timeout=5)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = next(d for d in rich_details(caught.value) if isinstance(d, error_details_pb2.ErrorInfo))
        assert info.metadata["limit"] == "monitors_per_user"
        assert len(stub.ListMonitors(pb.ListMonitorsRequest(), metadata=alice, timeout=5).monitors) == 2
        stub.CreateMonitor(website(1), metadata=bob, timeout=5)  # Bob has his own quota
        stub.DeleteMonitor(pb.DeleteMonitorRequest(id=first.id), metadata=alice, timeout=5)
        stub.CreateMonitor(website(3), metadata=alice, timeout=5)


def test_the_channel_quota_names_the_limit(stack: Stack) -> None:
    carol = auth(stack.create_api_key("carol.quota@example.com"))
    npb = notification_service_pb2
    hook = npb.CreateChannelRequest(channel=npb.Channel(webhook=npb.WebhookConfig(url="https://example.com/hook")))
    with grpc.insecure_channel(stack.address("notify")) as channel:
        stub = notification_service_pb2_grpc.NotificationServiceStub(channel)
        stub.CreateChannel(hook, metadata=carol, timeout=5)
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateChannel(hook, metadata=carol, timeout=5)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = next(d for d in rich_details(caught.value) if isinstance(d, error_details_pb2.ErrorInfo))
        assert info.metadata["limit"] == "channels_per_user"


def test_an_interval_below_the_deployments_minimum_is_invalid_argument_naming_the_field(stack: Stack) -> None:
    """A bad value for the field like any other (it had been RESOURCE_EXHAUSTED, which clients retry)."""
    dave = auth(stack.create_api_key("dave.quota@example.com"))
    request = website(1)
    request.monitor.interval.seconds = 5  # MONITORS_MIN_INTERVAL_S defaults to 10
    with grpc.insecure_channel(stack.address("monitor")) as channel:
        stub = monitor_service_pb2_grpc.MonitorServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateMonitor(request, metadata=dave, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad = next(d for d in rich_details(caught.value) if isinstance(d, error_details_pb2.BadRequest))
        assert [v.field for v in bad.field_violations] == ["monitor.interval"]
        request.monitor.interval.seconds = 10
        stub.CreateMonitor(request, metadata=dave, timeout=5)
