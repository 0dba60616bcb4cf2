"""Server bootstrap shared by every service: grpc.aio server, health, reflection, limits, graceful stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from service_runtime.auth import CachingTokenVerifier, TokenVerifier
from service_runtime.database import Database
from service_runtime.errors import Unavailable
from service_runtime.interceptors import GenericHandlersOnly, InterceptedServer, Interceptor, interceptor_chain
from service_runtime.metrics import MetricsEndpoint, MetricsInterceptor
from service_runtime.process import run_process, stop_signals
from service_runtime.reflection import DocumentedPool, load_descriptor_set
from service_runtime.remote_auth import RemoteTokenVerifier
from service_runtime.settings import Role, ServiceName, Settings, StartupError
from service_runtime.tls import open_channel, server_credentials

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisteredService:
    """A servicer and how to add it: ``add`` is the generated ``add_XServicer_to_server``."""

    full_name: str
    servicer: Any
    add: Callable[[Any, Any], None]


class MethodAwarePool:
    """The default descriptor pool for reflection, also finding the file of a method symbol.

    protobuf's upb pool does not resolve ``pkg.Service.Method`` in FindFileContainingSymbol, so
    ``grpcurl describe pkg.Service.Method`` would fail; this falls back to the method's service.
    """

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def FindFileContainingSymbol(self, symbol: str) -> Any:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            return self._pool.FindMethodByName(symbol).containing_service.file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


@dataclass
class ServiceHost:
    """One service process: its gRPC server plus what must close when it stops."""

    settings: Settings
    services: Sequence[RegisteredService]
    verifier: TokenVerifier
    public_methods: Iterable[str] = ()
    # Internal method -> the roles that may call it (with their tokens only).
    internal_methods: Mapping[str, Collection[Role]] = field(default_factory=dict)
    # Token -> role, for every role this process accepts (Settings.accepted_role_tokens).
    role_tokens: Mapping[str, Role] = field(default_factory=dict)
    # Method -> roles that may call it besides a user (the operator's view of the whole deployment).
    operator_methods: Mapping[str, Collection[Role]] = field(default_factory=dict)
    # Awaited once the gRPC server listens, before it reports SERVING (side listeners and the like).
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Awaited when draining begins, before in-flight calls get their grace: long-lived streams end here
    # cleanly instead of being cut when the grace runs out.
    on_drain: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Coroutines run as tasks while serving (periodic sweeps and the like), cancelled on stop.
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    # Links placed before the standard chain (outermost first): a replica forwarding calls to another.
    front_interceptors: Sequence[Interceptor] = ()

    def __post_init__(self) -> None:
        limit = self.settings.max_message_bytes
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                # Pings every 10 s, answered within 5 s: a dead peer (a runner's machine gone) is noticed within
                # 15 s and its streams end, so its monitors move to other runners.
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.keepalive_timeout_ms", 5_000),
                # Clients (runners) ping as often as every 5 s on idle streams; gRPC's default policy (one ping
                # per 5 minutes without data) would answer them with GOAWAY too_many_pings.
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                # gRPC opens its port with SO_REUSEPORT by default: a second process on the same port then
                # starts "serving" too and the kernel splits connections between the two. Refuse it instead.
                ("grpc.so_reuseport", 0),
            ],
        )
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, GenericHandlersOnly(self.server))
        # Prometheus metrics (service_runtime/metrics.py): outermost, so each call counts once, with its final code.
        self.metrics = MetricsEndpoint(self.settings.metrics_listen) if self.settings.metrics_listen else None
        intercepted = InterceptedServer(
            self.server,
            [
                *([MetricsInterceptor()] if self.metrics else []),
                *self.front_interceptors,
                *interceptor_chain(
                    self.verifier,
                    self.public_methods,
                    self.internal_methods,
                    self.role_tokens,
                    self.operator_methods,
                ),
            ],
        )
        for service in self.services:
            service.add(service.servicer, intercepted)
            if service.full_name not in intercepted.registered:
                raise RuntimeError(f"{service.full_name} did not register its method handlers")
        names = [s.full_name for s in self.services]
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(
                [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
                pool=DocumentedPool(MethodAwarePool(descriptor_pool.Default()), load_descriptor_set()),
            ),
            GenericHandlersOnly(self.server),
        )
        self.port = 0
        self._stopped = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> int:
        """Listen on ``settings.listen``, mark every service SERVING, and return the bound port."""
        credentials = server_credentials(self.settings)
        try:
            if credentials is None:
                self.port = self.server.add_insecure_port(self.settings.listen)
            else:
                self.port = self.server.add_secure_port(self.settings.listen, credentials)
        except RuntimeError:  # grpc's "Failed to bind to address"
            self.port = 0
        if self.port == 0:
            raise StartupError(f"cannot listen on {self.settings.listen}: the address is in use or not this machine's")
        await self.server.start()
        if self.metrics is not None:
            self.metrics.start()
            self.on_stop.append(partial(asyncio.to_thread, self.metrics.stop))
        for begin in self.on_start:
            await begin()
        self._tasks = [asyncio.create_task(run()) for run in self.background]
        for name in ("", *(s.full_name for s in self.services)):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"service": self.settings.service, "listen": self.settings.listen, "port": self.port})
        return self.port

    async def stop(self) -> None:
        """NOT_SERVING first, wait ``drain_delay_s`` for balancers to notice, drain in-flight calls, close."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        await self.health.enter_graceful_shutdown()
        log.info(
            "shutting down",
            extra={"service": self.settings.service, "drain_delay_s": self.settings.drain_delay_s},
        )
        if self.settings.drain_delay_s:
            await asyncio.sleep(self.settings.drain_delay_s)
        for drain in self.on_drain:
            await drain()
        await self.server.stop(self.settings.shutdown_grace_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for close in reversed(self.on_stop):
            await close()
        log.info("stopped", extra={"service": self.settings.service})

    async def serve_until_signal(self) -> None:
        """Start, then run until SIGTERM or SIGINT, then stop gracefully."""
        requested = stop_signals()  # before start: see stop_signals
        await self.start()
        # Shielded: cancelling grpc's wait_for_termination cancels the server's own shutdown future, and
        # the graceful stop below would then fail with CancelledError.
        terminated = asyncio.shield(self.server.wait_for_termination())
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(requested.wait()), terminated}
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await self.stop()


def every(
    interval_s: float, work: Callable[[], Awaitable[object]], name: str
) -> Callable[[], Coroutine[Any, Any, None]]:
    """A background job for :attr:`ServiceHost.background`: ``work`` now, then every ``interval_s``.
    A failure is logged and the job goes on: a dependency that is down (Unavailable) in one line, anything
    else with its traceback."""

    async def run() -> None:
        while True:
            try:
                await work()
            except Unavailable as error:  # an outage, logged where it is seen: a traceback per run would bury it
                log.warning("background job failed", extra={"job": name, "error": error.message})
            except Exception:
                log.exception("background job failed", extra={"job": name})
            await asyncio.sleep(interval_s)

    return run


def run_service(
    service: ServiceName, build: Callable[[Settings], Awaitable[ServiceHost]], argv: list[str] | None = None
) -> int:
    """The ``__main__`` of every service: :func:`run_process` serving the host ``build`` makes until a signal."""

    async def serve(settings: Settings) -> None:
        host = await build(settings)
        await host.serve_until_signal()

    return run_process(
        service,
        serve,
        argv,
        prog=f"python -m services.{service}_svc",
        label=f"{service} service",
        listen_help="host:port to listen on",
    )


async def host_with_remote_auth(
    settings: Settings,
    services: Sequence[RegisteredService],
    database: Database,
    front_interceptors: Sequence[Interceptor] = (),
    internal_methods: Mapping[str, Collection[Role]] | None = None,
    role_tokens: Mapping[str, Role] | None = None,
) -> ServiceHost:
    """A host for a service that verifies callers through AccountService (alert, notify); it closes
    ``database`` when it stops. ``internal_methods`` and ``role_tokens`` are :class:`ServiceHost`'s."""
    remote = RemoteTokenVerifier(open_channel(settings.monitor_target, settings), settings.rpc_timeout_s)
    verifier = CachingTokenVerifier(remote, settings.auth_cache_ttl_s)
    host = ServiceHost(
        settings,
        services,
        verifier,
        internal_methods=internal_methods or {},
        role_tokens=role_tokens or {},
        front_interceptors=front_interceptors,
    )
    host.on_stop += [database.close, remote.close]
    return host
