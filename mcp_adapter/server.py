"""Builds the MCP server: the tools from toolbox.TOOLS with their annotations, the gRPC channels opened once in
the lifespan, and over HTTP the bearer-token check against AccountService."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import mcp_adapter.tools  # noqa: F401  (registers the tools)
from mcp_adapter import VERSION
from mcp_adapter.clients import ServiceClients, Targets
from mcp_adapter.errors import AdapterError
from mcp_adapter.identity import AccountTokenVerifier, HttpIdentity, StdioIdentity
from mcp_adapter.toolbox import TOOLS, AdapterState, ToolSpec

INSTRUCTIONS = """\
monitors watches websites, crypto prices, TCP ports, DNS names, heartbeats and gRPC services, alerts on rules,
and notifies channels (email, Slack, Discord, Teams, webhooks, PagerDuty, Apprise).
Typical flow: suggest_monitors or create_monitor; create_alert_rule ("alert me if BTC goes above 70k" is a
threshold rule on the crypto monitor's price); create_channel so alerts reach the person; then list_alerts,
acknowledge_alert, summarize_monitor and plot_monitor_data; summarize_monitors for how all of them are doing.
Every account has a default rule "A monitor is down" over all its monitors. Confirm with the person before
deleting."""
LOGIN_INSTRUCTIONS = """
If a tool says "not logged in", ask for the person's email and use request_login_code then verify_login_code."""
HTTP_INSTRUCTIONS = """
Each client acts as the owner of the API key it presents; if a tool says the key is not valid, the person
configures a new one in their MCP client."""

# The first protocol version with structured tool output: older clients get the data as JSON text as well.
STRUCTURED_OUTPUT_SINCE = "2025-06-18"


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


def _trimmed(schema: Any, *, output: bool) -> Any:
    """``schema`` without what the model does not need: pydantic's titles (a property's name says it), null
    defaults, and in output schemas the "or null" of optional fields (results leave them out instead)."""
    if isinstance(schema, list):
        return [_trimmed(item, output=output) for item in schema]
    if not isinstance(schema, dict):
        return schema
    trimmed: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "default" and value is None:
            continue
        if key == "properties" and isinstance(value, dict):
            # Property names are not schema keywords: a property called "title" stays.
            trimmed[key] = {name: _trimmed(sub, output=output) for name, sub in value.items()}
            continue
        trimmed[key] = _trimmed(value, output=output)
    branches = trimmed.get("anyOf")
    if output and isinstance(branches, list):
        kept = [branch for branch in branches if branch != {"type": "null"}]
        if len(kept) == 1 and len(kept) < len(branches):
            del trimmed["anyOf"]
            trimmed = {**kept[0], **trimmed}
    return trimmed


def argument_error(tool: str, error: ValidationError, accepted: list[str]) -> str:
    """A plain sentence for arguments that do not fit the tool's schema: which argument, what it takes."""
    unknown: list[str] = []
    problems: dict[str, list[str]] = {}
    for item in error.errors(include_url=False):
        location = item["loc"]
        name = str(location[0]) if location else "arguments"
        name += "".join(f"[{part}]" for part in location[1:] if isinstance(part, int))
        if item["type"] == "extra_forbidden":
            unknown.append(name)
            continue
        if item["type"] == "missing":
            text = "is required"
        else:
            text = item["msg"].replace("Input should be", "should be").replace("Value error, ", "")
            text = text[0].lower() + text[1:] if text else text
            if not isinstance(item.get("input"), dict | list):
                text += f", not {json.dumps(item.get('input'), default=str)[:60]}"
        if text not in problems.setdefault(name, []):
            problems[name].append(text)
    sentences = []
    for name, texts in problems.items():
        if len(texts) > 1 and all(text.startswith("should be ") for text in texts):
            texts = [texts[0], *(text.removeprefix("should be ") for text in texts[1:])]
        sentences.append(f"{name} {' or '.join(texts)}")
    if unknown:
        named = ", ".join(sorted(unknown))
        sentences.append(f"{tool} has no argument {named}; it takes {', '.join(accepted)}")
    return "; ".join(sentences) + "; correct the call and try again"


class AdapterTool(Tool):
    """A tool that refuses unknown arguments, says what is wrong with an argument in a plain sentence, and gives a
    client too old for structured output the data as JSON text too."""

    async def run(self, arguments: dict[str, Any], context: Context[Any, Any], convert_result: bool = False) -> Any:
        try:
            result = await super().run(arguments, context, convert_result)
        except ToolError as error:
            if isinstance(error, UnexpectedToolError):
                raise
            cause = error.__cause__
            if isinstance(cause, ValidationError):
                accepted = [f.alias or name for name, f in self.fn_metadata.arg_model.model_fields.items()]
                raise AdapterError(argument_error(self.name, cause, accepted)) from cause
            # The model knows which tool it called: the SDK's "Error executing tool x: " prefix is noise.
            raise AdapterError(str(error).removeprefix(f"Error executing tool {self.name}: ")) from cause
        if isinstance(result, CallToolResult) and result.structured_content is not None:
            version = context.protocol_version
            if version is not None and version < STRUCTURED_OUTPUT_SINCE:
                data = json.dumps(result.structured_content, separators=(",", ":"), ensure_ascii=False)
                result.content.append(TextContent(type="text", text=data))
        return result


def adapter_tool(spec: ToolSpec, over_http: bool) -> AdapterTool:
    """The registered tool for ``spec``: strict arguments, trimmed schemas, its annotations."""
    tool = AdapterTool.from_function(
        spec.function,
        name=spec.name,
        description=(spec.http_description if over_http else "") or None,
        annotations=ToolAnnotations(
            read_only_hint=spec.read_only,
            destructive_hint=spec.destructive,
            idempotent_hint=spec.idempotent,
            open_world_hint=spec.open_world,
        ),
    )
    loose = tool.fn_metadata.arg_model

    class Strict(loose):  # type: ignore[valid-type,misc]
        model_config = ConfigDict(extra="forbid")

    strict: type[BaseModel] = Strict
    tool.fn_metadata.arg_model = Strict
    tool.parameters = _trimmed(strict.model_json_schema(by_alias=True), output=False)
    schema = tool.fn_metadata.output_schema
    if schema is not None:
        schema = _trimmed(schema, output=True)
        assert "result" not in schema.get("properties", {}), f"{spec.name}: 'result' is the reply's own line"
        schema["properties"] = {"result": {"type": "string"}, **schema.get("properties", {})}
        schema["required"] = ["result", *schema.get("required", [])]
        tool.fn_metadata.output_schema = schema
    assert isinstance(tool, AdapterTool)
    return tool


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
        instructions=INSTRUCTIONS + (HTTP_INSTRUCTIONS if over_http else LOGIN_INSTRUCTIONS),
        tools=[adapter_tool(spec, over_http) for spec in selected_tools(config)],
        version=VERSION,
        lifespan=lifespan,
        token_verifier=verifier,
        auth=auth,
        log_level="WARNING",
    )

    @server.custom_route("/healthz", methods=["GET"])  # type: ignore[untyped-decorator]
    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return server
