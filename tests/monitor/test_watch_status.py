"""WatchMonitorStatus: every change of state of the caller's monitors, as it happens and as GetMonitorStatus reads
it (UNKNOWN once stale included); a bounded buffer per stream that keeps the newest and says how many it
dropped; at most MONITORS_MAX_STREAMS_PER_USER streams per user; the streams end with OK when the server drains.
A real monitor service on both databases, a fake runner reporting results with the runners' token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from harness.monitor_service import Metadata, Served, result, serve_monitors
from harness.rpc import rich_details
from monitors.v1 import common_pb2, monitor_service_pb2
from services.monitor_svc.domain import Monitor, MonitorState, MonitorStatus, WebsiteSpec
from services.monitor_svc.monitors import STALE_GRACE, STALE_INTERVALS
from services.monitor_svc.status_watch import StatusWatch

pb = monitor_service_pb2
S = common_pb2


@pytest.fixture
async def served(database_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    env = {"MONITORS_MAX_STREAMS_PER_USER": "2", "MONITORS_SHUTDOWN_GRACE_S": "60"}
    async with serve_monitors(database_url, tmp_path, env) as started:
        yield started


class Watch:
    """A WatchMonitorStatus stream read in the background into a queue."""

    def __init__(self, served: Served, who: Metadata, include_current: bool = False, **selector: str) -> None:
        request = pb.WatchMonitorStatusRequest(include_current=include_current, label_selector=selector)
        self.call = served.stub.WatchMonitorStatus(request, metadata=who)
        self.messages: asyncio.Queue[pb.WatchMonitorStatusResponse] = asyncio.Queue()
        self.ended: asyncio.Future[grpc.StatusCode] = asyncio.get_running_loop().create_future()
        self.error: grpc.RpcError | None = None
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.call:
                self.messages.put_nowait(message)
            self.ended.set_result(await self.call.code())
        except grpc.RpcError as error:
            self.error = error
            self.ended.set_result(error.code())

    async def opened(self) -> Watch:
        """Once the server watches (its response headers): every change from now on reaches this stream."""
        await asyncio.wait_for(self.call.initial_metadata(), 10)
        return self

    async def next(self, timeout_s: float = 10.0) -> pb.WatchMonitorStatusResponse:
        return await asyncio.wait_for(self.messages.get(), timeout_s)

    async def close(self) -> None:
        self.call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def website(name: str, labels: dict[str, str] | None = None, **fields: object) -> pb.Monitor:
    return pb.Monitor(
        display_name=name,
        spec=S.MonitorSpec(website=S.WebsiteSpec(url=f"https://example.com/{name}")),
        labels=labels or {},
        **fields,  # type: ignore[arg-type]
    )


async def create(served: Served, who: Metadata, monitor: pb.Monitor) -> pb.Monitor:
    return (await served.stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor), metadata=who, timeout=10)).monitor


def seen(message: pb.WatchMonitorStatusResponse) -> tuple[str, int, int]:
    return message.display_name, message.state, message.previous_state


async def test_a_watcher_gets_every_state_change_of_its_own_monitors_as_it_happens(served: Served) -> None:
    shop = await create(served, served.alice, website("shop", {"team": "shop"}))
    everything = await Watch(served, served.alice, include_current=True).opened()
    shop_only = await Watch(served, served.alice, team="shop").opened()
    bobs = await Watch(served, served.bob).opened()
    try:
        current = await everything.next()
        assert (seen(current), current.current) == (("shop", S.MONITOR_STATE_PENDING, 0), True)
        blog = await create(served, served.alice, website("blog", {"team": "blog"}))
        created = await everything.next()
        assert (seen(created), created.current, created.monitor_id) == (
            ("blog", S.MONITOR_STATE_PENDING, S.MONITOR_STATE_UNSPECIFIED),
            False,
            blog.id,
        )
        await served.connect_runner("r1")
        at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=10)
        await served.report("r1", result(shop.id, at, False))
        down = await everything.next()
        assert seen(down) == ("shop", S.MONITOR_STATE_DOWN, S.MONITOR_STATE_PENDING)
        assert down.state_change_time.ToDatetime(UTC) == at
        assert down.last_check_time.ToDatetime(UTC) == at
        await served.report("r1", result(shop.id, at + timedelta(seconds=1), False))  # still DOWN: no change
        await served.report("r1", result(shop.id, at + timedelta(seconds=2), True), result(blog.id, at, True))
        assert seen(await everything.next()) == ("shop", S.MONITOR_STATE_UP, S.MONITOR_STATE_DOWN)
        assert seen(await everything.next()) == ("blog", S.MONITOR_STATE_UP, S.MONITOR_STATE_PENDING)
        await served.stub.PauseMonitor(pb.PauseMonitorRequest(id=blog.id), metadata=served.alice, timeout=10)
        assert seen(await everything.next()) == ("blog", S.MONITOR_STATE_PAUSED, S.MONITOR_STATE_UP)
        await served.stub.ResumeMonitor(pb.ResumeMonitorRequest(id=blog.id), metadata=served.alice, timeout=10)
        assert seen(await everything.next()) == ("blog", S.MONITOR_STATE_UP, S.MONITOR_STATE_PAUSED)
        await served.stub.DeleteMonitor(pb.DeleteMonitorRequest(id=blog.id), metadata=served.alice, timeout=10)
        gone = await everything.next()
        assert (gone.monitor_id, gone.deleted, gone.state, gone.previous_state) == (
            blog.id,
            True,
            S.MONITOR_STATE_UNSPECIFIED,
            S.MONITOR_STATE_UP,
        )
        status = await served.stub.GetMonitorStatus(pb.GetMonitorStatusRequest(id=shop.id), metadata=served.alice)
        assert status.status.state == S.MONITOR_STATE_UP

        # The labelled stream saw the shop's changes alone, in order.
        assert [seen(await shop_only.next()) for _ in range(2)] == [
            ("shop", S.MONITOR_STATE_DOWN, S.MONITOR_STATE_PENDING),
            ("shop", S.MONITOR_STATE_UP, S.MONITOR_STATE_DOWN),
        ]
        # Bob saw nothing of Alice's: his own new monitor is the first thing he gets.
        await create(served, served.bob, website("bobs"))
        assert seen(await bobs.next()) == ("bobs", S.MONITOR_STATE_PENDING, S.MONITOR_STATE_UNSPECIFIED)
        assert shop_only.messages.empty()
        assert everything.messages.empty()
    finally:
        for watch in (everything, shop_only, bobs):
            await watch.close()


async def test_a_monitor_going_stale_is_sent_as_unknown_as_get_monitor_status_reads_it(served: Served) -> None:
    one_second = duration_pb2.Duration(seconds=1)
    silent = await create(served, served.alice, website("silent", interval=one_second, timeout=one_second))
    await served.connect_runner("r1")
    watch = await Watch(served, served.alice).opened()
    try:
        await served.report("r1", result(silent.id, datetime.now(UTC), True))
        assert seen(await watch.next()) == ("silent", S.MONITOR_STATE_UP, S.MONITOR_STATE_PENDING)
        began = time.monotonic()
        stale_after_s = STALE_INTERVALS * 1 + 1 + STALE_GRACE.total_seconds()
        unknown = await watch.next(timeout_s=stale_after_s + 20)  # the runner reports no more
        assert time.monotonic() - began > stale_after_s - 2
        assert seen(unknown) == ("silent", S.MONITOR_STATE_UNKNOWN, S.MONITOR_STATE_UP)
        status = (
            await served.stub.GetMonitorStatus(pb.GetMonitorStatusRequest(id=silent.id), metadata=served.alice)
        ).status
        assert status.state == S.MONITOR_STATE_UNKNOWN
        assert unknown.state_change_time == status.state_change_time
        assert unknown.last_check_time == status.last_check_time
    finally:
        await watch.close()


async def test_streams_per_user_are_capped(served: Served) -> None:
    await create(served, served.alice, website("one"))
    watches = [await Watch(served, served.alice, include_current=True).opened() for _ in range(2)]
    try:
        for watch in watches:
            assert (await watch.next()).current  # open on the server
        third = Watch(served, served.alice)
        assert await asyncio.wait_for(third.ended, 10) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert third.error is not None
        info = next(d for d in rich_details(third.error) if isinstance(d, error_details_pb2.ErrorInfo))
        assert info.metadata["limit"] == "streams_per_user"
        bobs = await Watch(served, served.bob, include_current=True).opened()  # another user's streams do not count
        await create(served, served.bob, website("bobs"))
        assert seen(await bobs.next()) == ("bobs", S.MONITOR_STATE_PENDING, S.MONITOR_STATE_UNSPECIFIED)
        await bobs.close()
        await watches.pop().close()
        deadline = time.monotonic() + 10
        while True:  # the server lets the closed stream go as soon as it sees the cancellation
            again = Watch(served, served.alice, include_current=True)
            watches.append(again)
            first = asyncio.ensure_future(again.next())
            either: list[asyncio.Future[Any]] = [first, again.ended]
            await asyncio.wait(either, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            if first.done():
                assert first.result().current
                break
            first.cancel()
            assert again.ended.result() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    finally:
        for watch in watches:
            await watch.close()


async def test_streams_end_with_ok_when_the_server_drains(served: Served) -> None:
    watch = await Watch(served, served.alice, include_current=True).opened()
    await create(served, served.alice, website("one"))
    await watch.next()
    stopping = asyncio.create_task(served.host.stop())
    try:
        # Well within the 60 s grace: the drain ends the stream, not the grace's end.
        assert await asyncio.wait_for(watch.ended, 20) == grpc.StatusCode.OK
    finally:
        await stopping
        await watch.close()


def monitor(monitor_id: str, owner_id: str = "usr_a") -> Monitor:
    moment = datetime.now(UTC)
    return Monitor(
        monitor_id,
        owner_id,
        monitor_id,
        WebsiteSpec(url="https://example.com/"),
        timedelta(seconds=60),
        timedelta(seconds=10),
        0,
        (),
        0,
        False,
        {},
        "",
        moment,
        moment,
    )


async def test_a_slow_reader_keeps_the_newest_changes_and_learns_how_many_it_missed() -> None:
    async def no_monitors(owner_id: str) -> list[Monitor]:
        return []

    async def no_statuses(monitors: object) -> dict[str, MonitorStatus]:
        return {}

    watch = StatusWatch(no_monitors, no_statuses, max_streams=10, buffer=5)
    _, subscription = await watch.subscribe("usr_a", False, {})
    flapping = monitor("mon_1")
    await watch.monitor_changed(flapping.id, flapping)  # 1 change: created
    at = datetime.now(UTC)
    for i in range(20):  # 20 changes: DOWN, UP, DOWN...
        state = MonitorState.DOWN if i % 2 == 0 else MonitorState.UP
        moment = at + timedelta(seconds=i)
        watch.results_recorded(
            [], [MonitorStatus(flapping.id, state, last_check_time=moment, state_change_time=moment)]
        )
    await watch.close()
    read = [(change.state, dropped) async for change, dropped in subscription]
    assert [dropped for _, dropped in read] == [16, 0, 0, 0, 0]
    assert [state for state, _ in read] == [MonitorState.UP if i % 2 else MonitorState.DOWN for i in range(15, 20)]
