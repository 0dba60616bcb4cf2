"""Servicers of the monitor process: protobuf in, domain call, protobuf out. Nothing else lives here."""

from __future__ import annotations

from typing import Any

from monitors.v1 import account_service_pb2 as pb
from monitors.v1 import account_service_pb2_grpc, monitor_service_pb2_grpc
from service_runtime.auth import current_principal
from service_runtime.errors import NotImplementedYet
from service_runtime.timestamps import from_timestamp, to_timestamp
from services.monitor_svc.accounts import Accounts
from services.monitor_svc.store import ApiKey, User

Context = Any  # grpc.aio.ServicerContext; the interceptors own status handling, servicers never touch it.
LOGIN_LATER = (
    "email login arrives with the accounts issue; until then create an API key with "
    "`python -m services.admin create-api-key --email you@example.com`"
)


def user_to_proto(user: User) -> pb.User:
    return pb.User(id=user.id, email=user.email, create_time=to_timestamp(user.create_time))


def api_key_to_proto(key: ApiKey) -> pb.ApiKey:
    return pb.ApiKey(
        id=key.id,
        display_name=key.display_name,
        prefix=key.prefix,
        create_time=to_timestamp(key.create_time),
        last_use_time=to_timestamp(key.last_use_time),
        expire_time=to_timestamp(key.expire_time),
    )


class AccountServicer(account_service_pb2_grpc.AccountServiceServicer):
    """AccountService: who the caller is, and their API keys."""

    def __init__(self, accounts: Accounts) -> None:
        self._accounts = accounts

    async def StartLogin(self, request: pb.StartLoginRequest, context: Context) -> pb.StartLoginResponse:
        raise NotImplementedYet(LOGIN_LATER)

    async def CompleteLogin(self, request: pb.CompleteLoginRequest, context: Context) -> pb.CompleteLoginResponse:
        raise NotImplementedYet(LOGIN_LATER)

    async def Logout(self, request: pb.LogoutRequest, context: Context) -> pb.LogoutResponse:
        raise NotImplementedYet(LOGIN_LATER)

    async def GetCurrentUser(self, request: pb.GetCurrentUserRequest, context: Context) -> pb.GetCurrentUserResponse:
        user = await self._accounts.current_user(current_principal())
        return pb.GetCurrentUserResponse(user=user_to_proto(user))

    async def CreateApiKey(self, request: pb.CreateApiKeyRequest, context: Context) -> pb.CreateApiKeyResponse:
        expire_time = from_timestamp(request.expire_time, request.HasField("expire_time"))
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


class MonitorServicer(monitor_service_pb2_grpc.MonitorServiceServicer):
    """MonitorService. The contract is complete; monitors arrive with their own issue, and until then each
    RPC answers UNIMPLEMENTED (the generated base class) through the same auth and error chain."""
