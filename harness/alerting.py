"""Builders for the alert tests: rules, samples and evaluators as specifications use them, a warm-start rig on a
real time-series store, and a user of a running stack with stubs carrying its key."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import grpc
import httpx
import pytest
from google.protobuf import duration_pb2

from harness.clock import midnight_days_ago
from harness.external import InfluxDBServer
from harness.receivers import ProviderReceivers
from harness.rpc import auth
from harness.services import Stack
from monitors.v1 import (
    alert_service_pb2,
    alert_service_pb2_grpc,
    common_pb2,
    monitor_service_pb2,
    monitor_service_pb2_grpc,
    notification_service_pb2,
    notification_service_pb2_grpc,
)
from service_runtime.database import Database, open_database
from service_runtime.timeseries import (
    Aggregation,
    InfluxConfig,
    InfluxStore,
    Point,
    Sample,
    SeriesKey,
    SqliteSampleStore,
    TimedValue,
    TimeSeriesStore,
)
from services.alert_svc.domain import (
    AlertRule,
    Condition,
    Evaluation,
    MonitorInfo,
    MonitorState,
    Operator,
    RuleDraft,
    SampleEvent,
    Severity,
    ThresholdCondition,
    Transition,
    validate_rule,
)
from services.alert_svc.engine import AlertEngine, Change
from services.alert_svc.evaluator import Evaluator
from services.alert_svc.server import MIGRATIONS, VERSION_TABLE
from services.alert_svc.store import AlertStore

apb = alert_service_pb2
mpb = monitor_service_pb2
npb = notification_service_pb2
Metadata = tuple[tuple[str, str]]
T = TypeVar("T")
_databases = itertools.count()
OWNER = "usr_a"


MIN = timedelta(minutes=1)


RT = "response_time_ms"


def make_rule(
    condition: Condition,
    rule_id: str = "rule_1",
    monitor_id: str = "mon_a",
    selector: Mapping[str, str] | None = None,
    owner: str = OWNER,
    enabled: bool = True,
) -> AlertRule:
    moment = datetime(2001, 1, 1, tzinfo=UTC)
    return AlertRule(
        id=rule_id, owner_id=owner, display_name=rule_id, monitor_id="" if selector is not None else monitor_id,
        selector=selector or {}, condition=condition, severity=Severity.WARNING, for_duration=timedelta(0),
        keep_firing_for=timedelta(0), repeat_interval=None, cooldown=timedelta(0), escalate_after=None,
        channel_ids=(), escalation_channel_ids=(), enabled=enabled, description="", labels={}, is_default=False,
        create_time=moment, update_time=moment,
    )  # fmt: skip


def monitor(
    monitor_id: str = "mon_a",
    labels: Mapping[str, str] | None = None,
    state: MonitorState = MonitorState.UP,
    owner: str = OWNER,
    paused: bool = False,
) -> MonitorInfo:
    return MonitorInfo(monitor_id, owner, monitor_id, labels or {}, "website", state, paused=paused)


def sample(t: float, monitor_id: str = "mon_a", owner: str = OWNER, **fields: float) -> SampleEvent:
    return SampleEvent(owner, monitor_id, t, fields)


def rt(t: float, value: float) -> SampleEvent:
    """A sample of mon_a's response time."""
    return SampleEvent(OWNER, "mon_a", t, {RT: value})


def threshold(
    how: Aggregation = Aggregation.MEAN, window: timedelta = 5 * MIN, op: Operator = Operator.GT, value: float = 800
) -> ThresholdCondition:
    return ThresholdCondition(RT, how, window, op, value)


def watching(*conditions: Condition, now: float = 0.0) -> Evaluator:
    """An evaluator with monitor mon_a and one rule per condition (rule_1, rule_2, ...)."""
    evaluator = Evaluator()
    evaluator.put_monitor(monitor(), now)
    for i, condition in enumerate(conditions, 1):
        evaluator.put_rule(make_rule(condition, rule_id=f"rule_{i}"), now)
    return evaluator


def only(evaluations: list[Evaluation], rule_id: str = "rule_1") -> Evaluation:
    found = [e for e in evaluations if e.rule_id == rule_id]
    assert len(found) == 1, evaluations
    return found[0]


MINUTE = timedelta(minutes=1)


def coin(m: int, owner: str = "usr_a") -> MonitorInfo:
    return MonitorInfo(f"mon_{m}", owner, f"coin {m}", {}, "crypto_price", MonitorState.UP)


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: midnight_days_ago(0) - timedelta(hours=6))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Reads:
    """Every history read the engine makes: (method, field, how many series)."""

    calls: list[tuple[str, str, int]] = field(default_factory=list)


@dataclass
class Rig:
    engine: AlertEngine
    alerts: AlertStore
    timeseries: TimeSeriesStore
    clock: Clock
    reads: Reads
    changes: list[Change]

    async def rule(self, owner: str, monitor_id: str, condition: Condition) -> AlertRule:
        draft = RuleDraft(monitor_id=monitor_id, condition=condition)
        return await self.alerts.create_rule(owner, validate_rule(draft, "crypto_price"))

    async def start(self, monitors: Sequence[MonitorInfo]) -> None:
        await self.engine.load()
        await self.engine.feed_snapshot(list(monitors))

    async def store_prices(self, owner: str, monitor_id: str, prices: Sequence[tuple[datetime, float]]) -> None:
        await self.timeseries.write([Sample(owner, monitor_id, at, {"price": p, "is_up": 1.0}) for at, p in prices])
        await self.timeseries.flush()

    def fired(self, monitor_id: str) -> list[Transition]:
        return [c.transition for c in self.changes if c.alert.monitor_id == monitor_id]


async def open_timeseries(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> TimeSeriesStore:
    if kind == "embedded":
        return SqliteSampleStore(tmp_path / "ts.sqlite3")
    server: InfluxDBServer = request.getfixturevalue("influxdb")
    config = InfluxConfig(url=server.url, database=f"warm_{next(_databases)}", flush_interval_s=0.02)
    return await InfluxStore.open(config)


async def make_rig(
    timeseries: TimeSeriesStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Rig, Database]:
    database = await open_database(f"sqlite:///{tmp_path / 'alert.sqlite3'}", MIGRATIONS, VERSION_TABLE)
    alerts = AlertStore(database, 1000)
    clock = Clock()
    reads = Reads()
    many, one = timeseries.points_many, timeseries.points

    async def points_many(
        field_name: str, series: Sequence[SeriesKey], start: datetime, end: datetime, limit: int
    ) -> dict[SeriesKey, list[TimedValue]]:
        reads.calls.append(("points_many", field_name, len(series)))
        return await many(field_name, series, start, end, limit)

    async def points(key: SeriesKey, field_name: str, start: datetime, end: datetime, limit: int) -> list[Point]:
        reads.calls.append(("points", field_name, 1))
        return await one(key, field_name, start, end, limit)

    monkeypatch.setattr(timeseries, "points_many", points_many)
    monkeypatch.setattr(timeseries, "points", points)
    engine = AlertEngine(alerts, timeseries, clock=clock)
    changes: list[Change] = []

    def record(change: Change) -> bool:
        changes.append(change)
        return True

    engine.changes.subscribe_everyone(record)
    return Rig(engine, alerts, timeseries, clock, reads, changes), database


class User:
    """One account on the stack, with stubs carrying its key."""

    def __init__(self, stack: Stack, email: str) -> None:
        self.key: Metadata = auth(stack.create_api_key(email))
        self.monitors = monitor_service_pb2_grpc.MonitorServiceStub(grpc.insecure_channel(stack.address("monitor")))
        self.alerts = alert_service_pb2_grpc.AlertServiceStub(grpc.insecure_channel(stack.address("alert")))
        self.notify = notification_service_pb2_grpc.NotificationServiceStub(
            grpc.insecure_channel(stack.address("notify"))
        )

    def call(self, method: Callable[..., T], request: object, timeout: float = 10) -> T:
        return method(request, metadata=self.key, timeout=timeout)

    def heartbeat(self, name: str, labels: dict[str, str] | None = None) -> mpb.Monitor:
        spec = common_pb2.MonitorSpec(
            heartbeat=common_pb2.HeartbeatSpec(grace_period=duration_pb2.Duration(seconds=600))
        )
        monitor = mpb.Monitor(
            spec=spec, interval=duration_pb2.Duration(seconds=600), display_name=name, labels=labels or {}
        )
        return self.call(self.monitors.CreateMonitor, mpb.CreateMonitorRequest(monitor=monitor)).monitor

    def webhook(self, receivers: ProviderReceivers, name: str, default: bool = True) -> npb.Channel:
        channel = npb.Channel(
            display_name=name, webhook=npb.WebhookConfig(url=receivers.url("webhook", name)), is_default=default
        )
        return self.call(self.notify.CreateChannel, npb.CreateChannelRequest(channel=channel)).channel

    def alerts_of(self, rule_id: str) -> list[apb.Alert]:
        return list(self.call(self.alerts.ListAlerts, apb.ListAlertsRequest(rule_id=rule_id)).alerts)


def ping(monitor: mpb.Monitor, up: bool = True) -> None:
    """A heartbeat ping (``/fail`` when not up), retried as curl --retry does when it comes within a second
    of the last one recorded (429 with Retry-After)."""
    url = monitor.heartbeat_url if up else monitor.heartbeat_url + "/fail"
    for _ in range(5):
        reply = httpx.post(url, content=b"", timeout=5)
        if reply.status_code != 429:
            break
        time.sleep(float(reply.headers["Retry-After"]))
    reply.raise_for_status()
