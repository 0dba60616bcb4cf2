"""Alerting figures. Part 1 (this file so far): the evaluator's throughput.

- ``eval_samples_per_s``: samples folded into the incremental evaluator and evaluated, per second of one
  core, with ``eval_rules`` rules loaded: one rule on each of ``eval_monitors`` monitors (a mix of condition
  kinds, ``eval_mix``) plus a few selector rules over labelled monitors. Samples are website checks (four
  fields each), one per monitor per simulated minute, fed in batches of ``eval_batch`` as the feeds deliver
  them, with ``tick`` called once per batch (windows expiring, no_data deadlines) and counted in the time.
  The evaluator first runs ``eval_warm_minutes`` simulated minutes so windows and baselines are full; then
  ``eval_minutes`` minutes are timed. Sample generation is outside the timed part. Also
  ``eval_evaluations_per_s`` (evaluations returned).

Merges its figures into ``bench/results/alerting.json`` (other parts write other keys there).

    .venv/bin/python -m bench.alerting_bench [--monitors 100000] [--minutes 10]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from service_runtime.timeseries import Aggregation
from services.alert_svc.domain import (
    AlertRule,
    AnomalyCondition,
    ChangeCondition,
    Condition,
    Direction,
    MonitorDownCondition,
    MonitorInfo,
    MonitorState,
    NoDataCondition,
    Operator,
    SampleEvent,
    Severity,
    ThresholdCondition,
)
from services.alert_svc.evaluator import Evaluator

RESULTS = Path(__file__).resolve().parent / "results" / "alerting.json"
OWNERS = 1000
START = 1_000_000.0  # simulated clock (seconds); far from the present on purpose
MINUTE = 60.0

# (share of the monitors, condition)
MIX: list[tuple[float, str, Condition]] = [
    (0.35, "threshold mean 5m", ThresholdCondition("response_time_ms", Aggregation.MEAN, timedelta(minutes=5),
                                                    Operator.GT, 800.0)),
    (0.10, "threshold p95 15m", ThresholdCondition("response_time_ms", Aggregation.P95, timedelta(minutes=15),
                                                    Operator.GT, 1500.0)),
    (0.10, "threshold max 10m", ThresholdCondition("response_time_ms", Aggregation.MAX, timedelta(minutes=10),
                                                    Operator.GT, 2000.0)),
    (0.10, "threshold latest", ThresholdCondition("status_code", Aggregation.LAST, timedelta(0), Operator.GE, 500)),
    (0.10, "change 1h", ChangeCondition("response_time_ms", timedelta(hours=1), 50.0, Direction.UP)),
    (0.10, "anomaly latest vs 1h", AnomalyCondition("response_time_ms", timedelta(0), timedelta(hours=1), 3.0, 30,
                                                     Direction.UP)),
    (0.10, "no_data 5m", NoDataCondition(timedelta(minutes=5))),
    (0.05, "monitor_down", MonitorDownCondition()),
]  # fmt: skip
SELECTOR_RULES = 10  # each over the monitors labelled team=<its own>, about 1% of them


def rule(
    rule_id: str, owner: str, condition: Condition, monitor_id: str = "", selector: dict[str, str] | None = None
) -> AlertRule:
    moment = datetime.fromtimestamp(START, UTC)
    return AlertRule(
        id=rule_id, owner_id=owner, display_name=rule_id, monitor_id=monitor_id, selector=selector or {},
        condition=condition, severity=Severity.WARNING, for_duration=timedelta(0), keep_firing_for=timedelta(0),
        repeat_interval=None, cooldown=timedelta(0), escalate_after=None, channel_ids=(), escalation_channel_ids=(),
        enabled=True, description="", labels={}, is_default=False, create_time=moment, update_time=moment,
    )  # fmt: skip


def load_rules(evaluator: Evaluator, monitors: int) -> dict[str, Any]:
    rng = random.Random(1)
    kinds: list[str] = []
    for share, name, _ in MIX:
        kinds += [name] * round(share * monitors)
    kinds = (kinds + [MIX[0][1]] * monitors)[:monitors]
    rng.shuffle(kinds)
    by_name = {name: condition for _, name, condition in MIX}
    for m in range(monitors):
        owner = f"usr_{m % OWNERS}"
        labels = {"team": f"t{m % 100}"}
        evaluator.put_monitor(MonitorInfo(f"mon_{m}", owner, f"site {m}", labels, "website", MonitorState.UP), START)
        evaluator.put_rule(rule(f"rule_{m}", owner, by_name[kinds[m]], monitor_id=f"mon_{m}"), START)
    # Selector rules: team t<i> of one owner; monitors m with m % 100 == i and m % OWNERS == owner index, i.e.
    # owner usr_i's team t<i> (every monitor of usr_i has team t<i % 100>), about monitors / OWNERS each.
    for i in range(SELECTOR_RULES):
        condition = ThresholdCondition("response_time_ms", Aggregation.MEAN, timedelta(minutes=5), Operator.GT, 1000)
        evaluator.put_rule(rule(f"sel_{i}", f"usr_{i}", condition, selector={"team": f"t{i}"}), START)
    selector_pairs = sum(len(evaluator.pairs(f"sel_{i}")) for i in range(SELECTOR_RULES))
    counts: dict[str, int] = {}
    for name in kinds:
        counts[name] = counts.get(name, 0) + 1
    return {"mix": counts, "selector_rules": SELECTOR_RULES, "selector_pairs": selector_pairs}


def minute_of_samples(monitors: int, minute: int, rng: random.Random) -> list[SampleEvent]:
    """One website check per monitor, spread over the minute in time order."""
    base = START + minute * MINUTE
    step = MINUTE / monitors
    out = []
    for m in range(monitors):
        slow = m % 97 == 0 and minute % 20 > 15  # a few monitors get slow now and then
        rt = rng.uniform(40, 400) * (6 if slow else 1)
        fields = {"is_up": 1.0, "response_time_ms": rt, "status_code": 200.0, "cert_days_left": 60.0}
        out.append(SampleEvent(f"usr_{m % OWNERS}", f"mon_{m}", base + m * step, fields))
    return out


def batches(samples: list[SampleEvent], size: int) -> Iterator[list[SampleEvent]]:
    for i in range(0, len(samples), size):
        yield samples[i : i + size]


def feed(evaluator: Evaluator, samples: list[SampleEvent], size: int) -> tuple[float, int]:
    """Feed one minute of samples in batches, ticking after each; (seconds spent, evaluations returned)."""
    evaluations = 0
    spent = 0.0
    for batch in batches(samples, size):
        begin = time.perf_counter()
        evaluations += len(evaluator.add_samples(batch))
        evaluations += len(evaluator.tick(batch[-1].time))
        spent += time.perf_counter() - begin
    return spent, evaluations


def eval_throughput(monitors: int, warm_minutes: int, minutes: int, batch: int) -> dict[str, Any]:
    """Part 1: samples evaluated per second with one rule per monitor loaded (see the module docstring)."""
    evaluator = Evaluator()
    begin = time.perf_counter()
    loaded = load_rules(evaluator, monitors)
    load_s = time.perf_counter() - begin
    rng = random.Random(2)
    for minute in range(warm_minutes):
        feed(evaluator, minute_of_samples(monitors, minute, rng), batch)
    spent = 0.0
    evaluations = 0
    for minute in range(warm_minutes, warm_minutes + minutes):
        samples = minute_of_samples(monitors, minute, rng)
        gc.collect()
        took, count = feed(evaluator, samples, batch)
        spent += took
        evaluations += count
    rules = monitors + SELECTOR_RULES
    return {
        "eval_samples_per_s": round(monitors * minutes / spent),
        "eval_evaluations_per_s": round(evaluations / spent),
        "eval_rules": rules,
        "eval_monitors": monitors,
        "eval_mix": loaded["mix"],
        "eval_selector_rules": loaded["selector_rules"],
        "eval_selector_pairs": loaded["selector_pairs"],
        "eval_fields_per_sample": 4,
        "eval_batch": batch,
        "eval_warm_minutes": warm_minutes,
        "eval_minutes": minutes,
        "eval_rules_load_s": round(load_s, 2),
    }


def merge_figures(path: Path, figures: dict[str, Any]) -> None:
    """Write ``figures`` into ``path``, keeping the keys other parts of the benchmark wrote there."""
    existing: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    existing.update(figures)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(existing, indent=2)
    path.write_text(text + "\n")
    print(json.dumps(figures, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--monitors", type=int, default=100_000)
    parser.add_argument("--warm-minutes", type=int, default=65, help="simulated minutes before timing")
    parser.add_argument("--minutes", type=int, default=10, help="simulated minutes timed")
    parser.add_argument("--batch", type=int, default=1000, help="samples per add_samples call")
    args = parser.parse_args()
    figures = eval_throughput(args.monitors, args.warm_minutes, args.minutes, args.batch)
    figures["cpus"] = os.cpu_count()
    figures["python"] = platform.python_version()
    merge_figures(RESULTS, figures)


if __name__ == "__main__":
    main()
