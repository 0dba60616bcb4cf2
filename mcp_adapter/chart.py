"""Charts as PNG bytes, drawn with matplotlib's Agg backend (no display; safe in a worker thread)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# matplotlib's date numbers: days since its default epoch (matplotlib.dates is untyped, so converted here).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def day_number(moment: datetime) -> float:
    return (moment - EPOCH).total_seconds() / 86400


UNITS = {
    "response_time_ms": "ms",
    "connect_time_ms": "ms",
    "price": "",
    "status_code": "",
    "is_up": "up (1) / down (0)",
}


@dataclass
class ChartData:
    title: str
    field_name: str
    times: list[datetime]
    values: list[float]
    start: datetime
    end: datetime
    outages: list[tuple[datetime, datetime]] = field(default_factory=list)
    alerts: list[tuple[datetime, str]] = field(default_factory=list)


def render_chart(data: ChartData, width_px: int = 1000, height_px: int = 450) -> bytes:
    """A line chart of ``data.values`` over time, DOWN periods shaded red and alerts as dashed orange lines."""
    # A Figure with its own Agg canvas, not pyplot: no global state, so concurrent renders do not interfere.
    figure = Figure(figsize=(width_px / 100, height_px / 100), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if data.values:
        axes.plot(
            [day_number(t) for t in data.times], data.values, color="#1f77b4", linewidth=1.4, label=data.field_name
        )
    else:
        axes.text(0.5, 0.5, "no data in this period", transform=axes.transAxes, ha="center", va="center")
    for index, (start, end) in enumerate(data.outages):
        axes.axvspan(
            day_number(start), day_number(end), color="#d62728", alpha=0.2, label="DOWN" if index == 0 else None
        )
    for index, (moment, _summary) in enumerate(data.alerts):
        axes.axvline(
            day_number(moment),
            color="#ff7f0e",
            linestyle="--",
            linewidth=1.2,
            label="alert fired" if index == 0 else None,
        )
    axes.xaxis_date(UTC)  # date ticks and labels, in UTC
    axes.set_xlim(day_number(data.start), day_number(data.end))
    axes.set_xlabel("time (UTC)")
    unit = UNITS.get(data.field_name, "")
    axes.set_ylabel(f"{data.field_name} ({unit})" if unit else data.field_name)
    axes.set_title(data.title, fontsize=11)
    axes.grid(True, alpha=0.3)
    if data.values or data.outages or data.alerts:
        axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
