"""Limits on what one user's rules may cost the evaluator: different windows per user (at rule creation) and
structures per series (for rules stored before that limit), found by a user whose 990 rules with distinct
7-day windows on one heartbeat froze the alert service for everyone."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.alerting import coin, make_rig, make_rule, sample, watching
from service_runtime.errors import ResourceExhausted
from service_runtime.timeseries import Aggregation, SqliteSampleStore
from services.alert_svc.domain import (
    MAX_WINDOWS_PER_USER,
    AnomalyCondition,
    ChangeCondition,
    Direction,
    MonitorDownCondition,
    Operator,
    RuleDraft,
    ThresholdCondition,
    Verdict,
    check_windows,
)
from services.alert_svc.evaluator import MAX_STRUCTS_PER_SERIES, Evaluator

WEEK = timedelta(days=7)


def p99(seconds_less: int, field: str = "is_up") -> ThresholdCondition:
    return ThresholdCondition(field, Aggregation.P99, WEEK - timedelta(seconds=seconds_less), Operator.LT, 0.5)


def test_a_users_rules_may_use_at_most_twenty_different_windows() -> None:
    rules = [make_rule(p99(i), f"r{i}") for i in range(MAX_WINDOWS_PER_USER)]
    with pytest.raises(ResourceExhausted) as refused:
        check_windows(RuleDraft(condition=p99(MAX_WINDOWS_PER_USER)), rules)
    assert refused.value.metadata == {"limit": "windows_per_user"}
    assert "at most 20 different windows" in refused.value.message


def test_rules_sharing_a_window_or_keeping_none_pass_the_window_limit() -> None:
    rules = [make_rule(p99(i), f"r{i}") for i in range(MAX_WINDOWS_PER_USER)]
    shared = ThresholdCondition("is_up", Aggregation.MEAN, WEEK - timedelta(seconds=3), Operator.GT, 1)
    check_windows(RuleDraft(condition=shared), rules)  # another aggregation over a window in use
    check_windows(RuleDraft(condition=MonitorDownCondition()), rules)
    latest = ThresholdCondition("is_up", Aggregation.LAST, timedelta(0), Operator.LT, 1)
    check_windows(RuleDraft(condition=latest), rules)
    check_windows(RuleDraft(condition=p99(99), enabled=False), rules)
    check_windows(RuleDraft(condition=p99(99)), rules, rule_id="r0")  # replacing r0 frees its window
    disabled = [make_rule(p99(i), f"r{i}", enabled=i != 0) for i in range(MAX_WINDOWS_PER_USER)]
    check_windows(RuleDraft(condition=p99(99)), disabled)


def test_change_and_anomaly_windows_count_towards_the_limit() -> None:
    rules = [
        make_rule(ChangeCondition("price", timedelta(minutes=i + 1), 5, Direction.UP), f"c{i}")
        for i in range(MAX_WINDOWS_PER_USER - 1)
    ]
    rules.append(make_rule(AnomalyCondition("price", timedelta(0), timedelta(hours=1), 3, 30, Direction.UP), "a"))
    with pytest.raises(ResourceExhausted):
        check_windows(RuleDraft(condition=p99(0, "price")), rules)


def test_a_series_keeps_at_most_its_limit_of_windows_and_further_rules_say_why_they_are_unknown() -> None:
    conditions = [p99(i) for i in range(MAX_STRUCTS_PER_SERIES + 5)]
    evaluator = watching(*conditions)  # rules stored before the limit existed
    series = evaluator._watches["mon_a"].series["is_up"]
    assert len(series.structs) == MAX_STRUCTS_PER_SERIES
    evaluated = {e.rule_id for e in evaluator.add_samples([sample(10, is_up=1.0)])}
    assert evaluated == {f"rule_{i}" for i in range(1, MAX_STRUCTS_PER_SERIES + 1)}
    beyond = evaluator.evaluate(f"rule_{MAX_STRUCTS_PER_SERIES + 1}", "mon_a", 10)
    assert beyond.verdict is Verdict.UNKNOWN
    assert "already has 20 different windows" in beyond.explanation
    evaluator.remove_rule(f"rule_{MAX_STRUCTS_PER_SERIES + 1}")  # detaching one kept no structure is harmless
    evaluator.remove_rule("rule_1")
    assert len(series.structs) == MAX_STRUCTS_PER_SERIES - 1


async def test_a_long_history_loads_in_turns_of_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two monitors with 6,000 stored samples each and 20 rules of different windows: the warm start lets other
    work run between the two series (each is 120,000 window insertions), where it had held the loop for all."""
    timeseries = SqliteSampleStore(tmp_path / "ts.sqlite3")
    rig, database = await make_rig(timeseries, tmp_path, monkeypatch)
    now = rig.clock.now
    rules = []
    for m in (1, 2):
        for hours in range(1, MAX_WINDOWS_PER_USER + 1):
            condition = ThresholdCondition("price", Aggregation.COUNT, timedelta(hours=hours), Operator.LT, 0)
            rules.append(await rig.rule("usr_a", f"mon_{m}", condition))
        await rig.store_prices("usr_a", f"mon_{m}", [(now - timedelta(seconds=10 * i), 1.0) for i in range(1, 6001)])
    happened: list[str] = []
    load = Evaluator.load

    def recorded(self: Evaluator, owner_id: str, monitor_id: str, *args: Any, **kwargs: Any) -> int:
        happened.append(monitor_id)
        return load(self, owner_id, monitor_id, *args, **kwargs)

    async def other_work() -> None:
        while True:
            happened.append("other")
            await asyncio.sleep(0)

    monkeypatch.setattr(Evaluator, "load", recorded)
    try:
        other = asyncio.create_task(other_work())
        await rig.start([coin(1), coin(2)])
        other.cancel()
        loads = [i for i, what in enumerate(happened) if what.startswith("mon_")]
        assert [happened[i] for i in loads] == ["mon_1", "mon_2"]
        assert "other" in happened[loads[0] : loads[1]]
        [evaluation] = await rig.engine.test(rules[-1])  # 20 h of samples every 10 s, all loaded
        assert evaluation.value == 6000
    finally:
        await rig.engine.stop()
        await timeseries.close()
        await database.close()
