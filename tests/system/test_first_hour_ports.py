"""Ports and data in the first hour: under ``make run`` the addresses the processes dial follow the ones they
listen on (one variable moves a service), a target that misses its service is named with its address and why at
once, and the admin command refuses a data directory whose monitor database the services never made."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from harness.services import REPO, free_port, health, python_env
from monitors.v1 import account_service_pb2, account_service_pb2_grpc


def launcher_env(data_dir: Path, **extra: str) -> tuple[dict[str, str], dict[str, int]]:
    """``make run``'s environment moved onto free ports with one *_LISTEN variable per listener, and no target."""
    ports = {name: free_port() for name in ("monitor", "alert", "notify", "runner")}
    env = python_env(
        {
            "MONITORS_DATA_DIR": str(data_dir),
            **{f"MONITORS_{n.upper()}_LISTEN": f"127.0.0.1:{p}" for n, p in ports.items()},
            "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}",
            "MONITORS_MCP_LISTEN": f"127.0.0.1:{free_port()}",
            "MONITORS_ALERT_INGEST_LISTEN": f"127.0.0.1:{free_port()}",
            **extra,
        }
    )
    return env, ports


def start(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.local_stack"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(process: subprocess.Popen[str], marker: str, timeout_s: float) -> str:
    assert process.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        if marker in line:
            break
    return "".join(output)


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str], dict[str, int], str]]:
    env, ports = launcher_env(tmp_path / "data")
    process = start(env)
    try:
        text = read_until(process, "Ctrl-C stops everything", 120)
        yield process, env, ports, text
    finally:
        stop(process)


@pytest.mark.timeout(300)
def test_moving_the_listeners_moves_the_targets(
    stack: tuple[subprocess.Popen[str], dict[str, str], dict[str, int], str], tmp_path: Path
) -> None:
    process, _, ports, text = stack
    assert "monitors is running" in text, text
    # The runner serves once the monitor service (MONITORS_MONITOR_TARGET) has sent its assignments.
    assert health(f"127.0.0.1:{ports['runner']}") == health_pb2.HealthCheckResponse.SERVING
    # A login code goes from the monitor service to the notification service (MONITORS_NOTIFY_TARGET).
    with grpc.insecure_channel(f"127.0.0.1:{ports['monitor']}") as channel:
        accounts = account_service_pb2_grpc.AccountServiceStub(channel)
        accounts.StartLogin(account_service_pb2.StartLoginRequest(email="moved@example.com"), timeout=15)
    outbox = tmp_path / "data" / "outbox.txt"
    deadline = time.monotonic() + 30
    while not (outbox.exists() and "moved@example.com" in outbox.read_text()):
        assert time.monotonic() < deadline, "the login email never reached the notification service"
        time.sleep(0.2)
    assert process.poll() is None


@pytest.mark.timeout(300)
def test_a_target_that_misses_its_service_is_named_with_the_address_and_why(tmp_path: Path) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    env, _ = launcher_env(tmp_path / "data", MONITORS_NOTIFY_TARGET=nowhere)
    process = start(env)
    try:
        text = read_until(process, "stopping", 120)
        process.wait(timeout=60)
    finally:
        stop(process)
    assert process.returncode == 1, text
    assert f"MONITORS_NOTIFY_TARGET={nowhere} does not reach the notify service" in text, text
    assert "Connection refused" in text, text
    assert f"it listens on {env['MONITORS_NOTIFY_LISTEN']}" in text
    assert "monitors is running" not in text


def test_the_admin_command_refuses_a_data_directory_the_services_never_used(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    result = subprocess.run(
        [sys.executable, "-m", "services.admin", "create-api-key", "--email", "me@example.com"],
        env=python_env({"MONITORS_DATA_DIR": str(elsewhere)}),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"no monitor database in MONITORS_DATA_DIR={elsewhere}" in result.stderr
    assert f"{elsewhere / 'monitor.sqlite3'} does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert not elsewhere.exists()
