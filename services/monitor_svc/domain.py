"""Monitors: their types, specs, validation rules, and the sample fields each type writes.

Plain Python: the servicer translates protobuf to these dataclasses, and every rule lives here. Field paths in
errors are paths in the request (``monitor.spec.website.url``), so a caller knows exactly what to fix.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from urllib.parse import SplitResult, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from service_runtime.errors import InvalidArgument, Violations

# Bounds on every repeated and map field and on a monitor as a whole, so one user's monitors cannot grow without
# limit what the store, the runners' sync and every caller carry (documented on the fields in the protos).
MAX_DISPLAY_NAME = 200
MAX_URL = 2048
MAX_HEADERS = 50
MAX_HEADER_VALUE = 8192
MAX_HEADERS_BYTES = 16 * 1024  # names and values together: what common web servers take
MAX_BODY = 64 * 1024
MAX_STATUS_RANGES = 20
MAX_KEYWORD = 500
MAX_JSON_PATH = 500
MAX_JSON_EXPECTED = 500
MAX_EXPECTED_ANSWERS = 20
MAX_EXPECTED_ANSWER = 512
MAX_GRPC_SERVICE = 200
MAX_LABELS = 64
MAX_LABEL_VALUE = 200
# A monitor's size as its protobuf encodes it (every text's UTF-8 bytes, 8 bytes per field or entry besides):
# room for the largest body and headers, and a fraction of a gRPC message (4 MiB by default).
MAX_MONITOR_BYTES = 128 * 1024
DEFAULT_INTERVAL = timedelta(seconds=60)
DEFAULT_TIMEOUT = timedelta(seconds=10)
MAX_INTERVAL = timedelta(days=1)
MAX_HEARTBEAT_PERIOD = timedelta(days=365)  # a heartbeat's interval and grace period (a yearly job)
MAX_TIMEOUT = timedelta(seconds=60)
MAX_RETRIES = 10
MAX_LOCATIONS = 10
_LOCATION = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
_PAIR = re.compile(r"^[A-Z0-9]{2,10}-[A-Z0-9]{2,10}$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?$"
)
# What an HTTP request line or header cannot carry as is (RFC 9110, 9112): a URL has no space or control
# character, a header value no control character but the tab. Checked when saved, not first at check time.
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
SECRET_REFERENCE = re.compile(r"\{\{secret:([A-Za-z][A-Za-z0-9_]{0,63})\}\}")


class MonitorKind(StrEnum):
    WEBSITE = "website"
    CRYPTO_PRICE = "crypto_price"
    TCP = "tcp"
    DNS = "dns"
    HEARTBEAT = "heartbeat"
    GRPC_HEALTH = "grpc_health"


# The numeric sample fields each kind writes (QuerySamples and alert rules may name only these).
FIELDS: Mapping[MonitorKind, frozenset[str]] = {
    MonitorKind.WEBSITE: frozenset({"is_up", "status_code", "response_time_ms", "cert_days_left"}),
    MonitorKind.CRYPTO_PRICE: frozenset({"is_up", "price"}),
    MonitorKind.TCP: frozenset({"is_up", "connect_time_ms"}),
    MonitorKind.DNS: frozenset({"is_up", "response_time_ms", "answer_count"}),
    MonitorKind.HEARTBEAT: frozenset({"is_up", "run_time_ms"}),
    MonitorKind.GRPC_HEALTH: frozenset({"is_up", "response_time_ms"}),
}


class MonitorState(StrEnum):
    UP = "up"
    DOWN = "down"
    PENDING = "pending"
    PAUSED = "paused"
    UNKNOWN = "unknown"


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
CRYPTO_PROVIDERS = ("coinbase", "binance", "kraken", "coingecko")
DNS_RECORD_TYPES = ("A", "AAAA", "CNAME", "MX", "TXT", "NS")
COMPARISONS = (">", ">=", "<", "<=", "==", "!=")


@dataclass(frozen=True)
class KeywordAssertion:
    keyword: str
    absent: bool = False
    case_sensitive: bool = False


@dataclass(frozen=True)
class JsonPathAssertion:
    path: str
    operator: str  # one of COMPARISONS
    expected: str


@dataclass(frozen=True)
class WebsiteSpec:
    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""
    accepted_status_codes: tuple[tuple[int, int], ...] = ((200, 399),)
    follow_redirects: bool = True
    keyword: KeywordAssertion | None = None
    json_path: JsonPathAssertion | None = None
    cert_expiry_days: int = 0


@dataclass(frozen=True)
class CryptoPriceSpec:
    pair: str
    providers: tuple[str, ...] = CRYPTO_PROVIDERS


@dataclass(frozen=True)
class TcpSpec:
    host: str
    port: int


@dataclass(frozen=True)
class DnsSpec:
    name: str
    record_type: str = "A"
    expected_answers: tuple[str, ...] = ()
    resolver: str = ""


@dataclass(frozen=True)
class HeartbeatSpec:
    grace_period: timedelta = timedelta(minutes=5)
    cron: str = ""  # five fields, as crontab; empty: a ping every interval
    time_zone: str = ""  # IANA name cron is read in; empty: UTC


@dataclass(frozen=True)
class GrpcHealthSpec:
    target: str
    service: str = ""
    use_tls: bool = False


Spec = WebsiteSpec | CryptoPriceSpec | TcpSpec | DnsSpec | HeartbeatSpec | GrpcHealthSpec
KIND_OF: Mapping[type, MonitorKind] = {
    WebsiteSpec: MonitorKind.WEBSITE,
    CryptoPriceSpec: MonitorKind.CRYPTO_PRICE,
    TcpSpec: MonitorKind.TCP,
    DnsSpec: MonitorKind.DNS,
    HeartbeatSpec: MonitorKind.HEARTBEAT,
    GrpcHealthSpec: MonitorKind.GRPC_HEALTH,
}
SPEC_OF: Mapping[MonitorKind, type] = {kind: cls for cls, kind in KIND_OF.items()}


def kind_of(spec: Spec) -> MonitorKind:
    return KIND_OF[type(spec)]


class Placement(StrEnum):
    """Where a monitor's checks run: on the shared runners of its locations, or on a runner of its own (a pod on
    Kubernetes, with the monitor's secrets mounted from a Kubernetes Secret) that checks nothing else."""

    SHARED = "shared"
    DEDICATED = "dedicated"


@dataclass(frozen=True)
class MonitorDraft:
    """What a caller asks for; unset (None) values take their defaults."""

    spec: Spec | None
    display_name: str = ""
    interval: timedelta | None = None
    timeout: timedelta | None = None
    retries: int = 0
    locations: tuple[str, ...] = ()
    quorum: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    placement: Placement = Placement.SHARED


@dataclass(frozen=True)
class Monitor:
    id: str
    owner_id: str
    display_name: str
    spec: Spec
    interval: timedelta
    timeout: timedelta
    retries: int
    locations: tuple[str, ...]
    quorum: int
    paused: bool
    labels: Mapping[str, str]
    heartbeat_token: str
    create_time: datetime
    update_time: datetime
    placement: Placement = Placement.SHARED

    @property
    def kind(self) -> MonitorKind:
        return kind_of(self.spec)


@dataclass(frozen=True)
class ListingFilter:
    """Which monitors ListMonitors shows: in one of ``states`` (as read, so UNKNOWN once stale), of one of
    ``kinds``, with every label of ``labels``; an empty part lets every monitor through."""

    states: frozenset[MonitorState] = frozenset()
    kinds: frozenset[MonitorKind] = frozenset()
    labels: Mapping[str, str] = field(default_factory=dict)

    def admits_monitor(self, monitor: Monitor) -> bool:
        """Whether ``monitor`` passes the kind and label parts (its state is judged apart, once read)."""
        if self.kinds and monitor.kind not in self.kinds:
            return False
        return all(monitor.labels.get(key) == value for key, value in self.labels.items())

    def admits_status(self, status: MonitorStatus) -> bool:
        return not self.states or status.state in self.states


@dataclass(frozen=True)
class Limits:
    """Server-side rules a deployment may tune (MONITORS_MIN_INTERVAL_S, MONITORS_MAX_MONITORS_PER_USER)."""

    min_interval: timedelta = timedelta(seconds=10)
    max_monitors: int = 1000
    # Dedicated runners (placement DEDICATED): a pod each, so few per user, and only where the service starts
    # runners (MONITORS_RUNTIME=kubernetes).
    dedicated_runners: bool = False
    max_dedicated_monitors: int = 5


def is_location_name(text: str) -> bool:
    """Whether ``text`` may name a location: lower-case letters, digits and dashes (up to 32)."""
    return bool(_LOCATION.match(text))


def validate(draft: MonitorDraft, limits: Limits, prefix: str = "monitor") -> MonitorDraft:
    """The draft with defaults filled in; INVALID_ARGUMENT naming every invalid field."""
    bad = Violations()
    name = draft.display_name.strip()
    if len(name) > MAX_DISPLAY_NAME:
        bad.add(f"{prefix}.display_name", f"must be at most {MAX_DISPLAY_NAME} characters")
    if draft.spec is None:
        bad.add(f"{prefix}.spec", "is required: set one of website, crypto_price, tcp, dns, heartbeat, grpc_health")
    else:
        validate_spec(draft.spec, bad, f"{prefix}.spec")
    # Unset takes the default; an explicit 0s is refused below (timedelta(0) is falsy: `or` took it for unset).
    interval = DEFAULT_INTERVAL if draft.interval is None else draft.interval
    if interval <= timedelta(0):
        bad.add(f"{prefix}.interval", "must be positive")
    elif isinstance(draft.spec, HeartbeatSpec) and interval > MAX_HEARTBEAT_PERIOD:
        bad.add(f"{prefix}.interval", "must be at most 365 days for a heartbeat")
    elif interval > MAX_INTERVAL and not isinstance(draft.spec, HeartbeatSpec):
        bad.add(f"{prefix}.interval", "must be at most 24h (365 days for a heartbeat)")
    elif interval < limits.min_interval:
        seconds = int(limits.min_interval.total_seconds())
        bad.add(f"{prefix}.interval", f"this deployment checks at most every {seconds}s; ask for {seconds}s or more")
    timeout = draft.timeout
    if timeout is None:
        timeout = min(DEFAULT_TIMEOUT, interval) if interval > timedelta(0) else DEFAULT_TIMEOUT
    if timeout <= timedelta(0) or timeout > MAX_TIMEOUT:
        bad.add(f"{prefix}.timeout", "must be between 0s and 60s")
    elif timedelta(0) < interval < timeout and interval >= limits.min_interval:  # else min_interval says why
        bad.add(f"{prefix}.timeout", "must not be longer than the interval")
    if not 0 <= draft.retries <= MAX_RETRIES:
        bad.add(f"{prefix}.retries", f"must be between 0 and {MAX_RETRIES}")
    if len(draft.locations) > MAX_LOCATIONS:
        bad.add(f"{prefix}.locations", f"at most {MAX_LOCATIONS} locations")
    for i, location in enumerate(draft.locations[: MAX_LOCATIONS + 1]):
        if not _LOCATION.match(location):
            bad.add(f"{prefix}.locations[{i}]", "must be lower-case letters, digits and dashes (up to 32)")
    if len(set(draft.locations)) != len(draft.locations):
        bad.add(f"{prefix}.locations", "must not repeat a location")
    if not 0 <= draft.quorum <= len(draft.locations):
        bad.add(f"{prefix}.quorum", "must be between 0 (a majority) and the number of locations")
    if draft.placement is Placement.DEDICATED:
        if not limits.dedicated_runners:
            bad.add(
                f"{prefix}.placement",
                "this deployment runs no dedicated runners (it needs MONITORS_RUNTIME=kubernetes)",
            )
        elif isinstance(draft.spec, HeartbeatSpec):
            bad.add(f"{prefix}.placement", "a heartbeat monitor runs on no runner: its pings come to the service")
        elif len(draft.locations) > 1:
            bad.add(f"{prefix}.locations", "a dedicated monitor runs in one place: name one location at most")
    if len(draft.labels) > MAX_LABELS:
        bad.add(f"{prefix}.labels", f"at most {MAX_LABELS} labels")
    else:
        for key, value in draft.labels.items():
            if not _LABEL_KEY.match(key) or len(value) > MAX_LABEL_VALUE:
                bad.add(
                    f"{prefix}.labels",
                    f"label {key[:40]!r}: keys are lower-case identifiers, values up to {MAX_LABEL_VALUE} chars",
                )
    if not bad.found and (size := encoded_size(draft)) > MAX_MONITOR_BYTES:
        bad.add(prefix or "spec", f"is {size} bytes encoded; a monitor may be at most {MAX_MONITOR_BYTES}")
    bad.raise_any()
    assert draft.spec is not None
    return replace(
        draft,
        display_name=name or default_name(draft.spec),
        interval=interval,
        timeout=timeout,
    )


def validate_spec(spec: Spec, bad: Violations, path: str) -> None:
    match spec:
        case WebsiteSpec():
            _validate_website(spec, bad, f"{path}.website")
        case CryptoPriceSpec():
            p = f"{path}.crypto_price"
            if not _PAIR.match(spec.pair):
                bad.add(f"{p}.pair", "must be BASE-QUOTE, such as BTC-USD (2 to 10 letters or digits each)")
            if len(spec.providers) > len(CRYPTO_PROVIDERS):
                bad.add(f"{p}.providers", f"at most {len(CRYPTO_PROVIDERS)} providers")
                return
            for i, provider in enumerate(spec.providers):
                if provider not in CRYPTO_PROVIDERS:
                    bad.add(f"{p}.providers[{i}]", f"must be one of {', '.join(CRYPTO_PROVIDERS)}")
            if len(set(spec.providers)) != len(spec.providers):
                bad.add(f"{p}.providers", "must not repeat a provider")
        case TcpSpec():
            p = f"{path}.tcp"
            _validate_host(spec.host, bad, f"{p}.host")
            if not 1 <= spec.port <= 65535:
                bad.add(f"{p}.port", "must be between 1 and 65535")
        case DnsSpec():
            p = f"{path}.dns"
            _validate_host(spec.name, bad, f"{p}.name")
            if spec.record_type not in DNS_RECORD_TYPES:
                bad.add(f"{p}.record_type", f"must be one of {', '.join(DNS_RECORD_TYPES)}")
            if len(spec.expected_answers) > MAX_EXPECTED_ANSWERS:
                bad.add(f"{p}.expected_answers", f"at most {MAX_EXPECTED_ANSWERS} answers")
            else:
                for i, answer in enumerate(spec.expected_answers):
                    if not answer.strip() or len(answer) > MAX_EXPECTED_ANSWER:
                        bad.add(f"{p}.expected_answers[{i}]", f"must be 1 to {MAX_EXPECTED_ANSWER} characters")
            if spec.resolver:
                host, _, port = (
                    spec.resolver.rpartition(":") if spec.resolver.count(":") == 1 else (spec.resolver, "", "")
                )
                _validate_host(host, bad, f"{p}.resolver")
                if port and not (port.isdigit() and 1 <= int(port) <= 65535):
                    bad.add(f"{p}.resolver", "port must be between 1 and 65535")
        case HeartbeatSpec():
            if not timedelta(0) <= spec.grace_period <= MAX_HEARTBEAT_PERIOD:
                bad.add(f"{path}.heartbeat.grace_period", "must be between 0s and 365 days")
            _validate_schedule(spec, bad, f"{path}.heartbeat")
        case GrpcHealthSpec():
            p = f"{path}.grpc_health"
            host, _, port = spec.target.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                bad.add(f"{p}.target", "must be host:port")
            else:
                _validate_host(host.strip("[]"), bad, f"{p}.target")
            if len(spec.service) > MAX_GRPC_SERVICE:
                bad.add(f"{p}.service", f"must be at most {MAX_GRPC_SERVICE} characters")


def _validate_schedule(spec: HeartbeatSpec, bad: Violations, path: str) -> None:
    if spec.time_zone and not spec.cron:
        bad.add(f"{path}.time_zone", "is only used with cron: set cron too, or leave time_zone empty")
    if spec.cron:
        if len(spec.cron) > 200:
            bad.add(f"{path}.cron", "must be at most 200 characters")
        else:
            try:
                CronSim(spec.cron, datetime(2000, 1, 1))
            except CronSimError as error:
                bad.add(f"{path}.cron", f"is not a cron expression of five fields ({error}), such as '0 3 * * *'")
    if spec.time_zone:
        try:
            schedule_zone(spec)
        except (ZoneInfoNotFoundError, ValueError):
            bad.add(f"{path}.time_zone", "must be an IANA time zone name, such as Europe/Paris or UTC")


def schedule_zone(spec: HeartbeatSpec) -> tzinfo:
    """The zone a heartbeat's cron is read in. ZoneInfoNotFoundError or ValueError for a bad name."""
    if not spec.time_zone or spec.time_zone == "UTC":
        return UTC
    if len(spec.time_zone) > 64 or spec.time_zone.startswith("/") or ".." in spec.time_zone:
        raise ValueError(spec.time_zone)  # ZoneInfo would read it as a path
    return ZoneInfo(spec.time_zone)


def next_ping_due(spec: HeartbeatSpec, interval: timedelta, since: datetime) -> datetime:
    """When the next ping is expected after ``since`` (aware): ``since + interval``, or with a cron
    schedule its first time after ``since`` in the schedule's zone. The monitor is DOWN once this plus the
    grace period has passed."""
    if not spec.cron:
        return since + interval
    zone = schedule_zone(spec)
    local = since.astimezone(zone)
    # CronSim wants the zone on the start time and returns the following times in it (DST handled as cron).
    due: datetime = next(CronSim(spec.cron, local))
    return due.astimezone(UTC)


def _validate_host(host: str, bad: Violations, path: str) -> None:
    if not host:
        bad.add(path, "is required")
        return
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.match(host):
            bad.add(path, "must be a host name or an IP address")


def split_url(url: str) -> SplitResult | None:
    """``url`` split into its parts, or None where it cannot be (an unclosed ``[`` around an IPv6 host)."""
    try:
        return urlsplit(url)
    except ValueError:
        return None


def _validate_website(spec: WebsiteSpec, bad: Violations, p: str) -> None:
    url = SECRET_REFERENCE.sub("secret", spec.url)
    parts = split_url(url)
    if parts is None:
        bad.add(f"{p}.url", "is not a valid URL (an unclosed [ around an IPv6 address?)")
    elif _URL_FORBIDDEN.search(spec.url):
        bad.add(f"{p}.url", "must not contain spaces or control characters (percent-encode them: %20, %0A)")
    elif parts.scheme not in ("http", "https"):
        bad.add(f"{p}.url", "must be an http:// or https:// URL")
    elif not parts.hostname:
        bad.add(f"{p}.url", "must name a host")
    elif len(spec.url) > MAX_URL:
        bad.add(f"{p}.url", f"must be at most {MAX_URL} characters")
    else:
        try:
            parts.port  # noqa: B018 - raises for a port out of range
        except ValueError:
            bad.add(f"{p}.url", "has an invalid port")
        if parts.username or parts.password:
            bad.add(f"{p}.url", "must not carry credentials; use a header with {{secret:NAME}}")
    if spec.method not in HTTP_METHODS:
        bad.add(f"{p}.method", f"must be one of {', '.join(HTTP_METHODS)}")
    if len(spec.headers) > MAX_HEADERS:
        bad.add(f"{p}.headers", f"at most {MAX_HEADERS} headers")
    elif sum(len(name) + len(value.encode()) for name, value in spec.headers.items()) > MAX_HEADERS_BYTES:
        bad.add(f"{p}.headers", f"at most {MAX_HEADERS_BYTES // 1024} KiB of names and values together")
    else:
        for name, value in spec.headers.items():
            if not _HEADER_NAME.match(name) or _HEADER_VALUE_FORBIDDEN.search(value) or len(value) > MAX_HEADER_VALUE:
                bad.add(f"{p}.headers", f"header {name[:40]!r} is not a valid HTTP header")
    if len(spec.body) > MAX_BODY:
        bad.add(f"{p}.body", f"must be at most {MAX_BODY // 1024} KiB")
    if len(spec.accepted_status_codes) > MAX_STATUS_RANGES:
        bad.add(f"{p}.accepted_status_codes", f"at most {MAX_STATUS_RANGES} ranges")
    else:
        for i, (low, high) in enumerate(spec.accepted_status_codes):
            if not 100 <= low <= high <= 599:
                bad.add(f"{p}.accepted_status_codes[{i}]", "must be a range within 100-599 with min <= max")
    if spec.keyword is not None and not 1 <= len(spec.keyword.keyword) <= MAX_KEYWORD:
        bad.add(f"{p}.keyword.keyword", f"must be 1 to {MAX_KEYWORD} characters")
    if spec.json_path is not None:
        if not spec.json_path.path.startswith("$"):
            bad.add(f"{p}.json_path.path", "must start with $, such as $.status")
        elif len(spec.json_path.path) > MAX_JSON_PATH:
            bad.add(f"{p}.json_path.path", f"must be at most {MAX_JSON_PATH} characters")
        if spec.json_path.operator not in COMPARISONS:
            bad.add(f"{p}.json_path.operator", "is required")
        if len(spec.json_path.expected) > MAX_JSON_EXPECTED:
            bad.add(f"{p}.json_path.expected", f"must be at most {MAX_JSON_EXPECTED} characters")
    if not 0 <= spec.cert_expiry_days <= 365:
        bad.add(f"{p}.cert_expiry_days", "must be between 0 and 365")


def encoded_size(draft: MonitorDraft) -> int:
    """About what ``draft`` takes as a protobuf message: every text's UTF-8 bytes, and 8 bytes for each field,
    number, map entry or list item (tags, lengths, varints: an upper bound for the short fields here)."""

    def size(value: object) -> int:
        match value:
            case str():
                return 8 + len(value.encode("utf-8", "replace"))
            case Mapping():
                return 8 + sum(size(k) + size(v) for k, v in value.items())
            case list() | tuple():
                return 8 + sum(size(item) for item in value)
            case _:
                return 8

    spec = asdict(draft.spec) if draft.spec is not None else {}
    return size(spec) + size(draft.display_name) + size(draft.locations) + size(dict(draft.labels)) + 5 * 8


def default_name(spec: Spec) -> str:
    match spec:
        case WebsiteSpec():
            parts = split_url(SECRET_REFERENCE.sub("secret", spec.url))
            return (parts.hostname if parts else None) or spec.url
        case CryptoPriceSpec():
            return f"{spec.pair} price"
        case TcpSpec():
            return f"tcp {spec.host}:{spec.port}"
        case DnsSpec():
            return f"dns {spec.record_type} {spec.name}"
        case HeartbeatSpec():
            return "heartbeat"
        case GrpcHealthSpec():
            return f"grpc {spec.target}"
    raise AssertionError(spec)


def check_field(kind: MonitorKind, field_name: str, path: str = "field") -> None:
    """A field the monitor's kind writes, or INVALID_ARGUMENT listing the ones it does."""
    if field_name not in FIELDS[kind]:
        raise InvalidArgument(path, f"a {kind.value} monitor writes {', '.join(sorted(FIELDS[kind]))}")


def secret_names(spec: Spec) -> set[str]:
    """The secrets a spec refers to with {{secret:NAME}}."""
    texts: Sequence[str] = []
    if isinstance(spec, WebsiteSpec):
        texts = [spec.url, spec.body, *spec.headers.values()]
    return {m.group(1) for text in texts for m in SECRET_REFERENCE.finditer(text)}


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome."""

    monitor_id: str
    time: datetime
    is_up: bool
    duration: timedelta
    error_class: str = ""  # dns, connect, tls, timeout, status, assertion, blocked, provider, internal
    message: str = ""
    fields: Mapping[str, float] = field(default_factory=dict)
    location: str = ""
    runner_id: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LocationResult:
    """The latest result from one location of a multi-location monitor, and that location's failure run."""

    result: CheckResult
    failures: int


@dataclass(frozen=True)
class MonitorStatus:
    monitor_id: str
    state: MonitorState
    last_check_time: datetime | None = None
    last_result: CheckResult | None = None
    runner_id: str = ""
    location: str = ""
    consecutive_failures: int = 0
    state_change_time: datetime | None = None
    # Multi-location monitors only: location -> its latest result.
    location_results: Mapping[str, LocationResult] = field(default_factory=dict)


def next_status(monitor: Monitor, previous: MonitorStatus, result: CheckResult) -> MonitorStatus:
    """The status after ``result``. A location is failing once its consecutive failures exceed the monitor's
    retries (PENDING before). With one location that is the monitor's state; with several, the monitor is
    DOWN only while a quorum of them is failing, so one location's network trouble does not page anyone."""
    if len(monitor.locations) > 1:
        return _next_quorum_status(monitor, previous, result)
    failures = 0 if result.is_up else previous.consecutive_failures + 1
    if result.is_up:
        state = MonitorState.UP
    elif failures > monitor.retries:
        state = MonitorState.DOWN
    else:
        state = previous.state if previous.state in (MonitorState.DOWN,) else MonitorState.PENDING
    return _status(monitor, previous, result, state, failures, {})


def _next_quorum_status(monitor: Monitor, previous: MonitorStatus, result: CheckResult) -> MonitorStatus:
    before = previous.location_results.get(result.location)
    failures = 0 if result.is_up else (before.failures if before else 0) + 1
    results = {
        location: entry
        for location, entry in {**previous.location_results, result.location: LocationResult(result, failures)}.items()
        if location in monitor.locations  # a location the monitor no longer asks for has no say
    }
    absent = _absent_locations(monitor, results, result.time)
    failing = sum(
        1 for location, entry in results.items() if entry.failures > monitor.retries and location not in absent
    )
    # The default quorum is a majority of the locations present: one with no runner (or whose runners are gone)
    # can never corroborate, and a two-location monitor with one of them unserved never went DOWN, however
    # long the other saw it failing. An explicit quorum is the user's, and stands.
    present = len(monitor.locations) - len(absent)
    needed = monitor.quorum or max(1, present // 2 + 1)
    if failing >= needed:
        state = MonitorState.DOWN
    elif any(entry.result.is_up for entry in results.values()):
        state = MonitorState.UP
    else:
        state = previous.state if previous.state == MonitorState.DOWN else MonitorState.PENDING
    return _status(monitor, previous, result, state, failures, results)


# A location counts as absent once it has sent nothing for this many intervals (and the monitor has been
# unchanged that long, so a new or just-edited monitor waits for every location's first results).
ABSENT_AFTER_INTERVALS = 3


def _absent_locations(monitor: Monitor, results: Mapping[str, LocationResult], now: datetime) -> set[str]:
    horizon = now - monitor.interval * ABSENT_AFTER_INTERVALS
    if monitor.update_time > horizon:
        return set()
    return {
        location for location in monitor.locations if location not in results or results[location].result.time < horizon
    }


def _status(
    monitor: Monitor,
    previous: MonitorStatus,
    result: CheckResult,
    state: MonitorState,
    failures: int,
    location_results: Mapping[str, LocationResult],
) -> MonitorStatus:
    changed = state != previous.state or previous.state_change_time is None
    return MonitorStatus(
        monitor_id=monitor.id,
        state=state,
        last_check_time=result.time,
        last_result=result,
        runner_id=result.runner_id,
        location=result.location,
        consecutive_failures=failures,
        state_change_time=result.time if changed else previous.state_change_time,
        location_results=location_results,
    )


# --- heartbeat pings (the ping endpoint's, kept for ListHeartbeatPings) ---


class PingKind(StrEnum):
    SUCCESS = "success"
    FAIL = "fail"
    START = "start"


@dataclass(frozen=True)
class Ping:
    """What a ping said, as the HTTP endpoint received it."""

    kind: PingKind = PingKind.SUCCESS
    exit_status: int | None = None
    body: str = ""
    body_truncated: bool = False
    method: str = "GET"
    remote_address: str = ""
    user_agent: str = ""


@dataclass(frozen=True)
class PingRecord:
    time: datetime
    ping: Ping
    run_time: timedelta | None = None  # of a success or failure that followed a start
