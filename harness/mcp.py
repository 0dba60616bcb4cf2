"""The MCP adapter under test: a stack with local stand-ins for Coinbase and a website, the adapter over
stdio and over streamable HTTP, and calls through the official ``mcp`` client."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from mcp.client import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from harness import dying_with_parent
from harness.http import HttpServer, Reply
from harness.services import REPO, ServiceProcess, Stack, free_port

SEPARATOR = "\n" + "-" * 72 + "\n"


class Market:
    """A Coinbase stand-in: GET /v2/prices/BTC-USD/spot answers the price a test sets."""

    def __init__(self) -> None:
        self.price = "65000.00"
        self.server = HttpServer()
        self.server.routes["/v2/prices/BTC-USD/spot"] = lambda path, headers, body: Reply.json(
            {"data": {"amount": self.price, "base": "BTC", "currency": "USD"}}
        )


class Website:
    """A website stand-in whose / answers 200 or 503 as a test sets."""

    def __init__(self) -> None:
        self.up = True
        self.server = HttpServer()
        self.server.routes["/"] = lambda path, headers, body: Reply(200 if self.up else 503, b"shop is open")

    @property
    def url(self) -> str:
        return self.server.url("/")


class McpStack:
    """The services, one runner, the market and the website, and where adapters find them."""

    def __init__(self, stack: Stack, runner: ServiceProcess, market: Market, website: Website) -> None:
        self.stack, self.runner, self.market, self.website = stack, runner, market, website
        self.logs = stack.data_dir / "adapters"
        self.logs.mkdir(exist_ok=True)

    def adapter_env(self, **extra: str) -> dict[str, str]:
        env = {
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "gen")]),
            "MONITORS_MONITOR_TARGET": self.stack.address("monitor"),
            "MONITORS_ALERT_TARGET": self.stack.address("alert"),
            "MONITORS_NOTIFY_TARGET": self.stack.address("notify"),
            "HOME": str(self.stack.data_dir),
        }
        env.update(extra)
        return env

    def login_code(self, address: str, before: int) -> str:
        """The code of the login email to ``address`` after the first ``before`` ones (from the outbox)."""
        deadline = time.monotonic() + 15
        while len(mails := self.mails_to(address)) <= before:
            assert time.monotonic() < deadline, f"no login email for {address}"
            time.sleep(0.1)
        codes = re.findall(r"\b(\d{6})\b", mails[-1].split("\n\n", 1)[1])
        assert codes, mails[-1]
        return str(codes[0])

    def mails_to(self, address: str) -> list[str]:
        outbox = self.stack.data_dir / "outbox.txt"
        if not outbox.exists():
            return []
        return [mail for mail in outbox.read_text().split(SEPARATOR) if f"To: {address}\n" in mail]


@asynccontextmanager
async def stdio_adapter(
    mcp_stack: McpStack, *args: str, log_name: str = "stdio", **env: str
) -> AsyncIterator[ClientSession]:
    """An adapter subprocess over stdio (``python -m mcp_adapter``), with an initialized client session."""
    parameters = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_adapter", *args], env=mcp_stack.adapter_env(**env), cwd=str(REPO)
    )
    with (mcp_stack.logs / f"{log_name}.log").open("a") as errlog:
        async with stdio_client(parameters, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


class HttpAdapter:
    """An adapter subprocess over streamable HTTP on a free port."""

    def __init__(self, mcp_stack: McpStack, log_name: str = "http") -> None:
        self.port = free_port()
        self.log_path = mcp_stack.logs / f"{log_name}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                dying_with_parent(
                    [sys.executable, "-m", "mcp_adapter", "--transport", "http", "--port", str(self.port)]
                ),
                env={**os.environ, **mcp_stack.adapter_env()},
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.log_path.read_text()
            time.sleep(0.1)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @asynccontextmanager
    async def session(self, key: str) -> AsyncIterator[ClientSession]:
        import httpx2

        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as client,
            streamable_http_client(f"{self.base_url}/mcp", http_client=client) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call ``tool``; it must succeed. Returns its structured content."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, f"{tool} failed: {text_of(result)}"
    assert result.structured_content is not None, f"{tool} returned no structured content"
    return dict(result.structured_content)


async def call_error(session: ClientSession, tool: str, **arguments: Any) -> str:
    """Call ``tool``; it must fail. Returns the error text the model reads."""
    result = await session.call_tool(tool, arguments)
    assert result.is_error, f"{tool} should have failed: {text_of(result)}"
    return text_of(result)


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0, what: str = "the condition"
) -> None:
    import asyncio

    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s}s"
        await asyncio.sleep(0.3)
