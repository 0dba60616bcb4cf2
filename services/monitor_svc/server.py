"""Builds the monitor process (MonitorService + AccountService): migrations, stores, servicers, host."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy.exc import DBAPIError

from monitors.v1 import account_service_pb2, account_service_pb2_grpc, monitor_service_pb2, monitor_service_pb2_grpc
from service_runtime.auth import CachingTokenVerifier
from service_runtime.cache import SqlStore, open_key_value_store, warn_if_unreachable
from service_runtime.database import Database, DatabaseLock, describe_url, open_database
from service_runtime.secretbox import SecretBox
from service_runtime.server import RegisteredService, ServiceHost, every
from service_runtime.settings import Role, Settings, StartupError
from service_runtime.timeseries import TimeSeriesStore, open_timeseries_store
from service_runtime.timeseries.port import roll_up_pending
from service_runtime.tls import open_channel
from services.monitor_svc import VERSION
from services.monitor_svc.accounts.accounts import Accounts
from services.monitor_svc.accounts.login import Login, LoginLimits
from services.monitor_svc.accounts.notify_client import NotifyLoginCodeSender
from services.monitor_svc.accounts.servicer import AccountServicer
from services.monitor_svc.accounts.store import AccountStore
from services.monitor_svc.assignments import AssignmentHub
from services.monitor_svc.check_worker import CheckWorkers
from services.monitor_svc.checks import check_config
from services.monitor_svc.domain import Limits
from services.monitor_svc.events import MonitorEvents
from services.monitor_svc.fleet.kubernetes import open_kubernetes_runners
from services.monitor_svc.fleet.port import LocalRunners
from services.monitor_svc.fleet.reconciler import RunnerFleet
from services.monitor_svc.heartbeats import Heartbeats
from services.monitor_svc.locations import KnownLocations, declared_locations
from services.monitor_svc.monitors import RUN_CHECK_RATE, CheckRunner, Deployment, Monitors
from services.monitor_svc.ping_http import PingEndpoint
from services.monitor_svc.ping_log import SqlPingLog
from services.monitor_svc.replicas import REFRESH_S, RedisReplicas
from services.monitor_svc.schema import MIGRATIONS as MIGRATIONS  # every service's server names its migrations
from services.monitor_svc.schema import VERSION_TABLE as VERSION_TABLE
from services.monitor_svc.servicer import MonitorServicer
from services.monitor_svc.status_watch import SWEEP_S, StatusWatch
from services.monitor_svc.store import MonitorStore
from services.monitor_svc.user_secrets import UserSecrets

log = logging.getLogger(__name__)

ACCOUNT_SERVICE = account_service_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name
MONITOR_SERVICE = monitor_service_pb2.DESCRIPTOR.services_by_name["MonitorService"].full_name
# Login itself cannot require a token.
PUBLIC_METHODS = (f"/{ACCOUNT_SERVICE}/StartLogin", f"/{ACCOUNT_SERVICE}/CompleteLogin")
# Runners' RPCs and the alert service's feed, each for its role's token only.
INTERNAL_METHODS: dict[str, tuple[Role, ...]] = {
    f"/{MONITOR_SERVICE}/WatchAssignments": ("runner",),
    f"/{MONITOR_SERVICE}/ReportResults": ("runner",),
    f"/{MONITOR_SERVICE}/WatchMonitorEvents": ("alert",),
}
# A user sees their own monitors' placement; the operator's token sees the whole fleet.
OPERATOR_METHODS: dict[str, tuple[Role, ...]] = {f"/{MONITOR_SERVICE}/GetDeploymentStatus": ("operator",)}
RETENTION_SWEEP_S = 3600.0
HEARTBEAT_SWEEP_S = 1.0
ROLLUP_EVERY_S = 600.0  # an hour's rollup is written within ten minutes of its end
SPOOL_DIR = "timeseries-spool"  # under the data directory: samples accepted and not yet in InfluxDB
REPLICA_LOCK_CHECK_S = 10.0


async def hold_replica_lock(database_url: str) -> DatabaseLock:
    """The lock that makes this the one monitor service of its database, or :class:`StartupError` saying why.

    Without Redis, replicas have no way to share runners' assignments and the event feed, so a second one would
    split the deployment silently (monitors created through one never reaching the other's runners, deleted
    ones kept being checked): it refuses to start. With ``MONITORS_REDIS_URL`` they keep in step through it
    (:mod:`services.monitor_svc.replicas`) and take no lock."""
    lock = DatabaseLock(database_url, "monitor-service")
    if await asyncio.to_thread(lock.acquire, 0):
        return lock
    holder = await asyncio.to_thread(lock.holder)
    await asyncio.to_thread(lock.release)
    raise StartupError(
        f"another monitor service already serves the database {describe_url(database_url)} ({holder});"
        " run one monitor service per database, or set MONITORS_REDIS_URL on each for replicas"
    )


async def keep_replica_lock(lock: DatabaseLock) -> None:
    """Take the lock again if it was lost with its connection (MariaDB restarted); say so if another has it."""
    try:
        if await asyncio.to_thread(lock.held):
            return
        taken = await asyncio.to_thread(lock.acquire, 0)
    except (DBAPIError, StartupError) as error:
        log.warning("single-replica lock not held: the database does not answer", extra={"error": str(error)})
        return
    if taken:
        log.warning("single-replica lock taken again after its database connection was lost")
        return
    log.error(
        "another monitor service took the single-replica lock while our database connection was down: two now"
        " serve this database; stop one",
        extra={"holder": await asyncio.to_thread(lock.holder)},
    )


def monitor_domain(
    settings: Settings,
    database: Database,
    timeseries: TimeSeriesStore,
    checker: CheckRunner,
    box: SecretBox,
    declared: Iterable[str] = (),
) -> Monitors:
    """The monitors' domain over its stores, with the deployment's limits: what :func:`build_server` serves, and
    what the domain's tests drive without the gRPC layer."""
    store = MonitorStore(database)
    return Monitors(
        store,
        timeseries,
        checker,
        UserSecrets(database, box, store.referring_to_secret),
        Limits(
            min_interval=timedelta(seconds=settings.min_interval_s),
            max_monitors=settings.max_monitors_per_user,
            dedicated_runners=settings.runtime == "kubernetes",
            max_dedicated_monitors=settings.max_dedicated_per_user,
        ),
        locations=KnownLocations(database, declared),
        run_check_rate=RUN_CHECK_RATE.from_env(settings.env, "MONITORS_RUN_CHECK"),
    )


async def build_server(settings: Settings) -> ServiceHost:
    """A ready-to-start host for the monitor process with ``settings``."""
    limits = LoginLimits.from_env(settings.env)  # like a bad master key, a bad limit stops us before the migrations
    box = settings.secret_box()
    declared = declared_locations(settings.declared_locations)
    # Replicas keep in step through Redis; without it, one process serves the database.
    replica = None if settings.redis_url else await hold_replica_lock(settings.database_url)
    database = await open_database(settings.database_url, MIGRATIONS, VERSION_TABLE)
    account_store = AccountStore(database)
    accounts = Accounts(account_store)
    key_values = open_key_value_store(settings.redis_url, database)
    if settings.redis_url:
        await warn_if_unreachable(key_values, settings.redis_url, "logins and session calls answer UNAVAILABLE")
    notify_channel = open_channel(settings.notify_target, settings)
    login_codes = NotifyLoginCodeSender(notify_channel, settings.role_token("monitor"), settings.rpc_timeout_s)
    login = Login(accounts, key_values, login_codes, box.derive_key("login-codes"), limits)
    verifier = CachingTokenVerifier(login, settings.auth_cache_ttl_s)
    accounts.revocation_listeners.append(verifier.forget_credential)
    timeseries = await open_timeseries_store(
        settings.timeseries_url,
        settings.raw_retention,
        settings.rollup_retention,
        settings.data_dir / SPOOL_DIR,
        # Replicas (with Redis) each write their runners' samples: no one replica's digests hold them all.
        shared_writers=bool(settings.redis_url),
    )
    checker = CheckWorkers(check_config(settings), log_level=settings.log_level, log_format=settings.log_format)
    monitors = monitor_domain(settings, database, timeseries, checker, box, declared)
    monitor_store = monitors.store
    deployment = Deployment(
        version=VERSION,
        mode="embedded" if settings.embedded else "production",
        database_backend="sqlite" if settings.embedded else "mysql",
        timeseries_backend="sqlite" if settings.timeseries_url.startswith("sqlite") else "influxdb",
    )
    hub = AssignmentHub(monitors.all_monitors, monitors.record_many)
    monitors.change_listeners.append(hub.monitor_changed)
    events = MonitorEvents(monitors.all_monitors, monitor_store.statuses, load_emails=account_store.emails)
    monitors.change_listeners.append(events.monitor_changed)
    monitors.record_listeners.append(events.results_recorded)
    heartbeats = Heartbeats(monitor_store, monitors, log=SqlPingLog(database), replicated=bool(settings.redis_url))
    status_watch = StatusWatch(monitor_store.of_owner, monitor_store.statuses, settings.max_streams_per_user)
    monitors.change_listeners.append(status_watch.monitor_changed)
    monitors.record_listeners.append(status_watch.results_recorded)
    fleet = RunnerFleet(
        open_kubernetes_runners(settings) if settings.runtime == "kubernetes" else LocalRunners(),
        monitors.all_monitors,
        monitors.secrets_for,
        box.derive_key("dedicated-runner-secrets"),
        settings.monitors_per_runner,
        settings.max_runners_per_location,
        location_found=monitors.location_served,
    )
    if settings.runtime == "kubernetes":
        monitors.change_listeners.append(fleet.monitor_changed)

    async def resync() -> None:  # after notices from other replicas may have been missed
        await hub.reload()
        await events.resync()
        await status_watch.resync()
        fleet.forget()

    replicas = None
    if settings.redis_url:
        replicas = RedisReplicas(
            settings.redis_url,
            settings.database_url,
            hub,
            monitors.changed_elsewhere,
            monitors.recorded_elsewhere,
            resync,
        )
        monitors.replicas = replicas
        hub.local_runner_listeners.append(replicas.local_runners_changed)
    monitor_servicer = MonitorServicer(
        monitors,
        deployment,
        hub,
        settings.ping_base_url,
        events,
        settings.max_message_bytes,
        heartbeats,
        status_watch,
        fleet,
    )
    services = [
        RegisteredService(
            MONITOR_SERVICE, monitor_servicer, monitor_service_pb2_grpc.add_MonitorServiceServicer_to_server
        ),
        RegisteredService(
            ACCOUNT_SERVICE,
            AccountServicer(accounts, login),
            account_service_pb2_grpc.add_AccountServiceServicer_to_server,
        ),
    ]
    host = ServiceHost(
        settings,
        services,
        verifier,
        PUBLIC_METHODS,
        INTERNAL_METHODS,
        settings.accepted_role_tokens(INTERNAL_METHODS, OPERATOR_METHODS),
        operator_methods=OPERATOR_METHODS,
    )
    pings = PingEndpoint(heartbeats, settings.ping_listen)
    host.on_start.append(heartbeats.restore_starts)  # before pings come, so none is overwritten
    host.on_start.append(pings.start)
    host.on_start.append(checker.start)
    host.on_drain.append(events.close)  # the alert service's streams end cleanly, not at the grace's end
    host.on_drain.append(hub.close)  # and runners' streams, so that they reconnect at once
    host.on_drain.append(status_watch.close)  # and users' WatchMonitorStatus, with OK
    host.background.append(every(SWEEP_S, status_watch.sweep, "stale monitors to their watchers"))
    if settings.runtime == "kubernetes":
        host.background.append(fleet.run)  # each location's runners sized to its monitors
    if replica is not None:
        lock = replica
        host.background.append(every(REPLICA_LOCK_CHECK_S, lambda: keep_replica_lock(lock), "single-replica lock"))
        host.on_stop.append(lambda: asyncio.to_thread(lock.release))  # run last to first: the lock goes last
    if replicas is not None:
        host.on_start.append(replicas.start)
        host.background.append(replicas.run)
        host.background.append(replicas.send_forever)
        host.background.append(every(REFRESH_S, replicas.refresh, "replica registry"))
        host.on_stop.append(replicas.close)
    # Run last to first: login codes being handed over are waited for first.
    host.on_stop += [
        notify_channel.close,
        database.close,
        timeseries.close,
        key_values.close,
        checker.close,
        pings.stop,
        login.drain,
        fleet.platform.close,
    ]
    if isinstance(key_values, SqlStore):
        host.background.append(every(RETENTION_SWEEP_S, key_values.sweep, "expired key-value rows"))
    host.background.append(every(HEARTBEAT_SWEEP_S, heartbeats.sweep, "heartbeat deadlines"))
    host.background.append(every(RETENTION_SWEEP_S, timeseries.enforce_retention, "time-series retention"))
    host.background.append(
        every(ROLLUP_EVERY_S, lambda: roll_up_pending(timeseries, settings.raw_retention), "hourly uptime rollups")
    )
    return host
