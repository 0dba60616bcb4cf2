"""The monitor service on Kubernetes (MONITORS_RUNTIME=kubernetes): it scales each location's runner StatefulSet to
fit the location's monitors, and GetDeploymentStatus reports the runner pods (ready, restarts, location, monitors
assigned).

No Kubernetes API server runs here: the service talks to a stand-in (tests/harness/kubernetes_api.py), a real HTTP
server on a loopback port answering the API paths the client uses, fed with the StatefulSets the example overlay
renders. Every object the service sends is validated against the Kubernetes API schema with kubernetes-validate in
strict mode, as tests/test_k8s_manifests.py validates the manifests. A real monitor service (in this process, on
SQLite) and a fake runner connected over gRPC with the service token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from google.protobuf import duration_pb2

from monitors.v1 import common_pb2, monitor_service_pb2
from services.monitor_svc.domain import Monitor, WebsiteSpec
from services.monitor_svc.fleet.reconciler import wanted_runners
from tests.harness.kubernetes_api import KubernetesApi
from tests.harness.monitor_service import Metadata, Served, serve_monitors
from tests.test_k8s_manifests import KUBERNETES_VERSION, KUSTOMIZATIONS, of_kind, render

pb = monitor_service_pb2
PER_RUNNER = 2
MOST = 3


@pytest.fixture
def api() -> Iterator[KubernetesApi]:
    with KubernetesApi("monitors") as started:
        # The example overlay's runners: runner-default (3 replicas) and runner-eu-west (2).
        for stateful_set in of_kind(render(KUSTOMIZATIONS["overlay"]), "StatefulSet"):
            started.add_stateful_set(stateful_set)
        yield started


@pytest.fixture
async def served(api: KubernetesApi, tmp_path: Path) -> AsyncIterator[Served]:
    env = {
        "MONITORS_RUNTIME": "kubernetes",
        "MONITORS_KUBERNETES_API_URL": api.url,
        "MONITORS_KUBERNETES_NAMESPACE": "monitors",
        "MONITORS_MONITORS_PER_RUNNER": str(PER_RUNNER),
        "MONITORS_MAX_RUNNERS_PER_LOCATION": str(MOST),
    }
    async with serve_monitors(f"sqlite:///{tmp_path / 'monitors.sqlite3'}", tmp_path, env) as started:
        yield started


async def eventually(probe: Callable[[], Any], timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout_s}s: {value!r}")
        await asyncio.sleep(0.05)
    return value


async def create(served: Served, who: Metadata, *locations: str, paused: bool = False) -> str:
    monitor = pb.Monitor(
        spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url="https://example.com/")),
        interval=duration_pb2.Duration(seconds=30),
        locations=locations,
    )
    reply = await served.stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor), metadata=who, timeout=10)
    if paused:
        await served.stub.PauseMonitor(pb.PauseMonitorRequest(id=reply.monitor.id), metadata=who, timeout=10)
    return str(reply.monitor.id)


def verbs_used(api: KubernetesApi) -> set[tuple[str, str, str]]:
    """(API group, resource, RBAC verb) of each request sent to ``api``."""
    used = set()
    for request in api.requests:
        parts = request.path.strip("/").split("/")
        group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
        assert rest[0] == "namespaces", request.path
        resource, named_one = "/".join(rest[2:3] + rest[4:5]), len(rest) > 3
        verb = {"GET": "get" if named_one else "list", "POST": "create", "PATCH": "patch", "PUT": "update"}.get(
            request.method, "delete"
        )
        used.add((group, resource, verb))
    return used


def role_grants() -> set[tuple[str, str, str]]:
    """What the monitor service's Role in k8s/base grants."""
    (role,) = of_kind(render(KUSTOMIZATIONS["base"]), "Role")
    return {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }


def assert_valid_scale_patches(api: KubernetesApi) -> None:
    """Each scale patch is a Scale as the API's schema has it (a merge patch of the StatefulSet's scale)."""
    patches = api.sent("PATCH", "/scale")
    assert patches
    for patch in patches:
        kubernetes_validate.validate(
            {"apiVersion": "autoscaling/v1", "kind": "Scale", **patch.body}, KUBERNETES_VERSION, strict=True
        )
        assert set(patch.body) == {"spec"}


async def test_each_locations_runners_are_scaled_to_fit_its_monitors(served: Served, api: KubernetesApi) -> None:
    # No monitor yet: one runner per location (a location is always served).
    assert await eventually(lambda: api.replicas() == {"runner-default": 1, "runner-eu-west": 1})
    for _ in range(5):
        await create(served, served.alice, "eu-west")
    # 5 monitors at 2 per runner: 3.
    assert await eventually(lambda: api.replicas() == {"runner-default": 1, "runner-eu-west": 3})
    for _ in range(4):
        await create(served, served.bob, "eu-west")
    await create(served, served.bob, "default", paused=True)  # a paused monitor runs nowhere
    await asyncio.sleep(1.5)  # a pass after the burst: 9 monitors want 5 runners, the most is 3
    assert api.replicas() == {"runner-default": 1, "runner-eu-west": 3}
    # Monitors naming no location are shared out among the locations: 4 of them, 2 more in each; a pass that
    # finds every set at its size patches nothing.
    patches = len(api.sent("PATCH", "/scale"))
    for _ in range(4):
        await create(served, served.alice)
    await asyncio.sleep(1.5)
    assert api.replicas() == {"runner-default": 1, "runner-eu-west": 3}
    assert len(api.sent("PATCH", "/scale")) == patches
    for _ in range(2):
        await create(served, served.alice)
    assert await eventually(lambda: api.replicas() == {"runner-default": 2, "runner-eu-west": 3})
    listed = await served.stub.ListMonitors(pb.ListMonitorsRequest(), metadata=served.alice, timeout=10)
    for monitor in listed.monitors:
        await served.stub.DeleteMonitor(pb.DeleteMonitorRequest(id=monitor.id), metadata=served.alice, timeout=10)
    # Bob's 4 in eu-west remain.
    assert await eventually(lambda: api.replicas() == {"runner-default": 1, "runner-eu-west": 2})
    assert_valid_scale_patches(api)
    assert {r.query.get("labelSelector") for r in api.sent("GET", "/statefulsets")} == {"app.kubernetes.io/name=runner"}


async def test_an_api_outage_is_retried_and_never_reaches_the_monitor_api(served: Served, api: KubernetesApi) -> None:
    assert await eventually(lambda: api.replicas()["runner-eu-west"] == 1)
    api.failing = 503
    failed_before = len(api.requests)
    for _ in range(3):
        await create(served, served.alice, "eu-west")
    assert await eventually(lambda: len(api.requests) > failed_before)  # it tried, and was refused
    status = await served.stub.GetDeploymentStatus(pb.GetDeploymentStatusRequest(), metadata=served.service, timeout=10)
    assert list(status.runners) == []  # no pods listed, and still an answer
    api.failing = None
    # Retried without waiting for another change: 3 monitors at 2 per runner.
    assert await eventually(lambda: api.replicas()["runner-eu-west"] == 2)
    assert_valid_scale_patches(api)


async def test_deployment_status_lists_runner_pods_with_readiness_restarts_location_and_monitors(
    served: Served, api: KubernetesApi
) -> None:
    labels = {"app.kubernetes.io/name": "runner", "app.kubernetes.io/component": "runner"}
    api.add_pod("runner-eu-west-0", {**labels, "monitors/location": "eu-west"}, ready=True, restarts=0)
    api.add_pod("runner-eu-west-1", {**labels, "monitors/location": "eu-west"}, ready=False, restarts=4)
    api.add_pod("runner-default-0", {**labels, "monitors/location": "default"}, ready=True, restarts=1)
    mine = {await create(served, served.alice, "eu-west") for _ in range(2)}
    await create(served, served.bob, "default")
    assert await served.connect_runner("runner-eu-west-0", "eu-west") == mine
    await served.connect_runner("runner-default-0", "default")

    async def status(who: Metadata) -> list[tuple[str, str, bool, int, int, bool]]:
        reply = await served.stub.GetDeploymentStatus(pb.GetDeploymentStatusRequest(), metadata=who, timeout=10)
        return [
            (r.runner_id, r.location, r.ready, r.restarts, r.assigned_monitors, r.HasField("connect_time"))
            for r in reply.runners
        ]

    # The operator: every pod, connected or not (runner-eu-west-1 is not ready and has restarted 4 times).
    assert await status(served.service) == [
        ("runner-default-0", "default", True, 1, 1, True),
        ("runner-eu-west-0", "eu-west", True, 0, 2, True),
        ("runner-eu-west-1", "eu-west", False, 4, 0, False),
    ]
    # A user: the runners that check their monitors, with their pods' state.
    assert await status(served.alice) == [("runner-eu-west-0", "eu-west", True, 0, 2, True)]
    # The Role in k8s/base grants exactly the verbs of the calls made (the fleet's first pass scales both sets).
    assert await eventually(lambda: api.replicas() == {"runner-default": 1, "runner-eu-west": 1})
    assert verbs_used(api) == role_grants()
    pods_listed = api.sent("GET", "/pods")
    assert pods_listed
    assert {r.query["labelSelector"] for r in pods_listed} == {"app.kubernetes.io/name=runner"}


def test_monitors_naming_no_location_are_shared_among_the_locations() -> None:
    def monitor(*locations: str, paused: bool = False) -> Monitor:
        at = datetime(2001, 1, 1, tzinfo=UTC)
        spec = WebsiteSpec(url="https://example.com/")
        return Monitor("m", "u", "", spec, timedelta(60), timedelta(10), 0, locations, 0, paused, {}, "", at, at)

    monitors = [monitor("a")] * 3 + [monitor()] * 4 + [monitor("b", paused=True)] * 9
    assert wanted_runners(monitors, ["a", "b"], per_runner=2, most=10) == {"a": 3, "b": 1}
    assert wanted_runners([], ["a"], per_runner=2, most=10) == {"a": 1}
    assert wanted_runners([monitor("a")] * 100, ["a"], per_runner=2, most=10) == {"a": 10}
