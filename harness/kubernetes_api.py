"""A stand-in for the Kubernetes API server, which cannot run here: a real HTTP server on a loopback port that
answers the few API paths the monitor service's Kubernetes client uses, keeps the objects those calls change, and
records every request with its body. Its answers are shaped as the API's (lists with ``items``, the object back
from a write); it does no admission, defaulting or validation: tests validate what was sent with
kubernetes-validate themselves."""

from __future__ import annotations

import copy
import functools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from harness.http import HttpServer, Reply, Route


@dataclass(frozen=True)
class ApiRequest:
    method: str
    path: str  # without the query
    query: dict[str, str]
    body: Any  # the JSON sent, or None


@dataclass
class KubernetesApi:
    """Answers for ``namespace``: list pods, StatefulSets and Deployments (by label selector: ``key=value`` and
    ``key`` terms), patch a StatefulSet's scale, create and delete Deployments and Secrets (409 for a name taken,
    404 for none). ``failing`` makes every answer that status (an outage of the API)."""

    namespace: str = "monitors"
    stateful_sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[ApiRequest] = field(default_factory=list)
    failing: int | None = None
    delay_s: float = 0.0  # every answer this late (an API that hangs)
    refused: dict[str, int] = field(default_factory=dict)  # "POST /deployments" (method, path end): that status

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = HttpServer()
        core = f"/api/v1/namespaces/{self.namespace}"
        self.apps = f"/apis/apps/v1/namespaces/{self.namespace}"
        self._server.routes[f"GET {core}/pods"] = self._handler("GET", lambda r: self._list("PodList", self.pods, r))
        self._server.routes[f"GET {self.apps}/statefulsets"] = self._handler(
            "GET", lambda r: self._list("StatefulSetList", self.stateful_sets, r)
        )
        self._server.routes[f"GET {self.apps}/deployments"] = self._handler(
            "GET", lambda r: self._list("DeploymentList", self.deployments, r)
        )
        self._collections = {f"{self.apps}/deployments": self.deployments, f"{core}/secrets": self.secrets}
        for path, objects in self._collections.items():
            self._server.routes[f"POST {path}"] = self._handler("POST", functools.partial(self._create, objects))

    @property
    def url(self) -> str:
        return self._server.url("").rstrip("/")

    def add_stateful_set(self, manifest: dict[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        with self._lock:
            self.stateful_sets[name] = copy.deepcopy(manifest)
        self._server.routes[f"PATCH {self.apps}/statefulsets/{name}/scale"] = self._handler(
            "PATCH", lambda r: self._scale(name, r)
        )

    def add_pod(self, name: str, labels: dict[str, str], ready: bool, restarts: int) -> None:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                "containerStatuses": [
                    {
                        "name": "runner",
                        "image": "monitors",
                        "imageID": "",
                        "ready": ready,
                        "restartCount": restarts,
                    }
                ],
            },
        }
        with self._lock:
            self.pods[name] = pod

    def sent(self, method: str, path_end: str = "") -> list[ApiRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.endswith(path_end)]

    def _handler(self, method: str, answer: Callable[[ApiRequest], Reply]) -> Route:
        def handle(full_path: str, headers: dict[str, str], body: bytes) -> Reply:
            parts = urlsplit(full_path)
            request = ApiRequest(
                method,
                parts.path,
                {k: v[0] for k, v in parse_qs(parts.query).items()},
                json.loads(body) if body else None,
            )
            return answer(request)

        return handle

    def _record(self, request: ApiRequest) -> Reply | None:
        if self.delay_s:
            time.sleep(self.delay_s)
        with self._lock:
            self.requests.append(request)
            status = self.failing or next(
                (code for key, code in self.refused.items() if f"{request.method} {request.path}".endswith(key)), None
            )
            if status is not None:
                return Reply.json({"kind": "Status", "status": "Failure", "code": status}, status)
        return None

    def _list(self, kind: str, objects: dict[str, dict[str, Any]], request: ApiRequest) -> Reply:
        failed = self._record(request)
        if failed:
            return failed
        terms = [part.partition("=") for part in request.query.get("labelSelector", "").split(",") if part]

        def selected(labels: dict[str, str]) -> bool:
            return all(key in labels and (not equals or labels[key] == value) for key, equals, value in terms)

        with self._lock:
            items = [o for o in objects.values() if selected(o["metadata"].get("labels", {}))]
            return Reply.json({"apiVersion": "v1", "kind": kind, "metadata": {}, "items": copy.deepcopy(items)})

    def _create(self, objects: dict[str, dict[str, Any]], request: ApiRequest) -> Reply:
        failed = self._record(request)
        if failed:
            return failed
        name = request.body["metadata"]["name"]
        with self._lock:
            if name in objects:
                return Reply.json({"kind": "Status", "status": "Failure", "code": 409, "reason": "AlreadyExists"}, 409)
            objects[name] = copy.deepcopy(request.body)
        self._server.routes[f"DELETE {request.path}/{name}"] = self._handler(
            "DELETE", lambda r: self._delete(objects, name, r)
        )
        return Reply.json(request.body, 201)

    def _delete(self, objects: dict[str, dict[str, Any]], name: str, request: ApiRequest) -> Reply:
        failed = self._record(request)
        if failed:
            return failed
        with self._lock:
            if objects.pop(name, None) is None:
                return Reply.json({"kind": "Status", "status": "Failure", "code": 404, "reason": "NotFound"}, 404)
        return Reply.json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})

    def _scale(self, name: str, request: ApiRequest) -> Reply:
        failed = self._record(request)
        if failed:
            return failed
        with self._lock:
            self.stateful_sets[name]["spec"]["replicas"] = request.body["spec"]["replicas"]
            replicas = self.stateful_sets[name]["spec"]["replicas"]
        return Reply.json(
            {
                "apiVersion": "autoscaling/v1",
                "kind": "Scale",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {"replicas": replicas},
            }
        )

    def replicas(self) -> dict[str, int]:
        with self._lock:
            return {name: s["spec"]["replicas"] for name, s in self.stateful_sets.items()}

    def __enter__(self) -> KubernetesApi:
        self._server.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.__exit__(exc_type, exc, tb)
