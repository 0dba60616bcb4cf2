"""Heartbeat (push) monitors, as Healthchecks.io does them: the watched job calls its secret ping URL; the
monitor is UP after a ping, and DOWN once no ping has come within its interval plus grace period.

Pings come over HTTP (see :mod:`services.monitor_svc.ping_http`); a sweep in the monitor service finds the
ones that are overdue. A push monitor has no retries: one missed deadline is DOWN, since the deadline already
carries the user's grace period.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from services.monitor_svc.domain import CheckResult, HeartbeatSpec, Monitor, MonitorState
from services.monitor_svc.monitor_store import MonitorStore
from services.monitor_svc.monitors import Monitors

PUSH_LOCATION = "push"
MAX_MESSAGE = 500


class PingOutcome(StrEnum):
    RECORDED = "recorded"
    PAUSED = "paused"  # accepted, nothing recorded
    UNKNOWN = "unknown"  # no monitor has this token


class Heartbeats:
    def __init__(self, store: MonitorStore, monitors: Monitors) -> None:
        self._store = store
        self._monitors = monitors

    async def ping(self, token: str, failed: bool = False, message: str = "") -> PingOutcome:
        """A ping of the monitor whose token this is; ``failed`` when the job reports its own failure."""
        monitor = await self._store.by_heartbeat_token(token) if token else None
        if monitor is None or not isinstance(monitor.spec, HeartbeatSpec):
            return PingOutcome.UNKNOWN
        if monitor.paused:
            return PingOutcome.PAUSED
        result = CheckResult(
            monitor_id=monitor.id,
            time=datetime.now(UTC),
            is_up=not failed,
            duration=timedelta(0),
            error_class="status" if failed else "",
            message=(message.strip()[:MAX_MESSAGE] or "the job reported a failure") if failed else "",
            location=PUSH_LOCATION,
        )
        await self._monitors.record(_without_retries(monitor), result)
        return PingOutcome.RECORDED

    async def sweep(self, now: datetime | None = None) -> int:
        """Mark DOWN every active heartbeat monitor whose deadline has passed; returns how many."""
        now = now or datetime.now(UTC)
        overdue = 0
        for monitor, status in await self._store.active_heartbeats():
            if status.state == MonitorState.DOWN:
                continue
            assert isinstance(monitor.spec, HeartbeatSpec)
            # The clock starts at the last ping, or at the last change (creation, resume, edit) if later.
            since = max(status.last_check_time or monitor.update_time, monitor.update_time)
            deadline = since + monitor.interval + monitor.spec.grace_period
            if now < deadline:
                continue
            result = CheckResult(
                monitor_id=monitor.id,
                time=now,
                is_up=False,
                duration=timedelta(0),
                error_class="timeout",
                message=f"no ping since {since:%Y-%m-%d %H:%M:%S} UTC (period {_short(monitor.interval)} "
                f"+ grace {_short(monitor.spec.grace_period)})",
                location=PUSH_LOCATION,
            )
            await self._monitors.record(_without_retries(monitor), result)
            overdue += 1
        return overdue


def _without_retries(monitor: Monitor) -> Monitor:
    return replace(monitor, retries=0)


def _short(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60}m"
    return f"{seconds}s"
