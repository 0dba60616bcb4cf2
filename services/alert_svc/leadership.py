"""Which alert-service replica evaluates the rules: a leader lease, and the forwarding of a standby's calls.

One replica at a time is the leader: it holds a lease key in the key-value store (Redis in production; the
in-process twin when embedded, where there is one process) whose value names it and the gRPC address the
other replicas reach it at. It renews the lease every third of its length, compare-and-renew (only while the
key still holds its own value), and steps down when it could not renew for two thirds of it, so it has stopped
before the lease can expire and another replica take it: two leaders never act at once. The others are hot
standbys: they try to take the lease every third of its length, and forward every call to the leader
(:class:`LeaderForwarding`). When the leader dies, its lease expires and a standby takes it within one lease
period and a third.

The leader's work (loading rules, the monitor feed and its warm start, the clock, the notifier) runs as the
``lead`` coroutine, started on election and cancelled when leadership ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory

from service_runtime.cache import KeyValueStore
from service_runtime.interceptors import Interceptor, Next, NextStream

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 10.0
RELEASE_TTL_S = 0.001  # a renewal this short releases the lease at once
# Metadata a standby adds to a forwarded call: the replica that receives it serves it or refuses it, never
# forwards it again (two replicas each believing the other leads would bounce a call until its deadline).
FORWARDED_BY = "x-monitors-forwarded-by"
# Not forwarded: HTTP/2 pseudo-headers and transport headers the client library sets itself.
_TRANSPORT_KEYS = frozenset({"user-agent", "content-type", "te", "host", "grpc-timeout", "grpc-encoding"})


@dataclass(frozen=True)
class Holder:
    """A replica as the lease names it: a random id per process, and its gRPC address."""

    replica_id: str
    address: str

    @classmethod
    def new(cls, address: str) -> Holder:
        return cls(f"rep_{secrets.token_hex(8)}", address)

    def encode(self) -> str:
        return json.dumps({"replica": self.replica_id, "address": self.address}, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | None) -> Holder | None:
        """The holder a lease value names; None for no value or one that is not ours."""
        if not text:
            return None
        try:
            found = json.loads(text)
            return cls(str(found["replica"]), str(found["address"]))
        except (ValueError, KeyError, TypeError):
            return None


class Leadership:
    """Campaigns for ``key`` in ``store`` as ``me``; runs ``lead()`` while leader. :meth:`run` until cancelled,
    :meth:`release` on shutdown (a standby takes over at once instead of after the lease)."""

    def __init__(
        self,
        store: KeyValueStore,
        key: str,
        me: Holder,
        lead: Callable[[], Coroutine[Any, Any, None]],
        *,
        lease_s: float = DEFAULT_LEASE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not lease_s > 0:
            raise ValueError("lease_s must be positive")
        self._store = store
        self._key = key
        self.me = me
        self._lead = lead
        self.lease_s = lease_s
        self._period = lease_s / 3
        self._hold = lease_s * 2 / 3  # a leader that could not renew for this long steps down
        self._clock = clock
        self._lock = asyncio.Lock()
        self._closed = False
        self._confirmed = 0.0  # when the last renewal that succeeded was sent (the lease runs from later)
        self._read_at = 0.0  # when a standby last read the lease
        self._rest_until = 0.0  # after its work failed, a replica leaves the lease to others for a while
        self._term: asyncio.Task[None] | None = None
        self.is_leader = False
        self.leader: Holder | None = None  # the lease's holder as last read (ourselves while leading)
        self.terms = 0

    @property
    def _value(self) -> str:
        return self.me.encode()

    @property
    def standby_target(self) -> str | None:
        """The leader's address while another replica leads, else None."""
        leader = self.leader
        if self.is_leader or leader is None or leader.replica_id == self.me.replica_id:
            return None
        return leader.address

    async def run(self) -> None:
        """Campaign, renew and step down as the lease allows, until cancelled (leadership ends with it)."""
        try:
            while not self._closed:
                started = self._clock()
                await self.step()
                wake = started + self._period
                if self.is_leader:
                    wake = min(wake, self._confirmed + self._hold)
                await asyncio.sleep(max(0.01, wake - self._clock()))
        finally:
            if self.is_leader:
                await self._step_down("leadership task ended")

    async def step(self) -> None:
        """One round: a leader renews (or steps down), a standby tries to take the lease or reads its holder."""
        async with self._lock:
            if self._closed:
                return
            if self.is_leader:
                await self._renew()
            else:
                await self._campaign()

    async def release(self) -> None:
        """Stop leading and hand the lease back (on shutdown); no later campaign."""
        async with self._lock:
            self._closed = True
            if not self.is_leader:
                return
            await self._step_down("released")
            try:
                async with asyncio.timeout(self._period):
                    await self._store.renew(self._key, self._value, RELEASE_TTL_S)
            except Exception as error:  # noqa: BLE001 - any store failure; the lease expires on its own
                log.warning("could not release the alert-service lease", extra={"error": repr(error)})

    async def _renew(self) -> None:
        started = self._clock()
        if self._term is not None and self._term.done():
            log.error("the leader's work ended; leaving the lease to another replica")
            await self._step_down("leader work ended")
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._period):
                    await self._store.renew(self._key, self._value, RELEASE_TTL_S)
            self._rest_until = started + self.lease_s
            return
        deadline = self._confirmed + self._hold
        if started >= deadline:
            await self._step_down("lease not renewed in time")
            return
        try:
            async with asyncio.timeout(min(self._period, deadline - started)):
                renewed = await self._store.renew(self._key, self._value, self.lease_s)
        except Exception as error:  # noqa: BLE001 - any store failure (Redis, database, network) is a failed round
            log.warning("alert-service lease renewal failed", extra={"error": repr(error)})
            if self._clock() >= deadline:
                await self._step_down("lease not renewed in time")
            return
        if renewed:
            self._confirmed = started
        else:
            await self._step_down("lease lost")

    async def _campaign(self) -> None:
        started = self._clock()
        try:
            async with asyncio.timeout(self._period):
                acquired = started >= self._rest_until and await self._store.set(
                    self._key, self._value, self.lease_s, only_if_absent=True
                )
                if not acquired:
                    self.leader = Holder.decode(await self._store.get(self._key))
                    self._read_at = started
        except Exception as error:  # noqa: BLE001 - as above
            log.warning("alert-service lease unreadable", extra={"error": repr(error)})
            if started - self._read_at >= self.lease_s:
                self.leader = None  # whoever led may have stepped down by now
            return
        if acquired:
            self._confirmed = started
            self._elect()

    def _elect(self) -> None:
        self.is_leader = True
        self.leader = self.me
        self.terms += 1
        log.info("leading the alert service", extra={"replica": self.me.replica_id, "term": self.terms})
        self._term = asyncio.create_task(self._lead(), name="alert leader")

    async def _step_down(self, why: str) -> None:
        self.is_leader = False
        self.leader = None
        # Released at a stop is the plan (an INFO line); a lease lost or not renewed is worth a warning.
        level = logging.INFO if why == "released" else logging.WARNING
        log.log(level, "no longer leading the alert service", extra={"replica": self.me.replica_id, "reason": why})
        term, self._term = self._term, None
        if term is None:
            return
        term.cancel()
        # Its cleanup is quick (tasks cancelled, listeners closed); bounded so a stuck one cannot stall renewals.
        await asyncio.wait({term}, timeout=self._period)
        if term.done() and not term.cancelled() and term.exception() is not None:
            log.error("the leader's work had failed", exc_info=term.exception())


def _output_class(method: str) -> Any:
    """The generated response class of ``/package.Service/Method``, from the default descriptor pool."""
    described = descriptor_pool.Default().FindMethodByName(method.strip("/").replace("/", "."))
    return message_factory.GetMessageClass(described.output_type)


def _is_client_streaming(method: str) -> bool:
    described = descriptor_pool.Default().FindMethodByName(method.strip("/").replace("/", "."))
    return bool(described.client_streaming)


class LeaderForwarding(Interceptor):
    """The first link of a replica's chain for ``services``: the leader serves its calls; a standby forwards
    each one, request, metadata (the caller's authorization, ``x-request-id``) and deadline unchanged, to the
    leader's address and relays the answer, status and trailing metadata, unary and server-streaming alike.
    UNAVAILABLE while there is no leader. Calls that stream requests are always served where they land.

    ``open_channel(address)`` opens a channel to another replica (our TLS settings apply); one channel is
    kept, to the current leader. Unary calls without a deadline get ``default_timeout_s``; streams keep the
    caller's (none: they may stay open for hours; the channel's keepalive notices a dead leader)."""

    def __init__(
        self,
        leadership: Leadership,
        services: Iterable[str],
        open_channel: Callable[[str], grpc.aio.Channel],
        default_timeout_s: float = 30.0,
    ) -> None:
        self._leadership = leadership
        self._prefixes = tuple(f"/{name}/" for name in services)
        self._open_channel = open_channel
        self._default_timeout_s = default_timeout_s
        self._channel: tuple[str, grpc.aio.Channel] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._outputs: dict[str, Any] = {}
        self.forwarded = 0

    def applies_to(self, method: str) -> bool:
        if not method.startswith(self._prefixes) or _is_client_streaming(method):
            return False
        self._outputs[method] = _output_class(method)
        return True

    async def around(self, call: Next, request: Any, context: Any, details: Any) -> Any:
        target = await self._target(context)
        if target is None:
            return await call(request, context)
        forwarded = self._channel_to(target).unary_unary(
            details.method,
            request_serializer=_serialize,
            response_deserializer=self._outputs[details.method].FromString,
        )
        remaining = context.time_remaining()
        timeout = self._default_timeout_s if remaining is None else remaining
        upstream = forwarded(request, metadata=self._metadata(context), timeout=timeout)
        try:
            response = await upstream
        except grpc.aio.AioRpcError as error:
            await self._relay_error(error, target, context)
        context.set_trailing_metadata(tuple(await upstream.trailing_metadata() or ()))
        return response

    async def around_stream(self, call: NextStream, request: Any, context: Any, details: Any) -> AsyncIterator[Any]:
        target = await self._target(context)
        if target is None:
            async for item in call(request, context):
                yield item
            return
        forwarded = self._channel_to(target).unary_stream(
            details.method,
            request_serializer=_serialize,
            response_deserializer=self._outputs[details.method].FromString,
        )
        upstream = forwarded(request, metadata=self._metadata(context), timeout=context.time_remaining())
        try:
            async for item in upstream:
                yield item
            context.set_trailing_metadata(tuple(await upstream.trailing_metadata() or ()))
        except grpc.aio.AioRpcError as error:
            await self._relay_error(error, target, context)
        finally:
            upstream.cancel()  # the caller went away: so does the leader's side

    async def _target(self, context: Any) -> str | None:
        """None to serve here (we lead); else the leader's address. Aborts UNAVAILABLE when there is none."""
        if self._leadership.is_leader:
            return None
        metadata = context.invocation_metadata() or ()
        if any(key == FORWARDED_BY for key, _ in metadata):
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "the alert-service leader changed while forwarding this call; retry"
            )
        target = self._leadership.standby_target
        if target is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no alert-service leader yet; retry")
        self.forwarded += 1
        return target

    def _metadata(self, context: Any) -> tuple[tuple[str, str | bytes], ...]:
        kept = tuple(
            (key, value)
            for key, value in context.invocation_metadata() or ()
            if not key.startswith((":", "grpc-")) and key not in _TRANSPORT_KEYS
        )
        return (*kept, (FORWARDED_BY, self._leadership.me.replica_id))

    def _channel_to(self, target: str) -> grpc.aio.Channel:
        if self._channel is not None and self._channel[0] == target:
            return self._channel[1]
        if self._channel is not None:
            # The old leader stepped down (its streams ended) or died: let what is left of its calls go.
            closing = asyncio.create_task(self._channel[1].close(grace=1.0))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        self._channel = (target, self._open_channel(target))
        return self._channel[1]

    async def _relay_error(self, error: grpc.aio.AioRpcError, target: str, context: Any) -> None:
        trailing = tuple(error.trailing_metadata() or ())
        details = error.details() or ""
        if error.code() is grpc.StatusCode.UNAVAILABLE and not trailing:
            details = f"the alert-service leader at {target} did not answer ({details}); retry"
        await context.abort(error.code(), details, trailing)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel[1].close()
            self._channel = None
        await asyncio.gather(*self._closing, return_exceptions=True)


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())
