"""MonitorService's servicer: protobuf in, domain call, protobuf out. Nothing else lives here."""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from monitors.v1 import common_pb2, monitor_service_pb2_grpc
from monitors.v1 import monitor_service_pb2 as mpb
from service_runtime.auth import current_principal
from service_runtime.errors import FailedPrecondition, InvalidArgument, Violations
from service_runtime.pagination import encode_page_token
from service_runtime.timeseries import Sample
from service_runtime.timestamps import from_duration, from_timestamp, to_duration, to_timestamp
from services.monitor_svc.assignments import AssignmentHub
from services.monitor_svc.domain import MonitorKind, MonitorState
from services.monitor_svc.events import EventBatch, MonitorEvents, MonitorView
from services.monitor_svc.fleet.reconciler import RunnerFleet
from services.monitor_svc.heartbeats import Heartbeats
from services.monitor_svc.monitors import Deployment, ListingFilter, Monitors, placement
from services.monitor_svc.status_watch import StatusChange, StatusWatch
from services.monitor_svc.suggest import suggest_monitors
from services.monitor_svc.translate import (
    AGGREGATIONS,
    aggregation_to_proto,
    draft_from_proto,
    monitor_to_proto,
    ping_to_proto,
    result_from_proto,
    result_to_proto,
    spec_from_proto,
    status_to_proto,
    suggestion_to_proto,
    summary_to_proto,
)
from services.monitor_svc.user_secrets import SecretInfo

Context = Any  # grpc.aio.ServicerContext; the interceptors own status handling, servicers never touch it.
log = logging.getLogger(__name__)


def secret_to_proto(info: SecretInfo) -> mpb.Secret:
    return mpb.Secret(
        name=info.name, create_time=to_timestamp(info.create_time), update_time=to_timestamp(info.update_time)
    )


# A WatchMonitorEvents message holds at most this many events and about a quarter of the largest message (at
# most 1 MiB: a client's default limit is 4 MiB); results are taken from a subscriber's queue this many at a time.
EVENTS_PER_MESSAGE = 500
RESULTS_PER_BATCH = 5000


def monitor_info_to_proto(view: MonitorView) -> mpb.MonitorInfo:
    return mpb.MonitorInfo(
        monitor_id=view.monitor_id,
        owner_id=view.owner_id,
        display_name=view.display_name,
        labels=view.labels,
        kind=view.kind.value,
        state=common_pb2.MonitorState.Value(f"MONITOR_STATE_{view.state.name}"),
        state_change_time=to_timestamp(view.state_change_time),
        paused=view.paused,
        interval=to_duration(view.interval),
        owner_email=view.owner_email,
    )


def recorded_result_to_proto(sample: Sample) -> mpb.RecordedResult:
    return mpb.RecordedResult(
        owner_id=sample.owner_id,
        monitor_id=sample.monitor_id,
        check_time=to_timestamp(sample.time),
        fields=sample.fields,
        location=sample.tags.get("location", ""),
    )


Packed = tuple[int, Callable[[mpb.WatchMonitorEventsResponse], None]]  # an event's size, and how to add it


def _packed_monitor(view: MonitorView) -> Packed:
    info = monitor_info_to_proto(view)
    return info.ByteSize() + 4, lambda message: message.monitors.append(info)


def _packed_deletion(monitor_id: str) -> Packed:
    return len(monitor_id) + 2, lambda message: message.deleted_monitor_ids.append(monitor_id)


def _packed_result(sample: Sample) -> Packed:
    result = recorded_result_to_proto(sample)
    return result.ByteSize() + 4, lambda message: message.results.append(result)


def event_messages(
    monitors: Iterable[MonitorView], deleted: Iterable[str], results: Iterable[Sample], max_bytes: int
) -> Iterator[mpb.WatchMonitorEventsResponse]:
    """Messages carrying these events in order (monitors, deletions, results), each with at most
    EVENTS_PER_MESSAGE events and about ``max_bytes``; nothing when there are no events."""
    message = mpb.WatchMonitorEventsResponse()
    size = count = 0
    packed = itertools.chain(
        map(_packed_monitor, monitors), map(_packed_deletion, deleted), map(_packed_result, results)
    )
    for item_size, add in packed:
        if count and (count >= EVENTS_PER_MESSAGE or size + item_size > max_bytes):
            yield message
            message = mpb.WatchMonitorEventsResponse()
            size = count = 0
        add(message)
        size += item_size
        count += 1
    if count:
        yield message


def assignment_messages(
    full_sync: bool, upserts: Iterable[mpb.Assignment], removed: Iterable[str], max_bytes: int, limit_bytes: int
) -> Iterator[mpb.WatchAssignmentsResponse]:
    """One change for a runner as messages of about ``max_bytes`` each: a full set (``full_sync``) marked on
    its first page and as continuing on all but its last, so that no number of assignments makes a message too
    large to send. An assignment that alone exceeds ``limit_bytes`` (the largest message) is left out and logged: sent,
    it would end the stream, and every reconnect would fail the same way."""
    pages = [mpb.WatchAssignmentsResponse(full_sync=full_sync)]
    size = 0

    def room_for(item_size: int) -> mpb.WatchAssignmentsResponse:
        nonlocal size
        if size and size + item_size > max_bytes:
            pages.append(mpb.WatchAssignmentsResponse())
            size = 0
        size += item_size
        return pages[-1]

    for assignment in upserts:
        item_size = assignment.ByteSize() + 8
        if item_size > limit_bytes:
            log.error("assignment too large to send", extra={"monitor_id": assignment.monitor.id, "bytes": item_size})
            continue
        room_for(item_size).upserts.append(assignment)
    for monitor_id in removed:
        room_for(len(monitor_id) + 4).removed_monitor_ids.append(monitor_id)
    for page in pages[:-1]:
        page.full_sync_continues = full_sync
    return iter(pages)


def _state_to_proto(state: MonitorState | None) -> common_pb2.MonitorState.ValueType:
    return common_pb2.MONITOR_STATE_UNSPECIFIED if state is None else _STATES_TO_PROTO[state]


def status_change_to_proto(change: StatusChange, dropped: int) -> mpb.WatchMonitorStatusResponse:
    return mpb.WatchMonitorStatusResponse(
        monitor_id=change.monitor_id,
        display_name=change.display_name,
        state=_state_to_proto(change.state),
        previous_state=_state_to_proto(change.previous),
        state_change_time=to_timestamp(change.state_change_time),
        last_check_time=to_timestamp(change.last_check_time),
        current=change.current,
        deleted=change.state is None,
        dropped=dropped,
    )


_STATES_FROM_PROTO = {
    common_pb2.MONITOR_STATE_UP: MonitorState.UP,
    common_pb2.MONITOR_STATE_DOWN: MonitorState.DOWN,
    common_pb2.MONITOR_STATE_PENDING: MonitorState.PENDING,
    common_pb2.MONITOR_STATE_PAUSED: MonitorState.PAUSED,
    common_pb2.MONITOR_STATE_UNKNOWN: MonitorState.UNKNOWN,
}
_STATES_TO_PROTO = {state: value for value, state in _STATES_FROM_PROTO.items()}
_KINDS = {kind.value: kind for kind in MonitorKind}


def listing_filter_from_proto(request: mpb.ListMonitorsRequest) -> ListingFilter:
    """ListMonitors' filters; INVALID_ARGUMENT naming states or kinds for a value that names none."""
    bad = Violations()
    if any(state not in _STATES_FROM_PROTO for state in request.states):
        bad.add("states", "must name monitor states (MONITOR_STATE_UP, _DOWN, _PENDING, _PAUSED or _UNKNOWN)")
    unknown = [kind for kind in request.kinds if kind not in _KINDS]
    if unknown:
        bad.add("kinds", f"{', '.join(map(repr, unknown))} is not a kind; kinds: {', '.join(_KINDS)}")
    bad.raise_any()
    return ListingFilter(
        states=frozenset(_STATES_FROM_PROTO[s] for s in request.states),
        kinds=frozenset(_KINDS[k] for k in request.kinds),
        labels=dict(request.label_selector),
    )


class MonitorServicer(monitor_service_pb2_grpc.MonitorServiceServicer):
    """MonitorService: protobuf in, :class:`Monitors` call, protobuf out."""

    def __init__(
        self,
        monitors: Monitors,
        deployment: Deployment,
        hub: AssignmentHub,
        ping_base_url: str,
        events: MonitorEvents,
        max_message_bytes: int,
        heartbeats: Heartbeats,
        status_watch: StatusWatch,
        fleet: RunnerFleet | None = None,
    ) -> None:
        self._monitors = monitors
        self._fleet = fleet
        self._status_watch = status_watch
        self._heartbeats = heartbeats
        self._ping_base_url = ping_base_url
        self._deployment = deployment
        self._hub = hub
        self._events = events
        self._message_budget = max(1024, min(1 << 20, max_message_bytes // 4))
        self._message_limit = max_message_bytes - 64  # room for the message's own fields

    async def WatchMonitorEvents(
        self, request: mpb.WatchMonitorEventsRequest, context: Context
    ) -> AsyncIterator[mpb.WatchMonitorEventsResponse]:
        subscription, snapshot = await self._events.subscribe(request.include_results)
        try:
            last = None
            for page in event_messages(snapshot, (), (), self._message_budget):
                if last is not None:
                    yield last
                last = page
            if last is None:
                last = mpb.WatchMonitorEventsResponse()
            last.snapshot_complete = True
            yield last
            while (batch := await subscription.next_batch(RESULTS_PER_BATCH)) is not None:
                for message in self._batch_messages(batch):
                    yield message
        finally:
            self._events.unsubscribe(subscription)

    def _batch_messages(self, batch: EventBatch) -> Iterator[mpb.WatchMonitorEventsResponse]:
        return event_messages(batch.monitors, batch.deleted, batch.results, self._message_budget)

    async def WatchAssignments(
        self, request: mpb.WatchAssignmentsRequest, context: Context
    ) -> AsyncIterator[mpb.WatchAssignmentsResponse]:
        runner = await self._hub.connect(
            request.runner_id, request.location, request.capacity, request.version, request.dedicated_monitor_id
        )
        try:
            await self._monitors.location_served(runner.location)
            async for change in self._hub.feed(runner):
                # A dedicated runner reads its monitor's secrets from the Kubernetes Secret mounted in its pod.
                upserts = [
                    mpb.Assignment(
                        monitor=monitor_to_proto(m),
                        secrets={} if runner.dedicated_to else await self._monitors.secrets_for(m),
                    )
                    for m in change.upserts
                ]
                pages = assignment_messages(
                    change.full_sync, upserts, change.removed, self._message_budget, self._message_limit
                )
                for page in pages:
                    yield page
        finally:
            await self._hub.disconnect(runner)

    async def ReportResults(
        self, request_iterator: AsyncIterator[mpb.ReportResultsRequest], context: Context
    ) -> mpb.ReportResultsResponse:
        accepted = rejected = 0
        async for batch in request_iterator:
            location = self._hub.location_of(batch.runner_id)
            if location is None:
                # Not registered (yet): after a restart or a reconnect a runner's report can come before its
                # WatchAssignments. Refuse the call rather than its results, so that the runner keeps and resends them.
                raise FailedPrecondition(f"runner {batch.runner_id} is not connected: watch its assignments first")
            recorded = []
            for reported in batch.results:
                monitor = self._hub.owns(batch.runner_id, reported.monitor_id)
                if monitor is None or not reported.HasField("check_time"):
                    rejected += 1
                    continue
                try:
                    result = replace(result_from_proto(reported), runner_id=batch.runner_id, location=location)
                except InvalidArgument:  # a check time or duration out of range: this result, not the batch, is refused
                    rejected += 1
                    continue
                recorded.append((monitor, result))
            await self._monitors.record_many(recorded)
            accepted += len(recorded)
        return mpb.ReportResultsResponse(accepted=accepted, rejected=rejected)

    async def CreateMonitor(self, request: mpb.CreateMonitorRequest, context: Context) -> mpb.CreateMonitorResponse:
        monitor = await self._monitors.create(current_principal(), draft_from_proto(request.monitor))
        return mpb.CreateMonitorResponse(monitor=monitor_to_proto(monitor, self._ping_base_url))

    async def GetMonitor(self, request: mpb.GetMonitorRequest, context: Context) -> mpb.GetMonitorResponse:
        monitor = await self._monitors.get(current_principal(), request.id)
        return mpb.GetMonitorResponse(monitor=monitor_to_proto(monitor, self._ping_base_url))

    async def ListMonitors(self, request: mpb.ListMonitorsRequest, context: Context) -> mpb.ListMonitorsResponse:
        only = listing_filter_from_proto(request)
        page, token = await self._monitors.list(current_principal(), request.page_size, request.page_token, only)
        return mpb.ListMonitorsResponse(
            monitors=[monitor_to_proto(m, self._ping_base_url) for m, _ in page],
            statuses=[status_to_proto(s) for _, s in page],
            next_page_token=token,
        )

    async def UpdateMonitor(self, request: mpb.UpdateMonitorRequest, context: Context) -> mpb.UpdateMonitorResponse:
        paths = list(request.update_mask.paths)
        monitor = await self._monitors.update(
            current_principal(), request.monitor.id, draft_from_proto(request.monitor), paths
        )
        return mpb.UpdateMonitorResponse(monitor=monitor_to_proto(monitor, self._ping_base_url))

    async def DeleteMonitor(self, request: mpb.DeleteMonitorRequest, context: Context) -> mpb.DeleteMonitorResponse:
        await self._monitors.delete(current_principal(), request.id)
        return mpb.DeleteMonitorResponse()

    async def PauseMonitor(self, request: mpb.PauseMonitorRequest, context: Context) -> mpb.PauseMonitorResponse:
        monitor = await self._monitors.set_paused(current_principal(), request.id, True)
        return mpb.PauseMonitorResponse(monitor=monitor_to_proto(monitor, self._ping_base_url))

    async def ResumeMonitor(self, request: mpb.ResumeMonitorRequest, context: Context) -> mpb.ResumeMonitorResponse:
        monitor = await self._monitors.set_paused(current_principal(), request.id, False)
        return mpb.ResumeMonitorResponse(monitor=monitor_to_proto(monitor, self._ping_base_url))

    async def RunCheck(self, request: mpb.RunCheckRequest, context: Context) -> mpb.RunCheckResponse:
        target = request.WhichOneof("target")
        spec = spec_from_proto(request.spec, "spec") if target == "spec" else None
        if target == "spec" and spec is None:
            raise InvalidArgument("spec", "set one of website, crypto_price, tcp, dns, heartbeat, grpc_health")
        result = await self._monitors.run_check(
            current_principal(),
            request.monitor_id if target == "monitor_id" else "",
            spec,
            from_duration(request.timeout, request.HasField("timeout"), "timeout"),
        )
        return mpb.RunCheckResponse(result=result_to_proto(result))

    async def GetMonitorStatus(
        self, request: mpb.GetMonitorStatusRequest, context: Context
    ) -> mpb.GetMonitorStatusResponse:
        status = await self._monitors.status(current_principal(), request.id)
        return mpb.GetMonitorStatusResponse(status=status_to_proto(status))

    async def WatchMonitorStatus(
        self, request: mpb.WatchMonitorStatusRequest, context: Context
    ) -> AsyncIterator[mpb.WatchMonitorStatusResponse]:
        owner_id = current_principal().user_id
        current, subscription = await self._status_watch.subscribe(
            owner_id, request.include_current, dict(request.label_selector)
        )
        try:
            await context.send_initial_metadata(())  # the caller's sign that every change from now on is sent
            for change in current:
                yield status_change_to_proto(change, 0)
            async for change, dropped in subscription:
                yield status_change_to_proto(change, dropped)
        finally:
            self._status_watch.unsubscribe(owner_id, subscription)

    async def SuggestMonitors(
        self, request: mpb.SuggestMonitorsRequest, context: Context
    ) -> mpb.SuggestMonitorsResponse:
        suggestions = suggest_monitors(request.text, request.url, request.symbol, self._monitors.limits)
        return mpb.SuggestMonitorsResponse(suggestions=[suggestion_to_proto(s) for s in suggestions])

    async def QuerySamples(self, request: mpb.QuerySamplesRequest, context: Context) -> mpb.QuerySamplesResponse:
        time_range = request.time_range
        aggregation = request.aggregation
        if aggregation != common_pb2.AGGREGATION_UNSPECIFIED and aggregation not in AGGREGATIONS:
            raise InvalidArgument("aggregation", "is not a known aggregation")
        result = await self._monitors.query(
            current_principal(),
            request.monitor_id,
            request.field,
            from_timestamp(time_range.start_time, time_range.HasField("start_time"), "time_range.start_time"),
            from_timestamp(time_range.end_time, time_range.HasField("end_time"), "time_range.end_time"),
            from_duration(request.window, request.HasField("window"), "window"),
            AGGREGATIONS.get(aggregation),
            request.max_points,
        )
        return mpb.QuerySamplesResponse(
            points=[
                common_pb2.DataPoint(point_time=to_timestamp(p.time), value=p.value, sample_count=p.count)
                for p in result.points
            ],
            window=to_duration(result.window),
            aggregation=aggregation_to_proto(result.aggregation),
        )

    async def ListHeartbeatPings(
        self, request: mpb.ListHeartbeatPingsRequest, context: Context
    ) -> mpb.ListHeartbeatPingsResponse:
        pings, next_token = await self._heartbeats.recent_pings(
            current_principal(), request.monitor_id, request.page_size, request.page_token
        )
        return mpb.ListHeartbeatPingsResponse(pings=[ping_to_proto(p) for p in pings], next_page_token=next_token)

    async def SummarizeMonitor(
        self, request: mpb.SummarizeMonitorRequest, context: Context
    ) -> mpb.SummarizeMonitorResponse:
        time_range = request.time_range
        start, end, summary = await self._monitors.summarize(
            current_principal(),
            request.monitor_id,
            from_timestamp(time_range.start_time, time_range.HasField("start_time"), "time_range.start_time"),
            from_timestamp(time_range.end_time, time_range.HasField("end_time"), "time_range.end_time"),
        )
        response = mpb.SummarizeMonitorResponse(
            monitor_id=request.monitor_id,
            time_range=common_pb2.TimeRange(start_time=to_timestamp(start), end_time=to_timestamp(end)),
        )
        summary_to_proto(response, summary)
        return response

    async def SummarizeMonitors(
        self, request: mpb.SummarizeMonitorsRequest, context: Context
    ) -> mpb.SummarizeMonitorsResponse:
        time_range = request.time_range
        start, end, page, next_token = await self._monitors.summarize_many(
            current_principal(),
            list(request.monitor_ids),
            dict(request.label_selector),
            from_timestamp(time_range.start_time, time_range.HasField("start_time"), "time_range.start_time"),
            from_timestamp(time_range.end_time, time_range.HasField("end_time"), "time_range.end_time"),
            request.page_size,
            request.page_token,
        )
        summarized = common_pb2.TimeRange(start_time=to_timestamp(start), end_time=to_timestamp(end))
        response = mpb.SummarizeMonitorsResponse(time_range=summarized, next_page_token=next_token)
        size = 0
        for index, (monitor, summary) in enumerate(page):
            one = mpb.SummarizeMonitorResponse(monitor_id=monitor.id, time_range=summarized)
            summary_to_proto(one, summary)
            size += one.ByteSize() + 8
            if index and size > self._message_budget:  # the rest on the next page
                response.next_page_token = encode_page_token(page[index - 1][0].id)
                break
            response.summaries.append(one)
        return response

    async def PutSecret(self, request: mpb.PutSecretRequest, context: Context) -> mpb.PutSecretResponse:
        info = await self._monitors.secrets.put(current_principal(), request.name, request.value)
        return mpb.PutSecretResponse(secret=secret_to_proto(info))

    async def ListSecrets(self, request: mpb.ListSecretsRequest, context: Context) -> mpb.ListSecretsResponse:
        page, token = await self._monitors.secrets.list(current_principal(), request.page_size, request.page_token)
        return mpb.ListSecretsResponse(secrets=[secret_to_proto(s) for s in page], next_page_token=token)

    async def DeleteSecret(self, request: mpb.DeleteSecretRequest, context: Context) -> mpb.DeleteSecretResponse:
        await self._monitors.secrets.delete(current_principal(), request.name)
        return mpb.DeleteSecretResponse()

    async def GetDeploymentStatus(
        self, request: mpb.GetDeploymentStatusRequest, context: Context
    ) -> mpb.GetDeploymentStatusResponse:
        caller = current_principal()
        d = self._deployment
        runners = self._hub.runners()
        placed = placement(runners, caller)
        if self._fleet is not None:
            placed = await self._fleet.describe(placed, caller)
        return mpb.GetDeploymentStatusResponse(
            version=d.version,
            mode=d.mode,
            database_backend=d.database_backend,
            timeseries_backend=d.timeseries_backend,
            runners=[
                mpb.RunnerInfo(
                    runner_id=r.runner_id,
                    location=r.location,
                    connect_time=to_timestamp(r.connect_time),
                    last_report_time=to_timestamp(r.last_report_time),
                    assigned_monitors=r.assigned,
                    version=r.version,
                    ready=r.ready,
                    restarts=r.restarts,
                )
                for r in placed
            ],
            unassigned_monitors=self._hub.unassigned(None if caller.service else caller.user_id),
            locations=sorted({r.location for r in runners if not r.dedicated_to}),
        )
