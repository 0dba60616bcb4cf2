"""Builds the AlertService process: migrations, storage, the engine and its feed, the notifier, servicer, host."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from monitors.v1 import alert_service_pb2, alert_service_pb2_grpc
from service_runtime.database import open_database
from service_runtime.server import RegisteredService, ServiceHost, every, host_with_remote_auth
from service_runtime.settings import Settings
from service_runtime.timeseries import InfluxStore, open_timeseries_store
from service_runtime.tls import open_channel
from services.alert_svc.alerts import Alerting
from services.alert_svc.engine import DEFAULT_RECONCILE, AlertEngine, collector_paused
from services.alert_svc.feed import CHANNEL_OPTIONS, MonitorFeed
from services.alert_svc.influx_ingest import InfluxIngest, IngestSettings, register_subscription
from services.alert_svc.notifier import Notifier
from services.alert_svc.servicer import AlertServiceServicer
from services.alert_svc.store import AlertStore

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_alert"
SERVICE_NAME = alert_service_pb2.DESCRIPTOR.services_by_name["AlertService"].full_name


async def build_server(settings: Settings) -> ServiceHost:
    """A ready-to-start host for AlertService with ``settings``."""
    database = await open_database(settings.database_url, MIGRATIONS, VERSION_TABLE)
    store = AlertStore(database, settings.max_rules_per_user)
    timeseries = await open_timeseries_store(settings.timeseries_url, settings.raw_retention)
    notify_channel = open_channel(settings.notify_target, settings)
    notifier = Notifier(store, notify_channel, settings.resolved_service_token(), settings.rpc_timeout_s)
    engine = AlertEngine(store, timeseries, on_notices=notifier.wake)
    with collector_paused():  # 100,000 rules load in a third of the time
        await engine.load()
    monitor_channel = open_channel(settings.monitor_target, settings, CHANNEL_OPTIONS)
    # With InfluxDB 1.x, samples come from an InfluxDB subscription to our ingest endpoint (about 1 ms after
    # each write); with the embedded store they come over the monitor service's stream. State changes always
    # come over the stream.
    influx = timeseries if isinstance(timeseries, InfluxStore) else None
    feed = MonitorFeed(monitor_channel, settings.resolved_service_token(), engine, include_results=influx is None)
    servicer = AlertServiceServicer(Alerting(store, engine))
    service = RegisteredService(SERVICE_NAME, servicer, alert_service_pb2_grpc.add_AlertServiceServicer_to_server)
    host = await host_with_remote_auth(settings, [service], database)
    host.background += [engine.run, feed.run, notifier.run]
    reconcile_every = reconcile_period()
    host.background.append(lambda: engine.reconcile_forever(reconcile_every))
    if influx is not None:
        subscribe_influx(host, engine, influx, IngestSettings.from_env())
    host.on_drain.append(engine.stop)
    host.on_stop += [timeseries.close, notify_channel.close, monitor_channel.close]
    return host


def subscribe_influx(host: ServiceHost, engine: AlertEngine, influx: InfluxStore, ingest: IngestSettings) -> None:
    """Serve the ingest endpoint once the host listens, and keep InfluxDB's subscription to it registered
    (checked every minute: InfluxDB may have started after us, or lost it)."""
    endpoint = InfluxIngest(engine, ingest.listen, influx.config.database)

    async def start() -> None:
        await endpoint.start()

    async def register() -> None:
        await register_subscription(influx.config, [ingest.destination])

    host.on_start.append(start)
    host.background.append(every(60.0, register, "influx subscription"))
    host.on_stop.append(endpoint.stop)


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
