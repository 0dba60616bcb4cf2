"""By default a stopping server keeps answering for a few seconds, NOT_SERVING, before it closes its port: probes
and clients see it leave instead of a refused connection (the drain delay had defaulted to 0)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from harness.services import ServiceProcess, free_port, health, python_env


@pytest.mark.parametrize("name", ["monitor", "notify"])
def test_by_default_a_stopping_server_answers_not_serving_before_it_closes(tmp_path: Path, name: str) -> None:
    env = python_env({"MONITORS_DATA_DIR": str(tmp_path), "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}"})
    assert "MONITORS_DRAIN_DELAY_S" not in env
    server = ServiceProcess(name, env, tmp_path / f"{name}.log")
    server.start()
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    time.sleep(1.0)  # a probe's next look, well within the default delay
    try:
        status = health(server.address, timeout_s=2)
    except grpc.RpcError as error:
        pytest.fail(f"a new health check 1 s after SIGTERM failed ({error.code()}): the port closed at once")
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert server.process.wait(timeout=30) == 0
