"""Alert rules between the tools' flat arguments and AlertRule messages: building a condition from human
arguments, reading one back into them (to change part of it), and the compact view."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel

from mcp_adapter.errors import AdapterError
from mcp_adapter.units import parse_duration, parse_number
from mcp_adapter.views import condition_text, enum_name, enum_value, span, to_duration
from monitors.v1 import alert_service_pb2, common_pb2

ConditionKind = Literal["threshold", "change", "monitor_down", "no_data", "anomaly"]
Operator = Literal[">", ">=", "<", "<=", "==", "!=", "above", "below"]
AggregationName = Literal["last", "mean", "min", "max", "first", "count", "sum", "p50", "p95", "p99"]
Direction = Literal["up", "down", "either"]
SeverityName = Literal["info", "warning", "critical"]

OPERATORS = {
    ">": "GREATER_THAN",
    "above": "GREATER_THAN",
    ">=": "GREATER_THAN_OR_EQUAL",
    "<": "LESS_THAN",
    "below": "LESS_THAN",
    "<=": "LESS_THAN_OR_EQUAL",
    "==": "EQUAL",
    "!=": "NOT_EQUAL",
}
SYMBOLS = {value: key for key, value in reversed(OPERATORS.items()) if key not in ("above", "below")}
CONDITION_ARGUMENTS: tuple[str, ...] = ("field", "operator", "value", "aggregation", "window", "percent", "direction")
CONDITION_ARGUMENTS += ("no_data_for", "deviations", "baseline", "min_samples")
DEFAULT_FIELDS = {
    "website": "response_time_ms",
    "crypto_price": "price",
    "tcp": "connect_time_ms",
    "dns": "response_time_ms",
    "grpc_health": "response_time_ms",
    "heartbeat": "is_up",
}


def _duration(text: str | None, argument: str) -> Any:
    return to_duration(parse_duration(text, argument)) if text else None


def build_condition(kind: ConditionKind, args: dict[str, Any]) -> common_pb2.AlertCondition:
    """The AlertCondition of ``kind`` from the tools' flat arguments (``args`` keys: CONDITION_ARGUMENTS)."""
    condition = common_pb2.AlertCondition()
    field = args.get("field")
    if kind in ("threshold", "change", "anomaly") and not field:
        raise AdapterError(
            f"field: a {kind} rule needs the field to watch, such as price or response_time_ms; it is taken from "
            "the monitor's kind only when monitor_id is given (a rule over several monitors names it)"
        )
    if kind == "threshold":
        if args.get("operator") is None or args.get("value") is None:
            raise AdapterError("a threshold condition needs operator (such as >) and value (such as 70000 or 70k)")
        threshold = condition.threshold
        threshold.field = str(field)
        threshold.aggregation = enum_value(common_pb2.Aggregation, args.get("aggregation") or "last", "AGGREGATION_")
        if window := _duration(args.get("window"), "window"):
            threshold.window.CopyFrom(window)
        threshold.operator = enum_value(
            common_pb2.ComparisonOperator, OPERATORS[args["operator"]], "COMPARISON_OPERATOR_"
        )
        threshold.value = parse_number(args["value"], "value")
    elif kind == "change":
        if not args.get("percent") or not args.get("window"):
            raise AdapterError("a change condition needs percent (such as 5) and window (such as 1h)")
        change = condition.change
        change.field = str(field)
        change.window.CopyFrom(_duration(args["window"], "window"))
        change.percent = float(args["percent"])
        change.direction = enum_value(
            common_pb2.ChangeDirection, args.get("direction") or "either", "CHANGE_DIRECTION_"
        )
    elif kind == "monitor_down":
        condition.monitor_down.SetInParent()
    elif kind == "no_data":
        if not args.get("no_data_for"):
            raise AdapterError("a no_data condition needs no_data_for (such as 10m)")
        condition.no_data.duration.CopyFrom(_duration(args["no_data_for"], "no_data_for"))
    else:
        if not args.get("deviations"):
            raise AdapterError("an anomaly condition needs deviations (such as 3)")
        anomaly = condition.anomaly
        anomaly.field = str(field)
        anomaly.deviations = float(args["deviations"])
        if window := _duration(args.get("window"), "window"):
            anomaly.window.CopyFrom(window)
        if baseline := _duration(args.get("baseline"), "baseline"):
            anomaly.baseline.CopyFrom(baseline)
        anomaly.min_samples = int(args.get("min_samples") or 0)
        anomaly.direction = enum_value(
            common_pb2.ChangeDirection, args.get("direction") or "either", "CHANGE_DIRECTION_"
        )
    return condition


def condition_arguments(condition: common_pb2.AlertCondition) -> tuple[ConditionKind | None, dict[str, Any]]:
    """The flat arguments ``build_condition`` would take to make ``condition`` again."""
    kind = condition.WhichOneof("kind")
    if kind == "threshold":
        t = condition.threshold
        operator = SYMBOLS[enum_name(common_pb2.ComparisonOperator, t.operator, "COMPARISON_OPERATOR_").upper()]
        return "threshold", {
            "field": t.field,
            "aggregation": enum_name(common_pb2.Aggregation, t.aggregation, "AGGREGATION_"),
            "window": span(t.window),
            "operator": operator,
            "value": t.value,
        }
    if kind == "change":
        c = condition.change
        direction = enum_name(common_pb2.ChangeDirection, c.direction, "CHANGE_DIRECTION_")
        return "change", {"field": c.field, "window": span(c.window), "percent": c.percent, "direction": direction}
    if kind == "no_data":
        return "no_data", {"no_data_for": span(condition.no_data.duration)}
    if kind == "anomaly":
        a = condition.anomaly
        direction = enum_name(common_pb2.ChangeDirection, a.direction, "CHANGE_DIRECTION_")
        return "anomaly", {
            "field": a.field,
            "window": span(a.window),
            "baseline": span(a.baseline),
            "deviations": a.deviations,
            "min_samples": a.min_samples,
            "direction": None if direction == "unspecified" else direction,
        }
    if kind == "monitor_down":
        return "monitor_down", {}
    return None, {}


def selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether a monitor with ``labels`` is one a rule's selector picks (an empty selector picks every one)."""
    return all(labels.get(key) == value for key, value in selector.items())


def selector_text(selector: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(selector.items()))


def scope_text(rule: alert_service_pb2.AlertRule, monitor_name: str = "") -> str:
    """Which monitors a rule watches, as a person says it: "all monitors", "monitors labelled team=web",
    "monitor Shop (mon_1)"."""
    if rule.monitor_id:
        return f"monitor {monitor_name} ({rule.monitor_id})" if monitor_name else f"monitor {rule.monitor_id}"
    if rule.monitor_selector:
        return f"monitors labelled {selector_text(rule.monitor_selector)}"
    return "all monitors"


class RuleView(BaseModel):
    id: str
    name: str
    watches: str
    monitor_id: str | None = None
    monitor_selector: dict[str, str] | None = None
    condition: str
    severity: str
    for_duration: str | None = None
    channel_ids: list[str] | None = None
    repeat_interval: str | None = None
    keep_firing_for: str | None = None
    cooldown: str | None = None
    escalate_after: str | None = None
    escalation_channel_ids: list[str] | None = None
    enabled: bool = True
    is_default: bool | None = None
    description: str | None = None
    labels: dict[str, str] | None = None


def rule_view(rule: alert_service_pb2.AlertRule, monitor_name: str = "") -> RuleView:
    return RuleView(
        id=rule.id,
        name=rule.display_name,
        watches=scope_text(rule, monitor_name),
        monitor_id=rule.monitor_id or None,
        monitor_selector=dict(rule.monitor_selector) or None,
        condition=condition_text(rule.condition),
        severity=enum_name(common_pb2.Severity, rule.severity, "SEVERITY_"),
        for_duration=span(rule.for_duration),
        channel_ids=list(rule.channel_ids) or None,
        repeat_interval=span(rule.repeat_interval),
        keep_firing_for=span(rule.keep_firing_for),
        cooldown=span(rule.cooldown),
        escalate_after=span(rule.escalate_after),
        escalation_channel_ids=list(rule.escalation_channel_ids) or None,
        enabled=rule.enabled if rule.HasField("enabled") else True,
        is_default=rule.is_default or None,
        description=rule.description or None,
        labels=dict(rule.labels) or None,
    )
