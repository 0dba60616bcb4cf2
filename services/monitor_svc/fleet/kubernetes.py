"""The runner platform on Kubernetes (MONITORS_RUNTIME=kubernetes), through the Kubernetes API with the official
client's asyncio flavour (``kubernetes.aio``).

Each location's runners are a StatefulSet labelled ``app.kubernetes.io/name: runner`` and ``monitors/location``
(k8s/runner); their pods carry the same labels, and each pod's name is its runner's id.

A dedicated monitor's runner is a Deployment of one pod named ``runner-<monitor id>``, made from the pod template
of its location's StatefulSet (so image, settings, probes, limits and security context are the operator's), with
the monitor's secrets in a Secret of the same name mounted at SECRETS_DIR. Its pods keep the runner label (the
NetworkPolicy runner-egress holds them too) and carry ``monitors/dedicated-monitor`` instead of
``monitors/location``, so no location's StatefulSet, Service or disruption budget selects them.

The service account needs exactly the verbs k8s/base/monitor-rbac.yaml grants.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from kubernetes.aio.client import (
    ApiClient,
    AppsV1Api,
    Configuration,
    CoreV1Api,
    V1Deployment,
    V1DeploymentSpec,
    V1DeploymentStrategy,
    V1EnvVar,
    V1LabelSelector,
    V1ObjectMeta,
    V1Pod,
    V1Scale,
    V1ScaleSpec,
    V1Secret,
    V1SecretVolumeSource,
    V1StatefulSet,
    V1Volume,
    V1VolumeMount,
)
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.config import ConfigException, load_incluster_config

from service_runtime.settings import Settings, StartupError
from services.monitor_svc.fleet.port import DedicatedRunner, PlatformError, RunnerPod, RunnerSet

T = TypeVar("T")

RUNNER_SELECTOR = "app.kubernetes.io/name=runner"
LOCATION_LABEL = "monitors/location"
DEDICATED_LABEL = "monitors/dedicated-monitor"  # its monitor's id
DEDICATED_LOCATION_LABEL = "monitors/dedicated-location"
DEDICATED_SELECTOR = f"{RUNNER_SELECTOR},{DEDICATED_LABEL}"
DIGEST_ANNOTATION = "monitors/runner-digest"  # of what the runner was made with: location, secrets
SECRETS_DIR = "/var/run/monitors/secrets"
SECRETS_VOLUME = "monitor-secrets"
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
        location=labels.get(LOCATION_LABEL) or labels.get(DEDICATED_LOCATION_LABEL, ""),
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
            raise PlatformError(
                f"{what}: the Kubernetes API answered {error.status} {error.reason}", error.status
            ) from None
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

    async def dedicated_runners(self) -> Sequence[DedicatedRunner]:
        found = await self._call(
            self._apps.list_namespaced_deployment(
                self.namespace, label_selector=DEDICATED_SELECTOR, _request_timeout=self._timeout_s
            ),
            "listing dedicated runners",
        )
        runners = []
        for item in found.items:
            labels = (item.metadata.labels if item.metadata else None) or {}
            annotations = (item.metadata.annotations if item.metadata else None) or {}
            runners.append(DedicatedRunner(labels[DEDICATED_LABEL], annotations.get(DIGEST_ANNOTATION, "")))
        return runners

    async def start_dedicated(self, monitor_id: str, location: str, secrets: Mapping[str, str], digest: str) -> None:
        found = await self._call(
            self._apps.list_namespaced_stateful_set(
                self.namespace, label_selector=RUNNER_SELECTOR, _request_timeout=self._timeout_s
            ),
            "listing runner StatefulSets",
        )
        deployment, secret = dedicated_runner(monitor_id, location, secrets, digest, found.items)
        name = dedicated_name(monitor_id)
        create_secret = self._core.create_namespaced_secret(self.namespace, secret, _request_timeout=self._timeout_s)
        try:
            await self._call(create_secret, f"creating the Secret {name}")
        except PlatformError as error:
            if error.status != 409:
                raise
            # Left by a pass cut short before its Deployment was made (or made by another replica just now, with
            # the same values): replaced, since its values may be old.
            await self._delete(self._core.delete_namespaced_secret, name, f"replacing the Secret {name}")
            create_secret = self._core.create_namespaced_secret(
                self.namespace, secret, _request_timeout=self._timeout_s
            )
            await self._call(create_secret, f"creating the Secret {name}")
        try:
            await self._call(
                self._apps.create_namespaced_deployment(self.namespace, deployment, _request_timeout=self._timeout_s),
                f"creating the Deployment {name}",
            )
        except PlatformError as error:
            # Made since it was listed (by another replica's pass): kept; the next pass checks its secrets' digest.
            if error.status != 409:
                raise

    async def _delete(self, delete: Any, name: str, what: str) -> None:
        try:
            await self._call(
                delete(name, self.namespace, propagation_policy="Background", _request_timeout=self._timeout_s), what
            )
        except PlatformError as error:
            if error.status != 404:  # already gone
                raise

    async def stop_dedicated(self, monitor_id: str) -> None:
        name = dedicated_name(monitor_id)
        await self._delete(self._apps.delete_namespaced_deployment, name, f"deleting the Deployment {name}")
        await self._delete(self._core.delete_namespaced_secret, name, f"deleting the Secret {name}")

    async def close(self) -> None:
        await self._api.close()  # type: ignore[no-untyped-call]


def dedicated_name(monitor_id: str) -> str:
    """The Deployment's and the Secret's name: the id as a DNS label after ``runner-`` (runner-mon-0a1b)."""
    return "runner-" + monitor_id.lower().replace("_", "-")


def dedicated_runner(
    monitor_id: str,
    location: str,
    secrets: Mapping[str, str],
    digest: str,
    runner_sets: Sequence[V1StatefulSet],
) -> tuple[V1Deployment, V1Secret]:
    """The Deployment and the Secret of ``monitor_id``'s runner in ``location``, from the pod template of that
    location's StatefulSet (or, for a location with none, of the first by name)."""

    def location_of(runner_set: V1StatefulSet) -> str:
        return ((runner_set.metadata.labels if runner_set.metadata else None) or {}).get(LOCATION_LABEL, "")

    ordered = sorted(runner_sets, key=lambda s: (location_of(s) != location, s.metadata.name if s.metadata else ""))
    if not ordered or ordered[0].spec is None:
        raise PlatformError("no runner StatefulSet to take a dedicated runner's pod template from")
    template = ordered[0].spec.template.model_copy(deep=True)
    name = dedicated_name(monitor_id)
    template_labels = (template.metadata.labels if template.metadata else None) or {}
    labels = {k: v for k, v in template_labels.items() if k != LOCATION_LABEL}
    labels |= {DEDICATED_LABEL: monitor_id, DEDICATED_LOCATION_LABEL: location}
    template.metadata = template.metadata or V1ObjectMeta()
    template.metadata.labels = labels
    pod = template.spec
    assert pod is not None
    for container in pod.containers:
        if "runner" not in (container.args or []):
            continue
        env = [e for e in container.env or [] if e.name not in DEDICATED_ENV]
        container.env = [
            *env,
            V1EnvVar(name="MONITORS_RUNNER_LOCATION", value=location),
            V1EnvVar(name="MONITORS_RUNNER_MONITOR_ID", value=monitor_id),
            V1EnvVar(name="MONITORS_RUNNER_SECRETS_DIR", value=SECRETS_DIR),
        ]
        container.volume_mounts = [
            *(container.volume_mounts or []),
            V1VolumeMount(name=SECRETS_VOLUME, mount_path=SECRETS_DIR, read_only=True),
        ]
    # Readable by the pod's group (its fsGroup), not by every user in it.
    volume = V1Volume(name=SECRETS_VOLUME, secret=V1SecretVolumeSource(secret_name=name, default_mode=0o440))
    pod.volumes = [*(pod.volumes or []), volume]
    owned = {k: v for k, v in labels.items() if k != DEDICATED_LOCATION_LABEL}
    deployment = V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=V1ObjectMeta(name=name, labels=owned, annotations={DIGEST_ANNOTATION: digest}),
        spec=V1DeploymentSpec(
            replicas=1,
            # One runner checks the monitor: the old pod goes before the new one comes.
            strategy=V1DeploymentStrategy(type="Recreate"),
            revision_history_limit=1,
            selector=V1LabelSelector(match_labels={"app.kubernetes.io/name": "runner", DEDICATED_LABEL: monitor_id}),
            template=template,
        ),
    )
    secret = V1Secret(
        api_version="v1",
        kind="Secret",
        metadata=V1ObjectMeta(name=name, labels=owned),
        type="Opaque",
        # Replaced, never changed: the kubelet need not watch it, and a pod reads the values it was started with.
        immutable=True,
        string_data=dict(secrets),
    )
    return deployment, secret


# Variables of the StatefulSet's runner container that a dedicated runner sets itself.
DEDICATED_ENV = ("MONITORS_RUNNER_LOCATION", "MONITORS_RUNNER_MONITOR_ID", "MONITORS_RUNNER_SECRETS_DIR")
