"""A monitor that no runner reports any more reads UNKNOWN, not the UP of its last check.

A real monitor service and a real runner process checking a real HTTP target every second; then the runner
stops. Monitors run every second (MONITORS_MIN_INTERVAL_S=1), so the status is stale after 3 intervals plus
the 1 s timeout plus 10 s of grace.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TypeVar

import grpc
import pytest
from google.protobuf import duration_pb2

from harness.http import HttpServer, Reply
from harness.rpc import auth
from harness.services import Stack
from harness.waiting import eventually
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc
from services.monitor_svc.monitors import STALE_GRACE, STALE_INTERVALS

pb = monitor_service_pb2
T = TypeVar("T")
STALE_AFTER_S = STALE_INTERVALS * 1 + 1 + STALE_GRACE.total_seconds()  # interval 1 s, timeout 1 s


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("stale"), {"MONITORS_MIN_INTERVAL_S": "1"}) as started:
        yield started


def test_a_monitor_whose_runner_stopped_reads_unknown_until_one_reports_again(stack: Stack) -> None:
    key = auth(stack.create_api_key("stale@example.com"))
    with grpc.insecure_channel(stack.address("monitor")) as channel, HttpServer() as target:
        stub = monitor_service_pb2_grpc.MonitorServiceStub(channel)
        target.routes["/"] = Reply(200, b"ok")
        monitor = stub.CreateMonitor(
            pb.CreateMonitorRequest(
                monitor=pb.Monitor(
                    spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=target.url("/"))),
                    interval=duration_pb2.Duration(seconds=1),
                    timeout=duration_pb2.Duration(seconds=1),
                )
            ),
            metadata=key,
            timeout=5,
        ).monitor

        def status() -> pb.MonitorStatus:
            return stub.GetMonitorStatus(pb.GetMonitorStatusRequest(id=monitor.id), metadata=key, timeout=5).status

        runner = stack.runner("stale-runner", MONITORS_EGRESS="private-allowed")
        runner.start()
        try:
            eventually(lambda: status().state == common_pb2.MONITOR_STATE_UP, 20)
            # Fresh results keep it UP past the time after which a silent monitor would be stale.
            created = monitor.create_time.ToMicroseconds() / 1e6
            while time.time() < created + STALE_AFTER_S + 2:
                assert status().state == common_pb2.MONITOR_STATE_UP
                time.sleep(0.5)
        finally:
            runner.stop()
        stopped = time.time()

        unknown = eventually(lambda: (s := status()).state == common_pb2.MONITOR_STATE_UNKNOWN and s, 40)
        assert isinstance(unknown, pb.MonitorStatus)
        last_check = unknown.last_check_time.ToMicroseconds() / 1e6
        assert last_check <= stopped
        assert unknown.last_result.is_up  # the last result is still there to read, but not taken for the state
        # Since when: the moment it went stale, not the last check.
        assert unknown.state_change_time.ToMicroseconds() / 1e6 == pytest.approx(last_check + STALE_AFTER_S, abs=0.001)

        runner = stack.runner("stale-runner-2", MONITORS_EGRESS="private-allowed")
        runner.start()
        try:
            eventually(lambda: status().state == common_pb2.MONITOR_STATE_UP, 20)
        finally:
            runner.stop()
