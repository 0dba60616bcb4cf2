"""SuggestMonitors: free text, a URL or a coin symbol in, ready-to-create monitors and alert rules out.

Plain Python and deterministic: the same request always gives the same suggestions, in the order their
subjects appear (url first, then symbol, then text). What is recognised:

- Websites: ``http(s)://`` URLs, and bare host names such as ``example.com`` or ``shop.example.org/health``
  (watched over https). Suggested rules: the monitor is down, p95 latency, and for https certificate expiry.
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

import re
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from service_runtime.errors import InvalidArgument
from service_runtime.timeseries import Aggregation
from services.monitor_svc.domain import (
    DEFAULT_INTERVAL,
    CryptoPriceSpec,
    Limits,
    MonitorDraft,
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
    # Websites first, blanked out of the text, so a port, a path or bitcoin.org is not read as a price or coin.
    sites: list[tuple[int, MonitorSuggestion]] = []
    rest = text
    for pattern in (_URL, _HOST):
        for match in pattern.finditer(rest):
            if pattern is _HOST and match.group(1).rsplit(".", 1)[-1].lower() in _NOT_TLDS:
                continue
            site = _website(match.group(0).rstrip(".,;:!?)"), interval, limits)
            if site is not None:
                sites.append((match.start(), site))
                rest = rest[: match.start()] + " " * len(match.group(0)) + rest[match.end() :]
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
            "text", f"names no website, host or coin we know: {text[:60]!r}; try 'watch example.com' or 'BTC in euros'"
        )
    return found


def _normal_url(raw: str) -> str:
    if not re.match(r"^[a-z][a-z0-9+.-]*://", raw, re.IGNORECASE):
        raw = f"https://{raw}"
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
