"""How a service host registers its handlers with grpc.aio: as generic handlers only.

grpc.aio's registered methods each keep a pending request that the server waits on again for every call, so
each call pays for every registered method (see ``GenericHandlersOnly``). The host must therefore never
register any, while our services, health and reflection all still answer. The server here is the real
grpc.aio server, wrapped only to record which registration calls reach it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from monitors.v1 import account_service_pb2 as pb
from monitors.v1 import account_service_pb2_grpc
from service_runtime.auth import Principal, current_principal
from service_runtime.errors import Unauthenticated
from service_runtime.server import RegisteredService, ServiceHost
from service_runtime.settings import Settings


class RecordingServer:
    """The real grpc.aio server, with the registration calls it receives written down."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server
        self.generic: list[Any] = []
        self.registered: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, handlers: dict[str, Any]) -> None:
        self.registered.append(service_name)
        self._server.add_registered_method_handlers(service_name, handlers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


class Verifier:
    async def verify(self, token: str) -> Principal:
        if token != "good":
            raise Unauthenticated("unknown or revoked token")
        return Principal("usr_1", "a@example.com", "key_1")


class Accounts(account_service_pb2_grpc.AccountServiceServicer):
    async def GetCurrentUser(self, request: Any, context: Any) -> pb.GetCurrentUserResponse:
        return pb.GetCurrentUserResponse(user=pb.User(id=current_principal().user_id))


async def test_host_registers_generic_handlers_only_and_everything_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorders: list[RecordingServer] = []
    real_server = grpc.aio.server

    def recording_server(*args: Any, **kwargs: Any) -> Any:
        recorders.append(RecordingServer(real_server(*args, **kwargs)))
        return recorders[-1]

    monkeypatch.setattr(grpc.aio, "server", recording_server)
    settings = Settings.from_env("monitor", {"MONITORS_DATA_DIR": str(tmp_path)}, listen="127.0.0.1:0")
    service = RegisteredService(
        "monitors.v1.AccountService",
        Accounts(),  # type: ignore[abstract]
        account_service_pb2_grpc.add_AccountServiceServicer_to_server,
    )
    host = ServiceHost(settings, [service], Verifier())
    (recorder,) = recorders
    assert recorder.registered == []
    # Ours (with the chain), health and reflection.
    assert len(recorder.generic) == 3

    port = await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            accounts = account_service_pb2_grpc.AccountServiceStub(channel)
            reply = await accounts.GetCurrentUser(
                pb.GetCurrentUserRequest(), metadata=(("authorization", "Bearer good"),), timeout=5
            )
            assert reply.user.id == "usr_1"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await accounts.GetCurrentUser(pb.GetCurrentUserRequest(), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

            health = health_pb2_grpc.HealthStub(channel)
            status = await health.Check(health_pb2.HealthCheckRequest(service="monitors.v1.AccountService"), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING

            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            call = reflection.ServerReflectionInfo(timeout=5)
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            answer = await call.read()
            await call.done_writing()
            names = {s.name for s in answer.list_services_response.service}
            assert names == {
                "monitors.v1.AccountService",
                "grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection",
            }
    finally:
        await host.stop()
