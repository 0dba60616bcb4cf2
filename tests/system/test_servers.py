"""The three servers as a client sees them, on both stacks: health, reflection, auth, errors, limits, logs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from harness.rpc import auth, rich_details
from harness.services import REPO, Stack, health
from monitors.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    alert_service_pb2,
    alert_service_pb2_grpc,
    notification_service_pb2,
    notification_service_pb2_grpc,
)

SERVICES = {
    "monitor": {"monitors.v1.MonitorService", "monitors.v1.AccountService"},
    "alert": {"monitors.v1.AlertService"},
    "notify": {"monitors.v1.NotificationService"},
}
STANDARD = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
GRPCURL = str(REPO / ".venv" / "bin" / "grpcurl")


@pytest.fixture(scope="module")
def api_key(stack: Stack) -> str:
    return stack.create_api_key("alice@example.com")


@pytest.fixture
def channel(stack: Stack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(stack.address("monitor")) as channel:
        yield channel


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_reports_serving_overall_and_by_name(stack: Stack, name: str) -> None:
    address = stack.address(name)
    for service in ["", *SERVICES[name]]:
        assert health(address, service) == health_pb2.HealthCheckResponse.SERVING


def test_health_of_an_unknown_service_is_not_found(stack: Stack) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        health(stack.address("monitor"), "monitors.v1.NoSuchService")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_reflection_lists_the_services_of_each_server(stack: Stack, name: str) -> None:
    with grpc.insecure_channel(stack.address(name)) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        listed = {s.name for reply in replies for s in reply.list_services_response.service}
    assert listed == SERVICES[name] | STANDARD


def test_all_services_are_reachable_by_reflection(stack: Stack) -> None:
    """Three services, AccountService, health and reflection: everything a grpcurl user can find."""
    listed: set[str] = set()
    for name in SERVICES:
        out = subprocess.run(
            [GRPCURL, "-plaintext", stack.address(name), "list"], capture_output=True, text=True, timeout=30, check=True
        )
        listed |= set(out.stdout.split())
    assert listed == set().union(*SERVICES.values()) | STANDARD


def test_grpcurl_describes_and_calls_with_a_key(stack: Stack, api_key: str) -> None:
    address = stack.address("monitor")
    described = subprocess.run(
        [GRPCURL, "-plaintext", address, "describe", "monitors.v1.AccountService.GetCurrentUser"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "rpc GetCurrentUser ( .monitors.v1.GetCurrentUserRequest )" in described
    called = subprocess.run(
        [
            GRPCURL,
            "-plaintext",
            "-H",
            f"authorization: Bearer {api_key}",
            address,
            "monitors.v1.AccountService/GetCurrentUser",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert json.loads(called)["user"]["email"] == "alice@example.com"


def test_grpcurl_without_a_token_is_unauthenticated(stack: Stack) -> None:
    result = subprocess.run(
        [GRPCURL, "-plaintext", stack.address("monitor"), "monitors.v1.AccountService/GetCurrentUser"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "Unauthenticated" in result.stderr


def test_current_user_with_an_api_key(channel: grpc.Channel, api_key: str) -> None:
    stub = account_service_pb2_grpc.AccountServiceStub(channel)
    reply = stub.GetCurrentUser(account_service_pb2.GetCurrentUserRequest(), metadata=auth(api_key), timeout=5)
    assert reply.user.email == "alice@example.com"
    assert reply.user.id.startswith("usr_")
    assert reply.user.HasField("create_time")


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((), "missing"),
        ((("authorization", "Basic dXNlcjpwYXNz"),), "Bearer"),
        ((("authorization", "Bearer mk_wrong"),), "unknown"),
        ((("authorization", "Bearer "),), "Bearer"),
    ],
)
def test_calls_without_a_valid_token_are_unauthenticated(
    channel: grpc.Channel, metadata: tuple[tuple[str, str], ...], message: str
) -> None:
    stub = account_service_pb2_grpc.AccountServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetCurrentUser(account_service_pb2.GetCurrentUserRequest(), metadata=metadata, timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert message in (caught.value.details() or "")


def test_malformed_request_is_invalid_argument_naming_the_field(channel: grpc.Channel, api_key: str) -> None:
    stub = account_service_pb2_grpc.AccountServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListApiKeys(account_service_pb2.ListApiKeysRequest(page_size=-1), metadata=auth(api_key), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad_request, error_info = rich_details(caught.value)
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["page_size"]
    assert isinstance(error_info, error_details_pb2.ErrorInfo)
    assert (error_info.reason, error_info.domain) == ("INVALID_ARGUMENT", "monitors.v1")


def test_another_users_api_key_is_not_found(stack: Stack, channel: grpc.Channel, api_key: str) -> None:
    bob = stack.create_api_key("bob@example.com")
    stub = account_service_pb2_grpc.AccountServiceStub(channel)
    alice_keys = stub.ListApiKeys(account_service_pb2.ListApiKeysRequest(), metadata=auth(api_key), timeout=5)
    with pytest.raises(grpc.RpcError) as caught:
        stub.DeleteApiKey(
            account_service_pb2.DeleteApiKeyRequest(id=alice_keys.api_keys[0].id), metadata=auth(bob), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert stub.GetCurrentUser(account_service_pb2.GetCurrentUserRequest(), metadata=auth(api_key), timeout=5)


def test_api_key_lifecycle_over_grpc(channel: grpc.Channel, api_key: str) -> None:
    stub = account_service_pb2_grpc.AccountServiceStub(channel)
    created = stub.CreateApiKey(
        account_service_pb2.CreateApiKeyRequest(display_name="deploy bot"), metadata=auth(api_key), timeout=5
    )
    assert created.key.startswith(created.api_key.prefix)
    new_key = created.key
    assert stub.GetCurrentUser(account_service_pb2.GetCurrentUserRequest(), metadata=auth(new_key), timeout=5)
    listed = stub.ListApiKeys(account_service_pb2.ListApiKeysRequest(), metadata=auth(api_key), timeout=5)
    assert "deploy bot" in [k.display_name for k in listed.api_keys]
    assert new_key not in str(listed)
    stub.DeleteApiKey(account_service_pb2.DeleteApiKeyRequest(id=created.api_key.id), metadata=auth(api_key), timeout=5)
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetCurrentUser(account_service_pb2.GetCurrentUserRequest(), metadata=auth(new_key), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_alert_service_answers_behind_auth(stack: Stack, api_key: str) -> None:
    with grpc.insecure_channel(stack.address("alert")) as channel:
        stub = alert_service_pb2_grpc.AlertServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListAlerts(alert_service_pb2.ListAlertsRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        listed = stub.ListAlerts(alert_service_pb2.ListAlertsRequest(), metadata=auth(api_key), timeout=5)
        assert list(listed.alerts) == []


@pytest.mark.parametrize(
    ("name", "call"),
    [
        (
            "alert",
            lambda ch, md: alert_service_pb2_grpc.AlertServiceStub(ch).ListAlertRules(
                alert_service_pb2.ListAlertRulesRequest(), metadata=md, timeout=5
            ),
        ),
        (
            "notify",
            lambda ch, md: notification_service_pb2_grpc.NotificationServiceStub(ch).ListChannels(
                notification_service_pb2.ListChannelsRequest(), metadata=md, timeout=5
            ),
        ),
    ],
)
def test_alert_and_notify_verify_tokens_through_the_account_service(
    stack: Stack, api_key: str, name: str, call: Callable[[grpc.Channel, tuple[tuple[str, str], ...]], object]
) -> None:
    with grpc.insecure_channel(stack.address(name)) as channel:
        for metadata in [(), auth("mk_forged")]:
            with pytest.raises(grpc.RpcError) as caught:
                call(channel, metadata)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # A valid key gets past authentication and is served.
        call(channel, auth(api_key))


def test_request_id_is_echoed_and_logged(stack: Stack, channel: grpc.Channel, api_key: str) -> None:
    stub = account_service_pb2_grpc.AccountServiceStub(channel)
    _, call = stub.GetCurrentUser.with_call(
        account_service_pb2.GetCurrentUserRequest(),
        metadata=(*auth(api_key), ("x-request-id", "test-req-42")),
        timeout=5,
    )
    assert ("x-request-id", "test-req-42") in call.trailing_metadata()
    lines = stack.services["monitor"].log_path.read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    logged = [e for e in entries if e.get("request_id") == "test-req-42"]
    assert logged, "no log line for the call"
    assert logged[0]["method"] == "/monitors.v1.AccountService/GetCurrentUser"
    assert logged[0]["code"] == "OK"
    assert logged[0]["duration_ms"] >= 0
    assert api_key not in "\n".join(lines)


def test_oversized_message_is_refused(channel: grpc.Channel, api_key: str) -> None:
    stub = account_service_pb2_grpc.AccountServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateApiKey(
            account_service_pb2.CreateApiKeyRequest(display_name="x" * (5 * 1024 * 1024)),
            metadata=auth(api_key),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
