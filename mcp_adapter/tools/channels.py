"""Channel tools: create_channel, list_channels, test_channel, delete_channel, list_deliveries."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from mcp_adapter.errors import Subject
from mcp_adapter.toolbox import ToolContext, more, reply, state_of, tool
from mcp_adapter.views import enum_name, enum_value, iso
from monitors.v1 import notification_service_pb2

ChannelKind = Literal["email", "slack", "discord", "teams", "webhook", "pagerduty", "apprise"]
ChannelId = Annotated[str, Field(min_length=1, max_length=100, description="A channel id from list_channels.")]
DeliveryStateName = Literal["pending", "retrying", "delivered", "failed", "suppressed"]


def channel_subject(channel_id: str) -> Subject:
    return Subject("channel", channel_id, "list_channels")


class ChannelView(BaseModel):
    id: str
    name: str
    kind: str
    destination: str | None = None
    enabled: bool = True
    disabled_reason: str | None = None
    is_default: bool = False
    created: str | None = None


def channel_view(channel: notification_service_pb2.Channel) -> ChannelView:
    kind = channel.WhichOneof("config") or "unknown"
    # Secret configuration comes back masked from the service; only email addresses are shown.
    destination = ", ".join(channel.email.to_addresses) if kind == "email" else None
    return ChannelView(
        id=channel.id,
        name=channel.display_name,
        kind=kind,
        destination=destination,
        enabled=channel.enabled if channel.HasField("enabled") else True,
        disabled_reason=channel.disabled_reason or None,
        is_default=channel.is_default,
        created=iso(channel.create_time),
    )


@tool()
async def create_channel(
    ctx: ToolContext,
    kind: Annotated[ChannelKind, Field(description="Where notifications go.")],
    destination: Annotated[
        str,
        Field(
            min_length=1,
            max_length=4000,
            description="email: addresses, comma-separated; slack, discord: the webhook URL; teams: the Workflows "
            "URL; webhook: the https URL; pagerduty: the routing key; apprise: the Apprise URL.",
        ),
    ],
    name: Annotated[str | None, Field(max_length=200)] = None,
    is_default: Annotated[bool, Field(description="Receives alerts of rules that name no channel.")] = True,
    headers: Annotated[dict[str, str] | None, Field(description="webhook: extra headers (secret).")] = None,
) -> Annotated[CallToolResult, ChannelView]:
    """Create a notification channel (email, Slack, Discord, Teams, webhook, PagerDuty or Apprise). By default it
    is a default channel: alert rules without channel_ids notify it. Send a test with test_channel."""
    state = state_of(ctx)
    channel = notification_service_pb2.Channel(display_name=name or f"{kind} channel", is_default=is_default)
    if kind == "email":
        channel.email.to_addresses.extend(a.strip() for a in destination.split(",") if a.strip())
    elif kind == "slack":
        channel.slack.webhook_url = destination
    elif kind == "discord":
        channel.discord.webhook_url = destination
    elif kind == "teams":
        channel.teams.workflow_url = destination
    elif kind == "webhook":
        channel.webhook.url = destination
        channel.webhook.headers.update(headers or {})
    elif kind == "pagerduty":
        channel.pagerduty.routing_key = destination
    else:
        channel.apprise.url = destination
    response = await state.clients.call(
        state.clients.notifications.CreateChannel,
        notification_service_pb2.CreateChannelRequest(channel=channel),
        token=state.token(),
    )
    view = channel_view(response.channel)
    return reply(f"Created {kind} channel {view.id} ({view.name}).", view)


class ChannelList(BaseModel):
    channels: list[ChannelView]
    next_page_token: str | None = None


@tool(read_only=True)
async def list_channels(
    ctx: ToolContext, page_size: Annotated[int, Field(ge=1, le=1000)] = 100, page_token: str = ""
) -> Annotated[CallToolResult, ChannelList]:
    """List the person's notification channels (secrets masked): id, kind, whether default or disabled (and why)."""
    state = state_of(ctx)
    response = await state.clients.call(
        state.clients.notifications.ListChannels,
        notification_service_pb2.ListChannelsRequest(page_size=page_size, page_token=page_token),
        token=state.token(),
    )
    views = [channel_view(c) for c in response.channels]
    text = ", ".join(f"{v.id} {v.kind}" for v in views[:20]) + more(20, len(views))
    return reply(
        f"{len(views)} channel(s)" + (f": {text}." if text else "."),
        ChannelList(channels=views, next_page_token=response.next_page_token or None),
    )


class AttemptView(BaseModel):
    time: str | None = None
    outcome: str
    response_code: int | None = None
    error: str | None = None


class DeliveryView(BaseModel):
    id: str
    channel_id: str | None = None
    kind: str
    state: str
    created: str | None = None
    next_attempt: str | None = None
    attempts: list[AttemptView]


def delivery_view(delivery: notification_service_pb2.Delivery) -> DeliveryView:
    return DeliveryView(
        id=delivery.id,
        channel_id=delivery.channel_id or None,
        kind=enum_name(notification_service_pb2.NotificationKind, delivery.kind, "NOTIFICATION_KIND_"),
        state=enum_name(notification_service_pb2.DeliveryState, delivery.state, "DELIVERY_STATE_"),
        created=iso(delivery.create_time),
        next_attempt=iso(delivery.next_attempt_time),
        attempts=[
            AttemptView(
                time=iso(a.attempt_time),
                outcome=enum_name(notification_service_pb2.DeliveryOutcome, a.outcome, "DELIVERY_OUTCOME_"),
                response_code=a.response_code or None,
                error=a.error or None,
            )
            for a in delivery.attempts
        ],
    )


@tool(name="test_channel", open_world=True)
async def send_test_message(channel_id: ChannelId, ctx: ToolContext) -> Annotated[CallToolResult, DeliveryView]:
    """Send a test message to a channel now and return what the provider answered. A failure names the cause
    (a wrong webhook URL answers 404, a revoked token 401): fix the channel and test again."""
    state = state_of(ctx)
    response = await state.clients.call(
        state.clients.notifications.TestChannel,
        notification_service_pb2.TestChannelRequest(id=channel_id),
        token=state.token(),
        subject=channel_subject(channel_id),
        timeout_s=30,
    )
    view = delivery_view(response.delivery)
    last = view.attempts[-1] if view.attempts else None
    detail = f" ({last.outcome}{', ' + last.error if last and last.error else ''})" if last else ""
    return reply(f"Test to {channel_id}: {view.state}{detail}.", view)


class Deleted(BaseModel):
    deleted: str


@tool(destructive=True, idempotent=True)
async def delete_channel(channel_id: ChannelId, ctx: ToolContext) -> Annotated[CallToolResult, Deleted]:
    """Delete a notification channel; deliveries still pending to it are dropped. Confirm with the person first."""
    state = state_of(ctx)
    await state.clients.call(
        state.clients.notifications.DeleteChannel,
        notification_service_pb2.DeleteChannelRequest(id=channel_id),
        token=state.token(),
        subject=channel_subject(channel_id),
    )
    return reply(f"Deleted channel {channel_id}.", Deleted(deleted=channel_id))


class DeliveryList(BaseModel):
    deliveries: list[DeliveryView]
    next_page_token: str | None = None


@tool(read_only=True)
async def list_deliveries(
    ctx: ToolContext,
    channel_id: str = "",
    state: DeliveryStateName | None = None,
    limit: Annotated[int, Field(ge=1, le=1000)] = 20,
    page_token: str = "",
) -> Annotated[CallToolResult, DeliveryList]:
    """List recent notification deliveries, newest first, with every attempt: use it to answer "did the alert
    reach me?" or to see why a channel fails."""
    adapter = state_of(ctx)
    response = await adapter.clients.call(
        adapter.clients.notifications.ListDeliveries,
        notification_service_pb2.ListDeliveriesRequest(
            page_size=limit,
            page_token=page_token,
            channel_id=channel_id,
            state=enum_value(notification_service_pb2.DeliveryState, state or "unspecified", "DELIVERY_STATE_"),
        ),
        token=adapter.token(),
    )
    views = [delivery_view(d) for d in response.deliveries]
    text = "; ".join(f"{v.kind} {v.state}" for v in views[:5]) + more(5, len(views))
    return reply(
        f"{len(views)} deliver(ies)" + (f": {text}." if text else "."),
        DeliveryList(deliveries=views, next_page_token=response.next_page_token or None),
    )
