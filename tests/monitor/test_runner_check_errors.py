"""Whatever goes wrong inside a check, the check has a result: down, with an error class, never missing.

A target serving JSON nested deeper than the parser's recursion limit once made the JSON-path assertion raise
RecursionError: RunCheck answered INTERNAL, and a runner logged "check crashed" every interval and reported
nothing, so the monitor never went down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping

import grpc
import pytest
from google.protobuf import duration_pb2

from harness.http import HttpServer, Reply
from harness.rpc import auth
from harness.services import Stack
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc
from service_runtime.egress import EgressConfig, EgressPolicy
from services.monitor_svc.checks import CheckConfig, Checker
from services.monitor_svc.checks.outcome import Outcome
from services.monitor_svc.domain import JsonPathAssertion, Spec, WebsiteSpec
from services.monitor_svc.runner.scheduler import Job, Scheduler

pb = monitor_service_pb2
DEPTH = 100_000
NESTED = b"[" * DEPTH + b"]" * DEPTH
LOOPBACK = CheckConfig(egress=EgressConfig(policy=EgressPolicy.PRIVATE_ALLOWED))


@pytest.fixture(scope="module")
def target() -> Iterator[HttpServer]:
    with HttpServer() as server:
        server.routes["/nested"] = Reply(200, NESTED, {"content-type": "application/json"})
        # Shallow enough to parse, deep enough that writing it back out may not fit in what is left of the stack.
        server.routes["/deep-value"] = Reply(200, b'{"a": ' + b"[" * 950 + b"]" * 950 + b"}")
        yield server


def nested_json_spec(url: str) -> WebsiteSpec:
    return WebsiteSpec(url=url, json_path=JsonPathAssertion("$.a", "==", "1"))


async def test_deeply_nested_json_fails_the_json_path_assertion(target: HttpServer) -> None:
    checker = Checker(LOOPBACK)
    try:
        outcome = await checker.run(nested_json_spec(target.url("/nested")), 5)
        deep_value = await checker.run(nested_json_spec(target.url("/deep-value")), 5)
    finally:
        await checker.close()
    assert (outcome.is_up, outcome.error_class, outcome.message) == (
        False,
        "assertion",
        "body is JSON nested too deeply to read",
    )
    assert outcome.fields["status_code"] == 200
    assert (deep_value.is_up, deep_value.error_class) == (False, "assertion")


class BrokenChecker(Checker):
    """A checker with a bug: its check raises what no check expects."""

    async def _dispatch(self, spec: Spec, timeout_s: float, secrets: Mapping[str, str]) -> Outcome:
        raise ZeroDivisionError("a bug in a check")


async def test_an_unexpected_error_in_a_check_is_a_down_result_of_class_internal() -> None:
    checker = BrokenChecker()
    scheduler = Scheduler(checker)
    job = Job("mon_broken", WebsiteSpec(url="https://example.com/"), interval_s=60, timeout_s=1, secrets={})
    try:
        outcome = await checker.run(job.spec, 1)
        assert (outcome.is_up, outcome.error_class) == (False, "internal")
        assert outcome.message == "the check stopped on an unexpected error (ZeroDivisionError)"

        # A runner reports it like any failed check: the result is queued for the monitor service.
        scheduler.upsert(job)
        running = asyncio.create_task(scheduler.run_forever())
        try:
            async with asyncio.timeout(5):
                result = await scheduler.results.get()
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        assert (result.monitor_id, result.is_up, result.error_class) == ("mon_broken", False, "internal")
    finally:
        await scheduler.close()
        await checker.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = {"MONITORS_MIN_INTERVAL_S": "1", "MONITORS_EGRESS": "private-allowed"}
    with Stack(tmp_path_factory.mktemp("check-errors"), settings) as started:
        yield started


def test_a_target_serving_deeply_nested_json_is_down_through_a_runner_and_run_check(
    stack: Stack, target: HttpServer
) -> None:
    key = auth(stack.create_api_key("nested.json@example.com"))
    spec = common_pb2.MonitorSpec(
        website=common_pb2.WebsiteSpec(
            url=target.url("/nested"),
            json_path=common_pb2.JsonPathAssertion(
                path="$.a", operator=common_pb2.COMPARISON_OPERATOR_EQUAL, expected="1"
            ),
        )
    )
    with grpc.insecure_channel(stack.address("monitor")) as channel:
        stub = monitor_service_pb2_grpc.MonitorServiceStub(channel)
        tried = stub.RunCheck(pb.RunCheckRequest(spec=spec), metadata=key, timeout=15).result
        assert (tried.is_up, tried.error_class) == (False, common_pb2.ERROR_CLASS_ASSERTION)

        monitor = pb.Monitor(
            spec=spec, interval=duration_pb2.Duration(seconds=2), timeout=duration_pb2.Duration(seconds=2)
        )
        monitor_id = stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor), metadata=key, timeout=5).monitor.id
        runner = stack.runner("nested-json")
        runner.start()
        try:
            deadline = time.monotonic() + 20
            while True:
                status = stub.GetMonitorStatus(pb.GetMonitorStatusRequest(id=monitor_id), metadata=key, timeout=5)
                if status.status.state == common_pb2.MONITOR_STATE_DOWN or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert status.status.state == common_pb2.MONITOR_STATE_DOWN
            assert status.status.last_result.error_class == common_pb2.ERROR_CLASS_ASSERTION
        finally:
            runner.stop()
