"""Microsoft Teams through a Workflows webhook ("Post to a channel when a webhook request is received"): a
message with one Adaptive Card attachment. The workflow answers 202 Accepted."""

from __future__ import annotations

from typing import Any

from service_runtime.http_client import HttpClient
from services.notify_svc.domain import ChannelConfig, NotificationKind, Severity, TeamsConfig
from services.notify_svc.senders.base import JsonPostSender
from services.notify_svc.templates import Message

_STYLES = {Severity.CRITICAL: "attention", Severity.WARNING: "warning", Severity.INFO: "accent"}


def teams_payload(message: Message) -> dict[str, Any]:
    n = message.notification
    style = "good" if n.kind is NotificationKind.ALERT_RESOLVED else _STYLES[n.severity]
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": message.title,
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
            "color": style,
        },
        {"type": "TextBlock", "text": message.body, "wrap": True},
    ]
    card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard", "version": "1.4"}
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {**card, "body": body},
            }
        ],
    }


def _workflow_url(config: ChannelConfig) -> str:
    assert isinstance(config, TeamsConfig)
    return config.workflow_url


def teams_sender(client: HttpClient) -> JsonPostSender:
    return JsonPostSender(client, _workflow_url, teams_payload)
