"""Token verification for services that do not own accounts: ask AccountService over gRPC.

The alert and notification services hold no account tables; they forward the caller's bearer token to
``AccountService.GetCurrentUser`` (with a deadline) and cache the answer briefly (see CachingTokenVerifier).
"""

from __future__ import annotations

import grpc

from monitors.v1 import account_service_pb2, account_service_pb2_grpc
from service_runtime.auth import Principal, token_digest
from service_runtime.errors import PermissionDenied, Unauthenticated, Unavailable


class RemoteTokenVerifier:
    """Resolves tokens by calling the account service over ``channel`` (which it closes)."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float) -> None:
        self._channel = channel
        self._stub = account_service_pb2_grpc.AccountServiceStub(self._channel)
        self._timeout_s = timeout_s

    async def verify(self, token: str) -> Principal:
        try:
            reply = await self._stub.GetCurrentUser(
                account_service_pb2.GetCurrentUserRequest(),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise Unauthenticated(error.details() or "unknown or revoked token") from None
            if error.code() == grpc.StatusCode.PERMISSION_DENIED:  # a valid token that is not a user's
                raise PermissionDenied(error.details() or "this token may not call this method") from None
            raise Unavailable("the account service cannot verify credentials right now; retry shortly") from None
        # The account service does not reveal which credential it was; the token digest stands in for it.
        return Principal(user_id=reply.user.id, email=reply.user.email, credential_id="tok_" + token_digest(token)[:16])

    async def close(self) -> None:
        await self._channel.close()
