"""Warm start and reconciliation of the alert engine from a real time-series store (the embedded SQLite file
and a real InfluxDB): history read in one batched query per group of series, never one per rule or series;
samples the store has but the engine never heard of are found by the periodic reconciliation and fire; while
the store cannot be read, evaluations are unknown, and they come back when it answers.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

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
    AlertState,
    Condition,
    MonitorInfo,
    MonitorState,
    NoDataCondition,
    Operator,
    RuleDraft,
    SampleEvent,
    ThresholdCondition,
    Transition,
    validate_rule,
)
from services.alert_svc.engine import AlertEngine, Change, _PendingReads
from services.alert_svc.evaluator import HistoryRequest
from services.alert_svc.server import MIGRATIONS, VERSION_TABLE, reconcile_period
from services.alert_svc.store import AlertStore
from tests.harness.clock import midnight_days_ago
from tests.harness.external import InfluxDBServer

MINUTE = timedelta(minutes=1)
MEAN_10M_ABOVE_100 = ThresholdCondition("price", Aggregation.MEAN, 10 * MINUTE, Operator.GT, 100.0)
COUNT_5M_AT_LEAST_4 = ThresholdCondition("price", Aggregation.COUNT, 5 * MINUTE, Operator.GE, 4.0)
_databases = itertools.count()


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


@pytest.fixture(params=["embedded", "influxdb"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    timeseries = await open_timeseries(request.param, tmp_path, request)
    made, database = await make_rig(timeseries, tmp_path, monkeypatch)
    yield made
    await made.engine.stop()
    await timeseries.close()
    await database.close()


async def test_warm_start_reads_each_history_group_once_and_the_history_counts(rig: Rig) -> None:
    """240 monitors of three owners with a 10-minute mean rule each, and no_data rules on three: two history
    groups (price over 10 minutes, is_up over 30), so two reads, whatever the number of rules."""
    now = rig.clock.now
    monitors = [coin(m, f"usr_{m % 3}") for m in range(240)]
    for monitor in monitors:
        await rig.rule(monitor.owner_id, monitor.monitor_id, MEAN_10M_ABOVE_100)
        # Five samples in the last ten minutes: mean 150 on the first ten monitors, 50 on the others.
        level = 150.0 if int(monitor.monitor_id[4:]) < 10 else 50.0
        history = [(now - (2 * i + 1) * MINUTE, level) for i in range(5)]
        await rig.store_prices(monitor.owner_id, monitor.monitor_id, history)
    for monitor in monitors[:3]:
        await rig.rule(monitor.owner_id, monitor.monitor_id, NoDataCondition(30 * MINUTE))

    await rig.start(monitors)

    assert sorted(rig.reads.calls) == [("points_many", "is_up", 3), ("points_many", "price", 240)]
    # The next sample is judged with the history: 150 on top of 50s is a mean of 66.7, no alert; on top of
    # 150s it fires. Without the history both would have fired.
    rig.clock.now = now + timedelta(seconds=5)
    stamp = rig.clock.now.timestamp()
    await rig.engine.feed_samples(
        [
            SampleEvent("usr_0", "mon_0", stamp, {"price": 150.0}),
            SampleEvent("usr_2", "mon_20", stamp, {"price": 150.0}),
        ]
    )
    assert rig.fired("mon_0") == [Transition.FIRED]
    assert rig.fired("mon_20") == []


async def test_reconcile_loads_samples_never_delivered_and_fires(rig: Rig) -> None:
    """Samples reach the store but never the engine (a lost subscription delivery): the reconciliation
    counts them, once each, however often it runs and whether or not the stream also delivered them."""
    now = rig.clock.now
    rule = await rig.rule("usr_a", "mon_1", COUNT_5M_AT_LEAST_4)
    await rig.start([coin(1)])
    three = [(now - timedelta(seconds=90 - 30 * i), 100.0 + i) for i in range(3)]
    await rig.store_prices("usr_a", "mon_1", three)
    # One of them also arrives on the stream, exactly as stored.
    await rig.engine.feed_samples([SampleEvent("usr_a", "mon_1", three[2][0].timestamp(), {"price": three[2][1]})])

    assert await rig.engine.reconcile()
    assert await rig.engine.reconcile()
    assert rig.fired("mon_1") == []  # three samples in the window, counted once each
    [evaluation] = await rig.engine.test(rule)
    assert evaluation.value == 3.0

    rig.clock.now = now + timedelta(seconds=20)
    await rig.store_prices("usr_a", "mon_1", [(now + timedelta(seconds=10), 104.0)])
    assert await rig.engine.reconcile()
    assert rig.fired("mon_1") == [Transition.FIRED]
    [alert] = rig.engine.open_alerts_of("usr_a")
    assert alert.state is AlertState.FIRING
    assert alert.value == 4.0
    assert all(method == "points_many" for method, _, _ in rig.reads.calls)


async def test_an_unreadable_store_makes_evaluations_unknown_until_it_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """InfluxDB down at the start: the warm start fails, evaluations are unknown (a crossing sample fires
    nothing), reconciliations fail; once InfluxDB answers, the next reconciliation loads what it holds and the
    rule fires."""
    server = InfluxDBServer(tmp_path / "influxdb")
    (tmp_path / "influxdb").mkdir()
    config = InfluxConfig(url=server.url, database="late", flush_interval_s=0.02, timeout_s=2, create_database=False)
    reader = await InfluxStore.open(config)
    rig, database = await make_rig(reader, tmp_path, monkeypatch)
    try:
        now = rig.clock.now
        await rig.rule("usr_a", "mon_1", MEAN_10M_ABOVE_100)
        await rig.start([coin(1)])
        assert not rig.engine.evaluator.available
        await rig.engine.feed_samples([SampleEvent("usr_a", "mon_1", now.timestamp(), {"price": 500.0})])
        assert rig.fired("mon_1") == []
        assert not await rig.engine.reconcile()

        await asyncio.to_thread(server.start)
        writer = await InfluxStore.open(InfluxConfig(url=server.url, database="late", flush_interval_s=0.02))
        try:
            await writer.write([Sample("usr_a", "mon_1", now - MINUTE, {"price": 300.0})])
            await writer.flush()
        finally:
            await writer.close()

        assert await rig.engine.reconcile()
        assert rig.engine.evaluator.available
        assert rig.fired("mon_1") == [Transition.FIRED]
    finally:
        await rig.engine.stop()
        await reader.close()
        await database.close()
        await asyncio.to_thread(server.stop)


def test_the_reconcile_period_comes_from_the_environment() -> None:
    assert reconcile_period({}) == timedelta(seconds=60)
    assert reconcile_period({"MONITORS_ALERT_RECONCILE_S": "2.5"}) == timedelta(seconds=2.5)
    for bad in ("0", "-1", "soon", "nan"):
        with pytest.raises(ValueError, match="MONITORS_ALERT_RECONCILE_S"):
            reconcile_period({"MONITORS_ALERT_RECONCILE_S": bad})


def test_history_requests_are_gathered_across_slices_into_full_reads() -> None:
    """A warm start asks for history slice by slice of the snapshot; the reads it sends hold READ_BATCH series
    of one field and look-back each (InfluxDB scans its whole index per statement), the rest at the end."""

    def request(field: str, first: int, count: int) -> HistoryRequest:
        series = tuple(("usr_a", f"mon_{i}") for i in range(first, first + count))
        return HistoryRequest(field, timedelta(minutes=5), series)

    pending = _PendingReads(3)
    assert pending.add([request("price", 0, 2), request("is_up", 0, 1)], flush=False) == []
    due = pending.add([request("price", 2, 5)], flush=False)
    assert [[m for _, m in r.series] for r in due] == [["mon_0", "mon_1", "mon_2"], ["mon_3", "mon_4", "mon_5"]]
    assert {r.field for r in due} == {"price"}

    rest = pending.add([], flush=True)

    assert sorted((r.field, [m for _, m in r.series]) for r in rest) == [("is_up", ["mon_0"]), ("price", ["mon_6"])]
    assert pending.add([], flush=True) == []
