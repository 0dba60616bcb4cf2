"""Graceful shutdown: on SIGTERM a server reports NOT_SERVING before it exits, then exits cleanly."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.services import ServiceProcess, free_port, python_env


@pytest.mark.parametrize("name", ["monitor", "alert", "notify"])
def test_sigterm_reports_not_serving_before_exit(tmp_path: Path, name: str) -> None:
    env = python_env(
        {
            "MONITORS_DATA_DIR": str(tmp_path),
            "MONITORS_DRAIN_DELAY_S": "1",
            "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}",
        }
    )
    server = ServiceProcess(name, env, tmp_path / f"{name}.log")
    server.start()
    assert server.process is not None
    seen: list[tuple[int, bool]] = []  # (status, was the process still running when it arrived)
    watching = threading.Event()

    def watch() -> None:
        with grpc.insecure_channel(server.address) as channel:
            replies = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=20)
            try:
                for reply in replies:
                    assert server.process is not None
                    seen.append((reply.status, server.process.poll() is None))
                    watching.set()
            except grpc.RpcError:
                pass

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert watching.wait(10)
    server.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert server.process.wait(timeout=20) == 0
    watcher.join(timeout=10)
    assert seen[0] == (health_pb2.HealthCheckResponse.SERVING, True)
    assert (health_pb2.HealthCheckResponse.NOT_SERVING, True) in seen
    assert time.monotonic() - started >= 0.9, "the drain delay was skipped"
    assert "shutting down" in server.log_tail()
