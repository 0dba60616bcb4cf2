"""Slack incoming webhooks: a Block Kit message (header, body, alert id), with ``text`` as the fallback
Slack shows in notifications. Slack answers 200 ``ok``; errors such as 400 ``invalid_payload``, 403
``action_prohibited``, 404 ``no_service``, 410 ``channel_is_archived``; 429 with Retry-After."""

from __future__ import annotations

from typing import Any

from service_runtime.http_client import HttpClient
from services.notify_svc.domain import ChannelConfig, SlackConfig
from services.notify_svc.senders.base import JsonPostSender
from services.notify_svc.templates import Message


def _escape(text: str) -> str:
    # Slack's mrkdwn treats &, < and > as control characters (links, mentions).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(message: Message) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": message.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _escape(message.body)[:3000] or " "}},
    ]
    if message.notification.alert_id:
        context = f"alert `{_escape(message.notification.alert_id)}`"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": _escape(message.title), "blocks": blocks}


def _webhook_url(config: ChannelConfig) -> str:
    assert isinstance(config, SlackConfig)
    return config.webhook_url


def slack_sender(client: HttpClient) -> JsonPostSender:
    return JsonPostSender(client, _webhook_url, slack_payload)
