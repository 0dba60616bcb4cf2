"""A new user's mistakes get answers that say what to do: a missing id, an interval under the deployment's
minimum on update, a crypto pair's spelling; and a paused monitor says since when it is paused.

A real monitor service (embedded, the default minimum interval of 10 s).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, message
from google.rpc import error_details_pb2

from harness.rpc import auth, rich_details
from harness.services import Stack
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc

pb = monitor_service_pb2
Stub = monitor_service_pb2_grpc.MonitorServiceStub
Metadata = tuple[tuple[str, str]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("mistakes"), {}) as started:
        yield started


@pytest.fixture(scope="module")
def stub(stack: Stack) -> Iterator[Stub]:
    with grpc.insecure_channel(stack.address("monitor")) as channel:
        yield Stub(channel)


@pytest.fixture(scope="module")
def key(stack: Stack) -> Metadata:
    return auth(stack.create_api_key("mistakes@example.com"))


def website(url: str = "https://example.com/") -> pb.Monitor:
    return pb.Monitor(spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=url)))


def field_violations(error: grpc.RpcError) -> dict[str, str]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    [bad] = [d for d in rich_details(error) if isinstance(d, error_details_pb2.BadRequest)]
    return {v.field: v.description for v in bad.field_violations}


@pytest.mark.parametrize(
    ("method", "request_message", "field"),
    [
        ("GetMonitor", pb.GetMonitorRequest(), "id"),
        ("GetMonitorStatus", pb.GetMonitorStatusRequest(), "id"),
        ("DeleteMonitor", pb.DeleteMonitorRequest(), "id"),
        ("PauseMonitor", pb.PauseMonitorRequest(), "id"),
        ("ResumeMonitor", pb.ResumeMonitorRequest(), "id"),
        ("UpdateMonitor", pb.UpdateMonitorRequest(monitor=pb.Monitor(display_name="x")), "monitor.id"),
        ("QuerySamples", pb.QuerySamplesRequest(field="response_time_ms"), "monitor_id"),
        ("SummarizeMonitor", pb.SummarizeMonitorRequest(), "monitor_id"),
    ],
)
def test_a_call_without_a_monitor_id_says_the_id_is_required(
    stub: Stub, key: Metadata, method: str, request_message: message.Message, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, method)(request_message, metadata=key, timeout=5)
    described = field_violations(caught.value)
    assert list(described) == [field]
    assert described[field].startswith("is required")
    assert "not found" not in (caught.value.details() or "")


def test_update_to_an_interval_under_the_minimum_names_the_minimum_as_create_does(stub: Stub, key: Metadata) -> None:
    five_seconds = duration_pb2.Duration(seconds=5)
    too_often = website()
    too_often.interval.CopyFrom(five_seconds)
    with pytest.raises(grpc.RpcError) as on_create:
        stub.CreateMonitor(pb.CreateMonitorRequest(monitor=too_often), metadata=key, timeout=5)
    created = stub.CreateMonitor(pb.CreateMonitorRequest(monitor=website()), metadata=key, timeout=5).monitor
    with pytest.raises(grpc.RpcError) as on_update:
        stub.UpdateMonitor(
            pb.UpdateMonitorRequest(
                monitor=pb.Monitor(id=created.id, interval=five_seconds),
                update_mask=field_mask_pb2.FieldMask(paths=["interval"]),
            ),
            metadata=key,
            timeout=5,
        )
    for caught in (on_create.value, on_update.value):
        assert caught.code() == grpc.StatusCode.INVALID_ARGUMENT
        (bad,) = [d for d in rich_details(caught) if isinstance(d, error_details_pb2.BadRequest)]
        described = {v.field: v.description for v in bad.field_violations}
        assert "at most every 10s; ask for 10s or more" in described["monitor.interval"], described


def test_a_paused_monitor_is_paused_since_the_pause(stub: Stub, key: Metadata) -> None:
    created = stub.CreateMonitor(pb.CreateMonitorRequest(monitor=website()), metadata=key, timeout=5).monitor
    before = stub.GetMonitorStatus(pb.GetMonitorStatusRequest(id=created.id), metadata=key, timeout=5).status
    assert before.state == common_pb2.MONITOR_STATE_PENDING
    paused = stub.PauseMonitor(pb.PauseMonitorRequest(id=created.id), metadata=key, timeout=5).monitor
    status = stub.GetMonitorStatus(pb.GetMonitorStatusRequest(id=created.id), metadata=key, timeout=5).status
    assert status.state == common_pb2.MONITOR_STATE_PAUSED
    assert status.state_change_time == paused.update_time
    assert status.state_change_time.ToMicroseconds() > before.state_change_time.ToMicroseconds()


def test_a_crypto_pair_in_any_case_is_saved_in_capitals_and_a_bad_one_says_what_a_pair_is(
    stub: Stub, key: Metadata
) -> None:
    def coin(pair: str) -> pb.Monitor:
        return pb.Monitor(spec=common_pb2.MonitorSpec(crypto_price=common_pb2.CryptoPriceSpec(pair=pair)))

    saved = stub.CreateMonitor(pb.CreateMonitorRequest(monitor=coin("btc-usd")), metadata=key, timeout=5).monitor
    assert saved.spec.crypto_price.pair == "BTC-USD"
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateMonitor(pb.CreateMonitorRequest(monitor=coin("bitcoin")), metadata=key, timeout=5)
    described = field_violations(caught.value)["monitor.spec.crypto_price.pair"]
    assert "such as BTC-USD" in described
    assert "capitals" not in described  # any case is accepted, so the text must not ask for capitals
