"""Token verification through AccountService, for the alert and notification services: each answer of the
account service becomes the error a caller can act on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from monitors.v1 import account_service_pb2 as pb
from monitors.v1 import account_service_pb2_grpc
from service_runtime.errors import PermissionDenied, Unauthenticated, Unavailable
from service_runtime.remote_auth import RemoteTokenVerifier


class Accounts(account_service_pb2_grpc.AccountServiceServicer):
    """A real gRPC AccountService answering GetCurrentUser by token: a user, or the status the token names."""

    async def GetCurrentUser(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        token = str(dict(context.invocation_metadata() or ())["authorization"]).removeprefix("Bearer ")
        if token == "user":
            return pb.GetCurrentUserResponse(user=pb.User(id="usr_1", email="a@example.com"))
        await context.abort(getattr(grpc.StatusCode, token), f"{token} for this token")


@pytest.fixture
async def verifier() -> AsyncIterator[RemoteTokenVerifier]:
    server = grpc.aio.server()
    account_service_pb2_grpc.add_AccountServiceServicer_to_server(Accounts(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    verifier = RemoteTokenVerifier(grpc.aio.insecure_channel(f"127.0.0.1:{port}"), timeout_s=5)
    yield verifier
    await verifier.close()
    await server.stop(None)


async def test_a_users_token_is_that_user(verifier: RemoteTokenVerifier) -> None:
    principal = await verifier.verify("user")
    assert (principal.user_id, principal.email) == ("usr_1", "a@example.com")


@pytest.mark.parametrize(
    ("answer", "error"),
    [("UNAUTHENTICATED", Unauthenticated), ("PERMISSION_DENIED", PermissionDenied), ("INTERNAL", Unavailable)],
)
async def test_the_account_services_refusal_reaches_the_caller(
    verifier: RemoteTokenVerifier, answer: str, error: type[Exception]
) -> None:
    """PERMISSION_DENIED (a service's token on a user's method) was reported as UNAVAILABLE, 'retry shortly'."""
    with pytest.raises(error):
        await verifier.verify(answer)
