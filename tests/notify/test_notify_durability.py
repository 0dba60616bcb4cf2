"""A kill -9 of the notification service between accepting notifications and sending them loses none: after a
restart every accepted notification arrives, on SQLite and on MariaDB.

A loopback receiver stands in for a Slack incoming webhook; Slack's pace (one message a second per webhook)
keeps most of the accepted notifications waiting in the queue when the process is killed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import grpc
import pytest

from harness.external import MariaDBServer
from harness.receivers import ProviderReceivers
from harness.rpc import auth
from harness.services import Stack, role_tokens_env
from monitors.v1 import account_service_pb2, account_service_pb2_grpc, notification_service_pb2_grpc
from monitors.v1 import notification_service_pb2 as pb
from service_runtime.secretbox import new_master_key

ALERTS = [f"alr_kill_{index}" for index in range(5)]


@pytest.fixture(scope="module")
def receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderReceivers]:
    with ProviderReceivers(tmp_path_factory.mktemp("receivers")) as found:
        yield found


@pytest.fixture(params=["embedded", "production"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, receivers: ProviderReceivers
) -> Iterator[Stack]:
    env = {
        "MONITORS_EGRESS": "private-allowed",
        "MONITORS_CA_FILE": str(receivers.ca_file),
        **role_tokens_env("durability"),
        "MONITORS_NOTIFY_TIMEOUT_S": "2",
    }
    if request.param == "production":
        mariadb: MariaDBServer = request.getfixturevalue("mariadb")
        env |= {
            "MONITORS_DATABASE_URL": mariadb.create_database("notify_kill"),
            "MONITORS_MASTER_KEY": new_master_key(),
        }
    with Stack(tmp_path_factory.mktemp(f"kill-{request.param}"), env) as found:
        yield found


def alert_ids(receivers: ProviderReceivers, path: str) -> set[str]:
    return {match for r in receivers.received(path) for match in re.findall(r"alr_kill_\d", r.body.decode())}


def test_a_killed_service_sends_every_accepted_notification_after_restart(
    stack: Stack, receivers: ProviderReceivers
) -> None:
    user = auth(stack.create_api_key("kill.nine@example.com"))
    with grpc.insecure_channel(stack.address("monitor")) as channel:
        accounts = account_service_pb2_grpc.AccountServiceStub(channel)
        owner = accounts.GetCurrentUser(account_service_pb2.GetCurrentUserRequest(), metadata=user, timeout=5).user.id
    path = f"/slack/kill-{stack.data_dir.name}"
    url = receivers.url("slack", path.rsplit("/", 1)[1])
    with grpc.insecure_channel(stack.address("notify")) as channel:
        stub = notification_service_pb2_grpc.NotificationServiceStub(channel)
        slack = stub.CreateChannel(
            pb.CreateChannelRequest(channel=pb.Channel(slack=pb.SlackConfig(webhook_url=url))), metadata=user, timeout=5
        ).channel
        for alert in ALERTS:
            stub.SendNotification(
                pb.SendNotificationRequest(
                    idempotency_key=f"{alert}-firing",
                    owner_id=owner,
                    channel_ids=[slack.id],
                    notification=pb.Notification(
                        kind=pb.NOTIFICATION_KIND_ALERT_FIRING, alert_id=alert, summary="down"
                    ),
                ),
                metadata=auth(stack.role_token("alert")),
                timeout=5,
            )

    receivers.wait_for(path, 1)
    notify = stack.services["notify"]
    assert notify.process is not None
    notify.process.kill()  # SIGKILL: no graceful stop, no chance to flush anything
    notify.process.wait(timeout=10)
    assert len(alert_ids(receivers, path)) < len(ALERTS), "everything was sent before the kill; nothing was tested"

    notify.start()
    deadline = time.monotonic() + 40
    while alert_ids(receivers, path) != set(ALERTS):
        assert time.monotonic() < deadline, f"after restart only {sorted(alert_ids(receivers, path))} arrived"
        time.sleep(0.1)
    with grpc.insecure_channel(stack.address("notify")) as channel:
        stub = notification_service_pb2_grpc.NotificationServiceStub(channel)
        while True:
            deliveries = stub.ListDeliveries(pb.ListDeliveriesRequest(channel_id=slack.id), metadata=user, timeout=5)
            states = [d.state for d in deliveries.deliveries]
            if states == [pb.DELIVERY_STATE_DELIVERED] * len(ALERTS):
                break
            # The one in flight at the kill is sent again once its lease ends (at least once).
            assert time.monotonic() < deadline, states
            time.sleep(0.2)
