"""Alerting figures (parts 1-4 of the issue's benchmark; part 5 is bench/alerting_e2e_bench.py).

Part 1, the evaluator's throughput:

- ``eval_samples_per_s``: samples folded into the incremental evaluator and evaluated, per second of one
  core, with ``eval_rules`` rules loaded: one rule on each of ``eval_monitors`` monitors (a mix of condition
  kinds, ``eval_mix``) plus a few selector rules over labelled monitors. Samples are website checks (four
  fields each), one per monitor per simulated minute, fed in batches of ``eval_batch`` as the feeds deliver
  them, with ``tick`` called once per batch (windows expiring, no_data deadlines) and counted in the time.
  The evaluator first runs ``eval_warm_minutes`` simulated minutes so windows and baselines are full; then
  ``eval_minutes`` minutes are timed. Sample generation is outside the timed part. Also
  ``eval_evaluations_per_s`` (evaluations returned).

Parts 2-4 run on one real influxd (started here on free ports) holding ``history_minutes`` (15) minutes of
website checks, one a minute, of 100,000 series (99,999 monitors and the probe: InfluxDB 1.x takes at most
100,000 values of a tag by default), written as line protocol in batches of 20,000:

- (4) ``per_rule_cycle_10k_s``: the seeds' polling, one InfluxQL statement per rule (a 5-minute mean of one
  monitor), 10,000 rules in turn; ``batched_cycle_100k_s``: one statement over every series (GROUP BY owner,
  monitor). Also points_many's two ways of reading history: ``history_read_scan_100k_s`` (one statement,
  wanted series kept here) and ``history_read_named_10k_s`` (statements naming 5,000 monitors each in a
  regular expression, 10,000 series).
- (3) ``warm_start_100k_s``: 100,000 rules (one per series: 5-minute means, 15-minute p95s, no_data,
  latest status codes, monitor_down) bulk-inserted in a SQLite alert store; AlertEngine.load + the feed's
  snapshot of 100,000 monitors + the warm start from InfluxDB, until the engine is ready (its snapshot event
  set; the default rules of the 1,001 new owners are made after, ``warm_start_then_default_rules_s``). Also
  one reconciliation of them all (``reconcile_100k_s``). With each, the CPU time this process and influxd
  spent (``warm_start_cpu_s``, ``warm_start_influxd_cpu_s``, ``reconcile_cpu_s``,
  ``reconcile_influxd_cpu_s``): steadier than wall time on a shared machine.
- (2) ``write_to_fire_p50_ms`` / ``_p99_ms``: on part 3's engine, with the alert service's InfluxIngest
  endpoint subscribed to InfluxDB: a line with status_code 503 POSTed to InfluxDB's /write (timed from just
  before the request) until the probe's rule's FIRED transition is published (stored first); then a 200
  resolves it; 200 trials after 10 untimed.

Merges its figures into ``bench/results/alerting.json`` (other parts write other keys there).

    .venv/bin/python -m bench.alerting_bench [--parts 1234] [--monitors 100000] [--minutes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench import merge_figures
from harness.external import InfluxDBServer
from service_runtime.database import open_database
from service_runtime.timeseries import Aggregation, InfluxConfig, InfluxStore, SeriesKey
from service_runtime.timeseries.influx_store import quote_identifier
from service_runtime.timeseries.port import to_ns
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
    RuleDraft,
    SampleEvent,
    Severity,
    ThresholdCondition,
    Transition,
    validate_rule,
)
from services.alert_svc.engine import AlertEngine, Change, collector_paused
from services.alert_svc.evaluator import Evaluator
from services.alert_svc.influx_ingest import InfluxIngest, register_subscription
from services.alert_svc.server import MIGRATIONS, VERSION_TABLE
from services.alert_svc.store import AlertStore

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


# --- parts 2-4: against a real InfluxDB ------------------------------------------------------------------

HISTORY_OWNERS = 1000
PROBE = MonitorInfo("mon_probe", "usr_probe", "probe", {}, "website", MonitorState.UP)
PROBE_CONDITION = ThresholdCondition("status_code", Aggregation.LAST, timedelta(0), Operator.GE, 500.0)
# Part 3's rules, one per monitor: (share, condition). History groups: response_time_ms over 5 and 15
# minutes, is_up over 5 (no_data), status_code over an hour (a zero window's latest value).
WARM_MIX: list[tuple[float, Condition]] = [
    (0.50, ThresholdCondition("response_time_ms", Aggregation.MEAN, timedelta(minutes=5), Operator.GT, 800.0)),
    (0.20, ThresholdCondition("response_time_ms", Aggregation.P95, timedelta(minutes=15), Operator.GT, 1500.0)),
    (0.15, NoDataCondition(timedelta(minutes=5))),
    (0.10, ThresholdCondition("status_code", Aggregation.LAST, timedelta(0), Operator.GE, 500.0)),
    (0.05, MonitorDownCondition()),
]  # fmt: skip


def series_of(m: int, monitors: int) -> tuple[str, str]:
    """(owner, monitor) of the m-th of ``monitors`` series: the last is the probe (part 2's rule watches it),
    so there are ``monitors`` series in all (InfluxDB 1.x takes at most 100,000 values of a tag by default)."""
    if m == monitors - 1:
        return PROBE.owner_id, PROBE.monitor_id
    return f"usr_{m % HISTORY_OWNERS}", f"mon_{m}"


def history_lines(monitors: int, end_s: int, minutes: int) -> Iterator[str]:
    """One website check per monitor per minute over the ``minutes`` before ``end_s``, as line protocol."""
    rng = random.Random(3)
    for minute in range(minutes, 0, -1):
        at = end_s - minute * 60
        for m in range(monitors):
            rt = rng.uniform(40, 400)
            owner, monitor = series_of(m, monitors)
            yield (
                f"check,monitor={monitor},owner={owner} is_up=1,response_time_ms={rt:.1f},"
                f"status_code=200,cert_days_left=60 {at + m % 60}"
            )


async def write_lines(url: str, database: str, lines: Iterator[str], batch: int = 20_000) -> int:
    """Line protocol straight to /write (seconds precision), a few batches in flight."""
    written = 0
    params = {"db": database, "rp": "monitors_raw", "precision": "s"}
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(120.0)) as http:
        pending: set[asyncio.Task[httpx.Response]] = set()
        chunk: list[str] = []
        for line in itertools.chain(lines, [""]):
            if line:
                chunk.append(line)
            if len(chunk) == batch or (not line and chunk):
                body = "\n".join(chunk).encode()
                pending.add(asyncio.create_task(http.post("/write", params=params, content=body)))
                written += len(chunk)
                chunk = []
                if len(pending) >= 3:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        assert task.result().status_code == 204, task.result().text
        for outstanding in asyncio.as_completed(pending):
            reply = await outstanding
            assert reply.status_code == 204, reply.text
    return written


async def seed_rules(store: AlertStore, monitors: int) -> dict[str, int]:
    """One rule per monitor (WARM_MIX), and the probe's, inserted in bulk (the bench's shortcut past
    create_rule's per-owner quota check, one transaction per rule)."""
    import sqlalchemy as sa

    from services.alert_svc.store import RuleRow, _rule_values

    kinds: list[Condition] = []
    for share, condition in WARM_MIX:
        kinds += [condition] * round(share * monitors)
    kinds = (kinds + [WARM_MIX[0][1]] * monitors)[:monitors]
    random.Random(4).shuffle(kinds)
    now = datetime.now(UTC)
    rows = []
    targets = [(*series_of(m, monitors), kinds[m]) for m in range(monitors - 1)]
    targets.append((PROBE.owner_id, PROBE.monitor_id, PROBE_CONDITION))
    for i, (owner, monitor_id, condition) in enumerate(targets):
        draft = validate_rule(RuleDraft(monitor_id=monitor_id, condition=condition), "website")
        values = {"id": f"rul_bench_{i:07d}", "owner_id": owner, "is_default": False}
        rows.append({**values, "create_time": now, "update_time": now, **_rule_values(draft)})
    for i in range(0, len(rows), 5000):
        page = rows[i : i + 5000]
        await store._db.run(lambda c, page=page: c.execute(sa.insert(RuleRow), page))  # type: ignore[misc]
    counts: dict[str, int] = {}
    for condition in kinds:
        counts[type(condition).__name__] = counts.get(type(condition).__name__, 0) + 1
    return counts


def bench_monitors(monitors: int) -> list[MonitorInfo]:
    return [
        MonitorInfo(f"mon_{m}", f"usr_{m % HISTORY_OWNERS}", f"site {m}", {}, "website", MonitorState.UP)
        for m in range(monitors - 1)
    ] + [PROBE]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc; 0 where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _TimedEvent(asyncio.Event):
    """An event that remembers when it was set, and the CPU time of this process and of influxd then."""

    def __init__(self, influxd_pid: int) -> None:
        super().__init__()
        self.influxd_pid = influxd_pid
        self.set_at = self.cpu_at = self.influxd_cpu_at = 0.0

    def set(self) -> None:
        self.set_at, self.cpu_at = time.perf_counter(), time.process_time()
        self.influxd_cpu_at = cpu_seconds(self.influxd_pid)
        super().set()


async def warm_start(engine: AlertEngine, monitors: list[MonitorInfo], influxd_pid: int) -> dict[str, Any]:
    """Part 3: engine.load (rules from the alert store) + the feed's snapshot + the warm start. Wall time, and
    the CPU time of this process and of influxd (the machine is shared: CPU time is the steadier figure)."""
    gc.collect()
    # Ready is when the engine's snapshot event is set: the bench's own poll of engine.ready could not run
    # until the new owners' default rules were made after it (the SQLite store does not yield meanwhile).
    ready = engine._snapshot = _TimedEvent(influxd_pid)
    begin = time.perf_counter()
    cpu_begin, influxd_begin = time.process_time(), cpu_seconds(influxd_pid)
    with collector_paused():
        await engine.load()
    loaded = time.perf_counter()
    snapshot = asyncio.create_task(engine.feed_snapshot(monitors))  # warms up from InfluxDB inside
    await snapshot  # ready (evaluating with history), then default rules for the new owners
    done, cpu_done, influxd_done = ready.set_at, ready.cpu_at, ready.influxd_cpu_at
    defaults_s = time.perf_counter() - done
    requests = engine.evaluator.history_needed()
    began = time.perf_counter()
    cpu_began, influxd_began = time.process_time(), cpu_seconds(influxd_pid)
    assert await engine.reconcile()
    reconcile_s = time.perf_counter() - began
    reconcile_cpu_s, reconcile_influxd_s = time.process_time() - cpu_began, cpu_seconds(influxd_pid) - influxd_began
    return {
        "warm_start_100k_s": round(done - begin, 2),
        "warm_start_rules_load_s": round(loaded - begin, 2),
        "warm_start_snapshot_and_history_s": round(done - loaded, 2),
        "warm_start_cpu_s": round(cpu_done - cpu_begin, 2),
        "warm_start_influxd_cpu_s": round(influxd_done - influxd_begin, 2),
        "warm_start_history_queries": len(requests),
        "warm_start_then_default_rules_s": round(defaults_s, 2),
        "reconcile_100k_s": round(reconcile_s, 2),
        "reconcile_cpu_s": round(reconcile_cpu_s, 2),
        "reconcile_influxd_cpu_s": round(reconcile_influxd_s, 2),
    }


async def write_to_fire(engine: AlertEngine, config: InfluxConfig, trials: int) -> dict[str, Any]:
    """Part 2: a line written to InfluxDB's /write (timed from just before the HTTP request) reaches the
    alert service through InfluxDB's subscription and its ingest endpoint, and the probe's rule fires."""
    ingest = InfluxIngest(engine, "127.0.0.1:0", config.database)
    port = await ingest.start()
    await register_subscription(config, [f"http://127.0.0.1:{port}"])
    fired = asyncio.Event()
    fired_at = 0.0

    def on_change(change: Change) -> bool:
        nonlocal fired_at
        if change.alert.monitor_id == PROBE.monitor_id and change.transition is Transition.FIRED:
            fired_at = time.perf_counter()
            fired.set()
        return False

    subscription = engine.changes.subscribe_everyone(on_change)
    params = {"db": config.database, "rp": config.retention_policy, "precision": "ns"}
    latencies: list[float] = []
    try:
        async with httpx.AsyncClient(base_url=config.url, timeout=httpx.Timeout(10.0)) as http:

            async def post(status: int) -> float:
                ns = time.time_ns()
                line = f"check,monitor={PROBE.monitor_id},owner={PROBE.owner_id} is_up=1,status_code={status} {ns}"
                begin = time.perf_counter()
                reply = await http.post("/write", params=params, content=line.encode())
                assert reply.status_code == 204, reply.text
                return begin

            await asyncio.sleep(1.0)  # InfluxDB starts its subscriber writers
            for trial in range(trials + 10):
                fired.clear()
                begin = await post(503)
                await asyncio.wait_for(fired.wait(), 10.0)
                if trial >= 10:  # the first ones open connections
                    latencies.append(fired_at - begin)
                await post(200)  # resolves
                await asyncio.sleep(0.01)
    finally:
        engine.changes.unsubscribe(subscription)
        await ingest.stop()
    latencies.sort()
    return {
        "write_to_fire_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "write_to_fire_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        "write_to_fire_trials": len(latencies),
    }


async def polling_cycles(store: InfluxStore, monitors: int, per_rule: int, end: datetime) -> dict[str, Any]:
    """Part 4, the polling designs for comparison: one InfluxQL statement per rule (mean over 5 minutes of
    one monitor, in turn) for ``per_rule`` rules; one statement for every series (GROUP BY owner, monitor);
    and points_many's two ways of reading history over many series."""
    start = end - timedelta(minutes=5)
    begin = time.perf_counter()
    for m in range(per_rule):
        key = SeriesKey(f"usr_{m % HISTORY_OWNERS}", f"mon_{m}")
        await store.stats_many(key.owner_id, [key.monitor_id], "response_time_ms", start, end, [Aggregation.MEAN])
    per_rule_s = time.perf_counter() - begin
    column = quote_identifier("response_time_ms")
    statement = (
        f"SELECT mean({column}) FROM {quote_identifier('monitors_raw')}.{quote_identifier('check')}"
        f" WHERE time >= {to_ns(start)} AND time < {to_ns(end)}"
        f" GROUP BY {quote_identifier('owner')}, {quote_identifier('monitor')}"
    )
    begin = time.perf_counter()
    body = await store._query(statement)
    batched_s = time.perf_counter() - begin
    series = sum(len(r.get("series", [])) for r in body["results"])
    assert series == monitors, series
    keys = [SeriesKey(*series_of(m, monitors)) for m in range(monitors)]
    begin = time.perf_counter()
    scanned = await store.points_scanned("response_time_ms", set(keys), start, end, 10_000)
    scanned_s = time.perf_counter() - begin
    assert len(scanned) == monitors
    tenth = keys[: monitors // 10]
    begin = time.perf_counter()
    named = await store.points_filtered("response_time_ms", tenth, start, end, 10_000)
    named_s = time.perf_counter() - begin
    assert len(named) == len(tenth)
    return {
        "per_rule_cycle_10k_s": round(per_rule_s * 10_000 / per_rule, 2),
        "per_rule_cycle_rules_timed": per_rule,
        "batched_cycle_100k_s": round(batched_s * 100_000 / monitors, 2),
        "batched_cycle_series": monitors,
        "history_read_scan_100k_s": round(scanned_s * 100_000 / monitors, 2),
        "history_read_named_10k_s": round(named_s * 10_000 / len(tenth), 2),
    }


def progress(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


async def influx_parts(args: argparse.Namespace, parts: set[str]) -> dict[str, Any]:
    """Parts 2-4 on one influxd: history for every monitor, then 4, 3 and 2 (2 runs on part 3's engine)."""
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, InfluxDBServer(Path(tmp)) as server:
        config = InfluxConfig(url=server.url, database="bench", timeout_s=120, flush_interval_s=0.01)
        store = await InfluxStore.open(config)
        database = await open_database(f"sqlite:///{Path(tmp) / 'alert.sqlite3'}", MIGRATIONS, VERSION_TABLE)
        alerts = AlertStore(database, 1000)
        engine = AlertEngine(alerts, store)
        try:
            now_s = int(time.time())
            begin = time.perf_counter()
            lines = await write_lines(
                server.url, "bench", history_lines(args.history_monitors, now_s, args.history_minutes)
            )
            figures["history_lines"] = lines
            figures["history_write_s"] = round(time.perf_counter() - begin, 1)
            figures["history_minutes"] = args.history_minutes
            progress(f"history written: {lines} lines in {figures['history_write_s']} s")
            if "4" in parts:
                end = datetime.fromtimestamp(now_s, UTC)
                figures |= await polling_cycles(store, args.history_monitors, args.per_rule, end)
                progress("part 4 done")
            if "3" in parts or "2" in parts:
                figures["warm_mix"] = await seed_rules(alerts, args.history_monitors)
                influxd_pid = server._process.pid if server._process is not None else 0
                figures |= await warm_start(engine, bench_monitors(args.history_monitors), influxd_pid)
                figures["warm_start_rules"] = args.history_monitors
                progress(f"part 3 done: warm start {figures['warm_start_100k_s']} s")
            if "2" in parts:
                figures |= await write_to_fire(engine, config, args.trials)
        finally:
            await engine.stop()
            await store.close()
            await database.close()
    figures["influxdb"] = "influxd 1.x (Debian influxdb), same machine"
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--monitors", type=int, default=100_000)
    parser.add_argument("--warm-minutes", type=int, default=65, help="simulated minutes before timing")
    parser.add_argument("--minutes", type=int, default=10, help="simulated minutes timed")
    parser.add_argument("--batch", type=int, default=1000, help="samples per add_samples call")
    parser.add_argument("--parts", default="1234", help="which parts to run (digits)")
    parser.add_argument("--history-monitors", type=int, default=100_000, help="parts 2-4: series in InfluxDB")
    parser.add_argument("--history-minutes", type=int, default=15, help="parts 2-4: minutes of history each")
    parser.add_argument("--per-rule", type=int, default=10_000, help="part 4: rules polled one query each")
    parser.add_argument("--trials", type=int, default=200, help="part 2: writes timed to firing")
    args = parser.parse_args()
    parts = set(args.parts)
    figures: dict[str, Any] = {}
    if "1" in parts:
        figures = eval_throughput(args.monitors, args.warm_minutes, args.minutes, args.batch)
    if parts & set("234"):
        figures |= asyncio.run(influx_parts(args, parts))
    figures["cpus"] = os.cpu_count()
    figures["python"] = platform.python_version()
    merge_figures(RESULTS, figures)


if __name__ == "__main__":
    main()
