"""Who a tool call runs as.

Over stdio one person uses the adapter: the session from the login tools (in memory, or in a 0600 file with
--remember), else MONITORS_API_KEY. Over HTTP each MCP client presents its own API key as a bearer token, which
:class:`AccountTokenVerifier` checks with AccountService; every gRPC call then forwards that client's token, so
one user's call never runs as another. Tokens are never logged or returned by a tool.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from starlette.authentication import AuthenticationError

from mcp_adapter.errors import AdapterError
from monitors.v1 import account_service_pb2, account_service_pb2_grpc

NOT_LOGGED_IN = (
    "not logged in: call request_login_code with your email address, then verify_login_code with the code it "
    "sends (or start the adapter with MONITORS_API_KEY set)"
)


def default_session_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "monitors" / "mcp-session.json"


@dataclass
class StdioIdentity:
    """The single user of a stdio adapter: a login session, else an API key from the environment."""

    api_key: str = ""
    session_file: Path | None = None
    session_token: str = ""

    def __post_init__(self) -> None:
        if self.session_file is not None and self.session_file.exists():
            try:
                self.session_token = str(json.loads(self.session_file.read_text())["session_token"])
            except (OSError, ValueError, KeyError):
                self.session_token = ""

    def token(self) -> str:
        token = self.session_token or self.api_key
        if not token:
            raise AdapterError(NOT_LOGGED_IN)
        return token

    @property
    def kind(self) -> str:
        return "session" if self.session_token else "api_key" if self.api_key else "none"

    def start_session(self, token: str) -> None:
        self.session_token = token
        if self.session_file is not None:
            self.session_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Created 0600 before anything is written, so the token is never readable by others.
            descriptor = os.open(self.session_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(descriptor, 0o600)
            with os.fdopen(descriptor, "w") as file:
                json.dump({"session_token": token}, file)

    def end_session(self) -> None:
        self.session_token = ""
        if self.session_file is not None:
            self.session_file.unlink(missing_ok=True)


class HttpIdentity:
    """Each HTTP client's own bearer token, verified by :class:`AccountTokenVerifier` for this request."""

    kind = "bearer"

    def token(self) -> str:
        access = get_access_token()
        if access is None:
            raise AdapterError("no API key presented: configure this MCP client with `Authorization: Bearer <key>`")
        return access.token


@dataclass
class AccountTokenVerifier:
    """The SDK's token-verifier hook, answered by AccountService.GetCurrentUser (with a deadline).

    A verified token is remembered for ``cache_ttl_s`` (by its hash) to spare a round trip per HTTP request;
    the services check the token again on every call, so a revoked key stops working there at once.
    """

    target: str
    channel: grpc.aio.Channel | None = None
    timeout_s: float = 5.0
    cache_ttl_s: float = 5.0
    _cache: dict[bytes, tuple[float, AccessToken]] = field(default_factory=dict)

    async def verify_token(self, token: str) -> AccessToken | None:
        key = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        if self.channel is None:
            raise AuthenticationError("the adapter is starting; retry")
        stub = account_service_pb2_grpc.AccountServiceStub(self.channel)
        try:
            reply = await stub.GetCurrentUser(
                account_service_pb2.GetCurrentUserRequest(),
                timeout=self.timeout_s,
                metadata=(("authorization", f"Bearer {token}"),),
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                return None
            # Not the key's fault: say so (400 with this text) rather than 401, which clients take as a bad key.
            raise AuthenticationError(
                f"cannot verify the API key: AccountService at {self.target} is unavailable"
            ) from None
        access = AccessToken(token=token, client_id=reply.user.id, subject=reply.user.id, scopes=[])
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + self.cache_ttl_s, access)
        return access
