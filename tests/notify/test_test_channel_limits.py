"""TestChannel cannot be used to relay mail through the service's email account.

An email channel may name up to 20 addresses nobody has confirmed, with the user's own template, and TestChannel
sends to them at once: unlimited, 30 calls had delivered 30 messages in 8.7 s. A real embedded stack (emails go
to the outbox file in its data directory) with TestChannel's refill slowed to one every 10 minutes, so a slow
machine cannot refill the burst mid-test.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from harness.rpc import auth, rich_details
from harness.services import Stack
from monitors.v1 import notification_service_pb2 as pb
from monitors.v1 import notification_service_pb2_grpc
from services.notify_svc.notifications import TEST_CHANNEL_RATE

Stub = notification_service_pb2_grpc.NotificationServiceStub


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("test-channel"), {"MONITORS_TEST_CHANNEL_EVERY_S": "600"}) as started:
        yield started


@pytest.fixture
def stub(stack: Stack) -> Iterator[Stub]:
    with grpc.insecure_channel(stack.address("notify")) as channel:
        yield Stub(channel)


def mails_to(stack: Stack, address: str) -> int:
    outbox = stack.data_dir / "outbox.txt"
    return outbox.read_text().count(address) if outbox.exists() else 0


def email_channel(stub: Stub, who: tuple[tuple[str, str]], *addresses: str) -> str:
    channel = pb.Channel(email=pb.EmailConfig(to_addresses=list(addresses)))
    return stub.CreateChannel(pb.CreateChannelRequest(channel=channel), metadata=who, timeout=10).channel.id


def test_a_user_sends_a_bounded_number_of_test_messages_in_a_row(stack: Stack, stub: Stub) -> None:
    mallory, trent = auth(stack.create_api_key("mallory.tc@example.com")), auth(stack.create_api_key("trent@x.org"))
    relayed = email_channel(stub, mallory, "victim-1@example.net", "victim-2@example.net")
    # A channel that is not found spends nothing.
    with pytest.raises(grpc.RpcError) as missing:
        stub.TestChannel(pb.TestChannelRequest(id="chn_missing"), metadata=mallory, timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    for _ in range(TEST_CHANNEL_RATE.burst):
        tested = stub.TestChannel(pb.TestChannelRequest(id=relayed), metadata=mallory, timeout=15).delivery
        assert tested.state == pb.DELIVERY_STATE_DELIVERED
    sent = mails_to(stack, "victim-1@example.net")
    assert sent > 0

    with pytest.raises(grpc.RpcError) as caught:
        stub.TestChannel(pb.TestChannelRequest(id=relayed), metadata=mallory, timeout=15)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry in " in (caught.value.details() or "")
    [info] = [d for d in rich_details(caught.value) if hasattr(d, "metadata")]
    assert dict(info.metadata)["limit"] == "test_channel_rate"
    assert mails_to(stack, "victim-1@example.net") == sent  # nothing more went out

    # The rate is the user's: another user's test goes out meanwhile.
    own = email_channel(stub, trent, "trent@x.org")
    assert stub.TestChannel(pb.TestChannelRequest(id=own), metadata=trent, timeout=15).delivery.state == (
        pb.DELIVERY_STATE_DELIVERED
    )
