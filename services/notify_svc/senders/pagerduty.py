"""PagerDuty Events API v2 (``POST /v2/enqueue``): the alert id is the dedup_key, so firing triggers an
incident, acknowledged acknowledges it and resolved resolves it. PagerDuty answers 202 ``{"status":
"success", "dedup_key": ...}``; 400 for an invalid event; 429 when the routing key sends too fast."""

from __future__ import annotations

from typing import Any

from service_runtime.http_client import HttpClient
from services.notify_svc.domain import ChannelConfig, NotificationKind, PagerDutyConfig, Severity
from services.notify_svc.senders.base import SendResult, iso, post_json
from services.notify_svc.templates import Message

DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
_ACTIONS = {
    NotificationKind.ALERT_ACKNOWLEDGED: "acknowledge",
    NotificationKind.ALERT_RESOLVED: "resolve",
}
_SEVERITIES = {Severity.CRITICAL: "critical", Severity.WARNING: "warning", Severity.INFO: "info"}


def pagerduty_event(routing_key: str, message: Message, delivery_id: str) -> dict[str, Any]:
    n = message.notification
    action = _ACTIONS.get(n.kind, "trigger")
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": n.alert_id or delivery_id,
    }
    if action == "trigger":
        event["payload"] = {
            "summary": message.title[:1024],
            "source": n.monitor_name or n.monitor_id or "monitors",
            "severity": _SEVERITIES[n.severity],
            "timestamp": iso(n.event_time),
            "component": n.monitor_id or None,
            "custom_details": {"text": message.body, "value": n.value, "threshold": n.threshold, "rule_id": n.rule_id},
        }
    return event


class PagerDutySender:
    def __init__(self, client: HttpClient, events_url: str = DEFAULT_EVENTS_URL) -> None:
        self._client = client
        self._events_url = events_url

    async def send(self, config: ChannelConfig, message: Message, delivery_id: str, timeout_s: float) -> SendResult:
        assert isinstance(config, PagerDutyConfig)
        event = pagerduty_event(config.routing_key, message, delivery_id)
        result, _ = await post_json(self._client, self._events_url, event, timeout_s)
        return result
