"""Discord webhooks: one embed coloured by severity (green when resolved), mentions disabled so an alert's
text cannot ping @everyone. Discord answers 204 (200 with ``?wait=true``); when rate limited, 429 with a
JSON body whose ``retry_after`` (seconds, fractional) is honoured, as is the Retry-After header."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from service_runtime.http_client import HttpClient
from services.notify_svc.domain import ChannelConfig, DiscordConfig, NotificationKind, Severity
from services.notify_svc.senders.base import MAX_RETRY_AFTER_S, SendResult, iso, post_json
from services.notify_svc.templates import Message

COLOURS = {Severity.CRITICAL: 0xE74C3C, Severity.WARNING: 0xF1C40F, Severity.INFO: 0x3498DB}
RESOLVED_COLOUR = 0x2ECC71
ACKNOWLEDGED_COLOUR = 0x95A5A6


def colour(message: Message) -> int:
    kind = message.notification.kind
    if kind is NotificationKind.ALERT_RESOLVED:
        return RESOLVED_COLOUR
    if kind is NotificationKind.ALERT_ACKNOWLEDGED:
        return ACKNOWLEDGED_COLOUR
    return COLOURS[message.notification.severity]


def discord_payload(message: Message) -> dict[str, Any]:
    n = message.notification
    embed: dict[str, Any] = {
        "title": message.title[:256],
        "description": message.body[:4096],
        "color": colour(message),
        "timestamp": iso(n.event_time),
    }
    if n.alert_id:
        embed["footer"] = {"text": f"alert {n.alert_id}"}
    return {"username": "monitors", "embeds": [embed], "allowed_mentions": {"parse": []}}


def _retry_after(answer: bytes) -> float | None:
    try:
        value = json.loads(answer).get("retry_after")
    except (ValueError, AttributeError):
        return None
    return min(max(float(value), 0.0), MAX_RETRY_AFTER_S) if isinstance(value, int | float) else None


class DiscordSender:
    def __init__(self, client: HttpClient) -> None:
        self._client = client

    async def send(self, config: ChannelConfig, message: Message, delivery_id: str, timeout_s: float) -> SendResult:
        assert isinstance(config, DiscordConfig)
        result, answer = await post_json(self._client, config.webhook_url, discord_payload(message), timeout_s)
        if result.response_code == 429 and (seconds := _retry_after(answer)) is not None:
            result = replace(result, retry_after_s=max(seconds, result.retry_after_s or 0.0))
        return result
