"""The feed of monitor events the alert service watches (WatchMonitorEvents): every monitor of every user with
its state, then each change, state change and recorded batch of results, as they happen.

The hub keeps a mirror of what subscribers need of each monitor (owner, labels, kind, state...), loaded from the
stores once and then kept current by the two hooks of :class:`~services.monitor_svc.monitors.Monitors`: its change
listeners (create, update, pause, delete) and its record listeners (results stored, statuses written). A new
subscriber is registered and handed a copy of the mirror in one synchronous step, so no event can fall between
its snapshot and its stream. Each hook applies to the mirror and to every subscriber's queue without awaiting,
under the lock of the monitor it concerns, so the events of one monitor reach subscribers in the order they were
stored.

Each subscriber has a bounded backlog; one that falls further behind is cut off (counted and logged), and
reconnects for a fresh snapshot. Pending events are coalesced: a monitor changed twice is sent once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from service_runtime.errors import ResourceExhausted, Unavailable
from service_runtime.timeseries import Sample
from services.monitor_svc.domain import Monitor, MonitorKind, MonitorState, MonitorStatus

log = logging.getLogger(__name__)

DEFAULT_BACKLOG = 100_000  # events (monitor changes and results) one subscriber may have pending


@dataclass(frozen=True, slots=True)
class MonitorView:
    """What a subscriber knows of a monitor: whose, which labels, which kind, and its state."""

    monitor_id: str
    owner_id: str
    display_name: str
    labels: dict[str, str]
    kind: MonitorKind
    state: MonitorState  # after retries and quorum; PAUSED while paused, as GetMonitorStatus says
    state_change_time: datetime | None
    paused: bool
    interval: timedelta
    owner_email: str = ""
    down_reason: str = ""  # while DOWN: what the last check found (its message)


# A monitor's stored state, since when, and while DOWN why.
StateOf = tuple[MonitorState, datetime | None, str]


def state_of(status: MonitorStatus) -> StateOf:
    down = status.state is MonitorState.DOWN and status.last_result is not None
    return status.state, status.state_change_time, status.last_result.message if down and status.last_result else ""


def view_of(
    monitor: Monitor,
    state: MonitorState,
    state_change_time: datetime | None,
    owner_email: str = "",
    down_reason: str = "",
) -> MonitorView:
    return MonitorView(
        monitor_id=monitor.id,
        owner_id=monitor.owner_id,
        display_name=monitor.display_name,
        labels=dict(monitor.labels),
        kind=monitor.kind,
        state=MonitorState.PAUSED if monitor.paused else state,
        state_change_time=state_change_time,
        paused=monitor.paused,
        interval=monitor.interval,
        owner_email=owner_email,
        down_reason="" if monitor.paused else down_reason,
    )


@dataclass(frozen=True, slots=True)
class EventBatch:
    """What a subscriber gets in one message: monitors created or changed (state included), deletions, and the
    results recorded since the previous batch."""

    monitors: list[MonitorView] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    results: list[Sample] = field(default_factory=list)


class Subscription:
    """One watcher's pending events, bounded by ``backlog``."""

    def __init__(self, include_results: bool, backlog: int) -> None:
        self.include_results = include_results
        self._backlog = backlog
        self._monitors: dict[str, MonitorView] = {}
        self._deleted: dict[str, None] = {}
        self._results: list[Sample] = []
        self._ready = asyncio.Event()
        self.overflowed = False
        self.closed = False

    def _pending(self) -> int:
        return len(self._monitors) + len(self._deleted) + len(self._results)

    def _check_bound(self) -> None:
        if self._pending() > self._backlog and not self.overflowed:
            self.overflowed = True
            self._monitors.clear()
            self._deleted.clear()
            self._results.clear()
        self._ready.set()

    def put_monitor(self, view: MonitorView) -> None:
        if not self.overflowed:
            self._monitors.pop(view.monitor_id, None)  # re-inserted last: the latest version, in change order
            self._monitors[view.monitor_id] = view
            self._check_bound()

    def put_deleted(self, monitor_id: str) -> None:
        if not self.overflowed:
            self._monitors.pop(monitor_id, None)
            self._deleted[monitor_id] = None
            self._check_bound()

    def put_results(self, samples: Sequence[Sample]) -> None:
        if self.include_results and not self.overflowed and samples:
            self._results.extend(samples)
            self._check_bound()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next_batch(self, max_results: int) -> EventBatch | None:
        """The events pending now (waiting for one), at most ``max_results`` results of them; None once closed.
        Raises ResourceExhausted once the subscriber has fallen more than its backlog behind."""
        while True:
            if self.overflowed:
                raise ResourceExhausted(
                    "monitor_events_backlog",
                    f"fell more than {self._backlog} events behind; reconnect for a new snapshot",
                )
            if self._pending():
                break
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        batch = EventBatch(list(self._monitors.values()), list(self._deleted), self._results[:max_results])
        self._monitors.clear()
        self._deleted.clear()
        del self._results[:max_results]
        return batch


class MonitorEvents:
    """The hub: the mirror of every monitor and the subscribers' queues."""

    def __init__(
        self,
        load_monitors: Callable[[], Awaitable[list[Monitor]]],
        load_statuses: Callable[[Sequence[Monitor]], Awaitable[dict[str, MonitorStatus]]],
        backlog: int = DEFAULT_BACKLOG,
        load_emails: Callable[[Sequence[str]], Awaitable[dict[str, str]]] | None = None,
    ) -> None:
        self._load_monitors = load_monitors
        self._load_statuses = load_statuses
        self._load_emails = load_emails
        self._emails: dict[str, str] = {}  # owner id -> account address
        self._backlog = backlog
        self._monitors: dict[str, Monitor] = {}
        # The stored state of each monitor (paused or not) and since when.
        self._states: dict[str, StateOf] = {}
        self._views: dict[str, MonitorView] = {}
        self._subscribers: set[Subscription] = set()
        self._load_lock = asyncio.Lock()
        self._loaded = False
        # While loading: the hooks' events, applied once the stores have been read (each is at least as new).
        self._during_load: list[Callable[[], None]] | None = None
        self._closed = False
        self.cut_off = 0  # subscribers dropped for falling too far behind

    # --- subscribers ---------------------------------------------------------------------------------

    async def subscribe(self, include_results: bool) -> tuple[Subscription, list[MonitorView]]:
        """A new subscription and the snapshot it starts from (every monitor as of the same instant)."""
        if self._closed:
            raise Unavailable("the monitor service is shutting down")
        await self._ensure_loaded()
        subscription = Subscription(include_results, self._backlog)
        self._subscribers.add(subscription)
        return subscription, list(self._views.values())

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)
        if subscription.overflowed:
            self.cut_off += 1
            log.warning(
                "monitor event subscriber fell too far behind; cut off",
                extra={"backlog": self._backlog, "cut_off_total": self.cut_off},
            )

    def subscriber_count(self) -> int:
        return len(self._subscribers)

    async def close(self) -> None:
        """End every subscription once its pending events are sent (the server drains), and refuse new ones."""
        self._closed = True
        for subscription in self._subscribers:
            subscription.close()

    async def _ensure_loaded(self) -> None:
        async with self._load_lock:
            if self._loaded:
                return
            self._during_load = []
            try:
                monitors = await self._load_monitors()
                statuses = await self._load_statuses(monitors)
                await self._know_owners({m.owner_id for m in monitors})
            except BaseException:
                self._during_load = None
                raise
            self._monitors = {m.id: m for m in monitors}
            self._states = {m.id: state_of(statuses[m.id]) for m in monitors}
            self._views = {m.id: self._view(m, *self._states[m.id]) for m in monitors}
            applied, self._during_load = self._during_load, None
            for apply in applied:
                apply()
            self._loaded = True

    async def resync(self) -> None:
        """Read every monitor and state again (after changes made elsewhere may have been missed) and send
        subscribers what differs from what they were sent."""
        if not self._loaded:
            return  # the first subscriber's load will read the stores as they are
        monitors = await self._load_monitors()
        statuses = await self._load_statuses(monitors)
        await self._know_owners({m.owner_id for m in monitors})
        for monitor_id in set(self._monitors) - {m.id for m in monitors}:
            self._change(monitor_id, None)
        for monitor in monitors:
            self._monitors[monitor.id] = monitor
            status = statuses[monitor.id]
            self._states[monitor.id] = state_of(status)
            self._publish(self._view(monitor, *self._states[monitor.id]))

    # --- hooks ---------------------------------------------------------------------------------------

    async def monitor_changed(self, monitor_id: str, monitor: Monitor | None) -> None:
        """A change listener of Monitors: a monitor was created, changed, paused, resumed or deleted (None)."""
        if monitor is not None and self._loaded:
            await self._know_owners({monitor.owner_id})
        self._apply(lambda: self._change(monitor_id, monitor))

    async def _know_owners(self, owners: set[str]) -> None:
        """Learn the account addresses of ``owners`` not known yet (one query for all of them)."""
        missing = owners - set(self._emails)
        if missing and self._load_emails is not None:
            self._emails.update(await self._load_emails(sorted(missing)))

    def _view(self, monitor: Monitor, state: MonitorState, since: datetime | None, reason: str = "") -> MonitorView:
        return view_of(monitor, state, since, self._emails.get(monitor.owner_id, ""), reason)

    def results_recorded(self, samples: Sequence[Sample], statuses: Sequence[MonitorStatus]) -> None:
        """A record listener of Monitors: these samples were written and these statuses stored."""
        self._apply(lambda: self._record(samples, statuses))

    def _apply(self, apply: Callable[[], None]) -> None:
        if self._loaded:
            apply()
        elif self._during_load is not None:
            self._during_load.append(apply)
        # Not loaded and not loading: nobody subscribed yet, and the load will read the stores as they are.

    def _change(self, monitor_id: str, monitor: Monitor | None) -> None:
        if monitor is None:
            self._monitors.pop(monitor_id, None)
            self._states.pop(monitor_id, None)
            if self._views.pop(monitor_id, None) is not None:
                for subscription in self._subscribers:
                    subscription.put_deleted(monitor_id)
            return
        self._monitors[monitor_id] = monitor
        # A new monitor was never checked: PENDING since its creation, as the store says.
        state = self._states.setdefault(monitor_id, (MonitorState.PENDING, monitor.create_time, ""))
        self._publish(self._view(monitor, *state))

    def _record(self, samples: Sequence[Sample], statuses: Sequence[MonitorStatus]) -> None:
        for status in statuses:
            monitor = self._monitors.get(status.monitor_id)
            if monitor is None:
                continue  # deleted meanwhile
            self._states[status.monitor_id] = state_of(status)
            self._publish(self._view(monitor, *self._states[status.monitor_id]))
        live = [s for s in samples if s.monitor_id in self._monitors]
        for subscription in self._subscribers:
            subscription.put_results(live)

    def _publish(self, view: MonitorView) -> None:
        """Send ``view`` to every subscriber if it differs from what they last had."""
        if self._views.get(view.monitor_id) == view:
            return
        self._views[view.monitor_id] = view
        for subscription in self._subscribers:
            subscription.put_monitor(view)
