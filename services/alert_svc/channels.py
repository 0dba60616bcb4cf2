"""The caller's notification channels, as NotificationService knows them: a rule may name only its owner's.

Asked with the caller's own bearer token, so NotificationService answers exactly what the caller may see (another
user's channel is NOT_FOUND there as here)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from monitors.v1 import notification_service_pb2, notification_service_pb2_grpc
from service_runtime.auth import current_bearer
from service_runtime.errors import NotFound, Unavailable


class NotifyChannels:
    """Checks channel ids against NotificationService (GetChannel), with a deadline per call."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = 5.0) -> None:
        self._stub = notification_service_pb2_grpc.NotificationServiceStub(channel)
        self._timeout_s = timeout_s

    async def require(self, channel_ids: Sequence[str]) -> None:
        """NOT_FOUND for the first id that is not one of the caller's channels."""
        metadata = (("authorization", f"Bearer {current_bearer()}"),)
        for channel_id in dict.fromkeys(channel_ids):
            request = notification_service_pb2.GetChannelRequest(id=channel_id)
            try:
                await self._stub.GetChannel(request, metadata=metadata, timeout=self._timeout_s)
            except grpc.aio.AioRpcError as error:
                if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                    raise NotFound("channel", channel_id) from None
                raise Unavailable(f"cannot check channel {channel_id} now ({error.code().name}); retry") from None
