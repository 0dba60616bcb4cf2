"""Any Apprise URL (Telegram, Pushover, ntfy, Matrix and 100+ more) through the ``apprise`` library.

Apprise opens its own connections (with ``requests``), so the egress policy is applied before handing it the
URL: when the URL's host resolves, every address must be allowed, else the attempt is refused. A host that
does not resolve is a token in the URL's host position (``tgram://bottoken/chat``) and the plugin talks to
its provider's fixed API. Apprise's own log lines are captured and masked, never passed to our logs as is.
"""

from __future__ import annotations

import asyncio
import logging
import warnings

import apprise

from service_runtime.egress import BlockedTarget, EgressPolicy, ResolutionFailed, resolve
from services.notify_svc.domain import AppriseConfig, ChannelConfig, NotificationKind, Outcome, Severity, redact
from services.notify_svc.senders import SendResult
from services.notify_svc.templates import Message

# Apprise logs the services it talks to; its records could carry tokens, so they stop here.
logging.getLogger("apprise").propagate = False
_TYPES = {Severity.CRITICAL: apprise.NotifyType.FAILURE, Severity.WARNING: apprise.NotifyType.WARNING}


def _notify_type(message: Message) -> apprise.NotifyType:
    if message.notification.kind is NotificationKind.ALERT_RESOLVED:
        return apprise.NotifyType.SUCCESS
    return _TYPES.get(message.notification.severity, apprise.NotifyType.INFO)


class AppriseSender:
    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy

    async def send(self, config: ChannelConfig, message: Message, delivery_id: str, timeout_s: float) -> SendResult:
        assert isinstance(config, AppriseConfig)
        with warnings.catch_warnings():
            # Apprise loads its plugins on first use; one of them imports imghdr, deprecated in Python 3.11.
            warnings.filterwarnings("ignore", "'imghdr' is deprecated", DeprecationWarning)
            plugin = apprise.Apprise.instantiate(config.url)
        if plugin is None:
            return SendResult(Outcome.PERMANENT, 0, "not an Apprise URL Apprise can use")
        host = getattr(plugin, "host", None)
        if isinstance(host, str) and host:
            try:
                async with asyncio.timeout(timeout_s):
                    await resolve(host, int(getattr(plugin, "port", None) or 443), self._policy)
            except BlockedTarget as error:
                return SendResult(Outcome.PERMANENT, 0, redact(f"refused target: {error}", (config.url, host)))
            except (ResolutionFailed, TimeoutError):
                pass  # a token in the host position; see the module docstring
        plugin.socket_connect_timeout = timeout_s
        plugin.socket_read_timeout = timeout_s
        entries: list[str] = []
        notifier = apprise.Apprise()
        notifier.add(plugin)

        def notify() -> bool:
            return bool(
                notifier.notify(
                    body=message.body,
                    title=message.title,
                    notify_type=_notify_type(message),
                    log_callback=lambda entry, _plugin: entries.append(f"{entry.level}: {entry.message}"),
                    log_level=logging.WARNING,
                )
            )

        try:
            async with asyncio.timeout(timeout_s + 1.0):
                sent = await asyncio.to_thread(notify)
        except TimeoutError:
            return SendResult(Outcome.RETRYABLE, 0, f"no answer within {timeout_s:g}s")
        if sent:
            return SendResult(Outcome.SUCCESS, 0, "sent")
        detail = redact("; ".join(entries)[-300:] or "Apprise reported a failure", (config.url, host or ""))
        return SendResult(Outcome.RETRYABLE, 0, detail)
