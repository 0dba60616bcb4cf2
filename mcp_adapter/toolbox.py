"""What every tool shares: the registry the server is built from, the adapter's state, and the reply shape
(a one-line summary the model reads first, then the structured data, also published with its schema)."""

from __future__ import annotations

import json
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


TOOLS: list[ToolSpec] = []


def tool(
    *,
    read_only: bool = False,
    destructive: bool = False,
    idempotent: bool = False,
    stdio_only: bool = False,
    name: str = "",
) -> Callable[[FunctionT], FunctionT]:
    """Registers a tool function: its name (or ``name``), docstring and type hints are the tool the model sees."""

    def register(function: FunctionT) -> FunctionT:
        spec = ToolSpec(
            function, read_only, destructive, idempotent or read_only, stdio_only, name or function.__name__
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
    """The tool result: ``summary`` in one line, then the data as compact JSON (and as structured content)."""
    structured = data.model_dump(mode="json", exclude_none=True)
    text = f"{summary}\n{json.dumps(structured, separators=(',', ':'), ensure_ascii=False)}"
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)
