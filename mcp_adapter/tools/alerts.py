"""Alert rule and alert tools: create, list, update, delete and test rules; list, get, acknowledge and resolve
alerts; silences and maintenance windows."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from google.protobuf import field_mask_pb2
from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from mcp_adapter.errors import AdapterError, Subject
from mcp_adapter.toolbox import AdapterState, ToolContext, more, reply, state_of, tool
from mcp_adapter.tools.monitors import all_alert_rules, all_monitors, get_monitor_message
from mcp_adapter.tools.rules import (
    CONDITION_ARGUMENTS,
    DEFAULT_FIELDS,
    AggregationName,
    ConditionKind,
    Direction,
    Operator,
    RuleView,
    SeverityName,
    build_condition,
    condition_arguments,
    rule_view,
    scope_text,
    selector_matches,
    selector_text,
)
from mcp_adapter.units import parse_duration, parse_time
from mcp_adapter.views import enum_name, enum_value, iso, monitor_kind, span, to_duration, to_timestamp
from monitors.v1 import alert_service_pb2, common_pb2

RuleId = Annotated[str, Field(min_length=1, max_length=100, description="An alert rule id from list_alert_rules.")]
AlertId = Annotated[str, Field(min_length=1, max_length=100, description="An alert id from list_alerts.")]
OptionalDuration = Annotated[str | None, Field(max_length=32, description='A duration such as "5m" or "1h".')]
Value = Annotated[float | str | None, Field(description='Threshold: 70000, "70,000" or "70k".')]
Selector = Annotated[
    dict[str, str] | None,
    Field(description='Instead of monitor_id: every monitor with all these labels, e.g. {"team": "web"}.'),
]
RuleMonitorId = Annotated[
    str | None,
    Field(
        description="The monitor to watch (from list_monitors). Without it (and without monitor_selector) the "
        "rule watches every monitor of the person's, monitors created later included."
    ),
]


async def named_monitor_and_rule(state: AdapterState, monitor_id: str, rule_id: str) -> str:
    """The name of the monitor ``monitor_id`` is, after checking that it and the rule ``rule_id`` (each when given)
    exist: a name given as an id answers not found, with the tool that lists them."""
    if rule_id:
        await state.clients.call(
            state.clients.alerts.GetAlertRule,
            alert_service_pb2.GetAlertRuleRequest(id=rule_id),
            token=state.token(),
            subject=rule_subject(rule_id),
        )
    return (await get_monitor_message(state, monitor_id)).display_name if monitor_id else ""


def rule_subject(rule_id: str) -> Subject:
    return Subject("alert rule", rule_id, "list_alert_rules")


def alert_subject(alert_id: str) -> Subject:
    return Subject("alert", alert_id, "list_alerts")


async def _condition(
    state: AdapterState, kind: ConditionKind, monitor_id: str | None, args: dict[str, Any]
) -> tuple[common_pb2.AlertCondition, str]:
    """The condition, and the watched monitor's name (empty without monitor_id)."""
    name = ""
    if monitor_id:
        monitor = await get_monitor_message(state, monitor_id)
        name = monitor.display_name
        if kind in ("threshold", "change", "anomaly") and not args.get("field"):
            # The field a monitor's kind is usually watched by: price for a coin, response time for a website.
            args["field"] = DEFAULT_FIELDS.get(monitor_kind(monitor.spec))
    return build_condition(kind, args), name


def _set_durations(rule: alert_service_pb2.AlertRule, durations: dict[str, str | None], paths: list[str]) -> None:
    for name, text in durations.items():
        if text is not None:
            getattr(rule, name).CopyFrom(to_duration(parse_duration(text, name)))
            paths.append(name)


@tool()
async def create_alert_rule(
    ctx: ToolContext,
    condition: Annotated[
        ConditionKind,
        Field(
            description="threshold (field compared with value: price above 70k), change (moves percent within "
            "window), monitor_down, no_data (nothing for no_data_for), anomaly (deviations from its baseline)."
        ),
    ],
    monitor_id: RuleMonitorId = None,
    monitor_selector: Selector = None,
    field: Annotated[
        str | None,
        Field(description="price, response_time_ms, status_code, is_up, ...; default: the monitor's main one."),
    ] = None,
    operator: Operator | None = None,
    value: Value = None,
    aggregation: Annotated[AggregationName, Field(description="How samples in window combine.")] = "last",
    window: OptionalDuration = None,
    percent: Annotated[float | None, Field(gt=0, description="Change: percent move, e.g. 5.")] = None,
    direction: Direction | None = None,
    no_data_for: OptionalDuration = None,
    deviations: Annotated[float | None, Field(gt=0, description="Anomaly: standard deviations, e.g. 3.")] = None,
    baseline: OptionalDuration = None,
    min_samples: Annotated[int | None, Field(ge=0)] = None,
    severity: SeverityName = "warning",
    name: Annotated[str | None, Field(max_length=200)] = None,
    for_duration: OptionalDuration = None,
    channel_ids: Annotated[list[str] | None, Field(description="Channels to notify; default channels if none.")] = None,
    repeat_interval: OptionalDuration = None,
    keep_firing_for: OptionalDuration = None,
    cooldown: OptionalDuration = None,
    escalate_after: OptionalDuration = None,
    escalation_channel_ids: list[str] | None = None,
    description: Annotated[str | None, Field(max_length=2000)] = None,
) -> Annotated[CallToolResult, RuleView]:
    """Create an alert rule: "alert me if Bitcoin goes above 70,000" is condition=threshold, monitor_id of the
    BTC-USD monitor, operator=">", value="70k" (field defaults to the monitor's main value: price, response
    time). "Tell me when my site is down" is condition=monitor_down. Without monitor_id the rule watches every
    monitor of the person's (or those with the labels in monitor_selector); every account already has a default
    rule "A monitor is down" over all monitors. Notifications go to channel_ids, or the person's default
    channels (create_channel). Check a rule without saving it with test_alert_rule."""
    state = state_of(ctx)
    args = {
        "field": field,
        "operator": operator,
        "value": value,
        "aggregation": aggregation,
        "window": window,
        "percent": percent,
        "direction": direction,
        "no_data_for": no_data_for,
        "deviations": deviations,
        "baseline": baseline,
        "min_samples": min_samples,
    }
    built, monitor_name = await _condition(state, condition, monitor_id, args)
    rule = alert_service_pb2.AlertRule(
        display_name=name or "",
        monitor_id=monitor_id or "",
        monitor_selector=monitor_selector or {},
        condition=built,
        severity=enum_value(common_pb2.Severity, severity, "SEVERITY_"),
        channel_ids=channel_ids or [],
        escalation_channel_ids=escalation_channel_ids or [],
        description=description or "",
    )
    durations = {
        "for_duration": for_duration,
        "repeat_interval": repeat_interval,
        "keep_firing_for": keep_firing_for,
        "cooldown": cooldown,
        "escalate_after": escalate_after,
    }
    _set_durations(rule, durations, [])
    response = await state.clients.call(
        state.clients.alerts.CreateAlertRule,
        alert_service_pb2.CreateAlertRuleRequest(alert_rule=rule),
        token=state.token(),
        subject=Subject("monitor", monitor_id, "list_monitors") if monitor_id else None,
    )
    view = rule_view(response.alert_rule, monitor_name)
    return reply(
        f'Created alert rule {view.id} "{view.name}" on {view.watches}: {view.condition} ({view.severity}).', view
    )


class ListedRule(RuleView):
    applies: str | None = None


class RuleList(BaseModel):
    alert_rules: list[ListedRule]
    next_page_token: str | None = None


@tool(read_only=True)
async def list_alert_rules(
    ctx: ToolContext,
    monitor_id: Annotated[
        str | None,
        Field(description="Only the rules that watch this monitor: its own, and those over all or labelled monitors."),
    ] = None,
    page_size: Annotated[int, Field(ge=1, le=1000)] = 100,
    page_token: str = "",
) -> Annotated[CallToolResult, RuleList]:
    """List the person's alert rules: id, what each watches (a monitor, monitors with some labels, or all
    monitors), condition, severity, channels. With monitor_id, every rule that applies to that monitor, each
    saying how (its own rule, over all monitors, or by label)."""
    state = state_of(ctx)
    names = {m.id: m.display_name for m in await all_monitors(state)}
    if monitor_id:
        monitor = await get_monitor_message(state, monitor_id)
        labels = dict(monitor.labels)
        views: list[ListedRule] = []
        for rule in await all_alert_rules(state):
            if rule.monitor_id == monitor_id:
                applies = "this monitor's own rule"
            elif not rule.monitor_id and not rule.monitor_selector:
                applies = "default rule, over all monitors" if rule.is_default else "over all monitors"
            elif not rule.monitor_id and selector_matches(rule.monitor_selector, labels):
                applies = f"by its labels ({selector_text(rule.monitor_selector)})"
            else:
                continue
            views.append(ListedRule(**rule_view(rule, names.get(rule.monitor_id, "")).model_dump(), applies=applies))
        text = "; ".join(f"{v.id} {v.condition} ({v.applies})" for v in views[:10]) + more(10, len(views))
        return reply(
            f"{len(views)} alert rule(s) apply to {monitor.display_name} ({monitor_id})"
            + (f": {text}." if views else "."),
            RuleList(alert_rules=views),
        )
    response = await state.clients.call(
        state.clients.alerts.ListAlertRules,
        alert_service_pb2.ListAlertRulesRequest(page_size=page_size, page_token=page_token),
        token=state.token(),
    )
    views = [ListedRule(**rule_view(r, names.get(r.monitor_id, "")).model_dump()) for r in response.alert_rules]
    text = "; ".join(f"{v.id} {v.condition} on {v.watches}" for v in views[:10]) + more(10, len(views))
    if response.next_page_token:
        text += " (more on the next page: page_token)"
    return reply(
        f"{len(views)} alert rule(s)" + (f": {text}." if views else "."),
        RuleList(alert_rules=views, next_page_token=response.next_page_token or None),
    )


@tool(idempotent=True)
async def update_alert_rule(
    rule_id: RuleId,
    ctx: ToolContext,
    condition: ConditionKind | None = None,
    field: str | None = None,
    operator: Operator | None = None,
    value: Value = None,
    aggregation: AggregationName | None = None,
    window: OptionalDuration = None,
    percent: Annotated[float | None, Field(gt=0)] = None,
    direction: Direction | None = None,
    no_data_for: OptionalDuration = None,
    deviations: Annotated[float | None, Field(gt=0)] = None,
    baseline: OptionalDuration = None,
    min_samples: Annotated[int | None, Field(ge=0)] = None,
    severity: SeverityName | None = None,
    name: Annotated[str | None, Field(max_length=200)] = None,
    enabled: bool | None = None,
    for_duration: OptionalDuration = None,
    channel_ids: list[str] | None = None,
    repeat_interval: OptionalDuration = None,
    keep_firing_for: OptionalDuration = None,
    cooldown: OptionalDuration = None,
    escalate_after: OptionalDuration = None,
    escalation_channel_ids: list[str] | None = None,
    monitor_selector: Selector = None,
    description: Annotated[str | None, Field(max_length=2000)] = None,
) -> Annotated[CallToolResult, RuleView]:
    """Change an alert rule; only the arguments given change. To move a threshold give just value ("72k"); the
    rest of the condition is kept. enabled=false stops evaluating it without deleting it."""
    state = state_of(ctx)
    rule = alert_service_pb2.AlertRule(id=rule_id)
    paths: list[str] = []
    given = {
        "field": field,
        "operator": operator,
        "value": value,
        "aggregation": aggregation,
        "window": window,
        "percent": percent,
        "direction": direction,
        "no_data_for": no_data_for,
        "deviations": deviations,
        "baseline": baseline,
        "min_samples": min_samples,
    }
    if condition is not None or any(v is not None for v in given.values()):
        current = await state.clients.call(
            state.clients.alerts.GetAlertRule,
            alert_service_pb2.GetAlertRuleRequest(id=rule_id),
            token=state.token(),
            subject=rule_subject(rule_id),
        )
        current_kind, args = condition_arguments(current.alert_rule.condition)
        kind = condition or current_kind
        if kind is None:
            raise AdapterError("condition: this rule's condition is of a kind the adapter does not know; give it")
        if kind != current_kind:
            args = {}
        args.update({k: v for k, v in given.items() if v is not None})
        rule.condition.CopyFrom(build_condition(kind, {k: args.get(k) for k in CONDITION_ARGUMENTS}))
        paths.append("condition")
    if severity is not None:
        rule.severity = enum_value(common_pb2.Severity, severity, "SEVERITY_")
        paths.append("severity")
    if name is not None:
        rule.display_name = name
        paths.append("display_name")
    if enabled is not None:
        rule.enabled = enabled
        paths.append("enabled")
    if channel_ids is not None:
        rule.channel_ids.extend(channel_ids)
        paths.append("channel_ids")
    if escalation_channel_ids is not None:
        rule.escalation_channel_ids.extend(escalation_channel_ids)
        paths.append("escalation_channel_ids")
    if monitor_selector is not None:
        rule.monitor_selector.update(monitor_selector)
        paths.append("monitor_selector")
    if description is not None:
        rule.description = description
        paths.append("description")
    durations = {
        "for_duration": for_duration,
        "repeat_interval": repeat_interval,
        "keep_firing_for": keep_firing_for,
        "cooldown": cooldown,
        "escalate_after": escalate_after,
    }
    _set_durations(rule, durations, paths)
    if not paths:
        raise AdapterError("nothing to change: give at least one setting to update")
    response = await state.clients.call(
        state.clients.alerts.UpdateAlertRule,
        alert_service_pb2.UpdateAlertRuleRequest(alert_rule=rule, update_mask=field_mask_pb2.FieldMask(paths=paths)),
        token=state.token(),
        subject=rule_subject(rule_id),
    )
    view = rule_view(response.alert_rule)
    return reply(f"Updated alert rule {view.id}: {view.condition} ({view.severity}).", view)


class Deleted(BaseModel):
    deleted: str


@tool(destructive=True, idempotent=True)
async def delete_alert_rule(rule_id: RuleId, ctx: ToolContext) -> Annotated[CallToolResult, Deleted]:
    """Delete an alert rule; its open alert is resolved. Confirm with the person first (update_alert_rule with
    enabled=false only pauses it)."""
    state = state_of(ctx)
    await state.clients.call(
        state.clients.alerts.DeleteAlertRule,
        alert_service_pb2.DeleteAlertRuleRequest(id=rule_id),
        token=state.token(),
        subject=rule_subject(rule_id),
    )
    return reply(f"Deleted alert rule {rule_id}.", Deleted(deleted=rule_id))


class EvaluationView(BaseModel):
    monitor_id: str
    monitor_name: str | None = None
    has_value: bool
    value: float | None = None
    condition_met: bool
    unknown: bool | None = None
    explanation: str
    alert_id: str | None = None


class RuleTest(BaseModel):
    would_fire: bool
    watches: str
    evaluations: list[EvaluationView]


# Named apart from its tool: a function called test_* reads as a pytest test to linters.
@tool(read_only=True, name="test_alert_rule")
async def try_alert_rule(
    ctx: ToolContext,
    rule_id: Annotated[str | None, Field(description="A saved rule; or describe an unsaved one instead.")] = None,
    monitor_id: RuleMonitorId = None,
    monitor_selector: Selector = None,
    condition: ConditionKind | None = None,
    field: str | None = None,
    operator: Operator | None = None,
    value: Value = None,
    aggregation: AggregationName = "last",
    window: OptionalDuration = None,
    percent: Annotated[float | None, Field(gt=0)] = None,
    direction: Direction | None = None,
    no_data_for: OptionalDuration = None,
    deviations: Annotated[float | None, Field(gt=0)] = None,
    baseline: OptionalDuration = None,
) -> Annotated[CallToolResult, RuleTest]:
    """Evaluate a rule once against current data and say whether it would fire now, with the value and why, per
    monitor it watches (without monitor_id: every monitor of the person's, or those matching monitor_selector).
    Changes nothing and notifies nobody. Give rule_id, or the same arguments create_alert_rule takes."""
    state = state_of(ctx)
    if rule_id:
        saved = await state.clients.call(
            state.clients.alerts.GetAlertRule,
            alert_service_pb2.GetAlertRuleRequest(id=rule_id),
            token=state.token(),
            subject=rule_subject(rule_id),
        )
        tested = saved.alert_rule
        request = alert_service_pb2.TestAlertRuleRequest(rule_id=rule_id)
    elif condition:
        args = {
            "field": field,
            "operator": operator,
            "value": value,
            "aggregation": aggregation,
            "window": window,
            "percent": percent,
            "direction": direction,
            "no_data_for": no_data_for,
            "deviations": deviations,
            "baseline": baseline,
        }
        built, _ = await _condition(state, condition, monitor_id, args)
        tested = alert_service_pb2.AlertRule(
            monitor_id=monitor_id or "", monitor_selector=monitor_selector or {}, condition=built
        )
        request = alert_service_pb2.TestAlertRuleRequest(alert_rule=tested)
    else:
        raise AdapterError(
            "give rule_id, or an unsaved rule: condition and its arguments (with monitor_id or monitor_selector "
            "unless it is to watch all monitors)"
        )
    response, monitors = await asyncio.gather(
        state.clients.call(
            state.clients.alerts.TestAlertRule, request, token=state.token(), subject=rule_subject(rule_id or "")
        ),
        all_monitors(state),
    )
    names = {m.id: m.display_name for m in monitors}
    evaluations = [e for e in (list(response.evaluations) or [response.evaluation]) if e.monitor_id]
    views = [
        EvaluationView(
            monitor_id=e.monitor_id,
            monitor_name=names.get(e.monitor_id),
            has_value=e.has_value,
            value=e.value if e.has_value else None,
            condition_met=e.condition_met,
            unknown=e.unknown or None,
            explanation=e.explanation,
            alert_id=e.alert_id or None,
        )
        for e in evaluations
    ]
    watches = scope_text(tested, names.get(tested.monitor_id, ""))
    result = RuleTest(would_fire=response.would_fire, watches=watches, evaluations=views)
    if not views:
        return reply(f"Nothing to evaluate: the rule watches {watches}, and no monitor of yours is one.", result)
    deciding = next((v for v in views if v.condition_met), views[0])
    verdict = "Would fire now" if response.would_fire else "Would not fire now"
    counted = f", {len(views)} monitors evaluated" if len(views) > 1 else ""
    why = f"{deciding.monitor_name or deciding.monitor_id}: {deciding.explanation or 'no explanation'}"
    return reply(f"{verdict} (watches {watches}{counted}); {why}.", result)


class AlertView(BaseModel):
    id: str
    state: str
    severity: str
    summary: str
    rule_id: str
    rule_name: str | None = None
    monitor_id: str
    monitor_name: str | None = None
    value: float
    threshold: float
    explanation: str | None = None
    started: str | None = None
    fired: str | None = None
    acknowledged: str | None = None
    acknowledged_by: str | None = None
    resolved: str | None = None
    resolved_by: str | None = None
    escalated: str | None = None
    comment: str | None = None


def alert_view(alert: alert_service_pb2.Alert) -> AlertView:
    return AlertView(
        id=alert.id,
        state=enum_name(common_pb2.AlertState, alert.state, "ALERT_STATE_"),
        severity=enum_name(common_pb2.Severity, alert.severity, "SEVERITY_"),
        summary=alert.summary,
        rule_id=alert.rule_id,
        rule_name=alert.rule_name or None,
        monitor_id=alert.monitor_id,
        monitor_name=alert.monitor_name or None,
        value=alert.value,
        threshold=alert.threshold,
        explanation=alert.explanation or None,
        started=iso(alert.start_time),
        fired=iso(alert.fire_time),
        acknowledged=iso(alert.acknowledge_time),
        acknowledged_by=alert.acknowledged_by or None,
        resolved=iso(alert.resolve_time),
        resolved_by=alert.resolved_by or None,
        escalated=iso(alert.escalate_time),
        comment=alert.comment or None,
    )


class AlertList(BaseModel):
    alerts: list[AlertView]
    next_page_token: str | None = None


AlertFilter = Literal["open", "pending", "firing", "acknowledged", "resolved", "all"]
OPEN_STATES = (common_pb2.ALERT_STATE_PENDING, common_pb2.ALERT_STATE_FIRING, common_pb2.ALERT_STATE_ACKNOWLEDGED)


async def list_alert_messages(
    state: AdapterState,
    status: AlertFilter,
    monitor_id: str = "",
    rule_id: str = "",
    limit: int = 20,
    page_token: str = "",
) -> alert_service_pb2.ListAlertsResponse:
    if status == "open":
        states: list[Any] = list(OPEN_STATES)
    elif status == "all":
        states = []
    else:
        states = [enum_value(common_pb2.AlertState, status, "ALERT_STATE_")]
    return await state.clients.call(
        state.clients.alerts.ListAlerts,
        alert_service_pb2.ListAlertsRequest(
            page_size=limit, page_token=page_token, states=states, monitor_id=monitor_id, rule_id=rule_id
        ),
        token=state.token(),
    )


@tool(read_only=True)
async def list_alerts(
    ctx: ToolContext,
    status: Annotated[AlertFilter, Field(description="open = pending, firing or acknowledged.")] = "open",
    monitor_id: Annotated[
        str, Field(max_length=100, description="Only this monitor's alerts: its id (mon_...) from list_monitors.")
    ] = "",
    rule_id: Annotated[
        str, Field(max_length=100, description="Only this alert rule's alerts: its id from list_alert_rules.")
    ] = "",
    limit: Annotated[int, Field(ge=1, le=1000)] = 20,
    page_token: str = "",
) -> Annotated[CallToolResult, AlertList]:
    """List the person's alerts, newest first: by default the open ones. Use status="all" for recent history
    ("show recent alerts"); monitor_id or rule_id (ids, not names) narrow it to one monitor or rule. Each alert
    has an id for acknowledge_alert, resolve_alert and get_alert."""
    state = state_of(ctx)
    # ListAlerts filters by what it is given: an id that names nothing would read as "0 alerts".
    monitor_name = await named_monitor_and_rule(state, monitor_id, rule_id)
    response = await list_alert_messages(state, status, monitor_id, rule_id, limit, page_token)
    views = [alert_view(a) for a in response.alerts]
    text = "; ".join(f"{v.id} {v.state}: {v.summary}" for v in views[:5]) + more(5, len(views))
    if response.next_page_token:
        text += " (more on the next page: page_token)"
    of = f" of {monitor_name} ({monitor_id})" if monitor_id else ""
    of += f" of rule {rule_id}" if rule_id else ""
    return reply(
        f"{len(views)} {'' if status == 'all' else status + ' '}alert(s){of}" + (f": {text}." if views else "."),
        AlertList(alerts=views, next_page_token=response.next_page_token or None),
    )


class AlertEventView(BaseModel):
    transition: str
    time: str | None = None
    value: float
    explanation: str | None = None
    actor: str | None = None


class AlertDetail(BaseModel):
    alert: AlertView
    events: list[AlertEventView] = []


@tool(read_only=True)
async def get_alert(alert_id: AlertId, ctx: ToolContext) -> Annotated[CallToolResult, AlertDetail]:
    """Get one alert with its history (fired, acknowledged, resolved: when, by whom, with which value)."""
    state = state_of(ctx)
    response = await state.clients.call(
        state.clients.alerts.GetAlert,
        alert_service_pb2.GetAlertRequest(id=alert_id),
        token=state.token(),
        subject=alert_subject(alert_id),
    )
    events = [
        AlertEventView(
            transition=enum_name(alert_service_pb2.AlertTransition, e.transition, "ALERT_TRANSITION_"),
            time=iso(e.event_time),
            value=e.value,
            explanation=e.explanation or None,
            actor=e.actor or None,
        )
        for e in response.events
    ]
    view = alert_view(response.alert)
    return reply(f"{view.id} is {view.state}: {view.summary}.", AlertDetail(alert=view, events=events))


@tool(idempotent=True)
async def acknowledge_alert(
    alert_id: AlertId, ctx: ToolContext, comment: Annotated[str, Field(max_length=2000)] = ""
) -> Annotated[CallToolResult, AlertView]:
    """Acknowledge a firing alert ("I'm on it"): its notifications stop repeating until it resolves. A resolved
    alert cannot be acknowledged, nor a pending one (it fires or clears by itself; create_silence mutes it)."""
    state = state_of(ctx)
    try:
        response = await state.clients.call(
            state.clients.alerts.AcknowledgeAlert,
            alert_service_pb2.AcknowledgeAlertRequest(id=alert_id, comment=comment),
            token=state.token(),
            subject=alert_subject(alert_id),
        )
    except AdapterError as error:
        if "pending" not in str(error):
            raise
        alert = (
            await state.clients.call(
                state.clients.alerts.GetAlert, alert_service_pb2.GetAlertRequest(id=alert_id), token=state.token()
            )
        ).alert
        raise AdapterError(
            f"alert {alert_id} is pending, not firing: its condition holds but not yet for the rule's for_duration, "
            "and nobody has been notified. There is nothing to acknowledge yet: it fires, or clears, by itself. To "
            f"keep it quiet if it fires, call create_silence with rule_id={alert.rule_id} (or "
            f"monitor_id={alert.monitor_id}) and a duration"
        ) from None
    view = alert_view(response.alert)
    return reply(f"Acknowledged {view.id}: {view.summary}.", view)


@tool(idempotent=True)
async def resolve_alert(
    alert_id: AlertId, ctx: ToolContext, comment: Annotated[str, Field(max_length=2000)] = ""
) -> Annotated[CallToolResult, AlertView]:
    """Resolve an alert by hand (it resolves by itself when its condition clears)."""
    state = state_of(ctx)
    response = await state.clients.call(
        state.clients.alerts.ResolveAlert,
        alert_service_pb2.ResolveAlertRequest(id=alert_id, comment=comment),
        token=state.token(),
        subject=alert_subject(alert_id),
    )
    view = alert_view(response.alert)
    return reply(f"Resolved {view.id}.", view)


class SilenceView(BaseModel):
    id: str
    monitor_id: str | None = None
    monitor_name: str | None = None
    rule_id: str | None = None
    monitor_selector: dict[str, str] | None = None
    start: str | None = None
    end: str | None = None
    cron_schedule: str | None = None
    duration: str | None = None
    time_zone: str | None = None
    active: bool | None = None
    next_window: str | None = None
    comment: str | None = None


def silence_view(silence: alert_service_pb2.Silence, monitor_name: str = "") -> SilenceView:
    return SilenceView(
        id=silence.id,
        monitor_id=silence.monitor_id or None,
        monitor_name=monitor_name or None,
        rule_id=silence.rule_id or None,
        monitor_selector=dict(silence.monitor_selector) or None,
        start=iso(silence.start_time),
        end=iso(silence.end_time),
        cron_schedule=silence.cron_schedule or None,
        duration=span(silence.duration),
        time_zone=(silence.time_zone or "UTC") if silence.cron_schedule else None,
        active=silence.active,
        next_window=iso(silence.next_start_time, silence, "next_start_time"),
        comment=silence.comment or None,
    )


def silence_scope(view: SilenceView) -> str:
    """What a silence mutes, as a person says it: "Shop (mon_1)", "monitors labelled team=web, rule r_1"."""
    if view.monitor_id:
        scope = f"{view.monitor_name} ({view.monitor_id})" if view.monitor_name else f"monitor {view.monitor_id}"
    elif view.monitor_selector:
        scope = f"monitors labelled {selector_text(view.monitor_selector)}"
    else:
        scope = "" if view.rule_id else "all monitors"
    rule = f"rule {view.rule_id}" if view.rule_id else ""
    return ", ".join(part for part in (scope, rule) if part)


CLOCK_TIME = re.compile(r"^\d{1,2}(:\d{2}){1,2}\s*([ap]m)?$", re.IGNORECASE)


def silence_start(starts: str) -> datetime:
    """When a one-off silence starts: now, or an ISO 8601 time (UTC without an offset). A bare clock time is
    refused: which day and which zone it means is the person's to say."""
    if CLOCK_TIME.match(starts.strip()):
        example = datetime.now(UTC).date().isoformat()
        raise AdapterError(
            f"starts: {starts!r} is a clock time without a date or time zone; give an ISO 8601 time with its "
            f"offset, such as {example}T22:00:00+01:00 (or {example}T21:00:00Z in UTC)"
        )
    return parse_time(starts, "starts")


@tool()
async def create_silence(
    ctx: ToolContext,
    duration: Annotated[str, Field(max_length=32, description='How long: "1h", "30m", "2d".')] = "1h",
    monitor_id: Annotated[str, Field(description="The monitor to silence (its id, from list_monitors).")] = "",
    rule_id: Annotated[
        str, Field(description="The alert rule to silence (its id, from list_alert_rules); with monitor_id: both.")
    ] = "",
    monitor_selector: Annotated[
        dict[str, str] | None,
        Field(description='Instead of monitor_id: every monitor with all these labels, e.g. {"team": "web"}.'),
    ] = None,
    all: Annotated[
        bool,
        Field(
            description="Silence every monitor and rule of the person's. Only when they ask for everything: "
            "otherwise give monitor_id, rule_id or monitor_selector."
        ),
    ] = False,
    starts: Annotated[
        str,
        Field(
            description='"now", or an ISO 8601 time with its offset for planned maintenance, such as '
            '"2026-05-01T22:00:00+02:00" (no offset: UTC).'
        ),
    ] = "now",
    cron_schedule: Annotated[
        str | None, Field(description='Recurring maintenance window, five-field cron: "0 2 * * SUN".')
    ] = None,
    time_zone: Annotated[
        str | None, Field(description="IANA time zone cron_schedule is read in, e.g. Europe/Paris; default UTC.")
    ] = None,
    comment: Annotated[str, Field(max_length=2000)] = "",
) -> Annotated[CallToolResult, SilenceView]:
    """Mute notifications for a while (alerts still fire and are listed): for one monitor (monitor_id), one rule
    (rule_id), monitors with some labels (monitor_selector), or everything (all=true); one of them must be given.
    With cron_schedule it is a recurring maintenance window, each occurrence lasting duration, the schedule read
    in time_zone (UTC unless given: ask the person's zone). Undo with delete_silence."""
    state = state_of(ctx)
    if not (monitor_id or rule_id or monitor_selector or all):
        raise AdapterError(
            "say what to silence: monitor_id (one monitor, from list_monitors), rule_id (one rule, from "
            "list_alert_rules), monitor_selector (monitors with these labels), or all=true for every monitor"
        )
    if all and (monitor_id or rule_id or monitor_selector):
        raise AdapterError("all: all=true silences every monitor; give it alone, or drop it to silence only some")
    length = parse_duration(duration, "duration")
    monitor_name = await named_monitor_and_rule(state, monitor_id, rule_id)
    silence = alert_service_pb2.Silence(
        monitor_id=monitor_id, rule_id=rule_id, monitor_selector=monitor_selector or {}, comment=comment
    )
    if cron_schedule:
        silence.cron_schedule = cron_schedule
        silence.duration.CopyFrom(to_duration(length))
        silence.time_zone = time_zone or ""
        if starts != "now":
            silence.start_time.CopyFrom(to_timestamp(silence_start(starts)))
    else:
        start = silence_start(starts) if starts != "now" else datetime.now(UTC)
        if starts != "now":
            silence.start_time.CopyFrom(to_timestamp(start))
        silence.end_time.CopyFrom(to_timestamp(start + length))
    response = await state.clients.call(
        state.clients.alerts.CreateSilence,
        alert_service_pb2.CreateSilenceRequest(silence=silence),
        token=state.token(),
    )
    view = silence_view(response.silence, monitor_name)
    scope = silence_scope(view)
    if view.cron_schedule:
        when = (
            f'on schedule "{view.cron_schedule}" in {view.time_zone}, each window lasting {view.duration}'
            + (f", until {view.end}" if view.end else "")
            + ("; a window is on now" if view.active else "; not in a window now")
            + (f"; next window from {view.next_window}" if view.next_window else "")
        )
    else:
        when = (f"from {view.start} " if starts != "now" and view.start else "") + f"until {view.end}"
    return reply(f"Silenced {scope} {when} ({view.id}).", view)


class SilenceList(BaseModel):
    silences: list[SilenceView]
    next_page_token: str | None = None


@tool(read_only=True)
async def list_silences(
    ctx: ToolContext,
    include_expired: bool = False,
    page_size: Annotated[int, Field(ge=1, le=1000)] = 100,
    page_token: str = "",
) -> Annotated[CallToolResult, SilenceList]:
    """List the person's silences and maintenance windows (current and future; include_expired for past ones)."""
    state = state_of(ctx)
    response = await state.clients.call(
        state.clients.alerts.ListSilences,
        alert_service_pb2.ListSilencesRequest(
            page_size=page_size, page_token=page_token, include_expired=include_expired
        ),
        token=state.token(),
    )
    names = {m.id: m.display_name for m in await all_monitors(state)} if response.silences else {}
    views = [silence_view(s, names.get(s.monitor_id, "")) for s in response.silences]
    described = [
        silence_scope(v)
        + (f' on schedule "{v.cron_schedule}" in {v.time_zone}' if v.cron_schedule else f" until {v.end}")
        + f" ({v.id}{', active' if v.active else ''})"
        for v in views[:5]
    ]
    text = "; ".join(described) + more(5, len(views))
    return reply(
        f"{len(views)} silence(s)" + (f": {text}." if views else "."),
        SilenceList(silences=views, next_page_token=response.next_page_token or None),
    )


@tool(destructive=True, idempotent=True)
async def delete_silence(
    silence_id: Annotated[str, Field(min_length=1, description="A silence id from list_silences.")], ctx: ToolContext
) -> Annotated[CallToolResult, Deleted]:
    """End and delete a silence or maintenance window: notifications resume at once."""
    state = state_of(ctx)
    await state.clients.call(
        state.clients.alerts.DeleteSilence,
        alert_service_pb2.DeleteSilenceRequest(id=silence_id),
        token=state.token(),
        subject=Subject("silence", silence_id, "list_silences"),
    )
    return reply(f"Deleted silence {silence_id}.", Deleted(deleted=silence_id))
