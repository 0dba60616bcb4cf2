"""Notification rules: channels of the calling user, queuing notifications, test messages, the delivery log.
Plain Python over the store and the delivery worker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from service_runtime.auth import Principal
from service_runtime.database import new_id, utc_now
from service_runtime.egress import BlockedTarget, EgressPolicy, ResolutionFailed
from service_runtime.errors import InvalidArgument, NotFound, ResourceExhausted, require_id
from service_runtime.pagination import PageRequest
from service_runtime.rate_limits import Rate, RateLimiter, wait_text
from services.notify_svc.delivery import DeliveryWorker, Grouped
from services.notify_svc.delivery_queue import DeliveryQueue, Enqueue, Target
from services.notify_svc.domain import (
    MAX_IDEMPOTENCY_KEY,
    Channel,
    ChannelConfig,
    ChannelDraft,
    ContentChecks,
    Delivery,
    DeliveryState,
    Notification,
    NotificationKind,
    Severity,
    WebhookConfig,
    keep_masked_secrets,
    valid_address,
    validate_channel,
    validate_notification,
)
from services.notify_svc.senders.apprise_urls import url_problem
from services.notify_svc.senders.webhook import is_plain_http, lan_addresses
from services.notify_svc.store import ChannelStore
from services.notify_svc.templates import template_error

# What validate_channel asks of this service's adapters: Apprise's URL rules and the template engine's.
CHANNEL_CHECKS = ContentChecks(apprise_url=url_problem, template=template_error)
CONFIG_PATHS = ("email", "slack", "discord", "teams", "webhook", "pagerduty", "apprise")
# How long a SendNotification waits for others to share its transactions. Calls in flight are otherwise
# answered one by one as each arrives (on SQLite a store call does not even yield), each paying its own.
ACCEPT_LINGER_S = 0.002
MUTABLE_PATHS = ("display_name", *CONFIG_PATHS, "enabled", "is_default", "template")
# TestChannel sends at once, with the user's own template, to whatever the channel names (an email channel: up to
# 20 addresses nobody has confirmed), through our email account and from our addresses: unlimited, 30 calls had
# relayed 30 messages in 8.7 s. Five in a row covers trying each channel after setting them up; one every 10 s
# after that is someone adjusting a template, and bounds what a user can relay through us
# (MONITORS_TEST_CHANNEL_BURST / MONITORS_TEST_CHANNEL_EVERY_S).
TEST_CHANNEL_RATE = Rate(burst=5, every_s=10.0)


class Notifications:
    """Channels and deliveries of the calling user, and SendNotification for our services."""

    def __init__(
        self,
        channels: ChannelStore,
        queue: DeliveryQueue,
        worker: DeliveryWorker,
        egress: EgressPolicy = EgressPolicy.PUBLIC,
        test_channel_rate: Rate = TEST_CHANNEL_RATE,
    ) -> None:
        self._channels = channels
        self._test_channel_rate = RateLimiter(test_channel_rate)  # by user id
        self._queue = queue
        self._worker = worker
        self._egress = egress
        # SendNotification calls that come together (an outage fires many alerts) read their channels in one
        # query and commit their deliveries in one transaction.
        self._read_channels = Grouped(self._channels_by_id, linger_s=ACCEPT_LINGER_S)
        self._enqueue = Grouped(queue.enqueue_many)

    async def _channels_by_id(self, asks: list[tuple[str, ...]]) -> list[dict[str, Channel]]:
        found = await self._channels.channels(sorted({i for ask in asks for i in ask}))
        return [{i: found[i] for i in ask if i in found} for ask in asks]

    async def _owned_channels(self, owner_id: str, channel_ids: Sequence[str]) -> list[Channel]:
        """As ChannelStore.channels_for: the owner's channels named (in order), or their defaults when none is
        named; NOT_FOUND for a channel that is not theirs. Named ones are read with other calls' at once."""
        if not channel_ids:
            return await self._channels.channels_for(owner_id, [])
        found = await self._read_channels(tuple(channel_ids))
        for channel_id in channel_ids:
            channel = found.get(channel_id)
            if channel is None or channel.owner_id != owner_id:
                raise NotFound("channel", channel_id)
        return [found[i] for i in channel_ids]

    async def _validated(self, draft: ChannelDraft) -> ChannelDraft:
        """validate_channel under this service's egress policy: an http:// webhook only to a LAN host."""
        valid = validate_channel(draft, CHANNEL_CHECKS, plain_http_webhook=self._egress is EgressPolicy.PRIVATE_ALLOWED)
        if isinstance(valid.config, WebhookConfig) and is_plain_http(valid.config.url):
            try:
                await lan_addresses(valid.config.url, self._egress)
            except (BlockedTarget, ResolutionFailed) as refused:
                raise InvalidArgument("channel.webhook.url", str(refused)) from None
            except TimeoutError:
                raise InvalidArgument("channel.webhook.url", "its host did not resolve in time") from None
        return valid

    async def create_channel(self, caller: Principal, draft: ChannelDraft) -> tuple[Channel, bool]:
        """The new channel, and whether the caller is shown its webhook signing secret: once, when this call
        generated it (as an API key is shown once), since a receiver cannot verify signatures without it."""
        valid = await self._validated(draft)
        channel = await self._channels.create_channel(caller.user_id, valid)
        return channel, _generates_secret(draft.config)

    async def get_channel(self, caller: Principal, channel_id: str) -> Channel:
        return await self._channels.get_channel(caller.user_id, _channel_id(channel_id))

    async def list_channels(self, caller: Principal, size: int, token: str) -> tuple[list[Channel], str]:
        request = PageRequest.of(size, token)
        found = await self._channels.list_channels(caller.user_id, request.after, request.read_limit)
        return request.cut(found, lambda c: c.id)

    async def update_channel(
        self, caller: Principal, channel_id: str, draft: ChannelDraft, paths: Sequence[str]
    ) -> tuple[Channel, bool]:
        """Change the fields in ``paths`` (all mutable ones when empty). A secret sent back as it reads
        (masked) keeps its stored value; ``enabled`` in the mask re-enables a disabled channel. With the
        channel, whether its signing secret is shown: when this update generated one (a channel turned into a
        webhook)."""
        unknown = sorted(set(paths) - set(MUTABLE_PATHS))
        if unknown:
            raise InvalidArgument(
                "update_mask", f"cannot update {', '.join(unknown)}; mutable: {', '.join(MUTABLE_PATHS)}"
            )
        current = await self._channels.get_channel(caller.user_id, _channel_id(channel_id, "channel.id"))
        every = not paths
        config = current.config
        if (every and draft.config is not None) or set(paths) & set(CONFIG_PATHS):
            if draft.config is None:
                raise InvalidArgument("channel.config", "the update mask names a config the channel does not carry")
            config = keep_masked_secrets(current.config, draft.config)
            if isinstance(config, WebhookConfig) and isinstance(current.config, WebhookConfig):
                config = replace(config, signing_secret=config.signing_secret or current.config.signing_secret)
        merged = ChannelDraft(
            display_name=draft.display_name if every or "display_name" in paths else current.display_name,
            config=config,
            is_default=draft.is_default if every or "is_default" in paths else current.is_default,
            template=draft.template if every or "template" in paths else current.template,
        )
        generated = _generates_secret(merged.config)
        merged = await self._validated(merged)
        assert merged.config is not None
        enabled, reason, failures = current.enabled, current.disabled_reason, current.auth_failures
        sets_enabled = draft.enabled is not None and (every or "enabled" in paths)
        if draft.enabled is not None and sets_enabled:
            enabled = draft.enabled
            reason, failures = ("", 0) if enabled else (reason, failures)
        updated = replace(
            current,
            display_name=merged.display_name,
            config=merged.config,
            is_default=merged.is_default,
            template=merged.template,
            enabled=enabled,
            disabled_reason=reason,
            auth_failures=failures,
            update_time=utc_now(),
        )
        return await self._channels.save_channel(updated, with_state=sets_enabled), generated

    async def delete_channel(self, caller: Principal, channel_id: str) -> None:
        await self._channels.delete_channel(caller.user_id, _channel_id(channel_id))

    async def test_channel(self, caller: Principal, channel_id: str) -> Delivery:
        """Send a test message now, one attempt, and return the delivery with the provider's answer. A user sends
        at most ``test_channel_rate`` (RESOURCE_EXHAUSTED beyond, saying when to retry)."""
        channel = await self._channels.get_channel(caller.user_id, _channel_id(channel_id))
        if wait := self._test_channel_rate.take(caller.user_id):  # a channel not found spends nothing
            rate = self._test_channel_rate.rate
            raise ResourceExhausted(
                "test_channel_rate",
                f"too many test messages in a short time (up to {rate.burst} in a row, then one every "
                f"{wait_text(rate.every_s)}); retry in {wait_text(wait)}",
            )
        now = utc_now()
        notification = Notification(NotificationKind.TEST, Severity.INFO, summary="Test notification", event_time=now)
        lease = now + timedelta(seconds=self._worker.timeout_s + 5)
        queued, _ = await self._queue.enqueue(
            f"test:{new_id('tst')}", caller.user_id, [Target(channel.id)], notification, lease
        )
        await self._worker.send_now(queued[0], channel)
        return await self._queue.get_delivery(caller.user_id, queued[0].id)

    async def send(
        self,
        key: str,
        owner_id: str,
        channel_ids: Sequence[str],
        email_address: str,
        notification: Notification | None,
    ) -> tuple[list[Delivery], bool]:
        """Queue ``notification`` durably for each channel (the owner's defaults when none is named) or for
        a bare email address. Idempotent on ``key``: a repeat returns the first deliveries and True."""
        if not key:
            raise InvalidArgument("idempotency_key", "is required")
        if len(key) > MAX_IDEMPOTENCY_KEY:
            raise InvalidArgument("idempotency_key", f"must be at most {MAX_IDEMPOTENCY_KEY} characters")
        try:
            notification, targets, channels = await self._targets(owner_id, channel_ids, email_address, notification)
        except (InvalidArgument, NotFound):
            # A key seen before answers with its deliveries, whatever this call carries (the first call's
            # channel may be gone since). Read only here: the enqueue below checks the key in its transaction.
            first = await self._queue.by_key(key)
            if first is not None:
                return first, True
            raise
        handed = {}
        try:
            for i, channel in enumerate(channels):
                lease = self._worker.reserve(channel) if not targets[i].suppressed else None
                if lease is not None:
                    targets[i] = replace(targets[i], lease_until=lease)
                    handed[i] = channel
            deliveries, duplicate = await self._enqueue(Enqueue(key, owner_id, targets, notification))
        except BaseException:
            for channel in handed.values():
                self._worker.unreserve(channel)
            raise
        if duplicate:
            for channel in handed.values():
                self._worker.unreserve(channel)
            return deliveries, duplicate
        left = not channels and bool(targets)  # an email address: the poll sends it
        for i, channel in enumerate(channels):
            if i in handed:
                self._worker.hand_over(deliveries[i], channel)
            elif not targets[i].suppressed and not self._worker.queue_known(deliveries[i], channel):
                left = True
        if left:
            self._worker.wake()
        return deliveries, duplicate

    async def _targets(
        self, owner_id: str, channel_ids: Sequence[str], email_address: str, notification: Notification | None
    ) -> tuple[Notification, list[Target], list[Channel]]:
        """The valid notification, its targets, and the channels they are (none for an email address)."""
        notification = validate_notification(notification)
        if email_address:
            if channel_ids:
                raise InvalidArgument("channel_ids", "must be empty when email_address is set")
            if not valid_address(email_address):
                raise InvalidArgument("email_address", "is not an email address")
            return notification, [Target(email_address=email_address)], []
        if not owner_id:
            raise InvalidArgument("owner_id", "is required unless email_address is set")
        if notification.kind is NotificationKind.LOGIN_CODE:
            raise InvalidArgument("email_address", "login codes go to an email address, never to channels")
        try:
            channels = await self._owned_channels(owner_id, channel_ids)
        except NotFound as missing:
            raise InvalidArgument("channel_ids", f"{missing.message} for owner {owner_id}") from None
        return notification, [Target(channel_id=c.id, suppressed=not c.enabled) for c in channels], channels

    async def list_deliveries(
        self, caller: Principal, size: int, token: str, channel_id: str, state: DeliveryState | None
    ) -> tuple[list[Delivery], str]:
        request = PageRequest.of(size, token)  # newest first: "after" in the listing's order is an older id
        found = await self._queue.list_deliveries(caller.user_id, request.after, request.read_limit, channel_id, state)
        return request.cut(found, lambda d: d.id)


def _generates_secret(config: ChannelConfig | None) -> bool:
    """Whether validating ``config`` generates a signing secret (a webhook given none)."""
    return isinstance(config, WebhookConfig) and not config.signing_secret


def _channel_id(channel_id: str, field: str = "id") -> str:
    return require_id(channel_id, field, "chn_...", "ListChannels")
