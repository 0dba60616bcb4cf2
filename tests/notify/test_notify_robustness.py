"""Hostile or odd input never wedges a delivery, leaks a secret or skips a backoff, on SQLite and on MariaDB:
titles with line separators, header values HTTP cannot carry, a channel turned into a webhook, two workers
racing for one delivery, a sender that raises.

Loopback receivers (harness/receivers.py) stand in for webhook endpoints; the outbox file for email.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from harness import notify
from harness.http import Reply
from harness.receivers import ProviderReceivers
from service_runtime.auth import Principal
from service_runtime.database import utc_now
from service_runtime.errors import InvalidArgument
from service_runtime.http_client import HttpClient
from services.notify_svc.delivery import DeliveryWorker, Lane, Pace, RetryPolicy, Senders, TokenBucket
from services.notify_svc.delivery_queue import DeliveryQueue, Target
from services.notify_svc.domain import (
    ChannelConfig,
    ChannelDraft,
    ChannelKind,
    Delivery,
    DeliveryState,
    EmailConfig,
    MessageTemplate,
    Notification,
    NotificationKind,
    Outcome,
    Severity,
    SlackConfig,
    WebhookConfig,
    validate_channel,
)
from services.notify_svc.notifications import CHANNEL_CHECKS, Notifications
from services.notify_svc.senders.base import SendResult
from services.notify_svc.senders.mail import OutboxSender
from services.notify_svc.senders.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSender, signature
from services.notify_svc.store import ChannelStore
from services.notify_svc.templates import MAX_BODY, Message, render

# The delivery tests' fixtures (harness/notify.py): database, channel store, delivery queue, provider
# receivers, client.
channels, client, database, queue, receivers = (
    notify.channels,
    notify.client,
    notify.database,
    notify.queue,
    notify.receivers,
)

ALICE = Principal("usr_alice", "alice@example.com", "alice")
FAST = RetryPolicy(max_attempts=3, base_s=0.1, cap_s=0.2)
SEPARATORS = ("\r", "\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\r\n")
TEST = Notification(NotificationKind.TEST)
_names = iter(range(1_000_000))


def unique(kind: str) -> str:
    return f"{kind}-{next(_names)}-{os.getpid()}"


async def channel_for(channels: ChannelStore, config: ChannelConfig, template: MessageTemplate | None = None) -> str:
    draft = validate_channel(ChannelDraft(config=config, template=template or MessageTemplate()), CHANNEL_CHECKS)
    return (await channels.create_channel(ALICE.user_id, draft)).id


async def settled(queue: DeliveryQueue, delivery_id: str, timeout_s: float = 15.0) -> Delivery:
    deadline = time.monotonic() + timeout_s
    while True:
        delivery = await queue.get_delivery(ALICE.user_id, delivery_id)
        if delivery.state in (DeliveryState.DELIVERED, DeliveryState.FAILED, DeliveryState.SUPPRESSED):
            return delivery
        assert time.monotonic() < deadline, f"{delivery_id} still {delivery.state} after {timeout_s}s"
        await asyncio.sleep(0.05)


@pytest.fixture
async def running(
    channels: ChannelStore, queue: DeliveryQueue, tmp_path: Path
) -> AsyncIterator[tuple[DeliveryWorker, Path]]:
    """A worker sending email to the outbox file, running."""
    outbox = tmp_path / "outbox.txt"
    worker = DeliveryWorker(
        channels,
        queue,
        Senders({ChannelKind.EMAIL: OutboxSender(outbox, "monitors@example.com")}),
        timeout_s=0.5,
        policy=FAST,
        poll_interval_s=0.05,
    )
    task = asyncio.create_task(worker.run())
    yield worker, outbox
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# --- 1. line separators in a title ---------------------------------------------------------------------


def test_a_title_is_one_line_whatever_separator_its_parts_carry() -> None:
    for separator in SEPARATORS:
        named = Notification(NotificationKind.ALERT_FIRING, monitor_name=f"web{separator}prod", summary="down")
        assert render(named).title.splitlines() == [render(named).title]
        templated = render(named, MessageTemplate(title=f"Alert{separator}{{{{ monitor_name }}}}"))
        assert templated.title.splitlines() == [templated.title]
        assert templated.title.startswith("Alert ")


async def test_an_email_whose_title_had_a_line_separator_is_delivered_once(
    channels: ChannelStore, queue: DeliveryQueue, running: tuple[DeliveryWorker, Path]
) -> None:
    worker, outbox = running
    channel = await channel_for(channels, EmailConfig(("a@example.com",)))
    named = Notification(NotificationKind.ALERT_FIRING, Severity.CRITICAL, monitor_name="web\u2028prod", summary="down")
    queued, _ = await queue.enqueue(unique("key"), ALICE.user_id, [Target(channel)], named)
    worker.wake()
    delivery = await settled(queue, queued[0].id)
    assert (delivery.state, len(delivery.attempts)) == (DeliveryState.DELIVERED, 1)
    assert "Subject: [CRITICAL] web prod: down\n" in outbox.read_text()


async def test_test_channel_with_a_separator_in_its_title_template_answers_with_the_delivery(
    channels: ChannelStore, queue: DeliveryQueue, running: tuple[DeliveryWorker, Path]
) -> None:
    worker, outbox = running
    notes = Notifications(channels, queue, worker)
    channel, _ = await notes.create_channel(
        ALICE,
        ChannelDraft(config=EmailConfig(("a@example.com",)), template=MessageTemplate(title="Alert\u2028X")),
    )
    delivery = await notes.test_channel(ALICE, channel.id)
    assert delivery.state is DeliveryState.DELIVERED
    assert "Subject: Alert X\n" in outbox.read_text()


class _Raising:
    """A sender with a bug: it raises instead of answering with a SendResult."""

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, config: ChannelConfig, message: Message, delivery_id: str, timeout_s: float) -> SendResult:
        self.calls += 1
        raise ValueError(f"bug quoting {config}")


async def test_a_sender_that_raises_fails_the_delivery_once_instead_of_retrying_it_forever(
    channels: ChannelStore, queue: DeliveryQueue, caplog: pytest.LogCaptureFixture
) -> None:
    raising = _Raising()
    worker = DeliveryWorker(
        channels, queue, Senders({ChannelKind.WEBHOOK: raising}), timeout_s=0.2, poll_interval_s=0.05
    )
    secret_header = "Bearer sk_live_0123456789"
    channel = await channel_for(
        channels, WebhookConfig("https://hooks.example.com/in", headers={"X-Key": secret_header})
    )
    queued, _ = await queue.enqueue(unique("key"), ALICE.user_id, [Target(channel)], TEST)
    task = asyncio.create_task(worker.run())
    try:
        with caplog.at_level(logging.INFO):
            delivery = await settled(queue, queued[0].id)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert delivery.state is DeliveryState.FAILED
    assert [a.outcome for a in delivery.attempts] == [Outcome.PERMANENT]
    assert delivery.attempts[0].error.startswith("internal error: ValueError")
    assert raising.calls == 1
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "sk_live_" not in logged


# --- 2. webhook header values ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["Bearer sk_\x00live", "a\x7fb", "Zürich", "a\u2028b", "a\x1cb", "a\rb", "x" * 4097])
def test_a_header_value_http_cannot_carry_is_refused_naming_the_header(value: str) -> None:
    draft = ChannelDraft(config=WebhookConfig("https://hooks.example.com/in", headers={"Authorization": value}))
    with pytest.raises(InvalidArgument) as refused:
        validate_channel(draft, CHANNEL_CHECKS)
    assert [v.field for v in refused.value.violations] == ["channel.webhook.headers['Authorization']"]


async def test_printable_header_values_are_sent_and_a_url_like_one_is_redacted_from_errors(
    channels: ChannelStore, queue: DeliveryQueue, client: HttpClient, receivers: ProviderReceivers
) -> None:
    name = unique("webhook")
    # "http://[" is no valid URL: redacting it must not raise (that once left the attempt unrecorded).
    headers = {"X-Team": "ops\tnight ~!", "X-Odd": "http://[sk_live_odd"}
    channel = await channel_for(channels, WebhookConfig(receivers.url("webhook", name), headers=headers))
    receivers.script(f"/webhook/{name}", Reply(400, b"rejected http://[sk_live_odd"))
    worker = DeliveryWorker(channels, queue, Senders({ChannelKind.WEBHOOK: WebhookSender(client)}), timeout_s=2.0)
    queued, _ = await queue.enqueue(unique("key"), ALICE.user_id, [Target(channel)], TEST)
    assert await worker.dispatch_due() == 1
    delivery = await settled(queue, queued[0].id)
    assert [(a.outcome, a.response_code, a.error) for a in delivery.attempts] == [
        (Outcome.PERMANENT, 400, "HTTP 400: rejected ****")
    ]
    (received,) = receivers.received(f"/webhook/{name}")
    assert received.headers["x-team"] == "ops\tnight ~!"


# --- 3. a channel turned into a webhook ------------------------------------------------------------------


async def test_a_channel_changed_into_a_webhook_gets_a_signing_secret(
    channels: ChannelStore, queue: DeliveryQueue, client: HttpClient, receivers: ProviderReceivers
) -> None:
    notes = Notifications(
        channels, queue, DeliveryWorker(channels, queue, Senders({ChannelKind.WEBHOOK: WebhookSender(client)}))
    )
    channel, _ = await notes.create_channel(
        ALICE, ChannelDraft(config=SlackConfig(receivers.url("slack", unique("s"))))
    )
    name = unique("webhook")
    _, shown = await notes.update_channel(
        ALICE, channel.id, ChannelDraft(config=WebhookConfig(receivers.url("webhook", name))), ["webhook"]
    )
    assert shown  # the caller is shown the new secret once
    stored = await channels.get_channel(ALICE.user_id, channel.id)
    assert isinstance(stored.config, WebhookConfig)
    assert len(stored.config.signing_secret) >= 32
    # What is sent is signed with that secret, not with an empty key.
    assert (await notes.test_channel(ALICE, channel.id)).state is DeliveryState.DELIVERED
    (received,) = receivers.received(f"/webhook/{name}")
    expected = signature(stored.config.signing_secret, received.headers[TIMESTAMP_HEADER], received.body)
    assert received.headers[SIGNATURE_HEADER] == expected
    assert received.headers[SIGNATURE_HEADER] != signature("", received.headers[TIMESTAMP_HEADER], received.body)


# --- 4. two workers, one delivery ------------------------------------------------------------------------


async def test_a_worker_holding_a_stale_read_does_not_send_before_the_retry_time(
    channels: ChannelStore, queue: DeliveryQueue, client: HttpClient, receivers: ProviderReceivers
) -> None:
    name = unique("webhook")
    channel = await channel_for(channels, WebhookConfig(receivers.url("webhook", name)))
    receivers.script(f"/webhook/{name}", Reply(429, b"slow down", {"retry-after": "600"}))
    senders = Senders({ChannelKind.WEBHOOK: WebhookSender(client)})
    first, second = (
        DeliveryWorker(channels, queue, senders, timeout_s=2.0),
        DeliveryWorker(channels, queue, senders, timeout_s=2.0),
    )
    queued, _ = await queue.enqueue(unique("key"), ALICE.user_id, [Target(channel)], TEST)
    (stale,) = await queue.due(utc_now(), 10)  # the second worker read it as due ...
    lane = Lane(Pace(0, 0, 1), TokenBucket(0, 0))
    await first._send_queued(stale, lane)  # ... the first sent it: 429, Retry-After 600 s ...
    retrying = await queue.get_delivery(ALICE.user_id, queued[0].id)
    assert retrying.state is DeliveryState.RETRYING
    assert retrying.next_attempt_time is not None
    assert retrying.next_attempt_time > utc_now() + timedelta(seconds=590)
    await second._send_queued(stale, lane)  # ... and the second's lane reaches it: not yet.
    assert len(receivers.received(f"/webhook/{name}")) == 1
    assert (await queue.get_delivery(ALICE.user_id, queued[0].id)).attempt_count == 1


# --- 5. templates that would freeze the event loop -------------------------------------------------------

EXPENSIVE = (
    "{% for i in range(2000) %}{% for j in range(2000) %}{% endfor %}{% endfor %}x",
    "{% set r = range(5000) %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}x",
    "{{ '%2000000000d' % 1 }}",
    "{{ '%*d' % (2000000000, 1) }}",
    "{{ '%(a).2000000000f' % {'a': 1} }}",
    "{{ '%2000000000d'|format(1) }}",
    "{{ '{:2000000000}'.format(1) }}",
    "{{ '{:{w}}'.format(1, w=2000000000) }}",
    "{{ '{0:>2000000000}'.format_map({}) }}",
)


@pytest.mark.parametrize("body", EXPENSIVE)
def test_a_template_that_would_take_long_or_build_a_huge_string_falls_back_at_once(body: str) -> None:
    validate_channel(
        ChannelDraft(config=SlackConfig("https://hooks.slack.com/services/x"), template=MessageTemplate(body=body)),
        CHANNEL_CHECKS,
    )
    # Before: hours of looping, or gigabytes of string (the suite's per-test timeout and memory would end it).
    assert render(TEST, MessageTemplate(body=body)).body == render(TEST).body


def test_templates_still_format_loop_and_print_up_to_the_limit() -> None:
    mine = render(
        Notification(NotificationKind.TEST, monitor_name="Shop", value=3.14159),
        MessageTemplate(
            title="{{ '%s is %s'|format(monitor_name, kind) }}",
            body="{{ '%5d|%-3s|%.2f|%%' % (42, 'a', value) }} {{ '{:>4}|{:.1f}'.format(1, value) }} "
            "{% for i in range(100) %}{% for j in range(98) %}{% endfor %}{% endfor %}{{ range(3)|list }}",
        ),
    )
    assert (mine.title, mine.body) == ("Shop is test", "   42|a  |3.14|%    1|3.1 [0, 1, 2]")
    # Printing stops at the body's limit, wherever the template is.
    long = render(TEST, MessageTemplate(body="{% for i in range(10000) %}{{ 'x' * 10000 }}{% endfor %}"))
    assert long.body == "x" * MAX_BODY


async def test_an_edit_does_not_switch_back_on_a_channel_the_worker_disabled_meanwhile(
    channels: ChannelStore,
) -> None:
    """UpdateChannel reads the channel, then writes it: a disable by the worker in between (after 401s) was
    undone by an edit of the name. Only an update that sets ``enabled`` writes the channel's state."""
    draft = validate_channel(ChannelDraft(config=WebhookConfig("https://hooks.example.com/x")), CHANNEL_CHECKS)
    channel = await channels.create_channel(ALICE.user_id, draft)
    read_before = await channels.get_channel(ALICE.user_id, channel.id)
    assert await channels.note_channel_answer(channel.id, True, 1, "401 from the receiver")
    saved = await channels.save_channel(replace(read_before, display_name="renamed"), with_state=False)
    assert (saved.display_name, saved.enabled, saved.disabled_reason) == ("renamed", False, "401 from the receiver")
    enabled = replace(saved, enabled=True, disabled_reason="", auth_failures=0)
    assert (await channels.save_channel(enabled, with_state=True)).enabled
