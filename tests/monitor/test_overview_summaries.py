"""Batch summaries (SummarizeMonitors) on both time-series stores (the embedded SQLite file and a real influxd 1.x):
each monitor's summary is the one SummarizeMonitor's functions give it alone, for every shape of history (steady,
an outage that ended, one still going at the end, one under way before the range, several causes, a monitor new
in the range, one silent in it, one with no data at all); and the whole batch is read with a fixed number of
store statements, however many monitors it holds."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from harness.external import InfluxDBServer
from harness.monitor_service import Served, result, serve_monitors
from harness.rpc import rich_details
from harness.summaries import H0, KINDS, NOW, OWNER, check, count_statements, histories
from monitors.v1 import common_pb2, monitor_service_pb2
from service_runtime.timeseries import InfluxConfig, InfluxStore, SeriesKey, SqliteSampleStore, TimeSeriesStore
from services.monitor_svc.summaries.overview import summarize_many
from services.monitor_svc.summaries.queries import summarize_availability, summarize_crypto_price, summarize_website

pb = monitor_service_pb2

START, END = H0, H0 + timedelta(hours=2)
_databases = itertools.count()


@pytest.fixture(params=["embedded", "influxdb"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TimeSeriesStore]:
    opened: TimeSeriesStore
    if request.param == "embedded":
        opened = SqliteSampleStore(tmp_path / "ts.sqlite3")
    else:
        server: InfluxDBServer = request.getfixturevalue("influxdb")
        opened = await InfluxStore.open(
            InfluxConfig(url=server.url, database=f"overview_{next(_databases)}", flush_interval_s=0.05)
        )
    yield opened
    await opened.close()


async def test_each_batch_summary_is_the_monitors_own_summary(store: TimeSeriesStore) -> None:
    await store.write([s for samples in histories().values() for s in samples])
    await store.flush()

    batch = await summarize_many(store, OWNER, list(KINDS.items()), START, END, now=NOW)

    assert set(batch) == set(KINDS)
    for monitor_id, kind in KINDS.items():
        key = SeriesKey(OWNER, monitor_id)
        if kind == "website":
            alone: object = await summarize_website(store, key, START, END, now=NOW)
        elif kind == "crypto_price":
            alone = await summarize_crypto_price(store, key, START, END, now=NOW)
        else:
            alone = await summarize_availability(store, key, START, END, now=NOW)
        assert batch[monitor_id] == alone, monitor_id
    # The histories do reach every branch.
    ongoing = batch["mon_ongoing"].availability  # type: ignore[union-attr]
    assert ongoing.outages[-1].end is None
    assert [c.message for c in batch["mon_ended"].availability.outages[0].causes] == [  # type: ignore[union-attr]
        "timed out",
        "HTTP 503",
    ]
    assert batch["mon_before"].availability.outages[0].start == START  # type: ignore[union-attr]
    assert batch["mon_silent"].availability.downtime == END - START  # type: ignore[union-attr]
    assert batch["mon_empty"].availability.uptime_percent is None  # type: ignore[union-attr]


async def test_a_batch_is_read_with_the_same_few_statements_however_many_monitors(
    store: TimeSeriesStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monitors = [f"mon_{i:04}" for i in range(300)]
    samples = [
        check(m, minute, not (i % 7 == 0 and 30 <= minute < 45))
        for i, m in enumerate(monitors)
        for minute in range(0, 120, 10)
    ]
    await store.write(samples)
    await store.flush()
    statements = count_statements(store, monkeypatch)

    few = await summarize_many(store, OWNER, [(m, "website") for m in monitors[:3]], START, END, now=NOW)
    for_few = statements()
    many = await summarize_many(store, OWNER, [(m, "website") for m in monitors], START, END, now=NOW)
    for_many = statements() - for_few

    assert for_many == for_few, "the number of statements does not grow with the number of monitors"
    assert for_many <= 5
    assert many[monitors[0]].availability.failed_checks == 2  # type: ignore[union-attr]
    assert few[monitors[1]].availability.uptime_percent == 100.0  # type: ignore[union-attr]


# --- SummarizeMonitors over gRPC -------------------------------------------------------------------------


@pytest.fixture
async def served(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    """The monitor service on SQLite with the embedded time-series file, or on MariaDB with InfluxDB."""
    env = {}
    if not database_url.startswith("sqlite"):
        server: InfluxDBServer = request.getfixturevalue("influxdb")
        env["MONITORS_TIMESERIES_URL"] = server.url.replace("http://", "influxdb://") + f"/rpc_{next(_databases)}"
    async with serve_monitors(database_url, tmp_path, env) as started:
        yield started


def bad_fields(error: grpc.RpcError) -> list[str]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    bad = next(d for d in rich_details(error) if isinstance(d, error_details_pb2.BadRequest))
    return [v.field for v in bad.field_violations]


async def test_summarize_monitors_pages_through_the_callers_monitors_as_summarize_monitor_does(
    served: Served,
) -> None:
    stub, alice = served.stub, served.alice
    made = []
    for i, team in enumerate(["a", "a", "a", "b", "b"]):
        monitor = pb.Monitor(
            display_name=f"site{i}",
            spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=f"https://example.com/{i}")),
            labels={"team": team},
        )
        made.append((await stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor), metadata=alice)).monitor)
    bobs = pb.Monitor(spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url="https://example.com/bob")))
    bob_monitor = (await stub.CreateMonitor(pb.CreateMonitorRequest(monitor=bobs), metadata=served.bob)).monitor
    await served.connect_runner("r1")
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    for step in range(10):
        await served.report(
            "r1",
            *(
                result(m.id, t0 + step * timedelta(minutes=5), not (i == 1 and 3 <= step < 6), 10.0 * (step + 1))
                for i, m in enumerate(made)
            ),
        )
    time_range = common_pb2.TimeRange()
    time_range.start_time.FromDatetime(t0 - timedelta(minutes=30))
    time_range.end_time.FromDatetime(t0 + timedelta(minutes=55))
    ordered = sorted(made, key=lambda m: m.id)

    async def each_page(**fields: object) -> list[pb.SummarizeMonitorsResponse]:
        pages, token = [], ""
        while True:
            request = pb.SummarizeMonitorsRequest(time_range=time_range, page_token=token, **fields)  # type: ignore[arg-type]
            page = await stub.SummarizeMonitors(request, metadata=alice, timeout=30)
            pages.append(page)
            token = page.next_page_token
            if not token:
                return pages

    deadline = asyncio.get_running_loop().time() + 30
    while True:  # InfluxDB takes the buffered samples within a moment
        pages = await each_page(page_size=2)
        summaries = [s for page in pages for s in page.summaries]
        if all(s.website.availability.checks == 10 for s in summaries):
            break
        assert asyncio.get_running_loop().time() < deadline, summaries
        await asyncio.sleep(0.5)
    assert [len(page.summaries) for page in pages] == [2, 2, 1]
    assert [s.monitor_id for s in summaries] == [m.id for m in ordered]
    for summary in summaries:
        alone = await stub.SummarizeMonitor(
            pb.SummarizeMonitorRequest(monitor_id=summary.monitor_id, time_range=time_range), metadata=alice
        )
        assert summary == alone
    flaky = next(s for s in summaries if s.monitor_id == made[1].id)
    assert flaky.website.availability.failed_checks == 3
    assert len(flaky.website.availability.outages) == 1

    [only_b] = await each_page(label_selector={"team": "b"})
    assert [s.monitor_id for s in only_b.summaries] == sorted(m.id for m in made[3:])
    [named] = await each_page(monitor_ids=[made[2].id, made[0].id])
    assert [s.monitor_id for s in named.summaries] == sorted([made[0].id, made[2].id])

    with pytest.raises(grpc.RpcError) as caught:
        await each_page(monitor_ids=[made[0].id, bob_monitor.id])
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        await each_page(monitor_ids=[made[0].id], label_selector={"team": "a"})
    assert bad_fields(caught.value) == ["label_selector"]
    inverted = common_pb2.TimeRange(start_time=time_range.end_time, end_time=time_range.start_time)
    with pytest.raises(grpc.RpcError) as caught:
        await stub.SummarizeMonitors(pb.SummarizeMonitorsRequest(time_range=inverted), metadata=alice, timeout=10)
    assert bad_fields(caught.value) == ["time_range"]
    # Bob's summaries hold his monitor alone.
    mine = await stub.SummarizeMonitors(pb.SummarizeMonitorsRequest(time_range=time_range), metadata=served.bob)
    assert [s.monitor_id for s in mine.summaries] == [bob_monitor.id]


async def test_summarize_monitor_gives_what_summarize_monitors_gives_while_influxdb_is_down(
    database_url: str, tmp_path: Path
) -> None:
    """Checks reported while InfluxDB is down wait in the spool, and are already in the digests both RPCs read: the
    one monitor's summary is the batch's (it had read InfluxDB, and failed with UNAVAILABLE)."""
    env = {}
    influxdb = InfluxDBServer(tmp_path / "influxdb")
    if not database_url.startswith("sqlite"):
        (tmp_path / "influxdb").mkdir()
        influxdb.start()
        env["MONITORS_TIMESERIES_URL"] = influxdb.url.replace("http://", "influxdb://") + "/down"
    try:
        async with serve_monitors(database_url, tmp_path / "data", env) as served:
            spec = common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url="https://example.com/down"))
            made = await served.stub.CreateMonitor(
                pb.CreateMonitorRequest(monitor=pb.Monitor(spec=spec)), metadata=served.alice
            )
            await served.connect_runner("r1")
            influxdb.stop()
            t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
            await served.report(
                "r1", *(result(made.monitor.id, t0 + i * timedelta(minutes=5), i != 2) for i in range(4))
            )
            time_range = common_pb2.TimeRange()
            time_range.start_time.FromDatetime(t0 - timedelta(minutes=10))
            time_range.end_time.FromDatetime(t0 + timedelta(minutes=25))
            [batch] = (
                await served.stub.SummarizeMonitors(
                    pb.SummarizeMonitorsRequest(time_range=time_range), metadata=served.alice, timeout=30
                )
            ).summaries
            alone = await served.stub.SummarizeMonitor(
                pb.SummarizeMonitorRequest(monitor_id=made.monitor.id, time_range=time_range),
                metadata=served.alice,
                timeout=30,
            )
            assert batch == alone
            assert (batch.website.availability.checks, batch.website.availability.failed_checks) == (4, 1)
    finally:
        influxdb.stop()
