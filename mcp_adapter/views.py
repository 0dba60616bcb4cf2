"""Compact views of the services' messages, as the tools return them: plain names for enums, durations as
"60s", times in ISO 8601 UTC, no empty fields. Never a protobuf dump."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message
from pydantic import BaseModel

from mcp_adapter.units import format_duration
from monitors.v1 import common_pb2, monitor_service_pb2


def iso(stamp: timestamp_pb2.Timestamp, message: Message | None = None, field: str = "") -> str | None:
    """An ISO 8601 UTC time, or None when the field is unset."""
    if message is not None and field and not message.HasField(field):
        return None
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    return stamp.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def span(duration: duration_pb2.Duration) -> str | None:
    seconds = duration.seconds + duration.nanos / 1e9
    return format_duration(seconds) if seconds else None


def to_timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def to_duration(delta: timedelta) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(delta)
    return duration


def enum_name(enum: Any, value: int, prefix: str) -> str:
    """``MONITOR_STATE_UP`` -> ``up``."""
    try:
        return str(enum.Name(value)).removeprefix(prefix).lower()
    except ValueError:
        return str(value)


def enum_value(enum: Any, name: str, prefix: str) -> Any:
    """``up`` -> ``MONITOR_STATE_UP``'s number (typed Any: each enum has its own ValueType)."""
    return enum.Value(prefix + name.upper())


class MonitorView(BaseModel):
    id: str
    name: str
    kind: str
    target: str
    interval: str | None = None
    timeout: str | None = None
    retries: int | None = None
    locations: list[str] | None = None
    quorum: int | None = None
    paused: bool = False
    labels: dict[str, str] | None = None
    heartbeat_url: str | None = None
    # Heartbeat: when pings are due ("cron 0 3 * * * Europe/Paris, grace 30m") and how a job sends them.
    schedule: str | None = None
    ping: list[str] | None = None
    created: str | None = None
    # Website settings, when set.
    keyword: str | None = None
    keyword_absent: bool | None = None
    expected_status: str | None = None
    header_names: list[str] | None = None
    cert_expiry_days: int | None = None


def status_text(ranges: Any) -> str | None:
    """StatusCodeRanges as "200-299,301"."""
    parts = [str(r.min) if r.min == r.max else f"{r.min}-{r.max}" for r in ranges]
    return ",".join(parts) or None


def monitor_kind(spec: common_pb2.MonitorSpec) -> str:
    return spec.WhichOneof("kind") or "unknown"


def monitor_target(monitor: monitor_service_pb2.Monitor) -> str:
    spec = monitor.spec
    kind = monitor_kind(spec)
    if kind == "website":
        method = enum_name(common_pb2.HttpMethod, spec.website.method, "HTTP_METHOD_")
        prefix = "" if method in ("unspecified", "get") else f"{method.upper()} "
        return prefix + spec.website.url
    if kind == "crypto_price":
        return spec.crypto_price.pair
    if kind == "tcp":
        return f"{spec.tcp.host}:{spec.tcp.port}"
    if kind == "dns":
        record = enum_name(common_pb2.DnsRecordType, spec.dns.record_type, "DNS_RECORD_TYPE_")
        return spec.dns.name + ("" if record == "unspecified" else f" {record.upper()}")
    if kind == "grpc_health":
        return spec.grpc_health.target + (f" ({spec.grpc_health.service})" if spec.grpc_health.service else "")
    if kind == "heartbeat":
        return "push (ping its heartbeat_url)"
    return ""


def monitor_view(monitor: monitor_service_pb2.Monitor) -> MonitorView:
    view = MonitorView(
        id=monitor.id,
        name=monitor.display_name,
        kind=monitor_kind(monitor.spec),
        target=monitor_target(monitor),
        interval=span(monitor.interval),
        timeout=span(monitor.timeout),
        retries=monitor.retries or None,
        locations=list(monitor.locations) or None,
        quorum=monitor.quorum or None,
        paused=monitor.paused,
        labels=dict(monitor.labels) or None,
        heartbeat_url=monitor.heartbeat_url or None,
        created=iso(monitor.create_time),
    )
    if view.kind == "heartbeat":
        heartbeat = monitor.spec.heartbeat
        grace = f", grace {span(heartbeat.grace_period) or '0s'}"
        if heartbeat.cron:
            view.schedule = f"cron {heartbeat.cron} {heartbeat.time_zone or 'UTC'}{grace}"
            view.interval = None  # a cron heartbeat's pings are due by the schedule, not every interval
        else:
            view.schedule = f"a ping every {view.interval}{grace}"
        if view.heartbeat_url:
            view.ping = ping_recipes(view.heartbeat_url)
    if view.kind == "website":
        website = monitor.spec.website
        view.keyword = website.keyword.keyword or None
        view.keyword_absent = (website.keyword.absent or None) if website.keyword.keyword else None
        view.expected_status = status_text(website.accepted_status_codes)
        # Names only: a header's value may hold a token.
        view.header_names = sorted(website.headers) or None
        view.cert_expiry_days = website.cert_expiry_days or None
    return view


def ping_recipes(url: str) -> list[str]:
    """How a job pings its heartbeat: at the end, at the start (to time it), with its exit status or a failure."""
    curl = "curl -fsS -m 10 --retry 5"
    return [
        f"at the end of the job: {curl} {url}",
        f"at its start, to time the run: {curl} {url}/start",
        f"at the end with its exit status (non-zero is a failure): {curl} {url}/$?",
        f"at the end when it failed: {curl} {url}/fail",
    ]


def heartbeat_text(view: MonitorView) -> str:
    """ "heartbeat, cron 0 3 * * * Europe/Paris, grace 30m; ping: curl -fsS ... <url> at the end (...)"."""
    text = f"heartbeat, {view.schedule}"
    if view.heartbeat_url:
        url = view.heartbeat_url
        text += (
            f"; ping: curl -fsS -m 10 --retry 5 {url} at the end of the job ({url}/start at its start; "
            f"{url}/$? or {url}/fail at the end to report its exit status or a failure)"
        )
    return text


class CheckView(BaseModel):
    is_up: bool
    time: str | None = None
    duration_ms: float | None = None
    error_class: str | None = None
    message: str | None = None
    fields: dict[str, float] | None = None
    location: str | None = None


def check_view(result: common_pb2.CheckResult) -> CheckView:
    error = enum_name(common_pb2.ErrorClass, result.error_class, "ERROR_CLASS_")
    return CheckView(
        is_up=result.is_up,
        time=iso(result.check_time),
        duration_ms=round(result.duration.ToTimedelta().total_seconds() * 1000, 1),
        error_class=None if error == "unspecified" else error,
        message=result.message or None,
        fields=dict(result.fields) or None,
        location=result.location or None,
    )


def condition_text(condition: common_pb2.AlertCondition) -> str:
    """One line a person reads: "last price > 70000", "monitor is DOWN"."""
    kind = condition.WhichOneof("kind")
    symbols = {
        "greater_than": ">",
        "greater_than_or_equal": ">=",
        "less_than": "<",
        "less_than_or_equal": "<=",
        "equal": "==",
        "not_equal": "!=",
    }
    if kind == "threshold":
        t = condition.threshold
        aggregation = enum_name(common_pb2.Aggregation, t.aggregation, "AGGREGATION_")
        operator = symbols.get(enum_name(common_pb2.ComparisonOperator, t.operator, "COMPARISON_OPERATOR_"), "?")
        window = f" over {span(t.window)}" if span(t.window) else ""
        aggregation = "last" if aggregation == "unspecified" else aggregation
        return f"{aggregation} {t.field}{window} {operator} {t.value:g}"
    if kind == "change":
        c = condition.change
        direction = enum_name(common_pb2.ChangeDirection, c.direction, "CHANGE_DIRECTION_")
        return f"{c.field} moves {c.percent:g}% ({direction}) within {span(c.window)}"
    if kind == "monitor_down":
        return "monitor is DOWN"
    if kind == "no_data":
        return f"no data for {span(condition.no_data.duration)}"
    return kind or "unknown"
