"""Protobuf <-> domain for monitors: the servicer's vocabulary, nothing else (each *_to_proto returns a new message)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from monitors.v1 import common_pb2 as common
from monitors.v1 import monitor_service_pb2 as pb
from service_runtime.errors import InvalidArgument, Violations
from service_runtime.pagination import encode_page_token
from service_runtime.timeseries import Aggregation, Sample
from service_runtime.timeseries.queries import QueryResult
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
    ListingFilter,
    Monitor,
    MonitorDraft,
    MonitorKind,
    MonitorState,
    MonitorStatus,
    PingKind,
    PingRecord,
    Placement,
    Spec,
    TcpSpec,
    WebsiteSpec,
)
from services.monitor_svc.events import MonitorView
from services.monitor_svc.suggest import (
    ChangeCondition,
    Condition,
    MonitorDownCondition,
    MonitorSuggestion,
    ThresholdCondition,
)
from services.monitor_svc.summaries.overview import Summary
from services.monitor_svc.summaries.queries import AvailabilitySummary, CryptoPriceSummary, WebsiteSummary

if TYPE_CHECKING:  # types only: the runner imports this module, and these modules load the stores (SQLAlchemy)
    from services.monitor_svc.monitors import Deployment, RunnerPlacement
    from services.monitor_svc.status_watch import StatusChange
    from services.monitor_svc.user_secrets import SecretInfo

log = logging.getLogger(__name__)

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
            method=_METHODS.get(w.method, f"#{w.method}") if w.method else WebsiteSpec.method,
            headers=dict(w.headers),
            body=w.body,
            accepted_status_codes=tuple((r.min, r.max) for r in w.accepted_status_codes)
            or WebsiteSpec.accepted_status_codes,
            follow_redirects=w.follow_redirects if w.HasField("follow_redirects") else WebsiteSpec.follow_redirects,
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
        return CryptoPriceSpec(c.pair.strip().upper(), providers or CryptoPriceSpec.providers)
    if kind == "tcp":
        return TcpSpec(spec.tcp.host.strip(), spec.tcp.port)
    if kind == "dns":
        d = spec.dns
        record = _RECORD_TYPES.get(d.record_type, "#") if d.record_type else DnsSpec.record_type
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


def reported_results_from_proto(results: Iterable[common.CheckResult]) -> list[CheckResult | None]:
    """A runner's batch, in order: None for a result without a valid check time or duration, which the batch
    refuses alone (:meth:`services.monitor_svc.assignments.AssignmentHub.report`)."""

    def one(result: common.CheckResult) -> CheckResult | None:
        if not result.HasField("check_time"):
            return None
        try:
            return result_from_proto(result)
        except InvalidArgument:
            return None

    return [one(result) for result in results]


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


def time_range_from_proto(time_range: common.TimeRange) -> tuple[datetime | None, datetime | None]:
    """A request's time range (start, end), each None when unset."""
    return (
        from_timestamp(time_range.start_time, time_range.HasField("start_time"), "time_range.start_time"),
        from_timestamp(time_range.end_time, time_range.HasField("end_time"), "time_range.end_time"),
    )


def time_range_to_proto(start: datetime, end: datetime) -> common.TimeRange:
    return common.TimeRange(start_time=to_timestamp(start), end_time=to_timestamp(end))


def summary_to_proto(monitor_id: str, time_range: common.TimeRange, summary: Summary) -> pb.SummarizeMonitorResponse:
    """SummarizeMonitor's answer for one monitor: the summary of its kind, and how many samples it rests on."""
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
            return pb.SummarizeMonitorResponse(
                monitor_id=monitor_id,
                time_range=time_range,
                website=website,
                sample_count=summary.availability.checks,
            )
        case CryptoPriceSummary():
            crypto_price = pb.CryptoPriceSummary(
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
            return pb.SummarizeMonitorResponse(
                monitor_id=monitor_id, time_range=time_range, crypto_price=crypto_price, sample_count=summary.samples
            )
        case AvailabilitySummary():
            return pb.SummarizeMonitorResponse(
                monitor_id=monitor_id,
                time_range=time_range,
                availability=availability_to_proto(summary),
                sample_count=summary.checks,
            )
    raise AssertionError(summary)


def summaries_to_proto(
    time_range: common.TimeRange, page: Sequence[tuple[Monitor, Summary]], next_token: str, max_bytes: int
) -> pb.SummarizeMonitorsResponse:
    """SummarizeMonitors' page: the summaries that fit in about ``max_bytes`` (at least one); when some do not,
    the next page token resumes after the last one sent."""
    response = pb.SummarizeMonitorsResponse(time_range=time_range, next_page_token=next_token)
    size = 0
    for index, (monitor, summary) in enumerate(page):
        one = summary_to_proto(monitor.id, time_range, summary)
        size += one.ByteSize() + 8
        if index and size > max_bytes:  # the rest on the next page
            response.next_page_token = encode_page_token(page[index - 1][0].id)
            break
        response.summaries.append(one)
    return response


def aggregation_from_proto(aggregation: common.Aggregation.ValueType) -> Aggregation | None:
    """The aggregation a query asks for; None when unset (raw samples, or the query's default)."""
    if aggregation == common.AGGREGATION_UNSPECIFIED:
        return None
    if aggregation not in AGGREGATIONS:
        raise InvalidArgument("aggregation", "is not a known aggregation")
    return AGGREGATIONS[aggregation]


def query_result_to_proto(result: QueryResult) -> pb.QuerySamplesResponse:
    return pb.QuerySamplesResponse(
        points=[
            common.DataPoint(point_time=to_timestamp(p.time), value=p.value, sample_count=p.count)
            for p in result.points
        ],
        window=to_duration(result.window),
        aggregation=aggregation_to_proto(result.aggregation),
    )


def secret_to_proto(info: SecretInfo) -> pb.Secret:
    return pb.Secret(
        name=info.name, create_time=to_timestamp(info.create_time), update_time=to_timestamp(info.update_time)
    )


def runner_info_to_proto(runner: RunnerPlacement) -> pb.RunnerInfo:
    return pb.RunnerInfo(
        runner_id=runner.runner_id,
        location=runner.location,
        connect_time=to_timestamp(runner.connect_time),
        last_report_time=to_timestamp(runner.last_report_time),
        assigned_monitors=runner.assigned,
        version=runner.version,
        ready=runner.ready,
        restarts=runner.restarts,
    )


def deployment_status_to_proto(
    deployment: Deployment, runners: Iterable[RunnerPlacement], unassigned: int, locations: Iterable[str]
) -> pb.GetDeploymentStatusResponse:
    return pb.GetDeploymentStatusResponse(
        version=deployment.version,
        mode=deployment.mode,
        database_backend=deployment.database_backend,
        timeseries_backend=deployment.timeseries_backend,
        runners=[runner_info_to_proto(r) for r in runners],
        unassigned_monitors=unassigned,
        locations=sorted(locations),
    )


def check_target_from_proto(request: pb.RunCheckRequest) -> tuple[str, Spec | None]:
    """RunCheck's target: a monitor's id, or a spec to check once (INVALID_ARGUMENT for a spec of no kind)."""
    if request.WhichOneof("target") != "spec":
        return request.monitor_id, None
    spec = spec_from_proto(request.spec, "spec")
    if spec is None:
        raise InvalidArgument("spec", "set one of website, crypto_price, tcp, dns, heartbeat, grpc_health")
    return "", spec


# --- streams: WatchMonitorEvents, WatchAssignments, WatchMonitorStatus -------------------------------------

# A WatchMonitorEvents message holds at most this many events and about a quarter of the largest message (at
# most 1 MiB: a client's default limit is 4 MiB).
EVENTS_PER_MESSAGE = 500


def monitor_info_to_proto(view: MonitorView) -> pb.MonitorInfo:
    return pb.MonitorInfo(
        monitor_id=view.monitor_id,
        owner_id=view.owner_id,
        display_name=view.display_name,
        labels=view.labels,
        kind=view.kind.value,
        state=common.MonitorState.Value(f"MONITOR_STATE_{view.state.name}"),
        state_change_time=to_timestamp(view.state_change_time),
        paused=view.paused,
        interval=to_duration(view.interval),
        owner_email=view.owner_email,
        down_reason=view.down_reason,
    )


def recorded_result_to_proto(sample: Sample) -> pb.RecordedResult:
    return pb.RecordedResult(
        owner_id=sample.owner_id,
        monitor_id=sample.monitor_id,
        check_time=to_timestamp(sample.time),
        fields=sample.fields,
        location=sample.tags.get("location", ""),
    )


Packed = tuple[int, Callable[[pb.WatchMonitorEventsResponse], None]]  # an event's size, and how to add it


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
) -> Iterator[pb.WatchMonitorEventsResponse]:
    """Messages carrying these events in order (monitors, deletions, results), each with at most
    EVENTS_PER_MESSAGE events and about ``max_bytes``; nothing when there are no events."""
    message = pb.WatchMonitorEventsResponse()
    size = count = 0
    packed = itertools.chain(
        map(_packed_monitor, monitors), map(_packed_deletion, deleted), map(_packed_result, results)
    )
    for item_size, add in packed:
        if count and (count >= EVENTS_PER_MESSAGE or size + item_size > max_bytes):
            yield message
            message = pb.WatchMonitorEventsResponse()
            size = count = 0
        add(message)
        size += item_size
        count += 1
    if count:
        yield message


def snapshot_messages(monitors: Iterable[MonitorView], max_bytes: int) -> Iterator[pb.WatchMonitorEventsResponse]:
    """A WatchMonitorEvents snapshot as messages (:func:`event_messages`), its last one (an empty one when there are
    no monitors) marked ``snapshot_complete``."""
    last = None
    for page in event_messages(monitors, (), (), max_bytes):
        if last is not None:
            yield last
        last = page
    if last is None:
        last = pb.WatchMonitorEventsResponse()
    last.snapshot_complete = True
    yield last


def assignment_to_proto(monitor: Monitor, secrets: Mapping[str, str]) -> pb.Assignment:
    return pb.Assignment(monitor=monitor_to_proto(monitor), secrets=secrets)


def assignment_messages(
    full_sync: bool, upserts: Iterable[pb.Assignment], removed: Iterable[str], max_bytes: int, limit_bytes: int
) -> Iterator[pb.WatchAssignmentsResponse]:
    """One change for a runner as messages of about ``max_bytes`` each: a full set (``full_sync``) marked on
    its first page and as continuing on all but its last, so that no number of assignments makes a message too
    large to send. An assignment that alone exceeds ``limit_bytes`` (the largest message) is left out and logged: sent,
    it would end the stream, and every reconnect would fail the same way."""
    pages = [pb.WatchAssignmentsResponse(full_sync=full_sync)]
    size = 0

    def room_for(item_size: int) -> pb.WatchAssignmentsResponse:
        nonlocal size
        if size and size + item_size > max_bytes:
            pages.append(pb.WatchAssignmentsResponse())
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


def _state_to_proto(state: MonitorState | None) -> common.MonitorState.ValueType:
    return common.MONITOR_STATE_UNSPECIFIED if state is None else _STATES[state]


def status_change_to_proto(change: StatusChange, dropped: int) -> pb.WatchMonitorStatusResponse:
    return pb.WatchMonitorStatusResponse(
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


_STATES_FROM_PROTO = {value: state for state, value in _STATES.items()}
_KINDS = {kind.value: kind for kind in MonitorKind}


def listing_filter_from_proto(request: pb.ListMonitorsRequest) -> ListingFilter:
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
