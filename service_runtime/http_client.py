"""A lean HTTP/1.1 client for website checks and notification senders, on asyncio's Protocol, behind the egress
policy.

Every new connection resolves its name once through :func:`service_runtime.egress.resolve` (which refuses
the name if any of its addresses is refused) and connects to a checked address itself, so a second lookup
cannot swap in another. Connections are kept alive by origin and reused while fresh, by idempotent requests
and by those the caller marks repeatable (a notification, which its receiver de-duplicates); one that the
server closed as the request went out is retried once on a new connection. A connection
is never reused after a response whose framing is suspect (Transfer-Encoding with Content-Length, or on
HTTP/1.0), that was not read to its end, or when bytes arrive that nobody asked for. Response heads are
bounded (64 KiB, 100 fields, 10 interim responses), bodies are read no further than a cap, and gzip or
deflate bodies are decoded no further than that cap either, with their compressed input bounded too, so a
compression bomb costs nothing. Time is bounded by the caller (``asyncio.timeout``): a cancelled request
aborts its connection.

Why not httpx here: a check or a webhook is one small request, and httpx with httpcore, anyio and h11 spends
about half a millisecond of CPU on it, most of a runner's cost per check (0.69 ms a signed webhook POST over
kept TLS connections, against 0.135 ms here). What it leaves out neither needs: HTTP/2, proxies, cookies,
upgrades, ``Expect: 100-continue``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import ssl
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote, unquote, urlsplit

from service_runtime.egress import EgressPolicy, resolve

KEEPALIVE_EXPIRY_S = 5.0
MAX_HEAD_BYTES = 64 * 1024
# The blank line ending a head: after a CRLF or a bare LF line (servers mix them: "\n\r\n" ends a head too).
_BLANK_LINE = re.compile(rb"\n\r?\n")
MAX_FIELDS = 100
MAX_LINE_BYTES = 8 * 1024
MAX_INTERIM = 10
_PAUSE_ABOVE = 1024 * 1024
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_NO_BODY_STATUS = frozenset({204, 304})
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_OURS = frozenset({"content-length", "transfer-encoding"})  # framing is ours to write, never a user's
_PATH_SAFE = "!#$%&'()*+,/:;=?@[]~"  # reserved characters and % stay; spaces and non-ASCII are encoded
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_FIELD_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # controls but horizontal tab
_DECODABLE = frozenset({"gzip", "x-gzip", "deflate"})


class HttpError(Exception):
    """A request that did not get an HTTP answer."""


class InvalidUrl(HttpError):
    """The URL is not one a check may fetch."""


class ConnectFailed(HttpError):
    """No TCP connection to any address of the target."""


class TlsFailed(HttpError):
    """The TLS handshake failed (an untrusted or mismatched certificate, a protocol error)."""


class ProtocolError(HttpError):
    """The server's answer is not HTTP/1.x this client can read, or it ended too early."""


class _Unanswered(ProtocolError):
    """The connection closed before a byte of the response: on a reused connection, a stale one."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL points: what to connect to, what to say in the request line and Host field."""

    scheme: str
    host: str  # ASCII (IDNA), IPv6 without brackets
    port: int
    host_field: str
    path: str  # path and query, percent-encoded
    authorization: str  # from user:password@ in the URL, else ""


def parse_url(url: str) -> Target:
    """``url`` as a :class:`Target`; InvalidUrl when it is not an http(s) URL with a host."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in url):
        raise InvalidUrl("URL contains control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InvalidUrl(str(error)) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidUrl(f"scheme {scheme or 'none'!r} is not http or https")
    host = parts.hostname or ""
    if not host:
        raise InvalidUrl("URL has no host")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as error:
            raise InvalidUrl(f"host is not a valid international name: {error}") from None
    default = 443 if scheme == "https" else 80
    port = port or default
    host_field = f"[{host}]" if ":" in host else host
    if port != default:
        host_field += f":{port}"
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=_PATH_SAFE)
    authorization = ""
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
    return Target(scheme, host, port, host_field, path, authorization)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # lower-case names; repeated fields joined with ", "
    body: bytes  # decoded from gzip/deflate when the server sent it so; at most the cap
    truncated: bool  # the body went on past the cap
    peer_cert: Mapping[str, Any] | None  # the server's certificate (ssl.getpeercert()) over https
    decode_error: str = ""  # why the body could not be decoded (an unknown or broken Content-Encoding)


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: bytes in a buffer, and a future to wait on for more."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.error: Exception | None = None
        self.idle_since = 0.0
        self.peer_cert: Mapping[str, Any] | None = None
        self.in_flight = True  # a request is (about to be) sent and its response not yet read
        self.lost: asyncio.Future[None] = loop.create_future()  # done once the connection is gone
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._scanned = 0  # how far read_head has looked for the blank line

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses

    def data_received(self, data: bytes) -> None:
        if not self.in_flight:  # bytes nobody asked for: the connection is out of step, drop it
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
            return
        self.buffer += data
        if len(self.buffer) > _PAUSE_ABOVE and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self._wake()
        if not self.lost.done():
            self.lost.set_result(None)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # reading

    async def _more(self) -> None:
        """Wait for more bytes (or the end of the connection), reading again if reading was paused."""
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        waiter = self._waiter = self.loop.create_future()
        await waiter

    async def read_some(self, most: int) -> bytes:
        """Between 1 and ``most`` bytes, or b"" once the connection has ended."""
        while not self.buffer:
            if self.closed:
                return b""
            await self._more()
        if most >= len(self.buffer):
            data = bytes(self.buffer)
            self.buffer.clear()
        else:
            data = bytes(self.buffer[:most])
            del self.buffer[:most]
        if self._paused and len(self.buffer) < _PAUSE_ABOVE // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    async def read_line(self) -> bytes:
        """One line without its line ending."""
        while (end := self.buffer.find(b"\n")) < 0:
            if len(self.buffer) > MAX_LINE_BYTES:
                raise ProtocolError("a line of the response is too long")
            if self.closed:
                raise ProtocolError("connection closed in the middle of the response")
            await self._more()
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
        return line[:-1] if line.endswith(b"\r") else line

    async def read_head(self) -> bytes:
        """The response head up to its blank line (the blank line consumed)."""
        while True:
            # The head ends at its first blank line (CRLF or bare LF), within the first 64 KiB; a blank line
            # may straddle what arrived before and what arrived now.
            start, stop = max(0, self._scanned - 3), min(len(self.buffer), MAX_HEAD_BYTES + 4)
            blank = _BLANK_LINE.search(self.buffer, start, stop)
            end = -1 if blank is None else blank.start()
            if end > MAX_HEAD_BYTES or (end < 0 and len(self.buffer) > MAX_HEAD_BYTES):
                raise ProtocolError("response head larger than 64 KiB")
            if blank is not None:
                head = bytes(self.buffer[:end]).removesuffix(b"\r")
                del self.buffer[: blank.end()]
                self._scanned = 0
                return head
            self._scanned = len(self.buffer)
            if self.closed:
                if not self.buffer:
                    raise _Unanswered(_closed_message(self.error))
                raise ProtocolError("connection closed in the middle of the response head")
            await self._more()

    # state

    def reusable(self, now: float) -> bool:
        return (
            not self.closed
            and not self._paused
            and not self.buffer
            and self.transport is not None
            and not self.transport.is_closing()
            and now - self.idle_since < KEEPALIVE_EXPIRY_S
        )

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _closed_message(error: Exception | None) -> str:
    if error is None:
        return "server closed the connection without answering"
    return f"connection lost without an answer: {error}"


class _Body:
    """Collects a body up to ``limit`` bytes, decoding gzip or deflate no further than that. Compressed input
    is bounded too (twice the cap and 64 KiB), and bytes after the end of a compressed stream are counted
    against that bound but not decoded."""

    def __init__(self, limit: int, encoding: str) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.raw = 0
        self.raw_limit = 2 * limit + 64 * 1024
        self.truncated = False
        self.done = False  # nothing more wanted: past the cap, or not decodable
        self.error = ""
        self._encoding = encoding
        self._decoder: Any = None
        if encoding in _DECODABLE:
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
        elif encoding not in ("", "identity"):
            self.error = f"the body is {encoding[:40]}-encoded, which checks cannot decode"

    def feed(self, data: bytes) -> None:
        if self._decoder is not None:
            if self.raw > self.raw_limit:
                self.truncated = self.done = True
                return
            self.raw += len(data)
            if self._decoder.eof:
                return  # after the compressed stream: counted above, never decoded
            data = self._decompress(data)
            if not data:
                return
        else:
            self.raw += len(data)
        self.chunks.append(data)
        self.size += len(data)
        if self.size > self.limit:
            self.truncated = self.done = True

    def _decompress(self, data: bytes) -> bytes:
        try:
            return bytes(self._decoder.decompress(data, self.limit - self.size + 1))
        except zlib.error:
            pass
        if self._encoding == "deflate" and self.raw == len(data):
            # Some servers send raw DEFLATE without the zlib wrapper that "deflate" means.
            self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
            try:
                return bytes(self._decoder.decompress(data, self.limit - self.size + 1))
            except zlib.error:
                pass
        self.error = f"the body is not valid {self._encoding}"
        self.done = True
        return b""

    def value(self) -> bytes:
        body = b"".join(self.chunks)
        return body[: self.limit] if self.truncated else body


def _parse_head(head: bytes) -> tuple[int, bool, dict[str, str]]:
    """(status, HTTP/1.1 or later, fields) of a response head."""
    lines = head.split(b"\n")
    status_line = lines[0].rstrip(b"\r")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1 response: {status_line[:60]!r}")
    if len(lines) > MAX_FIELDS + 1:
        raise ProtocolError(f"response has more than {MAX_FIELDS} header fields")
    fields: dict[str, str] = {}
    name = ""
    for raw in lines[1:]:
        line = raw.rstrip(b"\r")
        if line[:1] in (b" ", b"\t") and name:  # obsolete line folding: part of the previous value
            fields[name] += " " + line.strip().decode("latin-1")
            continue
        key, colon, value = line.partition(b":")
        if not colon or not key or not _TOKEN.issuperset(key):
            raise ProtocolError(f"malformed header field: {line[:60]!r}")
        name = key.decode("ascii").lower()
        text = value.strip().decode("latin-1")
        fields[name] = f"{fields[name]}, {text}" if name in fields else text
    return int(parts[1]), parts[0] != b"HTTP/1.0", fields


# (scheme, host, port, digest of the credentials sent): a connection that carried one tenant's credentials
# is never handed to a request with other credentials or none (some servers, NTLM for one, authenticate
# the connection itself).
_PoolKey = tuple[str, str, int, str]
_CREDENTIAL_FIELDS = frozenset({"authorization", "cookie", "proxy-authorization"})


def _credentials_digest(target: Target, headers: Mapping[str, str]) -> str:
    sent = sorted(f"{name.lower()}:{value}" for name, value in headers.items() if name.lower() in _CREDENTIAL_FIELDS)
    if target.authorization:
        sent.append(f"url:{target.authorization}")
    return hashlib.sha256("\0".join(sent).encode()).hexdigest() if sent else ""


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


class HttpClient:
    """Fetches through ``policy``; one per process, closed with :meth:`aclose`."""

    def __init__(
        self, policy: EgressPolicy, ssl_context: ssl.SSLContext, max_body_bytes: int, max_idle: int = 1000
    ) -> None:
        self._policy = policy
        self._ssl_context = ssl_context
        self._max_body_bytes = max_body_bytes
        self._max_idle = max_idle
        self._idle: dict[_PoolKey, list[_Connection]] = {}
        self._idle_count = 0
        self._swept = time.monotonic()

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None = None,
        *,
        repeatable: bool = False,
    ) -> HttpResponse:
        """One request and its whole (capped) response. Redirects are the caller's to follow. ``repeatable``:
        the caller accepts that a request of any method may reach the server twice (its receiver drops
        repeats), so it may go on a kept connection as an idempotent one does."""
        target = parse_url(url)
        message = self._message(method, target, headers, body)
        key = (target.scheme, target.host, target.port, _credentials_digest(target, headers))
        # A request that may not be repeated goes on a fresh connection: a kept one may have been closed by
        # the server just as the request was sent, and then it cannot tell whether the request was acted on.
        connection = self._take(key) if repeatable or method in _IDEMPOTENT else None
        close = any(name.lower() == "connection" and "close" in _tokens(v) for name, v in headers.items())
        if connection is not None:
            try:
                return await self._exchange(connection, key, method, message, close)
            except _Unanswered:
                pass  # the server closed the idle connection as we sent: once more on a fresh one
        connection = await self._connect(target)
        return await self._exchange(connection, key, method, message, close)

    def _message(self, method: str, target: Target, headers: Mapping[str, str], body: bytes | None) -> bytes:
        if not _TOKEN.issuperset(method.encode("ascii", "replace")):
            raise InvalidUrl(f"method {method[:20]!r} is not an HTTP token")
        lines = [f"{method} {target.path} HTTP/1.1"]
        given = {name.lower() for name in headers}
        if "host" not in given:
            lines.append(f"Host: {target.host_field}")
        if target.authorization and "authorization" not in given:
            lines.append(f"Authorization: {target.authorization}")
        for name, value in headers.items():
            if name.lower() in _OURS:
                continue
            if not name or not _TOKEN.issuperset(name.encode("ascii", "replace")):
                raise InvalidUrl(f"header name {name[:40]!r} is not an HTTP token")
            if _FIELD_VALUE_FORBIDDEN.search(value):
                raise InvalidUrl(f"header {name[:40]} has a line break or control character in its value")
            lines.append(f"{name}: {value}")
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        return "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + (body or b"")

    async def _connect(self, target: Target) -> _Connection:
        addresses = await resolve(target.host, target.port, self._policy)
        loop = asyncio.get_running_loop()
        tls = target.scheme == "https"
        failures: list[str] = []
        for address in addresses:
            try:
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop),
                    str(address),
                    target.port,
                    ssl=self._ssl_context if tls else None,
                    server_hostname=target.host if tls else None,
                )
            except ssl.SSLError as error:  # before OSError: SSLError is one
                raise TlsFailed(str(error)) from None
            except ssl.CertificateError as error:
                raise TlsFailed(str(error)) from None
            except OSError as error:
                failures.append(f"{address}: {error.strerror or error}")
                continue
            if tls and connection.transport is not None:
                connection.peer_cert = connection.transport.get_extra_info("peercert")
            return connection
        raise ConnectFailed("; ".join(failures))

    async def _exchange(
        self, connection: _Connection, key: _PoolKey, method: str, message: bytes, close: bool
    ) -> HttpResponse:
        keep = False
        try:
            assert connection.transport is not None
            connection.in_flight = True
            connection.transport.write(message)
            response, keep = await self._read_response(connection, method)
            keep = keep and not close
            connection.in_flight = False
            return response
        finally:
            if keep:
                self._release(key, connection)
            else:
                connection.abort()

    async def _read_response(self, connection: _Connection, method: str) -> tuple[HttpResponse, bool]:
        for _ in range(MAX_INTERIM + 1):
            status, http11, fields = _parse_head(await connection.read_head())
            if not 100 <= status < 200 or status == 101:
                break  # 1xx answers other than 101 are interim: the real one follows
        else:
            raise ProtocolError(f"more than {MAX_INTERIM} interim (1xx) responses")
        tokens = _tokens(fields.get("connection", ""))
        keep = ("close" not in tokens) if http11 else ("keep-alive" in tokens)
        body = _Body(self._max_body_bytes, fields.get("content-encoding", "identity").strip().lower())
        complete = True
        if method == "HEAD" or status in _NO_BODY_STATUS or status < 200:
            keep = keep and status != 101
        elif "transfer-encoding" in fields:
            # With a Content-Length as well, or on HTTP/1.0, the framing is suspect: read it, never reuse it.
            keep = keep and http11 and "content-length" not in fields
            codings = [coding.strip().lower() for coding in fields["transfer-encoding"].split(",")]
            if codings[-1] == "chunked":
                complete = await self._read_chunked(connection, body)
            else:
                await self._read_to_end(connection, body)
                keep = False
        elif "content-length" in fields:
            lengths = _tokens(fields["content-length"])
            length = next(iter(lengths))
            if len(lengths) != 1 or not _CONTENT_LENGTH.fullmatch(length):
                raise ProtocolError(f"invalid Content-Length: {fields['content-length'][:40]!r}")
            complete = await self._read_length(connection, body, int(length))
        else:
            await self._read_to_end(connection, body)
            keep = False
        response = HttpResponse(
            status,
            fields,
            body.value(),
            body.truncated,
            connection.peer_cert,
            body.error if body.chunks or body.raw else "",
        )
        return response, keep and complete and not connection.buffer

    @staticmethod
    async def _read_length(connection: _Connection, body: _Body, length: int) -> bool:
        """Reads ``length`` bytes into ``body``; False if it stopped early (the body wants no more)."""
        while length and not body.done:
            data = await connection.read_some(length)
            if not data:
                raise ProtocolError("connection closed before the whole body arrived")
            length -= len(data)
            body.feed(data)
        return length == 0

    @staticmethod
    async def _read_to_end(connection: _Connection, body: _Body) -> None:
        while not body.done:
            data = await connection.read_some(1 << 20)
            if not data:
                return
            body.feed(data)

    @classmethod
    async def _read_chunked(cls, connection: _Connection, body: _Body) -> bool:
        """Reads a chunked body into ``body``; False if it stopped early (the body wants no more)."""
        while not body.done:
            line = await connection.read_line()
            size_text = line.split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_text):
                raise ProtocolError(f"invalid chunk size: {line[:20]!r}")
            size = int(size_text, 16)
            if size == 0:
                for _ in range(MAX_FIELDS + 1):  # trailer fields, until the blank line
                    if not await connection.read_line():
                        return True
                raise ProtocolError("too many trailer fields")
            if not await cls._read_length(connection, body, size):
                return False
            if await connection.read_line():
                raise ProtocolError("chunk not followed by a line break")
        return False

    def _take(self, key: _PoolKey) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.reusable(now):
                return connection
            connection.close()
        return None

    def _release(self, key: _PoolKey, connection: _Connection) -> None:
        now = time.monotonic()
        connection.idle_since = now
        if self._idle_count < self._max_idle:
            self._idle.setdefault(key, []).append(connection)
            self._idle_count += 1
        else:
            connection.close()
        if now - self._swept > KEEPALIVE_EXPIRY_S:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Close idle connections past their keep-alive, so a quiet origin holds no socket."""
        self._swept = now
        for key, idle in list(self._idle.items()):
            kept = []
            for connection in idle:
                if connection.reusable(now):
                    kept.append(connection)
                else:
                    connection.close()
            self._idle_count -= len(idle) - len(kept)
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]

    @property
    def idle_connections(self) -> int:
        return self._idle_count

    async def aclose(self) -> None:
        """Close the kept connections and wait (up to a second) until they are gone: a TLS one says
        close_notify first."""
        closing = [connection for idle in self._idle.values() for connection in idle]
        self._idle.clear()
        self._idle_count = 0
        for connection in closing:
            connection.close()
        if closing:
            await asyncio.wait([connection.lost for connection in closing], timeout=1.0)
