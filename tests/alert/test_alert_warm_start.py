"""Warm start and reconciliation of the alert engine from a real time-series store (the embedded SQLite file
and a real InfluxDB): history read in one batched query per group of series, never one per rule or series;
samples the store has but the engine never heard of are found by the periodic reconciliation and fire; while
the store cannot be read, evaluations are unknown, and they come back when it answers.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from harness.alerting import MINUTE, Rig, coin, make_rig, open_timeseries
from harness.external import InfluxDBServer
from service_runtime.timeseries import (
    Aggregation,
    InfluxConfig,
    InfluxStore,
    Sample,
)
from services.alert_svc.domain import (
    AlertState,
    NoDataCondition,
    Operator,
    SampleEvent,
    ThresholdCondition,
    Transition,
)
from services.alert_svc.engine import _PendingReads
from services.alert_svc.evaluator import HistoryRequest
from services.alert_svc.server import reconcile_period

MEAN_10M_ABOVE_100 = ThresholdCondition("price", Aggregation.MEAN, 10 * MINUTE, Operator.GT, 100.0)
COUNT_5M_AT_LEAST_4 = ThresholdCondition("price", Aggregation.COUNT, 5 * MINUTE, Operator.GE, 4.0)
_databases = itertools.count()


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
