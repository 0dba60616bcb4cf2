"""The error-mapping interceptor on a real server with a test servicer: every exception becomes a status.

The servicer here is a stand-in written for the test (it raises on purpose); the server, interceptors,
socket and client are the real ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from monitors.v1 import account_service_pb2 as pb
from monitors.v1 import account_service_pb2_grpc
from service_runtime.auth import Principal, current_principal
from service_runtime.errors import InvalidArgument, NotFound, ResourceExhausted, Unauthenticated
from service_runtime.server import RegisteredService, ServiceHost
from service_runtime.settings import Settings


class StaticVerifier:
    async def verify(self, token: str) -> Principal:
        if token != "good":
            raise Unauthenticated("unknown or revoked token")
        return Principal("usr_1", "a@example.com", "key_1")


class FaultyAccounts(account_service_pb2_grpc.AccountServiceServicer):
    """Each RPC fails in its own way."""

    async def GetCurrentUser(self, request: Any, context: Any) -> pb.GetCurrentUserResponse:
        principal = current_principal()
        return pb.GetCurrentUserResponse(user=pb.User(id=principal.user_id, email=principal.email))

    async def DeleteApiKey(self, request: Any, context: Any) -> pb.DeleteApiKeyResponse:
        raise NotFound("api key", request.id)

    async def CreateApiKey(self, request: Any, context: Any) -> pb.CreateApiKeyResponse:
        raise RuntimeError("database password is hunter2")

    async def ListApiKeys(self, request: Any, context: Any) -> pb.ListApiKeysResponse:
        raise ResourceExhausted("api_keys_per_user", "at most 20 API keys per user")

    async def StartLogin(self, request: Any, context: Any) -> pb.StartLoginResponse:
        raise InvalidArgument("email", "is required")


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[account_service_pb2_grpc.AccountServiceStub]:
    settings = Settings.from_env("monitor", {"MONITORS_DATA_DIR": str(tmp_path)}, listen="127.0.0.1:0")
    service = RegisteredService(
        "monitors.v1.AccountService",
        FaultyAccounts(),  # type: ignore[abstract]
        account_service_pb2_grpc.add_AccountServiceServicer_to_server,
    )
    host = ServiceHost(settings, [service], StaticVerifier(), ["/monitors.v1.AccountService/StartLogin"])
    port = await host.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield account_service_pb2_grpc.AccountServiceStub(channel)
    await host.stop()


GOOD = (("authorization", "Bearer good"),)


async def test_principal_reaches_the_servicer(stub: Any) -> None:
    reply = await stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=GOOD, timeout=5)
    assert (reply.user.id, reply.user.email) == ("usr_1", "a@example.com")


async def test_not_found_carries_error_info(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DeleteApiKey(pb.DeleteApiKeyRequest(id="key_9"), metadata=GOOD, timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "api key key_9 not found"
    status = rpc_status.from_call(caught.value)
    info = error_details_pb2.ErrorInfo()
    assert status is not None
    assert status.details[0].Unpack(info)
    assert dict(info.metadata) == {"resource_type": "api key", "resource_id": "key_9"}


async def test_an_echoed_long_id_is_cut_so_the_caller_still_sees_not_found(stub: Any) -> None:
    """A 10,000-character id echoed whole made trailers past the client's 16 KiB cap: RESOURCE_EXHAUSTED."""
    long_id = "k" * 10_000
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DeleteApiKey(
            pb.DeleteApiKeyRequest(id=long_id), metadata=(*GOOD, ("x-request-id", "r-2")), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    message = caught.value.details() or ""
    assert message.startswith("api key kkk")
    assert len(message) <= 1_000
    assert ("x-request-id", "r-2") in tuple(caught.value.trailing_metadata() or ())
    status = rpc_status.from_call(caught.value)
    info = error_details_pb2.ErrorInfo()
    assert status is not None
    assert status.details[0].Unpack(info)
    assert info.metadata["resource_id"] == "k" * 199 + "…"


async def test_unknown_exception_is_internal_without_leaking(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateApiKey(pb.CreateApiKeyRequest(), metadata=(*GOOD, ("x-request-id", "r-1")), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in (caught.value.details() or "")
    assert "r-1" in (caught.value.details() or "")


async def test_resource_exhausted_names_the_limit(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListApiKeys(pb.ListApiKeysRequest(), metadata=GOOD, timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(caught.value)
    info = error_details_pb2.ErrorInfo()
    assert status is not None
    assert status.details[0].Unpack(info)
    assert info.metadata["limit"] == "api_keys_per_user"


async def test_public_method_needs_no_token_and_still_maps_errors(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StartLogin(pb.StartLoginRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_unserved_method_is_unimplemented(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Logout(pb.LogoutRequest(), metadata=GOOD, timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_bad_token_never_reaches_the_servicer(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DeleteApiKey(pb.DeleteApiKeyRequest(id="x"), metadata=(("authorization", "Bearer bad"),), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
