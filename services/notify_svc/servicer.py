"""NotificationService servicer: protobuf in, :class:`Notifications` call, protobuf out. Nothing else lives here."""

from __future__ import annotations

from typing import Any

from monitors.v1 import notification_service_pb2 as pb
from monitors.v1 import notification_service_pb2_grpc
from service_runtime.auth import current_principal
from services.notify_svc.notifications import Notifications
from services.notify_svc.translate import (
    channel_to_proto,
    delivery_to_proto,
    draft_from_proto,
    notification_from_proto,
    state_from_proto,
)

Context = Any  # grpc.aio.ServicerContext; the interceptors own status handling, servicers never touch it.


class NotificationServiceServicer(notification_service_pb2_grpc.NotificationServiceServicer):
    """NotificationService: channels, SendNotification (our services only) and the delivery log."""

    def __init__(self, notifications: Notifications) -> None:
        self._notifications = notifications

    async def CreateChannel(self, request: pb.CreateChannelRequest, context: Context) -> pb.CreateChannelResponse:
        channel, shown = await self._notifications.create_channel(
            current_principal(), draft_from_proto(request.channel)
        )
        return pb.CreateChannelResponse(channel=channel_to_proto(channel, show_signing_secret=shown))

    async def GetChannel(self, request: pb.GetChannelRequest, context: Context) -> pb.GetChannelResponse:
        channel = await self._notifications.get_channel(current_principal(), request.id)
        return pb.GetChannelResponse(channel=channel_to_proto(channel))

    async def ListChannels(self, request: pb.ListChannelsRequest, context: Context) -> pb.ListChannelsResponse:
        page, token = await self._notifications.list_channels(
            current_principal(), request.page_size, request.page_token
        )
        return pb.ListChannelsResponse(channels=[channel_to_proto(c) for c in page], next_page_token=token)

    async def UpdateChannel(self, request: pb.UpdateChannelRequest, context: Context) -> pb.UpdateChannelResponse:
        channel, shown = await self._notifications.update_channel(
            current_principal(),
            request.channel.id,
            draft_from_proto(request.channel),
            list(request.update_mask.paths),
        )
        return pb.UpdateChannelResponse(channel=channel_to_proto(channel, show_signing_secret=shown))

    async def DeleteChannel(self, request: pb.DeleteChannelRequest, context: Context) -> pb.DeleteChannelResponse:
        await self._notifications.delete_channel(current_principal(), request.id)
        return pb.DeleteChannelResponse()

    async def TestChannel(self, request: pb.TestChannelRequest, context: Context) -> pb.TestChannelResponse:
        delivery = await self._notifications.test_channel(current_principal(), request.id)
        return pb.TestChannelResponse(delivery=delivery_to_proto(delivery))

    async def SendNotification(
        self, request: pb.SendNotificationRequest, context: Context
    ) -> pb.SendNotificationResponse:
        deliveries, duplicate = await self._notifications.send(
            request.idempotency_key,
            request.owner_id,
            list(request.channel_ids),
            request.email_address.strip(),
            notification_from_proto(request.notification, request.HasField("notification")),
        )
        return pb.SendNotificationResponse(deliveries=[delivery_to_proto(d) for d in deliveries], duplicate=duplicate)

    async def ListDeliveries(self, request: pb.ListDeliveriesRequest, context: Context) -> pb.ListDeliveriesResponse:
        page, token = await self._notifications.list_deliveries(
            current_principal(),
            request.page_size,
            request.page_token,
            request.channel_id,
            state_from_proto(request.state),
        )
        return pb.ListDeliveriesResponse(deliveries=[delivery_to_proto(d) for d in page], next_page_token=token)
