"""Every RPC of every service, fuzzed from the protobuf descriptors over real servers.

The methods come from the generated modules' descriptors, not from a list kept by hand: a new RPC (or a new
service, once this file says which process serves it) is fuzzed the day it is added. Hypothesis builds each
request from its message descriptor: any field set or left unset, random and edge integers (negative sizes
among them), NaN and infinities, enum numbers no enum declares, Unicode text, NUL and control characters, huge
strings, Timestamps and Durations past their ranges, field masks naming real and made-up paths, and ids of
resources that exist. Each request goes out with a user's API key or the services' token (which the runners and
the alert service present), and the answer must be the caller's to fix:

- never INTERNAL or UNKNOWN;
- INVALID_ARGUMENT carries google.rpc.BadRequest naming fields of the request;
- every service still answers health afterwards, and no process has died.

Server-streaming RPCs are opened with a short deadline and read for a few messages; the client-streaming one
is sent a few random messages. The number of examples comes from a Hypothesis profile: ``fuzz`` in the suite,
``fuzz-long`` for a longer hunt (``MONITORS_FUZZ_PROFILE=fuzz-long``).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, duration_pb2, message_factory
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import monitors.v1
from harness.rpc import auth, rich_details
from harness.services import Stack, health
from monitors.v1 import (
    alert_service_pb2,
    alert_service_pb2_grpc,
    common_pb2,
    monitor_service_pb2,
    monitor_service_pb2_grpc,
    notification_service_pb2,
    notification_service_pb2_grpc,
)
from service_runtime.settings import Role
from services.monitor_svc.server import INTERNAL_METHODS as MONITOR_INTERNAL
from services.monitor_svc.server import OPERATOR_METHODS
from services.notify_svc.server import INTERNAL_METHODS as NOTIFY_INTERNAL

# Which process serves each service. A service missing here fails test_every_rpc_is_fuzzed.
SERVED_BY = {
    "monitors.v1.AccountService": "monitor",
    "monitors.v1.MonitorService": "monitor",
    "monitors.v1.AlertService": "alert",
    "monitors.v1.NotificationService": "notify",
}
# The roles (besides users) that may call each method, from the servers' own tables.
ROLES: dict[str, tuple[Role, ...]] = {**MONITOR_INTERNAL, **OPERATOR_METHODS, **NOTIFY_INTERNAL}
# Methods not fuzzed, each with the reason. Empty: streaming RPCs are fuzzed with a short deadline.
SKIPPED: dict[str, str] = {}

settings.register_profile(
    "fuzz", max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.register_profile(
    "fuzz-long", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
FUZZ = settings.get_profile(os.environ.get("MONITORS_FUZZ_PROFILE", "fuzz"))

CALL_TIMEOUT_S = 15.0
STREAM_TIMEOUT_S = 1.0
STREAM_READ = 3
MAX_DEPTH = 5


def described_methods() -> list[descriptor.MethodDescriptor]:
    """Every method of every service the generated monitors.v1 modules declare."""
    methods: list[descriptor.MethodDescriptor] = []
    for module_info in pkgutil.iter_modules(monitors.v1.__path__):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"monitors.v1.{module_info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            methods.extend(service.methods)
    return methods


METHODS = {method.full_name: method for method in described_methods()}
FUZZED = sorted(name for name in METHODS if name not in SKIPPED)


def test_every_rpc_is_fuzzed() -> None:
    """The fuzzed methods are the descriptors' methods, less the explicit skips, and each has a server."""
    assert set(FUZZED) | set(SKIPPED) == set(METHODS)
    assert set(SKIPPED) <= set(METHODS), "a skip names a method that no longer exists"
    unserved = {METHODS[name].containing_service.full_name for name in FUZZED} - set(SERVED_BY)
    assert not unserved, f"say in SERVED_BY which process serves {sorted(unserved)}"
    assert len(FUZZED) >= 40


# --- values ------------------------------------------------------------------------------------------------

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
EDGE_INTS = [0, 1, -1, 2, 10, 100, 1000, 1001, 10_000, -100, 2**31 - 1, -(2**31), 2**53]
EDGE_TEXTS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\r\n",
    "\t",
    "../../etc/passwd",
    "https://[::1/",
    "http://127.0.0.1:9/",
    "https://example.com/",
    "{{secret:X}}",
    "{{ (((1))) }}",
    "{% for x in range(10**9) %}x{% endfor %}",
    "$.a[?(@.b>1)]",
    "*/5 * * * *",
    "Europe/Paris",
    "Not/AZone",
    "-1",
    "NaN",
    "1e309",
    "🙂" * 50,
    "\u202e\u200b",
    "é" * 3000,
    "x" * 70_000,
]
texts = st.one_of(st.text(st.characters(codec="utf-8"), max_size=60), st.sampled_from(EDGE_TEXTS))


def integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [value for value in [*EDGE_INTS, low, high] if low <= value <= high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


# Seconds and nanos where Timestamp and Duration conversions break (see test_validation_rpcs for the reasons).
EDGE_SECONDS = [
    0,
    1,
    -1,
    60,
    86_400,
    315_576_000_001,
    -315_576_000_001,
    9_223_372_037,
    253_402_300_800,
    -62_135_596_801,
]
EDGE_NANOS = [0, -1, 999_999_999, 1_000_000_000, -(2**31)]
SECONDS = st.one_of(st.sampled_from([*EDGE_SECONDS, INT64[0], INT64[1]]), st.integers(*INT64))
NANOS = st.one_of(st.sampled_from(EDGE_NANOS), st.integers(*INT32))


@dataclass(frozen=True)
class Pools:
    """Values that make requests reach deeper than NOT_FOUND: ids of resources that exist, field paths."""

    ids: tuple[str, ...]
    paths: tuple[str, ...]
    # Valid messages by type (the resources made for the test, and every message inside them): a request built
    # from one of these with a single field changed gets past the checks that a random message fails first.
    valid: dict[str, tuple[Message, ...]] = dataclasses.field(default_factory=dict)


def valid_messages(*resources: Message) -> dict[str, tuple[Message, ...]]:
    """Every message in ``resources`` (they and the messages they hold), by type name."""
    found: dict[str, list[Message]] = {}
    queue = list(resources)
    while queue:
        message = queue.pop()
        found.setdefault(message.DESCRIPTOR.full_name, []).append(message)
        for described, value in message.ListFields():
            if described.message_type is None or described.message_type.GetOptions().map_entry:
                continue
            queue.extend(value if described.is_repeated else [value])
    return {name: tuple(messages) for name, messages in found.items()}


def field_paths(message: descriptor.Descriptor, prefix: str = "", depth: int = 0) -> Iterator[str]:
    for field in message.fields:
        path = f"{prefix}{field.name}"
        yield path
        if field.message_type is not None and depth < 2 and not field.message_type.GetOptions().map_entry:
            yield from field_paths(field.message_type, f"{path}.", depth + 1)


def scalar(field: descriptor.FieldDescriptor, pools: Pools) -> st.SearchStrategy[Any]:
    kind = field.type
    fd = descriptor.FieldDescriptor
    if kind in (fd.TYPE_INT32, fd.TYPE_SINT32, fd.TYPE_SFIXED32):
        return integers(*INT32)
    if kind in (fd.TYPE_INT64, fd.TYPE_SINT64, fd.TYPE_SFIXED64):
        return integers(*INT64)
    if kind in (fd.TYPE_UINT32, fd.TYPE_FIXED32):
        return integers(0, 2**32 - 1)
    if kind in (fd.TYPE_UINT64, fd.TYPE_FIXED64):
        return integers(0, 2**64 - 1)
    if kind == fd.TYPE_DOUBLE:
        return st.one_of(st.sampled_from([0.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e308]), st.floats())
    if kind == fd.TYPE_FLOAT:
        return st.one_of(st.sampled_from([float("nan"), float("inf"), -float("inf")]), st.floats(width=32))
    if kind == fd.TYPE_BOOL:
        return st.booleans()
    if kind == fd.TYPE_BYTES:
        return st.binary(max_size=200)
    if kind == fd.TYPE_ENUM:
        assert field.enum_type is not None
        declared = [value.number for value in field.enum_type.values]
        return st.one_of(st.sampled_from(declared), integers(*INT32))
    if field.name == "id" or field.name.endswith("_id") or field.name.endswith("_ids"):
        return st.one_of(st.sampled_from(pools.ids), texts)
    return texts


def message_of(message: descriptor.Descriptor, pools: Pools, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of this type with any of their fields set to anything its type can carry."""
    cls = message_factory.GetMessageClass(message)
    if message.full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        return st.builds(cls, seconds=SECONDS, nanos=NANOS)
    if message.full_name == "google.protobuf.FieldMask":
        path = st.one_of(st.sampled_from(pools.paths), texts)
        return st.builds(cls, paths=st.lists(path, max_size=4))
    if depth > MAX_DEPTH:
        return st.just(cls())
    optional = {field.name: value_of(field, pools, depth) for field in message.fields}
    anything = st.fixed_dictionaries({}, optional=optional).map(lambda values: filled(cls(), message, values))
    seeds = pools.valid.get(message.full_name)
    if not seeds or not message.fields:
        return anything
    one_changed = st.tuples(st.sampled_from(seeds), st.sampled_from(list(message.fields))).flatmap(
        lambda pair: value_of(pair[1], pools, depth).map(lambda value: changed(pair[0], message, pair[1].name, value))
    )
    return st.one_of(anything, one_changed)


def changed(seed: Message, described: descriptor.Descriptor, name: str, value: Any) -> Message:
    """A copy of ``seed`` with field ``name`` replaced by ``value``."""
    message = type(seed)()
    message.CopyFrom(seed)
    message.ClearField(name)
    return filled(message, described, {name: value})


def value_of(field: descriptor.FieldDescriptor, pools: Pools, depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key = field.message_type.fields_by_name["key"]
        value = field.message_type.fields_by_name["value"]
        return st.dictionaries(single(key, pools, depth), single(value, pools, depth), max_size=3)
    if field.is_repeated:
        return st.lists(single(field, pools, depth), max_size=4)
    return single(field, pools, depth)


def single(field: descriptor.FieldDescriptor, pools: Pools, depth: int) -> st.SearchStrategy[Any]:
    if (inner := field.message_type) is not None:
        return st.deferred(lambda: message_of(inner, pools, depth + 1))
    return scalar(field, pools)


def filled(message: Message, described: descriptor.Descriptor, values: dict[str, Any]) -> Message:
    # In field order, so the last field set of a oneof wins, as a client's last assignment would.
    for field in described.fields:
        if field.name not in values:
            continue
        value = values[field.name]
        target = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if isinstance(item, Message):
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif field.is_repeated:
            if field.message_type is not None:
                for item in value:
                    target.add().CopyFrom(item)
            else:
                target.extend(value)
        elif field.message_type is not None:
            target.CopyFrom(value)
        else:
            setattr(message, field.name, value)
    return message


# --- servers -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def channels(stack: Stack) -> Iterator[dict[str, grpc.Channel]]:
    # Big enough for the largest request a strategy makes, so every one reaches the server.
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    opened = {name: grpc.insecure_channel(stack.address(name), options=options) for name in set(SERVED_BY.values())}
    yield opened
    for channel in opened.values():
        channel.close()


@pytest.fixture(scope="module")
def dora(stack: Stack) -> tuple[tuple[str, str]]:
    return auth(stack.create_api_key("dora.fuzz@example.com"))


@pytest.fixture
def pools(channels: dict[str, grpc.Channel], dora: tuple[tuple[str, str]]) -> Iterator[Pools]:
    """Resources of the user's, made afresh for each method (an earlier method may have deleted them); what
    the method's examples made is deleted after it, so no quota fills up."""
    monitors = monitor_service_pb2_grpc.MonitorServiceStub(channels["monitor"])
    alerts = alert_service_pb2_grpc.AlertServiceStub(channels["alert"])
    notify = notification_service_pb2_grpc.NotificationServiceStub(channels["notify"])
    spec = common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url="https://example.com/"))
    monitor = monitors.CreateMonitor(
        monitor_service_pb2.CreateMonitorRequest(monitor=monitor_service_pb2.Monitor(display_name="fuzz", spec=spec)),
        metadata=dora,
        timeout=CALL_TIMEOUT_S,
    ).monitor
    channel = notify.CreateChannel(
        notification_service_pb2.CreateChannelRequest(
            channel=notification_service_pb2.Channel(
                display_name="fuzz", webhook=notification_service_pb2.WebhookConfig(url="https://hooks.example.com/")
            )
        ),
        metadata=dora,
        timeout=CALL_TIMEOUT_S,
    ).channel
    condition = common_pb2.AlertCondition(monitor_down=common_pb2.MonitorDownCondition())
    rule = alerts.CreateAlertRule(
        alert_service_pb2.CreateAlertRuleRequest(
            alert_rule=alert_service_pb2.AlertRule(
                monitor_id=monitor.id,
                display_name="fuzz",
                condition=condition,
                severity=common_pb2.SEVERITY_WARNING,
                channel_ids=[channel.id],
            )
        ),
        metadata=dora,
        timeout=CALL_TIMEOUT_S,
    ).alert_rule
    paths = {path for method in METHODS.values() for path in field_paths(method.input_type)}
    for name in ("Monitor", "AlertRule", "Channel", "Silence"):
        for module in (monitor_service_pb2, alert_service_pb2, notification_service_pb2):
            if name in module.DESCRIPTOR.message_types_by_name:
                paths.update(field_paths(module.DESCRIPTOR.message_types_by_name[name]))
    yield Pools(
        ids=(monitor.id, channel.id, rule.id),
        paths=tuple(sorted(paths)),
        valid=valid_messages(monitor, channel, rule),
    )
    delete_everything(channels, dora)


def delete_everything(channels: dict[str, grpc.Channel], metadata: Any) -> None:
    """Deletes the user's monitors, rules, silences, channels and secrets."""
    monitors = monitor_service_pb2_grpc.MonitorServiceStub(channels["monitor"])
    alerts = alert_service_pb2_grpc.AlertServiceStub(channels["alert"])
    notify = notification_service_pb2_grpc.NotificationServiceStub(channels["notify"])
    kinds: list[tuple[Callable[..., Any], Any, str, Callable[[Any], object]]] = [
        (
            alerts.ListSilences,
            alert_service_pb2.ListSilencesRequest(page_size=100, include_expired=True),
            "silences",
            lambda item: alerts.DeleteSilence(
                alert_service_pb2.DeleteSilenceRequest(id=item.id), metadata=metadata, timeout=CALL_TIMEOUT_S
            ),
        ),
        (
            alerts.ListAlertRules,
            alert_service_pb2.ListAlertRulesRequest(page_size=100),
            "alert_rules",
            lambda item: alerts.DeleteAlertRule(
                alert_service_pb2.DeleteAlertRuleRequest(id=item.id), metadata=metadata, timeout=CALL_TIMEOUT_S
            ),
        ),
        (
            monitors.ListMonitors,
            monitor_service_pb2.ListMonitorsRequest(page_size=100),
            "monitors",
            lambda item: monitors.DeleteMonitor(
                monitor_service_pb2.DeleteMonitorRequest(id=item.id), metadata=metadata, timeout=CALL_TIMEOUT_S
            ),
        ),
        (
            notify.ListChannels,
            notification_service_pb2.ListChannelsRequest(page_size=100),
            "channels",
            lambda item: notify.DeleteChannel(
                notification_service_pb2.DeleteChannelRequest(id=item.id), metadata=metadata, timeout=CALL_TIMEOUT_S
            ),
        ),
        (
            monitors.ListSecrets,
            monitor_service_pb2.ListSecretsRequest(page_size=100),
            "secrets",
            lambda item: monitors.DeleteSecret(
                monitor_service_pb2.DeleteSecretRequest(name=item.name), metadata=metadata, timeout=CALL_TIMEOUT_S
            ),
        ),
    ]
    for list_call, request, items, delete in kinds:
        for _ in range(20):
            found = getattr(list_call(request, metadata=metadata, timeout=CALL_TIMEOUT_S), items)
            if not found:
                break
            for item in found:
                delete(item)


# --- the fuzz ----------------------------------------------------------------------------------------------

ACCEPTABLE_STREAM_ENDS = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


def invoke(channel: grpc.Channel, method: descriptor.MethodDescriptor, requests: list[Message], metadata: Any) -> None:
    """Sends the requests as the method's shape says; returns on success, raises grpc.RpcError otherwise."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    serialize: Callable[[Message], bytes] = lambda message: message.SerializeToString()  # noqa: E731
    response_class = message_factory.GetMessageClass(method.output_type)
    deserialize = response_class.FromString
    if method.client_streaming:
        timeout = STREAM_TIMEOUT_S if method.server_streaming else CALL_TIMEOUT_S
        if method.server_streaming:
            call = channel.stream_stream(path, serialize, deserialize)(
                iter(requests), metadata=metadata, timeout=timeout
            )
            for _, _ in zip(range(STREAM_READ), call, strict=False):
                pass
            call.cancel()
        else:
            channel.stream_unary(path, serialize, deserialize)(iter(requests), metadata=metadata, timeout=timeout)
    elif method.server_streaming:
        stream = channel.unary_stream(path, serialize, deserialize)(
            requests[0], metadata=metadata, timeout=STREAM_TIMEOUT_S
        )
        for _, _ in zip(range(STREAM_READ), stream, strict=False):
            pass
        stream.cancel()
    else:
        channel.unary_unary(path, serialize, deserialize)(requests[0], metadata=metadata, timeout=CALL_TIMEOUT_S)


def top_level_field(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def check_answer(method: descriptor.MethodDescriptor, requests: list[Message], error: grpc.RpcError | None) -> None:
    if error is None:
        return
    code = error.code()
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
        method.full_name,
        code,
        error.details(),
        requests,
    )
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        bad_requests = [d for d in rich_details(error) if isinstance(d, error_details_pb2.BadRequest)]
        assert bad_requests, (method.full_name, "INVALID_ARGUMENT without BadRequest", error.details(), requests)
        fields = [violation.field for bad in bad_requests for violation in bad.field_violations]
        assert fields, (method.full_name, "BadRequest names no field", error.details(), requests)
        known = {field.name for field in method.input_type.fields}
        strangers = [field for field in fields if top_level_field(field) not in known]
        assert not strangers, (method.full_name, "violations name no field of the request", strangers, requests)


def assert_all_serving(stack: Stack) -> None:
    for name in set(SERVED_BY.values()):
        process = stack.services[name].process
        assert process is not None
        assert process.poll() is None, f"{name} died:\n{stack.services[name].log_tail()}"
        assert health(stack.address(name), timeout_s=10) == health_pb2.HealthCheckResponse.SERVING, name


# A streaming example may take its whole deadline: the per-test limit grows with the profile's examples.
@pytest.mark.timeout(max(120, 3 * (FUZZ.max_examples + 20)))
@pytest.mark.filterwarnings("ignore:Generating overly large repr")  # a failing example with a huge string
@pytest.mark.parametrize("method_name", FUZZED)
def test_fuzzed_requests_get_answers_that_are_the_callers_to_fix(
    stack: Stack, channels: dict[str, grpc.Channel], dora: Any, pools: Pools, method_name: str
) -> None:
    method = METHODS[method_name]
    channel = channels[SERVED_BY[method.containing_service.full_name]]
    request = message_of(method.input_type, pools)
    many = method.client_streaming
    # The user's key, or the token of a role that may call the method, so the RPCs only services and runners
    # may call (SendNotification, ReportResults, WatchAssignments) get past authentication too.
    credentials = st.sampled_from(
        [
            dora,
            *(
                auth(stack.role_token(role))
                for role in ROLES.get(f"/{method.containing_service.full_name}/{method.name}", ())
            ),
        ]
    )

    @FUZZ
    @given(requests=st.lists(request, min_size=1, max_size=3 if many else 1), metadata=credentials)
    def fuzz(requests: list[Message], metadata: Any) -> None:
        try:
            invoke(channel, method, requests, metadata)
        except grpc.RpcError as error:
            if method.server_streaming and error.code() in ACCEPTABLE_STREAM_ENDS:
                return
            check_answer(method, requests, error)
        else:
            check_answer(method, requests, None)

    fuzz()
    assert_all_serving(stack)


# --- what the fuzz found, kept as plain cases ---------------------------------------------------------------


@pytest.mark.parametrize("url", ["A://[", "https://[::1/x", "https://teams.example.com:99999/"])
def test_a_teams_url_that_cannot_be_split_names_its_field(
    channels: dict[str, grpc.Channel], dora: Any, url: str
) -> None:
    notify = notification_service_pb2_grpc.NotificationServiceStub(channels["notify"])
    channel = notification_service_pb2.Channel(
        display_name="teams", teams=notification_service_pb2.TeamsConfig(workflow_url=url)
    )
    with pytest.raises(grpc.RpcError) as caught:
        notify.CreateChannel(
            notification_service_pb2.CreateChannelRequest(channel=channel), metadata=dora, timeout=CALL_TIMEOUT_S
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    bad_request = next(d for d in rich_details(caught.value) if isinstance(d, error_details_pb2.BadRequest))
    assert [v.field for v in bad_request.field_violations] == ["channel.teams.workflow_url"]


@pytest.mark.parametrize("nanos", [1_000_000_000, -5])
def test_an_invalid_notification_duration_names_its_path_in_the_request(
    stack: Stack, channels: dict[str, grpc.Channel], nanos: int
) -> None:
    notify = notification_service_pb2_grpc.NotificationServiceStub(channels["notify"])
    request = notification_service_pb2.SendNotificationRequest(
        idempotency_key="fuzz-duration",
        owner_id="usr_fuzz",
        notification=notification_service_pb2.Notification(
            kind=notification_service_pb2.NOTIFICATION_KIND_ALERT_FIRING,
            duration=duration_pb2.Duration(seconds=1, nanos=nanos),
        ),
    )
    with pytest.raises(grpc.RpcError) as caught:
        notify.SendNotification(request, metadata=auth(stack.role_token("alert")), timeout=CALL_TIMEOUT_S)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    bad_request = next(d for d in rich_details(caught.value) if isinstance(d, error_details_pb2.BadRequest))
    assert [v.field for v in bad_request.field_violations] == ["notification.duration"]
