"""Login tools: request_login_code, verify_login_code, logout, whoami."""

from __future__ import annotations

from typing import Annotated

from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from mcp_adapter.errors import AdapterError
from mcp_adapter.identity import StdioIdentity
from mcp_adapter.toolbox import ToolContext, reply, state_of, tool
from mcp_adapter.views import iso, span
from monitors.v1 import account_service_pb2

Email = Annotated[str, Field(min_length=3, max_length=254, description="The person's email address.")]


class LoginCodeSent(BaseModel):
    email: str
    code_valid_for: str | None = None


class LoggedIn(BaseModel):
    user_id: str
    email: str
    session_expires: str | None = None
    remembered: bool


class LoggedOut(BaseModel):
    logged_out: bool
    still_authenticated_by: str | None = None


class WhoAmI(BaseModel):
    user_id: str
    email: str
    authenticated_by: str


def _stdio_identity(ctx: ToolContext) -> StdioIdentity:
    identity = state_of(ctx).identity
    if not isinstance(identity, StdioIdentity):
        raise AdapterError("this adapter is shared over HTTP: your identity is the API key your MCP client presents")
    return identity


@tool(stdio_only=True, open_world=True)
async def request_login_code(email: Email, ctx: ToolContext) -> Annotated[CallToolResult, LoginCodeSent]:
    """Email a one-time login code to the person. Use it when a tool says "not logged in": ask the person for
    their email address, call this, then ask them for the code and call verify_login_code. The account is
    created on first login. Returns how long the code stays valid. Too many requests answer with a limit:
    wait and try again."""
    state = state_of(ctx)
    _stdio_identity(ctx)
    response = await state.clients.call(
        state.clients.accounts.StartLogin, account_service_pb2.StartLoginRequest(email=email), token=None
    )
    ttl = span(response.code_ttl)
    return reply(
        f"A login code was sent to {email}" + (f"; it is valid for {ttl}" if ttl else "") + ". Ask for it.",
        LoginCodeSent(email=email, code_valid_for=ttl),
    )


@tool(stdio_only=True)
async def verify_login_code(
    email: Email,
    code: Annotated[str, Field(min_length=1, max_length=32, description="The code from the email.")],
    ctx: ToolContext,
) -> Annotated[CallToolResult, LoggedIn]:
    """Complete the login with the code the person received after request_login_code. Every other tool then
    runs as this person. A wrong or expired code fails: ask the person to check it, or request a new one."""
    state = state_of(ctx)
    identity = _stdio_identity(ctx)
    response = await state.clients.call(
        state.clients.accounts.CompleteLogin,
        account_service_pb2.CompleteLoginRequest(email=email, code=code.strip()),
        token=None,
    )
    identity.start_session(response.session_token)
    return reply(
        f"Logged in as {response.user.email}.",
        LoggedIn(
            user_id=response.user.id,
            email=response.user.email,
            session_expires=iso(response.expire_time),
            remembered=identity.session_file is not None,
        ),
    )


@tool(stdio_only=True, idempotent=True)
async def logout(ctx: ToolContext) -> Annotated[CallToolResult, LoggedOut]:
    """End the login session made by verify_login_code (and forget it if it was remembered). An API key from
    MONITORS_API_KEY stays in use afterwards."""
    state = state_of(ctx)
    identity = _stdio_identity(ctx)
    if identity.session_token:
        try:
            await state.clients.call(
                state.clients.accounts.Logout, account_service_pb2.LogoutRequest(), token=identity.session_token
            )
        finally:
            identity.end_session()
        logged_out = True
    else:
        logged_out = False
    fallback = "api_key" if identity.api_key else None
    summary = "Logged out." if logged_out else "There was no login session to end."
    if fallback:
        summary += " Calls now use the API key from MONITORS_API_KEY."
    return reply(summary, LoggedOut(logged_out=logged_out, still_authenticated_by=fallback))


@tool(
    read_only=True,
    http_description="Say who the tools run as (user id and email): the owner of the API key this MCP client "
    "presents. Use it to check the identity before acting; if the key is refused, the person configures a new one "
    "in their MCP client.",
)
async def whoami(ctx: ToolContext) -> Annotated[CallToolResult, WhoAmI]:
    """Say who the tools run as (user id and email). Use it to check the login before acting; if it fails with
    "not logged in", use request_login_code."""
    state = state_of(ctx)
    response = await state.clients.call(
        state.clients.accounts.GetCurrentUser, account_service_pb2.GetCurrentUserRequest(), token=state.token()
    )
    return reply(
        f"You are {response.user.email}.",
        WhoAmI(user_id=response.user.id, email=response.user.email, authenticated_by=state.identity.kind),
    )
