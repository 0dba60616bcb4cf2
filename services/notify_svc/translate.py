"""Protobuf <-> domain for notifications: the servicer's vocabulary, nothing else. Reads mask every secret."""

from __future__ import annotations

from monitors.v1 import common_pb2 as common
from monitors.v1 import notification_service_pb2 as pb
from service_runtime.errors import InvalidArgument
from service_runtime.timestamps import from_duration, from_timestamp, to_duration, to_timestamp
from services.notify_svc.domain import (
    AppriseConfig,
    Attempt,
    Channel,
    ChannelConfig,
    ChannelDraft,
    Delivery,
    DeliveryState,
    DiscordConfig,
    EmailConfig,
    MessageTemplate,
    Notification,
    NotificationKind,
    Outcome,
    PagerDutyConfig,
    Severity,
    SlackConfig,
    TeamsConfig,
    WebhookConfig,
    mask_address,
    masked_config,
)

_SEVERITIES = {
    common.SEVERITY_INFO: Severity.INFO,
    common.SEVERITY_WARNING: Severity.WARNING,
    common.SEVERITY_CRITICAL: Severity.CRITICAL,
}
_KINDS = {
    pb.NOTIFICATION_KIND_ALERT_FIRING: NotificationKind.ALERT_FIRING,
    pb.NOTIFICATION_KIND_ALERT_ACKNOWLEDGED: NotificationKind.ALERT_ACKNOWLEDGED,
    pb.NOTIFICATION_KIND_ALERT_RESOLVED: NotificationKind.ALERT_RESOLVED,
    pb.NOTIFICATION_KIND_ALERT_REPEATED: NotificationKind.ALERT_REPEATED,
    pb.NOTIFICATION_KIND_LOGIN_CODE: NotificationKind.LOGIN_CODE,
    pb.NOTIFICATION_KIND_TEST: NotificationKind.TEST,
}
# CHANNEL_DISABLED has no value in the contract; such deliveries read as UNSPECIFIED.
_KIND_ENUM = {kind: value for value, kind in _KINDS.items()}
_STATES: dict[int, DeliveryState] = {
    pb.DELIVERY_STATE_PENDING: DeliveryState.PENDING,
    pb.DELIVERY_STATE_RETRYING: DeliveryState.RETRYING,
    pb.DELIVERY_STATE_DELIVERED: DeliveryState.DELIVERED,
    pb.DELIVERY_STATE_FAILED: DeliveryState.FAILED,
    pb.DELIVERY_STATE_SUPPRESSED: DeliveryState.SUPPRESSED,
}
_STATE_ENUM = {state: pb.DeliveryState.ValueType(value) for value, state in _STATES.items()}
_OUTCOME_ENUM = {
    Outcome.SUCCESS: pb.DELIVERY_OUTCOME_SUCCESS,
    Outcome.RETRYABLE: pb.DELIVERY_OUTCOME_RETRYABLE_FAILURE,
    Outcome.PERMANENT: pb.DELIVERY_OUTCOME_PERMANENT_FAILURE,
}


def config_from_proto(channel: pb.Channel) -> ChannelConfig | None:
    match channel.WhichOneof("config"):
        case "email":
            return EmailConfig(tuple(a.strip() for a in channel.email.to_addresses))
        case "slack":
            return SlackConfig(channel.slack.webhook_url.strip())
        case "discord":
            return DiscordConfig(channel.discord.webhook_url.strip())
        case "teams":
            return TeamsConfig(channel.teams.workflow_url.strip())
        case "webhook":
            w = channel.webhook
            return WebhookConfig(w.url.strip(), w.signing_secret, dict(w.headers))
        case "pagerduty":
            return PagerDutyConfig(channel.pagerduty.routing_key.strip())
        case "apprise":
            return AppriseConfig(channel.apprise.url.strip())
    return None


def draft_from_proto(channel: pb.Channel) -> ChannelDraft:
    return ChannelDraft(
        display_name=channel.display_name,
        config=config_from_proto(channel),
        enabled=channel.enabled if channel.HasField("enabled") else None,
        is_default=channel.is_default,
        template=MessageTemplate(channel.template.title, channel.template.body),
    )


def _config_to_proto(config: ChannelConfig, out: pb.Channel) -> None:
    match config:
        case EmailConfig():
            out.email.to_addresses.extend(config.to_addresses)
        case SlackConfig():
            out.slack.webhook_url = config.webhook_url
        case DiscordConfig():
            out.discord.webhook_url = config.webhook_url
        case TeamsConfig():
            out.teams.workflow_url = config.workflow_url
        case WebhookConfig():
            out.webhook.url = config.url
            out.webhook.signing_secret = config.signing_secret
            out.webhook.headers.update(config.headers)
        case PagerDutyConfig():
            out.pagerduty.routing_key = config.routing_key
        case AppriseConfig():
            out.apprise.url = config.url


def channel_to_proto(channel: Channel, show_signing_secret: bool = False) -> pb.Channel:
    """The channel as its owner reads it: every secret masked, but for a webhook's signing secret in the one
    response that generated it (``show_signing_secret``)."""
    out = pb.Channel(
        id=channel.id,
        display_name=channel.display_name,
        enabled=channel.enabled,
        disabled_reason=channel.disabled_reason,
        is_default=channel.is_default,
        template=pb.MessageTemplate(title=channel.template.title, body=channel.template.body),
        create_time=to_timestamp(channel.create_time),
        update_time=to_timestamp(channel.update_time),
    )
    _config_to_proto(masked_config(channel.config), out)
    if show_signing_secret and isinstance(channel.config, WebhookConfig):
        out.webhook.signing_secret = channel.config.signing_secret
    return out


def notification_from_proto(n: pb.Notification, present: bool) -> Notification | None:
    if not present:
        return None
    kind = _KINDS.get(n.kind)
    if kind is None:
        raise InvalidArgument("notification.kind", "must be set to a known kind")
    severity = _SEVERITIES.get(n.severity)
    if severity is None and n.severity != common.SEVERITY_UNSPECIFIED:
        raise InvalidArgument("notification.severity", "is not a known severity")
    return Notification(
        kind=kind,
        severity=severity or Severity.WARNING,
        alert_id=n.alert_id,
        rule_id=n.rule_id,
        monitor_id=n.monitor_id,
        monitor_name=n.monitor_name,
        summary=n.summary,
        value=n.value,
        threshold=n.threshold,
        event_time=from_timestamp(n.event_time, n.HasField("event_time"), "notification.event_time"),
        duration=from_duration(n.duration, n.HasField("duration"), "notification.duration"),
        login_code=n.login_code,
    )


def state_from_proto(state: int) -> DeliveryState | None:
    """The state filter of ListDeliveries: None when unset."""
    if state == pb.DELIVERY_STATE_UNSPECIFIED:
        return None
    found = _STATES.get(state)
    if found is None:
        raise InvalidArgument("state", "is not a known delivery state")
    return found


def _attempt_to_proto(attempt: Attempt) -> pb.DeliveryAttempt:
    return pb.DeliveryAttempt(
        attempt_time=to_timestamp(attempt.attempt_time),
        outcome=_OUTCOME_ENUM[attempt.outcome],
        response_code=attempt.response_code,
        error=attempt.error,
        duration=to_duration(attempt.duration),
    )


def delivery_to_proto(delivery: Delivery) -> pb.Delivery:
    return pb.Delivery(
        id=delivery.id,
        channel_id=delivery.channel_id,
        email_address=mask_address(delivery.email_address) if delivery.email_address else "",
        idempotency_key=delivery.idempotency_key,
        kind=_KIND_ENUM.get(delivery.kind, pb.NOTIFICATION_KIND_UNSPECIFIED),
        state=_STATE_ENUM[delivery.state],
        attempts=[_attempt_to_proto(a) for a in delivery.attempts],
        create_time=to_timestamp(delivery.create_time),
        next_attempt_time=to_timestamp(delivery.next_attempt_time),
    )
