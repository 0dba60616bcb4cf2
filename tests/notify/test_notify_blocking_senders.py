"""The senders with blocking clients (Apprise, SMTP) against real loopback servers that misbehave.

- Apprise URLs that make Apprise connect somewhere other than their checked host (``mailto://...?smtp=``), a name
  that does not resolve, and HTTP redirects never get Apprise to a refused address.
- A server that answers one byte at a time (per-read timeouts never fire) holds only the sender's own few
  threads: later sends are answered "busy" at once, asyncio's default executor stays free, and SMTP sends are
  cut at their deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType

import pytest

from harness.http import HttpServer, Reply
from service_runtime.egress import EgressPolicy, resolve
from service_runtime.errors import InvalidArgument
from services.notify_svc.domain import (
    AppriseConfig,
    ChannelDraft,
    EmailConfig,
    Notification,
    NotificationKind,
    Outcome,
    validate_channel,
)
from services.notify_svc.notifications import CHANNEL_CHECKS
from services.notify_svc.senders.apprise_urls import AppriseSender, url_problem
from services.notify_svc.senders.base import BLOCKING_SENDS
from services.notify_svc.senders.mail import SmtpSender
from services.notify_svc.templates import render

MESSAGE = render(Notification(NotificationKind.TEST))
TO = EmailConfig(("ops@example.com",))


class Trickler:
    """A loopback server answering ``preamble`` and then filler one byte every 0.1 s, for ever: no socket read
    waits long enough for a per-read timeout. Counts the connections it accepts and those the client hung up."""

    def __init__(self, preamble: bytes) -> None:
        self.preamble = preamble
        self.accepted = 0
        self.hung_up = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._serving: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Trickler:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:  # ends the clients' reads, so their threads end
            writer.close()
        if self._serving:  # each sees its connection end; none is left for the loop's teardown to cancel
            await asyncio.wait(self._serving, timeout=5.0)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        serving = asyncio.current_task()
        assert serving is not None
        self._serving.add(serving)
        trickle = asyncio.create_task(self._trickle(writer))
        try:
            while await reader.read(65536):  # the request, if any, then nothing until the client hangs up
                pass
        except OSError:
            pass
        self.hung_up += 1
        trickle.cancel()
        writer.close()

    async def _trickle(self, writer: asyncio.StreamWriter) -> None:
        try:
            for byte in self.preamble + b"a" * 100_000:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)
        except OSError:
            pass


async def until(condition: Callable[[], bool], timeout_s: float) -> bool:
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


# --- Bug 1: Apprise reaching addresses the egress policy refuses -------------------------------------


@pytest.mark.parametrize(
    ("url", "argument"),
    [
        ("mailto://user:pass@93.184.215.14:2525?smtp=127.0.0.1&from=a@example.com&to=b@example.com", "smtp"),
        ("mailtos://user:pass@example.com?SMTP=10.0.0.5&to=b@example.com", "smtp"),
        ("mailto://user:pass@example.com?%73mtp=10.0.0.5", "smtp"),  # Apprise unquotes argument names
        ("irc://bot@irc.example.com/?host=127.0.0.1&to=#ops", "host"),
        ("xmpp://user:pass@example.com?xmpp=127.0.0.1", "xmpp"),
        ("nostr://nsec1secret/npub1someone?relay=ws://127.0.0.1:7777", "relay"),
        ("workflow://example.com:443/workflow/signature?template=http://127.0.0.1/t.json", "template"),
        ("mailto://user:pass@example.com?pgppub=/etc/passwd&to=b@example.com", "pgppub"),
    ],
)
def test_apprise_arguments_that_name_another_server_or_a_file_are_refused(url: str, argument: str) -> None:
    problem = url_problem(url)
    assert problem is not None
    assert f"{argument}=" in problem
    # ... when the channel is created or updated: INVALID_ARGUMENT naming the URL field.
    with pytest.raises(InvalidArgument) as caught:
        validate_channel(ChannelDraft(config=AppriseConfig(url)), CHANNEL_CHECKS)
    assert [(v.field, v.description) for v in caught.value.violations] == [("channel.apprise.url", problem)]


@pytest.mark.parametrize(
    "url",
    [
        "tgram://123456789:AAbbCC/12345",
        "mailto://user:pass@example.com?to=b@example.com&from=a@example.com&name=Ops",
        "json://hooks.example.com/path?-smtp=1&+X-Host=a",  # a payload field and a header, not arguments
        "ntfy://ntfy.example.com/topic?priority=high",
    ],
)
def test_ordinary_apprise_urls_pass(url: str) -> None:
    assert url_problem(url) is None


async def test_mailto_with_an_smtp_override_never_connects_to_it() -> None:
    # The reported exploit: a public host passes the host check; ?smtp= points Apprise at a loopback mail server.
    connected: list[str] = []

    async def mail_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.append("connection")
        writer.write(b"220 internal-smtp ESMTP\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(mail_server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"mailto://user:pass@93.184.215.14:{port}?smtp=127.0.0.1&from=a@example.com&to=b@example.com"
    try:
        result = await AppriseSender(EgressPolicy.PUBLIC).send(AppriseConfig(url), MESSAGE, "d", 2.0)
    finally:
        server.close()
        await server.wait_closed()
    assert result.outcome is Outcome.PERMANENT
    assert result.detail.startswith("refused target: the URL may not set smtp=")
    assert connected == []


async def test_a_name_that_does_not_resolve_is_not_handed_to_apprise() -> None:
    # Apprise would look it up again itself, unchecked; .invalid never resolves (RFC 2606).
    url = "json://ops.example.invalid:8080/notify"
    result = await AppriseSender(EgressPolicy.PUBLIC).send(AppriseConfig(url), MESSAGE, "d", 5.0)
    assert result.outcome is Outcome.RETRYABLE
    assert result.detail.startswith("refused target: ")
    assert "does not resolve" in result.detail
    assert "ops.example.invalid" not in result.detail  # Apprise hosts may be tokens: masked


async def test_apprise_does_not_follow_redirects() -> None:
    with HttpServer() as elsewhere, HttpServer() as first:
        elsewhere.routes["/internal"] = Reply(200, b"{}")
        first.routes["/notify"] = Reply(302, b"", {"location": elsewhere.url("/internal")})
        url = first.url("/notify").replace("http://", "json://") + "?redirect=yes"
        result = await AppriseSender(EgressPolicy.PRIVATE_ALLOWED).send(AppriseConfig(url), MESSAGE, "d", 5.0)
        assert len(first.requests) == 1
        assert elsewhere.requests == []
    assert result.outcome is not Outcome.SUCCESS


# --- Bug 2: blocking sends starving threads --------------------------------------------------------------


async def test_stuck_apprise_sends_hold_only_their_own_threads_and_later_ones_are_answered_busy_at_once() -> None:
    sender = AppriseSender(EgressPolicy.PRIVATE_ALLOWED)  # private-allowed: the trickler is on loopback
    async with Trickler(b"HTTP/1.1 200 OK\r\nX-Slow: ") as trickler:
        url = AppriseConfig(f"json://127.0.0.1:{trickler.port}/")
        stuck = [asyncio.create_task(sender.send(url, MESSAGE, f"d{i}", 0.5)) for i in range(BLOCKING_SENDS)]
        await until(lambda: trickler.accepted >= BLOCKING_SENDS, 5.0)
        started = time.monotonic()
        late = await sender.send(url, MESSAGE, "late", 0.5)
        assert time.monotonic() - started < 0.5
        assert late.outcome is Outcome.RETRYABLE
        assert late.detail == "busy: earlier sends still running"
        assert trickler.accepted == BLOCKING_SENDS
        # asyncio's default executor, which loop.getaddrinfo (every HTTP sender's egress check) needs, is free.
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 1), 2.0) == 1
        assert await asyncio.wait_for(resolve("localhost", 443, EgressPolicy.PRIVATE_ALLOWED), 2.0)
        for result in await asyncio.gather(*stuck):
            assert result.outcome is Outcome.RETRYABLE
            assert result.detail == "no answer within 0.5s"
        # Their waits ended, their threads did not: still busy, still answered at once.
        assert (await sender.send(url, MESSAGE, "later", 0.5)).detail == late.detail
    # The trickler hung up on them: the threads end and sends go out again.
    with HttpServer() as server:
        server.routes["/notify"] = Reply(200, b"{}")
        good = AppriseConfig(server.url("/notify").replace("http://", "json://"))
        for _ in range(100):
            result = await sender.send(good, MESSAGE, "after", 5.0)
            if result.detail != late.detail:
                break
            await asyncio.sleep(0.05)
        assert result.outcome is Outcome.SUCCESS


async def test_smtp_sends_to_a_trickling_server_end_at_their_deadline_and_free_their_threads() -> None:
    async with Trickler(b"220") as trickler:  # a greeting that never ends
        sender = SmtpSender(f"smtp://127.0.0.1:{trickler.port}", "alerts@monitors.example")
        started = time.monotonic()
        results = await asyncio.gather(*(sender.send(TO, MESSAGE, f"d{i}", 0.5) for i in range(BLOCKING_SENDS + 2)))
        assert time.monotonic() - started < 1.4  # the deadline, not the wait's extra second
        busy = [r for r in results if r.detail == "busy: earlier sends still running"]
        cut = [r for r in results if r.detail == "no answer within 0.5s"]
        assert (len(busy), len(cut)) == (2, BLOCKING_SENDS)
        assert all(r.outcome is Outcome.RETRYABLE for r in results)
        # Every connection was closed by its deadline, so its thread is free again.
        assert await until(lambda: trickler.hung_up == BLOCKING_SENDS, 2.0), (trickler.accepted, trickler.hung_up)
        again = await sender.send(TO, MESSAGE, "again", 0.5)
        assert again.detail == "no answer within 0.5s"
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 1), 2.0) == 1
