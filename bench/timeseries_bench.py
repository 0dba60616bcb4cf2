"""Time-series figures against a real InfluxDB (influxd 1.x started here on a free port).

- ``influx_write_samples_per_s``: website-check samples (is_up, response_time_ms, status_code,
  cert_days_left; owner, monitor and location tags) written through our adapter (line protocol built with
  influxdb-client's Point, batches of 5,000 over HTTP), counted from the first write until InfluxDB has
  acknowledged the last batch.
- ``summary_10k_monitors_s``: a day of samples for each of 10,000 monitors (one check every
  ``--interval-s``, with a few outages; 500 owners of 20 monitors each), then the 24-hour website summary
  (uptime, outages, response-time p50/p95/p99, certificate days) of every one of the 10,000 monitors,
  each owner's monitors together (a few InfluxQL statements per owner), 8 owners at a time. Also the
  latency of one monitor's summary alone (``summary_one_monitor_p50_ms``).
- ``summary_batch_10k_monitors_s``: the same day of samples for 10,000 monitors of *one* owner, then all of
  their 24-hour summaries as SummarizeMonitors reads them (``services.monitor_svc.summaries.overview`` over the
  store's digests, kept as the samples are written: a few statements for the whole batch, no raw sample read).
  ``summary_batch_10k_monitors_unaligned_s`` is the same over a day that starts 17 minutes into an hour (its
  first and last hours are partial, as in the default "last 24 hours").
  ``summary_one_owner_10k_monitors_per_owner_path_s`` is the same summaries through ``summarize_websites``
  (statements per hundred monitors over the raw samples, queries per failing monitor), the path before the
  batch; ``summary_batch_10k_monitors_embedded_s`` (and ``..._unaligned_s``) the batch on the embedded SQLite
  store, loaded with the same day.

Writes ``bench/results/timeseries.json``.

    make bench     # or: .venv/bin/python -m bench.timeseries_bench [--monitors 10000]
    .venv/bin/python -m bench.timeseries_bench --parts batch   # the batch figures alone, merged into the file
    .venv/bin/python -m bench.timeseries_bench --parts write   # the write figure alone, likewise
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import merge_figures, write_figures
from harness.external import InfluxDBServer
from harness.services import REPO
from service_runtime.timeseries import InfluxConfig, InfluxStore, Sample, SeriesKey, SqliteSampleStore, TimeSeriesStore
from services.monitor_svc.summaries.overview import summarize_many
from services.monitor_svc.summaries.queries import WebsiteSummary, summarize_website, summarize_websites

RESULTS = REPO / "bench" / "results" / "timeseries.json"
CHUNK = 5000
OWNERS = 500  # 10,000 monitors: 20 per owner
CONCURRENCY = 8


def website_sample(owner: str, monitor: str, at: datetime, rng: random.Random, down: bool) -> Sample:
    notes = {"error_class": "timeout", "message": "timed out after 10s"} if down else {}
    return Sample(
        owner,
        monitor,
        at,
        {
            "is_up": 0.0 if down else 1.0,
            "response_time_ms": rng.uniform(40, 900),
            "status_code": 0.0 if down else 200.0,
            "cert_days_left": 60.0,
        },
        {"location": "eu-west"},
        notes,
    )


async def write_day(
    store: TimeSeriesStore, monitors: int, start: datetime, interval: timedelta, one_owner: str = ""
) -> int:
    """One day of checks for every monitor, in time order; every 50th monitor has a 20-minute outage. The
    monitors are spread over OWNERS owners, or all ``one_owner``'s (named big_<n> then)."""
    rng = random.Random(7)
    steps = int(timedelta(days=1) / interval)
    written = 0
    batch: list[Sample] = []
    for step in range(steps):
        at = start + step * interval
        for m in range(monitors):
            down = m % 50 == 0 and steps // 2 <= step < steps // 2 + max(1, int(timedelta(minutes=20) / interval))
            owner, monitor = (one_owner, f"big_{m}") if one_owner else (f"usr_{m % OWNERS}", f"mon_{m}")
            batch.append(website_sample(owner, monitor, at, rng, down))
            if len(batch) == CHUNK:
                await store.write(batch)
                written += len(batch)
                batch = []
                if isinstance(store, InfluxStore) and len(store._buffer) > 50_000:  # keep the buffer from overflowing
                    await store.flush(timeout_s=120)
    await store.write(batch)
    await store.flush(timeout_s=300)
    return written + len(batch)


async def measure_writes(store: InfluxStore, count: int) -> float:
    """Seconds to write ``count`` fresh samples for 1,000 monitors, a minute apart, until InfluxDB has them."""
    rng = random.Random(1)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    samples = [
        website_sample(f"usr_{i % 100}", f"wmon_{i % 1000}", start + timedelta(seconds=i // 1000), rng, False)
        for i in range(count)
    ]
    began = time.perf_counter()
    for i in range(0, len(samples), CHUNK):
        await store.write(samples[i : i + CHUNK])
        if len(store._buffer) > 100_000:
            await store.flush(timeout_s=120)
    await store.flush(timeout_s=300)
    write_s = time.perf_counter() - began
    assert store.dropped == 0, f"{store.dropped} samples dropped"
    return write_s


async def writes_alone(args: argparse.Namespace, server: InfluxDBServer) -> dict[str, object]:
    store = await InfluxStore.open(InfluxConfig(url=server.url, database="bench", buffer_limit=200_000, timeout_s=30))
    try:
        write_s = await measure_writes(store, args.write_samples)
    finally:
        await store.close()
    return {"influx_write_samples_per_s": round(args.write_samples / write_s, 1), "write_samples": args.write_samples}


async def measure(args: argparse.Namespace, server: InfluxDBServer) -> dict[str, object]:
    config = InfluxConfig(url=server.url, database="bench", buffer_limit=200_000, timeout_s=30)
    store = await InfluxStore.open(config)
    try:
        write_s = await measure_writes(store, args.write_samples)

        day_start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
        interval = timedelta(seconds=args.interval_s)
        loaded = await write_day(store, args.monitors, day_start, interval)
        day_end = day_start + timedelta(days=1)

        owners: dict[str, list[str]] = {}
        for m in range(args.monitors):
            owners.setdefault(f"usr_{m % OWNERS}", []).append(f"mon_{m}")
        semaphore = asyncio.Semaphore(CONCURRENCY)
        outages = 0

        async def summarize_owner(owner: str, monitor_ids: list[str]) -> None:
            nonlocal outages
            async with semaphore:
                summaries = await summarize_websites(store, owner, monitor_ids, day_start, day_end)
            for summary in summaries.values():
                assert summary.availability.checks == loaded // args.monitors, summary.availability
                outages += len(summary.availability.outages)

        began = time.perf_counter()
        await asyncio.gather(*(summarize_owner(owner, ids) for owner, ids in owners.items()))
        summary_s = time.perf_counter() - began
        assert outages == len(range(0, args.monitors, 50)), outages

        latencies = []
        for m in range(0, args.monitors, max(1, args.monitors // 200)):
            t = time.perf_counter()
            await summarize_website(store, SeriesKey(f"usr_{m % OWNERS}", f"mon_{m}"), day_start, day_end)
            latencies.append(time.perf_counter() - t)
    finally:
        await store.close()
    latencies.sort()
    return {
        "influx_write_samples_per_s": round(args.write_samples / write_s, 1),
        "summary_10k_monitors_s": round(summary_s, 2),
        "summary_one_monitor_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "summary_one_monitor_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        "write_samples": args.write_samples,
        "monitors": args.monitors,
        "samples_per_monitor_per_day": loaded // args.monitors,
        "day_samples_loaded": loaded,
        "owners": OWNERS,
        "summary_concurrency_owners": CONCURRENCY,
        "influxdb": "influxd 1.x (Debian influxdb), same machine",
        "cpus": os.cpu_count() or 0,
        "python": platform.python_version(),
    }


BIG_OWNER = "usr_big"


UNALIGNED = timedelta(minutes=17)


async def summarize_batch(
    store: TimeSeriesStore,
    monitors: int,
    day_start: datetime,
    loaded: int,
    shift: timedelta = timedelta(0),
    interval: timedelta = timedelta(seconds=300),
) -> float:
    """Seconds to summarise every one of BIG_OWNER's monitors over 24 hours from ``shift`` after the start of their
    day of checks (one every ``interval``) as SummarizeMonitors does."""
    start = day_start + shift
    end = start + timedelta(days=1)
    began = time.perf_counter()
    summaries = await summarize_many(store, BIG_OWNER, [(f"big_{m}", "website") for m in range(monitors)], start, end)
    took = time.perf_counter() - began
    assert len(summaries) == monitors
    outages = 0
    checks = loaded // monitors - math.ceil(shift / interval)  # those before the shifted start are out
    for summary in summaries.values():
        assert isinstance(summary, WebsiteSummary)
        assert summary.availability.checks == checks, summary.availability
        outages += len(summary.availability.outages)
    assert outages == len(range(0, monitors, 50)), outages
    return took


async def measure_batch(args: argparse.Namespace, server: InfluxDBServer, tmp: Path) -> dict[str, object]:
    """The batch figures: one owner's 10,000 monitors on InfluxDB (batch, and the per-owner path before it), and
    the batch on the embedded store."""
    day_start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    interval = timedelta(seconds=args.interval_s)
    config = InfluxConfig(url=server.url, database="bench_batch", buffer_limit=200_000, timeout_s=60)
    store = await InfluxStore.open(config)
    try:
        loaded = await write_day(store, args.monitors, day_start, interval, one_owner=BIG_OWNER)
        batch_runs = [await summarize_batch(store, args.monitors, day_start, loaded) for _ in range(3)]
        unaligned_runs = [
            await summarize_batch(store, args.monitors, day_start, loaded, UNALIGNED, interval) for _ in range(3)
        ]
        ids = [f"big_{m}" for m in range(args.monitors)]
        began = time.perf_counter()
        await summarize_websites(store, BIG_OWNER, ids, day_start, day_start + timedelta(days=1))
        per_owner_path_s = time.perf_counter() - began
    finally:
        await store.close()
    embedded = SqliteSampleStore(tmp / "timeseries.sqlite3")
    try:
        embedded_loaded = await write_day(embedded, args.embedded_monitors, day_start, interval, one_owner=BIG_OWNER)
        embedded_runs = [
            await summarize_batch(embedded, args.embedded_monitors, day_start, embedded_loaded) for _ in range(3)
        ]
        embedded_unaligned_runs = [
            await summarize_batch(embedded, args.embedded_monitors, day_start, embedded_loaded, UNALIGNED, interval)
            for _ in range(3)
        ]
    finally:
        await embedded.close()
    return {
        "summary_batch_10k_monitors_s": round(min(batch_runs), 2),
        "summary_batch_10k_monitors_runs_s": [round(r, 2) for r in batch_runs],
        "summary_batch_10k_monitors_unaligned_s": round(min(unaligned_runs), 2),
        "summary_batch_10k_monitors_unaligned_runs_s": [round(r, 2) for r in unaligned_runs],
        "summary_one_owner_10k_monitors_per_owner_path_s": round(per_owner_path_s, 2),
        "summary_batch_10k_monitors_embedded_s": round(min(embedded_runs), 2),
        "summary_batch_10k_monitors_embedded_runs_s": [round(r, 2) for r in embedded_runs],
        "summary_batch_10k_monitors_embedded_unaligned_s": round(min(embedded_unaligned_runs), 2),
        "summary_batch_10k_monitors_embedded_unaligned_runs_s": [round(r, 2) for r in embedded_unaligned_runs],
        "summary_batch_monitors": args.monitors,
        "summary_batch_embedded_monitors": args.embedded_monitors,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--monitors", type=int, default=10_000)
    parser.add_argument("--interval-s", type=int, default=300)
    parser.add_argument("--write-samples", type=int, default=200_000)
    parser.add_argument("--embedded-monitors", type=int, default=10_000)
    parser.add_argument("--parts", choices=("all", "batch", "write"), default="all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, InfluxDBServer(Path(tmp)) as server:
        if args.parts == "write":
            merge_figures(RESULTS, asyncio.run(writes_alone(args, server)))
            return
        batch = asyncio.run(measure_batch(args, server, Path(tmp)))
        if args.parts == "batch":
            merge_figures(RESULTS, batch)
            return
        figures = asyncio.run(measure(args, server))
    write_figures(RESULTS, {**figures, **batch})


if __name__ == "__main__":
    main()
