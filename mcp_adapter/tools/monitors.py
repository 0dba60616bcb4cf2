"""Monitor tools: suggest, create (with its suggested alert rules), list, get, update, pause, resume, delete,
run a check now, status, a heartbeat's latest pings, and the deployment's status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Annotated, Literal
from urllib.parse import urlsplit

from google.protobuf import field_mask_pb2
from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from mcp_adapter.errors import AdapterError, Subject
from mcp_adapter.toolbox import AdapterState, ToolContext, more, reply, state_of, tool
from mcp_adapter.tools.rules import RuleView, condition_arguments, rule_view, scope_text, selector_matches
from mcp_adapter.units import parse_duration
from mcp_adapter.views import (
    CheckView,
    MonitorView,
    check_view,
    condition_text,
    enum_name,
    enum_value,
    heartbeat_text,
    iso,
    monitor_kind,
    monitor_view,
    span,
    to_duration,
)
from monitors.v1 import alert_service_pb2, common_pb2, monitor_service_pb2

Kind = Literal["website", "crypto_price", "tcp", "dns", "heartbeat", "grpc_health"]
HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
RecordType = Literal["A", "AAAA", "CNAME", "MX", "TXT", "NS"]
Provider = Literal["coinbase", "binance", "kraken", "coingecko"]
MonitorId = Annotated[
    str, Field(min_length=1, max_length=100, description="A monitor id (mon_...) from list_monitors.")
]
DurationText = Annotated[str, Field(max_length=32, description='A duration such as "30s", "5m", "1h".')]


def monitor_subject(monitor_id: str) -> Subject:
    return Subject("monitor", monitor_id, "list_monitors")


def normalize_pair(text: str) -> str:
    """ "btc" -> "BTC-USD", "eth/eur" -> "ETH-EUR"."""
    pair = text.strip().upper().replace("/", "-").replace(" ", "")
    return pair if "-" in pair else f"{pair}-USD"


def status_ranges(text: str) -> list[common_pb2.StatusCodeRange]:
    """ "200-299,301" -> two ranges."""
    ranges = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        try:
            ranges.append(common_pb2.StatusCodeRange(min=int(low), max=int(high or low)))
        except ValueError:
            raise AdapterError(f"expected_status: cannot read {part!r}; use forms like 200-299 or 200,301") from None
    return ranges


class SpecOptions(BaseModel):
    method: HttpMethod | None = None
    headers: dict[str, str] | None = None
    body: str | None = None
    expected_status: str | None = None
    keyword: str | None = None
    keyword_absent: bool = False
    cert_expiry_days: int | None = None
    providers: list[Provider] | None = None
    record_type: RecordType | None = None
    expected_answers: list[str] | None = None
    resolver: str | None = None
    grace_period: str | None = None
    cron: str | None = None
    time_zone: str | None = None
    grpc_service: str | None = None
    use_tls: bool = False


def build_spec(kind: Kind, target: str, options: SpecOptions) -> common_pb2.MonitorSpec:
    """The MonitorSpec for ``kind`` watching ``target``."""
    spec = common_pb2.MonitorSpec()
    if kind == "website":
        url = target.strip()
        spec.website.url = url if "://" in url else f"https://{url}"
        if options.method:
            spec.website.method = enum_value(common_pb2.HttpMethod, options.method, "HTTP_METHOD_")
        spec.website.headers.update(options.headers or {})
        spec.website.body = options.body or ""
        if options.expected_status:
            spec.website.accepted_status_codes.extend(status_ranges(options.expected_status))
        if options.keyword:
            spec.website.keyword.keyword = options.keyword
            spec.website.keyword.absent = options.keyword_absent
        spec.website.cert_expiry_days = options.cert_expiry_days or 0
    elif kind == "crypto_price":
        spec.crypto_price.pair = normalize_pair(target)
        spec.crypto_price.providers.extend(
            enum_value(common_pb2.CryptoProvider, p, "CRYPTO_PROVIDER_") for p in options.providers or []
        )
    elif kind == "tcp":
        host, _, port = target.strip().rpartition(":")
        if not host or not port.isdigit():
            raise AdapterError(f"target: a tcp monitor needs host:port, got {target!r}")
        spec.tcp.host, spec.tcp.port = host.strip("[]"), int(port)
    elif kind == "dns":
        spec.dns.name = target.strip()
        if options.record_type:
            spec.dns.record_type = enum_value(common_pb2.DnsRecordType, options.record_type, "DNS_RECORD_TYPE_")
        spec.dns.expected_answers.extend(options.expected_answers or [])
        spec.dns.resolver = options.resolver or ""
    elif kind == "heartbeat":
        spec.heartbeat.SetInParent()
        if options.grace_period:
            spec.heartbeat.grace_period.CopyFrom(to_duration(parse_duration(options.grace_period, "grace_period")))
        spec.heartbeat.cron = options.cron or ""
        spec.heartbeat.time_zone = options.time_zone or ""
    else:
        spec.grpc_health.target = target.strip()
        spec.grpc_health.service = options.grpc_service or ""
        spec.grpc_health.use_tls = options.use_tls
    return spec


def retarget(spec: common_pb2.MonitorSpec, target: str) -> common_pb2.MonitorSpec:
    """``spec`` watching ``target`` instead, its other settings kept."""
    kind = monitor_kind(spec)
    if kind == "website":
        spec.website.url = target if "://" in target else f"https://{target}"
    elif kind == "crypto_price":
        spec.crypto_price.pair = normalize_pair(target)
    elif kind == "tcp":
        spec.tcp.CopyFrom(build_spec("tcp", target, SpecOptions()).tcp)
    elif kind == "dns":
        spec.dns.name = target
    elif kind == "grpc_health":
        spec.grpc_health.target = target
    else:
        raise AdapterError("target: a heartbeat monitor has no target to change")
    return spec


def change_website(spec: common_pb2.MonitorSpec, first: str, options: SpecOptions) -> None:
    """The website settings ``options`` sets, changed in ``spec`` (``first`` names one, for the error)."""
    kind = monitor_kind(spec)
    if kind != "website":
        raise AdapterError(f"{first}: only a website monitor has it; this monitor is a {kind} monitor")
    website = spec.website
    fields = options.model_fields_set
    if options.method:
        website.method = enum_value(common_pb2.HttpMethod, options.method, "HTTP_METHOD_")
    if options.headers is not None:
        website.headers.clear()
        website.headers.update(options.headers)
    if options.body is not None:
        website.body = options.body
    if options.expected_status is not None:
        del website.accepted_status_codes[:]
        website.accepted_status_codes.extend(status_ranges(options.expected_status) if options.expected_status else [])
    if options.keyword is not None:
        website.keyword.keyword = options.keyword
        if not options.keyword:
            website.ClearField("keyword")
    if "keyword_absent" in fields and website.keyword.keyword:
        website.keyword.absent = options.keyword_absent
    if options.cert_expiry_days is not None:
        website.cert_expiry_days = options.cert_expiry_days


def change_heartbeat(
    spec: common_pb2.MonitorSpec, first: str, cron: str | None, time_zone: str | None, grace_period: str | None
) -> None:
    """The heartbeat settings given, changed in ``spec`` (``first`` names one, for the error)."""
    kind = monitor_kind(spec)
    if kind != "heartbeat":
        raise AdapterError(f"{first}: only a heartbeat monitor has it; this monitor is a {kind} monitor")
    heartbeat = spec.heartbeat
    if cron is not None:
        heartbeat.cron = cron.strip()
        if not heartbeat.cron and time_zone is None:
            heartbeat.time_zone = ""  # a zone is only read with a cron schedule
    if time_zone is not None:
        heartbeat.time_zone = time_zone.strip()
    if grace_period is not None:
        heartbeat.grace_period.CopyFrom(to_duration(parse_duration(grace_period, "grace_period")))


async def get_monitor_message(state: AdapterState, monitor_id: str) -> monitor_service_pb2.Monitor:
    response = await state.clients.call(
        state.clients.monitors.GetMonitor,
        monitor_service_pb2.GetMonitorRequest(id=monitor_id),
        token=state.token(),
        subject=monitor_subject(monitor_id),
    )
    return response.monitor


async def all_monitors(state: AdapterState) -> list[monitor_service_pb2.Monitor]:
    """Every monitor of the caller's, through all pages."""
    monitors: list[monitor_service_pb2.Monitor] = []
    page_token = ""
    while True:
        response = await state.clients.call(
            state.clients.monitors.ListMonitors,
            monitor_service_pb2.ListMonitorsRequest(page_size=1000, page_token=page_token),
            token=state.token(),
        )
        monitors.extend(response.monitors)
        page_token = response.next_page_token
        if not page_token:
            return monitors


def monitor_line(monitor: monitor_service_pb2.Monitor) -> str:
    """ "Shop (mon_1, https://shop.example)": how an error lists a candidate."""
    return f"{monitor.display_name} ({monitor.id}, {monitor_view(monitor).target})"


def resolve_monitor(
    monitors: list[monitor_service_pb2.Monitor],
    text: str,
    argument: str,
    matches: Callable[[monitor_service_pb2.Monitor, str], bool],
    *,
    part_of_name: bool = True,
) -> monitor_service_pb2.Monitor | None:
    """The one monitor of ``monitors`` that ``text`` names: an exact id or exact name (case aside) wins, else the
    only one ``matches`` (or, with ``part_of_name``, whose name contains the text). None when none does; when
    several do, an error that lists them and asks for one (``argument`` is where the caller passes the id)."""
    wanted = text.strip()
    if not wanted:
        return None
    exact = [m for m in monitors if m.id == wanted] or [
        m for m in monitors if m.display_name.strip().lower() == wanted.lower()
    ]
    found = exact or [
        m for m in monitors if matches(m, wanted) or (part_of_name and wanted.lower() in m.display_name.lower())
    ]
    if len(found) > 1:
        listed = "; ".join(monitor_line(m) for m in found[:10]) + more(10, len(found))
        raise AdapterError(
            f"{argument}: {text!r} matches {len(found)} monitors: {listed}. Ask the person which one they mean, then "
            f"call again with its id as {argument}"
        )
    return found[0] if found else None


class SuggestedRule(BaseModel):
    name: str
    condition: str
    severity: str
    for_duration: str | None = None
    rationale: str


class Suggestion(BaseModel):
    name: str
    kind: str
    target: str
    interval: str | None = None
    rationale: str
    alert_rules: list[SuggestedRule]


class Suggestions(BaseModel):
    suggestions: list[Suggestion]


def suggested_rule(rule: common_pb2.SuggestedAlertRule) -> SuggestedRule:
    return SuggestedRule(
        name=rule.display_name,
        condition=condition_text(rule.condition),
        severity=enum_name(common_pb2.Severity, rule.severity, "SEVERITY_"),
        for_duration=span(rule.for_duration),
        rationale=rule.rationale,
    )


@tool(read_only=True)
async def suggest_monitors(
    ctx: ToolContext,
    text: Annotated[str, Field(max_length=2000, description='What the person asked, e.g. "watch my shop".')] = "",
    url: Annotated[str, Field(max_length=2000, description="A URL or host name to watch.")] = "",
    symbol: Annotated[str, Field(max_length=40, description="A coin symbol or pair: BTC, ETH-EUR.")] = "",
) -> Annotated[CallToolResult, Suggestions]:
    """Turn what the person wants watched (free text, a URL, or a coin symbol) into ready-to-create monitors,
    each with the alert rules worth having: websites, coins, ports ("db.example.com:5432"), gRPC servers,
    DNS records ("the DNS record of X still points at Y") and jobs ("my nightly backup job", a heartbeat).
    Use it before create_monitor when unsure of the kind or settings;
    then call create_monitor with the suggested kind and target, add_suggested_alerts=true and the same text as
    request (so the rules suggested from it, such as a price threshold the person named, are the ones created)."""
    state = state_of(ctx)
    if not (text or url or symbol):
        raise AdapterError("give at least one of text, url or symbol")
    response = await state.clients.call(
        state.clients.monitors.SuggestMonitors,
        monitor_service_pb2.SuggestMonitorsRequest(text=text, url=url, symbol=symbol),
        token=state.token(),
    )
    suggestions = [
        Suggestion(
            name=s.monitor.display_name,
            kind=monitor_kind(s.monitor.spec),
            target=monitor_view(s.monitor).target,
            interval=span(s.monitor.interval),
            rationale=s.rationale,
            alert_rules=[suggested_rule(r) for r in s.alert_rules],
        )
        for s in response.suggestions
    ]
    names = ", ".join(f"{s.kind} {s.target}" for s in suggestions) or "nothing"
    return reply(f"{len(suggestions)} suggestion(s): {names}.", Suggestions(suggestions=suggestions))


class CreatedMonitor(BaseModel):
    monitor: MonitorView
    alert_rules: list[RuleView] = []
    alert_rules_note: str | None = None
    alert_rules_error: str | None = None
    alert_rules_not_created: list[str] | None = None  # the create_alert_rule call of each


@tool()
async def create_monitor(
    ctx: ToolContext,
    kind: Annotated[Kind, Field(description="website, crypto_price, tcp, dns, heartbeat or grpc_health.")],
    target: Annotated[
        str,
        Field(
            max_length=2000,
            description="What to watch: a URL (website), a pair or symbol such as BTC-USD or BTC (crypto_price), "
            "host:port (tcp, grpc_health), a domain name (dns); ignored for heartbeat.",
        ),
    ] = "",
    name: Annotated[str | None, Field(max_length=200, description="Display name; derived if omitted.")] = None,
    interval: Annotated[str | None, Field(max_length=32, description='Time between checks, e.g. "1m".')] = None,
    timeout: Annotated[str | None, Field(max_length=32, description='Per-check timeout, e.g. "10s".')] = None,  # noqa: ASYNC109
    retries: Annotated[int | None, Field(ge=0, le=10, description="Failures before DOWN (0: the first).")] = None,
    locations: Annotated[
        list[str] | None,
        Field(
            description="Runner locations to check from (empty: any runner); each must be one runners serve,"
            " as get_deployment_status lists."
        ),
    ] = None,
    labels: Annotated[dict[str, str] | None, Field(description='Labels, e.g. {"team": "web"}.')] = None,
    method: HttpMethod | None = None,
    headers: Annotated[dict[str, str] | None, Field(description="Website request headers; {{secret:NAME}} ok.")] = None,
    body: Annotated[str | None, Field(max_length=65536, description="Website request body.")] = None,
    expected_status: Annotated[str | None, Field(description='Status codes that count as up: "200-299,301".')] = None,
    keyword: Annotated[str | None, Field(max_length=1000, description="Text the page must contain.")] = None,
    keyword_absent: Annotated[bool, Field(description="The keyword must NOT appear instead.")] = False,
    cert_expiry_days: Annotated[
        int | None, Field(ge=0, le=365, description="DOWN when the cert expires sooner.")
    ] = None,
    providers: Annotated[list[Provider] | None, Field(description="Crypto price providers, in fallback order.")] = None,
    record_type: RecordType | None = None,
    expected_answers: Annotated[list[str] | None, Field(description="DNS: an answer must be one of these.")] = None,
    resolver: Annotated[str | None, Field(description="DNS resolver host[:port].")] = None,
    grace_period: Annotated[str | None, Field(description='Heartbeat: extra time allowed, e.g. "5m".')] = None,
    cron: Annotated[
        str | None,
        Field(max_length=200, description='Heartbeat: a cron schedule such as "0 3 * * *" instead of an interval.'),
    ] = None,
    time_zone: Annotated[
        str | None, Field(max_length=64, description='Heartbeat: the IANA zone cron is read in, e.g. "Europe/Paris".')
    ] = None,
    grpc_service: Annotated[str | None, Field(description="gRPC health: service name to ask about.")] = None,
    use_tls: Annotated[bool, Field(description="gRPC health: connect with TLS.")] = False,
    add_suggested_alerts: Annotated[
        bool, Field(description="Also create the alert rules suggest_monitors recommends for it.")
    ] = False,
    request: Annotated[
        str | None,
        Field(
            max_length=2000,
            description='With add_suggested_alerts: what the person asked, as given to suggest_monitors ("alert me '
            'if Bitcoin goes above $70,000"), so the rules suggested from it are created (price > 70000).',
        ),
    ] = None,
) -> Annotated[CallToolResult, CreatedMonitor]:
    """Create a monitor and start checking it: a website (uptime, latency), a crypto price, a TCP port, a DNS
    name, a heartbeat (the job calls the returned heartbeat_url) or a gRPC health check. Returns the monitor with
    its id (use it with the other tools); with add_suggested_alerts=true also its recommended alert rules
    (progress is reported per step). Invalid settings come back naming the field: correct it and call again.
    To store a password or token for headers, call store_secret first and write {{secret:NAME}}."""
    state = state_of(ctx)
    options = SpecOptions(
        method=method,
        headers=headers,
        body=body,
        expected_status=expected_status,
        keyword=keyword,
        keyword_absent=keyword_absent,
        cert_expiry_days=cert_expiry_days,
        providers=providers,
        record_type=record_type,
        expected_answers=expected_answers,
        resolver=resolver,
        grace_period=grace_period,
        cron=cron,
        time_zone=time_zone,
        grpc_service=grpc_service,
        use_tls=use_tls,
    )
    if kind != "heartbeat" and not target.strip():
        raise AdapterError(f"target: a {kind} monitor needs a target (see the argument's description)")
    monitor = monitor_service_pb2.Monitor(
        display_name=name or "",
        spec=build_spec(kind, target, options),
        retries=retries or 0,
        locations=locations or [],
        labels=labels or {},
    )
    if interval:
        monitor.interval.CopyFrom(to_duration(parse_duration(interval, "interval")))
    if timeout:
        monitor.timeout.CopyFrom(to_duration(parse_duration(timeout, "timeout")))
    steps = 1 + (2 if add_suggested_alerts else 0)
    response = await state.clients.call(
        state.clients.monitors.CreateMonitor,
        monitor_service_pb2.CreateMonitorRequest(monitor=monitor),
        token=state.token(),
    )
    created = CreatedMonitor(monitor=monitor_view(response.monitor))
    await ctx.report_progress(1, steps, f"created monitor {response.monitor.id}")
    threshold_made = False
    if add_suggested_alerts:
        threshold_made = await _create_suggested_rules(ctx, state, response.monitor, created, steps, request or "")
    summary = f"Created {kind} monitor {created.monitor.id} ({created.monitor.name}) watching {created.monitor.target}."
    if kind == "heartbeat":
        summary = f"Created monitor {created.monitor.id} ({created.monitor.name}): {heartbeat_text(created.monitor)}."
    if created.alert_rules:
        names = ", ".join(f'"{rule.name}"' for rule in created.alert_rules)
        summary += f" Added {len(created.alert_rules)} alert rule(s): {names}."
    if created.alert_rules_note:
        summary += f" {created.alert_rules_note[0].upper()}{created.alert_rules_note[1:]}."
    if created.alert_rules_error:
        summary += f" Alert rules were not added: {created.alert_rules_error}"
    if add_suggested_alerts and kind == "crypto_price" and not request and not threshold_made:
        summary += (
            " No price threshold was created, as none was named: for one the person asked for, call "
            f'create_alert_rule(condition="threshold", monitor_id="{created.monitor.id}", operator=">", value=...) '
            "(or pass their words as request)."
        )
    if created.alert_rules_not_created:
        calls = "; ".join(created.alert_rules_not_created)
        summary += f" Not created: {len(created.alert_rules_not_created)} suggested rule(s); to add them call {calls}."
    return reply(summary, created)


async def _create_suggested_rules(
    ctx: ToolContext,
    state: AdapterState,
    monitor: monitor_service_pb2.Monitor,
    created: CreatedMonitor,
    steps: int,
    asked: str,
) -> bool:
    """Creates the rules SuggestMonitors suggests for ``monitor``; whether a threshold rule is among them."""
    kind = monitor_kind(monitor.spec)
    # The person's words come along: the rules SuggestMonitors makes of them (a price they named) are the ones
    # suggest_monitors showed.
    request = monitor_service_pb2.SuggestMonitorsRequest(text=asked.strip())
    if kind == "crypto_price":
        request.symbol = monitor.spec.crypto_price.pair
    elif kind == "website":
        request.url = monitor.spec.website.url
    else:
        request.text = f"{request.text} {kind} {created.monitor.target}".strip()
    try:
        suggestions = await state.clients.call(state.clients.monitors.SuggestMonitors, request, token=state.token())
    except AdapterError as error:
        created.alert_rules_error = f"no suggestions: {error}"
        return False
    of_kind = [s for s in suggestions.suggestions if monitor_kind(s.monitor.spec) == kind]
    suggested = next(
        (s for s in of_kind if monitor_view(s.monitor).target == created.monitor.target),
        of_kind[0] if of_kind else None,
    )
    rules: list[common_pb2.SuggestedAlertRule] = list(suggested.alert_rules) if suggested is not None else []
    await ctx.report_progress(2, steps, f"{len(rules)} alert rule(s) suggested")
    try:
        if any(rule.condition.WhichOneof("kind") == "monitor_down" for rule in rules):
            covering = await covering_down_rule(state, dict(monitor.labels))
            if covering is not None:
                # One outage would raise two alerts: the account-wide rule already covers this monitor.
                rules = [rule for rule in rules if rule.condition.WhichOneof("kind") != "monitor_down"]
                created.alert_rules_note = (
                    f'no separate "is down" rule: your rule "{covering.display_name}" ({covering.id}) already '
                    f"alerts when a monitor it watches ({scope_text(covering)}) goes down, this one included"
                )
    except AdapterError as error:
        created.alert_rules_error = str(error)
        covering_failed = True
    else:
        covering_failed = False
    subject = suggested_subject(suggested.monitor) if suggested is not None else ""
    messages = [
        alert_service_pb2.AlertRule(
            display_name=rule_name(rule.display_name, subject, monitor.display_name),
            monitor_id=monitor.id,
            condition=rule.condition,
            severity=rule.severity,
            for_duration=rule.for_duration,
        )
        for rule in rules
    ]
    threshold_made = False
    if covering_failed:
        created.alert_rules_not_created = [create_rule_call(m) for m in messages]
        messages = []
    for done, message in enumerate(messages):
        try:
            response = await state.clients.call(
                state.clients.alerts.CreateAlertRule,
                alert_service_pb2.CreateAlertRuleRequest(alert_rule=message),
                token=state.token(),
            )
        except AdapterError as error:
            created.alert_rules_error = str(error)
            created.alert_rules_not_created = [create_rule_call(m) for m in messages[done:]]
            break
        created.alert_rules.append(rule_view(response.alert_rule))
        threshold_made |= message.condition.WhichOneof("kind") == "threshold"
    await ctx.report_progress(3, steps, f"created {len(created.alert_rules)} alert rule(s)")
    return threshold_made


def create_rule_call(rule: alert_service_pb2.AlertRule) -> str:
    """The create_alert_rule call that makes ``rule``: 'create_alert_rule(condition="threshold", ...)'."""
    kind, args = condition_arguments(rule.condition)
    arguments: dict[str, object] = {"condition": kind, "monitor_id": rule.monitor_id}
    arguments.update({k: v for k, v in args.items() if v not in (None, "", 0, "unspecified")})
    arguments["severity"] = enum_name(common_pb2.Severity, rule.severity, "SEVERITY_")
    if span(rule.for_duration):
        arguments["for_duration"] = span(rule.for_duration)
    arguments["name"] = rule.display_name
    listed = ", ".join(f"{k}={json.dumps(v)}" for k, v in arguments.items())
    return f"create_alert_rule({listed})"


def suggested_subject(monitor: monitor_service_pb2.Monitor) -> str:
    """What suggested rule names start with: the host of a website, the coin of a pair."""
    kind = monitor_kind(monitor.spec)
    if kind == "website":
        return urlsplit(monitor.spec.website.url).hostname or ""
    if kind == "crypto_price":
        return monitor.spec.crypto_price.pair.partition("-")[0]
    return ""


def rule_name(suggested: str, subject: str, display_name: str) -> str:
    """A suggested rule's name with the monitor's display name: "example.com is down" -> "Shop is down"."""
    if subject and suggested.startswith(subject + " "):
        return display_name + suggested.removeprefix(subject)
    return f"{display_name}: {suggested}" if display_name else suggested


async def covering_down_rule(state: AdapterState, labels: dict[str, str]) -> alert_service_pb2.AlertRule | None:
    """The caller's enabled monitor_down rule that watches a new monitor with ``labels`` already: one over all
    their monitors (the default rule "A monitor is down", unless changed) or a selector these labels match. A new
    account's default rule is made as its first monitor is created, so a moment is given for it to appear."""
    for attempt in range(5):
        rules = await all_alert_rules(state)
        found = next(
            (
                rule
                for rule in sorted(rules, key=lambda r: (not r.is_default, bool(r.monitor_selector)))
                if rule.condition.WhichOneof("kind") == "monitor_down"
                and not rule.monitor_id
                and selector_matches(rule.monitor_selector, labels)
                and (rule.enabled if rule.HasField("enabled") else True)
            ),
            None,
        )
        if found is not None or any(rule.is_default for rule in rules) or attempt == 4:
            return found
        await asyncio.sleep(0.2)
    return None


async def all_alert_rules(state: AdapterState) -> list[alert_service_pb2.AlertRule]:
    """Every alert rule of the caller's, through all pages."""
    rules: list[alert_service_pb2.AlertRule] = []
    page_token = ""
    while True:
        response = await state.clients.call(
            state.clients.alerts.ListAlertRules,
            alert_service_pb2.ListAlertRulesRequest(page_size=1000, page_token=page_token),
            token=state.token(),
        )
        rules.extend(response.alert_rules)
        page_token = response.next_page_token
        if not page_token:
            return rules


class MonitorList(BaseModel):
    monitors: list[MonitorView]
    next_page_token: str | None = None


@tool(read_only=True)
async def list_monitors(
    ctx: ToolContext,
    page_size: Annotated[int, Field(ge=1, le=1000)] = 100,
    page_token: Annotated[str, Field(description="next_page_token of the previous page.")] = "",
) -> Annotated[CallToolResult, MonitorList]:
    """List the person's monitors (id, name, kind, target, interval, paused), oldest first. Use it to find a
    monitor's id. For their current state (up or down) call get_monitor_status."""
    state = state_of(ctx)
    response = await state.clients.call(
        state.clients.monitors.ListMonitors,
        monitor_service_pb2.ListMonitorsRequest(page_size=page_size, page_token=page_token),
        token=state.token(),
    )
    views = [monitor_view(m) for m in response.monitors]
    summary = f"{len(views)} monitor(s)"
    if views:
        summary += ": " + ", ".join(f"{v.id} {v.name}" for v in views[:10]) + more(10, len(views))
    if response.next_page_token:
        summary += "; more on the next page (page_token)"
    return reply(summary + ".", MonitorList(monitors=views, next_page_token=response.next_page_token or None))


@tool(read_only=True)
async def get_monitor(monitor_id: MonitorId, ctx: ToolContext) -> Annotated[CallToolResult, MonitorView]:
    """Get one monitor's settings (kind, target, interval, timeout, retries, locations, labels; for a heartbeat
    its schedule, heartbeat_url and how a job pings it)."""
    view = monitor_view(await get_monitor_message(state_of(ctx), monitor_id))
    extras = [
        f"keyword {'absent' if view.keyword_absent else 'present'}: {view.keyword!r}" if view.keyword else "",
        f"status {view.expected_status}" if view.expected_status else "",
        f"headers {', '.join(view.header_names)}" if view.header_names else "",
        f"cert warning {view.cert_expiry_days} days" if view.cert_expiry_days else "",
        "paused" if view.paused else "",
    ]
    detail = "".join(f"; {extra}" for extra in extras if extra)
    if view.kind == "heartbeat":
        return reply(f"{view.id} {view.name}: {heartbeat_text(view)}{detail}.", view)
    return reply(f"{view.id} {view.name}: {view.kind} {view.target}, every {view.interval}{detail}.", view)


@tool(idempotent=True)
async def update_monitor(
    monitor_id: MonitorId,
    ctx: ToolContext,
    name: Annotated[str | None, Field(max_length=200)] = None,
    target: Annotated[str | None, Field(max_length=2000, description="A new URL, pair, host:port or name.")] = None,
    interval: DurationText | None = None,
    timeout: DurationText | None = None,  # noqa: ASYNC109
    retries: Annotated[int | None, Field(ge=0, le=10)] = None,
    locations: list[str] | None = None,
    quorum: Annotated[int | None, Field(ge=0, le=100)] = None,
    labels: Annotated[dict[str, str] | None, Field(description="Replaces all labels.")] = None,
    method: HttpMethod | None = None,
    headers: Annotated[
        dict[str, str] | None, Field(description="Website: replaces the request headers; {{secret:NAME}} ok.")
    ] = None,
    body: Annotated[str | None, Field(max_length=65536, description="Website request body.")] = None,
    expected_status: Annotated[str | None, Field(description="Website: status codes that count as up.")] = None,
    keyword: Annotated[
        str | None, Field(max_length=1000, description='Website: text the page must contain ("" removes it).')
    ] = None,
    keyword_absent: Annotated[bool | None, Field(description="Website: the keyword must NOT appear.")] = None,
    cert_expiry_days: Annotated[int | None, Field(ge=0, le=365, description="Website: 0 turns it off.")] = None,
    cron: Annotated[
        str | None,
        Field(
            max_length=200,
            description='Heartbeat: a cron schedule such as "0 3 * * *" the pings are due by ("" goes back to a '
            "ping every interval).",
        ),
    ] = None,
    time_zone: Annotated[
        str | None, Field(max_length=64, description='Heartbeat: the IANA zone cron is read in, e.g. "Europe/Paris".')
    ] = None,
    grace_period: Annotated[
        str | None, Field(max_length=32, description='Heartbeat: extra time allowed after a ping is due, e.g. "30m".')
    ] = None,
) -> Annotated[CallToolResult, MonitorView]:
    """Change a monitor's settings; only the arguments given change. Changing the target keeps the kind (to
    change the kind, create a new monitor and delete this one); a website's method, headers, body,
    expected_status, keyword and cert_expiry_days can change too, and a heartbeat's cron, time_zone and
    grace_period. Returns the monitor as stored."""
    state = state_of(ctx)
    monitor = monitor_service_pb2.Monitor(id=monitor_id)
    paths: list[str] = []
    if name is not None:
        monitor.display_name = name
        paths.append("display_name")
    website = {
        "method": method,
        "headers": headers,
        "body": body,
        "expected_status": expected_status,
        "keyword": keyword,
        "keyword_absent": keyword_absent,
        "cert_expiry_days": cert_expiry_days,
    }
    website_given = [argument for argument, value in website.items() if value is not None]
    heartbeat = {"cron": cron, "time_zone": time_zone, "grace_period": grace_period}
    heartbeat_given = [argument for argument, value in heartbeat.items() if value is not None]
    if target is not None or website_given or heartbeat_given:
        spec = (await get_monitor_message(state, monitor_id)).spec
        if target is not None:
            spec = retarget(spec, target)
        if website_given:
            given = {k: v for k, v in website.items() if v is not None}
            change_website(spec, website_given[0], SpecOptions.model_validate(given))
        if heartbeat_given:
            change_heartbeat(spec, heartbeat_given[0], cron, time_zone, grace_period)
        monitor.spec.CopyFrom(spec)
        paths.append("spec")
    if interval is not None:
        monitor.interval.CopyFrom(to_duration(parse_duration(interval, "interval")))
        paths.append("interval")
    if timeout is not None:
        monitor.timeout.CopyFrom(to_duration(parse_duration(timeout, "timeout")))
        paths.append("timeout")
    if retries is not None:
        monitor.retries = retries
        paths.append("retries")
    if locations is not None:
        monitor.locations.extend(locations)
        paths.append("locations")
    if quorum is not None:
        monitor.quorum = quorum
        paths.append("quorum")
    if labels is not None:
        monitor.labels.update(labels)
        paths.append("labels")
    if not paths:
        raise AdapterError("nothing to change: give at least one setting to update")
    response = await state.clients.call(
        state.clients.monitors.UpdateMonitor,
        monitor_service_pb2.UpdateMonitorRequest(monitor=monitor, update_mask=field_mask_pb2.FieldMask(paths=paths)),
        token=state.token(),
        subject=monitor_subject(monitor_id),
    )
    view = monitor_view(response.monitor)
    changed = [p for p in paths if p != "spec"] + (["target"] if target is not None else []) + website_given
    changed += heartbeat_given
    schedule = f": {view.schedule}" if heartbeat_given and view.schedule else ""
    return reply(f"Updated {view.id} ({', '.join(changed)}){schedule}.", view)


@tool(idempotent=True)
async def pause_monitor(monitor_id: MonitorId, ctx: ToolContext) -> Annotated[CallToolResult, MonitorView]:
    """Stop checking a monitor without deleting it (its data and rules stay). Undo with resume_monitor."""
    state = state_of(ctx)
    response = await state.clients.call(
        state.clients.monitors.PauseMonitor,
        monitor_service_pb2.PauseMonitorRequest(id=monitor_id),
        token=state.token(),
        subject=monitor_subject(monitor_id),
    )
    return reply(f"Paused {response.monitor.display_name} ({monitor_id}).", monitor_view(response.monitor))


@tool(idempotent=True)
async def resume_monitor(monitor_id: MonitorId, ctx: ToolContext) -> Annotated[CallToolResult, MonitorView]:
    """Start checking a paused monitor again (after pause_monitor). Returns the monitor; its state is pending
    until the next check reports."""
    state = state_of(ctx)
    response = await state.clients.call(
        state.clients.monitors.ResumeMonitor,
        monitor_service_pb2.ResumeMonitorRequest(id=monitor_id),
        token=state.token(),
        subject=monitor_subject(monitor_id),
    )
    return reply(f"Resumed {response.monitor.display_name} ({monitor_id}).", monitor_view(response.monitor))


class Deleted(BaseModel):
    deleted: str


@tool(destructive=True, idempotent=True)
async def delete_monitor(monitor_id: MonitorId, ctx: ToolContext) -> Annotated[CallToolResult, Deleted]:
    """Delete a monitor for good: its checks stop and its data expires. Confirm with the person first; to stop
    it for a while use pause_monitor instead."""
    state = state_of(ctx)
    await state.clients.call(
        state.clients.monitors.DeleteMonitor,
        monitor_service_pb2.DeleteMonitorRequest(id=monitor_id),
        token=state.token(),
        subject=monitor_subject(monitor_id),
    )
    return reply(f"Deleted monitor {monitor_id}.", Deleted(deleted=monitor_id))


@tool(read_only=True, open_world=True)
async def run_check_now(
    monitor_id: MonitorId,
    ctx: ToolContext,
    timeout: Annotated[str, Field(max_length=32, description="Up to 60s.")] = "10s",  # noqa: ASYNC109
) -> Annotated[CallToolResult, CheckView]:
    """Run one check of a monitor now and return its outcome (up or down, duration, error, values such as price
    or status_code). Nothing is stored. Use it to verify a new monitor or to answer "is it up right now?"."""
    state = state_of(ctx)
    limit = parse_duration(timeout, "timeout")
    monitor = await get_monitor_message(state, monitor_id)
    response = await state.clients.call(
        state.clients.monitors.RunCheck,
        monitor_service_pb2.RunCheckRequest(monitor_id=monitor_id, timeout=to_duration(limit)),
        token=state.token(),
        subject=monitor_subject(monitor_id),
        timeout_s=limit.total_seconds() + 5,
    )
    view = check_view(response.result)
    outcome = "UP" if view.is_up else f"DOWN ({view.error_class}: {view.message})"
    return reply(f"{monitor.display_name} ({monitor_id}) is {outcome} after {view.duration_ms} ms.", view)


class StatusView(BaseModel):
    monitor_id: str
    name: str
    state: str
    since: str | None = None
    last_check: str | None = None
    consecutive_failures: int = 0
    last_result: CheckView | None = None
    locations: list[CheckView] | None = None


@tool(read_only=True)
async def get_monitor_status(monitor_id: MonitorId, ctx: ToolContext) -> Annotated[CallToolResult, StatusView]:
    """Get a monitor's current state (up, down, pending, paused, unknown), since when, and its last result."""
    state = state_of(ctx)
    monitor = await get_monitor_message(state, monitor_id)
    response = await state.clients.call(
        state.clients.monitors.GetMonitorStatus,
        monitor_service_pb2.GetMonitorStatusRequest(id=monitor_id),
        token=state.token(),
        subject=monitor_subject(monitor_id),
    )
    status = response.status
    view = StatusView(
        monitor_id=monitor_id,
        name=monitor.display_name,
        state=enum_name(common_pb2.MonitorState, status.state, "MONITOR_STATE_"),
        since=iso(status.state_change_time),
        last_check=iso(status.last_check_time),
        consecutive_failures=status.consecutive_failures,
        last_result=check_view(status.last_result) if status.HasField("last_result") else None,
        locations=[check_view(r) for r in status.location_results] or None,
    )
    line = f"{view.name} ({monitor_id}) is {view.state.upper()}" + (f" since {view.since}" if view.since else "")
    if view.state == "down":
        failed = [r for r in [view.last_result, *(view.locations or [])] if r is not None and not r.is_up]
        if failed:
            cause = failed[0]
            where = f" from {cause.location}" if cause.location and len(view.locations or []) > 1 else ""
            line += f": {cause.error_class or 'error'}{where}: {cause.message or 'no message'}"
    return reply(line + ".", view)


class PingView(BaseModel):
    time: str | None = None
    kind: str
    exit_status: int | None = None
    run_time: str | None = None
    body: str | None = None
    body_truncated: bool = False
    user_agent: str | None = None


class PingsView(BaseModel):
    monitor_id: str
    pings: list[PingView]


@tool(read_only=True)
async def list_heartbeat_pings(monitor_id: MonitorId, ctx: ToolContext) -> Annotated[CallToolResult, PingsView]:
    """List the latest pings of a heartbeat monitor (the last 10 are kept), newest first: success, fail or start,
    the job's exit status, its run time (from a /start ping to its end) and what it sent (up to 10 KiB). Use it
    to see why a job's heartbeat failed."""
    state = state_of(ctx)
    response = await state.clients.call(
        state.clients.monitors.ListHeartbeatPings,
        monitor_service_pb2.ListHeartbeatPingsRequest(monitor_id=monitor_id),
        token=state.token(),
        subject=monitor_subject(monitor_id),
    )
    pings = [
        PingView(
            time=iso(p.time),
            kind=enum_name(monitor_service_pb2.HeartbeatPingKind, p.kind, "HEARTBEAT_PING_KIND_"),
            exit_status=p.exit_status if p.HasField("exit_status") else None,
            run_time=span(p.run_time) if p.HasField("run_time") else None,
            body=p.body or None,
            body_truncated=p.body_truncated,
            user_agent=p.user_agent or None,
        )
        for p in response.pings
    ]
    latest = f", latest {pings[0].kind} at {pings[0].time}" if pings else ""
    return reply(f"{len(pings)} ping(s) of {monitor_id}{latest}.", PingsView(monitor_id=monitor_id, pings=pings))


class RunnerView(BaseModel):
    runner_id: str
    location: str
    assigned_monitors: int
    last_report: str | None = None
    version: str | None = None


class DeploymentView(BaseModel):
    version: str
    mode: str
    database: str
    timeseries: str
    runners: list[RunnerView]
    unassigned_monitors: int
    locations: list[str]


@tool(read_only=True)
async def get_deployment_status(ctx: ToolContext) -> Annotated[CallToolResult, DeploymentView]:
    """Describe the deployment: version, storage, the locations runners serve, and the runners that check your
    monitors (with how many of yours each checks). Use it when monitors stay "unknown" (no runner) or to know
    which locations a monitor may name."""
    state = state_of(ctx)
    response = await state.clients.call(
        state.clients.monitors.GetDeploymentStatus,
        monitor_service_pb2.GetDeploymentStatusRequest(),
        token=state.token(),
    )
    view = DeploymentView(
        version=response.version,
        mode=response.mode,
        database=response.database_backend,
        timeseries=response.timeseries_backend,
        runners=[
            RunnerView(
                runner_id=r.runner_id,
                location=r.location,
                assigned_monitors=r.assigned_monitors,
                last_report=iso(r.last_report_time),
                version=r.version or None,
            )
            for r in response.runners
        ],
        unassigned_monitors=response.unassigned_monitors,
        locations=list(response.locations),
    )
    return reply(
        f"{view.mode} deployment {view.version}: runners in "
        + (", ".join(view.locations) if view.locations else "no location")
        + f"; {len(view.runners)} of them check your monitors, {view.unassigned_monitors} of yours unassigned.",
        view,
    )
