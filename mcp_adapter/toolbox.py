"""What every tool shares: the registry the server is built from, the adapter's state, and the reply shape
(a one-line summary as the text content, and the structured data, with the summary too, published with its
schema; server.AdapterTool adds the data as JSON text for a client too old for structured output)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel

from mcp_adapter.clients import ServiceClients
from mcp_adapter.identity import HttpIdentity, StdioIdentity

FunctionT = TypeVar("FunctionT", bound=Callable[..., Any])


@dataclass(frozen=True)
class ToolSpec:
    function: Callable[..., Any]
    read_only: bool
    destructive: bool
    idempotent: bool
    stdio_only: bool
    name: str
    open_world: bool = False
    http_description: str = ""


TOOLS: list[ToolSpec] = []


def tool(
    *,
    read_only: bool = False,
    destructive: bool = False,
    idempotent: bool = False,
    stdio_only: bool = False,
    name: str = "",
    open_world: bool = False,
    http_description: str = "",
) -> Callable[[FunctionT], FunctionT]:
    """Registers a tool function: its name (or ``name``), docstring and type hints are the tool the model sees.
    ``open_world``: the call itself reaches outside the deployment (a website, a mail or chat provider).
    ``http_description``: the description over HTTP, where the login tools are not offered."""

    def register(function: FunctionT) -> FunctionT:
        spec = ToolSpec(
            function,
            read_only,
            destructive,
            idempotent or read_only,
            stdio_only,
            name or function.__name__,
            open_world,
            http_description,
        )
        TOOLS.append(spec)
        return function

    return register


@dataclass
class AdapterState:
    """The lifespan's state: the gRPC stubs over channels opened once, and who calls run as."""

    clients: ServiceClients
    identity: StdioIdentity | HttpIdentity

    def token(self) -> str:
        return self.identity.token()


ToolContext = Context[AdapterState, Any]


def state_of(ctx: ToolContext) -> AdapterState:
    return ctx.request_context.lifespan_context


def reply(summary: str, data: BaseModel) -> CallToolResult:
    """The tool result: ``summary`` in one line as its text, and the data as structured content, led by the same
    line as "result" (some clients hand the model only the structured content)."""
    structured = {"result": summary, **data.model_dump(mode="json", exclude_none=True)}
    return CallToolResult(content=[TextContent(type="text", text=summary)], structured_content=structured)


def more(shown: int, total: int) -> str:
    """ ", and 3 more" when a summary names ``shown`` of ``total`` items."""
    return f", and {total - shown} more" if total > shown else ""
