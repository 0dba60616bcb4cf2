"""Builds the MCP server: the tools from toolbox.TOOLS with their annotations, the gRPC channels opened once in
the lifespan, and over HTTP the bearer-token check against AccountService."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations
from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import mcp_adapter.tools  # noqa: F401  (registers the tools)
from mcp_adapter import VERSION
from mcp_adapter.clients import ServiceClients, Targets
from mcp_adapter.identity import AccountTokenVerifier, HttpIdentity, StdioIdentity
from mcp_adapter.toolbox import TOOLS, AdapterState, ToolSpec

INSTRUCTIONS = """\
monitors watches websites, crypto prices, TCP ports, DNS names, heartbeats and gRPC services, alerts on rules,
and notifies channels (email, Slack, Discord, Teams, webhooks, PagerDuty, Apprise).
Typical flow: suggest_monitors or create_monitor; create_alert_rule ("alert me if BTC goes above 70k" is a
threshold rule on the crypto monitor's price); create_channel so alerts reach the person; then list_alerts,
acknowledge_alert, summarize_monitor and plot_monitor_data. If a tool says "not logged in", ask for the
person's email and use request_login_code then verify_login_code. Confirm with the person before deleting."""


@dataclass
class AdapterConfig:
    transport: Literal["stdio", "http"] = "stdio"
    host: str = "127.0.0.1"
    port: int = 8765
    read_only: bool = False
    targets: Targets = field(default_factory=Targets)
    api_key: str = ""
    session_file: Path | None = None
    public_url: str = ""

    @property
    def url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"


def selected_tools(config: AdapterConfig) -> list[ToolSpec]:
    """The tools this adapter offers: read-only ones alone with --read-only; over HTTP, not the login tools
    (each client's identity is its own bearer key there)."""
    return [
        spec
        for spec in TOOLS
        if (spec.read_only or not config.read_only) and not (spec.stdio_only and config.transport == "http")
    ]


def build_server(config: AdapterConfig) -> MCPServer[AdapterState]:
    """The MCP server for ``config``, ready to run over its transport."""
    over_http = config.transport == "http"
    verifier = AccountTokenVerifier(config.targets.monitor) if over_http else None

    @asynccontextmanager
    async def lifespan(_server: MCPServer[AdapterState]) -> AsyncIterator[AdapterState]:
        clients = ServiceClients(config.targets, over_http=over_http)
        identity: StdioIdentity | HttpIdentity
        if over_http:
            identity = HttpIdentity()
        else:
            identity = StdioIdentity(api_key=config.api_key, session_file=config.session_file)
        if verifier is not None:
            verifier.channel = clients.monitor_channel
            verifier.timeout_s = config.targets.rpc_timeout_s
        try:
            yield AdapterState(clients=clients, identity=identity)
        finally:
            if verifier is not None:
                verifier.channel = None
            await clients.close()

    auth = (
        AuthSettings(
            issuer_url=AnyHttpUrl(config.url),
            resource_server_url=AnyHttpUrl(f"{config.url}/mcp"),
            validate_token_resource=False,
        )
        if over_http
        else None
    )
    server: MCPServer[AdapterState] = MCPServer(
        "monitors",
        instructions=INSTRUCTIONS,
        version=VERSION,
        lifespan=lifespan,
        token_verifier=verifier,
        auth=auth,
        log_level="WARNING",
    )
    for spec in selected_tools(config):
        server.add_tool(
            spec.function,
            name=spec.name,
            annotations=ToolAnnotations(
                read_only_hint=spec.read_only,
                destructive_hint=spec.destructive,
                idempotent_hint=spec.idempotent,
                open_world_hint=False,
            ),
        )

    @server.custom_route("/healthz", methods=["GET"])  # type: ignore[untyped-decorator]
    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return server
