"""What every sender shares: the :class:`Sender` protocol, and the HTTP and thread plumbing behind each provider.

Every outbound URL a user chose goes through the egress-checked client (:class:`service_runtime.http_client.HttpClient`,
over kept connections: a notification may reach its receiver twice, which de-duplicates it by its delivery id),
every request has a total timeout, and every answer is classified the same way: 2xx success; 429, 5xx,
timeouts and connection failures retryable (with the provider's Retry-After when it gives one); any other
4xx, a redirect, or a refused target permanent.

Providers with only a blocking client (Apprise, smtplib, SendGrid's, the outbox file) run it through a
:class:`BlockingRunner`, never asyncio's default executor: a timeout only stops the wait, not the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from service_runtime.egress import BlockedTarget, EgressConfig, ResolutionFailed, tls_context
from service_runtime.http_client import HttpClient
from services.notify_svc.domain import ChannelConfig, Outcome
from services.notify_svc.templates import Message

MAX_ANSWER = 2048  # bytes of a provider's answer kept for the delivery log
MAX_RETRY_AFTER_S = 3600.0
USER_AGENT = "monitors-notify/0.1"
BLOCKING_SENDS = 8  # blocking client calls in progress at once, per sender
_T = TypeVar("_T")


@dataclass(frozen=True)
class SendResult:
    """What one attempt came to: the outcome, the provider's HTTP (or SMTP) code, its answer or the error,
    and how long the provider asked us to wait before trying again."""

    outcome: Outcome
    response_code: int = 0
    detail: str = ""
    retry_after_s: float | None = None


class Sender(Protocol):
    """Sends one rendered message to one channel's configuration, never longer than ``timeout_s``."""

    async def send(self, config: ChannelConfig, message: Message, delivery_id: str, timeout_s: float) -> SendResult:
        """One attempt; never raises for a provider's failure (it is in the result)."""
        ...


def sender_client(egress: EgressConfig) -> HttpClient:
    """The HTTP client of the senders: ``egress``'s policy and trusted CAs, answers read no further than
    MAX_ANSWER."""
    return HttpClient(egress.policy, tls_context(egress), MAX_ANSWER)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 10.2.3), capped at an hour."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def classify(status: int, answer: str, retry_after_s: float | None = None) -> SendResult:
    """The outcome of an HTTP answer: 2xx success, 429 and 5xx retryable, anything else permanent."""
    if 200 <= status < 300:
        return SendResult(Outcome.SUCCESS, status, answer)
    detail = f"HTTP {status}" + (f": {answer}" if answer else "")
    if status == 429 or status >= 500:
        return SendResult(Outcome.RETRYABLE, status, detail, retry_after_s)
    return SendResult(Outcome.PERMANENT, status, detail)


def failure(error: BaseException, timeout_s: float) -> SendResult:
    """The outcome of an attempt that got no HTTP answer."""
    if isinstance(error, BlockedTarget):
        return SendResult(Outcome.PERMANENT, 0, f"refused target: {error}")
    if isinstance(error, TimeoutError):
        return SendResult(Outcome.RETRYABLE, 0, f"no answer within {timeout_s:g}s")
    if isinstance(error, ResolutionFailed):
        return SendResult(Outcome.RETRYABLE, 0, str(error))
    return SendResult(Outcome.RETRYABLE, 0, f"{type(error).__name__}: {error}"[:300])


async def post_json(
    client: HttpClient,
    url: str,
    payload: Any,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[SendResult, bytes]:
    """POST ``payload`` as JSON (or ``body`` as given) within ``timeout_s`` in all, keeping at most MAX_ANSWER
    bytes of the answer (the client reads no further). Returns the classified result and the answer's first
    bytes."""
    content = body if body is not None else json.dumps(payload).encode()
    all_headers = {"content-type": "application/json", "user-agent": USER_AGENT, **(headers or {})}
    try:
        async with asyncio.timeout(timeout_s):
            response = await client.request("POST", url, all_headers, content, repeatable=True)
    except Exception as error:  # noqa: BLE001 - every failure to get an answer is an outcome, not a crash
        return failure(error, timeout_s), b""
    answer = response.body[:MAX_ANSWER]
    text = answer.decode(errors="replace").strip()
    return classify(response.status, text, parse_retry_after(response.headers.get("retry-after"))), answer


def iso(moment: datetime | None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")


class JsonPostSender:
    """Posts ``payload(message)`` to ``url(config)``: a provider whose whole protocol is one JSON POST."""

    def __init__(
        self,
        client: HttpClient,
        url: Callable[[ChannelConfig], str],
        payload: Callable[[Message], dict[str, Any]],
    ) -> None:
        self._client = client
        self._url = url
        self._payload = payload

    async def send(self, config: ChannelConfig, message: Message, delivery_id: str, timeout_s: float) -> SendResult:
        result, _ = await post_json(self._client, self._url(config), self._payload(message), timeout_s)
        return result


class Busy(Exception):
    """Every thread a :class:`BlockingRunner` may use is still busy with an earlier send."""


BUSY = SendResult(Outcome.RETRYABLE, 0, "busy: earlier sends still running")


class BlockingRunner:
    """Runs a blocking provider call in a thread, at most ``limit`` at once, and answers :class:`Busy` at once
    beyond that rather than queueing.

    A timeout stops only the wait: a server that answers one byte at a time beats per-read socket timeouts
    and keeps the thread. In asyncio's default executor such threads starved every other send and
    ``loop.getaddrinfo`` (every HTTP sender's egress check). Here they hold only this runner's slots, each
    until its thread really ends. Threads are daemons so a stuck one cannot hold up the process's exit (the
    default executor, and ThreadPoolExecutor, join theirs).
    """

    def __init__(self, limit: int = BLOCKING_SENDS, name: str = "notify-send") -> None:
        self._slots = threading.BoundedSemaphore(limit)
        self._name = name

    async def run(self, work: Callable[[], _T], timeout_s: float) -> _T:
        """``work()``'s result or exception; Busy when no thread is free, TimeoutError after ``timeout_s``."""
        if not self._slots.acquire(blocking=False):
            raise Busy(f"{self._name}: earlier sends still running")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[_T] = loop.create_future()

        def settle(set_answer: Callable[[], None]) -> None:
            if not answer.done():  # else the caller gave up waiting
                set_answer()

        def thread() -> None:
            set_answer: Callable[[], None]
            try:
                result = work()
            except BaseException as error:  # noqa: BLE001 - handed to the waiting coroutine
                set_answer = functools.partial(answer.set_exception, error)
            else:
                set_answer = functools.partial(answer.set_result, result)
            finally:
                self._slots.release()  # before the answer: a caller that sends again finds the slot free
            # RuntimeError: the loop closed while this thread was stuck; nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, set_answer)

        try:
            threading.Thread(target=thread, name=self._name, daemon=True).start()
        except BaseException:
            self._slots.release()
            raise
        async with asyncio.timeout(timeout_s):
            return await answer

    async def send(self, work: Callable[[], SendResult], timeout_s: float) -> SendResult:
        """``work()``'s result given ``timeout_s`` (and a second to hand it back); "busy" or "no answer within"
        (both retryable) when no thread is free or the answer is late."""
        try:
            return await self.run(work, timeout_s + 1.0)
        except Busy:
            return BUSY
        except TimeoutError as error:
            return failure(error, timeout_s)
