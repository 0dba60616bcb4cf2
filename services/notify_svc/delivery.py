"""The delivery worker: takes due deliveries from the queue table and sends them, channel by channel.

Each channel has its own lane: a token bucket at its provider's documented rate (Slack about one message a
second per webhook), its own concurrency, and its own pause when the provider answers 429. Lanes run
independently, so one channel's backlog never delays another's. Failures retry with exponential backoff and
jitter, never sooner than the provider's Retry-After; other 4xx answers fail the delivery at once; a channel
answering 401/403/404/410 again and again is disabled and its owner told through their other default channels.

Deliveries reach a lane two ways. SendNotification hands a delivery over directly when its lane can send it at
once (:meth:`DeliveryWorker.reserve`, then :meth:`DeliveryWorker.hand_over`): it is queued already leased, with
the channel the call read, so nothing is read or leased again before the send. The rest (a lane busy or paced,
retries, another process's deliveries, those left by a killed process) are found by polling the queue table,
leased one by one just before they are sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Generic, TypeVar

from service_runtime.database import new_id, utc_now
from service_runtime.logs import event_log
from services.notify_svc.delivery_queue import DeliveryQueue, Record, Target
from services.notify_svc.domain import (
    Attempt,
    Channel,
    ChannelKind,
    Delivery,
    DeliveryState,
    EmailConfig,
    Notification,
    NotificationKind,
    Outcome,
    Severity,
    config_secrets,
    mask_address,
    redact,
)
from services.notify_svc.metrics import ATTEMPT_SECONDS, ATTEMPTS, LANE_QUEUED
from services.notify_svc.senders.base import Sender, SendResult
from services.notify_svc.store import ChannelStore
from services.notify_svc.templates import render

log = logging.getLogger(__name__)
events = event_log("delivery")  # one line per attempt: what was sent where, and how it went
AUTH_FAILURE_CODES = frozenset({401, 403, 404, 410})
AUTH_FAILURES_TO_DISABLE = 3
EMAIL_LANE = "email"
# One owner's channel sends in flight at once, whatever their number of channels: the HTTP client's 200
# connections are shared, and an owner whose 50 webhooks all hang (each send holding its connection for the
# whole timeout) had taken every one of them, so everyone else's notifications waited a timeout or more.
OWNER_SENDS = 20
WAKE_BATCH_S = 0.01
MAX_WAITING = 500  # deliveries in lanes past which SendNotification leaves the rest to the poll (which skips them)
_In = TypeVar("_In")
_Out = TypeVar("_Out")


@dataclass(frozen=True)
class Pace:
    """A lane's limits: ``rate`` messages a second (0: unlimited) with bursts of ``burst``, ``concurrency``
    sends at once."""

    rate: float
    burst: int
    concurrency: int


# Documented provider limits, per webhook/key: Slack 1 message/s; Discord 5 per 2 s and 30 a minute per
# channel; Teams workflows about 4/s; PagerDuty 120 events a minute per routing key.
PACES: Mapping[str, Pace] = {
    ChannelKind.SLACK: Pace(1.0, 1, 1),
    ChannelKind.DISCORD: Pace(0.5, 5, 1),
    ChannelKind.TEAMS: Pace(1.0, 4, 1),
    ChannelKind.PAGERDUTY: Pace(2.0, 10, 1),
    ChannelKind.APPRISE: Pace(1.0, 3, 1),
    ChannelKind.EMAIL: Pace(5.0, 10, 2),
    ChannelKind.WEBHOOK: Pace(0.0, 0, 8),
}


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits base * 2^(n-1), capped, times a random factor in
    [0.5, 1] ("equal jitter"), and never less than the provider's Retry-After."""

    max_attempts: int = 8
    base_s: float = 2.0
    cap_s: float = 600.0

    def delay_s(self, attempts: int, retry_after_s: float | None, rng: random.Random) -> float:
        backoff = min(self.cap_s, self.base_s * 2.0 ** max(attempts - 1, 0)) * rng.uniform(0.5, 1.0)
        return max(backoff, retry_after_s or 0.0)


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; :meth:`pause` holds every taker until a moment (429)."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = max(burst, 1)
        self._tokens = float(self._burst)
        self._stamp = time.monotonic()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    @property
    def ready(self) -> bool:
        """A taker now would not wait: unpaused, and a token at hand (or no rate)."""
        now = time.monotonic()
        if now < self._paused_until:
            return False
        return self._rate <= 0 or self._tokens + (now - self._stamp) * self._rate >= 1

    @property
    def idle(self) -> bool:
        """Unpaused and refilled: forgetting this bucket would change nothing."""
        now = time.monotonic()
        full = self._rate <= 0 or self._tokens + (now - self._stamp) * self._rate >= self._burst
        return full and now >= self._paused_until

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def take(self) -> None:
        async with self._lock:  # takers queue in order
            while True:
                now = time.monotonic()
                if now < self._paused_until:
                    await asyncio.sleep(self._paused_until - now)
                    continue
                if self._rate <= 0:
                    return
                self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self._rate)


class Grouped(Generic[_In, _Out]):
    """Calls that come while a batch is being done wait and go together in the next: one transaction for the
    leases, channel reads or records of many sends at once, where each had been a transaction (and on SQLite a
    commit) of its own. Each caller still gets its own answer (``do`` answers a batch in its order), and only once
    its batch is done."""

    def __init__(
        self, do: Callable[[list[_In]], Awaitable[Sequence[_Out]]], most: int = 500, linger_s: float = 0.0
    ) -> None:
        self._do = do
        self._most = most
        self._linger_s = linger_s
        self._waiting: list[tuple[_In, asyncio.Future[_Out]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, item: _In) -> _Out:
        future: asyncio.Future[_Out] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[_In, asyncio.Future[_Out]]] = []
        try:
            # The callers of this turn of the loop (and of the next ``linger_s``) join the first batch.
            await asyncio.sleep(self._linger_s)
            while self._waiting:
                batch, self._waiting = self._waiting[: self._most], self._waiting[self._most :]
                try:
                    done = await self._do([item for item, _ in batch])
                except Exception as error:  # noqa: BLE001 - each caller hears of it, as from a call of its own
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), answer in zip(batch, done, strict=True):
                    if not future.done():
                        future.set_result(answer)
        except BaseException:  # cancelled (the worker stops): no caller is left waiting
            for _, future in [*batch, *self._waiting]:
                future.cancel()
            self._waiting = []
            raise


class OwnerSlots:
    """At most ``most`` sends of one owner at once; an owner with none in flight or waiting costs nothing."""

    def __init__(self, most: int) -> None:
        self._most = most
        self._by_owner: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    def hold(self, owner_id: str) -> OwnerSlot:
        """One of the owner's slots, taken on entering and given back on leaving or at
        :meth:`OwnerSlot.release`, whichever comes first. It counts against the owner from this call on."""
        semaphore, users = self._by_owner.setdefault(owner_id, (asyncio.Semaphore(self._most), [0]))
        users[0] += 1

        def done() -> None:
            users[0] -= 1
            if not users[0]:
                del self._by_owner[owner_id]

        return OwnerSlot(semaphore, done)

    def room(self, owner_id: str) -> int:
        """How many more of the owner's sends would start now without waiting."""
        found = self._by_owner.get(owner_id)
        return self._most - (found[1][0] if found else 0)


class OwnerSlot:
    """One send's slot (see :meth:`OwnerSlots.hold`)."""

    def __init__(self, semaphore: asyncio.Semaphore, done: Callable[[], None]) -> None:
        self._semaphore = semaphore
        self._done: Callable[[], None] | None = done
        self._held = False

    async def __aenter__(self) -> OwnerSlot:
        try:
            await self._semaphore.acquire()
        except BaseException:
            self.release()
            raise
        self._held = True
        return self

    async def __aexit__(self, *_: object) -> None:
        self.release()

    def release(self) -> None:
        """Give the slot back now (the send has its answer; recording it holds no connection)."""
        if self._held:
            self._held = False
            self._semaphore.release()
        done, self._done = self._done, None
        if done is not None:
            done()


@dataclass(frozen=True, slots=True)
class Queued:
    """A delivery in a lane; ``channel`` is set when SendNotification handed it over, with the channel its call
    read, and ``leased`` when it was queued leased (else it is leased in turn, as a polled one is)."""

    delivery: Delivery
    channel: Channel | None = None
    leased: bool = False


@dataclass
class Lane:
    """One channel's queue, bucket and consumers; ``reserved`` deliveries are about to be handed over."""

    pace: Pace
    bucket: TokenBucket
    queue: deque[Queued] = field(default_factory=deque)
    consumers: int = 0
    reserved: int = 0
    backlog: bool = False  # deliveries were left in the table for want of room here


class Senders:
    """The sender of each channel kind, and the one for bare email addresses."""

    def __init__(self, by_kind: Mapping[ChannelKind, Sender]) -> None:
        self._by_kind = dict(by_kind)

    def __getitem__(self, kind: ChannelKind) -> Sender:
        return self._by_kind[kind]


class DeliveryWorker:
    """Sends queued deliveries; :meth:`run` is the service's background job. One per process; several
    processes may share a queue (each delivery is leased before it is sent)."""

    def __init__(
        self,
        channels: ChannelStore,
        queue: DeliveryQueue,
        senders: Senders,
        timeout_s: float = 10.0,
        policy: RetryPolicy | None = None,
        paces: Mapping[str, Pace] | None = None,
        poll_interval_s: float = 1.0,
        batch: int = 200,
        lane_bound: int = 100,
        rng: random.Random | None = None,
        owner_sends: int = OWNER_SENDS,
    ) -> None:
        self._channels = channels
        self._queue = queue
        self._senders = senders
        self.timeout_s = timeout_s
        self.policy = policy or RetryPolicy()
        self._paces = {**PACES, **(paces or {})}
        self._poll_interval_s = poll_interval_s
        self._batch = batch
        self._lane_bound = lane_bound
        self._rng = rng or random.Random()
        self._lanes: dict[str, Lane] = {}
        self._kinds: dict[str, ChannelKind] = {}
        self._taken: set[str] = set()  # in a lane here, or being sent
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._channel = Grouped(self._read_channels)
        self._lease = Grouped(self._leases)
        self._record = Grouped(self._records)
        self._owner_slots = OwnerSlots(owner_sends)
        self._owner_reserved: dict[str, int] = {}
        self._in_lanes = 0  # deliveries in lanes

    async def _read_channels(self, channel_ids: list[str]) -> list[Channel | None]:
        found = await self._channels.channels(sorted(set(channel_ids)))
        return [found.get(channel_id) for channel_id in channel_ids]

    async def _leases(self, delivery_ids: list[str]) -> list[bool]:
        taken = await self._queue.lease_many(delivery_ids, utc_now() + timedelta(seconds=self.timeout_s + 5))
        return [delivery_id in taken for delivery_id in delivery_ids]

    async def _records(self, records: list[Record]) -> list[None]:
        await self._queue.record_many(records)
        return [None] * len(records)

    def reserve(self, channel: Channel) -> datetime | None:
        """A lease for a delivery to ``channel`` about to be queued, when its lane can send it at once (a free
        consumer, a token at hand): the caller queues it leased until then and hands it over with
        :meth:`hand_over` once committed (or gives the place back with :meth:`unreserve`). None when the lane
        is busy or paced: the delivery is then queued unleased and found by the next poll."""
        if not channel.enabled:
            return None
        lane = self._lane(channel.id, channel.kind)
        if lane.consumers + len(lane.queue) + lane.reserved >= lane.pace.concurrency or not lane.bucket.ready:
            return None
        owner = channel.owner_id
        if self._owner_slots.room(owner) - self._owner_reserved.get(owner, 0) <= 0:
            return None
        lane.reserved += 1
        self._owner_reserved[owner] = self._owner_reserved.get(owner, 0) + 1
        return utc_now() + timedelta(seconds=self.timeout_s + 5)

    def unreserve(self, channel: Channel) -> None:
        """Give back a place :meth:`reserve` took (the call queued nothing new)."""
        lane = self._lane(channel.id, channel.kind)
        lane.reserved = max(lane.reserved - 1, 0)
        self._owner_unreserve(channel.owner_id)

    def _owner_unreserve(self, owner_id: str) -> None:
        left = self._owner_reserved.pop(owner_id, 0) - 1
        if left > 0:
            self._owner_reserved[owner_id] = left

    def hand_over(self, delivery: Delivery, channel: Channel) -> None:
        """Send ``delivery``, queued leased in a place :meth:`reserve` took, to ``channel`` now. The owner's
        place stays reserved until its send takes one of the owner's slots."""
        lane = self._lane(channel.id, channel.kind)
        lane.reserved = max(lane.reserved - 1, 0)
        self._queue_in(lane, Queued(delivery, channel, leased=True))

    def queue_known(self, delivery: Delivery, channel: Channel) -> bool:
        """Put ``delivery``, just queued unleased to ``channel`` (its lane or its owner's sends were busy), in
        its lane to be leased and sent in turn, so that no poll has to find it and read its channel again.
        False when the lane is backed up or this worker holds enough waiting already: the poll finds it."""
        lane = self._lane(channel.id, channel.kind)
        if len(lane.queue) >= self._lane_bound or self._in_lanes >= MAX_WAITING:
            lane.backlog = True
            return False
        self._taken.add(delivery.id)
        self._queue_in(lane, Queued(delivery, channel))
        return True

    def _queue_in(self, lane: Lane, item: Queued) -> None:
        lane.queue.append(item)
        self._in_lanes += 1
        LANE_QUEUED.inc()
        while lane.consumers < lane.pace.concurrency and lane.consumers < len(lane.queue):
            lane.consumers += 1
            task = asyncio.create_task(self._consume(lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def wake(self) -> None:
        """Look for due deliveries now (after SendNotification queued some), not at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Dispatch due deliveries to lanes, forever; a failing round is logged and the next one goes on."""
        try:
            while True:
                self._wake.clear()
                try:
                    await self.dispatch_due()
                except Exception:
                    log.exception("delivery dispatch failed")
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that lands
                # as the wake-up does, and the job would then never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_interval_s):
                        await self._wake.wait()
                # Wakes come one per SendNotification; a moment's wait makes one round of many of them.
                await asyncio.sleep(WAKE_BATCH_S)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def dispatch_due(self) -> int:
        """Hand every due, unleased delivery to its channel's lane; returns how many were handed over."""
        due = await self._queue.due(utc_now(), self._batch, sorted(self._taken))
        unknown = {d.channel_id for d in due if d.channel_id and d.channel_id not in self._kinds}
        if unknown:
            if len(self._kinds) > 10_000:
                self._kinds.clear()
            self._kinds.update(await self._channels.channel_kinds(sorted(unknown)))
        self._prune_idle_lanes()
        handed = 0
        for delivery in due:
            key = delivery.channel_id or EMAIL_LANE
            lane = self._lane(key, self._kinds.get(delivery.channel_id, ChannelKind.EMAIL))
            if len(lane.queue) >= self._lane_bound:
                lane.backlog = True
                continue  # this lane is backed up; the rest are not held behind it
            self._taken.add(delivery.id)
            self._queue_in(lane, Queued(delivery))
            handed += 1
        return handed

    def _lane(self, key: str, kind: ChannelKind) -> Lane:
        lane = self._lanes.get(key)
        if lane is None:
            pace = self._paces.get(kind, Pace(1.0, 1, 1))
            lane = self._lanes[key] = Lane(pace, TokenBucket(pace.rate, pace.burst))
        return lane

    def _prune_idle_lanes(self) -> None:
        # A lane outlives its queue so its bucket keeps pacing; once idle long enough to have refilled, it goes.
        idle = [
            key
            for key, lane in self._lanes.items()
            if not lane.queue and not lane.consumers and not lane.reserved and lane.bucket.idle
        ]
        for key in idle:
            del self._lanes[key]

    async def _consume(self, lane: Lane) -> None:
        try:
            while lane.queue:
                item = lane.queue.popleft()
                self._in_lanes -= 1
                LANE_QUEUED.dec()
                try:
                    if item.channel is not None and item.leased:  # handed over leased
                        # The slot counts it from here on (nothing awaits in between).
                        slot = self._owner_slots.hold(item.delivery.owner_id)
                        self._owner_unreserve(item.delivery.owner_id)
                        async with slot:
                            await lane.bucket.take()
                            await self.attempt(item.delivery, item.channel, final=False, sent=slot.release)
                    else:
                        await self._send_queued(item.delivery, lane, item.channel)
                except Exception:
                    log.exception("delivery failed unexpectedly", extra={"delivery_id": item.delivery.id})
                finally:
                    self._taken.discard(item.delivery.id)
                # A lane that has room again asks for more from the table, when it may hold some for it:
                # deliveries found by a poll, or left there when this lane was full.
                if (item.channel is None or lane.backlog) and len(lane.queue) < self._lane_bound // 2:
                    lane.backlog = False
                    self.wake()
        finally:
            lane.consumers -= 1

    async def _send_queued(self, delivery: Delivery, lane: Lane, channel: Channel | None = None) -> None:
        if channel is None and delivery.channel_id:
            channel = await self._channel(delivery.channel_id)
        if delivery.channel_id and (channel is None or not channel.enabled):
            await self._record(Record(delivery.id, None, DeliveryState.SUPPRESSED, None))
            return
        # Taken before the lease, which would otherwise run out while waiting.
        async with self._owner_slots.hold(delivery.owner_id) as slot:
            await lane.bucket.take()
            if not await self._lease(delivery.id):
                return  # another worker has it, or it was dropped meanwhile
            await self.attempt(delivery, channel, final=False, sent=slot.release)

    async def send_now(self, delivery: Delivery, channel: Channel) -> SendResult:
        """One attempt at a delivery queued already leased (TestChannel), paced like the channel's others."""
        await self._lane(channel.id, channel.kind).bucket.take()
        return await self.attempt(delivery, channel, final=True)

    async def attempt(
        self, delivery: Delivery, channel: Channel | None, *, final: bool, sent: Callable[[], None] | None = None
    ) -> SendResult:
        """Send a leased delivery once and record the attempt; ``final`` makes a retryable failure final
        (TestChannel answers with one attempt). ``sent`` is called once the provider has answered (or the send
        failed), before the attempt is recorded."""
        config = channel.config if channel is not None else EmailConfig((delivery.email_address,))
        kind = channel.kind if channel is not None else ChannelKind.EMAIL
        started = time.perf_counter()
        attempt_time = utc_now()
        try:
            message = render(delivery.notification, channel.template if channel is not None else None)
            result = await self._senders[kind].send(config, message, delivery.id, self.timeout_s)
            error = "" if result.outcome is Outcome.SUCCESS else redact(result.detail, config_secrets(config))
        except Exception as raised:  # noqa: BLE001 - a bug here must still end in a recorded attempt
            # Unrecorded, the delivery would be leased again at every lease expiry, forever. The exception's
            # text may quote a secret: only its type and where it was raised are kept.
            where = traceback.extract_tb(raised.__traceback__)[-1]
            error = f"internal error: {type(raised).__name__} at {Path(where.filename).name}:{where.lineno}"
            log.error("delivery attempt raised", extra={"delivery_id": delivery.id, "error": error})
            result = SendResult(Outcome.PERMANENT, 0, error)
        finally:
            if sent is not None:
                sent()
        attempt = Attempt(
            attempt_time, result.outcome, result.response_code, error, timedelta(seconds=time.perf_counter() - started)
        )
        attempts = delivery.attempt_count + 1
        next_time = None
        if result.outcome is Outcome.SUCCESS:
            state = DeliveryState.DELIVERED
        elif result.outcome is Outcome.PERMANENT or final or attempts >= self.policy.max_attempts:
            state = DeliveryState.FAILED
        else:
            state = DeliveryState.RETRYING
            next_time = utc_now() + timedelta(seconds=self.policy.delay_s(attempts, result.retry_after_s, self._rng))
        await self._record(Record(delivery.id, attempt, state, next_time))
        ATTEMPTS.labels(kind.value, result.outcome.value, state.value).inc()
        ATTEMPT_SECONDS.labels(kind.value).observe(attempt.duration.total_seconds())
        if result.retry_after_s:
            self._lane(delivery.channel_id or EMAIL_LANE, kind).bucket.pause(result.retry_after_s)
        events.log(
            logging.INFO if result.outcome is Outcome.SUCCESS else logging.WARNING,
            attempt_text(delivery, channel, kind, result, error, state, next_time),
            extra={
                "delivery_id": delivery.id,
                "channel_id": delivery.channel_id,
                "kind": kind.value,
                "outcome": result.outcome.value,
                "response_code": result.response_code,
                "error": error,
                "state": state.value,
            },
        )
        if channel is not None:
            await self._note_answer(channel, result)
        return result

    async def _note_answer(self, channel: Channel, result: SendResult) -> None:
        auth_failure = result.response_code in AUTH_FAILURE_CODES and result.outcome is Outcome.PERMANENT
        if not auth_failure and channel.auth_failures == 0:
            return
        reason = (
            f"disabled after {AUTH_FAILURES_TO_DISABLE} answers of HTTP {result.response_code} in a row: the "
            "provider no longer accepts this channel's URL or key; fix it and set enabled to re-enable"
        )
        if await self._channels.note_channel_answer(channel.id, auth_failure, AUTH_FAILURES_TO_DISABLE, reason):
            log.warning("channel disabled", extra={"channel_id": channel.id, "owner_id": channel.owner_id})
            await self._tell_owner(channel, reason)

    async def _tell_owner(self, channel: Channel, reason: str) -> None:
        others = [
            c for c in await self._channels.channels_for(channel.owner_id, []) if c.id != channel.id and c.enabled
        ]
        if not others:
            return  # the disabled_reason on the channel is then the only word; reads show it
        notification = Notification(
            kind=NotificationKind.CHANNEL_DISABLED,
            severity=Severity.WARNING,
            summary=f"Your notification channel '{channel.display_name}' ({channel.id}) was {reason}.",
            event_time=utc_now(),
        )
        targets = [Target(channel_id=c.id) for c in others]
        await self._queue.enqueue(
            f"channel-disabled:{channel.id}:{new_id('evt')}", channel.owner_id, targets, notification
        )
        self.wake()


def attempt_text(
    delivery: Delivery,
    channel: Channel | None,
    kind: ChannelKind,
    result: SendResult,
    error: str,
    state: DeliveryState,
    next_time: datetime | None,
) -> str:
    """The sentence of one attempt: ``alert_firing notification to webhook 'ops': delivered (HTTP 200)``."""
    where = (
        f"{kind.value} {channel.display_name!r}"
        if channel is not None
        else f"email {mask_address(delivery.email_address)}"
    )
    text = f"{delivery.notification.kind.value} notification to {where} ({delivery.id}): "
    if state is DeliveryState.DELIVERED:
        return text + "delivered" + (f" (HTTP {result.response_code})" if result.response_code else "")
    text += error or result.outcome.value
    if state is DeliveryState.RETRYING and next_time is not None:
        return text + f"; trying again at {next_time.astimezone().strftime('%H:%M:%S')}"
    return text + "; given up"
