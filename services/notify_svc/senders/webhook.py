"""Generic JSON webhooks, signed so the receiver can trust them.

Each POST carries ``X-Monitors-Timestamp`` (Unix seconds, when this attempt was made) and
``X-Monitors-Signature: sha256=<hex>``, the HMAC-SHA256 under the channel's signing secret of the timestamp, a
dot and the raw body (``<timestamp>.<body>``). A receiver recomputes it over the bytes it received, compares in
constant time, and refuses a timestamp more than 5 minutes from its clock (replay); every retry is signed anew,
so a fresh attempt always passes. ``X-Monitors-Delivery`` carries the delivery id, the same on every retry, so a
receiver can drop duplicates.

http:// URLs are sent to only under ``MONITORS_EGRESS=private-allowed`` and only when every address of the host
is on the loopback or a LAN (a receiver on this machine or at home); the request then goes to the address that
was checked, so a later lookup cannot move the plain text onto the internet.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from service_runtime.egress import BlockedTarget, EgressPolicy, IPAddress, is_allowed, resolve
from service_runtime.http_client import HttpClient
from services.notify_svc.domain import ChannelConfig, WebhookConfig, notification_fields
from services.notify_svc.senders.base import SendResult, failure, iso, post_json
from services.notify_svc.templates import Message

SIGNATURE_HEADER = "x-monitors-signature"
TIMESTAMP_HEADER = "x-monitors-timestamp"
DELIVERY_HEADER = "x-monitors-delivery"
RESOLVE_TIMEOUT_S = 5.0


class PlainHttpRefused(BlockedTarget):
    """An http:// webhook URL that may not be sent to: the policy is public, or the host is on the internet."""


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``timestamp.body`` under ``secret``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def webhook_payload(message: Message, delivery_id: str) -> dict[str, Any]:
    fields = notification_fields(message.notification)
    fields["event_time"] = iso(message.notification.event_time)
    return {"delivery_id": delivery_id, "title": message.title, "text": message.body, **fields}


def is_plain_http(url: str) -> bool:
    return urlsplit(url).scheme == "http"


async def lan_addresses(url: str, policy: EgressPolicy, timeout_s: float = RESOLVE_TIMEOUT_S) -> list[IPAddress]:
    """The addresses of an http:// URL's host, every one on the loopback or a LAN. PlainHttpRefused when the
    policy is public or an address is public; BlockedTarget or ResolutionFailed as :func:`resolve` raises them;
    TimeoutError when the name does not resolve within ``timeout_s``."""
    if policy is not EgressPolicy.PRIVATE_ALLOWED:
        raise PlainHttpRefused(
            "http:// goes only to a loopback or LAN address under MONITORS_EGRESS=private-allowed; "
            f"MONITORS_EGRESS={policy.value} needs https://"
        )
    parts = urlsplit(url)
    host = parts.hostname or ""
    async with asyncio.timeout(timeout_s):
        addresses = await resolve(host, parts.port or 80, policy)
    if any(is_allowed(address, EgressPolicy.PUBLIC) for address in addresses):
        raise PlainHttpRefused(
            f"{host} is on the internet: http:// goes only to a loopback or LAN address, anything else needs https://"
        )
    return addresses


def _pinned(url: str, address: IPAddress) -> str:
    parts = urlsplit(url)
    host = f"[{address}]" if address.version == 6 else str(address)
    return urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))


class WebhookSender:
    """Signs and POSTs the notification as JSON; ``policy`` decides whether plain http may go to a LAN host."""

    def __init__(self, client: HttpClient, policy: EgressPolicy = EgressPolicy.PUBLIC) -> None:
        self._client = client
        self._policy = policy

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
        if not is_plain_http(config.url):
            result, _ = await post_json(self._client, config.url, None, timeout_s, headers=headers, body=body)
            return result
        deadline = time.monotonic() + timeout_s
        try:
            addresses = await lan_addresses(config.url, self._policy, timeout_s)
        except Exception as error:  # noqa: BLE001 - a refusal or a failed lookup is an outcome
            return failure(error, timeout_s)
        headers["host"] = urlsplit(config.url).netloc
        for address in addresses:
            left = max(0.1, deadline - time.monotonic())
            result, _ = await post_json(
                self._client, _pinned(config.url, address), None, left, headers=headers, body=body
            )
            # As a name's addresses are tried in turn for https: on to the next while the connection is refused.
            if not result.detail.startswith("ConnectFailed"):
                break
        return result
