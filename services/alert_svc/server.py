"""Builds the AlertService process: migrations, storage, the leader lease, and under it the engine, its feed
and the notifier; the servicer and host.

Every replica serves AlertService. One of them, the leader (see leadership.py), runs the evaluation: the
rules and open alerts loaded into a fresh engine, the monitor feed and its warm start, the lifecycle clock,
reconciliation, the outbox notifier and, with InfluxDB 1.x, the ingest endpoint and the subscription to it.
The others forward every call to the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from monitors.v1 import alert_service_pb2, alert_service_pb2_grpc
from service_runtime.cache import open_key_value_store, warn_if_unreachable
from service_runtime.database import open_database
from service_runtime.errors import Unavailable
from service_runtime.server import RegisteredService, ServiceHost, host_with_remote_auth
from service_runtime.settings import Settings
from service_runtime.timeseries import InfluxStore, TimeSeriesStore, open_timeseries_store
from service_runtime.tls import open_channel
from services.alert_svc import metrics
from services.alert_svc.alerts import Alerting
from services.alert_svc.channels import NotifyChannels
from services.alert_svc.engine import DEFAULT_RECONCILE, AlertEngine, collector_paused
from services.alert_svc.feed import CHANNEL_OPTIONS, MonitorFeed
from services.alert_svc.influx_ingest import InfluxIngest, IngestSettings, register_subscription
from services.alert_svc.leadership import DEFAULT_LEASE_S, Holder, LeaderForwarding, Leadership
from services.alert_svc.notifier import Notifier
from services.alert_svc.servicer import AlertServiceServicer
from services.alert_svc.store import AlertStore

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_alert"
SERVICE = alert_service_pb2.DESCRIPTOR.services_by_name["AlertService"]
SERVICE_NAME = SERVICE.full_name
TERM_START_WAIT_S = 5.0  # a call reaching a leader still loading waits this long before UNAVAILABLE
FORWARD_TIMEOUT_S = 30.0  # a forwarded unary call that came without a deadline
SUBSCRIPTION_CHECK_S = 60.0


async def build_server(settings: Settings) -> ServiceHost:
    """A ready-to-start host for AlertService with ``settings``."""
    database = await open_database(settings.database_url, MIGRATIONS, VERSION_TABLE)
    store = AlertStore(database, settings.max_rules_per_user, settings.max_silences_per_user)
    timeseries = await open_timeseries_store(settings.timeseries_url, settings.raw_retention)
    notify_channel = open_channel(settings.notify_target, settings)
    monitor_channel = open_channel(settings.monitor_target, settings, CHANNEL_OPTIONS)
    runtime = AlertRuntime(settings, store, timeseries, notify_channel, monitor_channel, reconcile_period())
    # Redis in production (shared by the replicas); without it, the in-process twin: this process leads alone.
    leases = open_key_value_store(settings.redis_url)
    if settings.redis_url:
        await warn_if_unreachable(
            leases, settings.redis_url, "this replica cannot take the lead, so no alert is evaluated here"
        )
    leadership = Leadership(
        leases,
        lease_key(settings.database_url),
        Holder.new(advertise_address(settings)),
        runtime.lead,
        lease_s=lease_period(),
    )
    forwarding = LeaderForwarding(
        leadership,
        [SERVICE_NAME],
        lambda target: open_channel(target, settings, [*CHANNEL_OPTIONS, *_message_limits(settings)]),
        FORWARD_TIMEOUT_S,
    )
    servicer = CurrentTermServicer(runtime)
    service = RegisteredService(SERVICE_NAME, servicer, alert_service_pb2_grpc.add_AlertServiceServicer_to_server)
    host = await host_with_remote_auth(settings, [service], database, front_interceptors=[forwarding])
    host.on_start.append(leadership.step)  # a lone replica leads from its first moment
    host.background.append(leadership.run)
    # Draining: the leader's work stops (watcher streams end) and the lease goes back, so a standby takes
    # over at once; calls still arriving are forwarded to it.
    host.on_drain.append(leadership.release)
    host.on_stop += [timeseries.close, notify_channel.close, monitor_channel.close, forwarding.close, leases.close]
    return host


def _message_limits(settings: Settings) -> list[tuple[str, Any]]:
    limit = settings.max_message_bytes
    return [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]


class AlertRuntime:
    """What only the leader runs, one term at a time: :meth:`lead` builds a fresh engine, loads the rules and
    open alerts, starts the ingest endpoint and subscription (InfluxDB 1.x), the monitor feed (its snapshot
    warm-starts the engine), the lifecycle clock, reconciliation and the notifier; cancelling it stops them
    and drops the engine, and its watchers' streams end."""

    def __init__(
        self,
        settings: Settings,
        store: AlertStore,
        timeseries: TimeSeriesStore,
        notify_channel: Any,
        monitor_channel: Any,
        reconcile_every: timedelta,
    ) -> None:
        self._settings = settings
        self._store = store
        self._timeseries = timeseries
        self._notify_channel = notify_channel
        self._monitor_channel = monitor_channel
        self._reconcile_every = reconcile_every
        # With InfluxDB 1.x, samples come from an InfluxDB subscription to our ingest endpoint (about 1 ms after
        # each write); with the embedded store they come over the monitor service's stream. State changes always
        # come over the stream.
        self._influx = timeseries if isinstance(timeseries, InfluxStore) else None
        self._ingest = IngestSettings.from_env() if self._influx is not None else None
        self._servicer: AlertServiceServicer | None = None
        self._ready = asyncio.Event()
        self.engine: AlertEngine | None = None

    async def lead(self) -> None:
        """The leader's work for one term, until cancelled."""
        token = self._settings.role_token("alert")
        notifier = Notifier(self._store, self._notify_channel, token, self._settings.rpc_timeout_s)
        engine = self.engine = AlertEngine(self._store, self._timeseries, on_notices=notifier.wake)
        notifier.email_of = engine.email_of  # alerts of owners with no default channel go to their address
        feed = MonitorFeed(self._monitor_channel, token, engine, include_results=self._influx is None)
        endpoint = None
        jobs: list[Callable[[], Coroutine[Any, Any, None]]] = [
            engine.run,
            notifier.run,
            lambda: engine.reconcile_forever(self._reconcile_every),
        ]
        tasks: list[asyncio.Task[None]] = []
        started = time.perf_counter()
        try:
            with collector_paused():  # 100,000 rules load in a third of the time
                await engine.load()
            if (influx := self._influx) is not None and self._ingest is not None:
                endpoint = InfluxIngest(engine, self._ingest.listen, influx.config.database)
                await endpoint.start()
                # Registered (to our own endpoint: it replaces the last leader's) before the feed's snapshot
                # warm-starts the engine, so every write is either in that history or delivered to us.
                await self._register_subscription()
                jobs += [self._keep_subscription, lambda: engine.watch_store(influx.ping)]
            channels = NotifyChannels(self._notify_channel, self._settings.rpc_timeout_s)
            alerting = Alerting(self._store, engine, self._settings.max_streams_per_user, channels)
            self._servicer = AlertServiceServicer(alerting)
            self._ready.set()
            metrics.watch_engine(engine.rule_count, engine.open_alert_count)
            tasks = [asyncio.create_task(job()) for job in [*jobs, feed.run]]
            log.info("alert leader started", extra={"seconds": round(time.perf_counter() - started, 3)})
            await asyncio.gather(*tasks)
        finally:
            metrics.engine_gone()
            self._ready.clear()
            self._servicer = None
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if endpoint is not None:
                await endpoint.stop()
            await engine.stop()
            self.engine = None

    async def _register_subscription(self) -> None:
        assert self._influx is not None
        assert self._ingest is not None
        try:
            await register_subscription(self._influx.config, [self._ingest.destination])
        except Exception:  # InfluxDB may start later; checked again every minute
            log.exception("could not register the influx subscription")

    async def _keep_subscription(self) -> None:
        """Check the subscription every minute: InfluxDB may have started after us, or lost it."""
        while True:
            await asyncio.sleep(SUBSCRIPTION_CHECK_S)
            await self._register_subscription()

    async def servicer(self) -> AlertServiceServicer:
        """The current term's servicer; waits up to :data:`TERM_START_WAIT_S` while the term starts."""
        if self._servicer is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), TERM_START_WAIT_S)
        if self._servicer is None:
            raise Unavailable("the alert-service leader is starting; retry in a few seconds")
        return self._servicer


class CurrentTermServicer:
    """Registered once for the process's life in place of :class:`AlertServiceServicer`: each call goes to
    the servicer of the current leadership term (each term has its own engine)."""

    def __init__(self, runtime: AlertRuntime) -> None:
        self._runtime = runtime
        for method in SERVICE.methods:
            handler = self._streaming(method.name) if method.server_streaming else self._unary(method.name)
            setattr(self, method.name, handler)

    def _unary(self, name: str) -> Callable[[Any, Any], Coroutine[Any, Any, Any]]:
        async def call(request: Any, context: Any) -> Any:
            return await getattr(await self._runtime.servicer(), name)(request, context)

        return call

    def _streaming(self, name: str) -> Callable[[Any, Any], AsyncIterator[Any]]:
        async def call(request: Any, context: Any) -> AsyncIterator[Any]:
            async for item in getattr(await self._runtime.servicer(), name)(request, context):
                yield item

        return call


def lease_key(database_url: str) -> str:
    """The leader lease's key: one per deployment (its database, credentials left out), so deployments sharing
    a Redis do not share a leader."""
    url = make_url(database_url).set(username=None, password=None).render_as_string(hide_password=False)
    return "alert:leader:" + hashlib.sha256(url.encode()).hexdigest()[:16]


def advertise_address(settings: Settings, env: Mapping[str, str] | None = None) -> str:
    """MONITORS_ALERT_ADVERTISE: the gRPC address other replicas reach this one at (in Kubernetes, the pod's
    IP and port). Default: the listen address, with a wildcard host replaced by this host's address."""
    env = os.environ if env is None else env
    advertised = env.get("MONITORS_ALERT_ADVERTISE") or ""
    if advertised:
        return advertised
    host, _, port = settings.listen.rpartition(":")
    if host.strip("[]") in ("", "0.0.0.0", "::"):
        return f"{socket.gethostbyname(socket.gethostname())}:{port}"
    return settings.listen


def lease_period(env: Mapping[str, str] | None = None) -> float:
    """MONITORS_ALERT_LEASE_S (default 10): the leader lease. A dead leader's rules move within about this long."""
    env = os.environ if env is None else env
    text = env.get("MONITORS_ALERT_LEASE_S") or ""
    if not text:
        return DEFAULT_LEASE_S
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"MONITORS_ALERT_LEASE_S must be a number of seconds, got {text!r}") from None
    if not seconds >= 0.3:
        raise ValueError(f"MONITORS_ALERT_LEASE_S must be at least 0.3, got {text!r}")
    return seconds


def reconcile_period(env: Mapping[str, str] | None = None) -> timedelta:
    """MONITORS_ALERT_RECONCILE_S (default 60): how often the alert service re-reads the history its rules
    look back on from the time-series store and merges it in (see AlertEngine.reconcile)."""
    env = os.environ if env is None else env
    text = env.get("MONITORS_ALERT_RECONCILE_S") or ""
    if not text:
        return DEFAULT_RECONCILE
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"MONITORS_ALERT_RECONCILE_S must be a number of seconds, got {text!r}") from None
    if not seconds > 0:
        raise ValueError(f"MONITORS_ALERT_RECONCILE_S must be positive, got {text!r}")
    return timedelta(seconds=seconds)
