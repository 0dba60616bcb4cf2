"""Human units in tool arguments: durations ("90s", "5m", "1h30m", "7d"), numbers ("70k", "70,000", "1.5M")
and points in time ("24h" ago, or an ISO 8601 time)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from mcp_adapter.errors import AdapterError

_DURATION_PART = re.compile(
    r"(\d+(?:\.\d+)?)\s*(ms|s|sec|secs|seconds?|m|min|mins|minutes?|h|hr|hrs|hours?|d|days?|w|weeks?)"
)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NUMBER = re.compile(r"^([-+]?\d+(?:\.\d+)?)\s*([kmb]?)$", re.IGNORECASE)
_MULTIPLIERS = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9}


def parse_duration(text: str, argument: str) -> timedelta:
    """``"5m"`` -> 5 minutes. A bare number is seconds. Raises a tool error naming ``argument`` otherwise."""
    cleaned = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        return timedelta(seconds=float(cleaned))
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(cleaned):
        if match.start() != position:
            break
        unit = match.group(2)
        key = "ms" if unit == "ms" else unit[0]
        total += float(match.group(1)) * _UNIT_SECONDS[key]
        position = match.end()
    if position != len(cleaned) or not cleaned:
        raise AdapterError(f"{argument}: cannot read {text!r} as a duration; use forms like 30s, 5m, 1h30m or 7d")
    return timedelta(seconds=total)


def parse_number(text: str | float, argument: str) -> float:
    """``"70k"`` -> 70000.0, ``"70,000"`` -> 70000.0, ``"$1.5M"`` -> 1500000.0."""
    if isinstance(text, int | float):
        return float(text)
    cleaned = text.strip().replace(",", "").replace("_", "").lstrip("$€£").replace(" ", "")
    match = _NUMBER.match(cleaned)
    if match is None:
        raise AdapterError(f"{argument}: cannot read {text!r} as a number; use forms like 70000, 70,000 or 70k")
    return float(match.group(1)) * _MULTIPLIERS[match.group(2).lower()]


def parse_time(text: str, argument: str, now: datetime | None = None) -> datetime:
    """A point in time: a duration ago (``"24h"``, ``"7d"``), ``"now"``, or an ISO 8601 time (UTC if no zone)."""
    now = now or datetime.now(UTC)
    cleaned = text.strip()
    if cleaned.lower() == "now":
        return now
    try:
        moment = datetime.fromisoformat(cleaned.replace("Z", "+00:00"))
    except ValueError:
        try:
            return now - parse_duration(cleaned.lower().removesuffix("ago").strip(), argument)
        except AdapterError:
            raise AdapterError(
                f"{argument}: cannot read {text!r}; use a duration back from now (24h, 7d) or an ISO 8601 time"
            ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def format_duration(seconds: float) -> str:
    """3725 -> "1h2m5s"; whole units only, "0s" for zero."""
    remaining = round(seconds)
    if remaining <= 0:
        return "0s" if seconds <= 0 else f"{seconds * 1000:.0f}ms"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if remaining >= size:
            parts.append(f"{remaining // size}{unit}")
            remaining %= size
    return "".join(parts)
