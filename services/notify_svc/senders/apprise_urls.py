"""Any Apprise URL (Telegram, Pushover, ntfy, Matrix and 100+ more) through the ``apprise`` library.

Only the schemes of notification services reached over the network are accepted (:data:`ALLOWED_SCHEMES`, an
allow-list, so a plugin a later Apprise adds is refused until it is looked at): not ``syslog://`` (this host's
log), ``rsyslog://`` (UDP log lines, not notifications), desktop notifications (``dbus://``, ``windows://``, ...)
or ``vapid://`` (keys and subscriptions read from this server's files).

Apprise opens its own connections (with ``requests``, ``smtplib``, ...), so the egress policy is applied
before handing it the URL:

- query arguments that send a plugin somewhere other than the URL's host (``mailto://...?smtp=``, IRC's
  ``host=``, XMPP's ``xmpp=``, Nostr relays) or make it read or fetch a file are refused (:func:`url_problem`);
- every name the plugin connects to (its host, a mail plugin's SMTP server) must resolve, and every address
  be allowed, else the attempt is refused. A plugin whose URL's host is the server it connects to, given none
  (``irc://?port=6667``), would open a socket to the empty name, which is this machine: it is judged as
  ``localhost``. A dotless name that does not resolve is a token in the host
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
from services.notify_svc.senders.base import BlockingRunner, SendResult
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
# The schemes of notification services reached over the network (Apprise 2.2; see the module docstring).
_NETWORK_SERVICES = """
46elks amqp amqps apprise apprises aprs atalk azure bark barks betterstack bluesky brevo bsky bulksms bulkvs
burstsms chanify clickatell clicksend cliq cm d7sms dapnet deltachat deltachats dingtalk discord dot eight00com
elks emby embys enigma2 enigma2s evolution evolutions exotel fcm feishu firehydrant flock flowtriq flowtriqs
fluxer fluxers form forms freemobile gchat github goalert goalerts gorush gorushs gotify gotifys groundmail
groupme guilded gupshup hassio hassios httpsms humhub humhubs ifttt ilert incidentio infobip irc ircs jellyfin
jellyfins jira join json jsons kakao kakaotalk kaleyra kavenegar klr kodi kodis kook kudosity kumulos lametric
lametrics lark lauther lfg line mailersend mailgun mailto mailtos mastodon mastodons matrix matrixs misskey
misskeys mmost mmosts mobilemessage mobilemsg mqtt mqtts msg91 msgbird ncloud nclouds nctalk nctalks nexmo nostr
notica noticas notifiarr notifico notificos notifyre ntfy ntfys o365 octopush onebot onebots onesignal opsgenie
pagerduty pagertree parsep parseps pbul pinglet pinglets pingram pjet pjets plivo postmark pover prowl psafer
psafers push pushdeer pushdeers pushed pushme pushplus pushward pushy qq reddit resend revolt ringc rocket
rockets ryver schan sendgrid sendpulse serwersms ses session sessions seven sfr signal signalgrid signals signl4
simplepush sinch slack smpp smpps smsc smseagle smseagles smsmanager smsmgr smstunnel smtp2go sns sogs sparkpost
spike splunk spugpush spush squadcast stackfield strmlabs synology synologys telesign telnyx tgram threema toot
toots trigv trigvs tweet twilio twist twitter viber victorops voipms vonage webex wechat wecom wecombot whapi
whatsapp workflow workflows wpush wxpusher wxteams x xbmc xbmcs xmatters xml xmls xmpp xmpps youlmk zalo zcliq
zohocliq zoom zulip
"""
ALLOWED_SCHEMES = frozenset(_NETWORK_SERVICES.split())
# What a socket does with an empty host name: it connects to this machine.
_EMPTY_HOST = "localhost"


def _scheme(url: str) -> str:
    return url.partition("://")[0].strip().lower()


def _connects_to_its_host(plugin: apprise.NotifyBase) -> bool:
    """Whether the URL's host is the server ``plugin`` connects to (not a token before a fixed API)."""
    return "host" in getattr(plugin, "template_tokens", {})


def server_names(plugin: apprise.NotifyBase) -> list[str]:
    """The names ``plugin`` may connect to, to be checked against the egress policy: an empty host, where the
    URL's host is the server, is judged as the address a socket really uses for it (this machine)."""
    named = [getattr(plugin, attribute, None) for attribute in _SERVER_ATTRIBUTES]
    if _connects_to_its_host(plugin) and not plugin.host:
        named.insert(0, _EMPTY_HOST)
    return [name for name in dict.fromkeys(named) if isinstance(name, str) and name]


def url_problem(url: str) -> str | None:
    """What makes ``url`` unusable as an Apprise channel's URL, or None. For validation, and before every send
    (a channel saved before these checks)."""
    scheme = _scheme(url)
    if scheme not in ALLOWED_SCHEMES:
        return f"uses {scheme[:20]}://, which this service does not send to (notification services only)"
    parsed = apprise.NotifyBase.parse_url(url, verify_host=False)  # as the plugins read their URLs
    arguments: dict[str, str] = (parsed or {}).get("qsd") or {}
    for name, why in _REFUSED_ARGUMENTS.items():
        if name in arguments:
            return f"may not set {name}=: it {why}"
    return None


def plugin_for(url: str) -> apprise.NotifyBase | None:
    """The Apprise plugin ``url`` makes, as sends use it, or None if Apprise cannot use it."""
    with warnings.catch_warnings():
        # Apprise loads its plugins on first use; one of them imports imghdr, deprecated in Python 3.11.
        warnings.filterwarnings("ignore", "'imghdr' is deprecated", DeprecationWarning)
        # service_timeout=0: Apprise runs the call in the calling thread (one of our runner's). With a timeout it
        # hands the call to its own process-wide pool (cpus+4 threads) and only stops waiting, so stuck calls
        # would starve every user's Apprise sends there.
        return apprise.Apprise.instantiate(url, asset=apprise.AppriseAsset(service_timeout=0))


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
        if problem := url_problem(config.url):
            return SendResult(Outcome.PERMANENT, 0, f"refused target: the URL {problem}")
        plugin = plugin_for(config.url)
        if plugin is None:
            return SendResult(Outcome.PERMANENT, 0, "not an Apprise URL Apprise can use")
        hosts = server_names(plugin)
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
