"""MonitorService's servicer: protobuf in, domain call, protobuf out. Nothing else lives here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from monitors.v1 import monitor_service_pb2 as pb
from monitors.v1 import monitor_service_pb2_grpc
from service_runtime.auth import current_principal
from service_runtime.timestamps import from_duration
from services.monitor_svc.assignments import AssignmentHub
from services.monitor_svc.events import MonitorEvents
from services.monitor_svc.fleet.reconciler import RunnerFleet
from services.monitor_svc.heartbeats import Heartbeats
from services.monitor_svc.monitors import Deployment, Monitors, placement
from services.monitor_svc.status_watch import StatusWatch
from services.monitor_svc.suggest import suggest_monitors
from services.monitor_svc.translate import (
    aggregation_from_proto,
    assignment_messages,
    assignment_to_proto,
    check_target_from_proto,
    deployment_status_to_proto,
    draft_from_proto,
    event_messages,
    listing_filter_from_proto,
    monitor_to_proto,
    ping_to_proto,
    query_result_to_proto,
    reported_results_from_proto,
    result_to_proto,
    secret_to_proto,
    snapshot_messages,
    status_change_to_proto,
    status_to_proto,
    suggestion_to_proto,
    summaries_to_proto,
    summary_to_proto,
    time_range_from_proto,
    time_range_to_proto,
)

Context = Any  # grpc.aio.ServicerContext; the interceptors own status handling, servicers never touch it.
RESULTS_PER_BATCH = 5000  # results taken from a WatchMonitorEvents subscriber's queue at a time


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
        self, request: pb.WatchMonitorEventsRequest, context: Context
    ) -> AsyncIterator[pb.WatchMonitorEventsResponse]:
        subscription, snapshot = await self._events.subscribe(request.include_results)
        try:
            for message in snapshot_messages(snapshot, self._message_budget):
                yield message
            while (batch := await subscription.next_batch(RESULTS_PER_BATCH)) is not None:
                for message in event_messages(batch.monitors, batch.deleted, batch.results, self._message_budget):
                    yield message
        finally:
            self._events.unsubscribe(subscription)

    async def WatchAssignments(
        self, request: pb.WatchAssignmentsRequest, context: Context
    ) -> AsyncIterator[pb.WatchAssignmentsResponse]:
        runner = await self._hub.connect(
            request.runner_id, request.location, request.capacity, request.version, request.dedicated_monitor_id
        )
        try:
            await self._monitors.location_served(runner.location)
            async for change in self._hub.feed(runner):
                # A dedicated runner reads its monitor's secrets from the Kubernetes Secret mounted in its pod.
                upserts = [
                    assignment_to_proto(m, {} if runner.dedicated_to else await self._monitors.secrets_for(m))
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
        self, request_iterator: AsyncIterator[pb.ReportResultsRequest], context: Context
    ) -> pb.ReportResultsResponse:
        accepted = rejected = 0
        async for batch in request_iterator:
            taken, refused = await self._hub.report(batch.runner_id, reported_results_from_proto(batch.results))
            accepted, rejected = accepted + taken, rejected + refused
        return pb.ReportResultsResponse(accepted=accepted, rejected=rejected)

    async def CreateMonitor(self, request: pb.CreateMonitorRequest, context: Context) -> pb.CreateMonitorResponse:
        monitor = await self._monitors.create(current_principal(), draft_from_proto(request.monitor))
        return pb.CreateMonitorResponse(monitor=monitor_to_proto(monitor, self._ping_base_url))

    async def GetMonitor(self, request: pb.GetMonitorRequest, context: Context) -> pb.GetMonitorResponse:
        monitor = await self._monitors.get(current_principal(), request.id)
        return pb.GetMonitorResponse(monitor=monitor_to_proto(monitor, self._ping_base_url))

    async def ListMonitors(self, request: pb.ListMonitorsRequest, context: Context) -> pb.ListMonitorsResponse:
        only = listing_filter_from_proto(request)
        page, token = await self._monitors.list(current_principal(), request.page_size, request.page_token, only)
        return pb.ListMonitorsResponse(
            monitors=[monitor_to_proto(m, self._ping_base_url) for m, _ in page],
            statuses=[status_to_proto(s) for _, s in page],
            next_page_token=token,
        )

    async def UpdateMonitor(self, request: pb.UpdateMonitorRequest, context: Context) -> pb.UpdateMonitorResponse:
        paths = list(request.update_mask.paths)
        monitor = await self._monitors.update(
            current_principal(), request.monitor.id, draft_from_proto(request.monitor), paths
        )
        return pb.UpdateMonitorResponse(monitor=monitor_to_proto(monitor, self._ping_base_url))

    async def DeleteMonitor(self, request: pb.DeleteMonitorRequest, context: Context) -> pb.DeleteMonitorResponse:
        await self._monitors.delete(current_principal(), request.id)
        return pb.DeleteMonitorResponse()

    async def PauseMonitor(self, request: pb.PauseMonitorRequest, context: Context) -> pb.PauseMonitorResponse:
        monitor = await self._monitors.set_paused(current_principal(), request.id, True)
        return pb.PauseMonitorResponse(monitor=monitor_to_proto(monitor, self._ping_base_url))

    async def ResumeMonitor(self, request: pb.ResumeMonitorRequest, context: Context) -> pb.ResumeMonitorResponse:
        monitor = await self._monitors.set_paused(current_principal(), request.id, False)
        return pb.ResumeMonitorResponse(monitor=monitor_to_proto(monitor, self._ping_base_url))

    async def RunCheck(self, request: pb.RunCheckRequest, context: Context) -> pb.RunCheckResponse:
        monitor_id, spec = check_target_from_proto(request)
        timeout = from_duration(request.timeout, request.HasField("timeout"), "timeout")
        result = await self._monitors.run_check(current_principal(), monitor_id, spec, timeout)
        return pb.RunCheckResponse(result=result_to_proto(result))

    async def GetMonitorStatus(
        self, request: pb.GetMonitorStatusRequest, context: Context
    ) -> pb.GetMonitorStatusResponse:
        status = await self._monitors.status(current_principal(), request.id)
        return pb.GetMonitorStatusResponse(status=status_to_proto(status))

    async def WatchMonitorStatus(
        self, request: pb.WatchMonitorStatusRequest, context: Context
    ) -> AsyncIterator[pb.WatchMonitorStatusResponse]:
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

    async def SuggestMonitors(self, request: pb.SuggestMonitorsRequest, context: Context) -> pb.SuggestMonitorsResponse:
        suggestions = suggest_monitors(request.text, request.url, request.symbol, self._monitors.limits)
        return pb.SuggestMonitorsResponse(suggestions=[suggestion_to_proto(s) for s in suggestions])

    async def QuerySamples(self, request: pb.QuerySamplesRequest, context: Context) -> pb.QuerySamplesResponse:
        aggregation = aggregation_from_proto(request.aggregation)
        start, end = time_range_from_proto(request.time_range)
        window = from_duration(request.window, request.HasField("window"), "window")
        result = await self._monitors.query(
            current_principal(), request.monitor_id, request.field, start, end, window, aggregation, request.max_points
        )
        return query_result_to_proto(result)

    async def ListHeartbeatPings(
        self, request: pb.ListHeartbeatPingsRequest, context: Context
    ) -> pb.ListHeartbeatPingsResponse:
        pings, next_token = await self._heartbeats.recent_pings(
            current_principal(), request.monitor_id, request.page_size, request.page_token
        )
        return pb.ListHeartbeatPingsResponse(pings=[ping_to_proto(p) for p in pings], next_page_token=next_token)

    async def SummarizeMonitor(
        self, request: pb.SummarizeMonitorRequest, context: Context
    ) -> pb.SummarizeMonitorResponse:
        start, end = time_range_from_proto(request.time_range)
        start, end, summary = await self._monitors.summarize(current_principal(), request.monitor_id, start, end)
        return summary_to_proto(request.monitor_id, time_range_to_proto(start, end), summary)

    async def SummarizeMonitors(
        self, request: pb.SummarizeMonitorsRequest, context: Context
    ) -> pb.SummarizeMonitorsResponse:
        start, end = time_range_from_proto(request.time_range)
        start, end, page, next_token = await self._monitors.summarize_many(
            current_principal(),
            list(request.monitor_ids),
            dict(request.label_selector),
            start,
            end,
            request.page_size,
            request.page_token,
        )
        return summaries_to_proto(time_range_to_proto(start, end), page, next_token, self._message_budget)

    async def PutSecret(self, request: pb.PutSecretRequest, context: Context) -> pb.PutSecretResponse:
        info = await self._monitors.secrets.put(current_principal(), request.name, request.value)
        return pb.PutSecretResponse(secret=secret_to_proto(info))

    async def ListSecrets(self, request: pb.ListSecretsRequest, context: Context) -> pb.ListSecretsResponse:
        page, token = await self._monitors.secrets.list(current_principal(), request.page_size, request.page_token)
        return pb.ListSecretsResponse(secrets=[secret_to_proto(s) for s in page], next_page_token=token)

    async def DeleteSecret(self, request: pb.DeleteSecretRequest, context: Context) -> pb.DeleteSecretResponse:
        await self._monitors.secrets.delete(current_principal(), request.name)
        return pb.DeleteSecretResponse()

    async def GetDeploymentStatus(
        self, request: pb.GetDeploymentStatusRequest, context: Context
    ) -> pb.GetDeploymentStatusResponse:
        caller = current_principal()
        runners = self._hub.runners()
        placed = placement(runners, caller)
        if self._fleet is not None:
            placed = await self._fleet.describe(placed, caller)
        unassigned = self._hub.unassigned(None if caller.service else caller.user_id)
        locations = {r.location for r in runners if not r.dedicated_to}
        return deployment_status_to_proto(self._deployment, placed, unassigned, locations)
