"""Builds the AlertService process: migrations, storage, the engine and its feed, the notifier, servicer, host."""

from __future__ import annotations

from pathlib import Path

from monitors.v1 import alert_service_pb2, alert_service_pb2_grpc
from service_runtime.database import open_database
from service_runtime.server import RegisteredService, ServiceHost, host_with_remote_auth
from service_runtime.settings import Settings
from service_runtime.timeseries import open_timeseries_store
from service_runtime.tls import open_channel
from services.alert_svc.alerts import Alerting
from services.alert_svc.engine import AlertEngine
from services.alert_svc.feed import CHANNEL_OPTIONS, MonitorFeed
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
    await engine.load()
    monitor_channel = open_channel(settings.monitor_target, settings, CHANNEL_OPTIONS)
    # Samples and state changes both come over the monitor service's stream, whatever the store.
    feed = MonitorFeed(monitor_channel, settings.resolved_service_token(), engine, include_results=True)
    servicer = AlertServiceServicer(Alerting(store, engine))
    service = RegisteredService(SERVICE_NAME, servicer, alert_service_pb2_grpc.add_AlertServiceServicer_to_server)
    host = await host_with_remote_auth(settings, [service], database)
    host.background += [engine.run, feed.run, notifier.run]
    host.on_drain.append(engine.stop)
    host.on_stop += [timeseries.close, notify_channel.close, monitor_channel.close]
    return host
