"""AccountService's servicer: protobuf in, :class:`Accounts` or :class:`Login` call, protobuf out."""

from __future__ import annotations

from typing import Any

from monitors.v1 import account_service_pb2 as pb
from monitors.v1 import account_service_pb2_grpc
from service_runtime.auth import current_principal
from service_runtime.timestamps import from_timestamp, to_duration, to_timestamp
from services.monitor_svc.accounts.accounts import Accounts
from services.monitor_svc.accounts.login import Login
from services.monitor_svc.accounts.translate import api_key_to_proto, user_to_proto

Context = Any  # grpc.aio.ServicerContext; the interceptors own status handling, servicers never touch it.


def client_address(context: Context) -> str:
    """The caller's address without its port ("ipv4:10.0.0.7:53211" -> "ipv4:10.0.0.7"), for rate limits."""
    peer = str(context.peer() or "unknown")
    return peer.rsplit(":", 1)[0] if peer.startswith(("ipv4:", "ipv6:")) else peer


class AccountServicer(account_service_pb2_grpc.AccountServiceServicer):
    """AccountService: who the caller is, and their API keys."""

    def __init__(self, accounts: Accounts, login: Login) -> None:
        self._accounts = accounts
        self._login = login

    async def StartLogin(self, request: pb.StartLoginRequest, context: Context) -> pb.StartLoginResponse:
        valid_for = await self._login.start(request.email, client_address(context))
        return pb.StartLoginResponse(code_ttl=to_duration(valid_for))

    async def CompleteLogin(self, request: pb.CompleteLoginRequest, context: Context) -> pb.CompleteLoginResponse:
        session = await self._login.complete(request.email, request.code, client_address(context))
        return pb.CompleteLoginResponse(
            session_token=session.token,
            expire_time=to_timestamp(session.expire_time),
            user=user_to_proto(session.user),
        )

    async def Logout(self, request: pb.LogoutRequest, context: Context) -> pb.LogoutResponse:
        await self._login.logout(current_principal())
        return pb.LogoutResponse()

    async def GetCurrentUser(self, request: pb.GetCurrentUserRequest, context: Context) -> pb.GetCurrentUserResponse:
        user = await self._accounts.current_user(current_principal())
        return pb.GetCurrentUserResponse(user=user_to_proto(user))

    async def CreateApiKey(self, request: pb.CreateApiKeyRequest, context: Context) -> pb.CreateApiKeyResponse:
        expire_time = from_timestamp(request.expire_time, request.HasField("expire_time"), "expire_time")
        key, secret = await self._accounts.create_api_key(current_principal(), request.display_name, expire_time)
        return pb.CreateApiKeyResponse(api_key=api_key_to_proto(key), key=secret)

    async def ListApiKeys(self, request: pb.ListApiKeysRequest, context: Context) -> pb.ListApiKeysResponse:
        keys, next_token = await self._accounts.list_api_keys(
            current_principal(), request.page_size, request.page_token
        )
        return pb.ListApiKeysResponse(api_keys=[api_key_to_proto(k) for k in keys], next_page_token=next_token)

    async def DeleteApiKey(self, request: pb.DeleteApiKeyRequest, context: Context) -> pb.DeleteApiKeyResponse:
        await self._accounts.delete_api_key(current_principal(), request.id)
        return pb.DeleteApiKeyResponse()
