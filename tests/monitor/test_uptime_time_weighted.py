"""Honest summary figures on both time-series stores (the embedded SQLite file and a real influxd 1.x):
uptime weighted by time for every monitor kind, latency percentiles over successful checks, the coin
summary's failed fetches and units, and every distinct cause of an outage. Expectations are worked out by
hand from the samples written."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from harness.clock import midnight_days_ago
from harness.external import InfluxDBServer
from service_runtime.timeseries import InfluxConfig, InfluxStore, Sample, SeriesKey, SqliteSampleStore, TimeSeriesStore
from services.monitor_svc.summaries.queries import (
    summarize_availability,
    summarize_availability_many,
    summarize_crypto_price,
    summarize_website,
)

H0 = midnight_days_ago(2) + timedelta(hours=9)
MINUTE = timedelta(minutes=1)
JOB = SeriesKey("usr_a", "mon_job")
SITE = SeriesKey("usr_a", "mon_site")
COIN = SeriesKey("usr_a", "mon_coin")
LATER = H0 + timedelta(days=1)  # "now", past every range below
_databases = itertools.count()


@pytest.fixture(params=["embedded", "influxdb"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TimeSeriesStore]:
    opened: TimeSeriesStore
    if request.param == "embedded":
        opened = SqliteSampleStore(tmp_path / "ts.sqlite3")
    else:
        server: InfluxDBServer = request.getfixturevalue("influxdb")
        opened = await InfluxStore.open(
            InfluxConfig(url=server.url, database=f"uptime_{next(_databases)}", flush_interval_s=0.05)
        )
    yield opened
    await opened.close()


async def write_all(store: TimeSeriesStore, samples: list[Sample]) -> None:
    await store.write(samples)
    await store.flush()


def job_samples() -> list[Sample]:
    """A job pinging every minute from H0 to H0 + 4 min, missing its deadline at H0 + 5 min (the sweep writes
    one DOWN result and nothing more while it stays down), then pinging again from H0 + 13 min to + 16 min."""
    up = {"is_up": 1.0}
    missed = {"is_up": 0.0}
    notes = {"error_class": "timeout", "message": "no ping since 09:04:00 UTC (period 1m + grace 0s)"}
    samples = [Sample(JOB.owner_id, JOB.monitor_id, H0 + i * MINUTE, up) for i in range(5)]
    samples.append(Sample(JOB.owner_id, JOB.monitor_id, H0 + 5 * MINUTE, missed, {}, notes))
    samples += [Sample(JOB.owner_id, JOB.monitor_id, H0 + i * MINUTE, up) for i in range(13, 17)]
    return samples


async def test_a_heartbeat_silent_for_8_of_13_minutes_was_up_5_13ths_of_the_time(store: TimeSeriesStore) -> None:
    await write_all(store, job_samples())

    summary = await summarize_availability(store, JOB, H0, H0 + 13 * MINUTE, now=LATER)

    # Five pings and one missed deadline: 5 / 6 = 83.3 % per check, but DOWN from minute 5 to minute 13.
    assert summary.uptime_percent == pytest.approx(5 / 13 * 100)
    assert (summary.checks, summary.failed_checks) == (6, 1)
    assert (summary.observed, summary.downtime) == (13 * MINUTE, 8 * MINUTE)
    [outage] = summary.outages
    assert (outage.start, outage.end, outage.duration, outage.error_class) == (
        H0 + 5 * MINUTE,
        None,
        8 * MINUTE,
        "timeout",
    )


async def test_a_range_starting_during_an_outage_counts_it_from_the_start(store: TimeSeriesStore) -> None:
    """The last check before the range found the job DOWN: the range starts DOWN, though no check in it failed."""
    await write_all(store, job_samples())

    summary = await summarize_availability(store, JOB, H0 + 7 * MINUTE, H0 + 17 * MINUTE, now=LATER)

    assert summary.uptime_percent == pytest.approx(40.0)  # down from minute 7 to 13, up from 13 to 17
    assert (summary.checks, summary.failed_checks) == (4, 0)
    [outage] = summary.outages
    assert (outage.start, outage.end, outage.duration) == (H0 + 7 * MINUTE, H0 + 13 * MINUTE, 6 * MINUTE)
    assert outage.causes == []  # its failed check came before the range

    silent = await summarize_availability(store, JOB, H0 + 7 * MINUTE, H0 + 12 * MINUTE, now=LATER)
    assert (silent.uptime_percent, silent.checks, silent.downtime) == (0.0, 0, 5 * MINUTE)
    assert [(o.start, o.end) for o in silent.outages] == [(H0 + 7 * MINUTE, None)]

    up_before = await summarize_availability(store, JOB, H0 + 4 * MINUTE + timedelta(seconds=30), H0 + 5 * MINUTE)
    assert (up_before.uptime_percent, up_before.checks, up_before.observed) == (100.0, 0, timedelta(seconds=30))


async def test_a_website_is_weighted_by_time_too_and_observed_from_its_first_check(store: TimeSeriesStore) -> None:
    """Checks a minute apart that are irregular: one failure held for 4 minutes weighs as much as 4 minutes of
    successes, however many checks those had."""
    times = [0, 1, 2, 3, 4, 8, 9]  # minutes; the check at 4 failed and the next came at 8
    await write_all(
        store,
        [
            Sample(SITE.owner_id, SITE.monitor_id, H0 + m * MINUTE, {"is_up": 0.0 if m == 4 else 1.0}, {}, {})
            for m in times
        ],
    )

    summary = await summarize_availability(store, SITE, H0 - 10 * MINUTE, H0 + 10 * MINUTE, now=LATER)

    assert summary.observed == 10 * MINUTE  # nothing was known before the first check
    assert summary.uptime_percent == pytest.approx(60.0)  # 6 of 7 checks succeeded, but 4 of 10 minutes were down
    assert summary.failed_checks == 1


async def test_many_monitors_at_once_agree_with_one_at_a_time(store: TimeSeriesStore) -> None:
    await write_all(
        store, job_samples() + [Sample("usr_a", "mon_calm", H0 + i * MINUTE, {"is_up": 1.0}) for i in range(3)]
    )
    start, end = H0 + 2 * MINUTE, H0 + 14 * MINUTE
    many = await summarize_availability_many(store, "usr_a", ["mon_job", "mon_calm", "mon_none"], start, end, LATER)
    assert many["mon_job"] == await summarize_availability(store, JOB, start, end, now=LATER)
    assert many["mon_job"].uptime_percent == pytest.approx(4 / 12 * 100)  # up 2-5 and 13-14
    assert (many["mon_calm"].uptime_percent, many["mon_calm"].observed) == (100.0, 12 * MINUTE)
    assert (many["mon_none"].uptime_percent, many["mon_none"].checks) == (None, 0)


async def test_response_time_percentiles_are_over_successful_checks_only(store: TimeSeriesStore) -> None:
    """During an outage the site serves fast 500 pages: they are not latency."""
    samples = []
    for i in range(10):
        failed = i >= 6  # 6..9 answered 500 in 3 ms
        fields = {"is_up": 0.0 if failed else 1.0, "response_time_ms": 3.0 if failed else 300.0 + i}
        notes = {"error_class": "status", "message": "HTTP 500"} if failed else {}
        samples.append(Sample(SITE.owner_id, SITE.monitor_id, H0 + i * MINUTE, fields, {}, notes))
    await write_all(store, samples)

    summary = await summarize_website(store, SITE, H0, H0 + 10 * MINUTE, now=LATER)

    # Successful: 300..305. Nearest rank of 6: p50 -> rank 3 (302), p95 and p99 -> rank 6 (305).
    assert (summary.response_time_p50_ms, summary.response_time_p95_ms, summary.response_time_p99_ms) == (
        302.0,
        305.0,
        305.0,
    )


async def test_an_outage_keeps_each_distinct_cause(store: TimeSeriesStore) -> None:
    causes = [
        ("timeout", "timed out after 10s"),
        ("dns", "name not found"),
        ("timeout", "timed out after 10s"),
        ("status", "HTTP 502"),
    ]
    samples = [Sample(SITE.owner_id, SITE.monitor_id, H0, {"is_up": 1.0})]
    samples += [
        Sample(
            SITE.owner_id, SITE.monitor_id, H0 + (i + 1) * MINUTE, {"is_up": 0.0}, {}, {"error_class": c, "message": m}
        )
        for i, (c, m) in enumerate(causes)
    ]
    samples.append(Sample(SITE.owner_id, SITE.monitor_id, H0 + 5 * MINUTE, {"is_up": 1.0}))
    await write_all(store, samples)

    [outage] = (await summarize_availability(store, SITE, H0, H0 + 6 * MINUTE, now=LATER)).outages

    assert (outage.error_class, outage.cause) == ("timeout", "timed out after 10s")  # the first, as before
    assert [(c.error_class, c.message, c.failed_checks, c.first_time) for c in outage.causes] == [
        ("timeout", "timed out after 10s", 2, H0 + MINUTE),
        ("dns", "name not found", 1, H0 + 2 * MINUTE),
        ("status", "HTTP 502", 1, H0 + 4 * MINUTE),
    ]


async def test_the_coin_summary_counts_failed_fetches_and_states_its_units(store: TimeSeriesStore) -> None:
    """A failed fetch writes is_up 0 and no price: it is counted, and the time it lasted is not uptime."""
    prices = [100.0, 110.0, None, None, 99.0, 120.0]
    samples = [
        Sample(COIN.owner_id, COIN.monitor_id, H0 + i * MINUTE, {"is_up": 1.0, "price": p})
        if p is not None
        else Sample(
            COIN.owner_id,
            COIN.monitor_id,
            H0 + i * MINUTE,
            {"is_up": 0.0},
            {},
            {"error_class": "status", "message": "HTTP 429"},
        )
        for i, p in enumerate(prices)
    ]
    await write_all(store, samples)

    summary = await summarize_crypto_price(store, COIN, H0, H0 + 6 * MINUTE, now=LATER)

    assert summary.samples == 4
    assert (summary.availability.checks, summary.availability.failed_checks) == (6, 2)
    assert summary.availability.uptime_percent == pytest.approx(4 / 6 * 100)
    assert summary.change_percent == pytest.approx(20.0)  # percent
    assert summary.volatility == pytest.approx(0.158109, rel=1e-5)  # a fraction (see the contract test)
    assert summary.volatility_percent == pytest.approx(15.8109, rel=1e-5)


async def test_first_times_many_is_the_first_value_of_each_monitor_in_the_range(store: TimeSeriesStore) -> None:
    """What says when a monitor new in the range began to be observed, for all of an owner's at once."""
    await write_all(
        store,
        job_samples()
        + [Sample("usr_a", "mon_calm", H0 + i * MINUTE, {"is_up": 1.0}) for i in range(2, 5)]
        + [Sample("usr_b", "mon_other", H0, {"is_up": 1.0}), Sample("usr_a", "mon_coin", H0, {"price": 1.0})],
    )
    found = await store.first_times_many(
        "usr_a", ["mon_job", "mon_calm", "mon_other", "mon_coin", "mon_none"], "is_up", H0 + MINUTE, H0 + 14 * MINUTE
    )
    assert found == {"mon_job": H0 + MINUTE, "mon_calm": H0 + 2 * MINUTE}
