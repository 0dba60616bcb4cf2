"""One contract for both time-series stores: the embedded SQLite file and a real InfluxDB (influxd 1.x).

Every expectation is worked out by hand from the data set below, so both stores must agree with it, not
merely with each other.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from harness.clock import midnight_days_ago
from harness.external import InfluxDBServer
from service_runtime.errors import InvalidArgument
from service_runtime.timeseries import (
    Aggregation,
    InfluxConfig,
    InfluxStore,
    Sample,
    SeriesKey,
    SqliteSampleStore,
    TimeSeriesStore,
)
from service_runtime.timeseries.port import failures, roll_up_pending, stats
from service_runtime.timeseries.queries import query_samples
from services.monitor_svc.summaries.queries import (
    summarize_availability,
    summarize_crypto_price,
    summarize_website,
    summarize_websites,
)

# Noon two days ago: inside any raw retention, ten-minute aligned (the windows below are epoch aligned).
T0 = midnight_days_ago(2) + timedelta(hours=12)
MINUTE = timedelta(minutes=1)
SITE = SeriesKey("usr_a", "mon_site")
COIN = SeriesKey("usr_a", "mon_coin")
_databases = itertools.count()


@pytest.fixture(params=["embedded", "influxdb"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TimeSeriesStore]:
    opened: TimeSeriesStore
    if request.param == "embedded":
        opened = SqliteSampleStore(tmp_path / "ts.sqlite3")
    else:
        server: InfluxDBServer = request.getfixturevalue("influxdb")
        opened = await InfluxStore.open(
            InfluxConfig(url=server.url, database=f"contract_{next(_databases)}", flush_interval_s=0.05)
        )
    yield opened
    await opened.close()


def site_samples(owner: str = "usr_a", offset: float = 0.0) -> list[Sample]:
    """Ten checks a minute apart: response times 100..190 ms; down at minutes 3, 4 (timeout) and 8 (503);
    certificate 45 days left, 44 at the last check."""
    samples = []
    for i in range(10):
        down = i in (3, 4, 8)
        notes = {}
        if down:
            notes = {"error_class": "timeout", "message": "timed out after 10s"}
            if i == 8:
                notes = {"error_class": "status", "message": 'HTTP 503 "unavailable"'}
        samples.append(
            Sample(
                owner,
                "mon_site",
                T0 + i * MINUTE,
                {
                    "is_up": 0.0 if down else 1.0,
                    "response_time_ms": 100.0 + 10 * i + offset,
                    "cert_days_left": 44.0 if i == 9 else 45.0,
                },
                {"location": "eu-west"},
                notes,
            )
        )
    return samples


async def write_all(store: TimeSeriesStore, samples: list[Sample]) -> None:
    await store.write(samples)
    await store.flush()


async def test_raw_points_in_half_open_range_oldest_first(store: TimeSeriesStore) -> None:
    await write_all(store, list(reversed(site_samples())))
    points = await store.points(SITE, "response_time_ms", T0 + 2 * MINUTE, T0 + 5 * MINUTE, 100)
    assert [(p.time, p.value) for p in points] == [(T0 + i * MINUTE, 100.0 + 10 * i) for i in (2, 3, 4)]
    assert len(await store.points(SITE, "is_up", T0, T0 + timedelta(hours=1), 4)) == 4


async def test_windows_are_epoch_aligned_aggregates(store: TimeSeriesStore) -> None:
    await write_all(store, site_samples())
    five = 5 * MINUTE
    end = T0 + timedelta(hours=1)

    async def per_window(how: Aggregation) -> list[tuple[datetime, float, int]]:
        return [(p.time, p.value, p.count) for p in await store.windows(SITE, "response_time_ms", T0, end, five, how)]

    assert await per_window(Aggregation.MEAN) == [(T0, 120.0, 5), (T0 + five, 170.0, 5)]
    assert [v for _, v, _ in await per_window(Aggregation.MAX)] == [140.0, 190.0]
    assert [v for _, v, _ in await per_window(Aggregation.MIN)] == [100.0, 150.0]
    assert [v for _, v, _ in await per_window(Aggregation.FIRST)] == [100.0, 150.0]
    assert [v for _, v, _ in await per_window(Aggregation.LAST)] == [140.0, 190.0]
    assert [v for _, v, _ in await per_window(Aggregation.COUNT)] == [5.0, 5.0]
    assert [v for _, v, _ in await per_window(Aggregation.SUM)] == [600.0, 850.0]
    # Nearest rank of 5 values: p50 -> rank int(2.5 + 0.5) = 3, p95 -> rank int(4.75 + 0.5) = 5.
    assert [v for _, v, _ in await per_window(Aggregation.P50)] == [120.0, 170.0]
    assert [v for _, v, _ in await per_window(Aggregation.P95)] == [140.0, 190.0]
    # A range starting mid-window keeps the epoch-aligned window start.
    shifted = await store.windows(SITE, "response_time_ms", T0 + 2 * MINUTE, end, five, Aggregation.COUNT)
    assert [(p.time, p.value) for p in shifted] == [(T0, 3.0), (T0 + five, 5.0)]


async def test_whole_range_statistics(store: TimeSeriesStore) -> None:
    await write_all(store, site_samples())
    hows = list(Aggregation)
    found = await stats(store, SITE, "response_time_ms", T0, T0 + timedelta(hours=1), hows)
    # Ten values 100..190: p50 -> rank 5 (140), p95 -> rank int(9.5 + 0.5) = 10 (190), p99 -> rank 10.
    assert found == {
        Aggregation.MEAN: 145.0,
        Aggregation.MIN: 100.0,
        Aggregation.MAX: 190.0,
        Aggregation.FIRST: 100.0,
        Aggregation.LAST: 190.0,
        Aggregation.COUNT: 10.0,
        Aggregation.SUM: 1450.0,
        Aggregation.P50: 140.0,
        Aggregation.P95: 190.0,
        Aggregation.P99: 190.0,
    }
    empty = await stats(store, SITE, "response_time_ms", T0 - MINUTE, T0, [Aggregation.COUNT, Aggregation.MEAN])
    assert empty == {Aggregation.COUNT: 0.0, Aggregation.MEAN: None}


async def test_reads_are_scoped_to_owner_and_monitor(store: TimeSeriesStore) -> None:
    await write_all(store, site_samples() + site_samples(owner="usr_b", offset=1000.0))
    hour = T0 + timedelta(hours=1)
    mine = await stats(store, SITE, "response_time_ms", T0, hour, [Aggregation.MAX, Aggregation.COUNT])
    assert mine == {Aggregation.MAX: 190.0, Aggregation.COUNT: 10.0}
    theirs = await stats(store, SeriesKey("usr_b", "mon_site"), "response_time_ms", T0, hour, [Aggregation.MIN])
    assert theirs == {Aggregation.MIN: 1100.0}
    assert await store.points(SeriesKey("usr_a", "mon_other"), "is_up", T0, hour, 10) == []


@pytest.mark.parametrize(
    "owner",
    ["usr_a' OR '1'='1", "usr_a\\' OR 1=1 --", 'usr_a" OR "owner" =~ /.*/', "usr_a') ; DROP DATABASE x; --"],
)
async def test_injection_in_identifiers_reads_nothing(store: TimeSeriesStore, owner: str) -> None:
    await write_all(store, site_samples())
    hour = T0 + timedelta(hours=1)
    assert await store.points(SeriesKey(owner, "mon_site"), "is_up", T0, hour, 100) == []
    assert await failures(store, SeriesKey(owner, "mon_site"), T0, hour, 100) == []
    assert await store.points(SITE, "is_up", T0, hour, 100) != []  # and nothing was dropped


async def test_odd_characters_round_trip_in_owner_and_notes(store: TimeSeriesStore) -> None:
    key = SeriesKey('o\'brien \\ "x", y=z', "mon 1,=")
    sample = Sample(
        key.owner_id,
        key.monitor_id,
        T0,
        {"is_up": 0.0},
        {"location": "eu west,1"},
        {"error_class": "dns", "message": "name 'x.invalid'\nnot found \\ \"really\""},
    )
    await write_all(store, [sample])
    failed = await failures(store, key, T0, T0 + MINUTE, 10)
    assert [(f.time, f.error_class) for f in failed] == [(T0, "dns")]
    assert failed[0].message in (
        "name 'x.invalid'\nnot found \\ \"really\"",
        "name 'x.invalid' not found \\ \"really\"",
    )


@pytest.mark.parametrize("name", ["price') OR 1=1 --", 'price" FROM x; --', "Price", "", "a.b", "x" * 64])
async def test_field_names_are_checked_before_querying(store: TimeSeriesStore, name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await store.points(SITE, name, T0, T0 + MINUTE, 10)
    assert caught.value.violations[0].field == "field"
    with pytest.raises(InvalidArgument):
        await stats(store, SITE, name, T0, T0 + MINUTE, [Aggregation.MEAN])


async def test_naive_timestamps_are_refused(store: TimeSeriesStore) -> None:
    with pytest.raises(ValueError, match="timezone"):
        await store.write([Sample("usr_a", "mon_1", datetime(2001, 1, 1), {"price": 1.0})])


async def test_failures_and_recovery(store: TimeSeriesStore) -> None:
    await write_all(store, site_samples())
    hour = T0 + timedelta(hours=1)
    failed = await failures(store, SITE, T0, hour, 100)
    assert [(f.time, f.error_class) for f in failed] == [
        (T0 + 3 * MINUTE, "timeout"),
        (T0 + 4 * MINUTE, "timeout"),
        (T0 + 8 * MINUTE, "status"),
    ]
    assert failed[2].message == 'HTTP 503 "unavailable"'
    assert await store.next_up(SITE, T0 + 3 * MINUTE, hour) == T0 + 5 * MINUTE
    assert await store.next_up(SITE, T0 + 8 * MINUTE, T0 + 9 * MINUTE) is None


async def test_summary_of_a_website(store: TimeSeriesStore) -> None:
    await write_all(store, site_samples())
    summary = await summarize_website(store, SITE, T0, T0 + timedelta(hours=1))
    availability = summary.availability
    # Time-weighted: observed from the first check to the end of the range (60 min), down 3 of them.
    assert availability.uptime_percent == pytest.approx(95.0)
    assert (availability.observed, availability.downtime) == (60 * MINUTE, 3 * MINUTE)
    assert (availability.checks, availability.failed_checks) == (10, 3)
    assert [(o.start, o.end, o.duration, o.error_class, o.cause) for o in availability.outages] == [
        (T0 + 3 * MINUTE, T0 + 5 * MINUTE, 2 * MINUTE, "timeout", "timed out after 10s"),
        (T0 + 8 * MINUTE, T0 + 9 * MINUTE, MINUTE, "status", 'HTTP 503 "unavailable"'),
    ]
    # Over the seven successful checks (100, 110, 120, 150, 160, 170, 190): p50 -> rank int(3.5 + 0.5) = 4,
    # p95 and p99 -> rank 7.
    assert (summary.response_time_p50_ms, summary.response_time_p95_ms, summary.response_time_p99_ms) == (
        150.0,
        190.0,
        190.0,
    )
    assert summary.cert_days_left == 44.0


async def test_an_outage_still_going_at_the_end_of_the_range(store: TimeSeriesStore) -> None:
    await write_all(store, site_samples())
    end = T0 + 9 * MINUTE  # the recovery at minute 9 falls outside
    summary = await summarize_availability(store, SITE, T0, end, now=T0 + timedelta(days=1))
    last = summary.outages[-1]
    assert (last.start, last.end, last.duration) == (T0 + 8 * MINUTE, None, MINUTE)
    assert summary.checks == 9
    assert summary.uptime_percent == pytest.approx(600 / 9)


async def test_summary_of_a_coin(store: TimeSeriesStore) -> None:
    prices = [100.0, 110.0, 99.0, 120.0]
    await write_all(
        store,
        [
            Sample("usr_a", "mon_coin", T0 + i * MINUTE, {"price": p}, {"provider": "coinbase"})
            for i, p in enumerate(prices)
        ],
    )
    summary = await summarize_crypto_price(store, COIN, T0, T0 + timedelta(hours=1))
    assert (summary.samples, summary.first, summary.last, summary.min, summary.max) == (4, 100.0, 120.0, 99.0, 120.0)
    assert summary.mean == pytest.approx(107.25)
    assert summary.change_absolute == pytest.approx(20.0)
    assert summary.change_percent == pytest.approx(20.0)
    # Returns 0.1, -0.1 and 21/99 = 0.212121...; their mean is 0.070707..., squared deviations sum to
    # 0.0499969..., over n - 1 = 2 gives 0.0249985..., whose square root is 0.158109...
    assert summary.volatility == pytest.approx(0.158109, rel=1e-5)


async def test_summaries_without_data(store: TimeSeriesStore) -> None:
    availability = await summarize_availability(store, SITE, T0, T0 + MINUTE)
    assert (availability.uptime_percent, availability.checks, availability.outages) == (None, 0, [])
    coin = await summarize_crypto_price(store, COIN, T0, T0 + MINUTE)
    assert (coin.samples, coin.first, coin.volatility) == (0, None, None)


async def test_query_samples_downsamples_to_the_requested_maximum(store: TimeSeriesStore) -> None:
    key = SeriesKey("usr_a", "mon_dense")
    await write_all(
        store, [Sample("usr_a", "mon_dense", T0 + timedelta(seconds=i), {"price": float(i)}) for i in range(3000)]
    )
    end = T0 + timedelta(seconds=3000)
    raw = await query_samples(store, key, "price", T0, T0 + timedelta(seconds=10))
    assert ([p.value for p in raw.points], raw.window, raw.aggregation) == ([float(i) for i in range(10)], None, None)
    fitted = await query_samples(store, key, "price", T0, end, max_points=100)
    # 3000 s over at most 100 points: windows of ceil(3000 / 99) = 31 s, means of the values inside.
    assert (fitted.window, fitted.aggregation) == (timedelta(seconds=31), Aggregation.MEAN)
    assert len(fitted.points) <= 100
    assert sum(p.count for p in fitted.points) == 3000
    assert fitted.points[0].value == pytest.approx(
        sum(range(31 - (int(T0.timestamp()) % 31))) / (31 - int(T0.timestamp()) % 31)
    )
    widened = await query_samples(
        store, key, "price", T0, end, window=timedelta(seconds=1), aggregation=Aggregation.MAX, max_points=10
    )
    assert widened.window == timedelta(seconds=334)  # ceil(3000 / 9)
    assert len(widened.points) <= 10
    assert widened.points[-1].value == 2999.0
    exact = await query_samples(
        store, key, "price", T0, end, window=timedelta(minutes=10), aggregation=Aggregation.COUNT
    )
    assert [p.value for p in exact.points] == [600.0] * 5


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_points": -1}, "max_points"),
        ({"max_points": 10_001}, "max_points"),
        ({"window": timedelta(milliseconds=500), "aggregation": Aggregation.MEAN}, "window"),
        ({"window": timedelta(minutes=1)}, "aggregation"),
        ({"aggregation": Aggregation.MEAN}, "window"),
    ],
)
async def test_query_samples_names_the_bad_parameter(
    store: TimeSeriesStore, options: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await query_samples(store, SITE, "price", T0, T0 + MINUTE, **options)  # type: ignore[arg-type]
    assert caught.value.violations[0].field == field


async def test_an_inverted_time_range_is_refused(store: TimeSeriesStore) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await query_samples(store, SITE, "price", T0, T0)
    assert caught.value.violations[0].field == "time_range"


async def test_many_monitors_of_one_owner_at_once(store: TimeSeriesStore) -> None:
    other = [Sample("usr_a", "mon_calm", T0 + i * MINUTE, {"is_up": 1.0, "response_time_ms": 50.0}) for i in range(4)]
    await write_all(store, site_samples() + other + site_samples(owner="usr_b", offset=1000.0))
    hour = T0 + timedelta(hours=1)
    ids = ["mon_site", "mon_calm", "mon_silent", "mon_site"[:-1]]
    counted = await store.stats_many("usr_a", ids, "response_time_ms", T0, hour, [Aggregation.COUNT, Aggregation.MAX])
    assert counted == {
        "mon_site": {Aggregation.COUNT: 10.0, Aggregation.MAX: 190.0},
        "mon_calm": {Aggregation.COUNT: 4.0, Aggregation.MAX: 50.0},
        "mon_silent": {Aggregation.COUNT: 0.0, Aggregation.MAX: None},
        "mon_sit": {Aggregation.COUNT: 0.0, Aggregation.MAX: None},
    }
    summaries = await summarize_websites(store, "usr_a", ["mon_site", "mon_calm"], T0, hour)
    assert [len(summaries[m].availability.outages) for m in ("mon_site", "mon_calm")] == [2, 0]
    assert summaries["mon_calm"].availability.uptime_percent == 100.0
    assert summaries["mon_calm"].response_time_p99_ms == 50.0
    failed = await store.failures_many("usr_a", ["mon_site", "mon_calm"], T0, hour, 2)
    assert [len(failed["mon_site"]), len(failed["mon_calm"])] == [2, 0]


# --- many series at once (the alert service's warm starts and reconciliation) -----------------------------


async def test_points_many_reads_the_latest_points_of_each_series_oldest_first(store: TimeSeriesStore) -> None:
    calm = [
        Sample("usr_b", "mon_calm", T0 + i * MINUTE, {"is_up": 1.0, "response_time_ms": 50.0 + i}) for i in range(4)
    ]
    coin = [Sample("usr_a", "mon_coin", T0 + i * MINUTE, {"price": 60_000.0 + i}) for i in range(3)]
    await write_all(store, site_samples() + site_samples(owner="usr_b", offset=1000.0) + calm + coin)
    theirs, calm_key = SeriesKey("usr_b", "mon_site"), SeriesKey("usr_b", "mon_calm")
    wanted = [SITE, theirs, calm_key, COIN, SeriesKey("usr_a", "mon_silent"), SeriesKey("usr_c", "mon_site")]
    hour = T0 + timedelta(hours=1)

    found = await store.points_many("response_time_ms", wanted, T0 + 2 * MINUTE, hour, 3)

    # The latest three in [T0 + 2 min, T0 + 1 h) of each series that has the field; the others left out.
    # Times in seconds since the epoch.
    at = T0.timestamp()
    assert found == {
        SITE: [(at + 60 * i, 100.0 + 10 * i) for i in (7, 8, 9)],
        theirs: [(at + 60 * i, 1100.0 + 10 * i) for i in (7, 8, 9)],
        calm_key: [(at + 60 * i, 50.0 + i) for i in (2, 3)],
    }
    # The range is half-open, and a limit above the count returns everything in it.
    everything = await store.points_many("is_up", [SITE], T0, T0 + 5 * MINUTE, 10_000)
    assert everything[SITE] == [(at + 60 * i, float(i not in (3, 4))) for i in range(5)]
    assert await store.points_many("response_time_ms", [], T0, hour, 10) == {}


async def test_points_many_over_more_series_than_one_statement_names(store: TimeSeriesStore) -> None:
    """1,500 series asked for (past the InfluxDB store's 1,000 named series, and several SQLite statements):
    1,200 have samples, one of them another owner's under the same monitor id."""
    samples = [
        Sample(f"usr_{m % 7}", f"mon_{m}", T0 + (m % 3) * MINUTE, {"price": float(m), "is_up": 1.0})
        for m in range(1200)
    ]
    samples.append(Sample("usr_x", "mon_5", T0, {"price": -1.0}))
    await write_all(store, samples)
    wanted = [SeriesKey(f"usr_{m % 7}", f"mon_{m}") for m in range(1500)]

    found = await store.points_many("price", wanted, T0, T0 + timedelta(hours=1), 5)

    assert len(found) == 1200
    assert all(
        found[SeriesKey(f"usr_{m % 7}", f"mon_{m}")] == [((T0 + (m % 3) * MINUTE).timestamp(), float(m))]
        for m in range(1200)
    )
    assert SeriesKey("usr_x", "mon_5") not in found


async def test_influx_points_many_strategies_agree(influxdb: InfluxDBServer) -> None:
    """Naming the series and reading every series then keeping the wanted ones give the same answer."""
    opened = await InfluxStore.open(InfluxConfig(url=influxdb.url, database=f"contract_{next(_databases)}"))
    try:
        await write_all(opened, site_samples() + site_samples(owner="usr_b", offset=1000.0))
        wanted = [SITE, SeriesKey("usr_b", "mon_site"), SeriesKey("usr_c", "mon_site")]
        hour = T0 + timedelta(hours=1)
        named = await opened.points_filtered("response_time_ms", wanted, T0, hour, 4)
        scanned = await opened.points_scanned("response_time_ms", set(wanted), T0, hour, 4)
        assert named == scanned
        assert set(named) == set(wanted[:2])
        assert [value for _, value in named[SITE]] == [160.0, 170.0, 180.0, 190.0]
    finally:
        await opened.close()


@pytest.mark.parametrize(
    "owner",
    ["usr_a' OR '1'='1", "usr_a\\' OR 1=1 --", 'usr_a" OR "owner" =~ /.*/', "usr_a') ; DROP DATABASE x; --"],
)
async def test_points_many_injection_in_identifiers_reads_nothing(store: TimeSeriesStore, owner: str) -> None:
    await write_all(store, site_samples())
    hour = T0 + timedelta(hours=1)
    assert (
        await store.points_many("is_up", [SeriesKey(owner, "mon_site"), SeriesKey("usr_a", owner)], T0, hour, 9) == {}
    )
    assert len((await store.points_many("is_up", [SITE], T0, hour, 100))[SITE]) == 10  # and nothing was dropped


async def test_points_many_reads_monitor_ids_as_written_not_as_patterns(store: TimeSeriesStore) -> None:
    """Ids with a regular expression's or InfluxQL's special characters, or beyond ASCII, name exactly one
    series each (the InfluxDB store names monitors in one regular expression)."""
    ids = ["mon.1", "monx1", "mon|a", "mon(b)", "a/b\\/c", "mön*", "mö", "mon_$", "mon_"]
    await write_all(store, [Sample("usr_a", m, T0 + i * MINUTE, {"price": float(i)}) for i, m in enumerate(ids)])
    hour = T0 + timedelta(hours=1)
    asked = [SeriesKey("usr_a", m) for m in ("mon.1", "mon|a", "a/b\\/c", "mön*", "mon_$", "mon.*", "mon")]

    found = await store.points_many("price", asked, T0, hour, 5)

    assert {key.monitor_id: [value for _, value in points] for key, points in found.items()} == {
        "mon.1": [0.0], "mon|a": [2.0], "a/b\\/c": [4.0], "mön*": [5.0], "mon_$": [7.0]
    }  # fmt: skip


@pytest.mark.parametrize("name", ["price') OR 1=1 --", 'price" FROM x; --', "Price", ""])
async def test_points_many_checks_the_field_name(store: TimeSeriesStore, name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await store.points_many(name, [SITE], T0, T0 + MINUTE, 10)
    assert caught.value.violations[0].field == "field"


# --- hourly rollups --------------------------------------------------------------------------------------

LONG = SeriesKey("usr_a", "mon_long")
# Four days of data from five past midnight ten days ago: inside InfluxDB's 30-day raw retention.
D0 = midnight_days_ago(10) + timedelta(minutes=5)


def long_samples() -> list[Sample]:
    """Four days of checks every ten minutes from D0 (576): every seventh is down."""
    return [
        Sample(LONG.owner_id, LONG.monitor_id, D0 + i * timedelta(minutes=10), {"is_up": 0.0 if i % 7 == 0 else 1.0})
        for i in range(576)
    ]


def expected_counts(start: datetime, end: datetime) -> tuple[int, int]:
    inside = [s for s in long_samples() if start <= s.time < end]
    return len(inside), sum(int(s.fields["is_up"]) for s in inside)


async def test_hourly_rollups_count_checks_and_successes(store: TimeSeriesStore) -> None:
    await store.write(long_samples())
    await store.flush()
    assert await store.rolled_up_until() is None
    written = await store.roll_up(D0 - timedelta(hours=1), D0 + timedelta(days=5))
    assert written == 96  # one per hour that has samples
    last_sample = long_samples()[-1].time
    assert await store.rolled_up_until() == last_sample.replace(minute=0) + timedelta(hours=1)
    day0 = D0.replace(minute=0)
    start, end = day0 + timedelta(days=1, hours=3), day0 + timedelta(days=2, hours=17)
    counts = await store.uptime_counts_many(LONG.owner_id, [LONG.monitor_id, "mon_none"], start, end)
    assert (counts[LONG.monitor_id].checks, counts[LONG.monitor_id].up) == expected_counts(start, end)
    assert (counts["mon_none"].checks, counts["mon_none"].up) == (0, 0)
    # Another owner asking for the same monitor id reads nothing.
    theirs = await store.uptime_counts_many("usr_b", [LONG.monitor_id], start, end)
    assert theirs[LONG.monitor_id].checks == 0
    # Rolling up again replaces, never adds.
    await store.roll_up(D0, D0 + timedelta(days=5))
    again = await store.uptime_counts_many(LONG.owner_id, [LONG.monitor_id], start, end)
    assert again == {LONG.monitor_id: counts[LONG.monitor_id]}


async def test_a_long_range_summary_from_rollups_equals_the_raw_count(store: TimeSeriesStore) -> None:
    await store.write(long_samples())
    await store.flush()
    start, end = D0 + timedelta(minutes=25), D0 + timedelta(days=3, hours=21, minutes=41)  # ragged at both ends
    raw_only = await summarize_availability(store, LONG, start, end, now=end)
    assert await roll_up_pending(store, timedelta(days=30), now=D0 + timedelta(days=4, hours=2)) == 96
    with_rollups = await summarize_availability(store, LONG, start, end, now=end)
    checks, up = expected_counts(start, end)
    assert (with_rollups.checks, with_rollups.checks - with_rollups.failed_checks) == (checks, up)
    # Time-weighted from the raw samples: each failed check is down for the 10 minutes until the next one.
    down = sum(
        (
            min(s.time + timedelta(minutes=10), end) - s.time
            for s in long_samples()
            if start <= s.time < end and not s.fields["is_up"]
        ),
        timedelta(0),
    )
    assert with_rollups.uptime_percent == pytest.approx(100 - down / (end - start) * 100)
    assert with_rollups == raw_only
    # A later run redoes only the latest rolled hour (late samples) and the hours since.
    assert await roll_up_pending(store, timedelta(days=30), now=D0 + timedelta(days=4, hours=2)) == 1


async def test_rollups_outlive_raw_retention(tmp_path: Path) -> None:
    store = SqliteSampleStore(tmp_path / "ts.sqlite3", raw_retention=timedelta(days=2))
    try:
        await store.write(long_samples())
        await store.roll_up(D0, D0 + timedelta(days=5))
        now = D0 + timedelta(days=4)
        assert await store.enforce_retention(now=now) > 0
        start, end = D0.replace(minute=0) + timedelta(hours=1), now.replace(minute=0)
        summary = await summarize_availability(store, LONG, start, end, now=end)
        assert (summary.checks, summary.checks - summary.failed_checks) == expected_counts(start, end)
        # The first two days are weighted from their rollups (each check an equal share), the rest from raw
        # samples; with checks evenly spaced either way gives about one seventh down.
        # Observed: all but the 5 minutes between the last hour from rollups and the first raw sample.
        assert summary.observed == end - start - timedelta(minutes=5)
        assert summary.uptime_percent == pytest.approx(600 / 7, abs=0.2)
        assert await store.points(LONG, "is_up", start, start + timedelta(days=1), 10) == []  # raw is gone
    finally:
        await store.close()
