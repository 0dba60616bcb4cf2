"""Data tools: get_monitor_data, summarize_monitor, summarize_monitors, get_crypto_analysis,
get_website_uptime_analysis and plot_monitor_data (a PNG chart as MCP image content)."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from typing import Annotated, Literal

from mcp_types import CallToolResult, ImageContent, TextContent
from pydantic import BaseModel, Field

from mcp_adapter.chart import ChartData, render_chart
from mcp_adapter.errors import AdapterError
from mcp_adapter.toolbox import AdapterState, ToolContext, more, reply, state_of, tool
from mcp_adapter.tools.alerts import list_alert_messages
from mcp_adapter.tools.monitors import (
    MonitorId,
    all_monitors,
    get_monitor_message,
    monitor_subject,
    normalize_pair,
    resolve_monitor,
)
from mcp_adapter.tools.rules import DEFAULT_FIELDS
from mcp_adapter.units import parse_duration, parse_time
from mcp_adapter.views import (
    check_view,
    enum_name,
    enum_value,
    iso,
    monitor_kind,
    monitor_view,
    span,
    to_duration,
    to_timestamp,
)
from monitors.v1 import common_pb2, monitor_service_pb2

AggregationName = Literal["mean", "min", "max", "first", "last", "count", "sum", "p50", "p95", "p99"]
Since = Annotated[str, Field(max_length=64, description='Start: a duration back from now ("24h", "7d") or ISO time.')]
Until = Annotated[str | None, Field(max_length=64, description="End (default now): a duration ago or ISO time.")]


def time_range(since: str, until: str | None) -> common_pb2.TimeRange:
    now = datetime.now(UTC)
    start = parse_time(since, "since", now)
    time_range = common_pb2.TimeRange(start_time=to_timestamp(start))
    if until:
        time_range.end_time.CopyFrom(to_timestamp(parse_time(until, "until", now)))
    return time_range


class Point(BaseModel):
    t: str
    v: float
    n: int | None = None


class SeriesView(BaseModel):
    monitor_id: str
    field: str
    window: str | None = None
    aggregation: str | None = None
    aggregated_why: str | None = None
    points: list[Point]


async def query_points(
    state: AdapterState,
    monitor_id: str,
    field: str,
    range_: common_pb2.TimeRange,
    window: str | None = None,
    aggregation: str = "mean",
    max_points: int = 200,
) -> monitor_service_pb2.QuerySamplesResponse:
    request = monitor_service_pb2.QuerySamplesRequest(
        monitor_id=monitor_id, field=field, time_range=range_, max_points=max_points
    )
    if window:
        request.window.CopyFrom(to_duration(parse_duration(window, "window")))
        request.aggregation = enum_value(common_pb2.Aggregation, aggregation, "AGGREGATION_")
    return await state.clients.call(
        state.clients.monitors.QuerySamples, request, token=state.token(), subject=monitor_subject(monitor_id)
    )


async def default_field(state: AdapterState, monitor_id: str, field: str | None) -> tuple[str, str]:
    """The field to read (the monitor kind's main value when none is given), and the monitor's kind."""
    kind = monitor_kind((await get_monitor_message(state, monitor_id)).spec)
    return field or DEFAULT_FIELDS.get(kind, "is_up"), kind


@tool(read_only=True)
async def get_monitor_data(
    monitor_id: MonitorId,
    ctx: ToolContext,
    field: Annotated[
        str | None, Field(description="price, response_time_ms, status_code, is_up, ...; default: the main one.")
    ] = None,
    since: Since = "24h",
    until: Until = None,
    window: Annotated[str | None, Field(description='Aggregate per window, e.g. "1h"; raw samples if omitted.')] = None,
    aggregation: AggregationName = "mean",
    max_points: Annotated[int, Field(ge=1, le=10000)] = 200,
) -> Annotated[CallToolResult, SeriesView]:
    """Read a monitor's values over time (by default its main value over the last 24 hours): the raw samples,
    or one aggregate per window. For a verdict rather than numbers use summarize_monitor; for a picture use
    plot_monitor_data. A field the monitor does not write is refused, naming the ones it does."""
    state = state_of(ctx)
    field_name, _ = await default_field(state, monitor_id, field)
    response = await query_points(
        state, monitor_id, field_name, time_range(since, until), window, aggregation, max_points
    )
    used = span(response.window)
    aggregated = used is not None
    points = [
        Point(t=iso(p.point_time) or "", v=p.value, n=p.sample_count if aggregated else None) for p in response.points
    ]
    how = enum_name(common_pb2.Aggregation, response.aggregation, "AGGREGATION_") if aggregated else None
    why = None
    if aggregated and not window:
        why = f"raw samples downsampled to fit max_points={max_points}"
    elif aggregated and window and used != span(to_duration(parse_duration(window, "window"))):
        why = f"window widened from {window} to fit max_points={max_points}"
    view = SeriesView(
        monitor_id=monitor_id, field=field_name, window=used, aggregation=how, aggregated_why=why, points=points
    )
    shape = f"{how} per {used} window" + (f" ({why})" if why else "") if aggregated else "raw samples"
    latest = f"; latest {points[-1].v:g} at {points[-1].t}" if points else "; no data in this range"
    return reply(f"{len(points)} point(s) of {field_name} since {since}, {shape}{latest}.", view)


class OutageView(BaseModel):
    start: str | None = None
    end: str | None = None
    duration: str | None = None
    error_class: str | None = None
    cause: str | None = None
    causes: list[str] | None = None  # every distinct cause, when there were several


class PriceStats(BaseModel):
    first: float
    last: float
    min: float
    max: float
    mean: float
    change_absolute: float
    change_percent: float  # in percent
    volatility: float  # a fraction: 0.01 is 1 %
    volatility_percent: float


class SummaryView(BaseModel):
    monitor_id: str
    start: str | None = None
    end: str | None = None
    data_since: str | None = None
    samples: int
    uptime_percent: float | None = None
    checks: int | None = None
    failed_checks: int | None = None
    outages: list[OutageView] | None = None
    response_time_p50_ms: float | None = None
    response_time_p95_ms: float | None = None
    response_time_p99_ms: float | None = None
    cert_days_left: int | None = None
    price: PriceStats | None = None


def summary_view(response: monitor_service_pb2.SummarizeMonitorResponse) -> SummaryView:
    view = SummaryView(
        monitor_id=response.monitor_id,
        start=iso(response.time_range.start_time),
        end=iso(response.time_range.end_time),
        samples=response.sample_count,
    )
    which = response.WhichOneof("summary")
    availability = None
    if which == "website":
        website = response.website
        availability = website.availability
        view.response_time_p50_ms = round(website.response_time_p50_ms, 1)
        view.response_time_p95_ms = round(website.response_time_p95_ms, 1)
        view.response_time_p99_ms = round(website.response_time_p99_ms, 1)
        view.cert_days_left = website.cert_days_left if website.HasField("cert_days_left") else None
    elif which == "availability":
        availability = response.availability
    elif which == "crypto_price":
        p = response.crypto_price
        view.price = PriceStats(
            first=p.first,
            last=p.last,
            min=p.min,
            max=p.max,
            mean=round(p.mean, 6),
            change_absolute=round(p.change_absolute, 6),
            change_percent=round(p.change_percent, 4),
            volatility=round(p.volatility, 6),
            volatility_percent=round(p.volatility_percent, 4),
        )
        availability = p.availability  # the fetches: failed ones and when the price source failed
    if availability is not None:
        view.uptime_percent = round(availability.uptime_percent, 3)
        view.checks = availability.checks
        view.failed_checks = availability.failed_checks
        view.outages = [
            OutageView(
                start=iso(o.start_time),
                end=iso(o.end_time),
                duration=span(o.duration),
                error_class=enum_name(common_pb2.ErrorClass, o.error_class, "ERROR_CLASS_"),
                cause=o.cause or None,
                causes=[c.message for c in o.causes] if len(o.causes) > 1 else None,
            )
            for o in availability.outages
        ]
    return view


def note_coverage(view: SummaryView, monitor: monitor_service_pb2.Monitor) -> None:
    """Sets data_since when the period asked for starts before the monitor existed."""
    created = iso(monitor.create_time)
    if created and view.start and created > view.start:
        view.data_since = created


def summary_line(name: str, view: SummaryView, since: str) -> str:
    if view.data_since:
        since = f"{since} (data only since {view.data_since}, when the monitor was created)"
    if view.samples == 0:
        return f"{name}: no data yet over {since}."
    if view.price is not None:
        p = view.price
        failed = f", {view.failed_checks} failed fetches" if view.failed_checks else ""
        return (
            f"{name} over {since}: last {p.last:,.2f}, range {p.min:,.2f}-{p.max:,.2f}, "
            f"change {p.change_percent:+.2f}% ({view.samples} samples{failed})."
        )
    if view.uptime_percent is not None:
        outages = len(view.outages or [])
        latency = f", p95 {view.response_time_p95_ms:g} ms" if view.response_time_p95_ms else ""
        return f"{name} over {since}: {view.uptime_percent:g}% up, {outages} outage(s){latency} ({view.checks} checks)."
    return f"{name} over {since}: {view.samples} samples."


async def summarize_raw(
    state: AdapterState, monitor_id: str, since: str, until: str | None
) -> monitor_service_pb2.SummarizeMonitorResponse:
    return await state.clients.call(
        state.clients.monitors.SummarizeMonitor,
        monitor_service_pb2.SummarizeMonitorRequest(monitor_id=monitor_id, time_range=time_range(since, until)),
        token=state.token(),
        subject=monitor_subject(monitor_id),
    )


async def summarize(state: AdapterState, monitor_id: str, since: str, until: str | None) -> SummaryView:
    return summary_view(await summarize_raw(state, monitor_id, since, until))


@tool(read_only=True)
async def summarize_monitor(
    monitor_id: MonitorId, ctx: ToolContext, since: Since = "24h", until: Until = None
) -> Annotated[CallToolResult, SummaryView]:
    """Summarise a monitor over a period (default the last 24 hours): uptime, outages with their causes and
    latency percentiles for up/down monitors; first, last, min, max, change and volatility for a price."""
    state = state_of(ctx)
    view, monitor = await asyncio.gather(
        summarize(state, monitor_id, since, until), get_monitor_message(state, monitor_id)
    )
    note_coverage(view, monitor)
    line = summary_line(f"{monitor.display_name} ({monitor_id})", view, since)
    if view.samples == 0:
        line += " " + await state_note(state, monitor_id)
    return reply(line, view)


class MonitorHealth(BaseModel):
    monitor_id: str
    name: str
    kind: str
    state: str
    uptime_percent: float | None = None
    checks: int | None = None
    failed_checks: int | None = None
    outages: int | None = None
    response_time_p95_ms: float | None = None
    cert_days_left: int | None = None
    price_change_percent: float | None = None


class MonitorsOverview(BaseModel):
    start: str | None = None
    end: str | None = None
    total: int
    states: dict[str, int]
    monitors: list[MonitorHealth]


_STATE_ORDER = {"down": 0, "unknown": 1, "pending": 2, "up": 3, "paused": 4}


@tool(read_only=True)
async def summarize_monitors(
    ctx: ToolContext,
    since: Since = "24h",
    labels: Annotated[dict[str, str] | None, Field(description="Only monitors with all these labels.")] = None,
    limit: Annotated[int, Field(ge=1, le=1000, description="How many monitors to list, worst first.")] = 50,
) -> Annotated[CallToolResult, MonitorsOverview]:
    """How all of the person's monitors are doing, in one answer: each one's state now (down, unknown, pending,
    up, paused), uptime, outages and p95 latency over a period (default the last 24 hours), worst first, with
    counts per state. Use it for "how are my monitors doing?" or "what is down?"; summarize_monitor for one."""
    state = state_of(ctx)
    selector = dict(labels or {})
    summaries: list[monitor_service_pb2.SummarizeMonitorResponse] = []
    listed: list[tuple[monitor_service_pb2.Monitor, monitor_service_pb2.MonitorStatus]] = []
    summarized, page_token = time_range(since, None), ""
    while True:  # every monitor's summary from a few grouped queries per page, not one call per monitor
        page = await state.clients.call(
            state.clients.monitors.SummarizeMonitors,
            monitor_service_pb2.SummarizeMonitorsRequest(
                label_selector=selector, time_range=summarized, page_size=1000, page_token=page_token
            ),
            token=state.token(),
        )
        summaries.extend(page.summaries)
        summarized, page_token = page.time_range, page.next_page_token
        if not page_token:
            break
    while True:
        listing = await state.clients.call(
            state.clients.monitors.ListMonitors,
            monitor_service_pb2.ListMonitorsRequest(label_selector=selector, page_size=1000, page_token=page_token),
            token=state.token(),
        )
        listed.extend(zip(listing.monitors, listing.statuses, strict=True))
        page_token = listing.next_page_token
        if not page_token:
            break
    views = {s.monitor_id: summary_view(s) for s in summaries}
    healths = []
    for monitor, status in listed:
        view = views.get(monitor.id)
        health = MonitorHealth(
            monitor_id=monitor.id,
            name=monitor.display_name,
            kind=monitor_kind(monitor.spec),
            state=enum_name(common_pb2.MonitorState, status.state, "MONITOR_STATE_"),
        )
        if view is not None and view.samples:
            health.uptime_percent, health.checks, health.failed_checks = (
                view.uptime_percent,
                view.checks,
                view.failed_checks,
            )
            health.outages = len(view.outages or [])
            health.response_time_p95_ms = view.response_time_p95_ms or None
            health.cert_days_left = view.cert_days_left
            health.price_change_percent = view.price.change_percent if view.price is not None else None
        healths.append(health)
    healths.sort(key=lambda h: (_STATE_ORDER.get(h.state, 5), h.uptime_percent is None, h.uptime_percent or 0.0))
    counts: dict[str, int] = {}
    for health in healths:
        counts[health.state] = counts.get(health.state, 0) + 1
    by_state = sorted(counts.items(), key=lambda c: _STATE_ORDER.get(c[0], 5))
    shown = [f"{n} {s.upper() if s in ('down', 'unknown') else s}" for s, n in by_state]
    line = f"{len(healths)} monitor(s) over {since}: " + (", ".join(shown) or "none")
    troubled = [h for h in healths if h.state in ("down", "unknown")]
    if troubled:
        line += "; " + ", ".join(f"{h.name} ({h.monitor_id}) is {h.state.upper()}" for h in troubled[:5])
        line += more(5, len(troubled))
    lowest = [h for h in healths if h.uptime_percent is not None and h.uptime_percent < 100]
    if lowest:
        worst = min(lowest, key=lambda h: h.uptime_percent or 0.0)
        line += f"; lowest uptime {worst.name} {worst.uptime_percent:g}%"
    overview = MonitorsOverview(
        start=iso(summarized.start_time),
        end=iso(summarized.end_time),
        total=len(healths),
        states=counts,
        monitors=healths[:limit],
    )
    return reply(line + ".", overview)


async def state_note(state: AdapterState, monitor_id: str) -> str:
    """ "It is PENDING (last error: ...)." for a monitor with no data to show."""
    response = await state.clients.call(
        state.clients.monitors.GetMonitorStatus,
        monitor_service_pb2.GetMonitorStatusRequest(id=monitor_id),
        token=state.token(),
        subject=monitor_subject(monitor_id),
    )
    status = response.status
    current = enum_name(common_pb2.MonitorState, status.state, "MONITOR_STATE_").upper()
    note = f"The monitor is {current}"
    if status.HasField("last_result") and not status.last_result.is_up:
        last = check_view(status.last_result)
        note += f" (last check failed: {last.error_class or 'error'}: {last.message or 'no message'})"
    elif not status.HasField("last_check_time"):
        note += " and has not been checked yet"
    return note + "."


class CryptoAnalysis(BaseModel):
    pair: str
    monitor_id: str
    stats: SummaryView
    hourly: list[Point]


@tool(read_only=True)
async def get_crypto_analysis(
    ctx: ToolContext,
    symbol: Annotated[
        str,
        Field(
            max_length=100,
            description="A coin or pair (BTC, ETH-EUR), or a crypto monitor's id or name when several watch it.",
        ),
    ] = "BTC",
    since: Since = "24h",
) -> Annotated[CallToolResult, CryptoAnalysis]:
    """Analyse a coin's price from the person's crypto monitor of it: last, range, change and volatility over the
    period, with hourly means. If they have no monitor of that pair, create one (create_monitor kind=crypto_price)
    and data arrives from then on."""
    state = state_of(ctx)
    pair = normalize_pair(symbol)
    monitors = [m for m in await all_monitors(state) if monitor_kind(m.spec) == "crypto_price"]
    # By pair, not by part of a name: "BTC" names BTC-USD, not also a monitor called "BTC-EUR price".
    monitor = resolve_monitor(
        monitors, symbol, "symbol", lambda m, _: m.spec.crypto_price.pair == pair, part_of_name=False
    )
    if monitor is not None:
        pair = monitor.spec.crypto_price.pair
    else:
        watched = ", ".join(sorted({m.spec.crypto_price.pair for m in monitors})) or "none"
        raise AdapterError(
            f"no monitor watches {pair} (watched pairs: {watched}); call create_monitor with kind=crypto_price "
            f"and target={pair} first"
        )
    summary, series = await asyncio.gather(
        summarize(state, monitor.id, since, None),
        query_points(state, monitor.id, "price", time_range(since, None), "1h", "mean", 200),
    )
    hourly = [Point(t=iso(p.point_time) or "", v=round(p.value, 6)) for p in series.points]
    note_coverage(summary, monitor)
    if summary.samples == 0:
        summary.price = None  # zeros would read as a price of 0.00
    analysis = CryptoAnalysis(pair=pair, monitor_id=monitor.id, stats=summary, hourly=hourly)
    line = summary_line(pair, summary, since)
    if summary.samples == 0:
        line += " " + await state_note(state, monitor.id)
    return reply(line, analysis)


def url_contains(monitor: monitor_service_pb2.Monitor, text: str) -> bool:
    """Whether a website monitor's URL contains ``text`` (its scheme and a final slash aside)."""
    needle = text.strip().lower().removeprefix("https://").removeprefix("http://").rstrip("/")
    return bool(needle) and needle in monitor.spec.website.url.lower()


class UptimeAnalysis(BaseModel):
    monitor_id: str
    name: str
    url: str
    stats: SummaryView
    state: str


@tool(read_only=True)
async def get_website_uptime_analysis(
    site: Annotated[
        str,
        Field(
            max_length=2000,
            description="A website monitor's id or name, or part of its name or URL. When several monitors match, "
            "the answer lists them: call again with the id of the one meant.",
        ),
    ],
    ctx: ToolContext,
    since: Since = "7d",
) -> Annotated[CallToolResult, UptimeAnalysis]:
    """Analyse a website's uptime (default the last 7 days): uptime percent, each outage with its cause and
    length, latency percentiles, certificate days left, and its state now."""
    state = state_of(ctx)
    websites = [m for m in await all_monitors(state) if monitor_kind(m.spec) == "website"]
    monitor = resolve_monitor(websites, site, "site", url_contains)
    if monitor is None:
        raise AdapterError(
            f"no website monitor matches {site!r} by id, name or URL; call list_monitors, or create_monitor "
            "kind=website to start watching it"
        )
    summary, status = await asyncio.gather(
        summarize(state, monitor.id, since, None),
        state.clients.call(
            state.clients.monitors.GetMonitorStatus,
            monitor_service_pb2.GetMonitorStatusRequest(id=monitor.id),
            token=state.token(),
        ),
    )
    current = enum_name(common_pb2.MonitorState, status.status.state, "MONITOR_STATE_")
    note_coverage(summary, monitor)
    url = monitor.spec.website.url
    analysis = UptimeAnalysis(monitor_id=monitor.id, name=monitor.display_name, url=url, stats=summary, state=current)
    line = summary_line(f"{monitor.display_name} ({monitor.id}, {url})", summary, since)
    return reply(f"{line} Now {current.upper()}.", analysis)


@tool(read_only=True)
async def plot_monitor_data(
    monitor_id: MonitorId,
    ctx: ToolContext,
    field: Annotated[str | None, Field(description="Default: price for a coin, response_time_ms otherwise.")] = None,
    since: Since = "24h",
    until: Until = None,
) -> CallToolResult:
    """Draw a chart (PNG image) of a monitor's latency or price over time (default the last 24 hours), with DOWN
    periods shaded red and fired alerts marked. Show it to the person when a picture says more than numbers."""
    state = state_of(ctx)
    monitor = await get_monitor_message(state, monitor_id)
    kind = monitor_kind(monitor.spec)
    field_name = field or DEFAULT_FIELDS.get(kind, "is_up")
    range_ = time_range(since, until)
    series, summary = await asyncio.gather(
        query_points(state, monitor_id, field_name, range_, max_points=1000),
        summarize_raw(state, monitor_id, since, until),
    )
    alert_times: list[tuple[datetime, str]] = []
    try:
        alerts = await list_alert_messages(state, "all", monitor_id=monitor_id, limit=100)
        for alert in alerts.alerts:
            stamp = alert.fire_time if alert.HasField("fire_time") else alert.start_time
            if stamp.seconds:
                alert_times.append((stamp.ToDatetime(tzinfo=UTC), alert.summary))
    except AdapterError:
        pass  # Alerts are an overlay: without AlertService the chart is still worth drawing.
    outages = [
        (
            o.start_time.ToDatetime(tzinfo=UTC),
            o.end_time.ToDatetime(tzinfo=UTC) if o.HasField("end_time") else datetime.now(UTC),
        )
        for o in summary_outages(summary)
    ]
    data = ChartData(
        title=f"{monitor.display_name} ({monitor_view(monitor).target})",
        field_name=field_name,
        times=[p.point_time.ToDatetime(tzinfo=UTC) for p in series.points],
        values=[p.value for p in series.points],
        outages=outages,
        alerts=alert_times,
        start=range_.start_time.ToDatetime(tzinfo=UTC),
        end=range_.end_time.ToDatetime(tzinfo=UTC) if range_.HasField("end_time") else datetime.now(UTC),
    )
    png = await asyncio.to_thread(render_chart, data)
    text = (
        f"Chart of {field_name} for {monitor.display_name} ({monitor_id}) since {since}: {len(data.values)} point(s), "
        f"{len(outages)} DOWN period(s), {len(alert_times)} alert(s) marked."
    )
    return CallToolResult(
        content=[
            TextContent(type="text", text=text),
            ImageContent(type="image", data=base64.b64encode(png).decode(), mime_type="image/png"),
        ]
    )


def summary_outages(response: monitor_service_pb2.SummarizeMonitorResponse) -> list[monitor_service_pb2.Outage]:
    which = response.WhichOneof("summary")
    if which == "website":
        return list(response.website.availability.outages)
    if which == "availability":
        return list(response.availability.outages)
    return []
