"""The notification service's own settings, read beside the shared ones (service_runtime/settings.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from service_runtime.settings import read_float


@dataclass(frozen=True)
class NotifySettings:
    # Email: SendGrid when its key is set, else SMTP when its URL is set, else a local outbox file.
    sendgrid_api_key: str = ""
    sendgrid_host: str = "https://api.sendgrid.com"
    smtp_url: str = ""
    email_from: str = "monitors@localhost"
    pagerduty_events_url: str = "https://events.pagerduty.com/v2/enqueue"
    timeout_s: float = 10.0  # one send to a channel (MONITORS_NOTIFY_TIMEOUT_S)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NotifySettings:
        """The settings in ``env``; SettingsError naming a variable whose value cannot be used."""
        return cls(
            sendgrid_api_key=env.get("MONITORS_SENDGRID_API_KEY", ""),
            sendgrid_host=env.get("MONITORS_SENDGRID_HOST") or cls.sendgrid_host,
            smtp_url=env.get("MONITORS_SMTP_URL", ""),
            email_from=env.get("MONITORS_EMAIL_FROM") or cls.email_from,
            pagerduty_events_url=env.get("MONITORS_PAGERDUTY_EVENTS_URL") or cls.pagerduty_events_url,
            timeout_s=read_float(env, "MONITORS_NOTIFY_TIMEOUT_S", cls.timeout_s, minimum=0.1),
        )
