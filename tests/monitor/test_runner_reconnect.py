"""A monitor service that stops lets its runners go at once, and they are back within seconds of its return.

Before: a stop waited out the whole shutdown grace for the runners' open assignment streams, and after a restart
gRPC's channel backoff (1 s growing to 120 s), not the runner's, decided when a runner came back: 5-15 s late.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from harness.rpc import auth
from harness.services import Stack
from monitors.v1 import monitor_service_pb2, monitor_service_pb2_grpc

pb = monitor_service_pb2
GRACE_S = 20.0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with Stack(tmp_path, {"MONITORS_SHUTDOWN_GRACE_S": str(GRACE_S)}) as started:
        yield started


def connected_runners(stack: Stack) -> list[str]:
    token = auth(stack.role_token("operator"))
    with grpc.insecure_channel(stack.address("monitor")) as channel:
        stub = monitor_service_pb2_grpc.MonitorServiceStub(channel)
        reply = stub.GetDeploymentStatus(pb.GetDeploymentStatusRequest(), metadata=token, timeout=2)
    return [r.runner_id for r in reply.runners]


def test_a_stopped_monitor_service_lets_runners_go_at_once_and_has_them_back_within_seconds(stack: Stack) -> None:
    runner = stack.runner("comes-back")
    runner.start()
    monitor = stack.services["monitor"]
    try:
        assert connected_runners(stack) == ["comes-back"]

        began = time.monotonic()
        assert monitor.stop(timeout_s=GRACE_S + 10) == 0
        stop_s = time.monotonic() - began
        assert stop_s < GRACE_S / 2, f"the stop took {stop_s:.1f}s: the runner's stream held it for the grace"

        # Long enough down that gRPC's own backoff would have grown past 10 s.
        time.sleep(20)
        monitor.start()  # returns once it serves
        back = time.monotonic()
        while "comes-back" not in connected_runners(stack) and time.monotonic() - back < 30:
            time.sleep(0.1)
        resync_s = time.monotonic() - back
        assert resync_s < 4, f"the runner came back {resync_s:.1f}s after the monitor service served again"
    finally:
        runner.stop()
