"""Notification channels and deliveries: their types, validation rules, and how secrets are masked.

Plain Python: the servicer translates protobuf to these dataclasses. Field paths in errors are paths in the
request (``channel.slack.webhook_url``), so a caller knows exactly what to fix.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from service_runtime.errors import FieldViolation, InvalidArgument
from service_runtime.secret_masking import mask_secrets

MAX_DISPLAY_NAME = 200
MAX_ADDRESSES = 20
MAX_HEADERS = 20
MAX_URL = 2048
MAX_TEMPLATE = 8 * 1024
MAX_IDEMPOTENCY_KEY = 200
MAX_CHANNELS_PER_OWNER = 50  # MONITORS_MAX_CHANNELS_PER_USER's default
MASK = "****"
_EMAIL = re.compile(r"^[^@\s<>\"',;]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
# Printable ASCII and tab: what HTTP/1.1 can carry. Anything else fails every send, and the HTTP library's
# error then quotes the value in a form redact() does not recognise.
_HEADER_VALUE = re.compile(r"^[\x20-\x7e\t]{0,4096}$")
_ROUTING_KEY = re.compile(r"^[A-Za-z0-9]{32}$")
# Headers our webhook sender sets itself; a channel may not override them.
RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "x-monitors-signature", "x-monitors-timestamp"})


class ChannelKind(StrEnum):
    EMAIL = "email"
    SLACK = "slack"
    DISCORD = "discord"
    TEAMS = "teams"
    WEBHOOK = "webhook"
    PAGERDUTY = "pagerduty"
    APPRISE = "apprise"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class NotificationKind(StrEnum):
    ALERT_FIRING = "alert_firing"
    ALERT_ACKNOWLEDGED = "alert_acknowledged"
    ALERT_RESOLVED = "alert_resolved"
    ALERT_REPEATED = "alert_repeated"
    LOGIN_CODE = "login_code"
    TEST = "test"
    # Sent by this service itself to tell an owner that one of their channels was disabled.
    CHANNEL_DISABLED = "channel_disabled"


class DeliveryState(StrEnum):
    PENDING = "pending"
    RETRYING = "retrying"
    DELIVERED = "delivered"
    FAILED = "failed"
    SUPPRESSED = "suppressed"


class Outcome(StrEnum):
    SUCCESS = "success"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class EmailConfig:
    to_addresses: tuple[str, ...]


@dataclass(frozen=True)
class SlackConfig:
    webhook_url: str


@dataclass(frozen=True)
class DiscordConfig:
    webhook_url: str


@dataclass(frozen=True)
class TeamsConfig:
    workflow_url: str


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    signing_secret: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PagerDutyConfig:
    routing_key: str


@dataclass(frozen=True)
class AppriseConfig:
    url: str


ChannelConfig = (
    EmailConfig | SlackConfig | DiscordConfig | TeamsConfig | WebhookConfig | PagerDutyConfig | AppriseConfig
)

CONFIG_TYPES: Mapping[ChannelKind, type[ChannelConfig]] = {
    ChannelKind.EMAIL: EmailConfig,
    ChannelKind.SLACK: SlackConfig,
    ChannelKind.DISCORD: DiscordConfig,
    ChannelKind.TEAMS: TeamsConfig,
    ChannelKind.WEBHOOK: WebhookConfig,
    ChannelKind.PAGERDUTY: PagerDutyConfig,
    ChannelKind.APPRISE: AppriseConfig,
}
_KINDS = {config_type: kind for kind, config_type in CONFIG_TYPES.items()}
# Secret fields of each kind (the webhook's header values are secret too: ``headers.<name>``).
SECRET_FIELDS: Mapping[ChannelKind, tuple[str, ...]] = {
    ChannelKind.EMAIL: (),
    ChannelKind.SLACK: ("webhook_url",),
    ChannelKind.DISCORD: ("webhook_url",),
    ChannelKind.TEAMS: ("workflow_url",),
    ChannelKind.WEBHOOK: ("signing_secret",),
    ChannelKind.PAGERDUTY: ("routing_key",),
    ChannelKind.APPRISE: ("url",),
}
# URL secrets whose host is a provider's public name and may be shown; an Apprise URL's "host" is often
# a token (tgram://bottoken/chat), so it is masked whole.
_SHOW_HOST = frozenset({"webhook_url", "workflow_url"})


def kind_of(config: ChannelConfig) -> ChannelKind:
    return _KINDS[type(config)]


@dataclass(frozen=True)
class MessageTemplate:
    title: str = ""
    body: str = ""


@dataclass(frozen=True)
class Channel:
    id: str
    owner_id: str
    display_name: str
    config: ChannelConfig
    enabled: bool
    disabled_reason: str
    is_default: bool
    template: MessageTemplate
    create_time: datetime
    update_time: datetime
    # Consecutive 401/403/404/410 answers; the channel is disabled when this reaches AUTH_FAILURES_TO_DISABLE.
    auth_failures: int = 0

    @property
    def kind(self) -> ChannelKind:
        return kind_of(self.config)


@dataclass(frozen=True)
class ChannelDraft:
    """What a caller sends to create or update a channel (secrets possibly masked on update)."""

    display_name: str = ""
    config: ChannelConfig | None = None
    enabled: bool | None = None
    is_default: bool = False
    template: MessageTemplate = MessageTemplate()


@dataclass(frozen=True)
class Notification:
    kind: NotificationKind
    severity: Severity = Severity.WARNING
    alert_id: str = ""
    rule_id: str = ""
    monitor_id: str = ""
    monitor_name: str = ""
    summary: str = ""
    value: float = 0.0
    threshold: float = 0.0
    event_time: datetime | None = None
    duration: timedelta | None = None
    login_code: str = ""


@dataclass(frozen=True)
class Attempt:
    attempt_time: datetime
    outcome: Outcome
    response_code: int
    error: str
    duration: timedelta


@dataclass(frozen=True)
class Delivery:
    id: str
    owner_id: str
    channel_id: str  # "" for a bare email address
    email_address: str  # "" for a channel
    idempotency_key: str
    notification: Notification
    state: DeliveryState
    create_time: datetime
    next_attempt_time: datetime | None
    attempts: tuple[Attempt, ...] = ()
    attempt_count: int = 0

    @property
    def kind(self) -> NotificationKind:
        return self.notification.kind


def notification_fields(n: Notification) -> dict[str, Any]:
    """The facts of a notification, JSON-ready (never the login code): what webhooks, templates and the
    store all start from."""
    return {
        "kind": n.kind.value,
        "severity": n.severity.value,
        "alert_id": n.alert_id,
        "rule_id": n.rule_id,
        "monitor_id": n.monitor_id,
        "monitor_name": n.monitor_name,
        "summary": n.summary,
        "value": n.value,
        "threshold": n.threshold,
        "event_time": n.event_time.isoformat() if n.event_time else None,
        "duration_s": n.duration.total_seconds() if n.duration is not None else None,
    }


# --- secrets -------------------------------------------------------------------------------------------


def config_secrets(config: ChannelConfig) -> dict[str, str]:
    """The secret fields of ``config`` by name (``headers.<name>`` for webhook header values)."""
    data = asdict(config)
    found = {name: data[name] for name in SECRET_FIELDS[kind_of(config)]}
    if isinstance(config, WebhookConfig):
        found.update({f"headers.{name}": value for name, value in config.headers.items()})
    return found


def config_public(config: ChannelConfig) -> dict[str, Any]:
    """The non-secret fields of ``config`` (JSON-ready)."""
    data = asdict(config)
    for name in SECRET_FIELDS[kind_of(config)]:
        data.pop(name)
    if isinstance(config, WebhookConfig):
        data["headers"] = sorted(config.headers)  # names only
    if isinstance(config, EmailConfig):
        data["to_addresses"] = list(config.to_addresses)
    return data


def config_from_parts(kind: ChannelKind, public: Mapping[str, Any], secret_values: Mapping[str, str]) -> ChannelConfig:
    """Rebuild a config from :func:`config_public` and :func:`config_secrets` output."""
    data = dict(public)
    if kind is ChannelKind.WEBHOOK:
        data["headers"] = {name: secret_values[f"headers.{name}"] for name in data.get("headers", [])}
    if kind is ChannelKind.EMAIL:
        data["to_addresses"] = tuple(data["to_addresses"])
    data.update({name: secret_values[name] for name in SECRET_FIELDS[kind]})
    return CONFIG_TYPES[kind](**data)


def mask_secret(name: str, value: str) -> str:
    """How a secret reads back: provider URLs keep scheme and host (``https://hooks.slack.com/****``)."""
    if not value:
        return ""
    if name in _SHOW_HOST:
        parts = urlsplit(value)
        if parts.scheme and parts.hostname:
            return f"{parts.scheme}://{parts.hostname}/{MASK}"
    return MASK


def masked_config(config: ChannelConfig) -> ChannelConfig:
    """``config`` as a caller may read it: every secret masked, and a webhook URL's query (where receivers
    take a token: ``?token=...``) too."""
    values = {name: mask_secret(name, value) for name, value in config_secrets(config).items()}
    masked = config_from_parts(kind_of(config), config_public(config), values)
    if isinstance(masked, WebhookConfig):
        masked = replace(masked, url=mask_query(masked.url))
    return masked


def mask_query(url: str) -> str:
    """``url`` with its query (and fragment) replaced by ****, or as it is when it has none."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.query and not parts.fragment:
        return url
    return parts._replace(query=MASK, fragment="").geturl()


def keep_masked_secrets(old: ChannelConfig, new: ChannelConfig) -> ChannelConfig:
    """``new`` with every secret that was sent back exactly as masked replaced by the stored value."""
    if kind_of(old) is not kind_of(new):
        return new
    old_values = config_secrets(old)
    values = {
        name: old_values[name] if name in old_values and value == mask_secret(name, old_values[name]) else value
        for name, value in config_secrets(new).items()
    }
    kept = config_from_parts(kind_of(new), config_public(new), values)
    # A webhook URL sent back as it was read (its query masked) keeps its stored query.
    if isinstance(kept, WebhookConfig) and isinstance(old, WebhookConfig) and kept.url == mask_query(old.url):
        kept = replace(kept, url=old.url)
    return kept


def redact(text: str, secret_values: Mapping[str, str] | tuple[str, ...]) -> str:
    """``text`` with every secret value (and every URL secret's path) replaced by ****, for errors and logs."""
    values = secret_values.values() if isinstance(secret_values, Mapping) else secret_values
    text = mask_secrets(text, values)  # in any spelling: case, percent-encoding, JSON escapes, base64, ...
    for value in sorted((v for v in values if v), key=len, reverse=True):
        try:
            parts = urlsplit(value)
        except ValueError:  # a header value such as "http://[" is no URL; it is masked above already
            continue
        if parts.scheme and parts.hostname and parts.path not in ("", "/"):
            text = text.replace(parts.path, "/" + MASK)
    return text


def mask_address(address: str) -> str:
    """``a****@example.com``: enough to recognise, not to harvest."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}{MASK}@{domain}" if domain else MASK


# --- validation ----------------------------------------------------------------------------------------


def is_retired_teams_connector(url: str) -> bool:
    """Office 365 connector URLs (``*.webhook.office.com``, ``outlook.office.com/webhook``), retired by Microsoft."""
    try:
        parts = urlsplit(url)
    except ValueError:  # no URL at all: _https_url says so
        return False
    host = (parts.hostname or "").lower()
    if host == "webhook.office.com" or host.endswith(".webhook.office.com"):
        return True
    return host in ("outlook.office.com", "outlook.office365.com") and parts.path.lower().startswith("/webhook")


# Where http:// may go, said where https:// is asked for.
_PLAIN_HTTP_HINT = {
    "channel.webhook.url": " (http:// goes only to a loopback or LAN address, under MONITORS_EGRESS=private-allowed)"
}


def _https_url(path: str, url: str, problems: list[FieldViolation], plain_http: bool = False) -> None:
    if not url:
        problems.append(FieldViolation(path, "is required"))
        return
    if len(url) > MAX_URL:
        problems.append(FieldViolation(path, f"must be at most {MAX_URL} characters"))
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        problems.append(FieldViolation(path, "is not a valid URL"))
        return
    if plain_http and parts.scheme == "http":
        pass  # the caller checks that the host is on the loopback or LAN (senders/webhook.py)
    elif parts.scheme != "https":
        problems.append(FieldViolation(path, "must be an https:// URL" + _PLAIN_HTTP_HINT.get(path, "")))
    elif not parts.hostname:
        problems.append(FieldViolation(path, "must name a host"))
    elif parts.username or parts.password:
        problems.append(FieldViolation(path, "must not carry a user name or password; use headers instead"))


def valid_address(address: str) -> bool:
    return len(address) <= 254 and _EMAIL.match(address) is not None


@dataclass(frozen=True)
class ContentChecks:
    """The checks of a channel that need a library the domain does not load (Apprise's URL rules, the template
    engine): each returns what is wrong with a value, or None. The use case hands in the real ones."""

    apprise_url: Callable[[str], str | None]
    template: Callable[[str], str | None]


def _validate_config(
    config: ChannelConfig, problems: list[FieldViolation], checks: ContentChecks, plain_http_webhook: bool
) -> None:
    base = f"channel.{kind_of(config).value}"
    match config:
        case EmailConfig(to_addresses=addresses):
            if not addresses:
                problems.append(FieldViolation(f"{base}.to_addresses", "needs at least one address"))
            if len(addresses) > MAX_ADDRESSES:
                problems.append(FieldViolation(f"{base}.to_addresses", f"must have at most {MAX_ADDRESSES} addresses"))
            for index, address in enumerate(addresses):
                if not valid_address(address):
                    problems.append(FieldViolation(f"{base}.to_addresses[{index}]", "is not an email address"))
        case SlackConfig(webhook_url=url) | DiscordConfig(webhook_url=url):
            _https_url(f"{base}.webhook_url", url, problems)
        case TeamsConfig(workflow_url=url):
            if is_retired_teams_connector(url):
                problems.append(
                    FieldViolation(
                        f"{base}.workflow_url",
                        "is an Office 365 connector URL, which Microsoft retired; in Teams create a workflow from "
                        "the template 'Post to a channel when a webhook request is received' and use its URL",
                    )
                )
            else:
                _https_url(f"{base}.workflow_url", url, problems)
        case WebhookConfig(url=url, signing_secret=secret, headers=headers):
            _https_url(f"{base}.url", url, problems, plain_http_webhook)
            if secret and not 16 <= len(secret) <= 256:
                problems.append(FieldViolation(f"{base}.signing_secret", "must be 16 to 256 characters"))
            if len(headers) > MAX_HEADERS:
                problems.append(FieldViolation(f"{base}.headers", f"must have at most {MAX_HEADERS} headers"))
            for name, value in headers.items():
                if not _HEADER_NAME.match(name) or name.lower() in RESERVED_HEADERS:
                    problems.append(FieldViolation(f"{base}.headers[{name!r}]", "is not a header name you may set"))
                elif not _HEADER_VALUE.match(value):
                    problems.append(
                        FieldViolation(
                            f"{base}.headers[{name!r}]", "must be printable ASCII on one line, at most 4096 characters"
                        )
                    )
        case PagerDutyConfig(routing_key=key):
            if not _ROUTING_KEY.match(key):
                problems.append(
                    FieldViolation(f"{base}.routing_key", "must be the integration's 32-character routing key")
                )
        case AppriseConfig(url=url):
            if not url:
                problems.append(FieldViolation(f"{base}.url", "is required"))
            elif len(url) > MAX_URL or "://" not in url:
                problems.append(FieldViolation(f"{base}.url", "is not an Apprise URL (such as tgram://token/chat)"))
            elif problem := checks.apprise_url(url):
                problems.append(FieldViolation(f"{base}.url", problem))


def _validate_template(template: MessageTemplate, problems: list[FieldViolation], checks: ContentChecks) -> None:
    for name, text in (("title", template.title), ("body", template.body)):
        if len(text) > MAX_TEMPLATE:
            problems.append(FieldViolation(f"channel.template.{name}", f"must be at most {MAX_TEMPLATE} characters"))
        elif text and (error := checks.template(text)):
            problems.append(FieldViolation(f"channel.template.{name}", error))


def validate_channel(draft: ChannelDraft, checks: ContentChecks, plain_http_webhook: bool = False) -> ChannelDraft:
    """The draft, normalised (a generated signing secret, a display name), or InvalidArgument naming each
    bad field; ``checks`` judge Apprise URLs and templates. ``plain_http_webhook``: a webhook URL may be
    http:// (MONITORS_EGRESS=private-allowed; the caller then checks its host is on the loopback or LAN)."""
    problems: list[FieldViolation] = []
    config = draft.config
    if config is None:
        problems.append(
            FieldViolation("channel.config", "set one of email, slack, discord, teams, webhook, pagerduty, apprise")
        )
    else:
        _validate_config(config, problems, checks, plain_http_webhook)
    if len(draft.display_name) > MAX_DISPLAY_NAME:
        problems.append(FieldViolation("channel.display_name", f"must be at most {MAX_DISPLAY_NAME} characters"))
    _validate_template(draft.template, problems, checks)
    if problems:
        raise InvalidArgument.of(problems)
    assert config is not None
    # Whenever empty, not only on create: an update turning another kind into a webhook has no secret to keep.
    if isinstance(config, WebhookConfig) and not config.signing_secret:
        config = replace(config, signing_secret=secrets.token_urlsafe(32))
    display_name = draft.display_name.strip() or default_display_name(config)
    return replace(draft, config=config, display_name=display_name)


def default_display_name(config: ChannelConfig) -> str:
    if isinstance(config, EmailConfig):
        return ", ".join(config.to_addresses)[:MAX_DISPLAY_NAME]
    return {
        ChannelKind.SLACK: "Slack",
        ChannelKind.DISCORD: "Discord",
        ChannelKind.TEAMS: "Microsoft Teams",
        ChannelKind.WEBHOOK: "Webhook",
        ChannelKind.PAGERDUTY: "PagerDuty",
        ChannelKind.APPRISE: "Apprise",
    }[kind_of(config)]


def validate_notification(notification: Notification | None, path: str = "notification") -> Notification:
    if notification is None:
        raise InvalidArgument(path, "is required")
    if notification.kind is NotificationKind.CHANNEL_DISABLED:
        raise InvalidArgument(f"{path}.kind", "must be set")
    if len(notification.summary) > 2000:
        raise InvalidArgument(f"{path}.summary", "must be at most 2000 characters")
    return notification
