"""The alert service's client of MonitorService.WatchMonitorEvents: every monitor with its state, then each
change, state change and (with ``include_results``) each recorded batch of results, handed to a sink.

The stream is long-lived and has no deadline; keepalive pings (:data:`CHANNEL_OPTIONS`) notice a dead server,
and the starting snapshot must arrive within ``snapshot_timeout_s``. When the stream breaks the sink hears
``feed_down`` (evaluations are unknown from then on) and the feed reconnects with capped exponential backoff and
jitter; the new snapshot replaces what was known.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import grpc

from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc
from services.alert_svc.domain import MonitorInfo, MonitorState, SampleEvent

log = logging.getLogger(__name__)

# For the channel the feed runs on: pings every 10 s on the idle stream, so a dead monitor service (or network)
# is noticed within 15 s; messages up to 16 MiB (the server sends at most about 1 MiB each).
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    # gRPC's own reconnect backoff (1 s growing to 120 s) would decide when the feed comes back after the
    # monitor service restarted, tens of seconds late; the feed's own retries (max_backoff_s) decide instead.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]


class FeedSink(Protocol):
    """Where the feed delivers. Calls come one at a time, in the order the monitor service sent them."""

    async def feed_snapshot(self, monitors: list[MonitorInfo]) -> None:
        """Every monitor, as of now: replaces what was known (also after a reconnect)."""

    async def feed_monitor(self, monitor: MonitorInfo) -> None:
        """A monitor was created or changed (its labels, pause, or its state)."""

    async def feed_deleted(self, monitor_id: str) -> None:
        """A monitor was deleted."""

    async def feed_samples(self, samples: list[SampleEvent]) -> None:
        """Samples as they were stored, oldest first per monitor."""

    async def feed_down(self) -> None:
        """The stream broke: what the feed delivers is unknown until the next snapshot."""


def _state(value: int) -> MonitorState:
    name = common_pb2.MonitorState.Name(value).removeprefix("MONITOR_STATE_").lower()  # type: ignore[arg-type]
    return MonitorState(name)


def monitor_from_proto(info: monitor_service_pb2.MonitorInfo) -> MonitorInfo:
    changed = info.state_change_time
    return MonitorInfo(
        monitor_id=info.monitor_id,
        owner_id=info.owner_id,
        display_name=info.display_name,
        labels=dict(info.labels),
        kind=info.kind,
        state=_state(info.state),
        state_change_time=(
            datetime.fromtimestamp(changed.seconds, UTC) + timedelta(microseconds=changed.nanos // 1000)
            if info.HasField("state_change_time")
            else None
        ),
        paused=info.paused,
        interval=info.interval.ToTimedelta() if info.HasField("interval") else timedelta(seconds=60),
        owner_email=info.owner_email,
        down_reason=info.down_reason,
    )


def sample_from_proto(result: monitor_service_pb2.RecordedResult) -> SampleEvent:
    at = result.check_time
    return SampleEvent(result.owner_id, result.monitor_id, at.seconds + at.nanos / 1e9, dict(result.fields))


class MonitorFeed:
    """Watches the monitor service's events on ``channel`` (open it with :data:`CHANNEL_OPTIONS`) with the
    service ``token``, and feeds ``sink``. :meth:`run` until cancelled."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        token: str,
        sink: FeedSink,
        include_results: bool,
        *,
        snapshot_timeout_s: float = 60.0,
        min_backoff_s: float = 0.2,
        # While the feed is down nothing fires: at 10 s, a monitor service killed and back within 3 s was
        # watched again only 7-10 s later, and an outage of its monitors recorded meanwhile never alerted.
        # One leader holds one feed, so a retry a second against a dead server costs nothing.
        max_backoff_s: float = 1.0,
    ) -> None:
        self._stub = monitor_service_pb2_grpc.MonitorServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._sink = sink
        self._request = monitor_service_pb2.WatchMonitorEventsRequest(include_results=include_results)
        self._snapshot_timeout_s = snapshot_timeout_s
        self._min_backoff_s = min_backoff_s
        self._max_backoff_s = max_backoff_s
        self.up = False  # a snapshot was delivered and the stream has not broken since
        self.snapshots = 0
        self.disconnects = 0
        self.samples = 0

    async def run(self) -> None:
        """Watch, reconnecting after every break, until cancelled."""
        failures = 0
        while True:
            try:
                await self._watch_once()
                # The monitor service ended it (it drains to stop or restart): expected, so not a warning.
                log.info("monitor event stream ended; reconnecting")
            except grpc.aio.AioRpcError as error:
                # Started beside the monitor service (make run, a fresh deployment), the first attempts find it
                # not listening yet: that is waiting, not a failure, until it has gone on for a while.
                starting = self.snapshots == 0 and error.code() is grpc.StatusCode.UNAVAILABLE and failures < 20
                log.log(
                    logging.INFO if starting else logging.WARNING,
                    "waiting for the monitor service" if starting else "monitor event stream failed; reconnecting",
                    extra={"code": error.code().name, "details": error.details()},
                )
            except TimeoutError:
                log.warning("monitor event snapshot did not arrive in time; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("monitor event sink failed; reconnecting")
            if self.up:
                failures = 0  # it had worked: come back quickly
            await self._down()
            failures += 1
            ceiling = min(self._max_backoff_s, self._min_backoff_s * 2 ** (failures - 1))
            await asyncio.sleep(random.uniform(ceiling / 2, ceiling))  # jitter: replicas do not reconnect in step

    async def _down(self) -> None:
        if self.up:
            self.up = False
            self.disconnects += 1
            await self._sink.feed_down()

    async def _watch_once(self) -> None:
        call = self._stub.WatchMonitorEvents(self._request, metadata=self._metadata)
        try:
            snapshot: list[MonitorInfo] = []
            async with asyncio.timeout(self._snapshot_timeout_s):
                while True:
                    message = await call.read()
                    if message is grpc.aio.EOF:
                        return
                    assert isinstance(message, monitor_service_pb2.WatchMonitorEventsResponse)
                    snapshot.extend(map(monitor_from_proto, message.monitors))
                    if message.snapshot_complete:
                        break
            await self._sink.feed_snapshot(snapshot)
            self.up = True
            self.snapshots += 1
            log.info("monitor event snapshot", extra={"monitors": len(snapshot)})
            del snapshot
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    return
                assert isinstance(message, monitor_service_pb2.WatchMonitorEventsResponse)
                for info in message.monitors:
                    await self._sink.feed_monitor(monitor_from_proto(info))
                for monitor_id in message.deleted_monitor_ids:
                    await self._sink.feed_deleted(monitor_id)
                if message.results:
                    samples = [sample_from_proto(r) for r in message.results]
                    self.samples += len(samples)
                    await self._sink.feed_samples(samples)
        finally:
            call.cancel()
