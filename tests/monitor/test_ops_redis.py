"""Redis failing under the monitor service (down, hung, or down from the start): logins and session calls answer
UNAVAILABLE with a message saying to retry, never INTERNAL with a traceback in the log; a hung Redis does not
cost every call its timeout; and a Redis down at start is said at start."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import grpc
import pytest

from harness.external import MariaDBServer, RedisServer
from harness.services import ServiceProcess, free_port, python_env, role_tokens_env
from monitors.v1 import account_service_pb2 as pb
from monitors.v1 import account_service_pb2_grpc
from service_runtime.secretbox import new_master_key

SESSION = (("authorization", "Bearer ms_" + "x" * 43),)


def monitor_service(tmp_path: Path, mariadb: MariaDBServer, redis_url: str, name: str) -> ServiceProcess:
    env = python_env(
        {
            "MONITORS_DATA_DIR": str(tmp_path),
            "MONITORS_DATABASE_URL": mariadb.create_database(name),
            "MONITORS_REDIS_URL": redis_url,
            "MONITORS_MASTER_KEY": new_master_key(),
            **role_tokens_env("redis-test"),
            "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}",
            "MONITORS_LOG_FORMAT": "json",
        }
    )
    return ServiceProcess("monitor", env, tmp_path / "monitor.log")


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, to stop and pause."""
    (tmp_path / "redis").mkdir()
    with RedisServer(tmp_path / "redis") as server:
        yield server


def unavailable(call: Callable[[], object]) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error = cast(grpc.Call, raised.value)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, (error.code(), error.details())
    assert "Redis" in (error.details() or "")
    assert "retry" in (error.details() or "")


def test_redis_down_makes_logins_and_sessions_unavailable_not_internal(
    tmp_path: Path, mariadb: MariaDBServer, redis: RedisServer
) -> None:
    service = monitor_service(tmp_path, mariadb, redis.url, "redis_down")
    service.start()
    try:
        with grpc.insecure_channel(service.address) as channel:
            stub = account_service_pb2_grpc.AccountServiceStub(channel)
            stub.StartLogin(pb.StartLoginRequest(email="someone@example.com"), timeout=10)  # Redis answers
            redis.stop()
            unavailable(lambda: stub.StartLogin(pb.StartLoginRequest(email="someone@example.com"), timeout=10))
            unavailable(
                lambda: stub.CompleteLogin(
                    pb.CompleteLoginRequest(email="someone@example.com", code="123456"), timeout=10
                )
            )
            unavailable(lambda: stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=SESSION, timeout=10))
            unavailable(lambda: stub.Logout(pb.LogoutRequest(), metadata=SESSION, timeout=10))
    finally:
        service.stop()
    log = service.log_path.read_text()
    assert "Traceback" not in log
    assert '"code": "INTERNAL"' not in log
    assert "Redis does not answer" in log


def test_a_hung_redis_fails_calls_at_once_after_the_first_timeout(
    tmp_path: Path, mariadb: MariaDBServer, redis: RedisServer
) -> None:
    """Before, each call waited out the 2 s command timeout: ten calls took over 20 s."""
    service = monitor_service(tmp_path, mariadb, redis.url, "redis_hung")
    service.start()
    process = redis._process
    assert process is not None
    try:
        with grpc.insecure_channel(service.address) as channel:
            stub = account_service_pb2_grpc.AccountServiceStub(channel)
            stub.StartLogin(pb.StartLoginRequest(email="someone@example.com"), timeout=10)
            os.kill(process.pid, signal.SIGSTOP)
            started = time.monotonic()
            for _ in range(10):
                unavailable(lambda: stub.StartLogin(pb.StartLoginRequest(email="someone@example.com"), timeout=10))
            assert time.monotonic() - started < 12
    finally:
        os.kill(process.pid, signal.SIGCONT)
        service.stop()


def test_a_redis_down_at_start_is_a_warning_at_start(tmp_path: Path, mariadb: MariaDBServer) -> None:
    service = monitor_service(tmp_path, mariadb, f"redis://127.0.0.1:{free_port()}/0", "redis_never")
    service.start()  # API keys and runners need no Redis: the service serves
    try:
        with grpc.insecure_channel(service.address) as channel:
            stub = account_service_pb2_grpc.AccountServiceStub(channel)
            unavailable(lambda: stub.StartLogin(pb.StartLoginRequest(email="someone@example.com"), timeout=10))
    finally:
        service.stop()
    warnings = [line for line in service.log_path.read_text().splitlines() if '"level": "WARNING"' in line]
    assert any("does not answer at start" in line and "logins and session calls" in line for line in warnings)
