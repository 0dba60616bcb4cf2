"""Runners end to end: real monitor service, real runner processes, a real HTTP target on loopback.

The runners here use the private-allowed egress policy (their targets are on loopback); the services keep
the default. Monitors run every second (MONITORS_MIN_INTERVAL_S=1) so the tests see several checks quickly.
"""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import TypeVar

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from harness.http import HttpServer, Reply
from harness.rpc import auth
from harness.services import ServiceProcess, Stack, python_env
from harness.waiting import eventually
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc
from services.monitor_svc.runner.client import CHANNEL_OPTIONS

pb = monitor_service_pb2
T = TypeVar("T")
RUNNER_ENV = {"MONITORS_EGRESS": "private-allowed"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Declared locations: the quorum test creates its monitor before its west runner first connects.
    env = {"MONITORS_MIN_INTERVAL_S": "1", "MONITORS_LOCATIONS": "east,west"}
    with Stack(tmp_path_factory.mktemp("runners"), env) as started:
        yield started


@pytest.fixture(scope="module")
def key(stack: Stack) -> tuple[tuple[str, str]]:
    return auth(stack.create_api_key("runner.tests@example.com"))


@pytest.fixture(scope="module")
def stub(stack: Stack) -> Iterator[monitor_service_pb2_grpc.MonitorServiceStub]:
    with grpc.insecure_channel(stack.address("monitor")) as channel:
        yield monitor_service_pb2_grpc.MonitorServiceStub(channel)


@pytest.fixture(scope="module")
def target() -> Iterator[HttpServer]:
    with HttpServer() as server:
        yield server


def website(url: str, retries: int = 0) -> pb.Monitor:
    return pb.Monitor(
        spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=url)),
        interval=duration_pb2.Duration(seconds=1),
        timeout=duration_pb2.Duration(seconds=1),
        retries=retries,
    )


def hits(server: HttpServer, path: str) -> int:
    return sum(1 for _, p, _ in server.requests if p == path)


def test_a_runner_checks_reports_and_follows_changes(
    stack: Stack, stub: monitor_service_pb2_grpc.MonitorServiceStub, key: tuple[tuple[str, str]], target: HttpServer
) -> None:
    target.routes["/a"] = Reply(200, b"fine")
    target.routes["/b"] = Reply(200, b"fine too")
    runner = stack.runner("solo", **RUNNER_ENV)
    runner.start()
    try:
        monitor = stub.CreateMonitor(
            pb.CreateMonitorRequest(monitor=website(target.url("/a"), retries=1)), metadata=key, timeout=5
        ).monitor

        def status() -> pb.MonitorStatus:
            return stub.GetMonitorStatus(pb.GetMonitorStatusRequest(id=monitor.id), metadata=key, timeout=5).status

        def state_is(wanted: int) -> pb.MonitorStatus:
            found = eventually(lambda: (current := status()).state == wanted and current)
            assert isinstance(found, pb.MonitorStatus)
            return found

        up = state_is(common_pb2.MONITOR_STATE_UP)
        assert (up.runner_id, up.location, up.last_result.fields["status_code"]) == ("solo", "local", 200.0)
        points = eventually(
            lambda: (
                stub.QuerySamples(
                    pb.QuerySamplesRequest(monitor_id=monitor.id, field="response_time_ms"), metadata=key, timeout=5
                ).points
            )
        )
        assert all(p.value > 0 for p in points)

        target.routes["/a"] = Reply(503, b"down")
        down = state_is(common_pb2.MONITOR_STATE_DOWN)
        assert down.consecutive_failures >= 2  # retries=1: the second failure makes it DOWN
        assert down.last_result.error_class == common_pb2.ERROR_CLASS_STATUS

        stub.UpdateMonitor(
            pb.UpdateMonitorRequest(
                monitor=pb.Monitor(id=monitor.id, spec=website(target.url("/b")).spec),
                update_mask=field_mask_pb2.FieldMask(paths=["spec"]),
            ),
            metadata=key,
            timeout=5,
        )
        before = hits(target, "/b")
        eventually(lambda: hits(target, "/b") > before, timeout_s=3)  # the change reached the runner within ~1 s
        eventually(lambda: status().state == common_pb2.MONITOR_STATE_UP)

        stub.PauseMonitor(pb.PauseMonitorRequest(id=monitor.id), metadata=key, timeout=5)
        time.sleep(1.5)
        paused_at = hits(target, "/b")
        time.sleep(2.5)
        assert hits(target, "/b") == paused_at
        stub.ResumeMonitor(pb.ResumeMonitorRequest(id=monitor.id), metadata=key, timeout=5)
        eventually(lambda: hits(target, "/b") > paused_at, timeout_s=3)

        stub.DeleteMonitor(pb.DeleteMonitorRequest(id=monitor.id), metadata=key, timeout=5)
        time.sleep(1.5)
        deleted_at = hits(target, "/b")
        time.sleep(2.5)
        assert hits(target, "/b") == deleted_at
    finally:
        runner.stop()


def test_runners_share_monitors_and_take_over_from_a_dead_one(
    stack: Stack, stub: monitor_service_pb2_grpc.MonitorServiceStub, key: tuple[tuple[str, str]], target: HttpServer
) -> None:
    paths = [f"/shared/{i}" for i in range(20)]
    for path in paths:
        target.routes[path] = Reply(200, b"ok")
    runners = [stack.runner(name, **RUNNER_ENV) for name in ("east-1", "east-2")]
    for runner in runners:
        runner.start()
    try:
        ids = [
            stub.CreateMonitor(
                pb.CreateMonitorRequest(monitor=website(target.url(path))), metadata=key, timeout=5
            ).monitor.id
            for path in paths
        ]

        def deployment() -> pb.GetDeploymentStatusResponse:
            return stub.GetDeploymentStatus(pb.GetDeploymentStatusRequest(), metadata=key, timeout=5)

        shares = eventually(
            lambda: (
                {r.runner_id: r.assigned_monitors for r in deployment().runners}
                if len(deployment().runners) == 2
                else None
            )
        )
        assert shares is not None
        assert sum(shares.values()) == 20, shares
        assert all(shares.values()), shares
        assert deployment().unassigned_monitors == 0

        # Steady state: each monitor checked once a second by one runner, never twice.
        time.sleep(2)
        window_start = {path: hits(target, path) for path in paths}
        time.sleep(4)
        counts = {path: hits(target, path) - window_start[path] for path in paths}
        assert all(2 <= n <= 6 for n in counts.values()), counts
        owners = {
            monitor_id: stub.GetMonitorStatus(
                pb.GetMonitorStatusRequest(id=monitor_id), metadata=key, timeout=5
            ).status.runner_id
            for monitor_id in ids
        }
        assert collections.Counter(owners.values()) == collections.Counter(shares)

        runners[0].process.kill()  # type: ignore[union-attr]  # no goodbye: gRPC keepalive must notice
        survivor = runners[1].env["MONITORS_RUNNER_ID"]
        moved = eventually(
            lambda: [(r.runner_id, r.assigned_monitors) for r in deployment().runners] == [(survivor, 20)], timeout_s=20
        )
        assert moved
        checked_by_survivor = eventually(
            lambda: all(
                stub.GetMonitorStatus(pb.GetMonitorStatusRequest(id=i), metadata=key, timeout=5).status.runner_id
                == survivor
                for i in ids
            ),
            timeout_s=10,
        )
        assert checked_by_survivor
    finally:
        for runner in runners:
            runner.stop()
        for monitor_id in ids:
            stub.DeleteMonitor(pb.DeleteMonitorRequest(id=monitor_id), metadata=key, timeout=5)


def test_a_monitor_in_two_locations_is_down_only_when_a_quorum_of_them_sees_it_down(
    stack: Stack, stub: monitor_service_pb2_grpc.MonitorServiceStub, key: tuple[tuple[str, str]], target: HttpServer
) -> None:
    target.routes["/geo"] = Reply(503, b"down")
    east, west = (stack.runner(f"geo-{loc}", location=loc, **RUNNER_ENV) for loc in ("east", "west"))
    east.start()
    monitor = pb.Monitor(spec=website(target.url("/geo")).spec, locations=["east", "west"], quorum=2)
    monitor.interval.seconds = monitor.timeout.seconds = 1
    monitor_id = stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor), metadata=key, timeout=5).monitor.id

    def status() -> pb.MonitorStatus:
        return stub.GetMonitorStatus(pb.GetMonitorStatusRequest(id=monitor_id), metadata=key, timeout=5).status

    try:
        # East alone sees it down: one location of the two needed, so not DOWN.
        eventually(lambda: status().consecutive_failures >= 3)
        alone = status()
        assert alone.state == common_pb2.MONITOR_STATE_PENDING
        assert [(r.location, r.is_up) for r in alone.location_results] == [("east", False)]
        west.start()
        down = eventually(lambda: (s := status()).state == common_pb2.MONITOR_STATE_DOWN and s)
        assert isinstance(down, pb.MonitorStatus)
        assert sorted((r.location, r.is_up) for r in down.location_results) == [("east", False), ("west", False)]
        target.routes["/geo"] = Reply(200, b"ok")
        eventually(lambda: status().state == common_pb2.MONITOR_STATE_UP)
    finally:
        east.stop()
        west.stop()
        stub.DeleteMonitor(pb.DeleteMonitorRequest(id=monitor_id), metadata=key, timeout=5)


def test_results_for_monitors_a_runner_does_not_own_are_rejected(
    stack: Stack, stub: monitor_service_pb2_grpc.MonitorServiceStub, key: tuple[tuple[str, str]]
) -> None:
    token = stack.role_token("runner")
    forged = common_pb2.CheckResult(monitor_id="mon_not_yours", is_up=True)
    forged.check_time.GetCurrentTime()
    # A runner not watching its assignments (not yet, after a restart) is refused as a whole: it keeps the
    # results and sends them again once registered.
    with pytest.raises(grpc.RpcError) as caught:
        stub.ReportResults(
            iter([pb.ReportResultsRequest(runner_id="nobody", results=[forged])]), metadata=auth(token), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    watch = stub.WatchAssignments(
        pb.WatchAssignmentsRequest(runner_id="nobody", location="forgery-test"), metadata=auth(token)
    )
    try:
        assert next(watch).full_sync
        reply = stub.ReportResults(
            iter([pb.ReportResultsRequest(runner_id="nobody", results=[forged])]), metadata=auth(token), timeout=5
        )
    finally:
        watch.cancel()
    assert (reply.accepted, reply.rejected) == (0, 1)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListMonitors(pb.ListMonitorsRequest(), metadata=auth(token), timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # a runner's token is not a user


def test_runner_process_needs_the_runners_token(stack: Stack) -> None:
    impostor = ServiceProcess(
        "runner",
        {**stack.env, "MONITORS_RUNNER_TOKEN": "guessed", "MONITORS_RUNNER_ID": "impostor"},
        stack.data_dir / "runner-impostor.log",
    )
    with pytest.raises(RuntimeError, match="not healthy"):
        impostor.start(timeout_s=4)
    assert "PERMISSION_DENIED" in impostor.log_tail() or "UNAUTHENTICATED" in impostor.log_tail()


def test_the_runner_has_no_database_code_or_credentials_to_use() -> None:
    """A runner talks to MonitorService over gRPC only: it does not even import the storage layers."""
    probe = (
        "import sys, services.monitor_svc.runner.__main__\n"
        "print(sorted(m for m in ('sqlalchemy', 'pymysql', 'alembic', 'redis') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=python_env({}), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


async def test_an_idle_assignment_stream_outlives_the_runners_keepalive_pings(stack: Stack) -> None:
    """A gRPC server closes a connection whose client pings more often than its ping policy allows (GOAWAY
    too_many_pings; by default it expects one ping per 5 minutes without data), and the runner pings every
    10 s so that it notices a dead monitor service. Here a client with the runner's channel options, pinging
    every 5 s, holds an idle WatchAssignments stream for 30 s: under the default policy it was cut after
    about 20 s (measured; the runner itself was cut every 100 s and resynced). The stream must stay open."""
    token = stack.role_token("runner")
    options = [*(o for o in CHANNEL_OPTIONS if o[0] != "grpc.keepalive_time_ms"), ("grpc.keepalive_time_ms", 5_000)]
    async with grpc.aio.insecure_channel(stack.address("monitor"), options=options) as channel:
        call = monitor_service_pb2_grpc.MonitorServiceStub(channel).WatchAssignments(
            pb.WatchAssignmentsRequest(runner_id="pinger", location="keepalive-test"),
            metadata=(("authorization", f"Bearer {token}"),),
        )
        first = await call.read()
        assert isinstance(first, pb.WatchAssignmentsResponse)
        assert first.full_sync
        assert list(first.upserts) == []  # nobody's monitors are in this location: the stream stays idle
        # asyncio.wait leaves the read running when it times out (cancelling a read cancels the call).
        next_change = asyncio.ensure_future(call.read())
        finished, _ = await asyncio.wait({next_change}, timeout=30)
        assert not finished, (await call.code(), await call.details())
        assert not call.done()
        call.cancel()
        await asyncio.gather(next_change, return_exceptions=True)
