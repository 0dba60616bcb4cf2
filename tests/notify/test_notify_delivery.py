"""The delivery queue and worker, in process, on SQLite and on MariaDB: idempotency, secrets sealed at rest,
retries with backoff honouring Retry-After, permanent failures, per-channel pacing, disabling a channel.

Loopback receivers (harness/receivers.py) stand in for Slack, Discord and webhook endpoints.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from harness import notify
from harness.http import Reply
from harness.receivers import ProviderReceivers
from service_runtime.database import Database, utc_now
from service_runtime.egress import EgressPolicy
from service_runtime.http_client import HttpClient
from service_runtime.secretbox import SecretBoxError
from services.notify_svc.delivery import DeliveryWorker, RetryPolicy, Senders
from services.notify_svc.delivery_queue import DeliveryQueue, Enqueue, Target
from services.notify_svc.domain import (
    ChannelConfig,
    ChannelDraft,
    ChannelKind,
    Delivery,
    DeliveryState,
    DiscordConfig,
    Notification,
    NotificationKind,
    Outcome,
    Severity,
    SlackConfig,
    WebhookConfig,
    validate_channel,
)
from services.notify_svc.notifications import CHANNEL_CHECKS, Notifications
from services.notify_svc.schema import ChannelRow
from services.notify_svc.senders.discord import DiscordSender
from services.notify_svc.senders.mail import OutboxSender
from services.notify_svc.senders.pagerduty import PagerDutySender
from services.notify_svc.senders.slack import slack_sender
from services.notify_svc.senders.webhook import WebhookSender
from services.notify_svc.store import ChannelStore

# The delivery tests' fixtures (harness/notify.py): database, channel store, delivery queue, provider
# receivers, client.
channels, client, database, queue, receivers = (
    notify.channels,
    notify.client,
    notify.database,
    notify.queue,
    notify.receivers,
)

OWNER = "usr_alice"
FIRING = Notification(NotificationKind.ALERT_FIRING, Severity.CRITICAL, alert_id="alr_1", summary="down", value=1.0)
FAST = RetryPolicy(max_attempts=4, base_s=0.2, cap_s=1.0)
_names = iter(range(1_000_000))


def make_worker(
    channels: ChannelStore, queue: DeliveryQueue, client: HttpClient, receivers: ProviderReceivers, tmp: Path
) -> DeliveryWorker:
    senders = Senders(
        {
            ChannelKind.SLACK: slack_sender(client),
            ChannelKind.DISCORD: DiscordSender(client),
            ChannelKind.WEBHOOK: WebhookSender(client),
            ChannelKind.PAGERDUTY: PagerDutySender(client, receivers.url("pagerduty")),
            ChannelKind.EMAIL: OutboxSender(tmp / "outbox.txt", "monitors@example.com"),
        }
    )
    return DeliveryWorker(channels, queue, senders, timeout_s=2.0, policy=FAST, poll_interval_s=0.05)


@pytest.fixture
async def worker(
    channels: ChannelStore,
    queue: DeliveryQueue,
    client: HttpClient,
    receivers: ProviderReceivers,
    tmp_path: Path,
) -> AsyncIterator[DeliveryWorker]:
    found = make_worker(channels, queue, client, receivers, tmp_path)
    task = asyncio.create_task(found.run())
    yield found
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def unique(kind: str) -> str:
    return f"{kind}-{next(_names)}-{os.getpid()}"


async def channel_for(channels: ChannelStore, config: ChannelConfig, owner: str = OWNER, default: bool = False) -> str:
    draft = validate_channel(ChannelDraft(config=config, is_default=default), CHANNEL_CHECKS)
    return (await channels.create_channel(owner, draft)).id


async def settled(queue: DeliveryQueue, delivery_id: str, timeout_s: float = 15.0, owner: str = OWNER) -> Delivery:
    deadline = time.monotonic() + timeout_s
    while True:
        delivery = await queue.get_delivery(owner, delivery_id)
        if delivery.state in (DeliveryState.DELIVERED, DeliveryState.FAILED, DeliveryState.SUPPRESSED):
            return delivery
        assert time.monotonic() < deadline, f"{delivery_id} still {delivery.state} after {timeout_s}s"
        await asyncio.sleep(0.05)


async def test_a_repeated_idempotency_key_queues_nothing(
    channels: ChannelStore, queue: DeliveryQueue, receivers: ProviderReceivers
) -> None:
    channel = await channel_for(channels, SlackConfig(receivers.url("slack", unique("slack"))))
    first, duplicate = await queue.enqueue("alert-1-firing", OWNER, [Target(channel)], FIRING)
    again, repeated = await queue.enqueue("alert-1-firing", OWNER, [Target(channel)], FIRING)
    assert (duplicate, repeated) == (False, True)
    assert [d.id for d in again] == [d.id for d in first]
    assert len(await queue.list_deliveries(OWNER, None, 100)) == 1


async def test_secrets_are_sealed_at_rest_and_bound_to_their_row(
    channels: ChannelStore, database: Database, receivers: ProviderReceivers
) -> None:
    url = receivers.url("slack", unique("slack"))
    channel_id = await channel_for(channels, SlackConfig(url))
    other_id = await channel_for(channels, SlackConfig(receivers.url("slack", unique("slack"))), owner="usr_bob")
    rows = await database.run(
        lambda c: list(c.execute(sa.select(ChannelRow.id, ChannelRow.config, ChannelRow.sealed_secrets)))
    )
    assert rows
    assert all(url not in row.config and url not in row.sealed_secrets for row in rows)
    assert (await channels.get_channel(OWNER, channel_id)).config == SlackConfig(url)

    # Alice's sealed URL copied onto Bob's row does not open there.
    sealed = next(row.sealed_secrets for row in rows if row.id == channel_id)
    await database.run(
        lambda c: c.execute(sa.update(ChannelRow).where(ChannelRow.id == other_id).values(sealed_secrets=sealed))
    )
    with pytest.raises(SecretBoxError):
        await channels.get_channel("usr_bob", other_id)


async def test_5xx_and_429_are_retried_with_backoff_honouring_retry_after(
    channels: ChannelStore, queue: DeliveryQueue, worker: DeliveryWorker, receivers: ProviderReceivers
) -> None:
    name = unique("webhook")
    channel = await channel_for(channels, WebhookConfig(receivers.url("webhook", name)))
    path = f"/webhook/{name}"
    receivers.script(path, Reply(503, b"busy"), Reply(429, b"slow down", {"retry-after": "1"}))
    queued, _ = await queue.enqueue(unique("key"), OWNER, [Target(channel)], FIRING)
    worker.wake()
    delivery = await settled(queue, queued[0].id)
    assert delivery.state is DeliveryState.DELIVERED
    assert [(a.outcome, a.response_code) for a in delivery.attempts] == [
        (Outcome.RETRYABLE, 503),
        (Outcome.RETRYABLE, 429),
        (Outcome.SUCCESS, 200),
    ]
    times = [r.time for r in receivers.received(path)]
    assert times[1] - times[0] >= FAST.base_s * 0.5  # backoff, jittered down to half at most
    assert times[2] - times[1] >= 0.95  # Retry-After: 1
    # Every try is the same delivery, so the receiver can drop duplicates.
    assert {r.headers["x-monitors-delivery"] for r in receivers.received(path)} == {delivery.id}


async def test_discord_retry_after_in_the_body_is_honoured(
    channels: ChannelStore, queue: DeliveryQueue, worker: DeliveryWorker, receivers: ProviderReceivers
) -> None:
    name = unique("discord")
    channel = await channel_for(channels, DiscordConfig(receivers.url("discord", name)))
    limited = {"message": "You are being rate limited.", "retry_after": 1.5, "global": False}
    receivers.script(f"/discord/{name}", Reply.json(limited, 429))
    queued, _ = await queue.enqueue(unique("key"), OWNER, [Target(channel)], FIRING)
    worker.wake()
    delivery = await settled(queue, queued[0].id)
    assert delivery.state is DeliveryState.DELIVERED
    times = [r.time for r in receivers.received(f"/discord/{name}")]
    assert times[1] - times[0] >= 1.45


async def test_other_4xx_fail_at_once_and_are_never_retried(
    channels: ChannelStore, queue: DeliveryQueue, worker: DeliveryWorker, receivers: ProviderReceivers
) -> None:
    name = unique("slack")
    channel = await channel_for(channels, SlackConfig(receivers.url("slack", name)))
    receivers.script(f"/slack/{name}", Reply(400, b"invalid_payload"))
    queued, _ = await queue.enqueue(unique("key"), OWNER, [Target(channel)], FIRING)
    worker.wake()
    delivery = await settled(queue, queued[0].id)
    assert delivery.state is DeliveryState.FAILED
    assert [(a.outcome, a.response_code, a.error) for a in delivery.attempts] == [
        (Outcome.PERMANENT, 400, "HTTP 400: invalid_payload")
    ]
    await asyncio.sleep(FAST.base_s * 2)
    assert len(receivers.received(f"/slack/{name}")) == 1


async def test_retries_stop_after_the_last_attempt(
    channels: ChannelStore, queue: DeliveryQueue, worker: DeliveryWorker, receivers: ProviderReceivers
) -> None:
    name = unique("webhook")
    channel = await channel_for(channels, WebhookConfig(receivers.url("webhook", name)))
    receivers.script(f"/webhook/{name}", *[Reply(502, b"bad gateway")] * FAST.max_attempts)
    queued, _ = await queue.enqueue(unique("key"), OWNER, [Target(channel)], FIRING)
    worker.wake()
    delivery = await settled(queue, queued[0].id)
    assert delivery.state is DeliveryState.FAILED
    assert len(delivery.attempts) == FAST.max_attempts


async def test_a_channel_answering_404_again_and_again_is_disabled_and_its_owner_told(
    channels: ChannelStore, queue: DeliveryQueue, worker: DeliveryWorker, receivers: ProviderReceivers
) -> None:
    owner = unique("usr")
    gone = unique("slack")
    channel = await channel_for(channels, SlackConfig(receivers.url("slack", gone)), owner=owner)
    told = unique("webhook")
    await channel_for(channels, WebhookConfig(receivers.url("webhook", told)), owner=owner, default=True)
    receivers.script(f"/slack/{gone}", *[Reply(404, b"no_service")] * 3)
    for _ in range(3):
        queued, _ = await queue.enqueue(unique("key"), owner, [Target(channel)], FIRING)
        worker.wake()
        assert (await settled(queue, queued[0].id, owner=owner)).state is DeliveryState.FAILED

    disabled = await channels.get_channel(owner, channel)
    assert not disabled.enabled
    assert "404" in disabled.disabled_reason
    notice = (await receivers.arrival(f"/webhook/{told}", 1))[0].json
    assert channel in notice["text"]
    assert notice["kind"] == "channel_disabled"

    # A disabled channel receives nothing more.
    queued, _ = await queue.enqueue(unique("key"), owner, [Target(channel)], FIRING)
    worker.wake()
    assert (await settled(queue, queued[0].id, owner=owner)).state is DeliveryState.SUPPRESSED
    assert len(receivers.received(f"/slack/{gone}")) == 3


async def test_one_channels_backlog_does_not_delay_another_channel(
    channels: ChannelStore, queue: DeliveryQueue, worker: DeliveryWorker, receivers: ProviderReceivers
) -> None:
    noisy, quiet = unique("slack"), unique("slack")
    noisy_id = await channel_for(channels, SlackConfig(receivers.url("slack", noisy)))
    quiet_id = await channel_for(channels, SlackConfig(receivers.url("slack", quiet)))
    for _ in range(4):
        await queue.enqueue(unique("key"), OWNER, [Target(noisy_id)], FIRING)
    await queue.enqueue(unique("key"), OWNER, [Target(quiet_id)], FIRING)
    worker.wake()
    noisy_times = [r.time for r in await receivers.arrival(f"/slack/{noisy}", 4)]
    quiet_time = receivers.received(f"/slack/{quiet}")[0].time
    # Slack's pace, one message a second per webhook, holds the noisy channel ...
    assert all(b - a >= 0.9 for a, b in itertools.pairwise(noisy_times))
    # ... and the quiet one goes out at once, before the noisy one's second message, not behind its backlog.
    assert quiet_time < noisy_times[1]


async def test_a_webhook_lane_sends_a_burst_at_once(
    channels: ChannelStore, queue: DeliveryQueue, worker: DeliveryWorker, receivers: ProviderReceivers
) -> None:
    # Webhooks have no documented limit: ten queued together arrive together (Slack's pace would take 9 s).
    name = unique("webhook")
    channel = await channel_for(channels, WebhookConfig(receivers.url("webhook", name)))
    started = time.monotonic()
    for _ in range(10):
        await queue.enqueue(unique("key"), OWNER, [Target(channel)], FIRING)
    worker.wake()
    await receivers.arrival(f"/webhook/{name}", 10)
    assert time.monotonic() - started < 5.0


async def test_a_notification_to_an_idle_webhook_lane_is_sent_leased_without_a_poll(
    channels: ChannelStore,
    queue: DeliveryQueue,
    client: HttpClient,
    receivers: ProviderReceivers,
    tmp_path: Path,
) -> None:
    # This worker never polls the queue (its run() is not started): only SendNotification's hand-over can send.
    worker = make_worker(channels, queue, client, receivers, tmp_path)
    notifications = Notifications(channels, queue, worker, EgressPolicy.PRIVATE_ALLOWED)
    name = unique("webhook")
    channel = await channel_for(channels, WebhookConfig(receivers.url("webhook", name)))
    deliveries, duplicate = await notifications.send(unique("key"), OWNER, [channel], "", FIRING)
    assert not duplicate
    # Queued already leased: another worker polling the queue now does not take it too.
    assert deliveries[0].id not in {d.id for d in await queue.due(utc_now(), 100)}
    assert (await settled(queue, deliveries[0].id)).state is DeliveryState.DELIVERED
    assert len(receivers.received(f"/webhook/{name}")) == 1


async def test_a_paced_lane_that_is_busy_takes_the_delivery_unleased(
    channels: ChannelStore,
    queue: DeliveryQueue,
    client: HttpClient,
    receivers: ProviderReceivers,
    tmp_path: Path,
) -> None:
    worker = make_worker(channels, queue, client, receivers, tmp_path)
    notifications = Notifications(channels, queue, worker, EgressPolicy.PRIVATE_ALLOWED)
    channel = await channel_for(channels, SlackConfig(receivers.url("slack", unique("slack"))))
    first, _ = await notifications.send(unique("key"), OWNER, [channel], "", FIRING)
    second, _ = await notifications.send(unique("key"), OWNER, [channel], "", FIRING)
    # Slack's lane sends one at a time, a second apart: the second waits unleased, for whichever worker is free
    # (another process's poll may take it) ...
    due = {d.id for d in await queue.due(utc_now(), 100)}
    assert first[0].id not in due
    assert second[0].id in due
    # ... and this worker, which never polls, has it in the lane already.
    assert (await settled(queue, first[0].id)).state is DeliveryState.DELIVERED
    assert (await settled(queue, second[0].id)).state is DeliveryState.DELIVERED


async def test_calls_queued_together_share_a_transaction_and_one_key_queues_once(
    channels: ChannelStore, queue: DeliveryQueue, receivers: ProviderReceivers
) -> None:
    channel = await channel_for(channels, WebhookConfig(receivers.url("webhook", unique("webhook"))))
    seen = unique("key")
    earlier, _ = await queue.enqueue(seen, OWNER, [Target(channel)], FIRING)
    fresh = unique("key")
    answers = await queue.enqueue_many(
        [
            Enqueue(fresh, OWNER, [Target(channel), Target(channel)], FIRING),
            Enqueue(seen, OWNER, [Target(channel)], FIRING),
            Enqueue(fresh, OWNER, [Target(channel)], FIRING),
        ]
    )
    assert [duplicate for _, duplicate in answers] == [False, True, True]
    assert [d.id for d in answers[1][0]] == [d.id for d in earlier]
    assert answers[2][0] == answers[0][0]
    assert [d.id for d in await queue.by_key(fresh) or []] == [d.id for d in answers[0][0]]


async def test_leasing_many_at_once_takes_only_the_free_ones(
    channels: ChannelStore, queue: DeliveryQueue, receivers: ProviderReceivers
) -> None:
    channel = await channel_for(channels, WebhookConfig(receivers.url("webhook", unique("webhook"))))
    first = (await queue.enqueue(unique("key"), OWNER, [Target(channel)], FIRING))[0][0].id
    second = (await queue.enqueue(unique("key"), OWNER, [Target(channel)], FIRING))[0][0].id
    until = utc_now() + timedelta(seconds=30)
    assert await queue.lease_many([first], until) == {first}
    assert await queue.lease_many([first, second], until + timedelta(seconds=1)) == {second}
    assert await queue.lease_many([first, second], until + timedelta(seconds=2)) == set()
