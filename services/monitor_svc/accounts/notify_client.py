"""The monitor process's client of NotificationService: login codes go out as emails through it."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import grpc

from monitors.v1 import common_pb2, notification_service_pb2, notification_service_pb2_grpc
from service_runtime.errors import Unavailable
from service_runtime.timestamps import to_duration

npb = notification_service_pb2


class NotifyLoginCodeSender:
    """:class:`services.monitor_svc.accounts.login.LoginCodeSender` over gRPC, with the monitor service's role token."""

    def __init__(self, channel: grpc.aio.Channel, token: str, timeout_s: float = 5.0) -> None:
        self._stub = notification_service_pb2_grpc.NotificationServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._timeout_s = timeout_s

    async def send_login_code(self, email: str, code: str, valid_for: timedelta) -> None:
        minutes = int(valid_for.total_seconds() // 60)
        request = npb.SendNotificationRequest(
            idempotency_key=f"login-code-{secrets.token_hex(16)}",
            email_address=email,
            notification=npb.Notification(
                kind=npb.NOTIFICATION_KIND_LOGIN_CODE,
                severity=common_pb2.SEVERITY_INFO,
                summary=f"Your monitors login code (valid {minutes} minutes)",
                login_code=code,
                duration=to_duration(valid_for),
            ),
        )
        request.notification.event_time.FromDatetime(datetime.now(UTC))  # the mail says until when
        try:
            await self._stub.SendNotification(request, metadata=self._metadata, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as error:
            raise Unavailable(f"NotificationService answered {error.code().name}") from None
