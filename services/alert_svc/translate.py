"""Protobuf <-> domain for alerting: the servicer's vocabulary, nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

from monitors.v1 import alert_service_pb2 as pb
from monitors.v1 import common_pb2 as common
from service_runtime.errors import InvalidArgument
from service_runtime.timeseries import Aggregation
from service_runtime.timestamps import from_duration, from_timestamp, to_duration, to_timestamp
from services.alert_svc.domain import (
    DEFAULT_BASELINE,
    DEFAULT_MIN_SAMPLES,
    Alert,
    AlertEvent,
    AlertRule,
    AlertState,
    AnomalyCondition,
    ChangeCondition,
    Condition,
    Direction,
    Evaluation,
    MonitorDownCondition,
    NoDataCondition,
    Operator,
    RuleDraft,
    Severity,
    Silence,
    SilenceDraft,
    ThresholdCondition,
    Transition,
    Verdict,
)

T = TypeVar("T")

_SEVERITIES = {
    common.SEVERITY_INFO: Severity.INFO,
    common.SEVERITY_WARNING: Severity.WARNING,
    common.SEVERITY_CRITICAL: Severity.CRITICAL,
}
_SEVERITY_ENUM = {s: v for v, s in _SEVERITIES.items()}
_AGGREGATIONS = {
    common.AGGREGATION_MEAN: Aggregation.MEAN,
    common.AGGREGATION_MIN: Aggregation.MIN,
    common.AGGREGATION_MAX: Aggregation.MAX,
    common.AGGREGATION_FIRST: Aggregation.FIRST,
    common.AGGREGATION_LAST: Aggregation.LAST,
    common.AGGREGATION_COUNT: Aggregation.COUNT,
    common.AGGREGATION_SUM: Aggregation.SUM,
    common.AGGREGATION_P50: Aggregation.P50,
    common.AGGREGATION_P95: Aggregation.P95,
    common.AGGREGATION_P99: Aggregation.P99,
}
_AGGREGATION_ENUM = {a: v for v, a in _AGGREGATIONS.items()}
_OPERATORS = {
    common.COMPARISON_OPERATOR_GREATER_THAN: Operator.GT,
    common.COMPARISON_OPERATOR_GREATER_THAN_OR_EQUAL: Operator.GE,
    common.COMPARISON_OPERATOR_LESS_THAN: Operator.LT,
    common.COMPARISON_OPERATOR_LESS_THAN_OR_EQUAL: Operator.LE,
    common.COMPARISON_OPERATOR_EQUAL: Operator.EQ,
    common.COMPARISON_OPERATOR_NOT_EQUAL: Operator.NE,
}
_OPERATOR_ENUM = {o: v for v, o in _OPERATORS.items()}
_DIRECTIONS = {
    common.CHANGE_DIRECTION_UP: Direction.UP,
    common.CHANGE_DIRECTION_DOWN: Direction.DOWN,
    common.CHANGE_DIRECTION_EITHER: Direction.EITHER,
}
_DIRECTION_ENUM = {d: v for v, d in _DIRECTIONS.items()}
_STATES = {
    common.ALERT_STATE_PENDING: AlertState.PENDING,
    common.ALERT_STATE_FIRING: AlertState.FIRING,
    common.ALERT_STATE_ACKNOWLEDGED: AlertState.ACKNOWLEDGED,
    common.ALERT_STATE_RESOLVED: AlertState.RESOLVED,
}
_STATE_ENUM = {s: v for v, s in _STATES.items()}
_TRANSITION_ENUM = {
    Transition.CURRENT: pb.ALERT_TRANSITION_CURRENT,
    Transition.PENDING: pb.ALERT_TRANSITION_PENDING,
    Transition.FIRED: pb.ALERT_TRANSITION_FIRED,
    Transition.ACKNOWLEDGED: pb.ALERT_TRANSITION_ACKNOWLEDGED,
    Transition.RESOLVED: pb.ALERT_TRANSITION_RESOLVED,
    Transition.REPEATED: pb.ALERT_TRANSITION_REPEATED,
    Transition.ESCALATED: pb.ALERT_TRANSITION_ESCALATED,
}


def _enum(table: Mapping[Any, T], value: int, path: str, what: str) -> T | None:
    """The domain value of an enum; None for UNSPECIFIED; INVALID_ARGUMENT naming ``path`` for an unknown one."""
    if value in table:
        return table[value]
    if value == 0:
        return None
    raise InvalidArgument(path, f"must be one of {what}")


def _required(table: Mapping[Any, T], value: int, path: str, what: str) -> T:
    found = _enum(table, value, path, what)
    if found is None:
        raise InvalidArgument(path, f"is required: one of {what}")
    return found


def _duration(message: object, name: str, path: str) -> timedelta | None:
    return from_duration(getattr(message, name), message.HasField(name), f"{path}.{name}")  # type: ignore[attr-defined]


def condition_from_proto(message: common.AlertCondition, present: bool, path: str) -> Condition | None:
    """The domain condition, or None when none is set; INVALID_ARGUMENT naming an unknown enum value."""
    if not present:
        return None
    which = message.WhichOneof("kind")
    if which == "threshold":
        t = message.threshold
        aggregation = _enum(_AGGREGATIONS, t.aggregation, f"{path}.threshold.aggregation", "MEAN .. P99")
        operator = _required(_OPERATORS, t.operator, f"{path}.threshold.operator", "GREATER_THAN .. NOT_EQUAL")
        window = _duration(t, "window", f"{path}.threshold") or timedelta(0)
        if aggregation is None:
            if window:
                raise InvalidArgument(f"{path}.threshold.aggregation", "is required with a window")
            aggregation = Aggregation.LAST
        return ThresholdCondition(t.field, aggregation, window, operator, t.value)
    if which == "change":
        c = message.change
        direction = _enum(_DIRECTIONS, c.direction, f"{path}.change.direction", "UP, DOWN, EITHER")
        return ChangeCondition(
            c.field, _duration(c, "window", f"{path}.change") or timedelta(0), c.percent, direction or Direction.EITHER
        )
    if which == "monitor_down":
        return MonitorDownCondition()
    if which == "no_data":
        return NoDataCondition(_duration(message.no_data, "duration", f"{path}.no_data") or timedelta(0))
    if which == "anomaly":
        a = message.anomaly
        direction = _enum(_DIRECTIONS, a.direction, f"{path}.anomaly.direction", "UP, DOWN, EITHER")
        return AnomalyCondition(
            a.field,
            _duration(a, "window", f"{path}.anomaly") or timedelta(0),
            _duration(a, "baseline", f"{path}.anomaly") or DEFAULT_BASELINE,
            a.deviations,
            a.min_samples or DEFAULT_MIN_SAMPLES,
            direction or Direction.EITHER,
        )
    return None


def condition_to_proto(condition: Condition) -> common.AlertCondition:
    if isinstance(condition, ThresholdCondition):
        return common.AlertCondition(
            threshold=common.ThresholdCondition(
                field=condition.field,
                aggregation=_AGGREGATION_ENUM[condition.aggregation],
                window=to_duration(condition.window) if condition.window else None,
                operator=_OPERATOR_ENUM[condition.operator],
                value=condition.value,
            )
        )
    if isinstance(condition, ChangeCondition):
        return common.AlertCondition(
            change=common.ChangeCondition(
                field=condition.field,
                window=to_duration(condition.window),
                percent=condition.percent,
                direction=_DIRECTION_ENUM[condition.direction],
            )
        )
    if isinstance(condition, MonitorDownCondition):
        return common.AlertCondition(monitor_down=common.MonitorDownCondition())
    if isinstance(condition, NoDataCondition):
        return common.AlertCondition(no_data=common.NoDataCondition(duration=to_duration(condition.duration)))
    return common.AlertCondition(
        anomaly=common.AnomalyCondition(
            field=condition.field,
            window=to_duration(condition.window) if condition.window else None,
            baseline=to_duration(condition.baseline),
            deviations=condition.deviations,
            min_samples=condition.min_samples,
            direction=_DIRECTION_ENUM[condition.direction],
        )
    )


def rule_draft_from_proto(message: pb.AlertRule, path: str = "alert_rule") -> RuleDraft:
    severity = _enum(_SEVERITIES, message.severity, f"{path}.severity", "INFO, WARNING, CRITICAL")
    return RuleDraft(
        display_name=message.display_name,
        monitor_id=message.monitor_id.strip(),
        selector=dict(message.monitor_selector),
        condition=condition_from_proto(message.condition, message.HasField("condition"), f"{path}.condition"),
        severity=severity,
        for_duration=_duration(message, "for_duration", path),
        keep_firing_for=_duration(message, "keep_firing_for", path),
        repeat_interval=_duration(message, "repeat_interval", path),
        cooldown=_duration(message, "cooldown", path),
        escalate_after=_duration(message, "escalate_after", path),
        channel_ids=[c.strip() for c in message.channel_ids],
        escalation_channel_ids=[c.strip() for c in message.escalation_channel_ids],
        enabled=message.enabled if message.HasField("enabled") else None,
        description=message.description,
        labels=dict(message.labels),
    )


def rule_to_proto(rule: AlertRule) -> pb.AlertRule:
    return pb.AlertRule(
        id=rule.id,
        display_name=rule.display_name,
        monitor_id=rule.monitor_id,
        monitor_selector=dict(rule.selector),
        condition=condition_to_proto(rule.condition),
        severity=_SEVERITY_ENUM[rule.severity],
        for_duration=to_duration(rule.for_duration),
        keep_firing_for=to_duration(rule.keep_firing_for),
        repeat_interval=to_duration(rule.repeat_interval),
        cooldown=to_duration(rule.cooldown),
        escalate_after=to_duration(rule.escalate_after),
        channel_ids=list(rule.channel_ids),
        escalation_channel_ids=list(rule.escalation_channel_ids),
        enabled=rule.enabled,
        description=rule.description,
        labels=dict(rule.labels),
        is_default=rule.is_default,
        create_time=to_timestamp(rule.create_time),
        update_time=to_timestamp(rule.update_time),
    )


def alert_to_proto(alert: Alert) -> pb.Alert:
    return pb.Alert(
        id=alert.id,
        rule_id=alert.rule_id,
        monitor_id=alert.monitor_id,
        state=_STATE_ENUM[alert.state],
        severity=_SEVERITY_ENUM[alert.severity],
        value=alert.value,
        threshold=alert.threshold,
        summary=alert.summary,
        start_time=to_timestamp(alert.start_time),
        acknowledge_time=to_timestamp(alert.acknowledge_time),
        acknowledged_by=alert.acknowledged_by,
        resolve_time=to_timestamp(alert.resolve_time),
        resolved_by=alert.resolved_by,
        comment=alert.comment,
        rule_name=alert.rule_name,
        monitor_name=alert.monitor_name,
        fire_time=to_timestamp(alert.fire_time),
        explanation=alert.explanation,
        escalate_time=to_timestamp(alert.escalate_time),
        update_time=to_timestamp(alert.update_time),
    )


def event_to_proto(event: AlertEvent) -> pb.AlertEvent:
    return pb.AlertEvent(
        transition=_TRANSITION_ENUM[event.transition],
        event_time=to_timestamp(event.time),
        value=event.value,
        explanation=event.explanation,
        actor=event.actor,
    )


def transition_to_proto(transition: Transition) -> pb.AlertTransition.ValueType:
    return _TRANSITION_ENUM[transition]


def states_from_proto(values: list[int]) -> list[AlertState]:
    found = []
    for value in values:
        found.append(_required(_STATES, value, "states", "PENDING, FIRING, ACKNOWLEDGED, RESOLVED"))
    return found


def evaluation_to_proto(evaluation: Evaluation) -> pb.Evaluation:
    return pb.Evaluation(
        rule_id=evaluation.rule_id,
        monitor_id=evaluation.monitor_id,
        evaluation_time=to_timestamp(evaluation.time),
        has_value=evaluation.value is not None,
        value=evaluation.value or 0.0,
        condition_met=evaluation.verdict is Verdict.MET,
        state=_STATE_ENUM[evaluation.state] if evaluation.state is not None else common.ALERT_STATE_UNSPECIFIED,
        alert_id=evaluation.alert_id,
        explanation=evaluation.explanation,
        unknown=evaluation.verdict is Verdict.UNKNOWN,
    )


def silence_draft_from_proto(message: pb.Silence, path: str = "silence") -> SilenceDraft:
    return SilenceDraft(
        monitor_id=message.monitor_id.strip(),
        rule_id=message.rule_id.strip(),
        selector=dict(message.monitor_selector),
        start_time=from_timestamp(message.start_time, message.HasField("start_time"), f"{path}.start_time"),
        end_time=from_timestamp(message.end_time, message.HasField("end_time"), f"{path}.end_time"),
        comment=message.comment,
        cron_schedule=message.cron_schedule,
        duration=_duration(message, "duration", path),
        time_zone=message.time_zone.strip(),
    )


def silence_to_proto(silence: Silence, active: bool, next_start: datetime | None = None) -> pb.Silence:
    return pb.Silence(
        id=silence.id,
        monitor_id=silence.monitor_id,
        rule_id=silence.rule_id,
        start_time=to_timestamp(silence.start_time),
        end_time=to_timestamp(silence.end_time),
        comment=silence.comment,
        create_time=to_timestamp(silence.create_time),
        monitor_selector=dict(silence.selector),
        cron_schedule=silence.cron_schedule,
        duration=to_duration(silence.duration),
        time_zone=silence.time_zone or "UTC",
        active=active,
        next_start_time=to_timestamp(next_start),
    )
