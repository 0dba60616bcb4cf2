"""The operator command and the `make run` launcher, as a user runs them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from harness.external import MariaDBServer
from harness.http import HttpServer, Reply
from harness.services import REPO, free_port, health, python_env
from monitors.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    common_pb2,
    monitor_service_pb2,
    monitor_service_pb2_grpc,
)
from service_runtime.database import migrate
from services.monitor_svc.schema import MIGRATIONS, VERSION_TABLE


def admin(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.admin", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )


def migrated(data_dir: Path) -> Path:
    """``data_dir`` with the monitor database the monitor service makes when it starts there."""
    data_dir.mkdir(parents=True, exist_ok=True)
    migrate(f"sqlite:///{data_dir / 'monitor.sqlite3'}", MIGRATIONS, VERSION_TABLE)
    return data_dir


def test_create_api_key_prints_only_the_key(tmp_path: Path) -> None:
    env = python_env({"MONITORS_DATA_DIR": str(migrated(tmp_path / "data"))})
    result = admin(env, "create-api-key", "--email", "Ops@Example.com")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert result.stdout.startswith("mk_")
    assert "ops@example.com" in result.stderr


def test_create_api_key_on_mariadb(mariadb: MariaDBServer, tmp_path: Path) -> None:
    env = python_env({"MONITORS_DATA_DIR": str(tmp_path), "MONITORS_DATABASE_URL": mariadb.create_database("admin")})
    first = admin(env, "create-api-key", "--email", "ops@example.com")
    second = admin(env, "create-api-key", "--email", "ops@example.com", "--name", "second")
    assert first.returncode == second.returncode == 0
    assert first.stdout != second.stdout


def test_bad_email_is_a_clear_error(tmp_path: Path) -> None:
    env = python_env({"MONITORS_DATA_DIR": str(migrated(tmp_path))})
    result = admin(env, "create-api-key", "--email", "not-an-address")
    assert result.returncode == 2
    assert "email: is not a valid email address" in result.stderr
    assert "Traceback" not in result.stderr


@dataclass
class Launcher:
    """A running ``make run`` launcher: its process, listen ports, environment and output up to "ready"."""

    process: subprocess.Popen[str]
    ports: dict[str, int]
    env: dict[str, str]
    text: str


@pytest.fixture
def mcp_listen(request: pytest.FixtureRequest) -> Iterator[str]:
    """Where the launcher's MCP adapter listens: a free port, or (param "taken") one another program holds."""
    if getattr(request, "param", "") != "taken":
        yield f"127.0.0.1:{free_port()}"
        return
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield f"127.0.0.1:{holder.getsockname()[1]}"


@pytest.fixture
def launcher(tmp_path: Path, mcp_listen: str) -> Iterator[Launcher]:
    """``python -m services.local_stack`` on free ports, read until it reports ready; killed with its services
    if a test leaves it running."""
    ports = {name: free_port() for name in ("monitor", "alert", "notify", "runner")}
    env = python_env(
        {
            "MONITORS_DATA_DIR": str(tmp_path / "data"),
            "MONITORS_MONITOR_TARGET": f"127.0.0.1:{ports['monitor']}",
            "MONITORS_NOTIFY_TARGET": f"127.0.0.1:{ports['notify']}",
            **{f"MONITORS_{n.upper()}_LISTEN": f"127.0.0.1:{p}" for n, p in ports.items()},
            "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}",
            "MONITORS_MCP_LISTEN": mcp_listen,
            "MONITORS_ALERT_INGEST_LISTEN": f"127.0.0.1:{free_port()}",
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "services.local_stack"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        output: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            if "Ctrl-C stops everything" in line:
                break
        yield Launcher(process, ports, env, "".join(output))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        if process.stdout is not None and not process.stdout.closed:
            process.stdout.close()
        # Its services run in sessions of their own: any that outlived it are found by their environment.
        kill_processes_with_env(f"MONITORS_DATA_DIR={env['MONITORS_DATA_DIR']}")


def kill_processes_with_env(entry: str) -> None:
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if entry.encode() in environ.read_bytes().split(b"\0"):
                os.kill(int(environ.parent.name), signal.SIGKILL)
        except OSError:
            continue  # gone, or not ours to read


def assert_nothing_answers(ports: dict[str, int]) -> None:
    for port in ports.values():
        try:
            health(f"127.0.0.1:{port}", timeout_s=0.5)
            raise AssertionError(f"port {port} still answers after the launcher stopped")
        except grpc.RpcError:
            pass


def test_local_stack_starts_three_healthy_services_and_a_runner_and_stops_on_ctrl_c(launcher: Launcher) -> None:
    text, ports, env = launcher.text, launcher.ports, launcher.env
    assert "monitors is running" in text, text
    for port in ports.values():
        assert f"127.0.0.1:{port}" in text
        assert health(f"127.0.0.1:{port}") == health_pb2.HealthCheckResponse.SERVING
    assert "create-api-key" in text
    assert "grpcurl" in text
    assert "egress policy is private-allowed" in text
    assert " WARNING " not in text, "a clean start printed a warning"
    assert " INFO " not in text, "make run's terminal shows warnings and errors only"

    key = admin(env, "create-api-key", "--email", "me@example.com").stdout.strip()
    with grpc.insecure_channel(f"127.0.0.1:{ports['monitor']}") as channel:
        reply = account_service_pb2_grpc.AccountServiceStub(channel).GetCurrentUser(
            account_service_pb2.GetCurrentUserRequest(), metadata=(("authorization", f"Bearer {key}"),), timeout=5
        )
    assert reply.user.email == "me@example.com"
    with HttpServer() as site, grpc.insecure_channel(f"127.0.0.1:{ports['monitor']}") as channel:
        site.routes["/"] = Reply(200, b"home")
        monitors = monitor_service_pb2_grpc.MonitorServiceStub(channel)
        metadata = (("authorization", f"Bearer {key}"),)
        spec = common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=site.url("/")))
        created = monitors.CreateMonitor(
            monitor_service_pb2.CreateMonitorRequest(monitor=monitor_service_pb2.Monitor(spec=spec)),
            metadata=metadata,
            timeout=5,
        ).monitor
        deadline = time.monotonic() + 30  # a new monitor's first check comes within a second or so
        state = common_pb2.MONITOR_STATE_UNSPECIFIED
        while time.monotonic() < deadline and state != common_pb2.MONITOR_STATE_UP:
            time.sleep(0.5)
            state = monitors.GetMonitorStatus(
                monitor_service_pb2.GetMonitorStatusRequest(id=created.id), metadata=metadata, timeout=5
            ).status.state
        assert state == common_pb2.MONITOR_STATE_UP, "the runner started by make run did not check the monitor"
        # "Try it first" reaches the same local site as the runner: every process has the same egress policy.
        tried = monitors.RunCheck(monitor_service_pb2.RunCheckRequest(spec=spec), metadata=metadata, timeout=10)
        assert tried.result.is_up, tried.result.message

    launcher.process.send_signal(signal.SIGINT)
    rest, _ = launcher.process.communicate(timeout=60)
    assert launcher.process.returncode == 0, text + rest
    assert "stopped." in rest
    assert_nothing_answers(ports)


def test_local_stack_stops_its_services_even_when_its_terminal_is_gone(launcher: Launcher) -> None:
    """Its output closed (a closed terminal, ``make run | head``), the launcher fails to print on stopping; its
    services must not outlive it."""
    assert "monitors is running" in launcher.text, launcher.text
    assert launcher.process.stdout is not None
    launcher.process.stdout.close()
    launcher.process.send_signal(signal.SIGINT)
    launcher.process.wait(timeout=60)
    assert_nothing_answers(launcher.ports)


@pytest.mark.parametrize("mcp_listen", ["taken"], indirect=True)
def test_a_taken_mcp_port_costs_only_the_adapter_and_says_which_setting(launcher: Launcher, mcp_listen: str) -> None:
    """The adapter's port held by another program: the services still start and keep running, and the output
    names MONITORS_MCP_LISTEN (it had reported the other program as SERVING, then stopped everything)."""
    assert "monitors is running" in launcher.text, launcher.text
    assert "MONITORS_MCP_LISTEN" in launcher.text
    assert f"{mcp_listen} is taken" in launcher.text
    time.sleep(2)
    assert launcher.process.poll() is None
    for port in launcher.ports.values():
        assert health(f"127.0.0.1:{port}") == health_pb2.HealthCheckResponse.SERVING
