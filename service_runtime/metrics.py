"""Prometheus metrics of a service process, served over HTTP on ``MONITORS_METRICS_LISTEN`` (``/metrics``).

Every call through the interceptor chain is counted when it starts and when it ends (by status code), and its
duration observed, under the names grpc-ecosystem's go-grpc-middleware gives them, so the usual gRPC
dashboards and alerts read them as they are:

- ``grpc_server_started_total{grpc_type, grpc_service, grpc_method}``
- ``grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}``
- ``grpc_server_handling_seconds{grpc_type, grpc_service, grpc_method}`` (a histogram; a stream's is its life)

Health and reflection are not counted (probes would drown the rest). prometheus-client adds the process's own
(CPU, memory, open files, garbage collection).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from google.protobuf import descriptor_pool
from prometheus_client import Counter, Histogram, start_http_server

from service_runtime.interceptors import Interceptor, Next, NextStream
from service_runtime.settings import StartupError

LABELS = ("grpc_type", "grpc_service", "grpc_method")
STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", LABELS)
HANDLED = Counter("grpc_server_handled_total", "RPCs completed on the server, by status code.", (*LABELS, "grpc_code"))
# From a millisecond to an hour: unary calls take milliseconds, streams (runners, watchers) live for hours.
HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time from an RPC's start to its status on the server, in seconds.",
    LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)


def rpc_type(method: str) -> str:
    """``unary``, ``client_stream``, ``server_stream`` or ``bidi_stream``, from the method's descriptor."""
    service_name, _, method_name = method.strip("/").rpartition("/")
    try:
        descriptor = descriptor_pool.Default().FindServiceByName(service_name).methods_by_name[method_name]
    except KeyError:
        return "unary"
    if descriptor.client_streaming and descriptor.server_streaming:
        return "bidi_stream"
    if descriptor.client_streaming:
        return "client_stream"
    return "server_stream" if descriptor.server_streaming else "unary"


class _MethodMetrics:
    """One method's series, resolved once (a label lookup per call would cost more than the call's counting)."""

    def __init__(self, method: str) -> None:
        service, _, name = method.strip("/").rpartition("/")
        self.labels = (rpc_type(method), service, name)
        self.started = STARTED.labels(*self.labels)
        self.handling = HANDLING.labels(*self.labels)
        self._handled: dict[str, Counter] = {}

    def done(self, code: Any, started: float) -> None:
        self.handling.observe(time.perf_counter() - started)
        name = "OK" if code is None else (code.name if isinstance(code, grpc.StatusCode) else str(code))
        handled = self._handled.get(name)
        if handled is None:
            handled = self._handled[name] = HANDLED.labels(*self.labels, name)
        handled.inc()


class MetricsInterceptor(Interceptor):
    """The outermost link: counts each call and times it to its final status (after the error mapping)."""

    def __init__(self) -> None:
        self._methods: dict[str, _MethodMetrics] = {}

    def applies_to(self, method: str) -> bool:
        self._methods.setdefault(method, _MethodMetrics(method))
        return True

    async def around(self, call: Next, request: Any, context: Any, details: Any) -> Any:
        metrics = self._methods[details.method]
        metrics.started.inc()
        started = time.perf_counter()
        code: Any = None
        try:
            return await call(request, context)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            metrics.done(code or context.code(), started)

    async def around_stream(self, call: NextStream, request: Any, context: Any, details: Any) -> AsyncIterator[Any]:
        metrics = self._methods[details.method]
        metrics.started.inc()
        started = time.perf_counter()
        code: Any = None
        try:
            async for item in call(request, context):
                yield item
        except (asyncio.CancelledError, GeneratorExit):
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            metrics.done(code or context.code(), started)


class MetricsEndpoint:
    """prometheus-client's HTTP server (a thread) at ``listen`` (host:port), serving ``/metrics``."""

    def __init__(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        if not port.isdigit():
            raise StartupError(f"MONITORS_METRICS_LISTEN must be host:port, got {listen!r}")
        self.listen = listen
        self._host = host.strip("[]") or "0.0.0.0"
        self._port = int(port)
        self._server: WSGIServer | None = None
        self.port = 0

    def start(self) -> int:
        """Listen and serve; returns the bound port."""
        try:
            self._server, _ = start_http_server(self._port, self._host)
        except OSError as error:
            raise StartupError(f"cannot serve metrics on {self.listen}: {error.strerror}") from None
        self.port = int(self._server.server_address[1])
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
