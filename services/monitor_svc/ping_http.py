"""The HTTP endpoint heartbeat monitors are pinged on (``MONITORS_PING_LISTEN``), inside the monitor process.

``GET|POST|HEAD /ping/<token>`` records a success; ``/ping/<token>/fail`` a failure reported by the job itself
(the first 500 characters of a POST body become its message). The token is the secret: an unknown one is 404,
and nothing else is served. Like Healthchecks.io, any method works, so ``curl -fsS -m 10 --retry 5 <url>``
at the end of a cron job is enough. One ping per monitor per second is recorded; a sooner one is answered
429 with ``Retry-After`` (which curl's ``--retry`` honours) and records nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import Generator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from services.monitor_svc.heartbeats import Heartbeats, PingOutcome

log = logging.getLogger(__name__)
MAX_BODY = 10 * 1024


def ping_app(heartbeats: Heartbeats) -> Starlette:
    async def ping(request: Request) -> PlainTextResponse:
        failed = request.url.path.endswith("/fail")
        message = ""
        if failed and request.method == "POST":
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) >= MAX_BODY:
                    break
            message = body[:MAX_BODY].decode(errors="replace")
        outcome = await heartbeats.ping(request.path_params["token"], failed, message)
        if outcome is PingOutcome.UNKNOWN:
            return PlainTextResponse("not found\n", status_code=404)
        if outcome is PingOutcome.LIMITED:
            wait = max(1, math.ceil(heartbeats.retry_after(request.path_params["token"])))
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
            Route("/ping/{token:str}/fail", ping, methods=methods),
        ]
    )


class _NoSignals(uvicorn.Server):
    """uvicorn inside our process: the gRPC host owns SIGTERM/SIGINT and stops this server itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class PingEndpoint:
    """Serves :func:`ping_app` on ``listen`` (host:port) from start() to stop()."""

    def __init__(self, heartbeats: Heartbeats, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self._address = (host.strip("[]") or "127.0.0.1", int(port))
        config = uvicorn.Config(
            ping_app(heartbeats),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_keep_alive=5,
            limit_concurrency=1000,
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
