"""Webhooks to a receiver on this machine or the LAN, as ``make run`` users have them.

Under ``MONITORS_EGRESS=private-allowed`` a webhook may be plain http:// when its host is on the loopback or a
LAN, and the request goes to the address that was checked; never under ``public``, and never to the internet.
The signing secret the service generates is shown once, in the response that created it, and masked after;
a receiver verifies the signature with it exactly as the README says (HMAC-SHA256 of ``<timestamp>.<body>``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2

from harness.http import HttpServer, Reply
from harness.rpc import auth, rich_details
from harness.services import Stack
from monitors.v1 import notification_service_pb2 as pb
from monitors.v1 import notification_service_pb2_grpc
from service_runtime.egress import EgressConfig, EgressPolicy
from service_runtime.errors import InvalidArgument
from services.notify_svc.domain import (
    ChannelDraft,
    Notification,
    NotificationKind,
    Outcome,
    Severity,
    WebhookConfig,
    validate_channel,
)
from services.notify_svc.notifications import CHANNEL_CHECKS
from services.notify_svc.senders.base import sender_client
from services.notify_svc.senders.webhook import WebhookSender
from services.notify_svc.templates import render

Stub = notification_service_pb2_grpc.NotificationServiceStub
# A globally reachable address (example.com's): never dialled, the request is refused before.
PUBLIC_ADDRESS = "93.184.215.14"


class Receiver(HttpServer):
    """A plain http receiver on 127.0.0.1 that keeps the bodies it was posted."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []
        self.routes["/hook"] = self.take

    def take(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        self.bodies.append(body)
        return Reply(204, b"")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    with server:
        yield server


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("webhook-local"), {"MONITORS_EGRESS": "private-allowed"})
    del stack.services["alert"]  # channels need only the account and notification services
    with stack:
        yield stack


@pytest.fixture(scope="module")
def stub(local_stack: Stack) -> Iterator[Stub]:
    with grpc.insecure_channel(local_stack.address("notify")) as channel:
        yield Stub(channel)


def field_violations(error: grpc.RpcError) -> dict[str, str]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    bad = next(d for d in rich_details(error) if isinstance(d, error_details_pb2.BadRequest))
    return {v.field: v.description for v in bad.field_violations}


def verify(secret: str, headers: dict[str, str], body: bytes, now: float) -> bool:
    """What the README tells a receiver to do, written from it rather than from our sender."""
    timestamp = headers["x-monitors-timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["x-monitors-signature"]) and abs(now - int(timestamp)) <= 300


def test_a_plain_http_webhook_to_this_machine_is_delivered_signed_with_the_secret_shown_once(
    local_stack: Stack, stub: Stub, receiver: Receiver
) -> None:
    who = auth(local_stack.create_api_key("first.hour@example.com"))
    created = stub.CreateChannel(
        pb.CreateChannelRequest(channel=pb.Channel(webhook=pb.WebhookConfig(url=receiver.url("/hook")))),
        metadata=who,
        timeout=10,
    ).channel
    secret = created.webhook.signing_secret
    assert len(secret) >= 32
    assert "*" not in secret
    read = stub.GetChannel(pb.GetChannelRequest(id=created.id), metadata=who, timeout=10).channel
    assert read.webhook.signing_secret == "****"
    listed = stub.ListChannels(pb.ListChannelsRequest(), metadata=who, timeout=10).channels
    assert [c.webhook.signing_secret for c in listed] == ["****"]

    delivery = stub.TestChannel(pb.TestChannelRequest(id=created.id), metadata=who, timeout=20).delivery
    assert delivery.state == pb.DELIVERY_STATE_DELIVERED, delivery
    [(method, _, headers)] = [r for r in receiver.requests if r[1] == "/hook"]
    assert (method, headers["host"]) == ("POST", f"127.0.0.1:{receiver.port}")
    body = receiver.bodies[-1]
    assert json.loads(body)["delivery_id"] == delivery.id
    assert verify(secret, headers, body, time.time())
    assert not verify("another-secret-of-enough-length", headers, body, time.time())


def test_plain_http_to_the_internet_is_refused_naming_the_url(local_stack: Stack, stub: Stub) -> None:
    who = auth(local_stack.create_api_key("first.hour@example.com"))
    url = f"http://{PUBLIC_ADDRESS}/hook"
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateChannel(
            pb.CreateChannelRequest(channel=pb.Channel(webhook=pb.WebhookConfig(url=url))), metadata=who, timeout=10
        )
    problem = field_violations(caught.value)["channel.webhook.url"]
    assert "internet" in problem
    assert "https://" in problem


def test_a_secret_given_on_create_is_not_echoed(local_stack: Stack, stub: Stub, receiver: Receiver) -> None:
    who = auth(local_stack.create_api_key("first.hour@example.com"))
    given = pb.WebhookConfig(url=receiver.url("/hook"), signing_secret="whsec-given-0123456789")
    created = stub.CreateChannel(
        pb.CreateChannelRequest(channel=pb.Channel(webhook=given)), metadata=who, timeout=10
    ).channel
    assert created.webhook.signing_secret == "****"


def firing() -> Notification:
    return Notification(NotificationKind.ALERT_FIRING, Severity.CRITICAL, summary="down")


async def test_the_public_policy_never_sends_plain_http(receiver: Receiver) -> None:
    before = len(receiver.requests)
    client = sender_client(EgressConfig(EgressPolicy.PUBLIC))
    try:
        sender = WebhookSender(client, EgressPolicy.PUBLIC)
        result = await sender.send(WebhookConfig(receiver.url("/hook"), "s" * 20), render(firing()), "d", 2.0)
    finally:
        await client.aclose()
    assert result.outcome is Outcome.PERMANENT
    assert "MONITORS_EGRESS=private-allowed" in result.detail
    assert len(receiver.requests) == before


async def test_private_allowed_sends_plain_http_to_a_local_name_but_not_to_the_internet(
    receiver: Receiver,
) -> None:
    before = len(receiver.requests)
    client = sender_client(EgressConfig(EgressPolicy.PRIVATE_ALLOWED))
    try:
        sender = WebhookSender(client, EgressPolicy.PRIVATE_ALLOWED)
        local = await sender.send(
            WebhookConfig(receiver.url("/hook", host="localhost"), "s" * 20), render(firing()), "d", 5.0
        )
        public = await sender.send(WebhookConfig(f"http://{PUBLIC_ADDRESS}/hook", "s" * 20), render(firing()), "d", 5.0)
    finally:
        await client.aclose()
    assert (local.outcome, local.response_code) == (Outcome.SUCCESS, 204)
    assert receiver.requests[before][2]["host"] == f"localhost:{receiver.port}"
    assert public.outcome is Outcome.PERMANENT
    assert "internet" in public.detail
    assert len(receiver.requests) == before + 1


def test_validation_without_private_egress_asks_for_https_and_says_when_http_goes() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_channel(ChannelDraft(config=WebhookConfig("http://127.0.0.1:9/hook")), CHANNEL_CHECKS)
    [(path, problem)] = [(v.field, v.description) for v in caught.value.violations]
    assert path == "channel.webhook.url"
    assert "https://" in problem
    assert "MONITORS_EGRESS=private-allowed" in problem
    allowed = validate_channel(
        ChannelDraft(config=WebhookConfig("http://127.0.0.1:9/hook")), CHANNEL_CHECKS, plain_http_webhook=True
    )
    assert isinstance(allowed.config, WebhookConfig)
