"""Heartbeat (push) monitors, as Healthchecks.io does them: the watched job calls its secret ping URL; the
monitor is UP after a ping, and DOWN once no ping has come by the time the next was due (its interval after
the last, or the next time of its cron schedule in its time zone) plus its grace period. A job may also say
it started (``/start``: the next success or failure measures its run time, and a start not followed by either
within the grace period is DOWN) and report its exit status (``/<status>``: non-zero is a failure). The
latest :data:`KEPT_PINGS` pings of each monitor are kept with their bodies (:data:`MAX_PING_BODY` each).

Pings come over HTTP (see :mod:`services.monitor_svc.ping_http`); a sweep in the monitor service finds the
ones that are overdue. A push monitor has no retries: one missed deadline is DOWN, since the deadline already
carries the user's grace period.

At most one ping per monitor per second is recorded (per monitor-service process); one that comes sooner is
LIMITED and recorded nothing (HTTP 429 with Retry-After). A monitor pinged from 16 threads had recorded 366
results a second, and pings alternating /fail and OK at 300 a second had written 4,308 alerts in 25 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from service_runtime.auth import Principal
from service_runtime.errors import InvalidArgument
from service_runtime.pagination import PageRequest
from service_runtime.rate_limits import Rate, RateLimiter
from services.monitor_svc.domain import (
    CheckResult,
    HeartbeatSpec,
    Monitor,
    MonitorState,
    Ping,
    PingKind,
    PingRecord,
    next_ping_due,
)
from services.monitor_svc.monitors import Monitors
from services.monitor_svc.store import MonitorStore

PUSH_LOCATION = "push"
MAX_MESSAGE = 500
PING_EVERY_S = 1.0  # at most one recorded ping per monitor this often
KEPT_PINGS = 10  # the latest pings kept per monitor, for ListHeartbeatPings
MAX_PING_BODY = 10 * 1024  # characters of a ping's body kept


class PingLog(Protocol):
    """Where the latest pings of each monitor are kept."""

    async def add(self, monitor_id: str, record: PingRecord) -> None:
        """Keep ``record``, and drop what is older than the latest :data:`KEPT_PINGS` of the monitor."""
        ...

    async def latest(self, monitor_id: str, limit: int, offset: int = 0) -> list[PingRecord]:
        """Newest first."""
        ...

    async def unfinished_starts(self) -> dict[str, datetime]:
        """Each monitor whose latest ping is a start, with that start's time."""
        ...


class MemoryPingLog:
    """:class:`PingLog` in memory (for tests of the domain alone)."""

    def __init__(self) -> None:
        self._pings: dict[str, list[PingRecord]] = {}

    async def add(self, monitor_id: str, record: PingRecord) -> None:
        self._pings[monitor_id] = [record, *self._pings.get(monitor_id, [])][:KEPT_PINGS]

    async def latest(self, monitor_id: str, limit: int, offset: int = 0) -> list[PingRecord]:
        return self._pings.get(monitor_id, [])[offset : offset + limit]

    async def unfinished_starts(self) -> dict[str, datetime]:
        return {m: p[0].time for m, p in self._pings.items() if p and p[0].ping.kind is PingKind.START}


class PingOutcome(StrEnum):
    RECORDED = "recorded"
    PAUSED = "paused"  # accepted, nothing recorded
    UNKNOWN = "unknown"  # no monitor has this token
    LIMITED = "limited"  # the monitor was pinged less than PING_EVERY_S ago: nothing recorded


class PingLimiter(RateLimiter):
    """When each ping token may next be recorded: one per PING_EVERY_S. Checked before the token is looked
    up, so a flood costs neither a database read nor a write."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(Rate(burst=1, every_s=PING_EVERY_S), clock)


class Heartbeats:
    def __init__(
        self,
        store: MonitorStore,
        monitors: Monitors,
        limiter: PingLimiter | None = None,
        log: PingLog | None = None,
        *,
        replicated: bool = False,
    ) -> None:
        self._store = store
        self._monitors = monitors
        self._limiter = limiter or PingLimiter()
        self._log = log or MemoryPingLog()
        # Monitors whose job said it started and has not finished: when it did. Read back from the ping log
        # when the service starts (restore_starts), so a restart forgets no run.
        self._started: dict[str, datetime] = {}
        # Other replicas take pings too: a run's start may have come to one of them, so an end with no start
        # known here looks at the ping log for it.
        self._replicated = replicated

    async def restore_starts(self) -> None:
        """Take up the runs that had started and not finished when this service last stopped."""
        self._started = {**await self._log.unfinished_starts(), **self._started}

    def retry_after(self, token: str, kind: PingKind = PingKind.SUCCESS) -> float:
        """Seconds until ``token`` may be pinged again (0: now)."""
        return self._limiter.remaining(_limit_key(token, kind))

    async def ping(self, token: str, ping: Ping | None = None) -> PingOutcome:
        """A ping of the monitor whose token this is. LIMITED, recording nothing, when the token was pinged
        less than PING_EVERY_S ago (starts and results are limited apart: a job may start and end within a
        second)."""
        ping = ping or Ping()
        key = _limit_key(token, ping.kind)
        if token and self._limiter.take(key):
            return PingOutcome.LIMITED
        monitor = await self._store.by_heartbeat_token(token) if token else None
        if monitor is None or not isinstance(monitor.spec, HeartbeatSpec):
            self._limiter.give_back(key)
            return PingOutcome.UNKNOWN
        if monitor.paused:
            self._limiter.give_back(key)
            return PingOutcome.PAUSED
        now = datetime.now(UTC)
        if ping.kind is PingKind.START:
            self._started[monitor.id] = now
            await self._log.add(monitor.id, PingRecord(now, ping))
            return PingOutcome.RECORDED
        started = self._started.pop(monitor.id, None)
        if started is None and self._replicated:
            latest = await self._log.latest(monitor.id, 1)
            if latest and latest[0].ping.kind is PingKind.START:
                started = latest[0].time
        run_time = now - started if started is not None else None
        await self._log.add(monitor.id, PingRecord(now, ping, run_time))
        failed = ping.kind is PingKind.FAIL
        result = CheckResult(
            monitor_id=monitor.id,
            time=now,
            is_up=not failed,
            duration=run_time or timedelta(0),
            error_class="status" if failed else "",
            message=_failure_message(ping) if failed else "",
            fields={} if run_time is None else {"run_time_ms": round(run_time.total_seconds() * 1000, 3)},
            location=PUSH_LOCATION,
        )
        await self._monitors.record(_without_retries(monitor), result)
        return PingOutcome.RECORDED

    async def recent_pings(
        self, caller: Principal, monitor_id: str, page_size: int, page_token: str
    ) -> tuple[list[PingRecord], str]:
        """The latest pings of one of the caller's monitors, newest first, and the next page's token."""
        monitor = await self._store.get(caller.user_id, monitor_id)
        request = PageRequest.of(page_size, page_token, maximum=KEPT_PINGS)
        offset = _offset(request.after)
        if not isinstance(monitor.spec, HeartbeatSpec):
            return [], ""
        # The log has no key to resume after: a ping's key is its place in it, newest first, and only the
        # latest KEPT_PINGS count (two pings at once may leave one more for a moment).
        found = await self._log.latest(monitor.id, request.read_limit, offset)
        placed = list(enumerate(found[: KEPT_PINGS - offset], start=offset + 1))
        page, token = request.cut(placed, lambda p: str(p[0]))
        return [ping for _, ping in page], token

    async def sweep(self, now: datetime | None = None) -> int:
        """Mark DOWN every active heartbeat monitor whose deadline has passed; returns how many."""
        now = now or datetime.now(UTC)
        overdue = 0
        for monitor, status in await self._store.active_heartbeats():
            if status.state == MonitorState.DOWN:
                continue
            spec = monitor.spec
            assert isinstance(spec, HeartbeatSpec)
            # The clock starts at the last ping, or at the last change (creation, resume, edit) if later.
            since = max(status.last_check_time or monitor.update_time, monitor.update_time)
            due = next_ping_due(spec, monitor.interval, since)
            started = self._started.get(monitor.id)
            if started is not None and started < since:
                started = None  # the change after it restarted the clock
            # Recorded at the deadline itself, not at this sweep's now: every replica sweeps, and another that read
            # the monitor before this one recorded it makes the same result, a repeat that records nothing.
            if started is not None and now >= started + spec.grace_period:
                self._started.pop(monitor.id, None)
                deadline = started + spec.grace_period
                message = (
                    f"started at {started:%Y-%m-%d %H:%M:%S} UTC and not finished within the grace period "
                    f"of {_short(spec.grace_period)}"
                )
            elif now >= due + spec.grace_period:
                deadline = due + spec.grace_period
                schedule = (
                    f"due {due:%Y-%m-%d %H:%M:%S} UTC by cron '{spec.cron}' in {spec.time_zone or 'UTC'}"
                    if spec.cron
                    else f"period {_short(monitor.interval)}"
                )
                message = (
                    f"no ping since {since:%Y-%m-%d %H:%M:%S} UTC ({schedule} + grace {_short(spec.grace_period)})"
                )
            else:
                continue
            result = CheckResult(
                monitor_id=monitor.id,
                time=deadline,
                is_up=False,
                duration=timedelta(0),
                error_class="timeout",
                message=message,
                location=PUSH_LOCATION,
            )
            await self._monitors.record(_without_retries(monitor), result)
            overdue += 1
        return overdue


def _limit_key(token: str, kind: PingKind) -> str:
    return f"{token}/start" if kind is PingKind.START else token


def _failure_message(ping: Ping) -> str:
    said = ping.body.strip()
    if ping.exit_status is not None:
        return f"exit status {ping.exit_status}" + (f": {said}" if said else "")[: MAX_MESSAGE - 20]
    return said[:MAX_MESSAGE] or "the job reported a failure"


def _offset(after: str | None) -> int:
    """The place in the log a page starts at: 0 for the first page, else the place of the last ping shown."""
    if after is None:
        return 0
    if not (after.isascii() and after.isdigit()) or not 0 < int(after) < KEPT_PINGS:
        raise InvalidArgument("page_token", "is not a page token returned by this listing")
    return int(after)


def _without_retries(monitor: Monitor) -> Monitor:
    return replace(monitor, retries=0)


def _short(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds % 86400 == 0 and seconds:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60}m"
    return f"{seconds}s"
