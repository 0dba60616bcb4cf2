"""Generic JSON webhooks, signed so the receiver can trust them.

Headers: ``X-Monitors-Timestamp`` (Unix seconds) and ``X-Monitors-Signature: sha256=<hex>``, the HMAC-SHA256
under the channel's signing secret of ``<timestamp>.<body>``. A receiver recomputes it and refuses a
timestamp more than a few minutes old (replay). ``X-Monitors-Delivery`` carries the delivery id, the same on
every retry, so a receiver can drop duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from services.notify_svc.domain import ChannelConfig, WebhookConfig, notification_fields
from services.notify_svc.senders import SendResult, iso, post_json
from services.notify_svc.templates import Message

SIGNATURE_HEADER = "x-monitors-signature"
TIMESTAMP_HEADER = "x-monitors-timestamp"
DELIVERY_HEADER = "x-monitors-delivery"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``timestamp.body`` under ``secret``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def webhook_payload(message: Message, delivery_id: str) -> dict[str, Any]:
    fields = notification_fields(message.notification)
    fields["event_time"] = iso(message.notification.event_time)
    return {"delivery_id": delivery_id, "title": message.title, "text": message.body, **fields}


class WebhookSender:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def send(self, config: ChannelConfig, message: Message, delivery_id: str, timeout_s: float) -> SendResult:
        assert isinstance(config, WebhookConfig)
        body = json.dumps(webhook_payload(message, delivery_id)).encode()
        timestamp = str(int(time.time()))
        headers = {
            **config.headers,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(config.signing_secret, timestamp, body),
            DELIVERY_HEADER: delivery_id,
        }
        result, _ = await post_json(self._client, config.url, None, timeout_s, headers=headers, body=body)
        return result
