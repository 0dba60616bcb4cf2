"""The HTTP endpoint heartbeat monitors are pinged on (``MONITORS_PING_LISTEN``), inside the monitor process.

``GET|POST|HEAD|PUT /ping/<token>`` records a success; ``/ping/<token>/fail`` a failure reported by the job
itself (the first 500 characters of its body become the message); ``/ping/<token>/<status>`` the job's exit
status, 0 a success and 1 to 255 a failure; ``/ping/<token>/start`` that the job started. The first 10 KiB of
each body are kept with the latest pings (ListHeartbeatPings). The token is the secret: an unknown one is 404,
and nothing else is served. Like Healthchecks.io, any method works, so ``curl -fsS -m 10 --retry 5 <url>``
at the end of a cron job is enough (``... --data-raw "$output" <url>/$?`` to send its status and output).
One result per monitor per second is recorded, and one start; a sooner one is answered 429 with
``Retry-After`` (which curl's ``--retry`` honours) and records nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import math
import socket
from collections.abc import Generator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from services.monitor_svc.domain import Ping, PingKind
from services.monitor_svc.heartbeats import MAX_PING_BODY, Heartbeats, PingOutcome

log = logging.getLogger(__name__)
MAX_BODY = MAX_PING_BODY
MAX_EXIT_STATUS = 255


async def _body(request: Request) -> tuple[str, bool]:
    """The first MAX_BODY bytes of the body, decoded, and whether there was more (not read further)."""
    if request.method not in ("POST", "PUT"):
        return "", False
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            break
    return body[:MAX_BODY].decode(errors="replace"), len(body) > MAX_BODY


def ping_app(heartbeats: Heartbeats) -> Starlette:
    async def ping(request: Request) -> PlainTextResponse:
        token = request.path_params["token"]
        action = request.path_params.get("action", "")
        exit_status: int | None = None
        if action == "":
            kind = PingKind.SUCCESS
        elif action == "fail":
            kind = PingKind.FAIL
        elif action == "start":
            kind = PingKind.START
        elif action.isdigit() and len(action) <= 3 and int(action) <= MAX_EXIT_STATUS:
            exit_status = int(action)
            kind = PingKind.FAIL if exit_status else PingKind.SUCCESS
        elif action.isdigit():
            return PlainTextResponse(f"an exit status is 0 to {MAX_EXIT_STATUS}\n", status_code=400)
        else:
            return PlainTextResponse("not found\n", status_code=404)
        body, truncated = await _body(request)
        outcome = await heartbeats.ping(
            token,
            Ping(
                kind=kind,
                exit_status=exit_status,
                body=body,
                body_truncated=truncated,
                method=request.method,
                remote_address=request.client.host if request.client else "",
                user_agent=request.headers.get("user-agent", "")[:200],
            ),
        )
        if outcome is PingOutcome.UNKNOWN:
            return PlainTextResponse("not found\n", status_code=404)
        if outcome is PingOutcome.LIMITED:
            wait = max(1, math.ceil(heartbeats.retry_after(token, kind)))
            return PlainTextResponse(
                "too many pings: one per second per monitor is recorded; not recorded, retry after 1 s\n",
                status_code=429,
                headers={"Retry-After": str(wait)},
            )
        return PlainTextResponse("OK\n" if outcome is PingOutcome.RECORDED else "OK (monitor paused)\n")

    methods = ["GET", "POST", "HEAD", "PUT"]
    return Starlette(
        routes=[
            Route("/ping/{token:str}", ping, methods=methods),
            Route("/ping/{token:str}/{action:str}", ping, methods=methods),
        ]
    )


class _NoSignals(uvicorn.Server):
    """uvicorn inside our process: the gRPC host owns SIGTERM/SIGINT and stops this server itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


HEAD_TIMEOUT_S = 10.0  # a connection's request must have arrived (its head) within this, or it is closed
REQUEST_TIMEOUT_S = 30.0  # and a connection that is still busy with a request (a body trickling in) after this
MAX_CONNECTIONS_PER_CLIENT = 100  # connections one client network (IPv4 /24, IPv6 /64) may hold at once
MAX_CONNECTIONS = 1000


def client_network(address: str) -> str:
    """The network a client address counts in: its IPv4 /24 or IPv6 /64 (one host has many addresses there)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def _guarded(head_timeout_s: float, per_client: int, request_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol with the guards a port open to anyone needs. Pings come without a login, and
    1,000 connections that sent nothing (or a header line every few seconds) had held every slot, so every
    tenant's pings were refused (503) for as long as the attacker liked: now a connection is closed when no
    request is under way at each ``head_timeout_s`` tick, or when it is still busy after ``request_timeout_s``
    (a body sent a byte at a time had held its slot for good), and one client network (an IPv4 /24 or IPv6 /64:
    one host commands many addresses there) holds ``per_client`` at most."""
    held: collections.Counter[str] = collections.Counter()

    class Guarded(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._who = client_network(self.client[0]) if self.client else ""
            self._opened = self.loop.time()
            held[self._who] += 1
            self._tick: asyncio.TimerHandle | None = None
            if held[self._who] > per_client:
                transport.close()
                return
            self._tick = self.loop.call_later(head_timeout_s, self._check)

        def _check(self) -> None:
            busy_s = self.loop.time() - self._opened
            idle = self.cycle is None or self.cycle.response_complete  # idle, or a head still trickling in
            if idle or busy_s >= request_timeout_s:  # or a body trickling in for too long
                self.transport.close()
            else:  # a request is being handled (a body still arriving): look again later
                self._tick = self.loop.call_later(min(head_timeout_s, request_timeout_s - busy_s), self._check)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._tick is not None:
                self._tick.cancel()
            held[self._who] -= 1
            if held[self._who] <= 0:
                del held[self._who]
            super().connection_lost(exc)

    return Guarded


class PingEndpoint:
    """Serves :func:`ping_app` on ``listen`` (host:port) from start() to stop()."""

    def __init__(
        self,
        heartbeats: Heartbeats,
        listen: str,
        *,
        head_timeout_s: float = HEAD_TIMEOUT_S,
        per_client: int = MAX_CONNECTIONS_PER_CLIENT,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        host, _, port = listen.rpartition(":")
        self._address = (host.strip("[]") or "127.0.0.1", int(port))
        config = uvicorn.Config(
            ping_app(heartbeats),
            http=_guarded(head_timeout_s, per_client, request_timeout_s),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_keep_alive=5,
            limit_concurrency=MAX_CONNECTIONS,
            h11_max_incomplete_event_size=16 * 1024,
        )
        self._server = _NoSignals(config)
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(self._address)
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start
            await asyncio.sleep(0.01)
        log.info("heartbeat pings served", extra={"listen": f"{self._address[0]}:{self.port}"})

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(5):
                await self._task
