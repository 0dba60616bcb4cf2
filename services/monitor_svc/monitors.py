"""Monitor rules: create, change, pause, read status and data. Plain Python over the stores."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from service_runtime.auth import Principal
from service_runtime.errors import InvalidArgument, NotFound, ResourceExhausted, require_id
from service_runtime.pagination import PageRequest
from service_runtime.rate_limits import Rate, RateLimiter, wait_text
from service_runtime.timeseries import Aggregation, Sample, SeriesKey, TimeSeriesStore
from service_runtime.timeseries.queries import QueryResult, query_samples
from services.monitor_svc.checks import Outcome
from services.monitor_svc.domain import (
    DEFAULT_TIMEOUT,
    MAX_TIMEOUT,
    CheckResult,
    HeartbeatSpec,
    Limits,
    ListingFilter,
    Monitor,
    MonitorDraft,
    MonitorState,
    MonitorStatus,
    Placement,
    Spec,
    check_field,
    next_status,
    secret_names,
    validate,
)
from services.monitor_svc.locations import KnownLocations
from services.monitor_svc.state_log import log_state_change
from services.monitor_svc.store import MonitorStore
from services.monitor_svc.summaries.overview import summarize_many
from services.monitor_svc.summaries.queries import (
    AvailabilitySummary,
    CryptoPriceSummary,
    WebsiteSummary,
)
from services.monitor_svc.user_secrets import UserSecrets


@dataclass(frozen=True)
class Deployment:
    """What GetDeploymentStatus reports about this deployment."""

    version: str
    mode: str  # embedded or production
    database_backend: str
    timeseries_backend: str


@dataclass(frozen=True)
class RunnerPlacement:
    """A runner as one caller may see it: ``assigned`` counts the monitors that caller may know of. A runner's pod
    that is not connected (on Kubernetes) has no ``connect_time``; ``ready`` and ``restarts`` are its pod's."""

    runner_id: str
    location: str
    connect_time: datetime | None
    last_report_time: datetime | None
    assigned: int
    version: str
    ready: bool = True
    restarts: int = 0


class PlacedRunner(Protocol):
    runner_id: str
    location: str
    connect_time: datetime
    last_report_time: datetime | None
    version: str

    @property
    def assigned(self) -> Mapping[str, Monitor]: ...


def placement(runners: Iterable[PlacedRunner], caller: Principal) -> list[RunnerPlacement]:
    """The runners ``caller`` may see: every runner with every monitor for the operator (its role token), and for
    a user only the runners that check their monitors, counting theirs alone. Runner names (host names, process
    ids) and the size of the fleet are the operator's to know, not every user's."""
    shown = []
    for runner in runners:
        mine = sum(1 for m in runner.assigned.values() if caller.service or m.owner_id == caller.user_id)
        if caller.service or mine:
            shown.append(
                RunnerPlacement(
                    runner.runner_id,
                    runner.location,
                    runner.connect_time,
                    runner.last_report_time,
                    mine,
                    runner.version,
                )
            )
    return shown


class Replicas(Protocol):
    """The other replicas of this service (:mod:`services.monitor_svc.replicas`): told of each change of a monitor
    and each batch of results recorded here, so that their runners and watchers follow. Telling them never
    fails a call: a notice that cannot go is logged, and the database stays the truth they resync from."""

    async def monitor_changed(self, monitor_id: str) -> None: ...

    async def results_recorded(self, samples: Sequence[Sample], monitor_ids: Sequence[str]) -> None: ...


class NoReplicas:
    """One process serves the database (embedded, or no Redis to share): nobody to tell."""

    async def monitor_changed(self, monitor_id: str) -> None:
        return None

    async def results_recorded(self, samples: Sequence[Sample], monitor_ids: Sequence[str]) -> None:
        return None


class CheckRunner(Protocol):
    """Runs one check (RunCheck's: :class:`services.monitor_svc.check_worker.CheckWorkers`, off the API loop)."""

    async def run(self, spec: Spec, timeout_s: float, secrets: Mapping[str, str] | None = None) -> Outcome: ...


# RunChecks one user may have running at once: enough to try a few targets side by side, too few for one
# user to take the check workers from everyone else.
RUN_CHECKS_PER_USER = 3
# And how often: one user with 20 callers had made about 580 outbound checks a second from our addresses. Ten at
# once covers trying a few targets and variants in a row; one a second after that is a person iterating, not a
# scanner (MONITORS_RUN_CHECK_BURST / MONITORS_RUN_CHECK_EVERY_S).
RUN_CHECK_RATE = Rate(burst=10, every_s=1.0)

MUTABLE_PATHS = ("display_name", "spec", "interval", "timeout", "retries", "locations", "quorum", "labels")
Summary = WebsiteSummary | CryptoPriceSummary | AvailabilitySummary
# What UpdateMonitor writes: MUTABLE_PATHS' columns, never ``paused`` (PauseMonitor's) or the identity.
UPDATED_COLUMNS = ("spec", "display_name", "interval_s", "timeout_s", "retries", "locations", "quorum", "labels")


class KeyedLocks:
    """One asyncio lock per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: Counter[str] = Counter()

    @asynccontextmanager
    async def hold(self, keys: Iterable[str]) -> AsyncIterator[None]:
        ordered = sorted(set(keys))  # one order for every caller, so two holders of overlapping keys cannot deadlock
        self._users.update(ordered)
        try:
            async with AsyncExitStack() as stack:
                for key in ordered:
                    await stack.enter_async_context(self._locks.setdefault(key, asyncio.Lock()))
                yield
        finally:
            for key in ordered:
                self._users[key] -= 1
                if not self._users[key]:
                    del self._users[key], self._locks[key]


def finite_fields(fields: Mapping[str, float]) -> dict[str, float]:
    """``fields`` without NaN and infinities: JSON has no such numbers, so no store could keep or query them."""
    return {name: value for name, value in fields.items() if math.isfinite(value)}


def last_check_time(status: MonitorStatus, location: str) -> datetime | None:
    """When the latest result stored in ``status`` from ``location`` was checked (None if there is none)."""
    entry = status.location_results.get(location)
    if entry is not None:
        return entry.result.time
    last = status.last_result
    return last.time if last is not None and last.location == location else None


# A monitor no runner has reported for this long is UNKNOWN, not the state of its last check: a runner that
# stopped or cannot reach us must not leave healthy-looking monitors UP with a frozen last check.
STALE_INTERVALS = 3
STALE_GRACE = timedelta(seconds=10)  # report batching, a runner's reconnect, clock differences


def stale_after(monitor: Monitor) -> timedelta:
    """How long after its last check (or its last change, with no check since) ``monitor`` reads UNKNOWN."""
    return STALE_INTERVALS * monitor.interval + monitor.timeout + STALE_GRACE


def status_as_read(monitor: Monitor, status: MonitorStatus, now: datetime) -> MonitorStatus:
    """``status`` as a user reads it at ``now``: PAUSED while paused (since it was paused), UNKNOWN once no runner has
    reported it for :func:`stale_after` (since then), else as stored. A heartbeat monitor's state comes from
    its pings, judged by this service, so it is never stale."""
    if monitor.paused:  # since the pause: pausing (or a change while paused) is the monitor's last change
        return replace(status, state=MonitorState.PAUSED, state_change_time=monitor.update_time)
    if isinstance(monitor.spec, HeartbeatSpec):
        return status
    # A change (an update, a resume) restarts the wait: the old last check says nothing about the new schedule.
    heard = max(status.last_check_time or monitor.update_time, monitor.update_time)
    due = heard + stale_after(monitor)
    if now >= due and status.state is not MonitorState.UNKNOWN:
        return replace(status, state=MonitorState.UNKNOWN, state_change_time=due)
    return status


MAX_SUMMARY_PAGE = 10_000  # summaries in one SummarizeMonitors page
MAX_SUMMARIZED_IDS = 10_000  # monitor ids one SummarizeMonitors call may name
# Monitors read at a time while a filtered listing looks for a page's worth that pass.
LISTING_SCAN = 500


class Monitors:
    """Monitors of the calling user, and the results runners report for them."""

    def __init__(
        self,
        store: MonitorStore,
        timeseries: TimeSeriesStore,
        checker: CheckRunner,
        secrets: UserSecrets,
        limits: Limits | None = None,
        run_checks_per_user: int = RUN_CHECKS_PER_USER,
        locations: KnownLocations | None = None,
        run_check_rate: Rate = RUN_CHECK_RATE,
    ) -> None:
        self._store = store
        # The locations monitors may name; None accepts any (domain tests of other rules build no registry).
        self._locations = locations
        self._timeseries = timeseries
        self._checker = checker
        self._run_checks_per_user = run_checks_per_user
        self._running_checks: Counter[str] = Counter()  # by user id
        self._run_check_rate = RateLimiter(run_check_rate)  # by user id
        self.limits = limits or Limits()
        self.secrets = secrets
        secrets.change_listeners.append(self._secret_changed)
        # Awaited with a monitor's id and its new state (None once deleted) after every change.
        self.change_listeners: list[Callable[[str, Monitor | None], Awaitable[None]]] = []
        # Called with the samples written and the statuses stored after each recorded batch, still under the
        # monitors' locks (so listeners see one monitor's batches in order): the monitor event feed.
        self.record_listeners: list[Callable[[Sequence[Sample], Sequence[MonitorStatus]], None]] = []
        self._recording = KeyedLocks()
        # A monitor's write and its change notice, one change at a time: listeners (the assignment hub) get
        # the changes in the order they were stored.
        self._changing = KeyedLocks()
        self.replicas: Replicas = NoReplicas()

    async def _changed(self, monitor_id: str, monitor: Monitor | None) -> None:
        for listener in self.change_listeners:
            await listener(monitor_id, monitor)
        await self.replicas.monitor_changed(monitor_id)

    async def changed_elsewhere(self, monitor_id: str) -> None:
        """Another replica changed (or deleted) this monitor: this one's listeners get it as stored now. Read
        from the database rather than taken from the notice, so that notices of one monitor crossing on their way
        from two replicas still leave every replica with the latest."""
        async with self._changing.hold((monitor_id,)):
            found = await self._store.find([monitor_id])
            monitor = found[0] if found else None
            for listener in self.change_listeners:
                await listener(monitor_id, monitor)

    async def recorded_elsewhere(self, samples: Sequence[Sample], monitor_ids: Sequence[str]) -> None:
        """Another replica recorded results of these monitors: this one's record listeners get the samples and
        the statuses as stored now (read under the monitors' locks here, so a listener never sees a monitor's
        status go back to an older one than this replica recorded itself)."""
        async with self._recording.hold(monitor_ids):
            monitors = await self._store.find(monitor_ids)
            statuses = await self._store.statuses(monitors)
            stored = [statuses[m.id] for m in monitors]
            for listener in self.record_listeners:
                listener(samples, stored)

    async def all_monitors(self) -> list[Monitor]:
        return await self._store.all_monitors()

    async def _secret_changed(self, owner_id: str, name: str) -> None:
        for monitor in await self._store.of_owner(owner_id):
            if name in secret_names(monitor.spec):
                await self._changed(monitor.id, monitor)  # its runner gets the new value

    async def secrets_for(self, monitor: Monitor) -> dict[str, str]:
        """The secret values ``monitor``'s spec refers to (for the runner that checks it)."""
        return await self.secrets.values(monitor.owner_id, secret_names(monitor.spec))

    async def _require_secrets(self, owner_id: str, spec: Spec | None, path: str) -> None:
        needed = secret_names(spec) if spec is not None else set()
        missing = sorted(needed - await self.secrets.names(owner_id)) if needed else []
        if missing:
            raise InvalidArgument(path, f"refers to secret {', '.join(missing)}, which is not set; PutSecret it first")

    @property
    def store(self) -> MonitorStore:
        return self._store

    async def _require_locations(self, locations: Sequence[str], current: Sequence[str] = ()) -> None:
        if self._locations is not None:
            await self._locations.require(locations, "monitor.locations", current)

    async def location_served(self, location: str) -> None:
        """A runner connected from ``location``: monitors may name it from now on."""
        if self._locations is not None and location:
            await self._locations.served(location)

    async def create(self, caller: Principal, draft: MonitorDraft) -> Monitor:
        valid = validate(draft, self.limits)
        await self._require_secrets(caller.user_id, valid.spec, "monitor.spec")
        await self._require_locations(valid.locations)
        if valid.placement is Placement.DEDICATED:  # a pod each: few per user
            most = self.limits.max_dedicated_monitors
            owned = await self._store.of_owner(caller.user_id)
            if sum(m.placement is Placement.DEDICATED for m in owned) >= most:
                raise ResourceExhausted(
                    "dedicated_monitors_per_user",
                    f"you have {most} dedicated monitors, the most this deployment allows; delete one first",
                )
        monitor = await self._store.create(caller.user_id, valid, self.limits.max_monitors)
        await self._changed(monitor.id, monitor)
        return monitor

    async def _owned(self, caller: Principal, monitor_id: str, field: str = "id") -> Monitor:
        """The caller's monitor ``monitor_id``; INVALID_ARGUMENT naming ``field`` when no id is given."""
        return await self._store.get(caller.user_id, require_id(monitor_id, field, "mon_...", "ListMonitors"))

    async def get(self, caller: Principal, monitor_id: str) -> Monitor:
        return await self._owned(caller, monitor_id)

    async def list(
        self, caller: Principal, size: int, token: str, only: ListingFilter | None = None
    ) -> tuple[list[tuple[Monitor, MonitorStatus]], str]:
        """A page of the caller's monitors that pass ``only``, in id order, each with its status as
        GetMonitorStatus reads it at this instant; and the token of the next page ("" after the last). A page
        is always full but the last: filtered out monitors are skipped, not left as gaps."""
        request = PageRequest.of(size, token)
        only = only or ListingFilter()
        after = request.after
        now = datetime.now(UTC)
        found: list[tuple[Monitor, MonitorStatus]] = []
        scan = request.read_limit if only == ListingFilter() else max(request.read_limit, LISTING_SCAN)
        while len(found) < request.read_limit:
            chunk = await self._store.list_page(caller.user_id, after, scan)
            admitted = [m for m in chunk if only.admits_monitor(m)]
            statuses = await self._store.statuses(admitted) if admitted else {}
            for monitor in admitted:
                status = status_as_read(monitor, statuses[monitor.id], now)
                if only.admits_status(status):
                    found.append((monitor, status))
            if len(chunk) < scan:
                break
            after = chunk[-1].id
        return request.cut(found, lambda m: m[0].id)

    async def update(self, caller: Principal, monitor_id: str, draft: MonitorDraft, paths: Sequence[str]) -> Monitor:
        """Change the fields named in ``paths`` (every mutable field when empty) to their values in ``draft``."""
        unknown = [p for p in paths if p not in MUTABLE_PATHS]
        if unknown:
            raise InvalidArgument(
                "update_mask", f"cannot update {', '.join(unknown)}; mutable: {', '.join(MUTABLE_PATHS)}"
            )
        current = await self._owned(caller, monitor_id, "monitor.id")
        chosen = set(paths or MUTABLE_PATHS)
        merged = MonitorDraft(
            spec=draft.spec if "spec" in chosen else current.spec,
            display_name=draft.display_name if "display_name" in chosen else current.display_name,
            interval=draft.interval if "interval" in chosen else current.interval,
            timeout=draft.timeout if "timeout" in chosen else current.timeout,
            retries=draft.retries if "retries" in chosen else current.retries,
            locations=draft.locations if "locations" in chosen else current.locations,
            quorum=draft.quorum if "quorum" in chosen else current.quorum,
            labels=draft.labels if "labels" in chosen else current.labels,
            placement=current.placement,  # set on create only; its rules still hold (one location if dedicated)
        )
        valid = validate(merged, self.limits)
        assert valid.spec is not None
        assert valid.interval is not None
        assert valid.timeout is not None
        if type(valid.spec) is not type(current.spec):
            raise InvalidArgument("monitor.spec", "cannot change a monitor's type; create a new monitor")
        await self._require_secrets(caller.user_id, valid.spec, "monitor.spec")
        await self._require_locations(valid.locations, current.locations)
        async with self._changing.hold((monitor_id,)):
            saved = await self._store.save(
                replace(
                    current,
                    spec=valid.spec,
                    display_name=valid.display_name,
                    interval=valid.interval,
                    timeout=valid.timeout,
                    retries=valid.retries,
                    locations=valid.locations,
                    quorum=valid.quorum,
                    labels=dict(valid.labels),
                ),
                UPDATED_COLUMNS,
            )
            await self._changed(saved.id, saved)
        return saved

    async def delete(self, caller: Principal, monitor_id: str) -> None:
        require_id(monitor_id, "id", "mon_...", "ListMonitors")
        async with self._changing.hold((monitor_id,)):
            await self._store.delete(caller.user_id, monitor_id)
            await self._changed(monitor_id, None)

    async def set_paused(self, caller: Principal, monitor_id: str, paused: bool) -> Monitor:
        current = await self._owned(caller, monitor_id)
        if current.paused == paused:
            return current
        async with self._changing.hold((monitor_id,)):
            saved = await self._store.save(replace(current, paused=paused), ("paused",))
            await self._changed(saved.id, saved)
        return saved

    async def status(self, caller: Principal, monitor_id: str) -> MonitorStatus:
        monitor = await self._owned(caller, monitor_id)
        return status_as_read(monitor, await self._store.status(monitor), datetime.now(UTC))

    async def run_check(
        self, caller: Principal, monitor_id: str, spec: Spec | None, check_timeout: timedelta | None
    ) -> CheckResult:
        """Run one check now, of a saved monitor or of an unsaved spec; store nothing. A user runs at most
        ``run_checks_per_user`` at once, and ``run_check_rate`` over time (RESOURCE_EXHAUSTED beyond)."""
        if self._running_checks[caller.user_id] >= self._run_checks_per_user:
            raise ResourceExhausted(
                "run_checks_per_user",
                f"you have {self._run_checks_per_user} checks running, the most at once; "
                "wait for one to finish, then retry",
            )
        self._running_checks[caller.user_id] += 1
        try:
            return await self._run_check(caller, monitor_id, spec, check_timeout)
        finally:
            self._running_checks[caller.user_id] -= 1
            if not self._running_checks[caller.user_id]:
                del self._running_checks[caller.user_id]

    async def _run_check(
        self, caller: Principal, monitor_id: str, spec: Spec | None, check_timeout: timedelta | None
    ) -> CheckResult:
        timeout = check_timeout
        if timeout is not None and not timedelta(0) < timeout <= MAX_TIMEOUT:
            raise InvalidArgument("timeout", "must be between 0s and 60s")
        if monitor_id:
            monitor = await self._store.get(caller.user_id, monitor_id)
            spec, timeout = monitor.spec, timeout or monitor.timeout
        elif spec is None:
            raise InvalidArgument("spec", "set monitor_id or spec")
        else:
            validate(MonitorDraft(spec=spec), self.limits, prefix="")
        # Counted once the request is known to be good: only checks that go out spend the user's rate.
        if wait := self._run_check_rate.take(caller.user_id):
            rate = self._run_check_rate.rate
            raise ResourceExhausted(
                "run_check_rate",
                f"too many checks run in a short time (up to {rate.burst} in a row, then one every "
                f"{wait_text(rate.every_s)}); retry in {wait_text(wait)}",
            )
        values = await self.secrets.values(caller.user_id, secret_names(spec))
        started = datetime.now(UTC)
        outcome = await self._checker.run(spec, (timeout or DEFAULT_TIMEOUT).total_seconds(), values)
        return outcome.result(monitor_id, started)

    async def record(self, monitor: Monitor, result: CheckResult) -> MonitorStatus:
        """Store a check result: a sample in the time-series store, and the monitor's new status."""
        return (await self.record_many([(monitor, result)]))[0]

    async def record_many(self, recorded: Sequence[tuple[Monitor, CheckResult]]) -> Sequence[MonitorStatus]:
        """Store check results (a runner's batch): their samples in one time-series write, then each
        monitor's new status, read and written in one transaction each. Results of one monitor apply in order.
        A result not newer than the last one stored for its monitor and location is a repeat (a runner resending
        a report whose answer it missed) and is skipped. Returns the status after each result."""
        # Shielded: a caller that gives up (a report past its deadline) must not stop this between the samples
        # and the status, which would leave the resent results looking new.
        return await asyncio.shield(self._record_many(recorded))

    async def _record_many(self, recorded: Sequence[tuple[Monitor, CheckResult]]) -> Sequence[MonitorStatus]:
        # Read-compute-write of a status with its monitor held, so that two reports of one monitor (two
        # locations, or a resend, to this replica or to two) never read the same status and lose one update:
        # here by a lock in this process, which also orders this process's listeners, and across replicas by
        # the monitor's row, locked from the read until the status is written. The samples of the results that
        # look new are written first, outside the row locks (no database connection waits on InfluxDB): a
        # crash before the status leaves the results looking new, and their resend writes the same points again,
        # as does another replica's write of the same result (InfluxDB keeps one point per series and time).
        monitors = [monitor for monitor, _ in recorded]
        async with self._recording.hold(monitor.id for monitor in monitors):
            looked_new, _, _ = _applied(await self._store.statuses(monitors), recorded)
            if looked_new:
                await self._timeseries.write([_sample(monitor, result) for monitor, result in looked_new])
            async with self._store.updating_statuses(monitors) as update:
                fresh, after, changes = _applied(update.current, recorded)
                stored = list({status.monitor_id: status for _, _, status in changes}.values())
                await update.put(stored)
            for monitor, before, status in changes:
                log_state_change(monitor, before, status)
            if fresh:
                samples = [_sample(monitor, result) for monitor, result in fresh]
                for listener in self.record_listeners:
                    listener(samples, stored)
                await self.replicas.results_recorded(samples, [status.monitor_id for status in stored])
            return after

    async def query(
        self,
        caller: Principal,
        monitor_id: str,
        field_name: str,
        start: datetime | None,
        end: datetime | None,
        window: timedelta | None,
        aggregation: Aggregation | None,
        max_points: int,
    ) -> QueryResult:
        monitor = await self._owned(caller, monitor_id, "monitor_id")
        check_field(monitor.kind, field_name)
        start, end = _range(start, end)
        key = SeriesKey(caller.user_id, monitor.id)
        return await query_samples(
            self._timeseries, key, field_name, start, end, window=window, aggregation=aggregation, max_points=max_points
        )

    async def summarize(
        self, caller: Principal, monitor_id: str, start: datetime | None, end: datetime | None
    ) -> tuple[datetime, datetime, Summary]:
        monitor = await self._owned(caller, monitor_id, "monitor_id")
        start, end = _range(start, end)
        # Read as SummarizeMonitors reads it (the stores' digests, up to two days), so that both give the same
        # figures, the latest checks included while InfluxDB has not taken them yet.
        found = await summarize_many(self._timeseries, caller.user_id, [(monitor.id, monitor.kind.value)], start, end)
        return start, end, found[monitor.id]

    async def summarize_many(
        self,
        caller: Principal,
        monitor_ids: Sequence[str],
        labels: Mapping[str, str],
        start: datetime | None,
        end: datetime | None,
        size: int,
        token: str,
    ) -> tuple[datetime, datetime, Sequence[tuple[Monitor, Summary]], str]:
        """A page of summaries of the caller's monitors (those named, or those with ``labels``, or all), in id
        order, from a few grouped queries for the whole page; and the next page's token ("" after the last)."""
        request = PageRequest.of(size, token, maximum=MAX_SUMMARY_PAGE)
        start, end = _range(start, end)
        chosen = _selected(await self._store.of_owner(caller.user_id), monitor_ids, labels)
        remaining = [m for m in chosen if request.after is None or m.id > request.after]
        page, next_token = request.cut(remaining, lambda m: m.id)
        found = await summarize_many(self._timeseries, caller.user_id, [(m.id, m.kind.value) for m in page], start, end)
        return start, end, [(m, found[m.id]) for m in page], next_token


def _applied(
    statuses: Mapping[str, MonitorStatus], recorded: Sequence[tuple[Monitor, CheckResult]]
) -> tuple[list[tuple[Monitor, CheckResult]], list[MonitorStatus], list[tuple[Monitor, MonitorStatus, MonitorStatus]]]:
    """``recorded`` applied in order to ``statuses``: the results that are new (each newer than the last one
    stored for its monitor and location, with NaN and infinite fields dropped), the status after each result,
    and each change (monitor, before, after). A result not newer is a repeat (a runner resending a report whose
    answer it missed) and changes nothing."""
    current = dict(statuses)
    fresh = []
    after = []
    changes = []
    for monitor, result in recorded:
        last = last_check_time(current[monitor.id], result.location)
        if last is None or result.time > last:
            result = replace(result, fields=finite_fields(result.fields))
            before = current[monitor.id]
            current[monitor.id] = next_status(monitor, before, result)
            changes.append((monitor, before, current[monitor.id]))
            fresh.append((monitor, result))
        after.append(current[monitor.id])
    return fresh, after, changes


def _sample(monitor: Monitor, result: CheckResult) -> Sample:
    notes = {"error_class": result.error_class, "message": result.message} if not result.is_up else {}
    tags = {"location": result.location, **result.tags} if result.location else dict(result.tags)
    fields = {**result.fields, "is_up": 1.0 if result.is_up else 0.0}
    return Sample(monitor.owner_id, monitor.id, result.time, fields, tags, notes)


def _selected(monitors: Sequence[Monitor], monitor_ids: Sequence[str], labels: Mapping[str, str]) -> list[Monitor]:
    """The monitors named in ``monitor_ids`` (NOT_FOUND for one not among ``monitors``), or else those with every
    label of ``labels``, in id order."""
    if monitor_ids and labels:
        raise InvalidArgument("label_selector", "set monitor_ids or label_selector, not both")
    if len(monitor_ids) > MAX_SUMMARIZED_IDS:
        raise InvalidArgument("monitor_ids", f"name at most {MAX_SUMMARIZED_IDS:,} monitors; page through the rest")
    if monitor_ids:
        by_id = {m.id: m for m in monitors}
        for monitor_id in monitor_ids:
            if monitor_id not in by_id:
                raise NotFound("monitor", monitor_id)
        return sorted((by_id[i] for i in set(monitor_ids)), key=lambda m: m.id)
    only = ListingFilter(labels=dict(labels))
    return sorted((m for m in monitors if only.admits_monitor(m)), key=lambda m: m.id)


def _range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """Defaults: the last 24 hours up to now."""
    end = end or datetime.now(UTC)
    if start is None:
        try:
            start = end - timedelta(days=1)
        except OverflowError:  # an end_time in year 1's first day
            raise InvalidArgument("time_range.end_time", "leaves no day before it to show") from None
    if not start < end:
        raise InvalidArgument("time_range", "start_time must be before end_time")
    return start, end
