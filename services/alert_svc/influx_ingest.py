"""Samples straight from InfluxDB 1.x: an HTTP endpoint that takes the writes an InfluxDB subscription forwards
(``POST /write?db=..&rp=..``, line protocol, possibly gzip), and the statement that registers it.

InfluxDB hands each write to its subscribers about a millisecond after it is stored, so the alert service sees
a sample as soon as any reader could, without polling. The endpoint parses what
:class:`~service_runtime.timeseries.influx_store.InfluxStore` writes: measurement ``check``, tags ``owner`` and
``monitor`` (and ``location``...), numeric fields (``is_up`` as 0/1, ``response_time_ms``...) beside string notes,
nanosecond timestamps. Other measurements (the hourly rollups) are ignored; malformed lines are skipped and
counted, never fatal; a body (compressed or not) larger than ``max_body_bytes`` is refused with 413.

It is a small asyncio HTTP/1.1 server rather than starlette and uvicorn: one route, keep-alive, bounded reads,
no framework per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import httpx

from service_runtime.timeseries.influx_store import MEASUREMENT, InfluxConfig, quote_identifier, quote_string
from services.alert_svc.domain import SampleEvent

log = logging.getLogger(__name__)

DEFAULT_INGEST_LISTEN = "127.0.0.1:50082"
SUBSCRIPTION_NAME = "monitors_alerts"
# Nanoseconds per unit of each ``precision`` InfluxDB's /write accepts.
PRECISION_NS = {"": 1, "n": 1, "ns": 1, "u": 1_000, "us": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9}
PRECISION_NS["h"] = 3600 * 10**9
MAX_HEADERS = 100
MAX_LINE_BYTES = 64 * 1024  # a request or header line


class SampleSink(Protocol):
    """Where parsed samples go (the alert engine: the same sink as the monitor feed's)."""

    async def feed_samples(self, samples: list[SampleEvent]) -> None: ...


@dataclass(frozen=True)
class IngestSettings:
    """Where the endpoint listens, and the address InfluxDB is told to post to."""

    listen: str = DEFAULT_INGEST_LISTEN
    url: str = ""  # empty: http://<listen>

    @property
    def destination(self) -> str:
        return self.url or f"http://{self.listen}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> IngestSettings:
        """MONITORS_ALERT_INGEST_LISTEN and MONITORS_ALERT_INGEST_URL."""
        env = os.environ if env is None else env
        url = (env.get("MONITORS_ALERT_INGEST_URL") or "").rstrip("/")
        if url and urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"MONITORS_ALERT_INGEST_URL must be an http(s) URL, got {url!r}")
        return cls(listen=env.get("MONITORS_ALERT_INGEST_LISTEN") or DEFAULT_INGEST_LISTEN, url=url)


class BadLine(ValueError):
    """A line that is not line protocol, or not a sample of ours."""


# --- line protocol ---------------------------------------------------------------------------------------


def _split_unescaped(text: str, separator: str) -> list[str]:
    """``text`` split at each ``separator`` not preceded by a backslash (escapes kept)."""
    if "\\" not in text:
        return text.split(separator)
    parts, start, i = [], 0, 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == separator:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in ', =\\"':
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _sections(line: str) -> tuple[str, str, str]:
    """The key (measurement and tags), the field set and the timestamp (maybe empty) of a line."""
    if "\\" not in line and '"' not in line:
        parts = line.split(" ")
        if len(parts) == 2:
            return parts[0], parts[1], ""
        if len(parts) == 3:
            return parts[0], parts[1], parts[2]
        raise BadLine("expected 'key fields [timestamp]'")
    spaces: list[int] = []
    quoted = False
    i = 0
    while i < len(line):
        char = line[i]
        if char == "\\":
            i += 2
            continue
        if char == '"' and spaces:  # quotes matter only in the field set
            quoted = not quoted
        elif char == " " and not quoted:
            spaces.append(i)
        i += 1
    if quoted:
        raise BadLine("unterminated string field")
    if len(spaces) == 1:
        return line[: spaces[0]], line[spaces[0] + 1 :], ""
    if len(spaces) == 2:
        return line[: spaces[0]], line[spaces[0] + 1 : spaces[1]], line[spaces[1] + 1 :]
    raise BadLine("expected 'key fields [timestamp]'")


def _fields(text: str) -> dict[str, float]:
    """The numeric fields of a field set (floats, integers); strings and booleans are skipped."""
    found: dict[str, float] = {}
    if '"' in text:  # take the string values out first: they may hold commas and equals signs
        pieces, start, quoted, i = [], 0, False, 0
        while i < len(text):
            char = text[i]
            if char == "\\":
                i += 2
                continue
            if char == '"':
                quoted = not quoted
            elif char == "," and not quoted:
                pieces.append(text[start:i])
                start = i + 1
            i += 1
        pieces.append(text[start:])
    else:
        pieces = _split_unescaped(text, ",")
    for piece in pieces:
        key, equals, value = piece.partition("=") if "\\" not in piece else _partition_unescaped(piece)
        if not equals or not key or not value:
            raise BadLine("a field needs key=value")
        if value[0] == '"':
            continue
        if value[-1] in "iu":
            number = float(int(value[:-1]))
        elif value in ("t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"):
            continue
        else:
            try:
                number = float(value)
            except ValueError:
                raise BadLine("a field value is not a number") from None
            if not math.isfinite(number):
                raise BadLine("a field value is not finite")
        found[_unescape(key)] = number
    return found


def _partition_unescaped(piece: str) -> tuple[str, str, str]:
    parts = _split_unescaped(piece, "=")
    if len(parts) < 2:
        return piece, "", ""
    return parts[0], "=", "=".join(parts[1:])


def parse_line(line: str, precision_ns: int = 1, now_ns: int | None = None) -> SampleEvent | None:
    """The sample a line of ``check`` holds; None for another measurement; BadLine if it is malformed."""
    key, field_set, stamp = _sections(line)
    if "=" not in field_set:
        raise BadLine("a line needs a field set")
    parts = _split_unescaped(key, ",")
    if _unescape(parts[0]) != MEASUREMENT:
        return None
    tags: dict[str, str] = {}
    for tag in parts[1:]:
        name, equals, value = _partition_unescaped(tag)
        if not equals:
            raise BadLine("a tag needs key=value")
        tags[_unescape(name)] = _unescape(value)
    owner, monitor = tags.get("owner", ""), tags.get("monitor", "")
    if not owner or not monitor:
        raise BadLine("a sample needs the owner and monitor tags")
    try:
        fields = _fields(field_set)
        nanos = int(stamp) * precision_ns if stamp else (now_ns if now_ns is not None else time.time_ns())
    except ValueError as error:
        raise BadLine(str(error) or "a malformed number") from None
    if not fields:
        raise BadLine("a sample needs a numeric field")
    return SampleEvent(owner, monitor, nanos / 1e9, fields)


def parse_body(body: str, precision_ns: int = 1) -> tuple[list[SampleEvent], int]:
    """The samples of a write body, and how many lines were malformed (skipped)."""
    samples: list[SampleEvent] = []
    bad = 0
    now_ns = time.time_ns()
    for raw in body.split("\n"):
        line = raw.strip()
        if not line or line[0] == "#":
            continue
        try:
            sample = parse_line(line, precision_ns, now_ns)
        except BadLine:
            bad += 1
            continue
        if sample is not None:
            samples.append(sample)
    return samples, bad


# --- HTTP ------------------------------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_STATUS_TEXT = {
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
}


class InfluxIngest:
    """The endpoint: writes for ``database`` become samples for ``sink``. :meth:`start`, then :meth:`stop`."""

    def __init__(
        self,
        sink: SampleSink,
        listen: str,
        database: str,
        *,
        max_body_bytes: int = 32 * 1024 * 1024,
        read_timeout_s: float = 30.0,
    ) -> None:
        self._sink = sink
        self._listen = listen
        self._database = database
        self._max_body = max_body_bytes
        self._read_timeout_s = read_timeout_s
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.port = 0
        self.writes = 0
        self.samples = 0
        self.bad_lines = 0
        self.refused = 0  # requests answered with an error

    async def start(self) -> int:
        host, _, port = self._listen.rpartition(":")
        self._server = await asyncio.start_server(
            self._serve, host.strip("[]") or None, int(port), limit=MAX_LINE_BYTES
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("influx ingest listening", extra={"listen": self._listen, "port": self.port})
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._stopping = True
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                try:
                    async with asyncio.timeout(self._read_timeout_s):
                        request = await self._read_request(reader)
                    if request is None:
                        return
                    keep_alive, method, target, body, headers = request
                    status = await self._handle(method, target, body, headers)
                    reason = ""
                except _Refused as refused:
                    self.refused += 1
                    status, reason, keep_alive = refused.status, refused.reason, False
                except TimeoutError:
                    return  # an idle or trickling connection
                payload = (f'{{"error":"{reason}"}}'.encode()) if reason else b""
                head = f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, '')}\r\nContent-Length: {len(payload)}\r\n"
                if payload:
                    head += "Content-Type: application/json\r\n"
                head += "\r\n" if keep_alive else "Connection: close\r\n\r\n"
                writer.write(head.encode() + payload)
                await writer.drain()
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # Stopped by stop(): end quietly (asyncio logs a connection task that ends cancelled as an error).
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[bool, str, str, bytes, dict[str, str]] | None:
        first = await reader.readline()
        if not first:
            return None
        try:
            method, target, version = first.decode("latin-1").split()
        except ValueError:
            raise _Refused(400, "malformed request line") from None
        headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise asyncio.IncompleteReadError(line, None)
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon or len(headers) >= MAX_HEADERS:
                raise _Refused(400, "malformed headers")
            headers[name.strip().lower()] = value.strip()
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise _Refused(411, "send a Content-Length")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise _Refused(400, "malformed Content-Length") from None
        if length < 0:
            raise _Refused(400, "malformed Content-Length")
        if length > self._max_body:
            raise _Refused(413, f"body larger than {self._max_body} bytes")
        body = await reader.readexactly(length) if length else b""
        return keep_alive, method, target, body, headers

    async def _handle(self, method: str, target: str, body: bytes, headers: Mapping[str, str]) -> int:
        parts = urlsplit(target)
        if parts.path == "/ping":
            return 204
        if parts.path != "/write":
            raise _Refused(404, "not found")
        if method != "POST":
            raise _Refused(405, "POST only")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        precision = PRECISION_NS.get(query.get("precision", ""))
        if precision is None:
            raise _Refused(400, "unknown precision")
        encoding = headers.get("content-encoding", "").lower()
        if encoding == "gzip":
            body = self._gunzip(body)
        elif encoding not in ("", "identity"):
            raise _Refused(415, "unsupported Content-Encoding")
        self.writes += 1
        if query.get("db", "") != self._database:
            return 204  # another database's write (a subscription on it): not ours to read
        samples, bad = parse_body(body.decode("utf-8", errors="replace"), precision)
        if bad:
            self.bad_lines += bad
            log.warning("influx ingest skipped malformed lines", extra={"lines": bad, "total": self.bad_lines})
        if samples:
            self.samples += len(samples)
            await self._sink.feed_samples(samples)
        return 204

    def _gunzip(self, body: bytes) -> bytes:
        inflater = zlib.decompressobj(wbits=31)
        try:
            plain = inflater.decompress(body, self._max_body + 1)
        except zlib.error:
            raise _Refused(400, "malformed gzip body") from None
        if len(plain) > self._max_body or inflater.unconsumed_tail:
            raise _Refused(413, f"body larger than {self._max_body} bytes")
        return plain


# --- registration ----------------------------------------------------------------------------------------


async def register_subscription(
    config: InfluxConfig,
    destinations: Sequence[str],
    name: str = SUBSCRIPTION_NAME,
    mode: str = "ANY",
    timeout_s: float = 10.0,
) -> bool:
    """Make InfluxDB forward every write to ``config``'s database and retention policy to ``destinations``,
    idempotently: an existing subscription of that name with the same destinations is kept, one with others is
    dropped and created again. Returns whether it had to change anything."""
    if mode not in ("ANY", "ALL") or not destinations:
        raise ValueError("mode must be ANY or ALL, with at least one destination")
    headers = {"Authorization": f"Token {config.token}"} if config.token else {}
    auth = (config.username, config.password) if config.username else None
    on = f"{quote_identifier(config.database)}.{quote_identifier(config.retention_policy)}"
    async with httpx.AsyncClient(
        base_url=config.url, headers=headers, auth=auth, timeout=httpx.Timeout(timeout_s)
    ) as http:

        async def query(statement: str, method: str = "GET") -> dict[str, object]:
            if method == "POST":
                reply = await http.post("/query", data={"q": statement})
            else:
                reply = await http.get("/query", params={"q": statement})
            reply.raise_for_status()
            body: dict[str, object] = reply.json()
            for result in body.get("results", []) or []:  # type: ignore[attr-defined]
                if isinstance(result, dict) and result.get("error"):
                    raise RuntimeError(f"InfluxDB refused {statement.split()[0]}: {result['error']}")
            return body

        existing = await query("SHOW SUBSCRIPTIONS")
        for result in existing.get("results", []) or []:  # type: ignore[attr-defined]
            for series in result.get("series", []) or []:
                if series.get("name") != config.database:
                    continue
                columns = series.get("columns", [])
                for row in series.get("values", []) or []:
                    entry = dict(zip(columns, row, strict=False))
                    if entry.get("retention_policy") != config.retention_policy or entry.get("name") != name:
                        continue
                    if sorted(entry.get("destinations") or []) == sorted(destinations) and entry.get("mode") == mode:
                        return False
                    await query(f"DROP SUBSCRIPTION {quote_identifier(name)} ON {on}", "POST")
        targets = ", ".join(quote_string(d) for d in destinations)
        await query(f"CREATE SUBSCRIPTION {quote_identifier(name)} ON {on} DESTINATIONS {mode} {targets}", "POST")
        log.info("influx subscription registered", extra={"subscription": name, "destinations": list(destinations)})
        return True
