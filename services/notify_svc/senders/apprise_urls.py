"""Any Apprise URL (Telegram, Pushover, ntfy, Matrix and 100+ more) through the ``apprise`` library.

Apprise opens its own connections (with ``requests``, ``smtplib``, ...), so the egress policy is applied
before handing it the URL:

- query arguments that send a plugin somewhere other than the URL's host (``mailto://...?smtp=``, IRC's
  ``host=``, XMPP's ``xmpp=``, Nostr relays) or make it read or fetch a file are refused (:func:`url_problem`);
- every name the plugin connects to (its host, a mail plugin's SMTP server) must resolve, and every address
  be allowed, else the attempt is refused. A dotless name that does not resolve is a token in the host
  position (``tgram://bottoken/chat``, ``ntfy://topic``) and the plugin talks to its provider's fixed API;
- HTTP redirects are not followed (they could lead anywhere).

What remains: Apprise resolves the name again itself, so a name whose answer changes between our check and
its connection (DNS rebinding) can still reach a refused address; only pinning Apprise's sockets would stop it.
Apprise's own log lines are captured and masked, never passed to our logs as is.
"""

from __future__ import annotations

import asyncio
import logging
import warnings

import apprise

from service_runtime.egress import BlockedTarget, EgressPolicy, ResolutionFailed, resolve
from services.notify_svc.domain import AppriseConfig, ChannelConfig, NotificationKind, Outcome, Severity, redact
from services.notify_svc.senders import BlockingRunner, SendResult
from services.notify_svc.templates import Message

# Apprise logs the services it talks to; its records could carry tokens, so they stop here.
logging.getLogger("apprise").propagate = False
_TYPES = {Severity.CRITICAL: apprise.NotifyType.FAILURE, Severity.WARNING: apprise.NotifyType.WARNING}
# Query arguments (as Apprise reads them: any plugin, names lowercased) that make Apprise connect somewhere other
# than the URL's host, which is the name checked here, or read or fetch a file on this server's behalf.
_REFUSED_ARGUMENTS = {
    "smtp": "names a mail server other than the URL's host",
    "host": "names an IRC server other than the URL's host",
    "xmpp": "names an XMPP server other than the URL's host",
    "relay": "names Nostr relays",
    "blossom": "names a Blossom server",
    "template": "names a template file or URL to load",
    "pgppub": "names a key file on this server",
    "pgpprv": "names a key file on this server",
    "keyfile": "names a key file on this server",
    "subfile": "names a file on this server",
    "wkd": "looks keys up on the recipients' domains (Web Key Directory)",
}
# Attributes of the plugins that name where they connect, besides ``host``.
_SERVER_ATTRIBUTES = ("host", "smtp_host", "xmpp_host")


def url_problem(url: str) -> str | None:
    """What makes ``url`` unusable as an Apprise channel's URL, or None. For validation, and before every send
    (a channel saved before these checks)."""
    parsed = apprise.NotifyBase.parse_url(url, verify_host=False)  # as the plugins read their URLs
    arguments: dict[str, str] = (parsed or {}).get("qsd") or {}
    for name, why in _REFUSED_ARGUMENTS.items():
        if name in arguments:
            return f"may not set {name}=: it {why}"
    return None


def _notify_type(message: Message) -> apprise.NotifyType:
    if message.notification.kind is NotificationKind.ALERT_RESOLVED:
        return apprise.NotifyType.SUCCESS
    return _TYPES.get(message.notification.severity, apprise.NotifyType.INFO)


class AppriseSender:
    def __init__(self, policy: EgressPolicy, runner: BlockingRunner | None = None) -> None:
        self._policy = policy
        self._runner = runner or BlockingRunner(name="notify-apprise")

    async def send(self, config: ChannelConfig, message: Message, delivery_id: str, timeout_s: float) -> SendResult:
        assert isinstance(config, AppriseConfig)
        with warnings.catch_warnings():
            # Apprise loads its plugins on first use; one of them imports imghdr, deprecated in Python 3.11.
            warnings.filterwarnings("ignore", "'imghdr' is deprecated", DeprecationWarning)
            # service_timeout=0: Apprise runs the call in the calling thread (one of our runner's). With a timeout it
            # hands the call to its own process-wide pool (cpus+4 threads) and only stops waiting, so stuck calls
            # would starve every user's Apprise sends there.
            plugin = apprise.Apprise.instantiate(config.url, asset=apprise.AppriseAsset(service_timeout=0))
        if plugin is None:
            return SendResult(Outcome.PERMANENT, 0, "not an Apprise URL Apprise can use")
        if problem := url_problem(config.url):
            return SendResult(Outcome.PERMANENT, 0, f"refused target: the URL {problem}")
        hosts = [
            h for h in dict.fromkeys(getattr(plugin, a, None) for a in _SERVER_ATTRIBUTES) if isinstance(h, str) and h
        ]
        for host in hosts:
            try:
                async with asyncio.timeout(timeout_s):
                    await resolve(host, int(getattr(plugin, "port", None) or 443), self._policy)
            except BlockedTarget as error:
                return SendResult(Outcome.PERMANENT, 0, redact(f"refused target: {error}", (config.url, *hosts)))
            except (ResolutionFailed, TimeoutError) as error:
                if "." not in host:
                    continue  # a token in the host position; see the module docstring
                # Not handed to Apprise, which would look the name up again, unchecked. DNS may recover: retryable.
                reason = str(error) if isinstance(error, ResolutionFailed) else f"{host} did not resolve in time"
                return SendResult(Outcome.RETRYABLE, 0, redact(f"refused target: {reason}", (config.url, *hosts)))
        plugin.redirects = False  # a redirect could lead anywhere; requests would follow it unchecked
        plugin.socket_connect_timeout = timeout_s
        plugin.socket_read_timeout = timeout_s
        entries: list[str] = []
        notifier = apprise.Apprise()
        notifier.add(plugin)

        def notify() -> SendResult:
            sent = notifier.notify(
                body=message.body,
                title=message.title,
                notify_type=_notify_type(message),
                log_callback=lambda entry, _plugin: entries.append(f"{entry.level}: {entry.message}"),
                log_level=logging.WARNING,
            )
            if sent:
                return SendResult(Outcome.SUCCESS, 0, "sent")
            detail = redact("; ".join(entries)[-300:] or "Apprise reported a failure", (config.url, *hosts))
            return SendResult(Outcome.RETRYABLE, 0, detail)

        # requests' timeouts are per connect and per read: a server trickling its answer holds the thread past
        # this wait, and holds one of the runner's threads only.
        return await self._runner.send(notify, timeout_s)
