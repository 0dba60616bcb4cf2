"""The monitor service on Kubernetes (MONITORS_RUNTIME=kubernetes): it scales each location's runner StatefulSet to
fit the location's monitors, and GetDeploymentStatus reports the runner pods (ready, restarts, location, monitors
assigned).

No Kubernetes API server runs here: the service talks to a stand-in (harness/kubernetes_api.py), a real HTTP
server on a loopback port answering the API paths the client uses, fed with the StatefulSets the example overlay
renders. Every object the service sends is validated against the Kubernetes API schema with kubernetes-validate in
strict mode, as tests/system/test_k8s_manifests.py validates the manifests. A real monitor service (in this process, on
SQLite) and a fake runner connected over gRPC with the runners' token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from google.rpc import error_details_pb2

from harness.http import HttpServer, Reply
from harness.k8s import KUBERNETES_VERSION, KUSTOMIZATIONS, container_env, of_kind, render
from harness.kubernetes_api import KubernetesApi
from harness.monitor_service import Metadata, Served, serve_monitors
from harness.rpc import rich_details
from harness.services import ServiceProcess, python_env
from monitors.v1 import common_pb2, monitor_service_pb2
from service_runtime.settings import Settings
from services import doctor
from services.monitor_svc.domain import Monitor, WebsiteSpec
from services.monitor_svc.fleet.kubernetes import dedicated_name, open_kubernetes_runners
from services.monitor_svc.fleet.reconciler import DESCRIBE_TIMEOUT_S, POD_LISTING_TTL_S, RunnerFleet, wanted_runners
from services.monitor_svc.runner.client import job_of, mounted_secrets
from services.monitor_svc.runner.settings import RunnerSettings

pb = monitor_service_pb2
PER_RUNNER = 2
MOST = 3
DEDICATED_MOST = 2
DIGEST = "monitors/runner-digest"


@pytest.fixture
def api() -> Iterator[KubernetesApi]:
    with KubernetesApi("monitors") as started:
        # The example overlay's StatefulSets: runner-default (3 replicas), runner-eu-west (2), and the monitor
        # service's own (2), which it must leave alone.
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
        "MONITORS_MAX_DEDICATED_PER_USER": str(DEDICATED_MOST),
    }
    async with serve_monitors(f"sqlite:///{tmp_path / 'monitors.sqlite3'}", tmp_path, env) as started:
        # The fleet's first pass: it scales both sets (no monitor yet) and makes their locations known.
        await eventually(lambda: runner_replicas(api) == {"runner-default": 1, "runner-eu-west": 1})
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


def runner_replicas(api: KubernetesApi) -> dict[str, int]:
    """The replicas of the runners' StatefulSets in ``api``."""
    return {name: replicas for name, replicas in api.replicas().items() if name.startswith("runner-")}


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
    assert await eventually(lambda: runner_replicas(api) == {"runner-default": 1, "runner-eu-west": 1})
    for _ in range(5):
        await create(served, served.alice, "eu-west")
    # 5 monitors at 2 per runner: 3.
    assert await eventually(lambda: runner_replicas(api) == {"runner-default": 1, "runner-eu-west": 3})
    for _ in range(4):
        await create(served, served.bob, "eu-west")
    await create(served, served.bob, "default", paused=True)  # a paused monitor runs nowhere
    await asyncio.sleep(1.5)  # a pass after the burst: 9 monitors want 5 runners, the most is 3
    assert runner_replicas(api) == {"runner-default": 1, "runner-eu-west": 3}
    # Monitors naming no location are shared out among the locations: 4 of them, 2 more in each; a pass that
    # finds every set at its size patches nothing.
    patches = len(api.sent("PATCH", "/scale"))
    for _ in range(4):
        await create(served, served.alice)
    await asyncio.sleep(1.5)
    assert runner_replicas(api) == {"runner-default": 1, "runner-eu-west": 3}
    assert len(api.sent("PATCH", "/scale")) == patches
    for _ in range(2):
        await create(served, served.alice)
    assert await eventually(lambda: runner_replicas(api) == {"runner-default": 2, "runner-eu-west": 3})
    listed = await served.stub.ListMonitors(pb.ListMonitorsRequest(), metadata=served.alice, timeout=10)
    for monitor in listed.monitors:
        await served.stub.DeleteMonitor(pb.DeleteMonitorRequest(id=monitor.id), metadata=served.alice, timeout=10)
    # Bob's 4 in eu-west remain.
    assert await eventually(lambda: runner_replicas(api) == {"runner-default": 1, "runner-eu-west": 2})
    assert_valid_scale_patches(api)
    assert {r.query.get("labelSelector") for r in api.sent("GET", "/statefulsets")} == {"app.kubernetes.io/name=runner"}
    # The monitor service's own StatefulSet is not a location: never scaled by it.
    assert api.replicas()["monitor"] == 2
    assert not api.sent("PATCH", "/statefulsets/monitor/scale")


async def test_an_api_outage_is_retried_and_never_reaches_the_monitor_api(served: Served, api: KubernetesApi) -> None:
    assert await eventually(lambda: runner_replicas(api)["runner-eu-west"] == 1)
    api.failing = 503
    failed_before = len(api.requests)
    for _ in range(3):
        await create(served, served.alice, "eu-west")
    assert await eventually(lambda: len(api.requests) > failed_before)  # it tried, and was refused
    status = await served.stub.GetDeploymentStatus(
        pb.GetDeploymentStatusRequest(), metadata=served.operator, timeout=10
    )
    assert list(status.runners) == []  # no pods listed, and still an answer
    api.failing = None
    # Retried without waiting for another change: 3 monitors at 2 per runner.
    assert await eventually(lambda: runner_replicas(api)["runner-eu-west"] == 2)
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
    assert await status(served.operator) == [
        ("runner-default-0", "default", True, 1, 1, True),
        ("runner-eu-west-0", "eu-west", True, 0, 2, True),
        ("runner-eu-west-1", "eu-west", False, 4, 0, False),
    ]
    # A user: the runners that check their monitors, with their pods' state.
    assert await status(served.alice) == [("runner-eu-west-0", "eu-west", True, 0, 2, True)]
    # The Role in k8s/base grants the verbs of the calls made (the fleet's first pass scales both sets).
    assert await eventually(lambda: runner_replicas(api) == {"runner-default": 1, "runner-eu-west": 1})
    assert verbs_used(api) <= role_grants()
    pods_listed = api.sent("GET", "/pods")
    assert pods_listed
    assert {r.query["labelSelector"] for r in pods_listed} == {"app.kubernetes.io/name=runner"}


def monitor(*locations: str, paused: bool = False, monitor_id: str = "m") -> Monitor:
    at = datetime(2001, 1, 1, tzinfo=UTC)
    spec = WebsiteSpec(url="https://example.com/")
    return Monitor(monitor_id, "u", "", spec, timedelta(60), timedelta(10), 0, locations, 0, paused, {}, "", at, at)


def test_monitors_naming_no_location_are_shared_among_the_locations() -> None:
    monitors = [monitor("a")] * 3 + [monitor()] * 4 + [monitor("b", paused=True)] * 9
    assert wanted_runners(monitors, ["a", "b"], per_runner=2, most=10) == {"a": 3, "b": 1}
    assert wanted_runners([], ["a"], per_runner=2, most=10) == {"a": 1}
    assert wanted_runners([monitor("a")] * 100, ["a"], per_runner=2, most=10) == {"a": 10}


def dedicated(url: str, *locations: str) -> pb.Monitor:
    return pb.Monitor(
        spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=url)),
        interval=duration_pb2.Duration(seconds=1),
        timeout=duration_pb2.Duration(seconds=1),
        locations=locations,
        placement=pb.PLACEMENT_DEDICATED,
    )


async def test_a_dedicated_monitor_gets_a_runner_deployment_and_a_secret_of_its_own_which_go_with_it(
    served: Served, api: KubernetesApi
) -> None:
    alice = served.alice
    await served.stub.PutSecret(pb.PutSecretRequest(name="TOKEN", value="first"), metadata=alice, timeout=10)
    created = await served.stub.CreateMonitor(
        pb.CreateMonitorRequest(monitor=dedicated("https://example.com/?t={{secret:TOKEN}}", "eu-west")),
        metadata=alice,
        timeout=10,
    )
    monitor_id = created.monitor.id
    assert created.monitor.placement == pb.PLACEMENT_DEDICATED
    name = dedicated_name(monitor_id)
    assert await eventually(lambda: name in api.deployments and name in api.secrets)
    overlay = render(KUSTOMIZATIONS["overlay"])
    (posted_deployment,) = [r.body for r in api.sent("POST", "/deployments")]
    (posted_secret,) = [r.body for r in api.sent("POST", "/secrets")]
    for manifest in (posted_deployment, posted_secret):
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    assert posted_secret["stringData"] == {"TOKEN": "first"}
    assert posted_secret["immutable"] is True

    # The pod: the eu-west runners' template, with the monitor's id, its location and its mounted secrets.
    pod = posted_deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    (policy,) = of_kind(overlay, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()  # runner-egress holds it
    for selecting in of_kind(overlay, "StatefulSet", "PodDisruptionBudget"):
        assert not selecting["spec"]["selector"]["matchLabels"].items() <= labels.items(), selecting["metadata"]
    for service in of_kind(overlay, "Service"):
        assert not service["spec"].get("selector", {"-": "-"}).items() <= labels.items(), service["metadata"]
    assert posted_deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    runner = RunnerSettings.from_env(container_env([*overlay, posted_deployment], posted_deployment, container))
    assert (runner.monitor_id, runner.location) == (monitor_id, "eu-west")
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(runner.secrets_dir)]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == posted_secret["metadata"]["name"] == name
    eu_west = next(s for s in overlay if s["kind"] == "StatefulSet" and s["metadata"]["name"] == "runner-eu-west")
    assert container["image"] == eu_west["spec"]["template"]["spec"]["containers"][0]["image"]

    # Its own runner alone checks it, without secrets over the wire (it reads them from the mount); the location's
    # runners neither check it nor are scaled for it.
    assert await served.connect_runner("runner-eu-west-0", "eu-west") == set()
    (assignment,) = await served.connect_runner_for_assignments(f"{name}-7d9c-x2x4", "eu-west", monitor_id)
    assert assignment.monitor.id == monitor_id
    assert dict(assignment.secrets) == {}
    assert runner_replicas(api)["runner-eu-west"] == 1
    api.add_pod(f"{name}-7d9c-x2x4", labels, ready=True, restarts=2)
    status = await served.stub.GetDeploymentStatus(pb.GetDeploymentStatusRequest(), metadata=alice, timeout=10)
    assert [(r.runner_id, r.location, r.ready, r.restarts, r.assigned_monitors) for r in status.runners] == [
        (f"{name}-7d9c-x2x4", "eu-west", True, 2, 1)
    ]
    assert list(status.locations) == ["eu-west"]  # a dedicated runner serves no location for other monitors
    assert status.unassigned_monitors == 0

    # New values of its secrets: a new Secret and a new pod (the old ones deleted first).
    digest = api.deployments[name]["metadata"]["annotations"][DIGEST]
    await served.stub.PutSecret(pb.PutSecretRequest(name="TOKEN", value="second"), metadata=alice, timeout=10)
    assert await eventually(lambda: api.secrets.get(name, {}).get("stringData") == {"TOKEN": "second"})

    def digest_now() -> str:
        return str(api.deployments.get(name, {}).get("metadata", {}).get("annotations", {}).get(DIGEST, ""))

    assert await eventually(lambda: digest_now() not in ("", digest))
    assert "second" not in str(api.deployments[name])

    # Paused, it has no runner; resumed, it has one again; deleted, both go with it.
    await served.stub.PauseMonitor(pb.PauseMonitorRequest(id=monitor_id), metadata=alice, timeout=10)
    assert await eventually(lambda: not api.deployments and not api.secrets)
    await served.stub.ResumeMonitor(pb.ResumeMonitorRequest(id=monitor_id), metadata=alice, timeout=10)
    assert await eventually(lambda: name in api.deployments and name in api.secrets)
    await served.stub.DeleteMonitor(pb.DeleteMonitorRequest(id=monitor_id), metadata=alice, timeout=10)
    assert await eventually(lambda: not api.deployments and not api.secrets)
    for manifest in [r.body for r in api.sent("POST")]:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    # Every verb the Role in k8s/base grants was used, and no other.
    assert verbs_used(api) == role_grants()


async def test_dedicated_placement_is_refused_where_it_cannot_be_honoured(served: Served, api: KubernetesApi) -> None:
    async def refused(monitor: pb.Monitor) -> tuple[grpc.StatusCode, list[object]]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await served.stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor), metadata=served.bob, timeout=10)
        return caught.value.code(), rich_details(caught.value)

    def fields(details: list[object]) -> list[str]:
        return [v.field for d in details if isinstance(d, error_details_pb2.BadRequest) for v in d.field_violations]

    code, details = await refused(dedicated("https://example.com/", "eu-west", "default"))
    assert (code, fields(details)) == (grpc.StatusCode.INVALID_ARGUMENT, ["monitor.locations"])
    heartbeat = pb.Monitor(
        spec=common_pb2.MonitorSpec(heartbeat=common_pb2.HeartbeatSpec()), placement=pb.PLACEMENT_DEDICATED
    )
    code, details = await refused(heartbeat)
    assert (code, fields(details)) == (grpc.StatusCode.INVALID_ARGUMENT, ["monitor.placement"])
    code, details = await refused(pb.Monitor(spec=heartbeat.spec, placement=7))  # type: ignore[arg-type]
    assert (code, fields(details)) == (grpc.StatusCode.INVALID_ARGUMENT, ["monitor.placement"])
    for _ in range(DEDICATED_MOST):
        await served.stub.CreateMonitor(
            pb.CreateMonitorRequest(monitor=dedicated("https://example.com/")), metadata=served.bob, timeout=10
        )
    code, details = await refused(dedicated("https://example.com/"))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [d.metadata["limit"] for d in details if isinstance(d, error_details_pb2.ErrorInfo)] == [
        "dedicated_monitors_per_user"
    ]
    # A shared monitor is not counted, and placement cannot change.
    shared = await served.stub.CreateMonitor(
        pb.CreateMonitorRequest(monitor=pb.Monitor(spec=heartbeat.spec)), metadata=served.bob, timeout=10
    )
    assert shared.monitor.placement == pb.PLACEMENT_SHARED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.UpdateMonitor(
            pb.UpdateMonitorRequest(
                monitor=pb.Monitor(id=shared.monitor.id, placement=pb.PLACEMENT_DEDICATED),
                update_mask=field_mask_pb2.FieldMask(paths=["placement"]),
            ),
            metadata=served.bob,
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_without_kubernetes_no_monitor_may_ask_for_a_dedicated_runner(tmp_path: Path) -> None:
    async with serve_monitors(f"sqlite:///{tmp_path / 'monitors.sqlite3'}", tmp_path) as served:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await served.stub.CreateMonitor(
                pb.CreateMonitorRequest(monitor=dedicated("https://example.com/")), metadata=served.alice, timeout=10
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "MONITORS_RUNTIME=kubernetes" in str(caught.value.details())


async def test_a_dedicated_runner_checks_its_monitor_with_the_secrets_mounted_in_its_pod(
    served: Served, api: KubernetesApi, tmp_path: Path
) -> None:
    """A real runner process, started as the Deployment's pod would be (its settings from the posted Deployment),
    with the Secret's values as files in a directory, as a Secret volume lays them out."""
    await served.stub.PutSecret(pb.PutSecretRequest(name="TOKEN", value="mounted"), metadata=served.alice, timeout=10)
    with HttpServer() as target:
        target.routes["/"] = Reply(200, b"ok")
        url = target.url("/") + "?t={{secret:TOKEN}}"
        created = await served.stub.CreateMonitor(
            pb.CreateMonitorRequest(monitor=dedicated(url, "eu-west")), metadata=served.alice, timeout=10
        )
        monitor_id = created.monitor.id
        name = dedicated_name(monitor_id)
        assert await eventually(lambda: name in api.secrets)
        mount = tmp_path / "secrets"
        (mount / "..2041_01_01_00_00_00.1").mkdir(parents=True)  # what a Secret volume keeps beside its files
        for key, value in api.secrets[name]["stringData"].items():
            (mount / key).write_text(value)
        runner = ServiceProcess(
            "runner",
            python_env(
                {
                    "MONITORS_DATA_DIR": str(tmp_path),
                    "MONITORS_MONITOR_TARGET": f"127.0.0.1:{served.port}",
                    "MONITORS_RUNNER_TOKEN": served.settings.role_token("runner"),
                    "MONITORS_EGRESS": "private-allowed",
                    "MONITORS_RUNNER_ID": f"{name}-abc",
                    "MONITORS_RUNNER_LOCATION": "eu-west",
                    "MONITORS_RUNNER_MONITOR_ID": monitor_id,
                    "MONITORS_RUNNER_SECRETS_DIR": str(mount),
                }
            ),
            tmp_path / "runner.log",
        )
        await asyncio.to_thread(runner.start)
        try:
            assert await eventually(lambda: any("t=mounted" in path for _, path, _ in target.requests))
        finally:
            await asyncio.to_thread(runner.stop)


async def test_deployment_status_calls_share_one_pod_listing_and_wait_for_a_slow_api_briefly(
    served: Served, api: KubernetesApi
) -> None:
    """Any user may call GetDeploymentStatus: a burst of calls lists the pods once, not once each, and an API that
    does not answer holds no call longer than a few seconds."""
    labels = {"app.kubernetes.io/name": "runner", "monitors/location": "eu-west"}
    api.add_pod("runner-eu-west-0", labels, ready=True, restarts=0)
    request = pb.GetDeploymentStatusRequest()
    listed = len(api.sent("GET", "/pods"))
    replies = await asyncio.gather(
        *(served.stub.GetDeploymentStatus(request, metadata=served.operator, timeout=10) for _ in range(20))
    )
    assert {tuple(r.runner_id for r in reply.runners) for reply in replies} == {("runner-eu-west-0",)}
    assert len(api.sent("GET", "/pods")) - listed == 1
    await asyncio.sleep(POD_LISTING_TTL_S)
    api.delay_s = 30.0
    started = time.monotonic()
    reply = await served.stub.GetDeploymentStatus(request, metadata=served.operator, timeout=20)
    assert time.monotonic() - started < DESCRIBE_TIMEOUT_S + 1.0
    assert list(reply.runners) == []  # no runner is connected, and no pod was listed in time


async def test_a_dedicated_runner_cut_short_halfway_is_finished_by_a_later_pass(
    served: Served, api: KubernetesApi
) -> None:
    """The Secret was made and the Deployment refused: later passes replace the Secret they find (its values may be
    old) and make the Deployment once the API takes it."""
    api.refused["POST /apis/apps/v1/namespaces/monitors/deployments"] = 500
    created = await served.stub.CreateMonitor(
        pb.CreateMonitorRequest(monitor=dedicated("https://example.com/", "eu-west")), metadata=served.alice, timeout=10
    )
    name = dedicated_name(created.monitor.id)
    assert await eventually(lambda: len(api.sent("POST", "/deployments")) >= 2)  # refused, and tried again
    assert name in api.secrets
    assert api.sent("DELETE", f"/secrets/{name}")  # the one found was replaced
    del api.refused["POST /apis/apps/v1/namespaces/monitors/deployments"]
    assert await eventually(lambda: name in api.deployments)
    assert list(api.secrets) == [name]


async def test_a_dedicated_runner_made_meanwhile_by_another_replica_is_kept(served: Served, api: KubernetesApi) -> None:
    """Its Deployment's creation answers 409 (another replica's pass made it since this one listed them): it stays,
    not deleted and made again (which would restart its pod), and the pass does not fail over it."""
    api.refused["POST /apis/apps/v1/namespaces/monitors/deployments"] = 409
    await served.stub.CreateMonitor(
        pb.CreateMonitorRequest(monitor=dedicated("https://example.com/", "eu-west")), metadata=served.alice, timeout=10
    )
    assert await eventually(lambda: api.sent("POST", "/deployments"))
    await asyncio.sleep(2.5)  # a failed pass would have been retried within this
    assert api.sent("DELETE", "/deployments/" + api.sent("POST", "/deployments")[0].body["metadata"]["name"]) == []
    assert len(api.sent("POST", "/deployments")) == 1


def test_a_dedicated_runner_reads_its_secrets_as_a_secret_volume_lays_them_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each key a link into the volume's ``..data`` directory (the kubelet swaps it atomically on an update)."""
    data = tmp_path / "..2041_01_01_00_00_00.000000001"
    data.mkdir()
    (data / "TOKEN").write_text("s3cret")
    (data / "OTHER").write_text("x")
    (tmp_path / "..data").symlink_to(data.name)
    for key in ("TOKEN", "OTHER"):
        (tmp_path / key).symlink_to(f"..data/{key}")
    assert mounted_secrets(tmp_path) == {"TOKEN": "s3cret", "OTHER": "x"}
    assignment = pb.Assignment(monitor=pb.Monitor(id="mon_1", spec=common_pb2.MonitorSpec(tcp=common_pb2.TcpSpec())))
    job = job_of(assignment, mounted_secrets(tmp_path))
    assert job is not None
    assert job.secrets == {"TOKEN": "s3cret", "OTHER": "x"}
    # A volume that is not there: logged, and the runner goes on (checks needing a secret then say it is not set).
    assert mounted_secrets(tmp_path / "absent") == {}
    assert "mounted secrets not read" in caplog.text


async def test_doctor_says_what_the_kubernetes_api_answers_the_service_account(
    api: KubernetesApi, tmp_path: Path
) -> None:
    env = {
        "MONITORS_DATA_DIR": str(tmp_path),
        "MONITORS_RUNTIME": "kubernetes",
        "MONITORS_KUBERNETES_API_URL": api.url,
        "MONITORS_KUBERNETES_NAMESPACE": "monitors",
    }
    api.add_pod("runner-eu-west-0", {"app.kubernetes.io/name": "runner", "monitors/location": "eu-west"}, True, 0)
    api.add_pod("runner-eu-west-1", {"app.kubernetes.io/name": "runner", "monitors/location": "eu-west"}, False, 3)
    findings = {f.check: f for f in await doctor.examine(env)}
    assert (findings["kubernetes"].outcome, findings["kubernetes"].detail) == (
        "ok",
        "namespace monitors: runners in default (3), eu-west (2); 2 runner pods, 1 ready; 0 dedicated",
    )
    api.failing = 403  # a Role without the verbs
    finding = await doctor.kubernetes_runners(Settings.from_env("monitor", env))
    assert finding.outcome == "FAIL"
    assert "answered 403" in finding.detail
    api.failing = None
    api.stateful_sets.clear()
    finding = await doctor.kubernetes_runners(Settings.from_env("monitor", env))
    assert (finding.outcome, finding.detail) == (
        "FAIL",
        "namespace monitors: no runner StatefulSet (labelled app.kubernetes.io/name=runner) to scale",
    )
    del env["MONITORS_RUNTIME"]
    assert "kubernetes" not in {f.check for f in await doctor.examine(env)}


async def test_a_dedicated_monitor_moved_to_another_location_gets_its_runner_there(
    served: Served, api: KubernetesApi
) -> None:
    created = await served.stub.CreateMonitor(
        pb.CreateMonitorRequest(monitor=dedicated("https://example.com/", "eu-west")), metadata=served.alice, timeout=10
    )
    name = dedicated_name(created.monitor.id)

    def location() -> str:
        labels = api.deployments.get(name, {}).get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
        return str(labels.get("monitors/dedicated-location", ""))

    assert await eventually(lambda: location() == "eu-west")
    await served.stub.UpdateMonitor(
        pb.UpdateMonitorRequest(
            monitor=pb.Monitor(id=created.monitor.id, locations=["default"]),
            update_mask=field_mask_pb2.FieldMask(paths=["locations"]),
        ),
        metadata=served.alice,
        timeout=10,
    )
    assert await eventually(lambda: location() == "default")
    (container,) = api.deployments[name]["spec"]["template"]["spec"]["containers"]
    assert {"name": "MONITORS_RUNNER_LOCATION", "value": "default"} in container["env"]


async def test_changes_made_while_the_monitors_are_first_read_are_not_lost(api: KubernetesApi) -> None:
    """The first pass reads every monitor; five created meanwhile (their notices come during the read, which
    began before them) count too."""
    reading, read = asyncio.Event(), asyncio.Event()

    async def load_monitors() -> list[Monitor]:
        reading.set()
        await read.wait()
        return []

    async def no_secrets(_: Monitor) -> dict[str, str]:
        return {}

    settings = Settings.from_env(
        "monitor",
        {
            "MONITORS_RUNTIME": "kubernetes",
            "MONITORS_KUBERNETES_API_URL": api.url,
            "MONITORS_KUBERNETES_NAMESPACE": "monitors",
        },
    )
    fleet = RunnerFleet(open_kubernetes_runners(settings), load_monitors, no_secrets, b"key", 2, 3)
    try:
        first_pass = asyncio.create_task(fleet.reconcile())
        await reading.wait()
        for i in range(5):
            await fleet.monitor_changed(f"m{i}", monitor("eu-west", monitor_id=f"m{i}"))
        read.set()
        await first_pass
        assert runner_replicas(api) == {"runner-default": 1, "runner-eu-west": 3}
    finally:
        await fleet.platform.close()


async def test_a_dedicated_monitor_keeps_to_one_location_when_updated(served: Served, api: KubernetesApi) -> None:
    created = await served.stub.CreateMonitor(
        pb.CreateMonitorRequest(monitor=dedicated("https://example.com/", "eu-west")), metadata=served.alice, timeout=10
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.UpdateMonitor(
            pb.UpdateMonitorRequest(
                monitor=pb.Monitor(id=created.monitor.id, locations=["eu-west", "default"]),
                update_mask=field_mask_pb2.FieldMask(paths=["locations"]),
            ),
            metadata=served.alice,
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = [d for d in rich_details(caught.value) if isinstance(d, error_details_pb2.BadRequest)]
    assert [v.field for d in violations for v in d.field_violations] == ["monitor.locations"]
