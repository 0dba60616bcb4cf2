"""The website checks' HTTP/1.1 client against a real TCP server on loopback that answers with scripted bytes:
each framing, keep-alive and its limits, interim answers, malformed and cut-off answers, caps, timeouts, the
request it writes, and the same on uvloop (the runner's loop). The egress policy itself is tested in
test_egress.py through the website check, which uses this client."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import threading
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop

from harness.http import HttpServer, Reply, self_signed_certificate
from harness.services import free_port
from service_runtime.egress import BlockedTarget, EgressPolicy
from service_runtime.http_client import (
    ConnectFailed,
    HttpClient,
    InvalidUrl,
    ProtocolError,
    _Connection,
    parse_url,
)

# What the server does with one request: bytes to send, then keep the connection or close it. None: close
# the connection without answering.
Answer = tuple[bytes, bool] | None


@dataclass
class ScriptedServer:
    """A TCP server on its own thread and loop. Each request (a head up to its blank line, plus a body of
    its Content-Length) is answered by ``answer(request, n)``, n counting requests on its connection from 1."""

    answer: Callable[[bytes, int], Answer]
    port: int = field(default_factory=free_port)
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()
        self._server.close()
        for writer in self._writers:  # handlers then end on their own (cancelling them makes asyncio log)
            writer.transport.abort()
        tasks = asyncio.all_tasks(self._loop)
        if tasks:
            self._loop.run_until_complete(asyncio.wait(tasks, timeout=5))
        self._loop.run_until_complete(self._server.wait_closed())
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        number = 0
        try:
            while True:
                number += 1
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = self.answer(request, number)
                if answer is None:
                    break
                data, keep = answer
                writer.write(data)
                await writer.drain()
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def always(data: bytes, keep: bool = True) -> Callable[[bytes, int], Answer]:
    return lambda request, number: (data, keep)


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    made = HttpClient(EgressPolicy.PRIVATE_ALLOWED, ssl.create_default_context(), max_body_bytes=1024)
    yield made
    await made.aclose()


async def test_each_framing_is_read(client: HttpClient) -> None:
    answers = {
        b"/length": (OK, True),
        b"/chunked": (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: yes\r\n\r\n",
            True,
        ),
        b"/to-end": (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", False),
        b"/empty": (b"HTTP/1.1 204 No Content\r\n\r\n", True),
        b"/folded": (
            b"HTTP/1.1 200 OK\r\nX-Long: one\r\n  two\r\nX-Twice: a\r\nx-twice: b\r\nContent-Length: 0\r\n\r\n",
            True,
        ),
        b"/lf": (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nlf", True),
        b"/lf-crlf-body": (b"HTTP/1.1 200 OK\nContent-Length: 6\n\na\r\n\r\nb", True),
        b"/lf-then-crlf": (b"HTTP/1.1 200 OK\nContent-Length: 5\n\r\nmixed", True),  # timed out before
    }
    with ScriptedServer(lambda request, number: answers[request.split(b" ")[1]]) as server:
        assert (await client.request("GET", server.url("/length"), {})).body == b"ok"
        chunked = await client.request("GET", server.url("/chunked"), {})
        assert (chunked.status, chunked.body, chunked.truncated) == (200, b"hello world", False)
        assert (await client.request("GET", server.url("/to-end"), {})).body == b"until the end"
        assert (await client.request("GET", server.url("/empty"), {})).body == b""
        folded = await client.request("GET", server.url("/folded"), {})
        assert (folded.headers["x-long"], folded.headers["x-twice"]) == ("one two", "a, b")
        assert (await client.request("GET", server.url("/lf"), {})).body == b"lf"
        assert (await client.request("GET", server.url("/lf-crlf-body"), {})).body == b"a\r\n\r\nb"
        mixed = await client.request("GET", server.url("/lf-then-crlf"), {})
        assert (mixed.body, mixed.headers["content-length"]) == (b"mixed", "5")
        # Kept alive: length, chunked, the 204, the folded one; "to the end" uses its connection up.
        assert server.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ],
    ids=["chunked-and-length", "chunked-on-http-1.0"],
)
async def test_suspect_framing_is_read_but_never_reused(client: HttpClient, answer: bytes) -> None:
    with ScriptedServer(always(answer)) as server:
        for _ in range(2):
            assert (await client.request("GET", server.url(), {})).body == b"ok"
        assert server.connections == 2


async def test_bytes_nobody_asked_for_drop_an_idle_connection(client: HttpClient) -> None:
    """A server that answers and then sends more (a second, unrequested response) must not have those bytes
    read as the answer to the next request, which may be another user's check of the same origin."""
    extra = OK.replace(b"ok", b"no")
    with ScriptedServer(lambda request, number: (OK + extra if number == 1 else OK, True)) as server:
        assert (await client.request("GET", server.url(), {})).body == b"ok"
        await asyncio.sleep(0.2)  # the extra response arrives while the connection is idle
        assert (await client.request("GET", server.url(), {})).body == b"ok"
        assert server.connections == 2


async def test_head_reads_no_body_even_with_a_length(client: HttpClient) -> None:
    with ScriptedServer(always(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n")) as server:
        for _ in range(3):
            response = await client.request("HEAD", server.url(), {})
            assert (response.status, response.body, response.headers["content-length"]) == (200, b"", "5000")
        assert server.connections == 1


async def test_connections_are_kept_alive_by_origin_and_not_past_their_end(client: HttpClient) -> None:
    with ScriptedServer(always(OK)) as kept, ScriptedServer(always(OK)) as other:
        for _ in range(5):
            await client.request("GET", kept.url(), {})
            await client.request("GET", other.url(), {})
        assert (kept.connections, other.connections) == (1, 1)
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    old = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
    old_kept = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
    for answer, connections in ((closing, 3), (old, 3), (old_kept, 1)):
        with ScriptedServer(always(answer)) as server:
            for _ in range(3):
                assert (await client.request("GET", server.url(), {})).body == b"ok"
            assert server.connections == connections, answer
    assert client.idle_connections <= 3


async def test_connections_that_carried_credentials_serve_only_the_same_credentials(client: HttpClient) -> None:
    """Servers that authenticate a connection (NTLM, Negotiate) must not see one tenant's authenticated
    connection reused for another tenant's check of the same origin."""
    with ScriptedServer(always(OK)) as server:
        await client.request("GET", server.url(), {})
        await client.request("GET", server.url(), {})
        assert server.connections == 1
        await client.request("GET", server.url(), {"Authorization": "Bearer a"})
        await client.request("GET", server.url(), {"authorization": "Bearer a"})
        assert server.connections == 2
        await client.request("GET", server.url(), {"Authorization": "Bearer b"})
        await client.request("GET", server.url(), {"Cookie": "session=a"})
        await client.request("GET", server.url().replace("http://", "http://user:pw@"), {})
        assert server.connections == 5
        await client.request("GET", server.url(), {})  # the first, credential-free connection again
        assert server.connections == 5


async def test_a_stale_connection_is_retried_once_and_only_idempotent_requests_reuse_one(
    client: HttpClient,
) -> None:
    """The server answers the first request on each connection and drops the second unanswered, as a server
    whose keep-alive ran out just as the request was sent."""

    def first_only(request: bytes, number: int) -> Answer:
        return (OK, True) if number == 1 else None

    with ScriptedServer(first_only) as server:
        assert (await client.request("GET", server.url(), {})).body == b"ok"
        assert (await client.request("GET", server.url(), {})).body == b"ok"  # dropped, then retried
        assert server.connections == 2
        # A POST may not be repeated, so it never takes a kept connection: it cannot meet a stale one.
        assert (await client.request("POST", server.url(), {}, b"once")).body == b"ok"
        assert server.connections == 3
        assert sum(request.endswith(b"once") for request in server.requests) == 1
        # A request that says Connection: close leaves nothing behind to reuse.
        await client.aclose()
        await client.request("GET", server.url(), {"Connection": "close"})
        assert client.idle_connections == 0


async def test_a_repeatable_post_goes_on_a_kept_connection_and_is_retried_once_on_a_stale_one(
    client: HttpClient,
) -> None:
    """A notification's POST (its receiver drops repeats by delivery id) reuses a kept connection, as a GET
    does, so a burst of webhooks to one receiver does not pay a connection and a TLS handshake each."""
    with ScriptedServer(always(OK)) as server:
        for _ in range(3):
            assert (await client.request("POST", server.url(), {}, b"alert", repeatable=True)).body == b"ok"
        assert server.connections == 1

    def first_only(request: bytes, number: int) -> Answer:
        return (OK, True) if number == 1 else None

    with ScriptedServer(first_only) as server:
        assert (await client.request("POST", server.url(), {}, b"one", repeatable=True)).body == b"ok"
        assert (await client.request("POST", server.url(), {}, b"two", repeatable=True)).body == b"ok"
        assert server.connections == 2  # the second was dropped on the kept connection and sent again
        assert sum(request.endswith(b"two") for request in server.requests) == 2


async def test_interim_answers_are_skipped(client: HttpClient) -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + OK
    with ScriptedServer(always(answer)) as server:
        response = await client.request("GET", server.url(), {})
        assert (response.status, response.body, "link" in response.headers) == (200, b"ok", False)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1 response"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP/1 response"),
        (b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n", "malformed header field"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", "larger than 64 KiB"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", "more than 100 header fields"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "before the whole body"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok", "invalid Content-Length"),
        ("HTTP/1.1 200 OK\r\nContent-Length: \u00b2\r\n\r\nok".encode("latin-1"), "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\nok", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+2\r\nok\r\n0\r\n\r\n", "invalid chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-0\r\n\r\n", "invalid chunk size"),
        (b"HTTP/1.1 103 Early Hints\r\n\r\n" * 11 + OK, "more than 10 interim"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n", "not followed by a line"),
        (b"HTTP/1.1 200 OK\r\nContent", "middle of the response head"),
        (b"", "without answering"),
    ],
    ids=lambda value: value[:24].decode("latin-1") if isinstance(value, bytes) else None,
)
async def test_answers_that_are_not_http_are_protocol_errors(client: HttpClient, answer: bytes, message: str) -> None:
    with ScriptedServer(always(answer, keep=False)) as server, pytest.raises(ProtocolError, match=message):
        await client.request("GET", server.url(), {})
    assert client.idle_connections == 0


async def test_bodies_stop_at_the_cap_and_their_connection_is_not_reused(client: HttpClient) -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 4000000\r\n\r\n" + b"x" * 4_000_000
    with ScriptedServer(always(big)) as server:
        response = await client.request("GET", server.url(), {})
        assert (len(response.body), response.truncated) == (1024, True)
        assert client.idle_connections == 0
        await client.request("GET", server.url(), {})
        assert server.connections == 2


async def test_compressed_bodies_are_decoded_up_to_the_cap(client: HttpClient) -> None:
    small = gzip.compress(b"hello compressed")
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small)
    bomb = gzip.compress(b"\0" * (16 * 1024 * 1024))
    padded = gzip.compress(b"padded") + b"\0" * (8 * 1024 * 1024)
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_deflate = raw.compress(b"raw deflate") + raw.flush()
    answers = {
        b"/small": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
        b"/bomb": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(bomb), bomb),
        b"/broken": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!",
        b"/padded": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
        % (len(padded), padded),
        b"/raw": b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n%s"
        % (len(raw_deflate), raw_deflate),
        b"/br": b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 4\r\n\r\n\x0b\x01\x80\x03",
    }
    with ScriptedServer(lambda request, number: (answers[request.split(b" ")[1]], True)) as server:
        assert (await client.request("GET", server.url("/small"), {})).body == b"hello compressed"
        bombed = await client.request("GET", server.url("/bomb"), {})
        assert (len(bombed.body), bombed.truncated) == (1024, True)
        broken = await client.request("GET", server.url("/broken"), {})
        assert (broken.status, broken.body, broken.decode_error) == (200, b"", "the body is not valid gzip")
        # Bytes after the compressed stream are not decoded, and no more than the bound of them is read.
        padded_response = await client.request("GET", server.url("/padded"), {})
        assert (padded_response.body, padded_response.truncated) == (b"padded", True)
        assert (await client.request("GET", server.url("/raw"), {})).body == b"raw deflate"
        brotli = await client.request("GET", server.url("/br"), {})
        assert brotli.decode_error == "the body is br-encoded, which checks cannot decode"


async def test_a_timeout_aborts_the_connection(client: HttpClient) -> None:
    slow = threading.Event()

    def late(request: bytes, number: int) -> Answer:
        slow.wait(2)
        return OK, True

    with ScriptedServer(late) as server:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.request("GET", server.url(), {})
        assert client.idle_connections == 0
        slow.set()


async def test_refused_and_blocked_targets(client: HttpClient) -> None:
    with pytest.raises(ConnectFailed, match=r"127\.0\.0\.1"):
        await client.request("GET", f"http://127.0.0.1:{free_port()}/", {})
    public = HttpClient(EgressPolicy.PUBLIC, ssl.create_default_context(), 1024)
    with ScriptedServer(always(OK)) as server:
        with pytest.raises(BlockedTarget):
            await public.request("GET", server.url(), {})
        assert server.connections == 0


async def test_the_request_it_writes(client: HttpClient) -> None:
    with ScriptedServer(always(OK)) as server:
        await client.request(
            "POST",
            f"http://user:p%40ss@127.0.0.1:{server.port}/a path/ü?q=1 2",
            {"X-Token": "abc", "Content-Length": "999", "Transfer-Encoding": "chunked"},
            b"{}",
        )
        head, body = server.requests[-1].split(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"POST /a%20path/%C3%BC?q=1%202 HTTP/1.1"
        assert f"Host: 127.0.0.1:{server.port}".encode() in lines
        assert b"Authorization: Basic dXNlcjpwQHNz" in lines  # user:p@ss
        assert b"X-Token: abc" in lines
        assert b"Content-Length: 2" in lines
        assert b"Content-Length: 999" not in lines
        assert not any(line.lower().startswith(b"transfer-encoding") for line in lines)
        assert body == b"{}"
        await client.request("GET", server.url(), {"Host": "example.org"})
        assert b"\r\nHost: example.org\r\n" in server.requests[-1]
        assert b"Host: 127.0.0.1" not in server.requests[-1]
        for headers in ({"X-Evil": "a\r\nInjected: yes"}, {"X-Tab": "a\x0bb"}, {"Bad Name": "x"}):
            with pytest.raises(InvalidUrl):
                await client.request("GET", server.url(), headers)
        with pytest.raises(InvalidUrl):
            await client.request("GET", server.url("/a\r\nInjected: yes"), {})
        with pytest.raises(InvalidUrl):
            await client.request("GET\r\n", server.url(), {})
        assert len(server.requests) == 2


def test_urls_are_parsed_to_what_is_connected_and_sent() -> None:
    target = parse_url("https://Bücher.Example/x")
    assert (target.host, target.port, target.host_field) == ("xn--bcher-kva.example", 443, "xn--bcher-kva.example")
    v6 = parse_url("http://[::1]:8080")
    assert (v6.host, v6.port, v6.host_field, v6.path) == ("::1", 8080, "[::1]:8080", "/")
    assert parse_url("http://example.com:80/?a=b").host_field == "example.com"
    for bad in (
        "ftp://example.com/",
        "file:///etc/passwd",
        "http:///nohost",
        "http://example.com:99999/",
        "http://[::1/",
    ):
        with pytest.raises(InvalidUrl):
            parse_url(bad)


def test_the_same_on_uvloop(tmp_path: Path) -> None:
    """The runner runs checks on uvloop, whose transports differ from asyncio's own: plain and TLS."""
    cert, key = self_signed_certificate(tmp_path, days=30)

    async def scenario(plain: ScriptedServer, secure: HttpServer) -> tuple[list[bytes], Any]:
        context = ssl.create_default_context(cafile=str(cert))
        client = HttpClient(EgressPolicy.PRIVATE_ALLOWED, context, max_body_bytes=1024 * 1024)
        bodies = [(await client.request("GET", plain.url(), {})).body for _ in range(3)]
        async with asyncio.timeout(5):
            big_response = await client.request("GET", plain.url("/big"), {})
        bodies.append(big_response.body[:2] + b"%d" % len(big_response.body))
        tls = await client.request("GET", secure.url("/", host="localhost"), {})
        await client.aclose()
        return bodies, tls

    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    # More than a mebibyte at once (reading pauses) whose end is read line by line (trailer fields): reading
    # must resume, or the request hangs although the whole answer was sent.
    trailers = b"".join(b"T%d: %s\r\n" % (i, b"v" * 8000) for i in range(100))
    big = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n%s\r\n" % (
        600 * 1024,
        b"x" * (600 * 1024),
        trailers,
    )
    answers = {b"/": chunked, b"/big": big}
    with (
        ScriptedServer(lambda request, number: (answers[request.split(b" ")[1]], True)) as plain,
        HttpServer(certificate=(cert, key)) as secure,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        secure.routes["/"] = Reply(200, b"secure")
        bodies, tls = runner.run(scenario(plain, secure))
        assert bodies == [b"ok"] * 3 + [b"xx614400"]
        assert plain.connections == 1
        assert (tls.status, tls.body) == (200, b"secure")
        assert "notAfter" in tls.peer_cert


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_reading_resumes_after_a_pause(loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    """A connection stops reading with more than a mebibyte buffered; whatever then consumes the buffer (here
    line by line, as trailer fields are read) must start it reading again, or the rest never arrives."""
    lines = 3000
    payload = (b"x" * 1023 + b"\n") * lines

    async def scenario() -> tuple[bool, int]:
        finished = asyncio.Event()

        async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(payload)
                await writer.drain()
                await reader.read()
            except ConnectionError:
                pass
            finally:
                writer.close()
                finished.set()

        loop = asyncio.get_running_loop()
        server = await asyncio.start_server(send, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, connection = await loop.create_connection(lambda: _Connection(loop), "127.0.0.1", port)
        for _ in range(100):  # until reading pauses
            await asyncio.sleep(0.01)
            if connection._paused:
                break
        paused = connection._paused
        read = 0
        try:
            async with asyncio.timeout(5):
                while read < lines:
                    assert await connection.read_line() == b"x" * 1023
                    read += 1
        except TimeoutError:
            pass  # reported below as the lines that never arrived
        finally:
            connection.abort()
            await finished.wait()
            server.close()
            await server.wait_closed()
        return paused, read

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(scenario()) == (True, lines)
