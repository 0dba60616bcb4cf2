"""The gRPC channels to the services, opened once for the adapter's life, and one call path with a deadline,
the caller's bearer token and error translation."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

from mcp_adapter.errors import Subject, tool_error
from monitors.v1 import (
    account_service_pb2_grpc,
    alert_service_pb2_grpc,
    monitor_service_pb2_grpc,
    notification_service_pb2_grpc,
)

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


@dataclass(frozen=True)
class Targets:
    """Where the services are (host:port) and how to reach them."""

    monitor: str = "127.0.0.1:50051"
    alert: str = "127.0.0.1:50052"
    notify: str = "127.0.0.1:50053"
    rpc_timeout_s: float = 10.0
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Targets:
        """MONITORS_MONITOR_TARGET, MONITORS_ALERT_TARGET, MONITORS_NOTIFY_TARGET, MONITORS_MCP_RPC_TIMEOUT_S and
        the services' MONITORS_TLS_* settings."""
        return cls(
            monitor=env.get("MONITORS_MONITOR_TARGET") or cls.monitor,
            alert=env.get("MONITORS_ALERT_TARGET") or cls.alert,
            notify=env.get("MONITORS_NOTIFY_TARGET") or cls.notify,
            rpc_timeout_s=float(env.get("MONITORS_MCP_RPC_TIMEOUT_S") or cls.rpc_timeout_s),
            tls_ca_file=env.get("MONITORS_TLS_CA_FILE", ""),
            tls_cert_file=env.get("MONITORS_TLS_CERT_FILE", ""),
            tls_key_file=env.get("MONITORS_TLS_KEY_FILE", ""),
        )

    def channel(self, address: str) -> grpc.aio.Channel:
        if not self.tls_ca_file:
            return grpc.aio.insecure_channel(address)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(self.tls_ca_file).read_bytes(),
            private_key=Path(self.tls_key_file).read_bytes() if self.tls_key_file else None,
            certificate_chain=Path(self.tls_cert_file).read_bytes() if self.tls_cert_file else None,
        )
        return grpc.aio.secure_channel(address, credentials)


class ServiceClients:
    """Stubs of the four services over three channels (AccountService shares the monitor service's)."""

    def __init__(self, targets: Targets, over_http: bool = False) -> None:
        self.targets = targets
        self.over_http = over_http
        self._channels = {name: targets.channel(getattr(targets, name)) for name in ("monitor", "alert", "notify")}
        self.monitors = monitor_service_pb2_grpc.MonitorServiceStub(self._channels["monitor"])
        self.accounts = account_service_pb2_grpc.AccountServiceStub(self._channels["monitor"])
        self.alerts = alert_service_pb2_grpc.AlertServiceStub(self._channels["alert"])
        self.notifications = notification_service_pb2_grpc.NotificationServiceStub(self._channels["notify"])

    @property
    def monitor_channel(self) -> grpc.aio.Channel:
        return self._channels["monitor"]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[RequestT, ResponseT],
        request: RequestT,
        *,
        token: str | None,
        subject: Subject | None = None,
        timeout_s: float | None = None,
    ) -> ResponseT:
        """``method(request)`` with ``token`` as bearer and a deadline; a failure becomes an AdapterError."""
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        try:
            response: ResponseT = await method(
                request, timeout=timeout_s or self.targets.rpc_timeout_s, metadata=metadata
            )
        except grpc.aio.AioRpcError as error:
            service, target = self._service_of(method)
            raise tool_error(error, service=service, target=target, subject=subject, over_http=self.over_http) from None
        return response

    def _service_of(self, method: object) -> tuple[str, str]:
        for stub, name, target in (
            (self.alerts, "AlertService", self.targets.alert),
            (self.notifications, "NotificationService", self.targets.notify),
            (self.accounts, "AccountService", self.targets.monitor),
        ):
            if any(method is value for value in vars(stub).values()):
                return name, target
        return "MonitorService", self.targets.monitor
