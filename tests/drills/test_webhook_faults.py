"""Fault drill: webhook receivers that answer 500, 429 with Retry-After, or hang.

The spec is services/notify_svc/delivery.py: a retryable failure (5xx, 429, no answer within the send timeout)
is tried again after base * 2^(n-1) seconds (base 2) times a random factor in [0.5, 1], never sooner than
the provider's Retry-After; a 429 also pauses the channel's lane for Retry-After. The worker looks for due
deliveries every second, so a retry comes at most about a second after it is due.

Then the noisy neighbour: one tenant's many channels all hang (their receiver never answers), while another
tenant's notifications go to a healthy receiver elsewhere. Each of the healthy tenant's notifications must
reach its receiver within a bound far below the send timeout: nothing the hanging tenant holds (lanes,
connections, the dispatch round) may be waited for by others.

The short form (``make test``) hangs 50 channels of each of 5 tenants with 2 notifications each (at least 250
sends hanging at once, more than the HTTP client's 200 connections); ``make drills`` (MONITORS_DRILL=full)
hangs 50 channels of each of 8 tenants with 10 notifications each.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from harness.http import HttpServer, Reply
from harness.receivers import ProviderReceivers
from harness.rpc import auth
from harness.services import Stack, role_tokens_env
from monitors.v1 import account_service_pb2, account_service_pb2_grpc, notification_service_pb2_grpc
from monitors.v1 import notification_service_pb2 as pb

FULL = os.environ.get("MONITORS_DRILL") == "full"
pytestmark = pytest.mark.timeout(900 if FULL else 240)  # the full form runs for minutes
TOKENS = role_tokens_env("webhook-drill")
SEND_TIMEOUT_S = 2  # the service's per-attempt timeout (MONITORS_NOTIFY_TIMEOUT_S) in the retry test
HANG_TIMEOUT_S = 20  # and in the neighbour test: a send to a hanging receiver holds its connection this long
POLL_SLACK_S = 1.5  # the worker's one-second poll, plus a busy machine's scheduling
HANGING_TENANTS = 8 if FULL else 5
HANGING_CHANNELS = 50  # per hanging tenant (the channel quota is 50)
HANGING_NOTIFICATIONS = 10 if FULL else 2  # each to every hanging channel (a webhook lane sends up to 8 at once)
HEALTHY_NOTIFICATIONS = 40 if FULL else 15
HEALTHY_LATENCY_BOUND_S = 2.5  # an eighth of what waiting behind a hanging send would cost


@pytest.fixture(scope="module")
def receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProviderReceivers, ProviderReceivers]]:
    """Two receivers on two origins, as two tenants' endpoints would be: the faulty one and the healthy one."""
    with (
        ProviderReceivers(tmp_path_factory.mktemp("faulty-receiver")) as faulty,
        ProviderReceivers(tmp_path_factory.mktemp("healthy-receiver")) as healthy,
    ):
        yield faulty, healthy


def ca_bundle(directory: Path, *receivers: ProviderReceivers) -> str:
    bundle = directory / "ca-bundle.pem"
    bundle.write_bytes(b"".join(r.ca_file.read_bytes() for r in receivers))
    return str(bundle)


def start_stack(directory: Path, receivers: tuple[ProviderReceivers, ...], timeout_s: float) -> Stack:
    env = {
        "MONITORS_EGRESS": "private-allowed",
        "MONITORS_CA_FILE": ca_bundle(directory, *receivers),
        **TOKENS,
        "MONITORS_NOTIFY_TIMEOUT_S": str(timeout_s),
        "MONITORS_MAX_STREAMS_PER_USER": "10",
    }
    return Stack(directory / "stack", env).start()


class Tenant:
    """One user of the stack: their id, key and webhook channels."""

    def __init__(self, stack: Stack, email: str) -> None:
        self.key = auth(stack.create_api_key(email))
        self._channel = grpc.insecure_channel(stack.address("notify"))
        self.notify = notification_service_pb2_grpc.NotificationServiceStub(self._channel)
        with grpc.insecure_channel(stack.address("monitor")) as channel:
            accounts = account_service_pb2_grpc.AccountServiceStub(channel)
            reply = accounts.GetCurrentUser(account_service_pb2.GetCurrentUserRequest(), metadata=self.key, timeout=10)
        self.id = reply.user.id

    def webhook(self, receivers: ProviderReceivers, name: str) -> str:
        channel = pb.Channel(display_name=name, webhook=pb.WebhookConfig(url=receivers.url("webhook", name)))
        reply = self.notify.CreateChannel(pb.CreateChannelRequest(channel=channel), metadata=self.key, timeout=10)
        return str(reply.channel.id)

    def webhook_at(self, url: str, name: str) -> str:
        channel = pb.Channel(display_name=name, webhook=pb.WebhookConfig(url=url))
        reply = self.notify.CreateChannel(pb.CreateChannelRequest(channel=channel), metadata=self.key, timeout=10)
        return str(reply.channel.id)

    def send(self, key: str, channel_ids: list[str]) -> None:
        request = pb.SendNotificationRequest(
            idempotency_key=key,
            owner_id=self.id,
            channel_ids=channel_ids,
            notification=pb.Notification(kind=pb.NOTIFICATION_KIND_ALERT_FIRING, alert_id=key, summary="down"),
        )
        self.notify.SendNotification(request, metadata=auth(TOKENS["MONITORS_ALERT_SERVICE_TOKEN"]), timeout=10)

    def deliveries(self, channel_id: str) -> list[pb.Delivery]:
        reply = self.notify.ListDeliveries(
            pb.ListDeliveriesRequest(channel_id=channel_id, page_size=100), metadata=self.key, timeout=10
        )
        return list(reply.deliveries)

    def close(self) -> None:
        self._channel.close()


def arrivals(receivers: ProviderReceivers, name: str) -> list[float]:
    return [r.time for r in receivers.received(f"/webhook/{name}")]


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 2) for a, b in itertools.pairwise(times)]


def test_failed_webhook_sends_are_retried_with_backoff_and_never_before_retry_after(
    tmp_path: Path, receivers: tuple[ProviderReceivers, ProviderReceivers]
) -> None:
    faulty, _ = receivers
    stack = start_stack(tmp_path, receivers, SEND_TIMEOUT_S)
    try:
        tenant = Tenant(stack, "retries@example.com")
        names = {kind: f"{tmp_path.name}-{kind}" for kind in ("e500", "e429", "hang")}
        ids = {kind: tenant.webhook(faulty, name) for kind, name in names.items()}
        faulty.script(f"/webhook/{names['e500']}", Reply(500, b"oops"), Reply(503, b"busy"))
        faulty.script(f"/webhook/{names['e429']}", Reply(429, b"slow down", {"retry-after": "4"}))
        released = faulty.hold(f"/webhook/{names['hang']}")

        for kind, channel_id in ids.items():
            tenant.send(f"retry-{kind}", [channel_id])
        # A second notification to the 429 channel a second after the first: the lane is paused, so it waits too.
        first_429 = faulty.wait_for(f"/webhook/{names['e429']}", 1)[0].time
        time.sleep(max(0.0, first_429 + 1 - time.monotonic()))
        tenant.send("retry-e429-second", [ids["e429"]])
        # The hanging receiver answers nothing to its first two attempts, then everything.
        second = faulty.wait_for(f"/webhook/{names['hang']}", 2, timeout_s=30)[1].time
        time.sleep(max(0.0, second + SEND_TIMEOUT_S + 0.5 - time.monotonic()))  # given up by then
        released.set()

        faulty.wait_for(f"/webhook/{names['e500']}", 3, timeout_s=30)
        faulty.wait_for(f"/webhook/{names['e429']}", 3, timeout_s=30)
        faulty.wait_for(f"/webhook/{names['hang']}", 3, timeout_s=30)
        time.sleep(1.0)  # a wrong extra attempt would come within this

        e500 = arrivals(faulty, names["e500"])
        assert len(e500) == 3, gaps(e500)
        # Attempt 1 failed: wait 2 s x [0.5, 1]; attempt 2 failed: 4 s x [0.5, 1].
        assert 1.0 <= e500[1] - e500[0] <= 2.0 + POLL_SLACK_S, gaps(e500)
        assert 2.0 <= e500[2] - e500[1] <= 4.0 + POLL_SLACK_S, gaps(e500)

        e429 = faulty.received(f"/webhook/{names['e429']}")
        assert len(e429) == 3, [(r.json["alert_id"], round(r.time - e429[0].time, 2)) for r in e429]
        by_alert: dict[str, list[float]] = {r.json["alert_id"]: [] for r in e429}
        for r in e429:
            by_alert[r.json["alert_id"]].append(r.time - first_429)
        # The retry waits the Retry-After (4 s, more than the 1-2 s backoff); the second notification, queued
        # while the lane was paused, goes no sooner either.
        assert 4.0 <= by_alert["retry-e429"][1] <= 4.0 + POLL_SLACK_S, by_alert
        assert len(by_alert["retry-e429-second"]) == 1, by_alert
        assert by_alert["retry-e429-second"][0] >= 4.0, by_alert

        hang = arrivals(faulty, names["hang"])
        assert len(hang) == 3, gaps(hang)
        # Each hanging attempt is given up at the send timeout; the retry follows after the backoff.
        assert SEND_TIMEOUT_S + 1.0 <= hang[1] - hang[0] <= SEND_TIMEOUT_S + 2.0 + POLL_SLACK_S, gaps(hang)
        assert SEND_TIMEOUT_S + 2.0 <= hang[2] - hang[1] <= SEND_TIMEOUT_S + 4.0 + POLL_SLACK_S, gaps(hang)

        expected_attempts = {
            "e500": [(pb.DELIVERY_OUTCOME_RETRYABLE_FAILURE, 500), (pb.DELIVERY_OUTCOME_RETRYABLE_FAILURE, 503)],
            "e429": [(pb.DELIVERY_OUTCOME_RETRYABLE_FAILURE, 429)],
            "hang": [(pb.DELIVERY_OUTCOME_RETRYABLE_FAILURE, 0)] * 2,
        }
        for kind, failures in expected_attempts.items():
            (delivery,) = [d for d in tenant.deliveries(ids[kind]) if d.idempotency_key == f"retry-{kind}"]
            attempts = sorted(delivery.attempts, key=lambda a: a.attempt_time.ToDatetime())
            assert delivery.state == pb.DELIVERY_STATE_DELIVERED, (kind, delivery)
            assert [(a.outcome, a.response_code) for a in attempts] == [
                *failures,
                (pb.DELIVERY_OUTCOME_SUCCESS, 200),
            ], (kind, attempts)
        print(
            f"\nretry gaps (s): 500/503 {gaps(e500)}; 429 Retry-After 4 -> {round(by_alert['retry-e429'][1], 2)}"
            f" (second notification {round(by_alert['retry-e429-second'][0], 2)}); hang {gaps(hang)}"
        )
        tenant.close()
    finally:
        stack.stop()


class HangingReceiver:
    """A plain-HTTP server (loopback, allowed under MONITORS_EGRESS=private-allowed) whose every route reads the
    request and then answers nothing until :meth:`release`: a receiver that hangs. Counts the requests it had."""

    def __init__(self) -> None:
        self.server = HttpServer()
        self.begun = 0
        self._released = threading.Event()
        self._lock = threading.Lock()

    def url(self, name: str) -> str:
        path = f"/hang/{name}"
        self.server.routes[path] = self._hang
        return self.server.url(path)

    def _hang(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        with self._lock:
            self.begun += 1
        self._released.wait(timeout=120)
        return Reply(200, b"late")

    def release(self) -> None:
        self._released.set()


def test_a_tenant_whose_webhooks_hang_does_not_delay_another_tenants_notifications(
    tmp_path: Path, receivers: tuple[ProviderReceivers, ProviderReceivers]
) -> None:
    _, healthy = receivers
    stack = start_stack(tmp_path, receivers, HANG_TIMEOUT_S)
    hanging = HangingReceiver()
    try:
        hanging.server.__enter__()
        hanging_channels: list[tuple[Tenant, list[str]]] = []
        for number in range(HANGING_TENANTS):
            tenant = Tenant(stack, f"hangs-{number}@example.com")
            urls = [hanging.url(f"t{number}-{n}") for n in range(HANGING_CHANNELS)]
            hanging_channels.append((tenant, [tenant.webhook_at(url, f"hang-{n}") for n, url in enumerate(urls)]))
        neighbour = Tenant(stack, "neighbour@example.com")
        healthy_name = f"{tmp_path.name}-healthy"
        healthy_id = neighbour.webhook(healthy, healthy_name)

        for tenant, channel_ids in hanging_channels:
            for n in range(HANGING_NOTIFICATIONS):
                tenant.send(f"hang-{tenant.id}-{n}", channel_ids)
        hanging_total = HANGING_TENANTS * HANGING_CHANNELS * HANGING_NOTIFICATIONS
        # Wait until the hanging sends hold what they can: the HTTP client's 200 connections, or every send
        # the service lets one tenant have at once (then they stay at that).
        deadline = time.monotonic() + HANG_TIMEOUT_S / 2
        seen, steady_since = -1, time.monotonic()
        while hanging.begun < 200 and time.monotonic() < deadline and time.monotonic() - steady_since < 2:
            if hanging.begun != seen:
                seen, steady_since = hanging.begun, time.monotonic()
            time.sleep(0.1)
        begun_before = hanging.begun
        assert begun_before >= HANGING_TENANTS * 8, f"only {begun_before} hanging sends began"

        latencies: list[float] = []
        for n in range(HEALTHY_NOTIFICATIONS):
            key = f"healthy-{n}"
            sent = time.monotonic()
            neighbour.send(key, [healthy_id])
            deadline = sent + HANG_TIMEOUT_S * 3
            while not any(r.json["alert_id"] == key for r in healthy.received(f"/webhook/{healthy_name}")):
                assert time.monotonic() < deadline, f"{key} did not arrive within {HANG_TIMEOUT_S * 3}s"
                time.sleep(0.01)
            arrived = next(r.time for r in healthy.received(f"/webhook/{healthy_name}") if r.json["alert_id"] == key)
            latencies.append(arrived - sent)
            time.sleep(0.2)
        print(
            f"\nneighbour latency (s): max {max(latencies):.3f}, median {sorted(latencies)[len(latencies) // 2]:.3f}"
            f" over {len(latencies)} notifications; hanging sends begun {begun_before} before the first,"
            f" {hanging.begun} by the last, of {hanging_total} queued"
        )
        assert max(latencies) <= HEALTHY_LATENCY_BOUND_S, [round(x, 2) for x in latencies]
        for tenant, _ in hanging_channels:
            tenant.close()
        neighbour.close()
    finally:
        hanging.release()
        stack.stop()
        hanging.server.__exit__(None, None, None)
