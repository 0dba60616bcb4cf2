"""WatchMonitorEvents, the alert service's feed: a real monitor service (in-process, on both stores), a fake
runner reporting results with the runners' token, and a watcher reading the stream as the alert service does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from harness.monitor_service import Served, serve_monitors
from monitors.v1 import common_pb2, monitor_service_pb2
from service_runtime.errors import ResourceExhausted
from service_runtime.timeseries import Sample
from services.monitor_svc.domain import MonitorKind, MonitorState
from services.monitor_svc.events import MonitorView, Subscription

pb = monitor_service_pb2


@pytest.fixture
async def served(database_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    async with serve_monitors(database_url, tmp_path, {"MONITORS_MAX_MONITORS_PER_USER": "2000"}) as monitors:
        yield monitors


def website(name: str, labels: dict[str, str] | None = None, retries: int = 0) -> pb.Monitor:
    return pb.Monitor(
        display_name=name,
        spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=f"https://example.com/{name}")),
        interval=duration_pb2.Duration(seconds=30),
        retries=retries,
        labels=labels or {},
    )


class Watcher:
    """A WatchMonitorEvents stream read in the background into a queue of messages."""

    def __init__(self, served: Served, include_results: bool = False) -> None:
        self.call = served.stub.WatchMonitorEvents(
            pb.WatchMonitorEventsRequest(include_results=include_results), metadata=served.alert_service
        )
        self.messages: asyncio.Queue[pb.WatchMonitorEventsResponse] = asyncio.Queue()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.call:
            self.messages.put_nowait(message)

    async def snapshot(self) -> tuple[list[pb.WatchMonitorEventsResponse], dict[str, pb.MonitorInfo]]:
        pages = []
        while True:
            page = await asyncio.wait_for(self.messages.get(), 30)
            pages.append(page)
            if page.snapshot_complete:
                return pages, {m.monitor_id: m for p in pages for m in p.monitors}

    async def next(self, timeout_s: float = 10.0) -> pb.WatchMonitorEventsResponse:
        return await asyncio.wait_for(self.messages.get(), timeout_s)

    async def monitor_event(self, monitor_id: str, timeout_s: float = 10.0) -> pb.MonitorInfo:
        """The next event about ``monitor_id``'s info (other events skipped)."""
        async with asyncio.timeout(timeout_s):
            while True:
                message = await self.messages.get()
                for info in message.monitors:
                    if info.monitor_id == monitor_id:
                        return info

    async def close(self) -> None:
        self.call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_an_empty_service_sends_an_empty_complete_snapshot(served: Served) -> None:
    watcher = Watcher(served)
    try:
        pages, monitors = await watcher.snapshot()
        assert len(pages) == 1
        assert monitors == {}
    finally:
        await watcher.close()


async def test_the_snapshot_pages_every_monitor_of_every_user_then_changes_follow(served: Served) -> None:
    stub = served.stub
    created: dict[str, str] = {}  # monitor id -> owner's name
    for who, md, count in (("alice", served.alice, 700), ("bob", served.bob, 500)):
        for start in range(0, count, 100):
            replies = await asyncio.gather(
                *(
                    stub.CreateMonitor(
                        pb.CreateMonitorRequest(monitor=website(f"{who}-{i}", {"team": who, "n": str(i)})),
                        metadata=md,
                        timeout=30,
                    )
                    for i in range(start, start + 100)
                )
            )
            created.update({r.monitor.id: who for r in replies})
    watcher = Watcher(served)
    try:
        pages, monitors = await watcher.snapshot()
        assert len(pages) >= 3, "1,200 monitors come in pages, not one message"
        assert all(len(p.monitors) <= 500 for p in pages)
        assert all(p.ByteSize() <= 1 << 20 for p in pages)
        assert [p.snapshot_complete for p in pages] == [False] * (len(pages) - 1) + [True]
        assert set(monitors) == set(created)
        owners = {m.labels["team"]: m.owner_id for m in monitors.values()}
        assert len(set(owners.values())) == 2
        one = next(m for m in monitors.values() if m.display_name == "alice-7")
        assert (dict(one.labels), one.kind, one.state, one.paused) == (
            {"team": "alice", "n": "7"},
            "website",
            common_pb2.MONITOR_STATE_PENDING,
            False,
        )
        assert one.interval.seconds == 30
        assert one.HasField("state_change_time")

        new = (await stub.CreateMonitor(pb.CreateMonitorRequest(monitor=website("late")), metadata=served.bob)).monitor
        info = await watcher.monitor_event(new.id)
        assert (info.display_name, info.owner_id, info.state) == (
            "late",
            owners["bob"],
            common_pb2.MONITOR_STATE_PENDING,
        )

        relabelled = pb.Monitor(id=new.id, labels={"tier": "gold"})
        mask = field_mask_pb2.FieldMask(paths=["labels"])
        await stub.UpdateMonitor(pb.UpdateMonitorRequest(monitor=relabelled, update_mask=mask), metadata=served.bob)
        assert dict((await watcher.monitor_event(new.id)).labels) == {"tier": "gold"}

        await stub.PauseMonitor(pb.PauseMonitorRequest(id=new.id), metadata=served.bob)
        paused = await watcher.monitor_event(new.id)
        assert (paused.paused, paused.state) == (True, common_pb2.MONITOR_STATE_PAUSED)
        await stub.ResumeMonitor(pb.ResumeMonitorRequest(id=new.id), metadata=served.bob)
        resumed = await watcher.monitor_event(new.id)
        assert (resumed.paused, resumed.state) == (False, common_pb2.MONITOR_STATE_PENDING)

        await stub.DeleteMonitor(pb.DeleteMonitorRequest(id=new.id), metadata=served.bob)
        message = await watcher.next()
        assert list(message.deleted_monitor_ids) == [new.id]
    finally:
        await watcher.close()


async def report(served: Served, runner_id: str, results: list[common_pb2.CheckResult]) -> pb.ReportResultsResponse:
    reply: pb.ReportResultsResponse = await served.stub.ReportResults(
        iter([pb.ReportResultsRequest(runner_id=runner_id, results=results)]), metadata=served.runner, timeout=10
    )
    return reply


def result(monitor_id: str, at: datetime, is_up: bool, response_ms: float) -> common_pb2.CheckResult:
    message = common_pb2.CheckResult(
        monitor_id=monitor_id, is_up=is_up, fields={"response_time_ms": response_ms, "status_code": 500.0}
    )
    message.check_time.FromDatetime(at)
    return message


@pytest.mark.parametrize("database_url", ["embedded"], indirect=True)
async def test_state_changes_after_retries_and_results_as_stored(served: Served) -> None:
    stub = served.stub
    monitor = (
        await stub.CreateMonitor(pb.CreateMonitorRequest(monitor=website("flaky", retries=1)), metadata=served.alice)
    ).monitor
    # A fake runner: registered by its assignment stream, reporting with the runners' token.
    assignments = stub.WatchAssignments(
        pb.WatchAssignmentsRequest(runner_id="r1", location="eu"), metadata=served.runner
    )
    first = await asyncio.wait_for(assignments.read(), 10)
    assert isinstance(first, pb.WatchAssignmentsResponse)
    assert [a.monitor.id for a in first.upserts] == [monitor.id]
    with_results = Watcher(served, include_results=True)
    without = Watcher(served)
    try:
        _, known = await with_results.snapshot()
        owner_id = known[monitor.id].owner_id
        await without.snapshot()
        start = datetime.now(UTC) - timedelta(seconds=30)
        # The first failure is a retry (PENDING, no state change); the second makes it DOWN.
        reply = await report(served, "r1", [result(monitor.id, start, False, 12.5)])
        assert reply.accepted == 1
        message = await with_results.next()
        assert list(message.monitors) == []
        [recorded] = message.results
        assert (recorded.monitor_id, recorded.owner_id, recorded.location) == (monitor.id, owner_id, "eu")
        assert recorded.check_time.ToDatetime(UTC) == start
        assert dict(recorded.fields) == {"response_time_ms": 12.5, "status_code": 500.0, "is_up": 0.0}

        await report(served, "r1", [result(monitor.id, start + timedelta(seconds=1), False, 13.0)])
        down = await without.next()
        assert list(down.results) == [], "results only for a watcher that asked for them"
        [info] = down.monitors
        assert info.state == common_pb2.MONITOR_STATE_DOWN
        assert info.state_change_time.ToDatetime(UTC) == start + timedelta(seconds=1)
        message = await with_results.next()
        assert [m.state for m in message.monitors] == [common_pb2.MONITOR_STATE_DOWN]
        assert len(message.results) == 1

        # A resent report (not newer than what is stored) is skipped: nothing is sent for it.
        await report(served, "r1", [result(monitor.id, start + timedelta(seconds=1), False, 13.0)])
        await report(served, "r1", [result(monitor.id, start + timedelta(seconds=2), True, 9.0)])
        message = await with_results.next()
        assert [m.state for m in message.monitors] == [common_pb2.MONITOR_STATE_UP]
        assert [r.fields["is_up"] for r in message.results] == [1.0]

        # A batch of many results comes coalesced, not one message per result.
        batch = [result(monitor.id, start + timedelta(seconds=3 + i / 100), True, float(i)) for i in range(200)]
        await report(served, "r1", batch)
        got: list[pb.RecordedResult] = []
        messages = 0
        while len(got) < 200:
            got.extend((await with_results.next()).results)
            messages += 1
        assert messages == 1
        assert [r.fields["response_time_ms"] for r in got] == [float(i) for i in range(200)]
    finally:
        assignments.cancel()
        await with_results.close()
        await without.close()


@pytest.mark.parametrize("database_url", ["embedded"], indirect=True)
async def test_a_user_token_is_refused(served: Served) -> None:
    call = served.stub.WatchMonitorEvents(pb.WatchMonitorEventsRequest(), metadata=served.alice, timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def view(monitor_id: str, name: str = "m") -> MonitorView:
    return MonitorView(
        monitor_id, "u1", name, {}, MonitorKind.WEBSITE, MonitorState.UP, None, False, timedelta(seconds=60)
    )


def sample(i: int) -> Sample:
    return Sample("u1", "m1", datetime.now(UTC), {"is_up": 1.0, "n": float(i)}, {}, {})


async def test_pending_events_are_coalesced_in_change_order() -> None:
    subscription = Subscription(include_results=True, backlog=100)
    subscription.put_monitor(view("m1", "first"))
    subscription.put_monitor(view("m2"))
    subscription.put_monitor(view("m1", "second"))
    subscription.put_monitor(view("m3"))
    subscription.put_deleted("m3")
    subscription.put_results([sample(1), sample(2)])
    batch = await subscription.next_batch(max_results=10)
    assert batch is not None
    assert [(v.monitor_id, v.display_name) for v in batch.monitors] == [("m2", "m"), ("m1", "second")]
    assert batch.deleted == ["m3"]
    assert [s.fields["n"] for s in batch.results] == [1.0, 2.0]


async def test_a_subscriber_that_falls_too_far_behind_is_cut_off() -> None:
    subscription = Subscription(include_results=True, backlog=50)
    for i in range(10):
        subscription.put_results([sample(i * 6 + j) for j in range(6)])
    with pytest.raises(ResourceExhausted):
        await subscription.next_batch(max_results=10)


async def test_a_closed_subscription_ends_after_what_is_pending() -> None:
    subscription = Subscription(include_results=False, backlog=50)
    subscription.put_results([sample(1)])  # not asked for
    subscription.put_monitor(view("m1"))
    subscription.close()
    batch = await subscription.next_batch(max_results=10)
    assert batch is not None
    assert [v.monitor_id for v in batch.monitors] == ["m1"]
    assert batch.results == []
    assert await subscription.next_batch(max_results=10) is None
