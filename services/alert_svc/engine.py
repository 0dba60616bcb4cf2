"""The alert lifecycle: evaluations in, alerts and their notifications out.

The engine is the sink of the monitor feed (monitors, their states and samples) and the owner of the
evaluator. Each evaluation moves the alert of its (rule, monitor) pair: pending -> firing -> (acknowledged)
-> resolved, with ``for_duration``, ``keep_firing_for``, repeats and escalation on a clock, not on samples.
Every transition is stored with the value and explanation that caused it, together with the notices it
sends, in one transaction (the outbox); the notifier hands them to NotificationService.

Notices are muted (never the state) by silences and maintenance windows, and by a rule's cooldown after its
alert on the monitor resolved. When many of one owner's alerts fire together, the first notice goes at once
and the rest that come within the group interval are held to its end, so the notifier sends them as one
message per channel set.

The fast path (a sample that changes nothing) touches no database: only transitions are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from service_runtime.database import new_id
from service_runtime.errors import FailedPrecondition, NotFound, Unavailable
from service_runtime.streams import Broadcast
from service_runtime.timeseries import SeriesKey, TimedValue, TimeSeriesStore
from services.alert_svc import metrics
from services.alert_svc.domain import (
    Alert,
    AlertEvent,
    AlertRule,
    AlertState,
    Evaluation,
    MonitorDownCondition,
    MonitorInfo,
    NoDataCondition,
    Notice,
    NoticeKind,
    SampleEvent,
    Silence,
    Transition,
    Verdict,
    condition_field,
    describe_condition,
    seconds_text,
)
from services.alert_svc.evaluator import NO_DATA_FIELD, Evaluator, HistoryRequest
from services.alert_svc.store import AlertStore
from services.alert_svc.transition_log import log_transition

log = logging.getLogger(__name__)

CONDITION = "condition"
TIMER = "timer"
DEFAULT_GROUP_INTERVAL = timedelta(seconds=10)
AFTER_FIRING = timedelta(seconds=1)  # a resolved notice's lead over its alert's held firing notice
TICK_S = 1.0
MAX_TEST_EVALUATIONS = 100
MONITOR_WAIT = timedelta(seconds=3)
HISTORY_LIMIT = 10_000  # points per series in a warm start: what the evaluator's windows hold at most
LOAD_SLICE = 2000  # series loaded per hold of the lock during a reconciliation
# Work (samples times the windows they fill; see Evaluator.load) done per turn of the event loop while history
# loads, about 30 ms here: one series with a long history and many windows had held the loop (and the lock) for
# seconds at a warm start and at every reconciliation, whatever the count of series per slice.
LOAD_BUDGET = 50_000
# Monitors of a snapshot put into the evaluator before their history is asked for: the reads of one slice run
# in InfluxDB while the next slice is put (both took seconds at 100,000 rules, one after the other).
SNAPSHOT_SLICE = 5_000
SNAPSHOT_YIELD = 500  # monitors put between turns of the event loop
# Series per history read of a warm start, gathered across slices: each InfluxDB statement scans the whole tag
# index whatever the count of series it names, so 45 reads of a slice's series each had cost influxd a third more
# CPU than the 19 of reading the series all at once.
READ_BATCH = 5_000
READS_IN_FLIGHT = 4  # history reads at a time (each sends its statements two at a time): InfluxDB's cores busy
DEFAULT_RECONCILE = timedelta(seconds=60)
STORE_RETRY_S = 5.0
STORE_PROBE_S = 1.0  # how often the time-series store is asked whether it answers (watch_store)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The garbage collector off while many long-lived objects are made (it would scan them again and again:
    two thirds of loading 100,000 rules), and what exists then frozen out of later collections."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


@dataclass(frozen=True, slots=True)
class Change:
    """One alert transition, as WatchAlerts streams it."""

    owner_id: str
    transition: Transition
    alert: Alert


@dataclass(frozen=True, slots=True)
class _History:
    """What one history read found: ``field`` of ``keys`` from ``start`` (seconds since the epoch)."""

    field: str
    keys: list[SeriesKey]
    start: float
    found: dict[SeriesKey, list[TimedValue]]


class _PendingReads:
    """History requests gathered until ``batch`` series share a field and look-back (see READ_BATCH)."""

    def __init__(self, batch: int) -> None:
        self._batch = batch
        self._series: dict[tuple[str, timedelta, bool], list[tuple[str, str]]] = {}

    def add(self, requests: Iterable[HistoryRequest], *, flush: bool) -> list[HistoryRequest]:
        """The requests due now: every group of ``batch`` series, and with ``flush`` the rest too."""
        due: list[HistoryRequest] = []
        for request in requests:
            key = (request.field, request.lookback, request.latest_only)
            series = self._series.setdefault(key, [])
            series.extend(request.series)
            while len(series) >= self._batch:
                due.append(replace(request, series=tuple(series[: self._batch])))
                del series[: self._batch]
        if flush:
            for (field, lookback, latest_only), series in self._series.items():
                if series:
                    due.append(HistoryRequest(field, lookback, tuple(series), latest_only))
            self._series.clear()
        return due


@dataclass(slots=True)
class _Pair:
    """What the engine holds for one (rule, monitor): the latest verdict and the open alert."""

    verdict: Verdict = Verdict.UNKNOWN
    alert: Alert | None = None
    # Resolved by hand while the condition still held: no new alert until it has cleared once.
    needs_clear: bool = False
    # The first evaluation that found the condition clear while the alert was open (keep_firing_for counts
    # from here, as Prometheus counts it).
    clear_since: datetime | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def headline(rule: AlertRule, explanation: str) -> str:
    """One line: the rule's own name and why ("BTC above 70k: last price = 71234.56 > 70000"), or just why
    when the name says nothing more (the default rule, a name made from the condition)."""
    name = rule.display_name
    if rule.is_default or not name or name == describe_condition(rule.condition):
        return explanation
    return f"{name}: {explanation}"


class AlertEngine:
    """Rules, monitors and open alerts of every owner (one replica evaluates them all)."""

    def __init__(
        self,
        store: AlertStore,
        timeseries: TimeSeriesStore | None,
        *,
        group_interval: timedelta = DEFAULT_GROUP_INTERVAL,
        clock: Callable[[], datetime] = _now,
        on_notices: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._timeseries = timeseries
        self._group_interval = group_interval
        self._clock = clock
        self._on_notices = on_notices
        self.evaluator = Evaluator()
        self.evaluations: Broadcast[Evaluation] = Broadcast()
        self.changes: Broadcast[Change] = Broadcast()
        self._rules: dict[str, AlertRule] = {}
        self._monitors: dict[str, MonitorInfo] = {}
        self._pairs: dict[tuple[str, str], _Pair] = {}
        self._silences: dict[str, dict[str, Silence]] = {}  # owner id -> silence id -> silence
        self._owners_with_default: set[str] = set()
        self._emails: dict[str, str] = {}  # owner id -> account address (from the feed)
        # Per owner and notice kind: when the current group window opened (storm grouping).
        self._storms: dict[tuple[str, NoticeKind], datetime] = {}
        self._lock = asyncio.Lock()
        self._reading = asyncio.Semaphore(READS_IN_FLIGHT)
        self._loaded = asyncio.Event()
        self._snapshot = asyncio.Event()
        self._arrived = asyncio.Event()  # a monitor came through the feed
        self._feed_up = False  # the feed's snapshot came and it has not broken since
        self._store_down = False  # the time-series store could not be read for history: evaluations unknown

    # --- start ---------------------------------------------------------------------------------------

    async def load(self) -> None:
        """Rules, open alerts and live silences from the store (before the feed starts)."""
        now = self._clock()
        async with self._lock:
            for rule in await self._store.all_rules():
                self._rules[rule.id] = rule
                self.evaluator.put_rule(rule, now.timestamp())
            for alert in await self._store.open_alerts():
                self._pairs[(alert.rule_id, alert.monitor_id)] = _Pair(alert=alert)
            for silence in await self._store.live_silences(now):
                self.silence_added(silence)
        self.evaluator.set_available(False)  # until the feed's first snapshot
        self._loaded.set()

    @property
    def ready(self) -> bool:
        """Whether the monitor directory is known (the feed's first snapshot arrived)."""
        return self._snapshot.is_set()

    # --- the feed ------------------------------------------------------------------------------------

    async def feed_snapshot(self, monitors: list[MonitorInfo]) -> None:
        await self._loaded.wait()
        now = self._clock()
        # The collector off while the snapshot's monitors and their history become objects (as for the rules:
        # it scanned the growing heap again and again, most of the time put_monitor took at 100,000 monitors).
        with collector_paused():
            async with self._lock:
                known = {m.monitor_id for m in monitors}
                for gone in set(self._monitors) - known:
                    await self._monitor_gone(gone, now)
                evaluations: list[Evaluation] = []
                reads: list[asyncio.Future[_History | None]] = []
                pending = _PendingReads(READ_BATCH)
                try:
                    for begin in range(0, len(monitors), SNAPSHOT_SLICE):
                        put = monitors[begin : begin + SNAPSHOT_SLICE]
                        for count, monitor in enumerate(put, 1):
                            self._monitors[monitor.monitor_id] = monitor
                            self._remember_email(monitor)
                            evaluations += self.evaluator.put_monitor(monitor, now.timestamp())
                            if count % SNAPSHOT_YIELD == 0:
                                await asyncio.sleep(0)  # the reads under way send, receive and parse meanwhile
                        if self._timeseries is not None:
                            needed = self.evaluator.history_needed(m.monitor_id for m in put)
                            last = begin + SNAPSHOT_SLICE >= len(monitors)
                            for request in pending.add(needed, flush=last):
                                reads.append(asyncio.ensure_future(self._read(request, now)))
                        await asyncio.sleep(0)  # the reads are sent while the next slice is put
                except BaseException:
                    for read in reads:
                        read.cancel()
                    raise
                self.evaluator.set_available(True)
                await self._warm_start(reads)
                # Judged before the feed was available, the snapshot's evaluations were unknown: judge every pair
                # again now that its history is loaded, so what went down or came back meanwhile acts at once.
                judged = [e for e in evaluations if e.verdict is not Verdict.UNKNOWN]
                await self._apply_all(judged + self._verdict_changes(now), now)
        self._snapshot.set()
        await self._ensure_defaults({m.owner_id for m in monitors})

    async def feed_monitor(self, monitor: MonitorInfo) -> None:
        now = self._clock()
        async with self._lock:
            self._monitors[monitor.monitor_id] = monitor
            self._remember_email(monitor)
            self._arrived.set()
            await self._apply_all(self.evaluator.put_monitor(monitor, now.timestamp()), now)
        await self._ensure_defaults({monitor.owner_id})

    def _remember_email(self, monitor: MonitorInfo) -> None:
        if monitor.owner_email:
            self._emails[monitor.owner_id] = monitor.owner_email

    def email_of(self, owner_id: str) -> str:
        """The owner's account address, where their alerts go when they have no default channel ("" unknown)."""
        return self._emails.get(owner_id, "")

    async def feed_deleted(self, monitor_id: str) -> None:
        async with self._lock:
            await self._monitor_gone(monitor_id, self._clock())

    async def feed_samples(self, samples: list[SampleEvent]) -> None:
        now = self._clock()
        async with self._lock:
            await self._apply_all(self.evaluator.add_samples(samples), now)
        metrics.SAMPLES_EVALUATED.inc(len(samples))

    async def feed_down(self) -> None:
        """The feed broke: every evaluation is unknown (nothing fires or resolves) until the next snapshot."""
        self.evaluator.set_available(False)
        self._feed_up = False

    async def _monitor_gone(self, monitor_id: str, now: datetime) -> None:
        """A deleted monitor: its open alerts resolve, and the rules made for it alone go with it (a selector
        rule stays for the owner's other monitors)."""
        monitor = self._monitors.pop(monitor_id, None)
        self.evaluator.remove_monitor(monitor_id)
        for (rule_id, pair_monitor), pair in list(self._pairs.items()):
            if pair_monitor == monitor_id:
                if pair.alert is not None:
                    await self._resolve(pair, self._rules.get(rule_id), now, "monitor deleted", "monitor deleted")
                del self._pairs[(rule_id, pair_monitor)]
        if monitor is not None:
            for rule_id in await self._store.delete_monitor_rules(monitor.owner_id, monitor_id):
                self._rules.pop(rule_id, None)
                self.evaluator.remove_rule(rule_id)

    async def _ensure_defaults(self, owners: Iterable[str]) -> None:
        """Every owner gets the default "a monitor is down" rule, once ever (the store remembers)."""
        for owner in set(owners) - self._owners_with_default:
            try:
                rule = await self._store.ensure_default_rule(owner)
            except Exception:  # the next monitor event of this owner tries again
                log.exception("could not create the default rule", extra={"owner_id": owner})
                continue
            self._owners_with_default.add(owner)
            if rule is not None:
                await self.rule_changed(rule)

    async def _warm_start(self, reads: list[asyncio.Future[_History | None]]) -> None:
        """Rebuild windows from the time-series store (the feed's snapshot just came: the feed is up) with
        ``reads``, sent as the snapshot was put: one batched read per slice of monitors and group of series
        sharing a field and look-back, with the garbage collector off while hundreds of thousands of points
        become objects, and the loaded state frozen out of later collections. A store that cannot be read
        makes evaluations unknown until the reconciliation reads it again."""
        self._feed_up = True
        started = time.perf_counter()
        try:
            with collector_paused():
                loaded = await self._load_history(self.evaluator, self._clock(), reads=reads)
        except Unavailable as error:
            log.warning("time-series store unavailable for the warm start", extra={"error": str(error)})
            self._history_failed()
            return
        finally:
            for read in reads:
                read.cancel()
            await asyncio.gather(*reads, return_exceptions=True)
        self._store_down = False
        log.info("warm start", extra={**loaded, "seconds": round(time.perf_counter() - started, 3)})

    async def _load_history(
        self,
        evaluator: Evaluator,
        now: datetime,
        *,
        silence_counts: bool = True,
        locked: bool = False,
        only: set[tuple[str, str]] | None = None,
        field: str | None = None,
        reads: Iterable[Awaitable[_History | None]] | None = None,
    ) -> dict[str, int]:
        """Fill ``evaluator``'s windows from the time-series store: the history its rules look back on, one
        :meth:`~service_runtime.timeseries.TimeSeriesStore.points_many` per history request (never one per
        rule or series). ``silence_counts``: a series with no sample in the look-back has been silent that
        long (no_data may count from there). ``locked``: take the engine's lock only to load, a slice of
        series at a time, so samples keep flowing while a reconciliation reads and loads. Either way the
        event loop is yielded after every LOAD_SLICE series or LOAD_BUDGET of work, so other calls are
        served while a big history loads. ``only`` and ``field``: just these (owner, monitor) series of that
        field (a rule just made or changed). ``reads``: what to load, already under way (else read now what
        ``evaluator`` needs, one request after another)."""
        queries = series_count = points_count = 0
        if self._timeseries is None:
            return {"queries": 0, "series": 0, "points": 0}
        if reads is None:
            reads = (self._read(request, now, only, field) for request in evaluator.history_needed())
        for read in reads:
            history = await read
            if history is None:
                continue
            queries += 1
            keys, found = history.keys, history.found
            since = history.start if silence_counts else None
            index = 0
            while index < len(keys):
                async with self._lock if locked else contextlib.nullcontext():
                    work, end = 0, min(len(keys), index + LOAD_SLICE)
                    while index < end and work < LOAD_BUDGET:
                        key = keys[index]
                        index += 1
                        points = found.get(key)
                        if points is None and since is None:
                            continue
                        points = points or []
                        work += 1 + evaluator.load(key.owner_id, key.monitor_id, history.field, points, since=since)
                        points_count += len(points)
                await asyncio.sleep(0)
            series_count += len(keys)
        return {"queries": queries, "series": series_count, "points": points_count}

    async def _read(
        self,
        request: HistoryRequest,
        now: datetime,
        only: set[tuple[str, str]] | None = None,
        field: str | None = None,
    ) -> _History | None:
        """One history read (one at a time); None when ``only`` or ``field`` leave nothing of it."""
        assert self._timeseries is not None
        if field is not None and request.field != field:
            return None
        wanted = request.series if only is None else [s for s in request.series if s in only]
        if not wanted:
            return None
        keys = [SeriesKey(owner_id, monitor_id) for owner_id, monitor_id in wanted]
        start = now - request.lookback
        limit = 1 if request.latest_only else HISTORY_LIMIT
        async with self._reading:
            found = await self._timeseries.points_many(request.field, keys, start, now, limit)
        return _History(request.field, keys, start.timestamp(), found)

    # --- reconciliation ------------------------------------------------------------------------------

    async def reconcile(self) -> bool:
        """Read the history the rules look back on again and merge it in (a sample already held counts
        once), so samples whose delivery was lost (InfluxDB subscriptions are best effort) are counted; then
        apply the evaluations whose verdict that changed. Returns whether the store could be read.

        While the store cannot be read, evaluations are unknown (nothing fires or resolves on what may be
        a partial picture: with InfluxDB, samples reach us only through it); the first read that works
        again loads what was missed and makes them known, with no_data clocks restarted then. Does nothing
        while the feed is down (its next snapshot warm-starts)."""
        if self._timeseries is None or not self._feed_up:
            return True
        started = time.perf_counter()
        now = self._clock()
        try:
            loaded = await self._load_history(self.evaluator, now, silence_counts=False, locked=True)
        except Unavailable as error:
            if not self._store_down:
                log.warning(
                    "time-series store unavailable: evaluations unknown until it answers", extra={"error": str(error)}
                )
            self._history_failed()
            return False
        async with self._lock:
            if self._store_down and self._feed_up:
                self._store_down = False
                self.evaluator.set_available(True, now.timestamp())
                log.info("time-series store available again: evaluations resume")
            changed = self._verdict_changes(now)
            await self._apply_all(changed, now)
        seconds = time.perf_counter() - started
        metrics.RECONCILE_SECONDS.observe(seconds)
        log.info("reconciled", extra={**loaded, "changed": len(changed), "seconds": round(seconds, 3)})
        return True

    async def watch_store(self, probe: Callable[[], Awaitable[None]], period_s: float = STORE_PROBE_S) -> None:
        """Ask the store whether it answers (``probe`` raises Unavailable when not) every ``period_s``, and make
        evaluations unknown as soon as it does not. With InfluxDB, samples reach us only through it: down, it
        sends nothing, and a silence the reconciliation notices only at its next round (a minute) had been taken
        for silent monitors, so every no-data rule fired. Once it answers again, a reconciliation reads what was
        missed and makes them known again."""
        while True:
            await asyncio.sleep(period_s)
            try:
                await probe()
            except Unavailable as error:
                if self._store_down or not self._feed_up:
                    continue
                async with self._lock:
                    log.warning(
                        "time-series store unavailable: evaluations unknown until it answers",
                        extra={"error": str(error)},
                    )
                    self._history_failed()
                continue
            if self._store_down:
                try:
                    await self.reconcile()  # reads what was missed, then evaluations are known again
                except Exception:
                    log.exception("reconciliation failed")

    def _history_failed(self) -> None:
        self._store_down = True
        self.evaluator.set_available(False)

    def _verdict_changes(self, now: datetime) -> list[Evaluation]:
        """Evaluations of every watched pair now, keeping those whose verdict differs from the one held."""
        stamp = now.timestamp()
        out = []
        for rule_id in self._rules:
            for monitor_id in self.evaluator.pairs(rule_id):
                evaluation = self.evaluator.evaluate(rule_id, monitor_id, stamp)
                pair = self._pairs.get((rule_id, monitor_id))
                held = pair.verdict if pair is not None else Verdict.CLEAR
                if evaluation.verdict is not Verdict.UNKNOWN and evaluation.verdict is not held:
                    out.append(evaluation)
        return out

    async def reconcile_forever(self, period: timedelta) -> None:
        """:meth:`reconcile` every ``period`` (the snapshot's warm start was the first); every
        :data:`STORE_RETRY_S` at most while the store is down."""
        while True:
            await asyncio.sleep(
                min(period.total_seconds(), STORE_RETRY_S) if self._store_down else period.total_seconds()
            )
            try:
                await self.reconcile()
            except Exception:
                log.exception("reconciliation failed")

    # --- rules ---------------------------------------------------------------------------------------

    async def monitor_of(self, owner_id: str, monitor_id: str) -> MonitorInfo:
        """The caller's monitor, NOT_FOUND for another's; UNAVAILABLE before the directory is known. A monitor
        created a moment ago may not have come through the feed yet (a rule made right after its monitor, as
        Claude does): wait up to MONITOR_WAIT for it before answering NOT_FOUND."""
        if not self.ready:
            raise Unavailable("the alert service is still loading monitors; retry in a few seconds")
        deadline = time.monotonic() + MONITOR_WAIT.total_seconds()
        while (monitor := self._monitors.get(monitor_id)) is None and time.monotonic() < deadline:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), deadline - time.monotonic())
        if monitor is None or monitor.owner_id != owner_id:
            raise NotFound("monitor", monitor_id)
        return monitor

    async def rule_changed(self, rule: AlertRule) -> None:
        now = self._clock()
        async with self._lock:
            old = self._rules.get(rule.id)
            self._rules[rule.id] = rule
            if old is not None and old.enabled and self.evaluator.retitle_rule(rule):
                # Watching and judging as before (a rename, other channels): no pair is made again, no history
                # read. Each update of a rule over 1,000 monitors had re-made and re-read them all (270 ms),
                # and a loop of renames slowed every other user's calls.
                return
            if old is not None and (old.condition != rule.condition or not rule.enabled):
                await self._drop_pairs(rule.id, now, keep=set())
            evaluations = self.evaluator.put_rule(rule, now.timestamp())
            watched = set(self.evaluator.pairs(rule.id)) if rule.enabled else set()
            await self._drop_pairs(rule.id, now, keep=watched)
            field = condition_field(rule.condition) or (
                NO_DATA_FIELD if isinstance(rule.condition, NoDataCondition) else None
            )
            if field and watched and self._timeseries is not None and self.evaluator.available:
                # A new window starts empty: fill it from the store before judging, under the lock, so no sample
                # is judged on a partial window (a count over 10m of 1) and TestAlertRule agrees from the start.
                try:
                    only = {(rule.owner_id, m) for m in watched}
                    await self._load_history(self.evaluator, now, only=only, field=field)
                except Unavailable:
                    log.warning("time-series store unavailable; the rule's windows fill as samples arrive")
                else:
                    evaluations = [self.evaluator.evaluate(rule.id, m, now.timestamp()) for m in sorted(watched)]
            await self._apply_all(evaluations, now)

    async def rule_deleted(self, rule_id: str) -> None:
        now = self._clock()
        async with self._lock:
            await self._drop_pairs(rule_id, now, keep=set())
            self._rules.pop(rule_id, None)
            self.evaluator.remove_rule(rule_id)

    async def _drop_pairs(self, rule_id: str, now: datetime, keep: set[str]) -> None:
        """Resolve open alerts of ``rule_id`` on monitors it no longer watches (or all: a changed condition)."""
        for key, pair in list(self._pairs.items()):
            if key[0] == rule_id and key[1] not in keep:
                if pair.alert is not None:
                    await self._resolve(pair, self._rules.get(rule_id), now, "rule changed", "rule changed")
                del self._pairs[key]

    # --- silences ------------------------------------------------------------------------------------

    def silence_added(self, silence: Silence) -> None:
        self._silences.setdefault(silence.owner_id, {})[silence.id] = silence

    def silence_removed(self, owner_id: str, silence_id: str) -> None:
        self._silences.get(owner_id, {}).pop(silence_id, None)

    def _muted(self, alert: Alert, now: datetime) -> bool:
        """Whether a silence of the alert's owner covers it now (only the owner's silences are looked at)."""
        return self._silence_of(alert, now) is not None

    def _silence_of(self, alert: Alert, now: datetime) -> str | None:
        """The id of a silence of the alert's owner that covers it now, if one does."""
        monitor = self._monitors.get(alert.monitor_id)
        for silence in self._silences.get(alert.owner_id, {}).values():
            if silence.matches(alert.rule_id, monitor, alert.monitor_id) and silence.active_at(now):
                return silence.id
        return None

    # --- evaluations -> transitions --------------------------------------------------------------------

    async def _apply_all(self, evaluations: Sequence[Evaluation], now: datetime) -> None:
        for evaluation in evaluations:
            key = (evaluation.rule_id, evaluation.monitor_id)
            held = self._pairs.get(key)
            before = (held.alert, held.verdict, held.clear_since) if held is not None else None
            try:
                pair = await self._apply(evaluation, now)
            except Exception:
                # The store refused the transition (down, or a conflict): the pair stays as it was in memory
                # too, so the next evaluation tries the same transition again and nothing is half done.
                log.exception("alert transition not stored", extra={"rule_id": key[0], "monitor_id": key[1]})
                if before is None:
                    self._pairs.pop(key, None)
                elif held is not None:
                    held.alert, held.verdict, held.clear_since = before
                    self._pairs[key] = held
                continue
            if self.evaluations.watched_by(evaluation.owner_id):
                alert = pair.alert if pair is not None else None
                self.evaluations.publish(
                    evaluation.owner_id,
                    replace(evaluation, state=alert.state if alert else None, alert_id=alert.id if alert else ""),
                )

    async def _apply(self, evaluation: Evaluation, now: datetime) -> _Pair | None:
        rule = self._rules.get(evaluation.rule_id)
        if rule is None or not rule.enabled:
            return None
        key = (rule.id, evaluation.monitor_id)
        pair = self._pairs.get(key)
        if evaluation.verdict is Verdict.UNKNOWN:
            return pair
        if pair is None:
            if evaluation.verdict is Verdict.CLEAR:
                return None  # nothing open, nothing to remember
            pair = self._pairs[key] = _Pair()
        pair.verdict = evaluation.verdict
        alert = pair.alert
        if evaluation.verdict is Verdict.MET:
            pair.clear_since = None
            if pair.needs_clear:
                return pair
            if alert is None:
                await self._open(pair, rule, evaluation, now)
                return pair
            alert = pair.alert = replace(
                alert,
                last_met_time=now,
                value=evaluation.value if evaluation.value is not None else alert.value,
                explanation=evaluation.explanation,
            )
            if alert.state is AlertState.PENDING and now - alert.start_time >= rule.for_duration:
                await self._fire(pair, rule, now, CONDITION)
            return pair
        pair.needs_clear = False
        if alert is None:
            del self._pairs[key]
            return None
        if alert.state is AlertState.PENDING:
            await self._resolve(pair, rule, now, CONDITION, evaluation.explanation, notify=False)
        else:
            pair.clear_since = pair.clear_since or now
            if now - pair.clear_since < rule.keep_firing_for:
                return pair  # held; the clock resolves it if the condition stays clear
            await self._resolve(pair, rule, now, CONDITION, evaluation.explanation)
        return pair

    async def _open(self, pair: _Pair, rule: AlertRule, evaluation: Evaluation, now: datetime) -> None:
        monitor = self._monitors.get(evaluation.monitor_id)
        monitor_name = monitor.display_name if monitor is not None else evaluation.monitor_id
        alert = Alert(
            id=new_id("alr"),
            owner_id=rule.owner_id,
            rule_id=rule.id,
            monitor_id=evaluation.monitor_id,
            state=AlertState.PENDING,
            severity=rule.severity,
            value=evaluation.value if evaluation.value is not None else 0.0,
            threshold=evaluation.threshold if evaluation.threshold is not None else 0.0,
            summary=f"{monitor_name}: {headline(rule, evaluation.explanation)}",
            explanation=evaluation.explanation,
            rule_name=rule.display_name,
            monitor_name=monitor_name,
            start_time=now,
            update_time=now,
            last_met_time=now,
        )
        pair.alert = alert
        if rule.for_duration:
            await self._save(pair, Transition.PENDING, CONDITION, alert.explanation, [])
        else:
            await self._fire(pair, rule, now, CONDITION)

    async def _fire(self, pair: _Pair, rule: AlertRule, now: datetime, actor: str) -> None:
        assert pair.alert is not None
        alert = pair.alert = replace(pair.alert, state=AlertState.FIRING, fire_time=now, update_time=now)
        notices: list[Notice] = []
        last_resolved = await self._store.last_resolve_time(rule.id, alert.monitor_id) if rule.cooldown else None
        cooling = last_resolved is not None and now - last_resolved < rule.cooldown
        if not cooling:
            notices = self._notices(rule, alert, NoticeKind.FIRING, now, rule.channel_ids)
        await self._save(pair, Transition.FIRED, actor, alert.explanation, notices)

    async def _resolve(
        self, pair: _Pair, rule: AlertRule | None, now: datetime, actor: str, why: str, notify: bool = True
    ) -> None:
        assert pair.alert is not None
        alert = pair.alert = replace(
            pair.alert, state=AlertState.RESOLVED, resolve_time=now, resolved_by=actor, update_time=now
        )
        notices: list[Notice] = []
        # Only those told it fired hear that it resolved.
        if notify and rule is not None and alert.notify_sequence > 0:
            notices = self._notices(rule, alert, NoticeKind.RESOLVED, now, rule.channel_ids, why)
        await self._save(pair, Transition.RESOLVED, actor, why, notices)
        pair.alert = None

    async def _save(self, pair: _Pair, transition: Transition, actor: str, why: str, notices: list[Notice]) -> None:
        assert pair.alert is not None
        alert = pair.alert
        if notices:
            alert = pair.alert = replace(
                alert, notify_time=alert.update_time, notify_sequence=alert.notify_sequence + 1
            )
        event = AlertEvent(alert.id, transition, alert.update_time, alert.value, why, actor)
        await self._store.save_alert(alert, event, notices)
        silenced_by = None if notices else self._silence_of(alert, alert.update_time)
        log_transition(alert, transition, why, actor, len(notices), silenced_by)
        metrics.TRANSITIONS.labels(transition.value).inc()
        for notice in notices:
            if notice.next_attempt_time == notice.event_time:
                self._storms[(notice.owner_id, notice.kind)] = notice.event_time
        self.changes.publish(alert.owner_id, Change(alert.owner_id, transition, alert))
        if notices:
            self._on_notices()

    def _notices(
        self,
        rule: AlertRule,
        alert: Alert,
        kind: NoticeKind,
        now: datetime,
        channels: Sequence[str],
        why: str = "",
        prefix: str = "",
    ) -> list[Notice]:
        """The notice of ``alert``'s transition (none while muted). Its summary is the one line a person needs
        (the rule and why); NotificationService's message adds the monitor, value, time and how to acknowledge."""
        if self._muted(alert, now):
            return []
        sequence = alert.notify_sequence + 1
        started = alert.fire_time or alert.start_time
        summary = prefix + headline(rule, why or alert.explanation)
        measured = not isinstance(rule.condition, MonitorDownCondition | NoDataCondition)
        return [
            Notice(
                id=new_id("ntc"),
                owner_id=alert.owner_id,
                idempotency_key=f"{alert.id}:{kind.value}:{sequence}",
                channel_ids=tuple(channels),
                kind=kind,
                severity=alert.severity,
                alert_id=alert.id,
                rule_id=rule.id,
                monitor_id=alert.monitor_id,
                monitor_name=alert.monitor_name,
                summary=summary[:2000],
                # A state (down, silent) has no value to show: 0 and 0, which messages leave out.
                value=alert.value if measured else 0.0,
                threshold=alert.threshold if measured else 0.0,
                event_time=now,
                duration=(now - started) if kind is NoticeKind.RESOLVED else None,
                next_attempt_time=max(self._due(alert.owner_id, kind, now), self._after_firing(alert, kind, now)),
            )
        ]

    def _after_firing(self, alert: Alert, kind: NoticeKind, now: datetime) -> datetime:
        """Not before the alert's own firing notice: one held to the end of its group window (a storm) would
        otherwise reach the receiver after the alert's resolved or acknowledged notice, sent at once."""
        if kind is NoticeKind.FIRING or alert.fire_time is None:
            return now
        opened = self._storms.get((alert.owner_id, NoticeKind.FIRING))
        if opened is None or not opened < alert.fire_time < opened + self._group_interval:
            return now  # its firing notice went at once (or its window has passed)
        return opened + self._group_interval + AFTER_FIRING

    def _due(self, owner_id: str, kind: NoticeKind, now: datetime) -> datetime:
        """When a notice may go: now for the first of a group window, else at the window's end (grouped)."""
        opened = self._storms.get((owner_id, kind))
        if opened is None or now >= opened + self._group_interval:
            return now  # opens a group window once stored (see _save)
        return opened + self._group_interval

    # --- the clock -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Every second: time-driven evaluations, pending alerts whose for_duration passed, held alerts whose
        keep_firing_for ran out, repeats and escalations."""
        while True:
            started = time.monotonic()
            try:
                await self.tick()
            except Exception:
                log.exception("alert clock tick failed")
            await asyncio.sleep(max(0.05, TICK_S - (time.monotonic() - started)))

    async def tick(self) -> None:
        now = self._clock()
        async with self._lock:
            await self._apply_all(self.evaluator.tick(now.timestamp()), now)
            for (rule_id, _), pair in list(self._pairs.items()):
                rule = self._rules.get(rule_id)
                alert = pair.alert
                if rule is None or alert is None:
                    continue
                if alert.state is AlertState.PENDING:
                    if pair.verdict is Verdict.MET and now - alert.start_time >= rule.for_duration:
                        await self._fire(pair, rule, now, TIMER)
                    continue
                if (
                    pair.verdict is Verdict.CLEAR
                    and pair.clear_since is not None
                    and now - pair.clear_since >= rule.keep_firing_for
                ):
                    held = seconds_text(rule.keep_firing_for)
                    await self._resolve(pair, rule, now, TIMER, f"condition clear for keep_firing_for {held}")
                    continue
                if alert.state is not AlertState.FIRING:
                    continue
                if rule.repeat_interval and alert.notify_time and now - alert.notify_time >= rule.repeat_interval:
                    pair.alert = replace(alert, update_time=now)
                    notices = self._notices(rule, pair.alert, NoticeKind.REPEATED, now, rule.channel_ids)
                    if notices:
                        await self._save(pair, Transition.REPEATED, TIMER, "still firing", notices)
                    else:  # muted: count the repeat from now
                        pair.alert = replace(pair.alert, notify_time=now)
                    alert = pair.alert
                if (
                    rule.escalate_after
                    and alert.escalate_time is None
                    and alert.fire_time is not None
                    and now - alert.fire_time >= rule.escalate_after
                ):
                    pair.alert = replace(alert, escalate_time=now, update_time=now)
                    prefix = f"Escalated, unacknowledged for {seconds_text(rule.escalate_after)}: "
                    notices = self._notices(
                        rule, pair.alert, NoticeKind.FIRING, now, rule.escalation_channel_ids, prefix=prefix
                    )
                    notices = [replace(n, idempotency_key=f"{alert.id}:escalated") for n in notices]
                    await self._save(pair, Transition.ESCALATED, TIMER, "unacknowledged", notices)

    # --- people --------------------------------------------------------------------------------------

    def _open_alert(self, owner_id: str, alert_id: str) -> _Pair | None:
        for pair in self._pairs.values():
            if pair.alert is not None and pair.alert.id == alert_id and pair.alert.owner_id == owner_id:
                return pair
        return None

    async def acknowledge(self, owner_id: str, alert_id: str, user_id: str, comment: str) -> Alert:
        """Acknowledge a firing alert: repeats and escalation stop. Idempotent."""
        async with self._lock:
            pair = self._open_alert(owner_id, alert_id)
            if pair is None or pair.alert is None:
                stored = await self._store.get_alert(owner_id, alert_id)
                if stored.state is AlertState.RESOLVED:
                    raise FailedPrecondition(f"alert {alert_id} is resolved")
                return stored
            alert = pair.alert
            if alert.state is AlertState.ACKNOWLEDGED:
                return alert
            if alert.state is AlertState.PENDING:
                raise FailedPrecondition(f"alert {alert_id} is pending, not firing yet")
            now = self._clock()
            pair.alert = replace(
                alert,
                state=AlertState.ACKNOWLEDGED,
                acknowledge_time=now,
                acknowledged_by=user_id,
                comment=comment or alert.comment,
                update_time=now,
            )
            await self._save(pair, Transition.ACKNOWLEDGED, user_id, comment or "acknowledged", [])
            return pair.alert

    async def resolve(self, owner_id: str, alert_id: str, user_id: str, comment: str) -> Alert:
        """Resolve an alert by hand. Idempotent; while the condition still holds, no new alert is raised
        until it has cleared once."""
        async with self._lock:
            pair = self._open_alert(owner_id, alert_id)
            if pair is None or pair.alert is None:
                return await self._store.get_alert(owner_id, alert_id)
            pair.alert = replace(pair.alert, comment=comment or pair.alert.comment)
            resolved_id = pair.alert.id
            await self._resolve(
                pair, self._rules.get(pair.alert.rule_id), self._clock(), user_id, comment or "resolved"
            )
            pair.needs_clear = pair.verdict is Verdict.MET
            return await self._store.get_alert(owner_id, resolved_id)

    # --- tests of a rule -----------------------------------------------------------------------------

    async def test(self, rule: AlertRule) -> list[Evaluation]:
        """Evaluate ``rule`` now on each monitor it watches (at most 100), changing nothing: on the live
        state when the rule is loaded and unchanged, else on a scratch evaluator warmed from the store."""
        now = self._clock()
        live = self._rules.get(rule.id)
        if live is not None and live == rule and rule.enabled:
            monitor_ids = self.evaluator.pairs(rule.id)[:MAX_TEST_EVALUATIONS]
            return [self.evaluator.evaluate(rule.id, m, now.timestamp()) for m in monitor_ids]
        scratch = Evaluator()
        watched = [m for m in self._monitors.values() if rule.watches(m)][:MAX_TEST_EVALUATIONS]
        for monitor in watched:
            scratch.put_monitor(monitor, now.timestamp())
        scratch.put_rule(replace(rule, enabled=True), now.timestamp())
        await self._load_history(scratch, now)
        return [scratch.evaluate(rule.id, m.monitor_id, now.timestamp()) for m in watched]

    def rule_count(self) -> int:
        return len(self._rules)

    def open_alert_count(self) -> int:
        return sum(1 for pair in self._pairs.values() if pair.alert is not None)

    def open_alerts_of(self, owner_id: str) -> list[Alert]:
        return [p.alert for p in self._pairs.values() if p.alert is not None and p.alert.owner_id == owner_id]

    async def stop(self) -> None:
        """End every watcher's stream (the server drains)."""
        self.evaluations.close_all()
        self.changes.close_all()
