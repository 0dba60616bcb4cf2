"""MonitorService over gRPC, on both stacks: monitor CRUD, pause and resume, status, data queries,
validation naming the field, and isolation between users."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.rpc import error_details_pb2

from harness.http import HttpServer, Reply
from harness.rpc import auth, rich_details
from harness.services import Stack
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc

pb = monitor_service_pb2


@pytest.fixture(scope="module")
def alice(stack: Stack) -> tuple[tuple[str, str]]:
    return auth(stack.create_api_key("alice.monitors@example.com"))


@pytest.fixture(scope="module")
def bob(stack: Stack) -> tuple[tuple[str, str]]:
    return auth(stack.create_api_key("bob.monitors@example.com"))


@pytest.fixture
def stub(stack: Stack) -> Iterator[monitor_service_pb2_grpc.MonitorServiceStub]:
    with grpc.insecure_channel(stack.address("monitor")) as channel:
        yield monitor_service_pb2_grpc.MonitorServiceStub(channel)


def website(url: str = "https://example.com/health", **fields: object) -> pb.Monitor:
    return pb.Monitor(
        spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=url)),
        **fields,  # type: ignore[arg-type]
    )


def violations(error: grpc.RpcError) -> list[str]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    bad_request = next(d for d in rich_details(error) if isinstance(d, error_details_pb2.BadRequest))
    return [v.field for v in bad_request.field_violations]


def test_create_get_list_update_delete(
    stub: monitor_service_pb2_grpc.MonitorServiceStub, alice: tuple[tuple[str, str]]
) -> None:
    created = stub.CreateMonitor(pb.CreateMonitorRequest(monitor=website()), metadata=alice, timeout=5).monitor
    assert created.id.startswith("mon_")
    assert created.display_name == "example.com"  # derived from the URL
    assert created.interval.seconds == 60
    assert created.timeout.seconds == 10
    assert created.spec.website.follow_redirects is True
    fetched = stub.GetMonitor(pb.GetMonitorRequest(id=created.id), metadata=alice, timeout=5).monitor
    assert fetched == created

    updated = stub.UpdateMonitor(
        pb.UpdateMonitorRequest(
            monitor=pb.Monitor(id=created.id, display_name="Shop", interval=duration_pb2.Duration(seconds=30)),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "interval"]),
        ),
        metadata=alice,
        timeout=5,
    ).monitor
    assert (updated.display_name, updated.interval.seconds, updated.spec) == ("Shop", 30, created.spec)
    assert updated.update_time.ToDatetime() >= created.update_time.ToDatetime()

    stub.DeleteMonitor(pb.DeleteMonitorRequest(id=created.id), metadata=alice, timeout=5)
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetMonitor(pb.GetMonitorRequest(id=created.id), metadata=alice, timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_listing_pages_through_every_monitor_once(
    stub: monitor_service_pb2_grpc.MonitorServiceStub, stack: Stack
) -> None:
    carol = auth(stack.create_api_key("carol.monitors@example.com"))
    ids = [
        stub.CreateMonitor(
            pb.CreateMonitorRequest(monitor=website(f"https://s{i}.example.com")), metadata=carol, timeout=5
        ).monitor.id
        for i in range(5)
    ]
    seen, token = [], ""
    while True:
        page = stub.ListMonitors(pb.ListMonitorsRequest(page_size=2, page_token=token), metadata=carol, timeout=5)
        seen += [m.id for m in page.monitors]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids


def test_pause_resume_and_status(
    stub: monitor_service_pb2_grpc.MonitorServiceStub, alice: tuple[tuple[str, str]]
) -> None:
    monitor_id = stub.CreateMonitor(pb.CreateMonitorRequest(monitor=website()), metadata=alice, timeout=5).monitor.id
    status = stub.GetMonitorStatus(pb.GetMonitorStatusRequest(id=monitor_id), metadata=alice, timeout=5).status
    assert status.state == common_pb2.MONITOR_STATE_PENDING
    paused = stub.PauseMonitor(pb.PauseMonitorRequest(id=monitor_id), metadata=alice, timeout=5).monitor
    assert paused.paused
    assert stub.PauseMonitor(
        pb.PauseMonitorRequest(id=monitor_id), metadata=alice, timeout=5
    ).monitor.paused  # idempotent
    status = stub.GetMonitorStatus(pb.GetMonitorStatusRequest(id=monitor_id), metadata=alice, timeout=5).status
    assert status.state == common_pb2.MONITOR_STATE_PAUSED
    assert not stub.ResumeMonitor(pb.ResumeMonitorRequest(id=monitor_id), metadata=alice, timeout=5).monitor.paused


@pytest.mark.parametrize(
    ("monitor", "fields"),
    [
        (pb.Monitor(), ["monitor.spec"]),
        (website("ftp://example.com/file"), ["monitor.spec.website.url"]),
        (website("https://user:pw@example.com/"), ["monitor.spec.website.url"]),
        (website(interval=duration_pb2.Duration(seconds=-5)), ["monitor.interval"]),
        (website(interval=duration_pb2.Duration(seconds=0)), ["monitor.interval"]),  # was taken for unset: 60s
        (website(timeout=duration_pb2.Duration(seconds=0)), ["monitor.timeout"]),
        (
            website(interval=duration_pb2.Duration(seconds=30), timeout=duration_pb2.Duration(seconds=45)),
            ["monitor.timeout"],
        ),
        (website(retries=11, locations=["eu-west", "EU WEST"]), ["monitor.retries", "monitor.locations[1]"]),
        (
            pb.Monitor(spec=common_pb2.MonitorSpec(crypto_price=common_pb2.CryptoPriceSpec(pair="bitcoin"))),
            ["monitor.spec.crypto_price.pair"],
        ),
        (
            pb.Monitor(spec=common_pb2.MonitorSpec(tcp=common_pb2.TcpSpec(host="db.internal", port=70000))),
            ["monitor.spec.tcp.port"],
        ),
        (
            pb.Monitor(spec=common_pb2.MonitorSpec(grpc_health=common_pb2.GrpcHealthSpec(target="no-port"))),
            ["monitor.spec.grpc_health.target"],
        ),
    ],
)
def test_invalid_monitors_name_every_bad_field(
    stub: monitor_service_pb2_grpc.MonitorServiceStub,
    alice: tuple[tuple[str, str]],
    monitor: pb.Monitor,
    fields: list[str],
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor), metadata=alice, timeout=5)
    assert violations(caught.value) == fields


def test_update_refuses_unknown_paths_and_a_change_of_type(
    stub: monitor_service_pb2_grpc.MonitorServiceStub, alice: tuple[tuple[str, str]]
) -> None:
    monitor_id = stub.CreateMonitor(pb.CreateMonitorRequest(monitor=website()), metadata=alice, timeout=5).monitor.id
    with pytest.raises(grpc.RpcError) as caught:
        stub.UpdateMonitor(
            pb.UpdateMonitorRequest(
                monitor=pb.Monitor(id=monitor_id), update_mask=field_mask_pb2.FieldMask(paths=["id"])
            ),
            metadata=alice,
            timeout=5,
        )
    assert violations(caught.value) == ["update_mask"]
    tcp = common_pb2.MonitorSpec(tcp=common_pb2.TcpSpec(host="example.com", port=443))
    with pytest.raises(grpc.RpcError) as caught:
        stub.UpdateMonitor(
            pb.UpdateMonitorRequest(
                monitor=pb.Monitor(id=monitor_id, spec=tcp), update_mask=field_mask_pb2.FieldMask(paths=["spec"])
            ),
            metadata=alice,
            timeout=5,
        )
    assert violations(caught.value) == ["monitor.spec"]


def test_another_users_monitor_is_not_found_everywhere(
    stub: monitor_service_pb2_grpc.MonitorServiceStub, alice: tuple[tuple[str, str]], bob: tuple[tuple[str, str]]
) -> None:
    mine = stub.CreateMonitor(pb.CreateMonitorRequest(monitor=website()), metadata=alice, timeout=5).monitor
    calls: list[Callable[[], object]] = [
        lambda: stub.GetMonitor(pb.GetMonitorRequest(id=mine.id), metadata=bob, timeout=5),
        lambda: stub.UpdateMonitor(
            pb.UpdateMonitorRequest(monitor=pb.Monitor(id=mine.id, display_name="mine now")), metadata=bob, timeout=5
        ),
        lambda: stub.DeleteMonitor(pb.DeleteMonitorRequest(id=mine.id), metadata=bob, timeout=5),
        lambda: stub.PauseMonitor(pb.PauseMonitorRequest(id=mine.id), metadata=bob, timeout=5),
        lambda: stub.ResumeMonitor(pb.ResumeMonitorRequest(id=mine.id), metadata=bob, timeout=5),
        lambda: stub.GetMonitorStatus(pb.GetMonitorStatusRequest(id=mine.id), metadata=bob, timeout=5),
        lambda: stub.QuerySamples(pb.QuerySamplesRequest(monitor_id=mine.id, field="is_up"), metadata=bob, timeout=5),
        lambda: stub.SummarizeMonitor(pb.SummarizeMonitorRequest(monitor_id=mine.id), metadata=bob, timeout=5),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert stub.GetMonitor(pb.GetMonitorRequest(id=mine.id), metadata=alice, timeout=5).monitor == mine
    listed = stub.ListMonitors(pb.ListMonitorsRequest(page_size=1000), metadata=bob, timeout=5)
    assert mine.id not in [m.id for m in listed.monitors]


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        (timestamp_pb2.Timestamp(seconds=10**12), None, "time_range.start_time"),  # past year 9999
        (None, timestamp_pb2.Timestamp(seconds=1, nanos=-1), "time_range.end_time"),
        (None, timestamp_pb2.Timestamp(seconds=-62135596800), "time_range.end_time"),  # year 1: no day before it
    ],
)
def test_a_time_range_out_of_range_names_the_field(
    stub: monitor_service_pb2_grpc.MonitorServiceStub,
    alice: tuple[tuple[str, str]],
    start: timestamp_pb2.Timestamp | None,
    end: timestamp_pb2.Timestamp | None,
    field: str,
) -> None:
    """These were INTERNAL: protobuf's conversion and the default start's arithmetic raised."""
    monitor_id = stub.CreateMonitor(pb.CreateMonitorRequest(monitor=website()), metadata=alice, timeout=5).monitor.id
    time_range = common_pb2.TimeRange(start_time=start, end_time=end)
    calls: list[Callable[[], object]] = [
        lambda: stub.QuerySamples(
            pb.QuerySamplesRequest(monitor_id=monitor_id, field="is_up", time_range=time_range),
            metadata=alice,
            timeout=5,
        ),
        lambda: stub.SummarizeMonitor(
            pb.SummarizeMonitorRequest(monitor_id=monitor_id, time_range=time_range), metadata=alice, timeout=5
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(caught.value) == [field]


def test_queries_check_the_field_against_the_monitor_type(
    stub: monitor_service_pb2_grpc.MonitorServiceStub, alice: tuple[tuple[str, str]]
) -> None:
    monitor_id = stub.CreateMonitor(pb.CreateMonitorRequest(monitor=website()), metadata=alice, timeout=5).monitor.id
    with pytest.raises(grpc.RpcError) as caught:
        stub.QuerySamples(pb.QuerySamplesRequest(monitor_id=monitor_id, field="price"), metadata=alice, timeout=5)
    assert violations(caught.value) == ["field"]
    empty = stub.QuerySamples(
        pb.QuerySamplesRequest(monitor_id=monitor_id, field="response_time_ms"), metadata=alice, timeout=5
    )
    assert list(empty.points) == []
    summary = stub.SummarizeMonitor(pb.SummarizeMonitorRequest(monitor_id=monitor_id), metadata=alice, timeout=5)
    assert summary.WhichOneof("summary") == "website"
    assert summary.sample_count == 0
    span = summary.time_range.end_time.ToDatetime() - summary.time_range.start_time.ToDatetime()
    assert span.total_seconds() == 86400  # the default: the last 24 hours


def test_runner_methods_refuse_user_tokens(
    stub: monitor_service_pb2_grpc.MonitorServiceStub, alice: tuple[tuple[str, str]]
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        next(
            iter(
                stub.WatchAssignments(
                    pb.WatchAssignmentsRequest(runner_id="r1", location="eu"), metadata=alice, timeout=5
                )
            )
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as caught:
        next(
            iter(
                stub.WatchAssignments(pb.WatchAssignmentsRequest(runner_id="r1"), metadata=auth("mk_forged"), timeout=5)
            )
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_run_check_applies_the_egress_policy_and_stores_nothing(
    stub: monitor_service_pb2_grpc.MonitorServiceStub, alice: tuple[tuple[str, str]], bob: tuple[tuple[str, str]]
) -> None:
    """The stacks run with the default public egress policy, so a loopback target is refused."""
    with HttpServer() as target:
        target.routes["/"] = Reply(200, b"internal")
        spec = common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=target.url("/")))
        result = stub.RunCheck(pb.RunCheckRequest(spec=spec), metadata=alice, timeout=10).result
        assert (result.is_up, result.error_class) == (False, common_pb2.ERROR_CLASS_BLOCKED)
        assert target.connections == 0
        created = stub.CreateMonitor(pb.CreateMonitorRequest(monitor=pb.Monitor(spec=spec)), metadata=alice, timeout=5)
        saved = stub.RunCheck(pb.RunCheckRequest(monitor_id=created.monitor.id), metadata=alice, timeout=10).result
        assert (saved.monitor_id, saved.error_class) == (created.monitor.id, common_pb2.ERROR_CLASS_BLOCKED)
        status = stub.GetMonitorStatus(pb.GetMonitorStatusRequest(id=created.monitor.id), metadata=alice, timeout=5)
        assert not status.status.HasField("last_result")  # RunCheck stores nothing
        with pytest.raises(grpc.RpcError) as caught:
            stub.RunCheck(pb.RunCheckRequest(monitor_id=created.monitor.id), metadata=bob, timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    bad = common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url="gopher://example.com"))
    with pytest.raises(grpc.RpcError) as caught:
        stub.RunCheck(pb.RunCheckRequest(spec=bad), metadata=alice, timeout=10)
    assert violations(caught.value) == ["spec.website.url"]
