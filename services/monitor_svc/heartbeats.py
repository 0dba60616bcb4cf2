"""Heartbeat (push) monitors, as Healthchecks.io does them: the watched job calls its secret ping URL; the
monitor is UP after a ping, and DOWN once no ping has come within its interval plus grace period.

Pings come over HTTP (see :mod:`services.monitor_svc.ping_http`); a sweep in the monitor service finds the
ones that are overdue. A push monitor has no retries: one missed deadline is DOWN, since the deadline already
carries the user's grace period.

At most one ping per monitor per second is recorded (per monitor-service process); one that comes sooner is
LIMITED and recorded nothing (HTTP 429 with Retry-After). A monitor pinged from 16 threads had recorded 366
results a second, and pings alternating /fail and OK at 300 a second had written 4,308 alerts in 25 s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from services.monitor_svc.domain import CheckResult, HeartbeatSpec, Monitor, MonitorState
from services.monitor_svc.monitor_store import MonitorStore
from services.monitor_svc.monitors import Monitors

PUSH_LOCATION = "push"
MAX_MESSAGE = 500
PING_EVERY_S = 1.0  # at most one recorded ping per monitor this often


class PingOutcome(StrEnum):
    RECORDED = "recorded"
    PAUSED = "paused"  # accepted, nothing recorded
    UNKNOWN = "unknown"  # no monitor has this token
    LIMITED = "limited"  # the monitor was pinged less than PING_EVERY_S ago: nothing recorded


class PingLimiter:
    """When each ping token may next be recorded: one per PING_EVERY_S. Checked before the token is looked
    up, so a flood costs neither a database read nor a write; entries past their time are dropped once the
    map outgrows what it held after the last pruning (memory stays bounded by the tokens pinged per second)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._next: dict[str, float] = {}
        self._prune_at = 10_000

    def take(self, token: str) -> float:
        """0 and the token is taken for PING_EVERY_S; else the seconds until it may be pinged again."""
        now = self._clock()
        due = self._next.get(token, -math.inf)
        if now < due:
            return due - now
        self._next[token] = now + PING_EVERY_S
        if len(self._next) > self._prune_at:
            self._next = {t: d for t, d in self._next.items() if d > now}
            self._prune_at = max(10_000, 2 * len(self._next))
        return 0.0

    def remaining(self, token: str) -> float:
        """Seconds until ``token`` may be recorded again, without taking it (0: now)."""
        return max(0.0, self._next.get(token, -math.inf) - self._clock())

    def give_back(self, token: str) -> None:
        """The ping recorded nothing (unknown token, paused monitor): it does not count."""
        self._next.pop(token, None)


class Heartbeats:
    def __init__(self, store: MonitorStore, monitors: Monitors, limiter: PingLimiter | None = None) -> None:
        self._store = store
        self._monitors = monitors
        self._limiter = limiter or PingLimiter()

    def retry_after(self, token: str) -> float:
        """Seconds until ``token`` may be pinged again (0: now)."""
        return self._limiter.remaining(token)

    async def ping(self, token: str, failed: bool = False, message: str = "") -> PingOutcome:
        """A ping of the monitor whose token this is; ``failed`` when the job reports its own failure.
        LIMITED, recording nothing, when the token was pinged less than PING_EVERY_S ago."""
        if token and self._limiter.take(token):
            return PingOutcome.LIMITED
        monitor = await self._store.by_heartbeat_token(token) if token else None
        if monitor is None or not isinstance(monitor.spec, HeartbeatSpec):
            self._limiter.give_back(token)
            return PingOutcome.UNKNOWN
        if monitor.paused:
            self._limiter.give_back(token)
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
