"""WatchMonitorStatus: each change of state of a user's monitors, as GetMonitorStatus reads it, to that user's
open streams.

Built on the hooks the monitor event mirror (:mod:`services.monitor_svc.events`) uses: the change listeners of
:class:`~services.monitor_svc.monitors.Monitors` (create, update, pause, resume, delete) and its record listeners
(statuses stored after results), both called under the lock of the monitor they concern, so one monitor's
changes reach watchers in the order they were stored. Unlike the alert service's feed, this one follows each
monitor's state *as read*: a monitor no runner reports any more turns UNKNOWN with time alone, so a sweep
(:meth:`StatusWatch.sweep`, every second) finds those that went stale and sends that change too.

Only watched users are mirrored (loaded with their first stream, dropped with their last), so a deployment
whose users watch nothing holds nothing. Each stream is a bounded buffer (:mod:`service_runtime.streams`):
a reader too slow loses the oldest changes and is told how many with the next one; publishing never waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

from service_runtime.errors import ResourceExhausted, Unavailable
from service_runtime.streams import DEFAULT_BUFFER, Broadcast, Subscription
from services.monitor_svc.domain import Monitor, MonitorState, MonitorStatus
from services.monitor_svc.monitors import status_as_read

SWEEP_S = 1.0  # how often stale monitors are looked for: an UNKNOWN arrives within a second of GetMonitorStatus's


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A monitor's state as read: as it is now (``current``), a change of it, or its deletion (``state`` None)."""

    monitor_id: str
    display_name: str
    labels: Mapping[str, str]
    state: MonitorState | None
    previous: MonitorState | None
    state_change_time: datetime | None
    last_check_time: datetime | None
    current: bool = False


@dataclass(slots=True)
class _Tracked:
    monitor: Monitor
    stored: MonitorStatus
    shown: MonitorStatus  # as read when last looked at: what watchers were told

    def change(self, previous: MonitorState | None, current: bool = False) -> StatusChange:
        return StatusChange(
            self.monitor.id,
            self.monitor.display_name,
            self.monitor.labels,
            self.shown.state,
            previous,
            self.shown.state_change_time,
            self.shown.last_check_time,
            current,
        )


@dataclass(slots=True)
class _Owner:
    """The mirror of one watched user's monitors."""

    monitors: dict[str, _Tracked] = field(default_factory=dict)


def _selects(selector: Mapping[str, str]) -> Callable[[StatusChange], bool]:
    wanted = dict(selector)
    return lambda change: all(change.labels.get(key) == value for key, value in wanted.items())


class StatusWatch:
    """The streams of WatchMonitorStatus and the mirror of the watched users' monitors."""

    def __init__(
        self,
        load_monitors: Callable[[str], Awaitable[list[Monitor]]],
        load_statuses: Callable[[Sequence[Monitor]], Awaitable[dict[str, MonitorStatus]]],
        max_streams: int,
        buffer: int = DEFAULT_BUFFER,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._load_monitors = load_monitors
        self._load_statuses = load_statuses
        self._max_streams = max_streams
        self._clock = clock
        self._changes: Broadcast[StatusChange] = Broadcast(buffer)
        self._owners: dict[str, _Owner] = {}
        self._owner_of: dict[str, str] = {}  # monitor id -> owner id, for the watched owners' monitors
        # Owners being loaded, with the hooks' events meanwhile (applied after the load: each is at least as new).
        self._loading: dict[str, asyncio.Future[None]] = {}
        self._during_load: dict[str, list[Callable[[_Owner], None]]] = {}
        self._closed = False

    # --- streams -------------------------------------------------------------------------------------

    async def subscribe(
        self, owner_id: str, include_current: bool, selector: Mapping[str, str]
    ) -> tuple[list[StatusChange], Subscription[StatusChange]]:
        """A new stream of ``owner_id``'s changes (of the monitors ``selector`` matches), and, with
        ``include_current``, each such monitor's state now: both taken in one step, so no change falls between."""
        self._check_open(owner_id)
        while owner_id not in self._owners:
            await self._load(owner_id)
            if self._closed:
                raise Unavailable("the monitor service is shutting down; reconnect")
        self._check_open(owner_id)  # others may have subscribed while this one waited for the load
        self._sweep_owner(owner_id, self._owners[owner_id], self._clock())  # the current states are as of now
        accepts = _selects(selector)
        subscription = self._changes.subscribe(owner_id, accepts)
        current = []
        if include_current:
            for tracked in self._owners[owner_id].monitors.values():
                change = tracked.change(None, current=True)
                if accepts(change):
                    current.append(change)
        return current, subscription

    def _check_open(self, owner_id: str) -> None:
        if self._closed:
            raise Unavailable("the monitor service is shutting down; reconnect")
        if self._changes.count(owner_id) >= self._max_streams:
            raise ResourceExhausted(
                "streams_per_user", f"at most {self._max_streams} open status streams per user; close one first"
            )

    def unsubscribe(self, owner_id: str, subscription: Subscription[StatusChange]) -> None:
        self._changes.unsubscribe(subscription)
        if not self._changes.count(owner_id) and owner_id not in self._loading:
            self._forget(owner_id)

    def stream_count(self, owner_id: str) -> int:
        return self._changes.count(owner_id)

    async def close(self) -> None:
        """End every stream once its pending changes are read (the server drains), and refuse new ones."""
        self._closed = True
        self._changes.close_all()
        for owner_id in list(self._owners):
            self._forget(owner_id)

    async def _load(self, owner_id: str) -> None:
        pending = self._loading.get(owner_id)
        if pending is not None:
            await asyncio.wait([pending])  # its failure is its loader's to report; the caller tries again
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._loading[owner_id] = done
        self._during_load[owner_id] = []
        try:
            monitors = await self._load_monitors(owner_id)
            statuses = await self._load_statuses(monitors) if monitors else {}
            owner = _Owner()
            now = self._clock()
            for monitor in monitors:
                stored = statuses[monitor.id]
                owner.monitors[monitor.id] = _Tracked(monitor, stored, status_as_read(monitor, stored, now))
            for apply in self._during_load[owner_id]:
                apply(owner)
            if not self._closed:
                self._owners[owner_id] = owner
                self._owner_of.update((monitor_id, owner_id) for monitor_id in owner.monitors)
            done.set_result(None)
        except BaseException:
            done.cancel()
            raise
        finally:
            del self._loading[owner_id], self._during_load[owner_id]

    def _forget(self, owner_id: str) -> None:
        owner = self._owners.pop(owner_id, None)
        if owner is not None:
            for monitor_id in owner.monitors:
                self._owner_of.pop(monitor_id, None)

    async def resync(self) -> None:
        """Read the watched users' monitors and statuses again (after changes made elsewhere may have been
        missed) and send their streams each change of state that brings."""
        for owner_id in list(self._owners):
            monitors = await self._load_monitors(owner_id)
            statuses = await self._load_statuses(monitors) if monitors else {}
            owner = self._owners.get(owner_id)
            if owner is None:
                continue  # its last stream closed meanwhile
            now = self._clock()
            for monitor_id in set(owner.monitors) - {m.id for m in monitors}:
                self._change(owner, monitor_id, None, publish=True)
            for monitor in monitors:
                self._change(owner, monitor.id, monitor, publish=True)
                self._store(owner, statuses[monitor.id], now, publish=True)

    # --- hooks ---------------------------------------------------------------------------------------

    async def monitor_changed(self, monitor_id: str, monitor: Monitor | None) -> None:
        """A change listener of Monitors: a monitor was created, changed, paused, resumed or deleted (None)."""
        owner_id = monitor.owner_id if monitor is not None else self._owner_of.get(monitor_id)
        if monitor is None:  # a deletion names no owner: one being loaded may hold the monitor
            for loading in self._during_load.values():
                loading.append(partial(self._change, monitor_id=monitor_id, monitor=None, publish=False))
        elif owner_id in self._during_load:
            self._during_load[owner_id].append(
                partial(self._change, monitor_id=monitor_id, monitor=monitor, publish=False)
            )
        if owner_id is not None and owner_id in self._owners:
            self._change(self._owners[owner_id], monitor_id, monitor, publish=True)

    def results_recorded(self, samples: object, statuses: Sequence[MonitorStatus]) -> None:
        """A record listener of Monitors: these statuses were stored."""
        now = self._clock()
        for status in statuses:
            for loading in self._during_load.values():
                loading.append(partial(self._store, status=status, now=now, publish=False))
            owner_id = self._owner_of.get(status.monitor_id)
            if owner_id is not None and owner_id in self._owners:
                self._store(self._owners[owner_id], status, now, publish=True)

    async def sweep(self) -> None:
        """Send the change of each watched monitor that went stale (UNKNOWN) since it was last looked at."""
        now = self._clock()
        for owner_id, owner in self._owners.items():
            self._sweep_owner(owner_id, owner, now)

    def _sweep_owner(self, owner_id: str, owner: _Owner, now: datetime) -> None:
        for tracked in owner.monitors.values():
            previous = self._look(tracked, now)
            if previous is not None:
                self._changes.publish(owner_id, tracked.change(previous))

    # --- the mirror ----------------------------------------------------------------------------------

    def _look(self, tracked: _Tracked, now: datetime) -> MonitorState | None:
        """Read ``tracked`` as of ``now``; the state it had before if that changed, else None."""
        shown = status_as_read(tracked.monitor, tracked.stored, now)
        before, tracked.shown = tracked.shown.state, shown
        return before if shown.state is not before else None

    def _change(self, owner: _Owner, monitor_id: str, monitor: Monitor | None, *, publish: bool) -> None:
        tracked = owner.monitors.get(monitor_id)
        if monitor is None:
            if tracked is None:
                return
            del owner.monitors[monitor_id]
            self._owner_of.pop(monitor_id, None)
            if publish:
                gone = tracked.monitor
                last = tracked.shown.state
                deleted = StatusChange(monitor_id, gone.display_name, gone.labels, None, last, None, None)
                self._changes.publish(gone.owner_id, deleted)
            return
        now = self._clock()
        if tracked is None:  # new: never checked, PENDING since its creation, as the store says
            stored = MonitorStatus(monitor.id, MonitorState.PENDING, state_change_time=monitor.create_time)
            tracked = _Tracked(monitor, stored, status_as_read(monitor, stored, now))
            owner.monitors[monitor_id] = tracked
            self._owner_of[monitor_id] = monitor.owner_id
            if publish:
                self._changes.publish(monitor.owner_id, tracked.change(None))
            return
        tracked.monitor = monitor
        previous = self._look(tracked, now)
        if publish and previous is not None:
            self._changes.publish(monitor.owner_id, tracked.change(previous))

    def _store(self, owner: _Owner, status: MonitorStatus, now: datetime, *, publish: bool) -> None:
        tracked = owner.monitors.get(status.monitor_id)
        if tracked is None:
            return  # deleted meanwhile, or another owner's
        tracked.stored = status
        previous = self._look(tracked, now)
        if publish and previous is not None:
            self._changes.publish(tracked.monitor.owner_id, tracked.change(previous))
