"""SuggestMonitors: free text, a URL or a coin symbol in, ready-to-create monitors and alert rules out.

Plain Python and deterministic: the same request always gives the same suggestions, in the order their
subjects appear (url first, then symbol, then text). What is recognised:

- Websites: ``http(s)://`` URLs, and bare host names such as ``example.com`` or ``shop.example.org/health``
  (watched over https; a host on this machine or the LAN, such as ``nas.local``, ``192.168.1.20/admin`` or
  ``localhost``, over http, which such hosts serve far more often: a scheme the user gives is kept).
  Suggested rules: the monitor is down, p95 latency, and for https certificate expiry.
- TCP ports: ``host:port`` with no scheme or path (``db.example.com:5432``, ``10.0.0.5:22``), ``tcp://...``,
  and "port 5432 on db.example.com"; ports 80 and 443 stay websites. Rules: down, p95 connect time.
- DNS records: "the DNS record of example.com still points at 203.0.113.7" (A; AAAA for an IPv6 address,
  CNAME for a host name, or the type named: "the MX record of ...") expects that answer; "DNS of
  example.com" watches that it resolves. Rule: down (the record no longer gives the answer, or none).
- gRPC services: ``host:port`` in a text that says gRPC, or ``grpc://`` / ``grpcs://`` (TLS; also for port
  443). The standard health check of the whole server. Rules: down, p95 latency.
- Jobs: "my nightly backup job", "the report script", "a cron job that runs every 6 hours": a heartbeat
  monitor (the job pings its URL), expecting a ping per the period the text names (hourly, nightly, daily,
  weekly, monthly, every N minutes/hours/days; a day if none) with a tenth of it as grace (5 min to 2 h).
  Rule: down (the ping is late or the job reported a failure).
- Coins: names and tickers (``bitcoin``, ``BTC``, ``ether``, ``ETH-EUR``) with an optional fiat currency
  (``in euros``, ``€``, ``GBP``; USD when none is named). Tickers that are also English words (LINK, DOT,
  TON...) count in text only when written in capitals or followed by "price", "coin" or "token".
  Suggested rules: a 5% move within 1 h (another percentage when the text names one), and a price
  threshold when the text names a price: "above $70,000" is price > 70000, "below 60k" is price < 60000
  ("hits" and "reaches" mean above), and a price with a currency sign but no direction word ("BTC at
  $50,000") means above. A number followed by % or a time unit, or a port, is not a price. Without a
  price there is no threshold rule: we do not know the price and do not guess one.

Every suggested monitor passes :func:`validate` under the deployment's limits, so it can go straight to
CreateMonitor; every rule names a field its monitor's kind writes.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from service_runtime.errors import InvalidArgument
from service_runtime.timeseries import Aggregation
from services.monitor_svc.domain import (
    DEFAULT_INTERVAL,
    CryptoPriceSpec,
    DnsSpec,
    GrpcHealthSpec,
    HeartbeatSpec,
    Limits,
    MonitorDraft,
    TcpSpec,
    WebsiteSpec,
    validate,
)

MAX_TEXT = 2000
LATENCY_P95_MS = 2000.0
LATENCY_WINDOW = timedelta(minutes=10)
CERT_DAYS = 14.0
MOVE_PERCENT = 5.0
MOVE_WINDOW = timedelta(hours=1)

# Coin names and tickers (lower case) -> the ticker price providers use.
COINS: dict[str, str] = {
    **dict.fromkeys(("bitcoin", "btc", "xbt"), "BTC"),
    **dict.fromkeys(("ethereum", "eth", "ether"), "ETH"),
    **dict.fromkeys(("solana", "sol"), "SOL"),
    **dict.fromkeys(("cardano", "ada"), "ADA"),
    **dict.fromkeys(("dogecoin", "doge"), "DOGE"),
    **dict.fromkeys(("ripple", "xrp"), "XRP"),
    **dict.fromkeys(("litecoin", "ltc"), "LTC"),
    **dict.fromkeys(("polkadot", "dot"), "DOT"),
    **dict.fromkeys(("avalanche", "avax"), "AVAX"),
    **dict.fromkeys(("chainlink", "link"), "LINK"),
    **dict.fromkeys(("tron", "trx"), "TRX"),
    **dict.fromkeys(("bnb",), "BNB"),
    **dict.fromkeys(("polygon", "matic", "pol"), "POL"),
    **dict.fromkeys(("toncoin", "ton"), "TON"),
    **dict.fromkeys(("shiba", "shib"), "SHIB"),
    **dict.fromkeys(("monero", "xmr"), "XMR"),
    **dict.fromkeys(("stellar", "xlm"), "XLM"),
}
# Tickers that are ordinary words too: recognised in free text only when written in capitals.
_WORD_TICKERS = frozenset({"sol", "dot", "link", "ton", "pol", "ada"})
_COIN_NOUNS = frozenset({"price", "prices", "coin", "token"})
FIAT: dict[str, str] = {
    **dict.fromkeys(("usd", "dollar", "dollars", "$", "us$"), "USD"),
    **dict.fromkeys(("eur", "euro", "euros", "€"), "EUR"),
    **dict.fromkeys(("gbp", "pound", "pounds", "sterling", "£"), "GBP"),
    **dict.fromkeys(("jpy", "yen", "¥"), "JPY"),
    **dict.fromkeys(("chf", "franc", "francs"), "CHF"),
    **dict.fromkeys(("cad",), "CAD"),
    **dict.fromkeys(("aud",), "AUD"),
}
_ABOVE = (
    "above",
    "over",
    "exceeds",
    "exceed",
    "greater than",
    "more than",
    "higher than",
    "tops",
    "breaks",
    "hits",
    "reaches",
    ">",
)
_BELOW = ("below", "under", "less than", "lower than", "drops to", "falls to", "dips to", "<")

_URL = re.compile(r"\bhttps?://[^\s<>\"'`]+", re.IGNORECASE)
_HOST = re.compile(
    r"(?<![\w@.-])((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24})(:\d{1,5})?(/[^\s<>\"'`]*)?",
    re.IGNORECASE,
)
_NOT_TLDS = frozenset({"js", "py", "md", "txt", "json", "yaml", "yml", "html", "htm", "php", "sh", "ts", "go", "rs"})
_PAIR = re.compile(r"^([A-Za-z0-9]{2,10})[-/]?([A-Za-z]{3})?$")
_WORD = re.compile(r"[a-z0-9]+|[$€£¥]", re.IGNORECASE)
_AMOUNT = r"(?P<cur>[$€£¥])?\s*(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)\s*(?P<mult>[km]\b)?"
# A number followed by a time unit or % is a window or a move, not a price.
_NOT_PRICE = r"(?!\s*(?:%|[hds]\b|hours?\b|minutes?\b|mins?\b|days?\b|seconds?\b))"
_DIRECTED = re.compile(
    rf"(?<![a-z])(?P<dir>{'|'.join(re.escape(w) for w in _ABOVE + _BELOW)})\s*(?:of\s+|to\s+)?{_AMOUNT}{_NOT_PRICE}",
    re.IGNORECASE,
)
_MONEY = re.compile(rf"(?<![\w.]){_AMOUNT}{_NOT_PRICE}", re.IGNORECASE)
_PERCENT = re.compile(r"(\d{1,2}(?:\.\d+)?)\s*%")

CONNECT_P95_MS = 1000.0
GRPC_NEAR = 30  # characters around a host:port searched for the word gRPC
_DOMAIN = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}"
_IPV4 = r"(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)"
_IPV6 = r"[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?![\w:])"
_ANY_HOST = rf"(?:{_DOMAIN}|{_IPV4}|localhost|\[[0-9a-f:]+\])"
# host:port with no scheme and no path: a TCP port (or a gRPC server when the text says gRPC).
_HOST_PORT = re.compile(
    rf"(?<![\w@.:/-])(?:(?P<scheme>tcp|grpcs?)://)?(?P<host>{_ANY_HOST}):(?P<port>\d{{1,5}})(?![\w:/-]|\.\w)",
    re.IGNORECASE,
)
_PORT_ON = re.compile(rf"\bport\s+(?P<port>\d{{1,5}})\s+(?:on|of|at)\s+(?P<host>{_ANY_HOST})\b", re.IGNORECASE)
_GRPC_URL = re.compile(rf"\b(?P<scheme>grpcs?)://(?P<host>{_ANY_HOST})(?::(?P<port>\d{{1,5}}))?/?", re.IGNORECASE)
_GRPC_WORD = re.compile(r"\bgrpc(?:_health)?\b", re.IGNORECASE)
# A LAN website named by address or a LAN-only name, watched over http.
_LAN_SITE = re.compile(rf"(?<![\w@.:/-])(?P<host>{_IPV4}|localhost)(?P<rest>(?::\d{{1,5}})?/[^\s<>\"'`]*)?(?![\w:.-])")
_LAN_SUFFIXES = (".local", ".lan", ".home", ".internal", ".localdomain", ".home.arpa", ".intranet", ".localhost")
_RECORD_TYPE = r"(?P<type>a|aaaa|cname|mx|txt|ns)\s+"
_DNS_POINTS = re.compile(
    rf"(?:(?:\bdns\s+)?(?:{_RECORD_TYPE})?(?:dns\s+)?records?\s+(?:of|for)\s+)?"
    rf"(?P<name>{_DOMAIN})\.?\s+(?:still\s+|now\s+|always\s+)?(?:points?|pointing|resolves?|resolving)\s+"
    rf"(?:at|to)\s+(?P<answer>{_IPV4}|{_IPV6}|{_DOMAIN})\.?",
    re.IGNORECASE,
)
_DNS_OF = re.compile(
    rf"\b(?:(?:{_RECORD_TYPE})?(?:dns\s+)?records?|dns)\s+(?:of|for)\s+(?P<name>{_DOMAIN})\.?", re.IGNORECASE
)
# "dns example.com" and "dns example.com MX" (how the MCP adapter names a DNS monitor when it asks for rules).
_DNS_NAMED = re.compile(rf"\bdns\s+(?P<name>{_DOMAIN})\.?(?:\s+(?P<type>a|aaaa|cname|mx|txt|ns)\b)?", re.IGNORECASE)
_JOB_WORDS = frozenset(
    {"job", "jobs", "cronjob", "cron", "backup", "backups", "script", "scripts", "task", "tasks", "heartbeat"}
)
_JOB_STOP = frozenset(
    {"my", "our", "the", "a", "an", "their", "your", "his", "her", "its", "this", "that", "these", "those", "of",
     "for", "and", "or", "to", "watch", "monitor", "check", "track", "if", "when", "whether", "me", "tell", "alert",
     "let", "know", "is", "are", "was", "in", "on", "at", "with", "from", "by", "every", "each", "keep", "eye"}
)  # fmt: skip
_PERIOD_WORDS = {
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
    "nightly": timedelta(days=1),
    "weekly": timedelta(days=7),
    "monthly": timedelta(days=31),
    "yearly": timedelta(days=365),
    "annually": timedelta(days=365),
}
_UNITS = {"minute": 60, "min": 60, "hour": 3600, "day": 86400, "night": 86400, "week": 604800, "month": 2678400}
_EVERY = re.compile(r"\bevery\s+(?:(?P<n>\d{1,4})\s+)?(?P<unit>minute|min|hour|day|night|week|month)s?\b", re.I)
_TWICE = re.compile(r"\btwice\s+a\s+(?P<unit>day|week)\b", re.IGNORECASE)


@dataclass(frozen=True)
class ThresholdCondition:
    """An aggregate of a field over a trailing window (None: the latest sample) compared with a value."""

    field: str
    aggregation: Aggregation
    window: timedelta | None
    operator: str  # one of domain.COMPARISONS
    value: float


@dataclass(frozen=True)
class ChangeCondition:
    """A relative move of a field over a trailing window."""

    field: str
    window: timedelta
    percent: float
    direction: str  # up, down or either


@dataclass(frozen=True)
class MonitorDownCondition:
    """The monitor's state is DOWN."""


Condition = ThresholdCondition | ChangeCondition | MonitorDownCondition


@dataclass(frozen=True)
class SuggestedAlertRule:
    display_name: str
    condition: Condition
    severity: str  # info, warning or critical
    for_duration: timedelta
    rationale: str


@dataclass(frozen=True)
class MonitorSuggestion:
    """A validated monitor draft, ready for CreateMonitor, with the rules worth creating for it."""

    draft: MonitorDraft
    rationale: str
    alert_rules: tuple[SuggestedAlertRule, ...]


@dataclass(frozen=True)
class _PriceTarget:
    operator: str
    value: float
    quote: str | None


def suggest_monitors(
    text: str = "", url: str = "", symbol: str = "", limits: Limits | None = None
) -> list[MonitorSuggestion]:
    """Suggestions for what the request names; INVALID_ARGUMENT naming the field that yields nothing."""
    limits = limits or Limits()
    text, url, symbol = text.strip(), url.strip(), symbol.strip()
    if not (text or url or symbol):
        raise InvalidArgument("text", "set text, url or symbol, such as 'watch example.com' or 'bitcoin price'")
    if len(text) > MAX_TEXT:
        raise InvalidArgument("text", f"must be at most {MAX_TEXT} characters")
    interval = max(DEFAULT_INTERVAL, limits.min_interval)
    # DNS records, ports and gRPC servers, then websites, each blanked out of the text once recognised, so a
    # host is read once, and a port, a path or bitcoin.org is not read as a price or coin.
    sites: list[tuple[int, MonitorSuggestion]] = []
    rest = text

    def take(match: re.Match[str], suggestion: MonitorSuggestion | None) -> None:
        nonlocal rest
        if suggestion is not None:
            sites.append((match.start(), suggestion))
            rest = rest[: match.start()] + " " * len(match.group(0)) + rest[match.end() :]

    for pattern in (_DNS_POINTS, _DNS_OF, _DNS_NAMED):
        for match in pattern.finditer(rest):
            answer = match.groupdict().get("answer")
            take(match, _dns(match.group("name"), match.group("type"), answer, interval, limits))
    for match in _GRPC_URL.finditer(rest):
        scheme, port = match.group("scheme").lower(), match.group("port")
        take(match, _grpc(match.group("host"), int(port or 443), scheme == "grpcs", interval, limits))
    for pattern in (_HOST_PORT, _PORT_ON):
        for match in pattern.finditer(rest):
            host, port = match.group("host"), int(match.group("port"))
            scheme = (match.groupdict().get("scheme") or "").lower()
            # "gRPC" said just before or after this address (not elsewhere in the text) makes it a gRPC server.
            says_grpc = bool(_GRPC_WORD.search(text[max(0, match.start() - GRPC_NEAR) : match.end() + GRPC_NEAR]))
            if port in (80, 443) and not scheme and not says_grpc:
                continue  # a website, read below
            if scheme.startswith("grpc") or (says_grpc and scheme != "tcp"):
                take(match, _grpc(host, port, scheme == "grpcs" or port == 443, interval, limits))
            else:
                take(match, _tcp(host, port, interval, limits))
    for pattern in (_URL, _LAN_SITE, _HOST):
        for match in pattern.finditer(rest):
            if pattern is _HOST and match.group(1).rsplit(".", 1)[-1].lower() in _NOT_TLDS:
                continue
            take(match, _website(match.group(0).rstrip(".,;:!?)"), interval, limits))
    for position, job in _jobs_in(rest, limits):
        sites.append((position, job))
    target = _price_target(rest)
    percent = _move_percent(rest)
    quote = _fiat_in(rest) or (target.quote if target else None)
    coins = [
        (position, _coin(f"{base}-{quote or 'USD'}", target, percent, interval, limits))
        for position, base in _coins_in(rest)
    ]

    found: list[MonitorSuggestion] = []
    if url:
        site = _website(url, interval, limits)
        if site is None:
            raise InvalidArgument("url", "must be an http(s) URL or a host name, such as https://example.com/health")
        found.append(site)
    if symbol:
        pair = _pair_of_symbol(symbol, quote)
        if pair is None:
            known = ", ".join(sorted(set(COINS.values())))
            raise InvalidArgument("symbol", f"must be a coin or pair such as BTC or ETH-EUR; known coins: {known}")
        found.append(_coin(pair, target, percent, interval, limits))
    for _, suggestion in sorted(sites + coins, key=lambda item: item[0]):
        if all(s.draft.spec != suggestion.draft.spec for s in found):
            found.append(suggestion)
    if not found:
        raise InvalidArgument(
            "text",
            f"names no website, host, port, DNS record, job or coin we know: {text[:60]!r}; try 'watch example.com',"
            " 'db.example.com:5432', 'my nightly backup job' or 'BTC in euros'",
        )
    return found


def is_lan_host(host: str) -> bool:
    """A host on this machine or the LAN: a loopback or private address, localhost, or a LAN-only name."""
    host = host.strip("[]").lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or "." not in host or host.endswith(_LAN_SUFFIXES)
    return address.is_private or address.is_loopback or address.is_link_local


def _normal_url(raw: str) -> str:
    if not re.match(r"^[a-z][a-z0-9+.-]*://", raw, re.IGNORECASE):
        host = urlsplit(f"//{raw}").hostname or ""
        raw = f"{'http' if is_lan_host(host) else 'https'}://{raw}"
    parts = urlsplit(raw)
    return parts._replace(scheme=parts.scheme.lower(), path=parts.path or "/").geturl()


def _website(raw: str, interval: timedelta, limits: Limits) -> MonitorSuggestion | None:
    try:
        url = _normal_url(raw)
    except ValueError:  # urlsplit: an unclosed [ around an IPv6 host
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    draft = _valid(MonitorDraft(spec=WebsiteSpec(url=url), interval=interval), limits)
    if draft is None:
        return None
    host = parts.hostname
    rules = [
        SuggestedAlertRule(
            f"{host} is down",
            MonitorDownCondition(),
            "critical",
            timedelta(minutes=1),
            "Pages you when the site stops answering, after a minute so a single blip does not.",
        ),
        SuggestedAlertRule(
            f"{host} is slow",
            ThresholdCondition("response_time_ms", Aggregation.P95, LATENCY_WINDOW, ">", LATENCY_P95_MS),
            "warning",
            timedelta(minutes=5),
            f"Warns when the slowest 5% of checks take over {LATENCY_P95_MS / 1000:g} s for 10 minutes, "
            "which users feel before the site is down.",
        ),
    ]
    if parts.scheme == "https":
        rules.append(
            SuggestedAlertRule(
                f"{host} certificate expires soon",
                ThresholdCondition("cert_days_left", Aggregation.LAST, None, "<", CERT_DAYS),
                "warning",
                timedelta(0),
                f"Gives {CERT_DAYS:g} days to renew the TLS certificate before browsers start refusing the site.",
            )
        )
    rationale = f"Checks {url} every {_duration(interval)} for an answer, its latency and, over https, its certificate."
    return MonitorSuggestion(draft, rationale, tuple(rules))


def _down_rule(name: str, for_duration: timedelta, why: str) -> SuggestedAlertRule:
    return SuggestedAlertRule(f"{name} is down", MonitorDownCondition(), "critical", for_duration, why)


def _tcp(host: str, port: int, interval: timedelta, limits: Limits) -> MonitorSuggestion | None:
    host = host.strip("[]")
    draft = _valid(MonitorDraft(spec=TcpSpec(host, port), interval=interval), limits)
    if draft is None:
        return None
    name = f"{host}:{port}"
    rules = (
        _down_rule(name, timedelta(minutes=1), "Pages you when the port stops accepting connections for a minute."),
        SuggestedAlertRule(
            f"{name} is slow to connect",
            ThresholdCondition("connect_time_ms", Aggregation.P95, LATENCY_WINDOW, ">", CONNECT_P95_MS),
            "warning",
            timedelta(minutes=5),
            f"Warns when the slowest 5% of connections take over {CONNECT_P95_MS / 1000:g} s for 10 minutes.",
        ),
    )
    rationale = f"Opens a TCP connection to {name} every {_duration(interval)} and times it."
    return MonitorSuggestion(draft, rationale, rules)


def _grpc(host: str, port: int, tls: bool, interval: timedelta, limits: Limits) -> MonitorSuggestion | None:
    target = f"{host}:{port}"
    draft = _valid(MonitorDraft(spec=GrpcHealthSpec(target, use_tls=tls), interval=interval), limits)
    if draft is None:
        return None
    rules = (
        _down_rule(target, timedelta(minutes=1), "Pages you when the server stops answering SERVING for a minute."),
        SuggestedAlertRule(
            f"{target} is slow",
            ThresholdCondition("response_time_ms", Aggregation.P95, LATENCY_WINDOW, ">", LATENCY_P95_MS),
            "warning",
            timedelta(minutes=5),
            f"Warns when the slowest 5% of health checks take over {LATENCY_P95_MS / 1000:g} s for 10 minutes.",
        ),
    )
    over = "over TLS" if tls else "in plain text"
    rationale = f"Asks {target} for its standard gRPC health (grpc.health.v1) every {_duration(interval)}, {over}."
    return MonitorSuggestion(draft, rationale, rules)


def _dns(
    name: str, named_type: str | None, answer: str | None, interval: timedelta, limits: Limits
) -> MonitorSuggestion | None:
    name = name.rstrip(".")
    record_type = (named_type or "").upper()
    if not record_type:
        record_type = "A"
        if answer is not None:
            try:
                record_type = "AAAA" if ipaddress.ip_address(answer).version == 6 else "A"
            except ValueError:
                record_type = "CNAME"
    answers = (answer.rstrip("."),) if answer else ()
    spec = DnsSpec(name, record_type, answers)
    draft = _valid(MonitorDraft(spec=spec, interval=interval), limits)
    if draft is None:
        return None
    expects = f"still gives {answers[0]}" if answers else "resolves"
    rules = (
        _down_rule(
            f"{name} {record_type}",
            timedelta(minutes=5),
            f"Tells you when the {record_type} record of {name} no longer "
            + (f"gives {answers[0]}" if answers else "resolves")
            + " for 5 minutes (a resolver's blip is not a change).",
        ),
    )
    rationale = f"Looks up the {record_type} record of {name} every {_duration(interval)} and checks it {expects}."
    return MonitorSuggestion(draft, rationale, rules)


def _jobs_in(text: str, limits: Limits) -> list[tuple[int, MonitorSuggestion]]:
    """Heartbeat monitors for the jobs the text names ("my nightly backup job"), each once."""
    words = list(re.finditer(r"[a-z0-9][a-z0-9_-]*", text, re.IGNORECASE))
    found: dict[str, tuple[int, MonitorSuggestion]] = {}
    i = 0
    while i < len(words):
        if words[i].group(0).lower() not in _JOB_WORDS:
            i += 1
            continue
        end = i
        while end + 1 < len(words) and words[end + 1].group(0).lower() in _JOB_WORDS:
            end += 1
        first = i
        while first > 0 and i - first < 3 and words[first - 1].group(0).lower() not in _JOB_STOP:
            first -= 1
        name = " ".join(w.group(0) for w in words[first : end + 1])
        if name.lower() not in found:
            job = _heartbeat(name, _period_in(text), limits)
            if job is not None:
                found[name.lower()] = (words[first].start(), job)
        i = end + 1
    return list(found.values())


def _period_in(text: str) -> timedelta | None:
    """The period the text names for a job: "hourly", "every 6 hours", "twice a day"... None if none."""
    every = _EVERY.search(text)
    if every is not None:
        return timedelta(seconds=int(every.group("n") or 1) * _UNITS[every.group("unit").lower()])
    twice = _TWICE.search(text)
    if twice is not None:
        return timedelta(seconds=_UNITS[twice.group("unit").lower()] / 2)
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in _PERIOD_WORDS:
            return _PERIOD_WORDS[word]
    return None


def _heartbeat(name: str, period: timedelta | None, limits: Limits) -> MonitorSuggestion | None:
    named = period is not None
    period = max(period or timedelta(days=1), limits.min_interval)
    grace = min(max(period / 10, timedelta(minutes=5)), timedelta(hours=2))
    grace = timedelta(seconds=round(grace.total_seconds()))
    draft = _valid(MonitorDraft(display_name=name, spec=HeartbeatSpec(grace), interval=period), limits)
    if draft is None:
        return None
    rules = (
        _down_rule(
            name,
            timedelta(0),
            "Tells you when the job's ping is late or it reports a failure (<url>/fail, or <url>/$? with its exit"
            " status).",
        ),
    )
    every = _long_duration(period) + ("" if named else ", as none was named")
    rationale = (
        f"Gives {name} a ping URL to call when it finishes (curl -fsS -m 10 --retry 5 <url>); "
        f"DOWN when no ping comes every {every}, plus {_long_duration(grace)} of grace."
    )
    return MonitorSuggestion(draft, rationale, rules)


def _long_duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}" + ("s" if unit == "day" and count != 1 else "")
    return f"{seconds} s"


def _coin(
    pair: str, target: _PriceTarget | None, percent: float | None, interval: timedelta, limits: Limits
) -> MonitorSuggestion:
    draft = _valid(MonitorDraft(spec=CryptoPriceSpec(pair), interval=interval), limits)
    assert draft is not None, pair  # pairs are built from known tickers
    base, quote = pair.split("-")
    move = percent or MOVE_PERCENT
    rules = []
    if target is not None:
        word = "above" if target.operator == ">" else "below"
        rules.append(
            SuggestedAlertRule(
                f"{base} {word} {_money(target.value, quote)}",
                ThresholdCondition("price", Aggregation.LAST, None, target.operator, target.value),
                "warning",
                timedelta(0),
                f"Tells you as soon as the {pair} price is {word} the {_money(target.value, quote)} you asked about.",
            )
        )
    rules.append(
        SuggestedAlertRule(
            f"{base} moved {move:g}% in 1h",
            ChangeCondition("price", MOVE_WINDOW, move, "either"),
            "info",
            timedelta(0),
            f"A {move:g}% move within an hour is unusual for {base}; worth a look either way.",
        )
    )
    rationale = f"Records the {pair} price every {_duration(interval)}, falling back across four price providers."
    return MonitorSuggestion(draft, rationale, tuple(rules))


def _valid(draft: MonitorDraft, limits: Limits) -> MonitorDraft | None:
    try:
        return validate(draft, limits)
    except InvalidArgument:
        return None


def _pair_of_symbol(symbol: str, quote_hint: str | None) -> str | None:
    """``BTC``, ``btc-usd``, ``ETH/EUR``, ``bitcoin`` or ``BTCUSD`` as a pair the providers know."""
    raw = symbol.strip()
    if raw.lower() in COINS:
        return f"{COINS[raw.lower()]}-{quote_hint or 'USD'}"
    match = _PAIR.match(raw)
    if match is None:
        return None
    base, quote = match.group(1).lower(), (match.group(2) or "").lower()
    if not quote and base not in COINS and base[-3:] in FIAT:  # BTCUSD, ETHEUR
        base, quote = base[:-3], base[-3:]
    if base not in COINS or (quote and quote not in FIAT):
        return None
    return f"{COINS[base]}-{FIAT[quote] if quote else quote_hint or 'USD'}"


def _coins_in(text: str) -> list[tuple[int, str]]:
    """The coins named in ``text``, each once, with where it is first named."""
    found: dict[str, int] = {}
    words = list(_WORD.finditer(text))
    for i, match in enumerate(words):
        word = match.group(0)
        ticker = COINS.get(word.lower())
        if ticker is None:
            continue
        if word.lower() in _WORD_TICKERS and not word.isupper():
            following = words[i + 1].group(0).lower() if i + 1 < len(words) else ""
            if following not in _COIN_NOUNS:  # "sol price" is a coin, "send a link" is not
                continue
        found.setdefault(ticker, match.start())
    return [(position, ticker) for ticker, position in found.items()]


def _fiat_in(text: str) -> str | None:
    """The fiat currency the text names in words (``in euros``, ``GBP``); symbols count only beside a price."""
    for match in _WORD.finditer(text):
        word = match.group(0).lower()
        if word in FIAT and not word.startswith(("$", "€", "£", "¥")):
            return FIAT[word]
    return None


def _price_target(text: str) -> _PriceTarget | None:
    directed = _DIRECTED.search(text)
    if directed is not None:
        operator = ">" if directed.group("dir").lower() in _ABOVE else "<"
        return _PriceTarget(operator, _amount(directed), _currency(directed))
    for match in _MONEY.finditer(text):
        # Without a direction word, only what is plainly a price: a currency sign before the number.
        if match.group("cur"):
            return _PriceTarget(">", _amount(match), _currency(match))
    return None


def _amount(match: re.Match[str]) -> float:
    value = float(match.group("num").replace(",", ""))
    return value * {"k": 1e3, "m": 1e6}.get((match.group("mult") or "").lower(), 1)


def _currency(match: re.Match[str]) -> str | None:
    sign = match.group("cur")
    return FIAT[sign] if sign else None


def _move_percent(text: str) -> float | None:
    match = _PERCENT.search(text)
    percent = float(match.group(1)) if match else None
    return percent if percent and 0 < percent <= 50 else None


def _money(value: float, quote: str) -> str:
    return f"{value:,.2f}".rstrip("0").rstrip(".") + f" {quote}"


def _duration(interval: timedelta) -> str:
    seconds = int(interval.total_seconds())
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"
