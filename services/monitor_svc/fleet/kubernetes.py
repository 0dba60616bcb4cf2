"""The runner platform on Kubernetes (MONITORS_RUNTIME=kubernetes), through the Kubernetes API with the official
client's asyncio flavour (``kubernetes.aio``).

Each location's runners are a StatefulSet labelled ``app.kubernetes.io/name: runner`` and ``monitors/location``
(k8s/runner); their pods carry the same labels, and each pod's name is its runner's id. The service account
needs exactly the verbs k8s/base/monitor-rbac.yaml grants: list pods and StatefulSets, patch StatefulSets' scale.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TypeVar

import aiohttp
from kubernetes.aio.client import ApiClient, AppsV1Api, Configuration, CoreV1Api, V1Pod, V1Scale, V1ScaleSpec
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.config import ConfigException, load_incluster_config

from service_runtime.settings import Settings, StartupError
from services.monitor_svc.fleet.port import PlatformError, RunnerPod, RunnerSet

T = TypeVar("T")

RUNNER_SELECTOR = "app.kubernetes.io/name=runner"
LOCATION_LABEL = "monitors/location"
# Every API call's timeout: a pass of the reconciler makes a few, and GetDeploymentStatus waits for one.
API_TIMEOUT_S = 10.0
# Where Kubernetes tells a pod its namespace (beside the service account's token).
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def open_kubernetes_runners(settings: Settings) -> KubernetesRunners:
    """The platform ``settings`` name: MONITORS_KUBERNETES_API_URL (such as ``kubectl proxy``'s address) or else
    the pod's own service account; MONITORS_KUBERNETES_NAMESPACE or else the pod's namespace. Raises
    :class:`StartupError` outside a pod when no API URL is set."""
    configuration = Configuration()
    if settings.kubernetes_api_url:
        configuration.host = settings.kubernetes_api_url
    else:
        try:
            load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except ConfigException as error:
            raise StartupError(
                f"MONITORS_RUNTIME=kubernetes needs the pod's service account or MONITORS_KUBERNETES_API_URL: {error}"
            ) from None
    namespace = settings.kubernetes_namespace
    if not namespace:
        if not NAMESPACE_FILE.is_file():
            raise StartupError("MONITORS_RUNTIME=kubernetes outside a pod needs MONITORS_KUBERNETES_NAMESPACE")
        namespace = NAMESPACE_FILE.read_text().strip()
    return KubernetesRunners(ApiClient(configuration), namespace)


def _pod(pod: V1Pod) -> RunnerPod:
    metadata, status = pod.metadata, pod.status
    labels = (metadata.labels if metadata else None) or {}
    conditions = (status.conditions if status else None) or []
    containers = (status.container_statuses if status else None) or []
    return RunnerPod(
        name=(metadata.name if metadata else None) or "",
        location=labels.get(LOCATION_LABEL, ""),
        ready=any(c.type == "Ready" and c.status == "True" for c in conditions),
        restarts=sum(c.restart_count for c in containers),
    )


class KubernetesRunners:
    """Runner pods and StatefulSets in one namespace."""

    def __init__(self, api: ApiClient, namespace: str, timeout_s: float = API_TIMEOUT_S) -> None:
        self._api = api
        self._core = CoreV1Api(api)
        self._apps = AppsV1Api(api)
        self.namespace = namespace
        self._timeout_s = timeout_s

    async def _call(self, call: Awaitable[T], what: str) -> T:
        try:
            # The client's own timeout bounds the request; this one bounds everything around it too.
            async with asyncio.timeout(self._timeout_s):
                return await call
        except ApiException as error:
            raise PlatformError(f"{what}: the Kubernetes API answered {error.status} {error.reason}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise PlatformError(f"{what}: the Kubernetes API did not answer ({error!r})") from None

    async def runner_pods(self) -> Sequence[RunnerPod]:
        found = await self._call(
            self._core.list_namespaced_pod(
                self.namespace, label_selector=RUNNER_SELECTOR, _request_timeout=self._timeout_s
            ),
            "listing runner pods",
        )
        return [_pod(pod) for pod in found.items]

    async def runner_sets(self) -> Sequence[RunnerSet]:
        found = await self._call(
            self._apps.list_namespaced_stateful_set(
                self.namespace, label_selector=RUNNER_SELECTOR, _request_timeout=self._timeout_s
            ),
            "listing runner StatefulSets",
        )
        sets = []
        for item in found.items:
            labels = (item.metadata.labels if item.metadata else None) or {}
            name = item.metadata.name if item.metadata else None
            if name and LOCATION_LABEL in labels:
                replicas = item.spec.replicas if item.spec and item.spec.replicas is not None else 1
                sets.append(RunnerSet(name, labels[LOCATION_LABEL], replicas))
        return sets

    async def scale(self, runner_set: RunnerSet, replicas: int) -> None:
        await self._call(
            self._apps.patch_namespaced_stateful_set_scale(
                runner_set.name,
                self.namespace,
                V1Scale(spec=V1ScaleSpec(replicas=replicas)),
                _content_type="application/merge-patch+json",
                _request_timeout=self._timeout_s,
            ),
            f"scaling {runner_set.name}",
        )

    async def close(self) -> None:
        await self._api.close()  # type: ignore[no-untyped-call]
