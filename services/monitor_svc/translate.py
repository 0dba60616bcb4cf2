"""Protobuf <-> domain for monitors: the servicer's vocabulary, nothing else."""

from __future__ import annotations

from monitors.v1 import common_pb2 as common
from monitors.v1 import monitor_service_pb2 as pb
from service_runtime.errors import InvalidArgument
from service_runtime.timeseries import Aggregation
from service_runtime.timestamps import from_duration, from_timestamp, to_duration, to_timestamp
from services.monitor_svc.domain import (
    COMPARISONS,
    CheckResult,
    CryptoPriceSpec,
    DnsSpec,
    GrpcHealthSpec,
    HeartbeatSpec,
    JsonPathAssertion,
    KeywordAssertion,
    Monitor,
    MonitorDraft,
    MonitorState,
    MonitorStatus,
    PingKind,
    PingRecord,
    Placement,
    Spec,
    TcpSpec,
    WebsiteSpec,
)
from services.monitor_svc.suggest import (
    ChangeCondition,
    Condition,
    MonitorDownCondition,
    MonitorSuggestion,
    ThresholdCondition,
)
from services.monitor_svc.summaries.queries import AvailabilitySummary, CryptoPriceSummary, WebsiteSummary

_METHODS = {
    common.HTTP_METHOD_GET: "GET",
    common.HTTP_METHOD_HEAD: "HEAD",
    common.HTTP_METHOD_POST: "POST",
    common.HTTP_METHOD_PUT: "PUT",
    common.HTTP_METHOD_PATCH: "PATCH",
    common.HTTP_METHOD_DELETE: "DELETE",
    common.HTTP_METHOD_OPTIONS: "OPTIONS",
}
_METHOD_ENUM = {name: value for value, name in _METHODS.items()}
_PROVIDERS = {
    common.CRYPTO_PROVIDER_COINBASE: "coinbase",
    common.CRYPTO_PROVIDER_BINANCE: "binance",
    common.CRYPTO_PROVIDER_KRAKEN: "kraken",
    common.CRYPTO_PROVIDER_COINGECKO: "coingecko",
}
_PROVIDER_ENUM = {name: value for value, name in _PROVIDERS.items()}
_RECORD_TYPES = {
    common.DNS_RECORD_TYPE_A: "A",
    common.DNS_RECORD_TYPE_AAAA: "AAAA",
    common.DNS_RECORD_TYPE_CNAME: "CNAME",
    common.DNS_RECORD_TYPE_MX: "MX",
    common.DNS_RECORD_TYPE_TXT: "TXT",
    common.DNS_RECORD_TYPE_NS: "NS",
}
_RECORD_ENUM = {name: value for value, name in _RECORD_TYPES.items()}
_OPERATORS = dict(
    zip(
        (
            common.COMPARISON_OPERATOR_GREATER_THAN,
            common.COMPARISON_OPERATOR_GREATER_THAN_OR_EQUAL,
            common.COMPARISON_OPERATOR_LESS_THAN,
            common.COMPARISON_OPERATOR_LESS_THAN_OR_EQUAL,
            common.COMPARISON_OPERATOR_EQUAL,
            common.COMPARISON_OPERATOR_NOT_EQUAL,
        ),
        COMPARISONS,
        strict=True,
    )
)
_OPERATOR_ENUM = {name: value for value, name in _OPERATORS.items()}
_STATES = {
    MonitorState.UP: common.MONITOR_STATE_UP,
    MonitorState.DOWN: common.MONITOR_STATE_DOWN,
    MonitorState.PENDING: common.MONITOR_STATE_PENDING,
    MonitorState.PAUSED: common.MONITOR_STATE_PAUSED,
    MonitorState.UNKNOWN: common.MONITOR_STATE_UNKNOWN,
}
_ERROR_CLASSES = {
    "dns": common.ERROR_CLASS_DNS,
    "connect": common.ERROR_CLASS_CONNECT,
    "tls": common.ERROR_CLASS_TLS,
    "timeout": common.ERROR_CLASS_TIMEOUT,
    "status": common.ERROR_CLASS_STATUS,
    "assertion": common.ERROR_CLASS_ASSERTION,
    "blocked": common.ERROR_CLASS_BLOCKED,
    "provider": common.ERROR_CLASS_PROVIDER,
    "internal": common.ERROR_CLASS_INTERNAL,
}
_ERROR_CLASS_NAMES = {value: name for name, value in _ERROR_CLASSES.items()}
AGGREGATIONS = {
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
_AGGREGATION_ENUM = {name: value for value, name in AGGREGATIONS.items()}


def spec_from_proto(spec: common.MonitorSpec, path: str = "monitor.spec") -> Spec | None:
    """The domain spec; None when no kind is set. Unknown enum values become invalid names that
    validation reports against the right field."""
    kind = spec.WhichOneof("kind")
    if kind == "website":
        w = spec.website
        return WebsiteSpec(
            url=w.url.strip(),
            method=_METHODS.get(w.method, "GET" if w.method == common.HTTP_METHOD_UNSPECIFIED else f"#{w.method}"),
            headers=dict(w.headers),
            body=w.body,
            accepted_status_codes=tuple((r.min, r.max) for r in w.accepted_status_codes) or ((200, 399),),
            follow_redirects=w.follow_redirects if w.HasField("follow_redirects") else True,
            keyword=KeywordAssertion(w.keyword.keyword, w.keyword.absent, w.keyword.case_sensitive)
            if w.HasField("keyword")
            else None,
            json_path=JsonPathAssertion(
                w.json_path.path, _OPERATORS.get(w.json_path.operator, ""), w.json_path.expected
            )
            if w.HasField("json_path")
            else None,
            cert_expiry_days=w.cert_expiry_days,
        )
    if kind == "crypto_price":
        c = spec.crypto_price
        providers = tuple(_PROVIDERS.get(p, f"#{p}") for p in c.providers)
        return CryptoPriceSpec(c.pair.strip().upper(), providers or CryptoPriceSpec("X-Y").providers)
    if kind == "tcp":
        return TcpSpec(spec.tcp.host.strip(), spec.tcp.port)
    if kind == "dns":
        d = spec.dns
        record = _RECORD_TYPES.get(d.record_type, "A" if d.record_type == common.DNS_RECORD_TYPE_UNSPECIFIED else "#")
        return DnsSpec(d.name.strip(), record, tuple(d.expected_answers), d.resolver.strip())
    if kind == "heartbeat":
        grace = from_duration(
            spec.heartbeat.grace_period, spec.heartbeat.HasField("grace_period"), f"{path}.heartbeat.grace_period"
        )
        h = spec.heartbeat
        return HeartbeatSpec(
            grace if grace is not None else HeartbeatSpec.grace_period, h.cron.strip(), h.time_zone.strip()
        )
    if kind == "grpc_health":
        g = spec.grpc_health
        return GrpcHealthSpec(g.target.strip(), g.service, g.use_tls)
    return None


def spec_to_proto(spec: Spec) -> common.MonitorSpec:
    match spec:
        case WebsiteSpec():
            website = common.WebsiteSpec(
                url=spec.url,
                method=_METHOD_ENUM.get(spec.method, common.HTTP_METHOD_UNSPECIFIED),
                headers=dict(spec.headers),
                body=spec.body,
                accepted_status_codes=[common.StatusCodeRange(min=a, max=b) for a, b in spec.accepted_status_codes],
                follow_redirects=spec.follow_redirects,
                cert_expiry_days=spec.cert_expiry_days,
            )
            if spec.keyword is not None:
                website.keyword.CopyFrom(
                    common.KeywordAssertion(
                        keyword=spec.keyword.keyword,
                        absent=spec.keyword.absent,
                        case_sensitive=spec.keyword.case_sensitive,
                    )
                )
            if spec.json_path is not None:
                website.json_path.CopyFrom(
                    common.JsonPathAssertion(
                        path=spec.json_path.path,
                        operator=_OPERATOR_ENUM.get(spec.json_path.operator, common.COMPARISON_OPERATOR_UNSPECIFIED),
                        expected=spec.json_path.expected,
                    )
                )
            return common.MonitorSpec(website=website)
        case CryptoPriceSpec():
            providers = [_PROVIDER_ENUM[p] for p in spec.providers]
            return common.MonitorSpec(crypto_price=common.CryptoPriceSpec(pair=spec.pair, providers=providers))
        case TcpSpec():
            return common.MonitorSpec(tcp=common.TcpSpec(host=spec.host, port=spec.port))
        case DnsSpec():
            return common.MonitorSpec(
                dns=common.DnsSpec(
                    name=spec.name,
                    record_type=_RECORD_ENUM[spec.record_type],
                    expected_answers=list(spec.expected_answers),
                    resolver=spec.resolver,
                )
            )
        case HeartbeatSpec():
            return common.MonitorSpec(
                heartbeat=common.HeartbeatSpec(
                    grace_period=to_duration(spec.grace_period), cron=spec.cron, time_zone=spec.time_zone
                )
            )
        case GrpcHealthSpec():
            return common.MonitorSpec(
                grpc_health=common.GrpcHealthSpec(target=spec.target, service=spec.service, use_tls=spec.use_tls)
            )
    raise AssertionError(spec)


_PLACEMENTS = {
    pb.PLACEMENT_UNSPECIFIED: Placement.SHARED,
    pb.PLACEMENT_SHARED: Placement.SHARED,
    pb.PLACEMENT_DEDICATED: Placement.DEDICATED,
}
_PLACEMENT_ENUM = {Placement.SHARED: pb.PLACEMENT_SHARED, Placement.DEDICATED: pb.PLACEMENT_DEDICATED}


def placement_from_proto(value: pb.Placement.ValueType, path: str) -> Placement:
    if value not in _PLACEMENTS:
        raise InvalidArgument(path, "must be PLACEMENT_SHARED or PLACEMENT_DEDICATED")
    return _PLACEMENTS[value]


def draft_from_proto(monitor: pb.Monitor, path: str = "monitor") -> MonitorDraft:
    return MonitorDraft(
        spec=spec_from_proto(monitor.spec, f"{path}.spec") if monitor.HasField("spec") else None,
        display_name=monitor.display_name,
        interval=from_duration(monitor.interval, monitor.HasField("interval"), f"{path}.interval"),
        timeout=from_duration(monitor.timeout, monitor.HasField("timeout"), f"{path}.timeout"),
        retries=monitor.retries,
        locations=tuple(location.strip() for location in monitor.locations),
        quorum=monitor.quorum,
        labels=dict(monitor.labels),
        placement=placement_from_proto(monitor.placement, f"{path}.placement"),
    )


def monitor_to_proto(monitor: Monitor, heartbeat_base_url: str = "") -> pb.Monitor:
    return pb.Monitor(
        id=monitor.id,
        display_name=monitor.display_name,
        spec=spec_to_proto(monitor.spec),
        interval=to_duration(monitor.interval),
        timeout=to_duration(monitor.timeout),
        retries=monitor.retries,
        locations=list(monitor.locations),
        quorum=monitor.quorum,
        paused=monitor.paused,
        labels=dict(monitor.labels),
        heartbeat_url=f"{heartbeat_base_url}/ping/{monitor.heartbeat_token}"
        if isinstance(monitor.spec, HeartbeatSpec) and heartbeat_base_url
        else "",
        create_time=to_timestamp(monitor.create_time),
        update_time=to_timestamp(monitor.update_time),
        placement=_PLACEMENT_ENUM[monitor.placement],
    )


def result_to_proto(result: CheckResult) -> common.CheckResult:
    return common.CheckResult(
        monitor_id=result.monitor_id,
        check_time=to_timestamp(result.time),
        is_up=result.is_up,
        duration=to_duration(result.duration),
        error_class=_ERROR_CLASSES.get(result.error_class, common.ERROR_CLASS_UNSPECIFIED),
        message=result.message,
        fields=dict(result.fields),
        location=result.location,
        runner_id=result.runner_id,
    )


def result_from_proto(result: common.CheckResult) -> CheckResult:
    """A result as a runner reports it; INVALID_ARGUMENT for a check time or duration out of range."""
    time = from_timestamp(result.check_time, result.HasField("check_time"), "results.check_time")
    duration = from_duration(result.duration, True, "results.duration")
    assert time is not None, "check_time is required"
    assert duration is not None  # present: never None
    return CheckResult(
        monitor_id=result.monitor_id,
        time=time,
        is_up=result.is_up,
        duration=duration,
        error_class=_ERROR_CLASS_NAMES.get(result.error_class, ""),
        message=result.message[:500],
        fields=dict(result.fields),
        location=result.location,
        runner_id=result.runner_id,
    )


def status_to_proto(status: MonitorStatus) -> pb.MonitorStatus:
    return pb.MonitorStatus(
        monitor_id=status.monitor_id,
        state=_STATES[status.state],
        last_check_time=to_timestamp(status.last_check_time),
        last_result=None if status.last_result is None else result_to_proto(status.last_result),
        runner_id=status.runner_id,
        location=status.location,
        consecutive_failures=status.consecutive_failures,
        state_change_time=to_timestamp(status.state_change_time),
        location_results=[result_to_proto(entry.result) for _, entry in sorted(status.location_results.items())],
    )


def aggregation_to_proto(aggregation: Aggregation | None) -> common.Aggregation.ValueType:
    return common.AGGREGATION_UNSPECIFIED if aggregation is None else _AGGREGATION_ENUM[aggregation]


def availability_to_proto(summary: AvailabilitySummary) -> pb.AvailabilitySummary:
    return pb.AvailabilitySummary(
        uptime_percent=summary.uptime_percent or 0.0,
        checks=summary.checks,
        failed_checks=summary.failed_checks,
        outages=[
            pb.Outage(
                start_time=to_timestamp(o.start),
                end_time=to_timestamp(o.end),
                duration=to_duration(o.duration),
                error_class=_ERROR_CLASSES.get(o.error_class, common.ERROR_CLASS_UNSPECIFIED),
                cause=o.cause,
                causes=[
                    pb.OutageCause(
                        error_class=_ERROR_CLASSES.get(c.error_class, common.ERROR_CLASS_UNSPECIFIED),
                        message=c.message,
                        failed_checks=c.failed_checks,
                        first_time=to_timestamp(c.first_time),
                    )
                    for c in o.causes
                ],
            )
            for o in summary.outages
        ],
        observed=to_duration(summary.observed),
        downtime=to_duration(summary.downtime),
    )


_PING_KINDS = {
    PingKind.SUCCESS: pb.HEARTBEAT_PING_KIND_SUCCESS,
    PingKind.FAIL: pb.HEARTBEAT_PING_KIND_FAIL,
    PingKind.START: pb.HEARTBEAT_PING_KIND_START,
}


def ping_to_proto(record: PingRecord) -> pb.HeartbeatPing:
    ping = record.ping
    message = pb.HeartbeatPing(
        time=to_timestamp(record.time),
        kind=_PING_KINDS[ping.kind],
        run_time=to_duration(record.run_time),
        body=ping.body,
        body_truncated=ping.body_truncated,
        method=ping.method,
        remote_address=ping.remote_address,
        user_agent=ping.user_agent,
    )
    if ping.exit_status is not None:
        message.exit_status = ping.exit_status
    return message


def summary_to_proto(
    response: pb.SummarizeMonitorResponse, summary: WebsiteSummary | CryptoPriceSummary | AvailabilitySummary
) -> None:
    match summary:
        case WebsiteSummary():
            website = pb.WebsiteSummary(
                availability=availability_to_proto(summary.availability),
                response_time_p50_ms=summary.response_time_p50_ms or 0.0,
                response_time_p95_ms=summary.response_time_p95_ms or 0.0,
                response_time_p99_ms=summary.response_time_p99_ms or 0.0,
            )
            if summary.cert_days_left is not None:
                website.cert_days_left = int(summary.cert_days_left)
            response.website.CopyFrom(website)
            response.sample_count = summary.availability.checks
        case CryptoPriceSummary():
            response.crypto_price.CopyFrom(
                pb.CryptoPriceSummary(
                    first=summary.first or 0.0,
                    last=summary.last or 0.0,
                    min=summary.min or 0.0,
                    max=summary.max or 0.0,
                    mean=summary.mean or 0.0,
                    change_absolute=summary.change_absolute or 0.0,
                    change_percent=summary.change_percent or 0.0,
                    volatility=summary.volatility or 0.0,
                    availability=availability_to_proto(summary.availability),
                    volatility_percent=summary.volatility_percent or 0.0,
                )
            )
            response.sample_count = summary.samples
        case AvailabilitySummary():
            response.availability.CopyFrom(availability_to_proto(summary))
            response.sample_count = summary.checks


# --- SuggestMonitors -------------------------------------------------------------------------------------

_SEVERITIES = {
    "info": common.SEVERITY_INFO,
    "warning": common.SEVERITY_WARNING,
    "critical": common.SEVERITY_CRITICAL,
}
_DIRECTIONS = {
    "up": common.CHANGE_DIRECTION_UP,
    "down": common.CHANGE_DIRECTION_DOWN,
    "either": common.CHANGE_DIRECTION_EITHER,
}


def draft_to_proto(draft: MonitorDraft) -> pb.Monitor:
    """A monitor not created yet, as CreateMonitor takes it."""
    assert draft.spec is not None
    return pb.Monitor(
        display_name=draft.display_name,
        spec=spec_to_proto(draft.spec),
        interval=to_duration(draft.interval),
        timeout=to_duration(draft.timeout),
        retries=draft.retries,
        locations=list(draft.locations),
        quorum=draft.quorum,
        labels=dict(draft.labels),
    )


def condition_to_proto(condition: Condition) -> common.AlertCondition:
    match condition:
        case ThresholdCondition():
            return common.AlertCondition(
                threshold=common.ThresholdCondition(
                    field=condition.field,
                    aggregation=_AGGREGATION_ENUM[condition.aggregation],
                    window=to_duration(condition.window),  # unset: the latest sample only
                    operator=_OPERATOR_ENUM[condition.operator],
                    value=condition.value,
                )
            )
        case ChangeCondition():
            return common.AlertCondition(
                change=common.ChangeCondition(
                    field=condition.field,
                    window=to_duration(condition.window),
                    percent=condition.percent,
                    direction=_DIRECTIONS[condition.direction],
                )
            )
        case MonitorDownCondition():
            return common.AlertCondition(monitor_down=common.MonitorDownCondition())
    raise AssertionError(condition)


def suggestion_to_proto(suggestion: MonitorSuggestion) -> pb.MonitorSuggestion:
    return pb.MonitorSuggestion(
        monitor=draft_to_proto(suggestion.draft),
        rationale=suggestion.rationale,
        alert_rules=[
            common.SuggestedAlertRule(
                display_name=rule.display_name,
                condition=condition_to_proto(rule.condition),
                severity=_SEVERITIES[rule.severity],
                for_duration=to_duration(rule.for_duration),
                rationale=rule.rationale,
            )
            for rule in suggestion.alert_rules
        ],
    )
