"""A runner's assignments arrive in pages: however many monitors a runner holds and however large they are,
no message comes near the largest a server may send (MONITORS_MAX_MESSAGE_BYTES, 4 MiB by default)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import duration_pb2

from harness.http import HttpServer, Reply
from harness.rpc import auth
from harness.services import Stack
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc
from services.monitor_svc.translate import assignment_messages

pb = monitor_service_pb2
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("runner-sync"), {"MONITORS_MIN_INTERVAL_S": "1"}) as started:
        yield started


def test_a_runner_gets_every_monitor_when_together_they_exceed_the_largest_message(stack: Stack) -> None:
    """Before paging, monitors larger together than 4 MiB made every runner's (re)connect fail with
    RESOURCE_EXHAUSTED "Sent message larger than max", for good: no monitor of anyone was checked."""
    key = auth(stack.create_api_key("runner.sync@example.com"))
    paths = [f"/big/{i}" for i in range(80)]
    with HttpServer() as target, grpc.insecure_channel(stack.address("monitor")) as channel:
        stub = monitor_service_pb2_grpc.MonitorServiceStub(channel)
        for path in paths:
            target.routes[path] = Reply(200, b"ok")
        total = 0
        for path in paths:
            spec = common_pb2.WebsiteSpec(url=target.url(path), method=common_pb2.HTTP_METHOD_POST, body="x" * 60_000)
            monitor = pb.Monitor(
                spec=common_pb2.MonitorSpec(website=spec),
                interval=duration_pb2.Duration(seconds=5),
                timeout=duration_pb2.Duration(seconds=2),
            )
            total += stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor), metadata=key, timeout=5).ByteSize()
        assert total > 4 * MIB

        runner = stack.runner("big-sync", MONITORS_EGRESS="private-allowed")
        runner.start()  # healthy once its full set has arrived
        try:
            deployment = stub.GetDeploymentStatus(pb.GetDeploymentStatusRequest(), metadata=key, timeout=5)
            assert [(r.runner_id, r.assigned_monitors) for r in deployment.runners] == [("big-sync", 80)]
            # Every monitor is checked: each first run falls within its first interval (5 s).
            deadline = time.monotonic() + 30
            while {p for _, p, _ in target.requests} != set(paths) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert {p for _, p, _ in target.requests} == set(paths)
        finally:
            runner.stop()


def test_a_full_set_is_paged_under_the_budget_marked_on_its_first_page_and_continuing_to_its_last() -> None:
    assignments = [
        pb.Assignment(monitor=pb.Monitor(id=f"mon_{i}", display_name="n" * 1000), secrets={"s": "v"}) for i in range(10)
    ]
    pages = list(assignment_messages(True, assignments, [], max_bytes=3000, limit_bytes=10_000))
    assert [len(p.upserts) for p in pages] == [2, 2, 2, 2, 2]
    assert [(p.full_sync, p.full_sync_continues) for p in pages] == [(True, True), *[(False, True)] * 3, (False, False)]
    assert [a.monitor.id for p in pages for a in p.upserts] == [f"mon_{i}" for i in range(10)]
    assert all(p.ByteSize() <= 3000 for p in pages)

    empty = list(assignment_messages(True, [], [], max_bytes=3000, limit_bytes=10_000))
    assert [(p.full_sync, p.full_sync_continues, len(p.upserts)) for p in empty] == [(True, False, 0)]

    changes = list(assignment_messages(False, assignments[:3], ["mon_gone"], max_bytes=3000, limit_bytes=10_000))
    assert [(p.full_sync, p.full_sync_continues) for p in changes] == [(False, False), (False, False)]
    assert [list(p.removed_monitor_ids) for p in changes] == [[], ["mon_gone"]]


def test_an_assignment_too_large_for_any_message_is_left_out_rather_than_ending_the_stream() -> None:
    small = pb.Assignment(monitor=pb.Monitor(id="mon_small"))
    huge = pb.Assignment(monitor=pb.Monitor(id="mon_huge", display_name="n" * 20_000))
    pages = list(assignment_messages(True, [small, huge], [], max_bytes=3000, limit_bytes=10_000))
    assert [a.monitor.id for p in pages for a in p.upserts] == ["mon_small"]
    assert [(p.full_sync, p.full_sync_continues) for p in pages] == [(True, False)]
