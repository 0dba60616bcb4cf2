"""AlertService servicer: protobuf in, :class:`Alerting` call, protobuf out. Nothing else lives here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from monitors.v1 import alert_service_pb2 as pb
from monitors.v1 import alert_service_pb2_grpc
from service_runtime.auth import current_principal
from services.alert_svc.alerts import Alerting, verdict_would_fire
from services.alert_svc.translate import (
    alert_to_proto,
    evaluation_to_proto,
    event_to_proto,
    rule_draft_from_proto,
    rule_to_proto,
    silence_draft_from_proto,
    silence_to_proto,
    states_from_proto,
    transition_to_proto,
)

Context = Any  # grpc.aio.ServicerContext; the interceptors own status handling, servicers never touch it.


class AlertServiceServicer(alert_service_pb2_grpc.AlertServiceServicer):
    """AlertService: rules, alerts, silences and the live streams of the caller's."""

    def __init__(self, alerting: Alerting) -> None:
        self._alerting = alerting

    async def CreateAlertRule(self, request: pb.CreateAlertRuleRequest, context: Context) -> pb.CreateAlertRuleResponse:
        rule = await self._alerting.create_rule(current_principal(), rule_draft_from_proto(request.alert_rule))
        return pb.CreateAlertRuleResponse(alert_rule=rule_to_proto(rule))

    async def GetAlertRule(self, request: pb.GetAlertRuleRequest, context: Context) -> pb.GetAlertRuleResponse:
        rule = await self._alerting.get_rule(current_principal(), request.id)
        return pb.GetAlertRuleResponse(alert_rule=rule_to_proto(rule))

    async def ListAlertRules(self, request: pb.ListAlertRulesRequest, context: Context) -> pb.ListAlertRulesResponse:
        page, token = await self._alerting.list_rules(
            current_principal(), request.page_size, request.page_token, request.monitor_id
        )
        return pb.ListAlertRulesResponse(alert_rules=[rule_to_proto(r) for r in page], next_page_token=token)

    async def UpdateAlertRule(self, request: pb.UpdateAlertRuleRequest, context: Context) -> pb.UpdateAlertRuleResponse:
        rule = await self._alerting.update_rule(
            current_principal(),
            request.alert_rule.id,
            rule_draft_from_proto(request.alert_rule),
            list(request.update_mask.paths),
        )
        return pb.UpdateAlertRuleResponse(alert_rule=rule_to_proto(rule))

    async def DeleteAlertRule(self, request: pb.DeleteAlertRuleRequest, context: Context) -> pb.DeleteAlertRuleResponse:
        await self._alerting.delete_rule(current_principal(), request.id)
        return pb.DeleteAlertRuleResponse()

    async def TestAlertRule(self, request: pb.TestAlertRuleRequest, context: Context) -> pb.TestAlertRuleResponse:
        unsaved = request.alert_rule if request.WhichOneof("target") == "alert_rule" else None
        evaluations = await self._alerting.test_rule(
            current_principal(), request.rule_id, rule_draft_from_proto(unsaved) if unsaved is not None else None
        )
        deciding, would_fire = verdict_would_fire(evaluations)
        return pb.TestAlertRuleResponse(
            evaluation=evaluation_to_proto(deciding) if deciding is not None else None,
            would_fire=would_fire,
            evaluations=[evaluation_to_proto(e) for e in evaluations],
        )

    async def ListAlerts(self, request: pb.ListAlertsRequest, context: Context) -> pb.ListAlertsResponse:
        page, token = await self._alerting.list_alerts(
            current_principal(),
            request.page_size,
            request.page_token,
            states_from_proto(list(request.states)),
            request.rule_id,
            request.monitor_id,
        )
        return pb.ListAlertsResponse(alerts=[alert_to_proto(a) for a in page], next_page_token=token)

    async def GetAlert(self, request: pb.GetAlertRequest, context: Context) -> pb.GetAlertResponse:
        alert, events = await self._alerting.get_alert(current_principal(), request.id)
        return pb.GetAlertResponse(alert=alert_to_proto(alert), events=[event_to_proto(e) for e in events])

    async def AcknowledgeAlert(
        self, request: pb.AcknowledgeAlertRequest, context: Context
    ) -> pb.AcknowledgeAlertResponse:
        alert = await self._alerting.acknowledge(current_principal(), request.id, request.comment)
        return pb.AcknowledgeAlertResponse(alert=alert_to_proto(alert))

    async def ResolveAlert(self, request: pb.ResolveAlertRequest, context: Context) -> pb.ResolveAlertResponse:
        alert = await self._alerting.resolve(current_principal(), request.id, request.comment)
        return pb.ResolveAlertResponse(alert=alert_to_proto(alert))

    async def CreateSilence(self, request: pb.CreateSilenceRequest, context: Context) -> pb.CreateSilenceResponse:
        silence = await self._alerting.create_silence(current_principal(), silence_draft_from_proto(request.silence))
        return pb.CreateSilenceResponse(silence=silence_to_proto(silence, *self._alerting.silence_timing(silence)))

    async def ListSilences(self, request: pb.ListSilencesRequest, context: Context) -> pb.ListSilencesResponse:
        page, token = await self._alerting.list_silences(
            current_principal(), request.page_size, request.page_token, request.include_expired
        )
        silences = [silence_to_proto(s, *self._alerting.silence_timing(s)) for s in page]
        return pb.ListSilencesResponse(silences=silences, next_page_token=token)

    async def DeleteSilence(self, request: pb.DeleteSilenceRequest, context: Context) -> pb.DeleteSilenceResponse:
        await self._alerting.delete_silence(current_principal(), request.id)
        return pb.DeleteSilenceResponse()

    async def StreamEvaluations(
        self, request: pb.StreamEvaluationsRequest, context: Context
    ) -> AsyncIterator[pb.StreamEvaluationsResponse]:
        subscription = await self._alerting.watch_evaluations(
            current_principal(), list(request.rule_ids), list(request.monitor_ids)
        )
        try:
            async for evaluation, dropped in subscription:
                yield pb.StreamEvaluationsResponse(evaluation=evaluation_to_proto(evaluation), dropped=dropped)
        finally:
            self._alerting.unwatch_evaluations(subscription)

    async def WatchAlerts(
        self, request: pb.WatchAlertsRequest, context: Context
    ) -> AsyncIterator[pb.WatchAlertsResponse]:
        current, subscription = self._alerting.watch_alerts(current_principal(), request.include_open)
        try:
            for alert in current:
                yield pb.WatchAlertsResponse(transition=pb.ALERT_TRANSITION_CURRENT, alert=alert_to_proto(alert))
            async for change, dropped in subscription:
                yield pb.WatchAlertsResponse(
                    transition=transition_to_proto(change.transition),
                    alert=alert_to_proto(change.alert),
                    dropped=dropped,
                )
        finally:
            self._alerting.unwatch_alerts(subscription)
