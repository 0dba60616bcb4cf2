"""Which runner checks which monitor, and the live feed of assignments each runner watches.

Each monitor that is not paused (heartbeat monitors aside: pings come to us) is owned by exactly one
connected runner per location it asks for; a monitor asking for no location goes to one runner of any.
Owners are chosen by rendezvous hashing (highest random weight), so a runner joining or leaving moves only the
monitors it gains or loses. A runner's stream ending (or its connection dying, which gRPC keepalive detects)
hands its monitors to the others at once. When the service stops, every runner's stream is ended as draining
begins (:meth:`AssignmentHub.close`), so runners reconnect at once rather than when the stop's grace runs out.

Replicas: each monitor service replica serves the runners connected to it, and knows the runners of the others
(:meth:`AssignmentHub.set_remote_runners`, from the registry in :mod:`services.monitor_svc.replicas`). Owners are
chosen among all of them, by the same rule on every replica, so each replica sends its own runners their share
and a monitor is checked once however many replicas serve. A runner connected to two replicas at once (one
just killed, its entry not yet expired) counts once: here, its connection to this replica wins; elsewhere, its
latest connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from service_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, Unavailable
from services.monitor_svc.domain import CheckResult, HeartbeatSpec, Monitor, Placement

_RUNNER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
_LOCATION = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


@dataclass(frozen=True)
class Change:
    """One message for a runner: a full set (first, and after a resync) or upserts and removals."""

    full_sync: bool
    upserts: Sequence[Monitor]
    removed: Sequence[str]


@dataclass
class Runner:
    runner_id: str
    location: str
    capacity: int
    version: str
    connect_time: datetime
    assigned: dict[str, Monitor] = field(default_factory=dict)
    last_report_time: datetime | None = None
    queue: asyncio.Queue[Change | None] = field(default_factory=asyncio.Queue)  # None: the feed ends
    closed: bool = False
    local: bool = True  # connected to this replica (else to another: its changes go there, not into its queue)
    dedicated_to: str = ""  # a dedicated runner's one monitor


@dataclass(frozen=True)
class RemoteRunner:
    """A runner connected to another replica, as that replica's registry entry says."""

    runner_id: str
    location: str
    capacity: int
    version: str
    connect_time: datetime
    last_report_time: datetime | None
    dedicated_to: str = ""


def _weight(monitor_id: str, runner_id: str) -> bytes:
    return hashlib.blake2b(f"{monitor_id}\x00{runner_id}".encode(), digest_size=8).digest()


def runs_on_runners(monitor: Monitor) -> bool:
    return not monitor.paused and not isinstance(monitor.spec, HeartbeatSpec)


class AssignmentHub:
    """Connected runners, the monitors each owns, and the results they report."""

    def __init__(
        self,
        load_monitors: Callable[[], Awaitable[list[Monitor]]],
        record_results: Callable[[Sequence[tuple[Monitor, CheckResult]]], Awaitable[object]],
    ) -> None:
        self._load = load_monitors
        self._record = record_results
        self._monitors: dict[str, Monitor] = {}
        self._runners: dict[str, Runner] = {}
        self._loaded = False
        self._lock = asyncio.Lock()
        self._closing = False
        # Awaited after a runner connects to or leaves this replica: the registry other replicas read.
        self.local_runner_listeners: list[Callable[[], Awaitable[None]]] = []

    # --- runners -------------------------------------------------------------------------------------

    async def connect(
        self, runner_id: str, location: str, capacity: int, version: str, dedicated_to: str = ""
    ) -> Runner:
        """Register a runner; with ``dedicated_to`` it checks that monitor alone, which no other runner checks."""
        if not _RUNNER_ID.match(runner_id):
            raise InvalidArgument("runner_id", "is required: letters, digits and ._:- (up to 100)")
        if not _LOCATION.match(location):
            raise InvalidArgument("location", "is required: lower-case letters, digits and dashes (up to 32)")
        if capacity < 0:
            raise InvalidArgument("capacity", "must not be negative")
        async with self._lock:
            if self._closing:
                raise Unavailable(
                    "the monitor service is stopping: connect again (to another replica, or here once it is back)"
                )
            await self._ensure_loaded()
            existing = self._runners.get(runner_id)
            if existing is not None and not existing.closed:
                raise AlreadyExists(f"runner {runner_id} is already connected")
            runner = Runner(runner_id, location, capacity, version, datetime.now(UTC), dedicated_to=dedicated_to)
            self._runners[runner_id] = runner  # in place of its entry from another replica, if any
            self._rebalance(full_sync_for=runner)
        await self._local_runners_changed()
        return runner

    async def disconnect(self, runner: Runner) -> None:
        async with self._lock:
            runner.closed = True
            if self._runners.get(runner.runner_id) is runner:
                del self._runners[runner.runner_id]
                if not self._closing:  # stopping: every runner goes, none is to take over
                    self._rebalance()
        await self._local_runners_changed()

    async def _local_runners_changed(self) -> None:
        for listener in self.local_runner_listeners:
            await listener()

    def local_runners(self) -> list[Runner]:
        """The runners connected to this replica."""
        return sorted((r for r in self._runners.values() if r.local and not r.closed), key=lambda r: r.runner_id)

    async def set_remote_runners(self, remote: Sequence[RemoteRunner]) -> None:
        """The runners connected to the other replicas are now ``remote``: owners are chosen again if they
        joined or left (or changed location or capacity), and this replica's runners get what they gain or lose."""
        latest: dict[str, RemoteRunner] = {}
        for entry in remote:
            if entry.runner_id not in latest or entry.connect_time > latest[entry.runner_id].connect_time:
                latest[entry.runner_id] = entry
        async with self._lock:
            if self._closing:
                return
            changed = False
            for runner_id in [i for i, r in self._runners.items() if not r.local and i not in latest]:
                del self._runners[runner_id]
                changed = True
            for entry in latest.values():
                known = self._runners.get(entry.runner_id)
                if known is not None and known.local:
                    continue  # connected here: this replica's own entry is the live one
                if known is None or (known.location, known.capacity, known.dedicated_to) != (
                    entry.location,
                    entry.capacity,
                    entry.dedicated_to,
                ):
                    assigned = {} if known is None else known.assigned
                    known = Runner(entry.runner_id, entry.location, entry.capacity, entry.version, entry.connect_time)
                    known.assigned, known.local, known.dedicated_to = assigned, False, entry.dedicated_to
                    self._runners[entry.runner_id] = known
                    changed = True
                known.version, known.connect_time = entry.version, entry.connect_time
                if entry.last_report_time is not None and (
                    known.last_report_time is None or entry.last_report_time > known.last_report_time
                ):
                    known.last_report_time = entry.last_report_time
            if changed:
                await self._ensure_loaded()
                self._rebalance()

    async def close(self) -> None:
        """The service is stopping: end every runner's feed now and refuse new runners."""
        async with self._lock:
            self._closing = True
            for runner in self._runners.values():
                if runner.local:
                    runner.queue.put_nowait(None)

    async def feed(self, runner: Runner) -> AsyncIterator[Change]:
        """The runner's changes as they happen, beginning with its full set, until :meth:`close`."""
        while not runner.closed:
            change = await runner.queue.get()
            if change is None:
                return
            yield change

    def owns(self, runner_id: str, monitor_id: str) -> Monitor | None:
        """The monitor, if ``runner_id`` is its current owner."""
        runner = self._runners.get(runner_id)
        if runner is None:
            return None
        runner.last_report_time = datetime.now(UTC)
        return runner.assigned.get(monitor_id)

    async def report(self, runner_id: str, results: Sequence[CheckResult | None]) -> tuple[int, int]:
        """Record a runner's batch of results; how many were accepted and how many rejected.

        A runner that is not connected is refused as a whole (FAILED_PRECONDITION): after a restart or a reconnect
        its report can come before its WatchAssignments, and refusing the call rather than its results makes the
        runner keep them and send them again. A result is rejected alone when the runner does not own its monitor
        now, or when it has no valid check time (None). Accepted results carry the runner's id and location."""
        location = self.location_of(runner_id)
        if location is None:
            raise FailedPrecondition(f"runner {runner_id} is not connected: watch its assignments first")
        recorded = []
        for result in results:
            # Asked for every result, one without a check time too: each counts as the runner's last report.
            monitor = self.owns(runner_id, "" if result is None else result.monitor_id)
            if monitor is not None and result is not None:
                recorded.append((monitor, replace(result, runner_id=runner_id, location=location)))
        await self._record(recorded)
        return len(recorded), len(results) - len(recorded)

    def location_of(self, runner_id: str) -> str | None:
        runner = self._runners.get(runner_id)
        return None if runner is None else runner.location

    def runners(self) -> list[Runner]:
        return sorted(self._runners.values(), key=lambda r: r.runner_id)

    def unassigned(self, owner_id: str | None = None) -> int:
        """Monitors (of ``owner_id``, or everyone's) that should run but have no runner in one of their locations."""
        covered = {(m_id, r.location) for r in self._runners.values() for m_id in r.assigned}
        missing = 0
        for monitor in self._monitors.values():
            if not runs_on_runners(monitor) or owner_id not in (None, monitor.owner_id):
                continue
            if monitor.locations and monitor.placement is Placement.SHARED:
                missing += any((monitor.id, loc) not in covered for loc in monitor.locations)
            else:
                missing += not any(m_id == monitor.id for m_id, _ in covered)
        return missing

    # --- monitors ------------------------------------------------------------------------------------

    async def monitor_changed(self, monitor_id: str, monitor: Monitor | None) -> None:
        """A monitor was created, changed or deleted (``None``)."""
        async with self._lock:
            await self._ensure_loaded()
            if monitor is None:
                self._monitors.pop(monitor_id, None)
            else:
                self._monitors[monitor_id] = monitor
            self._rebalance(changed={monitor_id})

    async def reload(self) -> None:
        """Read every monitor again and choose owners afresh (after changes may have been missed)."""
        async with self._lock:
            before, self._monitors = self._monitors, {m.id: m for m in await self._load()}
            self._loaded = True
            self._rebalance()
            # A monitor changed meanwhile goes to its owner again (the full pass sends only what moved).
            edited = {i for i, monitor in self._monitors.items() if before.get(i, monitor) != monitor}
            if edited:
                self._rebalance(changed=edited)

    async def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._monitors = {m.id: m for m in await self._load()}
            self._loaded = True

    def _owners(self, monitor: Monitor, load: dict[str, int]) -> list[Runner]:
        if not runs_on_runners(monitor):
            return []
        # A dedicated monitor goes to its own runner only (wherever it is), and its runner takes no other.
        dedicated_to = monitor.id if monitor.placement is Placement.DEDICATED else ""
        live = [r for r in self._runners.values() if not r.closed and r.dedicated_to == dedicated_to]
        if dedicated_to:
            groups = [live]
        elif monitor.locations:
            groups = [[r for r in live if r.location == loc] for loc in monitor.locations]
        else:
            groups = [live]
        owners = []
        for group in groups:
            eligible = [r for r in group if not r.capacity or load[r.runner_id] < r.capacity]
            if eligible:
                owner = max(eligible, key=lambda r: _weight(monitor.id, r.runner_id))
                load[owner.runner_id] += 1
                owners.append(owner)
        return owners

    def _rebalance(self, full_sync_for: Runner | None = None, changed: set[str] | None = None) -> None:
        """Recompute owners and send each affected runner its changes. With ``changed`` only those monitors
        are reconsidered (the runners did not change), and re-sent to their owners (their spec changed)."""
        upserts: dict[str, list[Monitor]] = {}
        removals: dict[str, list[str]] = {}
        load = {r.runner_id: 0 if changed is None else len(r.assigned) for r in self._runners.values()}
        # In id order: with capacities, who gets a monitor depends on who got the ones before, and every replica
        # must come to the same owners.
        order = sorted(self._monitors) if changed is None else sorted(changed)
        considered = set(order)
        wanted: dict[str, set[str]] = {r.runner_id: set() for r in self._runners.values()}
        for monitor_id in order:
            for runner in self._runners.values():
                if changed is not None and monitor_id in runner.assigned:
                    load[runner.runner_id] -= 1
            monitor = self._monitors.get(monitor_id)
            for owner in [] if monitor is None else self._owners(monitor, load):
                wanted[owner.runner_id].add(monitor_id)
        for runner in self._runners.values():
            target = wanted[runner.runner_id]
            for monitor_id in [m for m in runner.assigned if m in considered and m not in target]:
                del runner.assigned[monitor_id]
                removals.setdefault(runner.runner_id, []).append(monitor_id)
            for monitor_id in target:
                if monitor_id not in runner.assigned or changed is not None:
                    runner.assigned[monitor_id] = self._monitors[monitor_id]
                    upserts.setdefault(runner.runner_id, []).append(self._monitors[monitor_id])
        for runner in self._runners.values():
            if not runner.local:
                continue  # its own replica tells it
            if runner is full_sync_for:
                runner.queue.put_nowait(Change(True, list(runner.assigned.values()), []))
            elif runner.runner_id in upserts or runner.runner_id in removals:
                runner.queue.put_nowait(
                    Change(False, upserts.get(runner.runner_id, []), removals.get(runner.runner_id, []))
                )
