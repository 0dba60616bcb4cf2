"""ListMonitors as an overview: each monitor comes with its status (state, last check) as GetMonitorStatus reads
it, and the listing filters by state, kind and labels, page by page. A real monitor service on both databases,
a fake runner reporting results with the runners' token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from harness.monitor_service import Metadata, Served, result, serve_monitors
from harness.rpc import rich_details
from monitors.v1 import common_pb2, monitor_service_pb2
from services.monitor_svc.monitors import STALE_GRACE, STALE_INTERVALS

pb = monitor_service_pb2
S = common_pb2


@pytest.fixture
async def served(database_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    async with serve_monitors(database_url, tmp_path) as started:
        yield started


def website(name: str, labels: dict[str, str], **fields: object) -> pb.Monitor:
    return pb.Monitor(
        display_name=name,
        spec=S.MonitorSpec(website=S.WebsiteSpec(url=f"https://example.com/{name}")),
        labels=labels,
        **fields,  # type: ignore[arg-type]
    )


def tcp(name: str, labels: dict[str, str]) -> pb.Monitor:
    return pb.Monitor(
        display_name=name, spec=S.MonitorSpec(tcp=S.TcpSpec(host="db.example.com", port=5432)), labels=labels
    )


async def create(served: Served, who: Metadata, monitor: pb.Monitor) -> pb.Monitor:
    reply = await served.stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor), metadata=who, timeout=10)
    return reply.monitor


async def listing(served: Served, who: Metadata, **filters: object) -> list[tuple[str, pb.MonitorStatus]]:
    """Every page of a filtered listing: (display name, status) in listing order."""
    found: list[tuple[str, pb.MonitorStatus]] = []
    token = ""
    while True:
        request = pb.ListMonitorsRequest(page_token=token, **filters)  # type: ignore[arg-type]
        page = await served.stub.ListMonitors(request, metadata=who, timeout=10)
        assert len(page.statuses) == len(page.monitors)
        for monitor, status in zip(page.monitors, page.statuses, strict=True):
            assert status.monitor_id == monitor.id
            found.append((monitor.display_name, status))
        token = page.next_page_token
        if not token:
            return found


def names(found: list[tuple[str, pb.MonitorStatus]]) -> list[str]:
    return [name for name, _ in found]


def field_of(error: grpc.RpcError) -> list[str]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    bad = next(d for d in rich_details(error) if isinstance(d, error_details_pb2.BadRequest))
    return [v.field for v in bad.field_violations]


async def test_listing_shows_each_state_and_filters_by_state_kind_and_labels(served: Served) -> None:
    shop = await create(served, served.alice, website("shop", {"team": "shop", "tier": "gold"}))
    blog = await create(served, served.alice, website("blog", {"team": "blog"}))
    db = await create(served, served.alice, tcp("db", {"team": "shop"}))
    old = await create(served, served.alice, website("old", {"team": "shop"}))
    await served.stub.PauseMonitor(pb.PauseMonitorRequest(id=old.id), metadata=served.alice, timeout=10)
    await create(served, served.bob, website("bobs", {"team": "shop"}))
    assert {shop.id, blog.id, db.id} <= await served.connect_runner("r1")
    checked = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    await served.report("r1", result(shop.id, checked, True), result(blog.id, checked, False))

    everything = await listing(served, served.alice, page_size=2)
    assert names(everything) == [m.display_name for m in sorted([shop, blog, db, old], key=lambda m: m.id)]
    states = {name: status.state for name, status in everything}
    assert states == {
        "shop": S.MONITOR_STATE_UP,
        "blog": S.MONITOR_STATE_DOWN,
        "db": S.MONITOR_STATE_PENDING,
        "old": S.MONITOR_STATE_PAUSED,
    }
    by_name = dict(everything)
    assert by_name["shop"].last_check_time.ToDatetime(UTC) == checked
    assert not by_name["db"].HasField("last_check_time")
    for monitor in (shop, blog, db, old):  # the same status GetMonitorStatus gives
        status = (
            await served.stub.GetMonitorStatus(pb.GetMonitorStatusRequest(id=monitor.id), metadata=served.alice)
        ).status
        assert by_name[monitor.display_name] == status

    assert names(await listing(served, served.alice, states=[S.MONITOR_STATE_DOWN])) == ["blog"]
    assert sorted(names(await listing(served, served.alice, states=[S.MONITOR_STATE_UP, S.MONITOR_STATE_PENDING]))) == [
        "db",
        "shop",
    ]
    assert names(await listing(served, served.alice, kinds=["tcp"])) == ["db"]
    assert sorted(names(await listing(served, served.alice, label_selector={"team": "shop"}, page_size=1))) == [
        "db",
        "old",
        "shop",
    ]
    assert names(await listing(served, served.alice, label_selector={"team": "shop", "tier": "gold"})) == ["shop"]
    combined = {"label_selector": {"team": "shop"}, "kinds": ["website"], "states": [S.MONITOR_STATE_PAUSED]}
    assert names(await listing(served, served.alice, **combined)) == ["old"]
    assert await listing(served, served.alice, states=[S.MONITOR_STATE_UNKNOWN]) == []
    # Bob's own monitor only, whatever the filter.
    assert names(await listing(served, served.bob, label_selector={"team": "shop"})) == ["bobs"]


async def test_listing_filters_page_by_page_without_gaps(served: Served) -> None:
    created = [
        await create(served, served.alice, website(f"m{i:02}", {"even": str(i % 2 == 0).lower()})) for i in range(25)
    ]
    even = sorted((m for i, m in enumerate(created) if i % 2 == 0), key=lambda m: m.id)
    pages = []
    token = ""
    while True:
        request = pb.ListMonitorsRequest(page_size=4, page_token=token, label_selector={"even": "true"})
        page = await served.stub.ListMonitors(request, metadata=served.alice, timeout=10)
        pages.append([m.id for m in page.monitors])
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [4, 4, 4, 1], "every page is full but the last"
    assert [i for p in pages for i in p] == [m.id for m in even]


async def test_unknown_states_and_kinds_are_refused_naming_the_field(served: Served) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        await served.stub.ListMonitors(pb.ListMonitorsRequest(kinds=["ftp"]), metadata=served.alice, timeout=10)
    assert field_of(caught.value) == ["kinds"]
    with pytest.raises(grpc.RpcError) as caught:
        await served.stub.ListMonitors(
            pb.ListMonitorsRequest(states=[S.MONITOR_STATE_UNSPECIFIED]), metadata=served.alice, timeout=10
        )
    assert field_of(caught.value) == ["states"]


async def test_a_stale_monitor_is_listed_unknown_as_get_monitor_status_reads_it(served: Served) -> None:
    quick = {"interval": duration_pb2.Duration(seconds=1), "timeout": duration_pb2.Duration(seconds=1)}
    silent = await create(served, served.alice, website("silent", {}, **quick))
    await served.connect_runner("r1")
    await served.report("r1", result(silent.id, datetime.now(UTC), True))
    assert names(await listing(served, served.alice, states=[S.MONITOR_STATE_UP])) == ["silent"]

    stale_after_s = STALE_INTERVALS * 1 + 1 + STALE_GRACE.total_seconds()
    deadline = time.monotonic() + stale_after_s + 30
    while True:  # the runner reports no more: it goes stale
        request = pb.GetMonitorStatusRequest(id=silent.id)
        status = (await served.stub.GetMonitorStatus(request, metadata=served.alice, timeout=10)).status
        if status.state == S.MONITOR_STATE_UNKNOWN:
            break
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.5)

    [(_, listed)] = await listing(served, served.alice)
    assert listed == status
    assert names(await listing(served, served.alice, states=[S.MONITOR_STATE_UNKNOWN])) == ["silent"]
    assert await listing(served, served.alice, states=[S.MONITOR_STATE_UP]) == []
