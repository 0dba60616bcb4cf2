"""RunCheck cannot be used by one user to slow the API down for everyone.

A real monitor service (``MONITORS_EGRESS=private-allowed``, so it may reach the loopback target) and a
target whose slow route holds each request until the test lets it go. A user has at most
``RUN_CHECKS_PER_USER`` checks running at once, and ``RUN_CHECK_RATE.burst`` in a row before the rate refuses
(its refill slowed to one a minute here, so a slow machine cannot refill it mid-test); checks run in a worker
process, not on the server's event loop, and a worker that dies is replaced; a check whose caller gave up
stops at once. (The latency another user sees while heavy checks run is measured by
``bench/runcheck_bench.py``: timing has no place in a test on a shared machine.)
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from google.protobuf import duration_pb2

from harness.http import HttpServer, Reply
from harness.rpc import auth, rich_details
from harness.services import Stack
from harness.waiting import eventually
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc
from services.monitor_svc.monitors import RUN_CHECK_RATE, RUN_CHECKS_PER_USER

pb = monitor_service_pb2
T = TypeVar("T")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"MONITORS_EGRESS": "private-allowed", "MONITORS_RUN_CHECK_EVERY_S": "60"}
    with Stack(tmp_path_factory.mktemp("runcheck"), env) as started:
        yield started


@pytest.fixture(scope="module")
def stub(stack: Stack) -> Iterator[monitor_service_pb2_grpc.MonitorServiceStub]:
    with grpc.insecure_channel(stack.address("monitor")) as channel:
        yield monitor_service_pb2_grpc.MonitorServiceStub(channel)


class HeldTarget:
    """An HTTP target whose /slow route answers only once ``release`` is set."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.release = threading.Event()
        server.routes["/fast"] = Reply(200, b"ok")
        server.routes["/slow"] = self._slow

    def _slow(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        self.release.wait(20)
        return Reply(200, b"ok")

    def held(self) -> int:
        return sum(1 for _, path, _ in self.server.requests if path == "/slow")


@pytest.fixture
def target() -> Iterator[HeldTarget]:
    with HttpServer() as server:
        held = HeldTarget(server)
        try:
            yield held
        finally:
            held.release.set()


def check_of(url: str) -> pb.RunCheckRequest:
    return pb.RunCheckRequest(spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=url)))


def test_a_user_runs_a_bounded_number_of_checks_at_once(
    stack: Stack, stub: monitor_service_pb2_grpc.MonitorServiceStub, target: HeldTarget
) -> None:
    alice, bob = auth(stack.create_api_key("alice.runcheck@example.com")), auth(stack.create_api_key("bob.rc@x.org"))
    slow, fast = check_of(target.server.url("/slow")), check_of(target.server.url("/fast"))
    held = [stub.RunCheck.future(slow, metadata=alice, timeout=30) for _ in range(RUN_CHECKS_PER_USER)]
    eventually(lambda: target.held() == RUN_CHECKS_PER_USER)

    with pytest.raises(grpc.RpcError) as caught:
        stub.RunCheck(fast, metadata=alice, timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"you have {RUN_CHECKS_PER_USER} checks running" in (caught.value.details() or "")
    [info] = [d for d in rich_details(caught.value) if hasattr(d, "metadata")]
    assert dict(info.metadata)["limit"] == "run_checks_per_user"
    # The limit is the user's: another user's check runs meanwhile.
    assert stub.RunCheck(fast, metadata=bob, timeout=10).result.is_up

    target.release.set()
    assert all(future.result(timeout=20).result.is_up for future in held)
    assert stub.RunCheck(fast, metadata=alice, timeout=10).result.is_up  # the slots are free again


def test_a_user_runs_a_bounded_number_of_checks_in_a_row(
    stack: Stack, stub: monitor_service_pb2_grpc.MonitorServiceStub, target: HeldTarget
) -> None:
    """One user with 20 callers had made about 580 outbound checks a second from the service's addresses."""
    erin, frank = auth(stack.create_api_key("erin.runcheck@example.com")), auth(stack.create_api_key("frank.rc@x.org"))
    fast = check_of(target.server.url("/fast"))
    # A request refused as invalid sends nothing out and spends nothing.
    with pytest.raises(grpc.RpcError) as invalid:
        stub.RunCheck(check_of("ftp://example.com/"), metadata=erin, timeout=10)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for _ in range(RUN_CHECK_RATE.burst):
        assert stub.RunCheck(fast, metadata=erin, timeout=10).result.is_up

    with pytest.raises(grpc.RpcError) as caught:
        stub.RunCheck(fast, metadata=erin, timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry in " in (caught.value.details() or "")
    [info] = [d for d in rich_details(caught.value) if hasattr(d, "metadata")]
    assert dict(info.metadata)["limit"] == "run_check_rate"
    assert len([r for r in target.server.requests if r[1] == "/fast"]) == RUN_CHECK_RATE.burst  # none went out
    # The rate is the user's: another user's check runs meanwhile.
    assert stub.RunCheck(fast, metadata=frank, timeout=10).result.is_up


def check_workers(stack: Stack) -> list[int]:
    """The process ids of the monitor service's child processes (its check workers)."""
    process = stack.services["monitor"].process
    assert process is not None
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def test_checks_run_in_a_worker_process_that_is_replaced_when_it_dies(
    stack: Stack, stub: monitor_service_pb2_grpc.MonitorServiceStub, target: HeldTarget
) -> None:
    carol = auth(stack.create_api_key("carol.runcheck@example.com"))
    slow = check_of(target.server.url("/slow"))
    [worker] = eventually(lambda: check_workers(stack))
    held = stub.RunCheck.future(slow, metadata=carol, timeout=30)
    eventually(lambda: target.held() == 1)

    os.kill(worker, signal.SIGKILL)  # the check dies with the process it runs in, not with the server
    with pytest.raises(grpc.RpcError) as caught:
        held.result(timeout=20)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "check worker stopped" in (caught.value.details() or "")

    assert stub.RunCheck(check_of(target.server.url("/fast")), metadata=carol, timeout=20).result.is_up
    [replacement] = check_workers(stack)
    assert replacement != worker


class SilentTarget:
    """A TCP server that accepts connections, never answers, and counts the clients that hang up."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.accepted = self.hung_up = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._drain, args=(connection,), daemon=True).start()

    def _drain(self, connection: socket.socket) -> None:
        with connection:
            while connection.recv(65536):
                pass
        self.hung_up += 1

    def close(self) -> None:
        self._listener.close()


def test_a_check_whose_caller_gave_up_stops_at_once(
    stack: Stack, stub: monitor_service_pb2_grpc.MonitorServiceStub
) -> None:
    """Else a user could keep any number of checks running by calling with short deadlines."""
    dave = auth(stack.create_api_key("dave.runcheck@example.com"))
    target = SilentTarget()
    try:
        request = check_of(f"http://127.0.0.1:{target.port}/")
        request.timeout.CopyFrom(duration_pb2.Duration(seconds=50))
        with pytest.raises(grpc.RpcError) as caught:
            stub.RunCheck(request, metadata=dave, timeout=1.5)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert target.accepted == 1
        eventually(lambda: target.hung_up == 1)  # within seconds, not at the check's own 50 s timeout
    finally:
        target.close()
