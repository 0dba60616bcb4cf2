"""Start-up refuses what would go wrong silently, before any side effect, in one clear line and exit code 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from harness import dying_with_parent
from harness.external import MariaDBServer
from harness.services import MODULES, REPO, ServiceProcess, free_port, health, python_env, role_tokens_env
from service_runtime.secretbox import new_master_key

START_TIMEOUT_S = 30.0


def run_to_exit(name: str, env: Mapping[str, str], listen: str) -> subprocess.CompletedProcess[str]:
    """``python -m services.<name>_svc --listen listen``, expected to exit on its own."""
    return subprocess.run(
        dying_with_parent([sys.executable, "-m", MODULES[name], "--listen", listen]),
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )


def embedded_env(data_dir: Path, **extra: str) -> dict[str, str]:
    return python_env({"MONITORS_DATA_DIR": str(data_dir), "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}", **extra})


def production_env(data_dir: Path, database_url: str, **extra: str) -> dict[str, str]:
    """Production settings but for Redis and InfluxDB (the start-up checks come before either is used)."""
    settings = {
        "MONITORS_DATABASE_URL": database_url,
        "MONITORS_MASTER_KEY": new_master_key(),
        **role_tokens_env("startup-test"),
        **extra,
    }
    return embedded_env(data_dir, **settings)


def tables(mariadb: MariaDBServer, database: str) -> list[str]:
    connection = mariadb.connect(database)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW TABLES")
            return [row[0] for row in cursor.fetchall()]
    finally:
        connection.close()


def assert_refused(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize("name", ["monitor", "notify"])
def test_a_second_process_on_a_port_in_use_exits_naming_it_before_any_side_effect(tmp_path: Path, name: str) -> None:
    first = ServiceProcess(name, embedded_env(tmp_path / "first"), tmp_path / "first.log")
    first.start()
    try:
        second_dir = tmp_path / "second"
        result = run_to_exit(name, embedded_env(second_dir), first.address)
        assert_refused(result, first.address, f"MONITORS_{name.upper()}_LISTEN", "in use")
        assert not second_dir.exists(), "the refused process made its data directory (and its database)"
    finally:
        first.stop()


def test_a_taken_ping_port_is_refused_before_migrations_and_the_grpc_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ping = f"127.0.0.1:{taken.getsockname()[1]}"
        result = run_to_exit("monitor", embedded_env(tmp_path, MONITORS_PING_LISTEN=ping), f"127.0.0.1:{free_port()}")
    assert_refused(result, ping, "MONITORS_PING_LISTEN")
    assert not tmp_path.joinpath("monitor.sqlite3").exists()


@pytest.mark.parametrize("name", ["monitor", "notify"])
def test_a_bad_master_key_stops_a_service_before_its_migrations(
    mariadb: MariaDBServer, tmp_path: Path, name: str
) -> None:
    database = f"startup_bad_key_{name}"
    env = production_env(tmp_path, mariadb.create_database(database), MONITORS_MASTER_KEY="not a key")
    result = run_to_exit(name, env, f"127.0.0.1:{free_port()}")
    assert_refused(result, "MONITORS_MASTER_KEY")
    assert tables(mariadb, database) == []


@pytest.mark.parametrize("name", ["monitor", "alert", "notify"])
def test_a_wrong_database_password_is_one_line_and_exit_2(mariadb: MariaDBServer, tmp_path: Path, name: str) -> None:
    url = mariadb.create_database(f"startup_password_{name}")
    wrong = url.replace(f":{mariadb.password}@", ":not-the-password@")
    result = run_to_exit(name, production_env(tmp_path, wrong), f"127.0.0.1:{free_port()}")
    assert_refused(result, "cannot connect to the database", "Access denied", f"127.0.0.1:{mariadb.port}")
    assert "not-the-password" not in result.stderr


@pytest.mark.parametrize("backend", ["embedded", "production"])
def test_without_redis_a_second_monitor_service_on_one_database_refuses_to_serve_saying_why(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    """Without Redis replicas cannot share assignments: a second one had served silently, splitting runners and
    monitors. (With MONITORS_REDIS_URL they keep in step: tests/monitor/test_monitor_replicas.py.)"""
    if backend == "embedded":
        env = embedded_env(tmp_path)
    else:
        mariadb: MariaDBServer = request.getfixturevalue("mariadb")
        env = production_env(tmp_path, mariadb.create_database("startup_replicas"))
    first = ServiceProcess("monitor", env, tmp_path / "first.log")
    first.start()
    try:
        second_env = {**env, "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}"}
        result = run_to_exit("monitor", second_env, f"127.0.0.1:{free_port()}")
        assert_refused(result, "another monitor service already serves the database", "set MONITORS_REDIS_URL")
        assert health(first.address) == health_pb2.HealthCheckResponse.SERVING
    finally:
        first.stop()
    # The lock goes with the process: a monitor service starts again at once.
    again = ServiceProcess(
        "monitor", {**env, "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}"}, tmp_path / "again.log"
    )
    again.start()
    again.stop()
