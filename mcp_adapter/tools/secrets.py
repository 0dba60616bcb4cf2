"""Secret tools: store_secret, list_secrets, delete_secret. Values are write-only: never returned."""

from __future__ import annotations

from typing import Annotated

from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from mcp_adapter.errors import Subject
from mcp_adapter.toolbox import ToolContext, reply, state_of, tool
from mcp_adapter.views import iso
from monitors.v1 import monitor_service_pb2

SecretName = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$",
        description="Letters, digits and underscores, starting with a letter, e.g. SHOP_API_TOKEN.",
    ),
]


class SecretView(BaseModel):
    name: str
    created: str | None = None
    updated: str | None = None
    reference: str


class SecretList(BaseModel):
    secrets: list[SecretView]
    next_page_token: str | None = None


@tool(idempotent=True)
async def store_secret(
    name: SecretName,
    value: Annotated[str, Field(min_length=1, max_length=8192, description="The secret value (write-only).")],
    ctx: ToolContext,
) -> Annotated[CallToolResult, SecretView]:
    """Store (or replace) a password, token or API key, encrypted; it is never shown again. Monitors use it by
    writing {{secret:NAME}} in a URL, header or body, e.g. headers {"Authorization": "Bearer {{secret:NAME}}"}."""
    state = state_of(ctx)
    response = await state.clients.call(
        state.clients.monitors.PutSecret,
        monitor_service_pb2.PutSecretRequest(name=name, value=value),
        token=state.token(),
    )
    view = SecretView(
        name=response.secret.name,
        created=iso(response.secret.create_time),
        updated=iso(response.secret.update_time),
        reference=f"{{{{secret:{response.secret.name}}}}}",
    )
    return reply(f"Stored secret {view.name}; refer to it as {view.reference}.", view)


@tool(read_only=True)
async def list_secrets(
    ctx: ToolContext, page_size: Annotated[int, Field(ge=1, le=1000)] = 100, page_token: str = ""
) -> Annotated[CallToolResult, SecretList]:
    """List the names of the person's stored secrets (values are never shown)."""
    state = state_of(ctx)
    response = await state.clients.call(
        state.clients.monitors.ListSecrets,
        monitor_service_pb2.ListSecretsRequest(page_size=page_size, page_token=page_token),
        token=state.token(),
    )
    views = [
        SecretView(
            name=s.name, created=iso(s.create_time), updated=iso(s.update_time), reference=f"{{{{secret:{s.name}}}}}"
        )
        for s in response.secrets
    ]
    names = ", ".join(v.name for v in views)
    return reply(
        f"{len(views)} secret(s)" + (f": {names}." if names else "."),
        SecretList(secrets=views, next_page_token=response.next_page_token or None),
    )


class Deleted(BaseModel):
    deleted: str


@tool(destructive=True, idempotent=True)
async def delete_secret(name: SecretName, ctx: ToolContext) -> Annotated[CallToolResult, Deleted]:
    """Delete a stored secret. Refused while a monitor still refers to it: update or delete that monitor first."""
    state = state_of(ctx)
    await state.clients.call(
        state.clients.monitors.DeleteSecret,
        monitor_service_pb2.DeleteSecretRequest(name=name),
        token=state.token(),
        subject=Subject("secret", name, "list_secrets"),
    )
    return reply(f"Deleted secret {name}.", Deleted(deleted=name))
