"""Fault drill: the notification service is killed (SIGKILL) while notifications stream in, and restarted.

A sender stands in for the alert service: it sends notifications at a steady pace, each to two webhook channels
with its own idempotency key, and resends a call that failed (the service was down, or died before answering)
with the same key until it is accepted, as the alert service does. Meanwhile the service is killed with no
chance to flush anything, and started again. Then:

- every notification reached each channel: no accepted notification was lost;
- exactly once per channel: each (notification, channel) has one delivery id, so a call that was resent across
  the kill never became a second delivery;
- a delivery POSTed more than once was in flight at a kill (the receiver had it, the service had not recorded
  it); its repeats carry the same X-Monitors-Delivery id, by which a receiver drops them;
- every delivery ends DELIVERED in ListDeliveries.

The short form (in ``make test``) kills once on the embedded stack; ``make drills`` (MONITORS_DRILL=full) runs
the full form: more notifications, three kills, embedded and production (MariaDB).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest

from harness.external import MariaDBServer
from harness.receivers import ProviderReceivers
from harness.rpc import auth
from harness.services import Stack, role_tokens_env
from monitors.v1 import account_service_pb2, account_service_pb2_grpc, notification_service_pb2_grpc
from monitors.v1 import notification_service_pb2 as pb
from service_runtime.secretbox import new_master_key

FULL = os.environ.get("MONITORS_DRILL") == "full"
NOTIFICATIONS = 150 if FULL else 40
KILLS = 3 if FULL else 1
PACE_S = 0.05  # twenty notifications a second
DOWN_S = 1.0  # how long the service stays dead before it is started again
SEND_TIMEOUT_S = 2.0
NOTIFY_TIMEOUT_S = 2  # the service's per-send timeout; a leased delivery is retried this + 5 s after a kill
CHANNELS = ("hook-a", "hook-b")
TOKENS = role_tokens_env("kill-drill")


@pytest.fixture(scope="module")
def receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderReceivers]:
    with ProviderReceivers(tmp_path_factory.mktemp("drill-receivers")) as found:
        yield found


@pytest.fixture(params=["embedded", "production"] if FULL else ["embedded"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, receivers: ProviderReceivers
) -> Iterator[Stack]:
    env = {
        "MONITORS_EGRESS": "private-allowed",
        "MONITORS_CA_FILE": str(receivers.ca_file),
        **TOKENS,
        "MONITORS_NOTIFY_TIMEOUT_S": str(NOTIFY_TIMEOUT_S),
    }
    if request.param == "production":
        mariadb: MariaDBServer = request.getfixturevalue("mariadb")
        env |= {"MONITORS_DATABASE_URL": mariadb.create_database("drill_kill"), "MONITORS_MASTER_KEY": new_master_key()}
    with Stack(tmp_path_factory.mktemp(f"drill-{request.param}"), env) as found:
        yield found


@dataclass
class SteadySender:
    """Sends NOTIFICATIONS at PACE_S apart; each call is resent with its key until the service accepts it."""

    address: str
    owner_id: str
    channel_ids: list[str]
    prefix: str
    accepted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    resent: int = 0

    def run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = notification_service_pb2_grpc.NotificationServiceStub(channel)
            for number in range(NOTIFICATIONS):
                alert_id = f"alr_{self.prefix}_{number:04d}"
                request = pb.SendNotificationRequest(
                    idempotency_key=f"{alert_id}-firing",
                    owner_id=self.owner_id,
                    channel_ids=self.channel_ids,
                    notification=pb.Notification(
                        kind=pb.NOTIFICATION_KIND_ALERT_FIRING, alert_id=alert_id, summary="down"
                    ),
                )
                deadline = time.monotonic() + 60
                while True:
                    try:
                        stub.SendNotification(
                            request,
                            metadata=auth(TOKENS["MONITORS_ALERT_SERVICE_TOKEN"]),
                            timeout=SEND_TIMEOUT_S,
                            wait_for_ready=True,
                        )
                        break
                    except grpc.RpcError as error:
                        if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                            self.refused.append(f"{alert_id}: {error.code()} {error.details()}")
                            return
                        if time.monotonic() > deadline:
                            self.refused.append(f"{alert_id}: not accepted within 60 s")
                            return
                        self.resent += 1
                        time.sleep(0.1)
                self.accepted.append(alert_id)
                time.sleep(PACE_S)


def posts(receivers: ProviderReceivers, name: str) -> list[tuple[str, str, float]]:
    """(alert id, delivery id, arrival) of every POST the channel's receiver had."""
    found = []
    for received in receivers.received(f"/webhook/{name}"):
        body = received.json
        found.append((str(body.get("alert_id", "")), received.headers.get("x-monitors-delivery", ""), received.time))
    return found


def test_notifications_reach_each_channel_once_across_kills(stack: Stack, receivers: ProviderReceivers) -> None:
    user = auth(stack.create_api_key(f"drill.{stack.data_dir.name}@example.com"))
    with grpc.insecure_channel(stack.address("monitor")) as channel:
        accounts = account_service_pb2_grpc.AccountServiceStub(channel)
        owner = accounts.GetCurrentUser(account_service_pb2.GetCurrentUserRequest(), metadata=user, timeout=5).user.id
    names = [f"{stack.data_dir.name}-{channel}" for channel in CHANNELS]
    with grpc.insecure_channel(stack.address("notify")) as channel:
        stub = notification_service_pb2_grpc.NotificationServiceStub(channel)
        channel_ids = [
            stub.CreateChannel(
                pb.CreateChannelRequest(
                    channel=pb.Channel(display_name=name, webhook=pb.WebhookConfig(url=receivers.url("webhook", name)))
                ),
                metadata=user,
                timeout=5,
            ).channel.id
            for name in names
        ]

    sender = SteadySender(stack.address("notify"), owner, channel_ids, stack.data_dir.name.replace("-", "_"))
    thread = threading.Thread(target=sender.run, daemon=True)
    thread.start()
    notify = stack.services["notify"]
    kills: list[float] = []
    for kill in range(1, KILLS + 1):
        # Kill once a share of the stream has arrived, while the sender keeps sending.
        receivers.wait_for(f"/webhook/{names[0]}", kill * NOTIFICATIONS // (KILLS + 2), timeout_s=60)
        assert notify.process is not None
        notify.process.kill()
        kills.append(time.monotonic())
        notify.process.wait(timeout=10)
        time.sleep(DOWN_S)
        notify.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "the sender did not finish"
    assert not sender.refused, sender.refused
    assert len(sender.accepted) == NOTIFICATIONS
    assert sender.resent > 0, "no call met the dead service; the kill tested nothing"

    expected = set(sender.accepted)
    deadline = time.monotonic() + 60
    for name in names:
        while {alert for alert, _, _ in posts(receivers, name)} != expected:
            missing = expected - {alert for alert, _, _ in posts(receivers, name)}
            assert time.monotonic() < deadline, f"{name}: {len(missing)} never arrived, e.g. {sorted(missing)[:5]}"
            time.sleep(0.1)

    for name in names:
        arrived = posts(receivers, name)
        delivery_ids: dict[str, set[str]] = defaultdict(set)
        for alert, delivery, _ in arrived:
            assert delivery, f"{name}: a POST without X-Monitors-Delivery"
            delivery_ids[alert].add(delivery)
        twice = {alert: ids for alert, ids in delivery_ids.items() if len(ids) != 1}
        assert not twice, f"{name}: notifications delivered as more than one delivery: {twice}"
        repeats = Counter(delivery for _, delivery, _ in arrived)
        first_seen: dict[str, float] = {}
        for _, delivery, moment in arrived:
            first_seen.setdefault(delivery, moment)
        for delivery, count in repeats.items():
            if count > 1:
                # At least once for a send the kill interrupted: its first POST came just before a kill.
                in_flight = any(kill - (NOTIFY_TIMEOUT_S + 1) <= first_seen[delivery] <= kill for kill in kills)
                assert in_flight, f"{name}: {delivery} POSTed {count} times though no kill interrupted it"

    with grpc.insecure_channel(stack.address("notify")) as channel:
        stub = notification_service_pb2_grpc.NotificationServiceStub(channel)
        for channel_id in channel_ids:
            while True:
                states: list[pb.DeliveryState.ValueType] = []
                token = ""
                while True:
                    page = stub.ListDeliveries(
                        pb.ListDeliveriesRequest(channel_id=channel_id, page_size=100, page_token=token),
                        metadata=user,
                        timeout=5,
                    )
                    states += [d.state for d in page.deliveries]
                    token = page.next_page_token
                    if not token:
                        break
                if states == [pb.DELIVERY_STATE_DELIVERED] * NOTIFICATIONS:
                    break
                assert time.monotonic() < deadline, Counter(pb.DeliveryState.Name(s) for s in states)
                time.sleep(0.2)
