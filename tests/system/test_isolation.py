"""Tenant isolation and authentication across every RPC of every service, generated from the contracts.

The method lists come from the service descriptors, so a new RPC fails ``test_every_rpc_is_in_the_matrix``
until someone decides how it must treat another user's resources. User B calls each user-facing RPC on user
A's resources and gets NOT_FOUND (never PERMISSION_DENIED: ids must not leak) or a listing without them, and
A's resources are unchanged afterwards. Internal RPCs refuse user tokens. Every RPC but login, health and
reflection refuses missing, malformed, expired and revoked tokens with UNAUTHENTICATED.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, duration_pb2, message, timestamp_pb2

from harness.rpc import auth
from harness.services import Stack
from monitors.v1 import (
    account_service_pb2,
    alert_service_pb2,
    common_pb2,
    monitor_service_pb2,
    notification_service_pb2,
)

apb, mpb, npb, alpb = account_service_pb2, monitor_service_pb2, notification_service_pb2, alert_service_pb2
MODULES = {
    "AccountService": ("monitor", apb),
    "MonitorService": ("monitor", mpb),
    "NotificationService": ("notify", npb),
    "AlertService": ("alert", alpb),
}
PUBLIC = {"AccountService/StartLogin", "AccountService/CompleteLogin"}
INTERNAL = {
    "MonitorService/WatchAssignments",
    "MonitorService/ReportResults",
    "MonitorService/WatchMonitorEvents",
    "NotificationService/SendNotification",
}


def all_methods() -> list[tuple[str, descriptor.MethodDescriptor]]:
    found = []
    for service_name, (_, module) in MODULES.items():
        for method in module.DESCRIPTOR.services_by_name[service_name].methods:
            found.append((f"{service_name}/{method.name}", method))
    return found


METHODS = dict(all_methods())


def call(stack: Stack, name: str, request: message.Message, metadata: Any) -> Any:
    """Any RPC by name, unary or streaming, through a generic channel method; the first response of a stream."""
    service_name, method_name = name.split("/")
    process, module = MODULES[service_name]
    method = METHODS[name]
    response_class = getattr(module, method.output_type.name, None) or getattr(common_pb2, method.output_type.name)
    path = f"/monitors.v1.{service_name}/{method_name}"
    kinds = (method.client_streaming, method.server_streaming)
    with grpc.insecure_channel(stack.address(process)) as channel:
        serialize, parse = type(request).SerializeToString, response_class.FromString
        if kinds == (False, False):
            return channel.unary_unary(path, serialize, parse)(request, metadata=metadata, timeout=10)
        if kinds == (False, True):
            stream = channel.unary_stream(path, serialize, parse)(request, metadata=metadata, timeout=10)
            try:
                return next(stream)
            finally:
                stream.cancel()
        return channel.stream_unary(path, serialize, parse)(iter([request]), metadata=metadata, timeout=10)


def empty_request(name: str) -> message.Message:
    service_name = name.split("/")[0]
    module = MODULES[service_name][1]
    return getattr(module, METHODS[name].input_type.name)()  # type: ignore[no-any-return]


@dataclass
class Tenant:
    metadata: Any
    user_id: str
    api_key_id: str
    monitor: mpb.Monitor
    channel: npb.Channel
    secret_name: str
    rule_id: str
    alert_id: str
    silence_id: str


@pytest.fixture(scope="module")
def tenants(stack: Stack) -> tuple[Tenant, Tenant]:
    made = []
    for name in ("alice.isolation", "bob.isolation"):
        key = stack.create_api_key(f"{name}@example.com")
        md = auth(key)
        user = call(stack, "AccountService/GetCurrentUser", apb.GetCurrentUserRequest(), md).user
        keys = call(stack, "AccountService/ListApiKeys", apb.ListApiKeysRequest(), md).api_keys
        secret = name.split(".")[0].upper() + "_TOKEN"
        call(stack, "MonitorService/PutSecret", mpb.PutSecretRequest(name=secret, value=f"{name}-value"), md)
        website = common_pb2.WebsiteSpec(
            url="https://example.com/", headers={"authorization": f"{{{{secret:{secret}}}}}"}
        )
        monitor = call(
            stack,
            "MonitorService/CreateMonitor",
            mpb.CreateMonitorRequest(monitor=mpb.Monitor(spec=common_pb2.MonitorSpec(website=website))),
            md,
        ).monitor
        channel = call(
            stack,
            "NotificationService/CreateChannel",
            npb.CreateChannelRequest(channel=npb.Channel(webhook=npb.WebhookConfig(url="https://example.com/hook"))),
            md,
        ).channel
        # A rule that fires by itself: no sample of the (never checked) monitor for a second.
        no_data = common_pb2.AlertCondition(
            no_data=common_pb2.NoDataCondition(duration=duration_pb2.Duration(seconds=1))
        )
        rule = call(
            stack,
            "AlertService/CreateAlertRule",
            alpb.CreateAlertRuleRequest(alert_rule=alpb.AlertRule(monitor_id=monitor.id, condition=no_data)),
            md,
        ).alert_rule
        silence = call(
            stack,
            "AlertService/CreateSilence",
            alpb.CreateSilenceRequest(
                silence=alpb.Silence(rule_id=rule.id, end_time=timestamp_pb2.Timestamp(seconds=int(time.time()) + 600))
            ),
            md,
        ).silence
        deadline = time.monotonic() + 20
        while not (
            alerts := call(stack, "AlertService/ListAlerts", alpb.ListAlertsRequest(rule_id=rule.id), md).alerts
        ):
            assert time.monotonic() < deadline, "the no_data rule did not fire"
            time.sleep(0.2)
        made.append(Tenant(md, user.id, keys[0].id, monitor, channel, secret, rule.id, alerts[0].id, silence.id))
    return made[0], made[1]


def snapshot(stack: Stack, a: Tenant) -> tuple[Any, ...]:
    md = a.metadata
    return (
        call(stack, "MonitorService/GetMonitor", mpb.GetMonitorRequest(id=a.monitor.id), md).monitor,
        call(stack, "NotificationService/GetChannel", npb.GetChannelRequest(id=a.channel.id), md).channel,
        [s.name for s in call(stack, "MonitorService/ListSecrets", mpb.ListSecretsRequest(), md).secrets],
        [k.id for k in call(stack, "AccountService/ListApiKeys", apb.ListApiKeysRequest(), md).api_keys],
        call(stack, "AlertService/GetAlertRule", alpb.GetAlertRuleRequest(id=a.rule_id), md).alert_rule,
        call(stack, "AlertService/GetAlert", alpb.GetAlertRequest(id=a.alert_id), md).alert.state,
        [s.id for s in call(stack, "AlertService/ListSilences", alpb.ListSilencesRequest(), md).silences],
    )


_ORG_SPEC = common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url="https://example.org/"))
# What B sends, given A's resources, for each RPC that names a resource: B must get NOT_FOUND.
TARGETED: dict[str, Callable[[Tenant], message.Message]] = {
    "AccountService/DeleteApiKey": lambda a: apb.DeleteApiKeyRequest(id=a.api_key_id),
    "MonitorService/GetMonitor": lambda a: mpb.GetMonitorRequest(id=a.monitor.id),
    "MonitorService/UpdateMonitor": lambda a: mpb.UpdateMonitorRequest(
        monitor=mpb.Monitor(id=a.monitor.id, spec=_ORG_SPEC)
    ),
    "MonitorService/DeleteMonitor": lambda a: mpb.DeleteMonitorRequest(id=a.monitor.id),
    "MonitorService/PauseMonitor": lambda a: mpb.PauseMonitorRequest(id=a.monitor.id),
    "MonitorService/ResumeMonitor": lambda a: mpb.ResumeMonitorRequest(id=a.monitor.id),
    "MonitorService/RunCheck": lambda a: mpb.RunCheckRequest(monitor_id=a.monitor.id),
    "MonitorService/GetMonitorStatus": lambda a: mpb.GetMonitorStatusRequest(id=a.monitor.id),
    "MonitorService/QuerySamples": lambda a: mpb.QuerySamplesRequest(monitor_id=a.monitor.id, field="is_up"),
    "MonitorService/SummarizeMonitor": lambda a: mpb.SummarizeMonitorRequest(monitor_id=a.monitor.id),
    "MonitorService/ListHeartbeatPings": lambda a: mpb.ListHeartbeatPingsRequest(monitor_id=a.monitor.id),
    "MonitorService/SummarizeMonitors": lambda a: mpb.SummarizeMonitorsRequest(monitor_ids=[a.monitor.id]),
    "MonitorService/DeleteSecret": lambda a: mpb.DeleteSecretRequest(name=a.secret_name),
    "NotificationService/GetChannel": lambda a: npb.GetChannelRequest(id=a.channel.id),
    "NotificationService/UpdateChannel": lambda a: npb.UpdateChannelRequest(
        channel=npb.Channel(id=a.channel.id, display_name="taken over")
    ),
    "NotificationService/DeleteChannel": lambda a: npb.DeleteChannelRequest(id=a.channel.id),
    "NotificationService/TestChannel": lambda a: npb.TestChannelRequest(id=a.channel.id),
    "AlertService/CreateAlertRule": lambda a: alpb.CreateAlertRuleRequest(
        alert_rule=alpb.AlertRule(
            monitor_id=a.monitor.id,
            condition=common_pb2.AlertCondition(monitor_down=common_pb2.MonitorDownCondition()),
        )
    ),
    "AlertService/GetAlertRule": lambda a: alpb.GetAlertRuleRequest(id=a.rule_id),
    "AlertService/UpdateAlertRule": lambda a: alpb.UpdateAlertRuleRequest(
        alert_rule=alpb.AlertRule(id=a.rule_id, display_name="taken over")
    ),
    "AlertService/DeleteAlertRule": lambda a: alpb.DeleteAlertRuleRequest(id=a.rule_id),
    "AlertService/TestAlertRule": lambda a: alpb.TestAlertRuleRequest(rule_id=a.rule_id),
    "AlertService/GetAlert": lambda a: alpb.GetAlertRequest(id=a.alert_id),
    "AlertService/AcknowledgeAlert": lambda a: alpb.AcknowledgeAlertRequest(id=a.alert_id),
    "AlertService/ResolveAlert": lambda a: alpb.ResolveAlertRequest(id=a.alert_id),
    "AlertService/CreateSilence": lambda a: alpb.CreateSilenceRequest(
        silence=alpb.Silence(monitor_id=a.monitor.id, end_time=timestamp_pb2.Timestamp(seconds=int(time.time()) + 600))
    ),
    "AlertService/DeleteSilence": lambda a: alpb.DeleteSilenceRequest(id=a.silence_id),
    "AlertService/StreamEvaluations": lambda a: alpb.StreamEvaluationsRequest(rule_ids=[a.rule_id]),
}

# RPCs that list: what B sends, and what of A's must not be in the answer.
LISTINGS: dict[str, tuple[Callable[[Tenant], message.Message], Callable[[Any, Tenant], bool]]] = {
    "AccountService/ListApiKeys": (
        lambda a: apb.ListApiKeysRequest(page_size=1000),
        lambda r, a: a.api_key_id in [k.id for k in r.api_keys],
    ),
    "MonitorService/ListMonitors": (
        lambda a: mpb.ListMonitorsRequest(page_size=1000),
        lambda r, a: a.monitor.id in [m.id for m in r.monitors],
    ),
    "MonitorService/ListSecrets": (
        lambda a: mpb.ListSecretsRequest(page_size=1000),
        lambda r, a: a.secret_name in [s.name for s in r.secrets],
    ),
    "NotificationService/ListChannels": (
        lambda a: npb.ListChannelsRequest(page_size=1000),
        lambda r, a: a.channel.id in [c.id for c in r.channels],
    ),
    "NotificationService/ListDeliveries": (
        lambda a: npb.ListDeliveriesRequest(page_size=1000),
        lambda r, a: a.channel.id in [d.channel_id for d in r.deliveries],
    ),
    "AlertService/ListAlertRules": (
        lambda a: alpb.ListAlertRulesRequest(page_size=1000),
        lambda r, a: a.rule_id in [x.id for x in r.alert_rules],
    ),
    "AlertService/ListAlerts": (
        lambda a: alpb.ListAlertsRequest(page_size=1000),
        lambda r, a: a.alert_id in [x.id for x in r.alerts],
    ),
    "AlertService/ListSilences": (
        lambda a: alpb.ListSilencesRequest(page_size=1000, include_expired=True),
        lambda r, a: a.silence_id in [x.id for x in r.silences],
    ),
}

# RPCs about the caller only (creating their own resources, who they are, suggestions, the deployment).
OWN_ONLY = {
    "AccountService/GetCurrentUser",
    "AccountService/CreateApiKey",
    "AccountService/Logout",
    "MonitorService/CreateMonitor",
    "MonitorService/SuggestMonitors",
    "MonitorService/PutSecret",
    "MonitorService/GetDeploymentStatus",
    "NotificationService/CreateChannel",
    # A stream of the caller's own transitions only (tests/alert/test_alerting.py watches one).
    "AlertService/WatchAlerts",
    # A stream of the caller's own monitors' states only (tests/monitor/test_watch_status.py: bob hears none
    # of alice's).
    "MonitorService/WatchMonitorStatus",
}


def test_every_rpc_is_in_the_matrix() -> None:
    decided = [*TARGETED, *LISTINGS, *OWN_ONLY, *PUBLIC, *INTERNAL]
    assert sorted(set(METHODS) - set(decided)) == [], "decide how these RPCs treat another user's resources"
    assert sorted(set(decided) - set(METHODS)) == []
    assert len(decided) == len(set(decided)), "an RPC is in two places"


@pytest.mark.parametrize("name", sorted(TARGETED))
def test_another_users_resource_is_not_found_and_left_unchanged(
    stack: Stack, tenants: tuple[Tenant, Tenant], name: str
) -> None:
    a, b = tenants
    before = snapshot(stack, a)
    with pytest.raises(grpc.RpcError) as caught:
        call(stack, name, TARGETED[name](a), b.metadata)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND, caught.value
    assert snapshot(stack, a) == before
    # The owner still can (the request itself was fine).
    if name.endswith(
        ("/GetMonitor", "/GetChannel", "/GetMonitorStatus", "/QuerySamples", "/SummarizeMonitor", "/ListHeartbeatPings")
    ):
        call(stack, name, TARGETED[name](a), a.metadata)


@pytest.mark.parametrize("name", sorted(LISTINGS))
def test_listings_show_only_the_callers_resources(stack: Stack, tenants: tuple[Tenant, Tenant], name: str) -> None:
    a, b = tenants
    request, leaks = LISTINGS[name]
    assert not leaks(call(stack, name, request(a), b.metadata), a)


@pytest.mark.parametrize("name", sorted(INTERNAL))
def test_internal_rpcs_refuse_user_tokens(stack: Stack, tenants: tuple[Tenant, Tenant], name: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(stack, name, empty_request(name), tenants[1].metadata)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("name", sorted(set(METHODS) - PUBLIC))
def test_every_rpc_refuses_missing_and_malformed_tokens(stack: Stack, name: str) -> None:
    for metadata in [(), (("authorization", "Basic dXNlcjpwYXNz"),), auth("mk_not_a_real_key"), auth("ms_forged")]:
        with pytest.raises(grpc.RpcError) as caught:
            call(stack, name, empty_request(name), metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, (metadata, caught.value)


@pytest.fixture(scope="module")
def dead_tokens(stack: Stack) -> list[str]:
    """An expired API key, a deleted one, and a logged-out session's token cannot be told apart from forged."""
    owner = auth(stack.create_api_key("carol.isolation@example.com"))
    expiring = apb.CreateApiKeyRequest(display_name="short-lived")
    expiring.expire_time.FromSeconds(int(time.time()) + 2)
    expired = call(stack, "AccountService/CreateApiKey", expiring, owner).key
    deleted = call(stack, "AccountService/CreateApiKey", apb.CreateApiKeyRequest(), owner)
    call(stack, "AccountService/DeleteApiKey", apb.DeleteApiKeyRequest(id=deleted.api_key.id), owner)
    time.sleep(2.5)
    # Remote verifiers cache good answers for MONITORS_AUTH_CACHE_TTL_S (5 s); none was cached for these.
    return [expired, deleted.key]


@pytest.mark.parametrize("name", sorted(set(METHODS) - PUBLIC))
def test_every_rpc_refuses_expired_and_revoked_tokens(stack: Stack, dead_tokens: list[str], name: str) -> None:
    for token in dead_tokens:
        with pytest.raises(grpc.RpcError) as caught:
            call(stack, name, empty_request(name), auth(token))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, caught.value
