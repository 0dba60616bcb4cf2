"""Bad input is INVALID_ARGUMENT naming its field, never INTERNAL, over real servers: URLs that cannot be split
or carry control characters, headers with NUL, times a sample store cannot hold, durations that are not valid
or overflow, and a channel template nested past what Jinja can parse. A property-based sweep sends extreme
Timestamps and Durations to every RPC field that takes one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.rpc import auth, rich_details
from harness.services import Stack
from monitors.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    alert_service_pb2,
    alert_service_pb2_grpc,
    common_pb2,
    monitor_service_pb2,
    monitor_service_pb2_grpc,
    notification_service_pb2,
    notification_service_pb2_grpc,
)
from service_runtime.timestamps import EARLIEST, LATEST

pb = monitor_service_pb2
Metadata = tuple[tuple[str, str]]
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1


class Stubs:
    def __init__(self, stack: Stack) -> None:
        self._channels = [grpc.insecure_channel(stack.address(name)) for name in ("monitor", "alert", "notify")]
        self.monitors = monitor_service_pb2_grpc.MonitorServiceStub(self._channels[0])
        self.accounts = account_service_pb2_grpc.AccountServiceStub(self._channels[0])
        self.alerts = alert_service_pb2_grpc.AlertServiceStub(self._channels[1])
        self.notify = notification_service_pb2_grpc.NotificationServiceStub(self._channels[2])

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


@pytest.fixture(scope="module")
def stubs(stack: Stack) -> Iterator[Stubs]:
    made = Stubs(stack)
    yield made
    made.close()


@pytest.fixture(scope="module")
def carol(stack: Stack) -> Metadata:
    return auth(stack.create_api_key("carol.validation@example.com"))


@pytest.fixture(scope="module")
def monitor_id(stubs: Stubs, carol: Metadata) -> str:
    spec = common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url="https://example.com/"))
    created = stubs.monitors.CreateMonitor(pb.CreateMonitorRequest(monitor=pb.Monitor(spec=spec)), metadata=carol)
    return created.monitor.id


def refused_fields(call: Callable[..., Any], request: Any, metadata: Metadata) -> list[str]:
    """The fields an INVALID_ARGUMENT names; fails on success or on any other code."""
    with pytest.raises(grpc.RpcError) as caught:
        call(request, metadata=metadata, timeout=10)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    bad_request = next(d for d in rich_details(error) if isinstance(d, error_details_pb2.BadRequest))
    return [v.field for v in bad_request.field_violations]


def answer(call: Callable[..., Any], request: Any, metadata: Metadata) -> tuple[grpc.StatusCode, Any]:
    """OK and the response, or the error's code and details."""
    try:
        return grpc.StatusCode.OK, call(request, metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        return error.code(), error.details()


def never_internal(call: Callable[..., Any], request: Any, metadata: Metadata) -> Any:
    """The response, or None for a failure with a code that is the caller's to fix: never INTERNAL or UNKNOWN."""
    code, answered = answer(call, request, metadata)
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (request, answered)
    return answered if code == grpc.StatusCode.OK else None


apb = alert_service_pb2
npb = notification_service_pb2
MISSING_IDS: list[tuple[str, str, Any, str]] = [
    ("alerts", "GetAlertRule", apb.GetAlertRuleRequest(), "id"),
    ("alerts", "DeleteAlertRule", apb.DeleteAlertRuleRequest(), "id"),
    (
        "alerts",
        "UpdateAlertRule",
        apb.UpdateAlertRuleRequest(
            alert_rule=apb.AlertRule(display_name="x"), update_mask=field_mask_pb2.FieldMask(paths=["display_name"])
        ),
        "alert_rule.id",
    ),
    ("alerts", "GetAlert", apb.GetAlertRequest(), "id"),
    ("alerts", "AcknowledgeAlert", apb.AcknowledgeAlertRequest(), "id"),
    ("alerts", "ResolveAlert", apb.ResolveAlertRequest(), "id"),
    ("alerts", "DeleteSilence", apb.DeleteSilenceRequest(), "id"),
    ("notify", "GetChannel", npb.GetChannelRequest(), "id"),
    ("notify", "DeleteChannel", npb.DeleteChannelRequest(), "id"),
    ("notify", "TestChannel", npb.TestChannelRequest(), "id"),
    (
        "notify",
        "UpdateChannel",
        npb.UpdateChannelRequest(
            channel=npb.Channel(display_name="x"), update_mask=field_mask_pb2.FieldMask(paths=["display_name"])
        ),
        "channel.id",
    ),
]


@pytest.mark.parametrize(("service", "method", "request_", "field"), MISSING_IDS, ids=[m[1] for m in MISSING_IDS])
def test_a_missing_id_is_invalid_argument_naming_it_not_a_resource_not_found(
    stubs: Stubs, carol: Metadata, service: str, method: str, request_: Any, field: str
) -> None:
    """As GetMonitor with no id says "id is required", not "monitor  not found"."""
    call = getattr(getattr(stubs, service), method)
    assert refused_fields(call, request_, carol) == [field]


def website(url: str, **fields: Any) -> common_pb2.MonitorSpec:
    return common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=url, **fields))


# --- URLs and headers, refused when saved ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://[::1/",  # urlsplit cannot split it
        "http://[fe80::1/health",
        "https://example.com/a\r\nX-Injected: 1",
        "https://example.com/\nx",
        "https://example.com/a\x00b",
        "https://exa\x00mple.com/",
        "https://example.com/a b",
        "https://example.com/\x7f",
    ],
)
def test_a_url_that_cannot_be_sent_is_refused_when_saved(stubs: Stubs, carol: Metadata, url: str) -> None:
    create = pb.CreateMonitorRequest(monitor=pb.Monitor(spec=website(url)))
    assert refused_fields(stubs.monitors.CreateMonitor, create, carol) == ["monitor.spec.website.url"]
    run = pb.RunCheckRequest(spec=website(url))
    assert refused_fields(stubs.monitors.RunCheck, run, carol) == ["spec.website.url"]


@pytest.mark.parametrize("value", ["a\x00b", "a\rb", "a\nb", "a\x1bb", "a\x7fb"])
def test_a_header_value_with_a_control_character_is_refused_when_saved(
    stubs: Stubs, carol: Metadata, value: str
) -> None:
    spec = website("https://example.com/", headers={"X-Token": value})
    create = pb.CreateMonitorRequest(monitor=pb.Monitor(spec=spec))
    assert refused_fields(stubs.monitors.CreateMonitor, create, carol) == ["monitor.spec.website.headers"]


def test_a_header_value_may_hold_a_tab(stubs: Stubs, carol: Metadata) -> None:
    spec = website("https://example.com/", headers={"X-Token": "a\tb"})
    created = stubs.monitors.CreateMonitor(pb.CreateMonitorRequest(monitor=pb.Monitor(spec=spec)), metadata=carol)
    stubs.monitors.DeleteMonitor(pb.DeleteMonitorRequest(id=created.monitor.id), metadata=carol)


@pytest.mark.parametrize("url", ["https://[::1/", "http://[::1"])
def test_suggestions_for_a_url_that_cannot_be_split_name_the_field(stubs: Stubs, carol: Metadata, url: str) -> None:
    assert refused_fields(stubs.monitors.SuggestMonitors, pb.SuggestMonitorsRequest(url=url), carol) == ["url"]
    text = pb.SuggestMonitorsRequest(text=f"watch {url}")
    assert refused_fields(stubs.monitors.SuggestMonitors, text, carol) == ["text"]


# --- times and durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize("year", [1, 1600, 1677, 2262, 2263, 9999])
def test_a_time_a_sample_store_cannot_hold_names_its_field(
    stubs: Stubs, carol: Metadata, monitor_id: str, year: int
) -> None:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromJsonString(f"{year:04d}-06-01T00:00:00Z")
    for side in ("start_time", "end_time"):
        time_range = common_pb2.TimeRange(**{side: stamp})
        query = pb.QuerySamplesRequest(monitor_id=monitor_id, field="is_up", time_range=time_range)
        assert refused_fields(stubs.monitors.QuerySamples, query, carol) == [f"time_range.{side}"]
        summary = pb.SummarizeMonitorRequest(monitor_id=monitor_id, time_range=time_range)
        assert refused_fields(stubs.monitors.SummarizeMonitor, summary, carol) == [f"time_range.{side}"]


@pytest.mark.parametrize(
    "duration",
    [
        duration_pb2.Duration(seconds=30, nanos=2_000_000_000),  # nanos past a second
        duration_pb2.Duration(seconds=30, nanos=-5),  # mixed signs
        duration_pb2.Duration(seconds=-30, nanos=5),
        duration_pb2.Duration(seconds=INT64_MAX),
        duration_pb2.Duration(seconds=-INT64_MAX - 1),
    ],
)
def test_an_invalid_duration_is_refused_naming_its_field(
    stubs: Stubs, carol: Metadata, monitor_id: str, duration: duration_pb2.Duration
) -> None:
    spec = website("https://example.com/")
    for name in ("interval", "timeout"):
        monitor = pb.Monitor(spec=spec)
        getattr(monitor, name).CopyFrom(duration)
        create = pb.CreateMonitorRequest(monitor=monitor)
        assert refused_fields(stubs.monitors.CreateMonitor, create, carol) == [f"monitor.{name}"]
    heartbeat = common_pb2.MonitorSpec(heartbeat=common_pb2.HeartbeatSpec(grace_period=duration))
    create = pb.CreateMonitorRequest(monitor=pb.Monitor(spec=heartbeat))
    assert refused_fields(stubs.monitors.CreateMonitor, create, carol) == ["monitor.spec.heartbeat.grace_period"]
    run = pb.RunCheckRequest(monitor_id=monitor_id, timeout=duration)
    assert refused_fields(stubs.monitors.RunCheck, run, carol) == ["timeout"]
    query = pb.QuerySamplesRequest(
        monitor_id=monitor_id, field="is_up", window=duration, aggregation=common_pb2.AGGREGATION_MEAN
    )
    assert refused_fields(stubs.monitors.QuerySamples, query, carol) == ["window"]


def test_a_template_nested_past_what_jinja_parses_names_its_field(stubs: Stubs, carol: Metadata) -> None:
    for body in ("{{" + "(" * 2000 + "1" + ")" * 2000 + "}}", "{% if 1 %}" * 2000 + "x" + "{% endif %}" * 2000):
        channel = notification_service_pb2.Channel(
            display_name="deep",
            webhook=notification_service_pb2.WebhookConfig(url="https://hooks.example.com/x"),
            template=notification_service_pb2.MessageTemplate(body=body),
        )
        request = notification_service_pb2.CreateChannelRequest(channel=channel)
        assert refused_fields(stubs.notify.CreateChannel, request, carol) == ["channel.template.body"]


# --- the sweep ---------------------------------------------------------------------------------------------

# Seconds where conversions break: int64's ends, a Duration's and a Timestamp's documented range, what 64-bit
# nanoseconds hold (1677-09-21 to 2262-04-11), a datetime's years 1 and 9999.
EDGE_SECONDS = [
    0,
    1,
    -1,
    INT64_MAX,
    -INT64_MAX - 1,
    315_576_000_000,
    315_576_000_001,
    -315_576_000_000,
    -315_576_000_001,
    9_223_372_036,
    9_223_372_037,
    -9_223_372_036,
    -9_223_372_037,
    253_402_300_799,  # 9999-12-31T23:59:59
    253_402_300_800,
    -62_135_596_800,  # 0001-01-01
    -62_135_596_801,
    86_400,
    86_401,
    60,
    61,
    int(EARLIEST.timestamp()),  # the first and last second a request may name
    int(LATEST.timestamp()) - 1,
]
EDGE_NANOS = [0, 1, -1, 999_999_999, 1_000_000_000, -999_999_999, -1_000_000_000, INT32_MAX, -INT32_MAX - 1]
seconds = st.one_of(st.sampled_from(EDGE_SECONDS), st.integers(-INT64_MAX - 1, INT64_MAX))
nanos = st.one_of(st.sampled_from(EDGE_NANOS), st.integers(-INT32_MAX - 1, INT32_MAX))
durations = st.builds(duration_pb2.Duration, seconds=seconds, nanos=nanos)
timestamps = st.builds(timestamp_pb2.Timestamp, seconds=seconds, nanos=nanos)
SWEEP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SWEEP
@given(interval=durations, timeout=durations)
def test_sweep_monitor_durations(
    stubs: Stubs, carol: Metadata, monitor_id: str, interval: duration_pb2.Duration, timeout: duration_pb2.Duration
) -> None:
    update = pb.UpdateMonitorRequest(
        monitor=pb.Monitor(id=monitor_id, interval=interval, timeout=timeout),
        update_mask=field_mask_pb2.FieldMask(paths=["interval", "timeout"]),
    )
    never_internal(stubs.monitors.UpdateMonitor, update, carol)
    heartbeat = common_pb2.MonitorSpec(heartbeat=common_pb2.HeartbeatSpec(grace_period=interval))
    never_internal(stubs.monitors.RunCheck, pb.RunCheckRequest(spec=heartbeat, timeout=timeout), carol)
    blocked = common_pb2.MonitorSpec(tcp=common_pb2.TcpSpec(host="127.0.0.1", port=9))  # refused at once
    never_internal(stubs.monitors.RunCheck, pb.RunCheckRequest(spec=blocked, timeout=timeout), carol)


@SWEEP
@given(start=timestamps, end=timestamps, window=durations)
def test_sweep_sample_queries(
    stubs: Stubs,
    carol: Metadata,
    monitor_id: str,
    start: timestamp_pb2.Timestamp,
    end: timestamp_pb2.Timestamp,
    window: duration_pb2.Duration,
) -> None:
    for time_range in (
        common_pb2.TimeRange(start_time=start, end_time=end),
        common_pb2.TimeRange(start_time=start),
        common_pb2.TimeRange(end_time=end),
    ):
        for aggregation in (common_pb2.AGGREGATION_UNSPECIFIED, common_pb2.AGGREGATION_P95):
            query = pb.QuerySamplesRequest(
                monitor_id=monitor_id, field="is_up", time_range=time_range, window=window, aggregation=aggregation
            )
            never_internal(stubs.monitors.QuerySamples, query, carol)
        summary = pb.SummarizeMonitorRequest(monitor_id=monitor_id, time_range=time_range)
        never_internal(stubs.monitors.SummarizeMonitor, summary, carol)


@SWEEP
@given(expire=timestamps)
def test_sweep_api_key_expiry(stubs: Stubs, carol: Metadata, expire: timestamp_pb2.Timestamp) -> None:
    request = account_service_pb2.CreateApiKeyRequest(display_name="sweep", expire_time=expire)
    created = never_internal(stubs.accounts.CreateApiKey, request, carol)
    if created is not None:
        stubs.accounts.DeleteApiKey(account_service_pb2.DeleteApiKeyRequest(id=created.api_key.id), metadata=carol)


@SWEEP
@given(window=durations, hold=durations, repeat=durations)
def test_sweep_alert_rule_durations(
    stubs: Stubs,
    carol: Metadata,
    monitor_id: str,
    window: duration_pb2.Duration,
    hold: duration_pb2.Duration,
    repeat: duration_pb2.Duration,
) -> None:
    for condition in (
        common_pb2.AlertCondition(
            threshold=common_pb2.ThresholdCondition(
                field="is_up",
                aggregation=common_pb2.AGGREGATION_MEAN,
                window=window,
                operator=common_pb2.COMPARISON_OPERATOR_LESS_THAN,
                value=1,
            )
        ),
        common_pb2.AlertCondition(
            change=common_pb2.ChangeCondition(
                field="is_up", window=window, percent=5, direction=common_pb2.CHANGE_DIRECTION_EITHER
            )
        ),
    ):
        rule = alert_service_pb2.AlertRule(
            monitor_id=monitor_id,
            display_name="sweep",
            condition=condition,
            for_duration=hold,
            repeat_interval=repeat,
            severity=common_pb2.SEVERITY_WARNING,
        )
        never_internal(stubs.alerts.TestAlertRule, alert_service_pb2.TestAlertRuleRequest(alert_rule=rule), carol)


@SWEEP
@given(start=timestamps, end=timestamps, length=durations)
def test_sweep_silence_times(
    stubs: Stubs,
    carol: Metadata,
    monitor_id: str,
    start: timestamp_pb2.Timestamp,
    end: timestamp_pb2.Timestamp,
    length: duration_pb2.Duration,
) -> None:
    for silence in (
        alert_service_pb2.Silence(monitor_id=monitor_id, start_time=start, end_time=end, comment="sweep"),
        alert_service_pb2.Silence(monitor_id=monitor_id, cron_schedule="0 3 * * *", duration=length, time_zone="UTC"),
    ):
        request = alert_service_pb2.CreateSilenceRequest(silence=silence)
        created = never_internal(stubs.alerts.CreateSilence, request, carol)
        if created is not None:
            stubs.alerts.DeleteSilence(alert_service_pb2.DeleteSilenceRequest(id=created.silence.id), metadata=carol)


# Any text a client can send: every Unicode character protobuf can carry (no lone surrogates), NUL and
# control characters, and the spellings that split URLs and templates.
texts = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=300),
    st.sampled_from(["", " ", "\x00", "\r\n", "https://[::1/", "{{secret:X}}", "{{ (((1))) }}", "é" * 3000, "$"]),
)


@SWEEP
@given(name=texts, key=texts, value=texts, url=texts, body=texts, path=texts)
def test_sweep_monitor_texts(
    stubs: Stubs, carol: Metadata, name: str, key: str, value: str, url: str, body: str, path: str
) -> None:
    specs = [
        common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url="https://example.com/", headers={key: value})),
        website(url, body=body),
        website(
            "https://example.com/",
            keyword=common_pb2.KeywordAssertion(keyword=value),
            json_path=common_pb2.JsonPathAssertion(
                path=path, operator=common_pb2.COMPARISON_OPERATOR_EQUAL, expected=value
            ),
        ),
        common_pb2.MonitorSpec(dns=common_pb2.DnsSpec(name=name, expected_answers=[value], resolver=key)),
        common_pb2.MonitorSpec(tcp=common_pb2.TcpSpec(host=name, port=443)),
        common_pb2.MonitorSpec(grpc_health=common_pb2.GrpcHealthSpec(target=name, service=value)),
        common_pb2.MonitorSpec(crypto_price=common_pb2.CryptoPriceSpec(pair=name)),
    ]
    for spec in specs:
        monitor = pb.Monitor(display_name=name, spec=spec, labels={key: value}, locations=[path])
        created = never_internal(stubs.monitors.CreateMonitor, pb.CreateMonitorRequest(monitor=monitor), carol)
        if created is not None:
            stubs.monitors.DeleteMonitor(pb.DeleteMonitorRequest(id=created.monitor.id), metadata=carol)
    never_internal(stubs.monitors.SuggestMonitors, pb.SuggestMonitorsRequest(text=body, url=url, symbol=name), carol)
    never_internal(stubs.monitors.ListMonitors, pb.ListMonitorsRequest(page_token=path), carol)
    never_internal(stubs.monitors.GetMonitor, pb.GetMonitorRequest(id=name), carol)


@SWEEP
@given(name=texts, value=texts, url=texts, template=texts)
def test_sweep_secret_channel_and_key_texts(
    stubs: Stubs, carol: Metadata, name: str, value: str, url: str, template: str
) -> None:
    put = never_internal(stubs.monitors.PutSecret, pb.PutSecretRequest(name=name, value=value), carol)
    if put is not None:
        stubs.monitors.DeleteSecret(pb.DeleteSecretRequest(name=name), metadata=carol)
    configs: list[dict[str, Any]] = [
        {"webhook": notification_service_pb2.WebhookConfig(url=url, headers={name: value})},
        {"email": notification_service_pb2.EmailConfig(to_addresses=[value])},
        {"apprise": notification_service_pb2.AppriseConfig(url=url)},
        {"slack": notification_service_pb2.SlackConfig(webhook_url=url)},
    ]
    for config in configs:
        channel = notification_service_pb2.Channel(
            display_name=name,
            template=notification_service_pb2.MessageTemplate(title=template, body=template),
            **config,
        )
        request = notification_service_pb2.CreateChannelRequest(channel=channel)
        created = never_internal(stubs.notify.CreateChannel, request, carol)
        if created is not None:
            stubs.notify.DeleteChannel(
                notification_service_pb2.DeleteChannelRequest(id=created.channel.id), metadata=carol
            )
    key = never_internal(stubs.accounts.CreateApiKey, account_service_pb2.CreateApiKeyRequest(display_name=name), carol)
    if key is not None:
        stubs.accounts.DeleteApiKey(account_service_pb2.DeleteApiKeyRequest(id=key.api_key.id), metadata=carol)
