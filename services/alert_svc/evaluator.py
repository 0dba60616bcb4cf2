"""Streamed, incremental evaluation of alert rules: bounded state per rule and series, updated per sample.

Pure Python, no I/O: the feeds hand samples and monitor changes in, the lifecycle takes evaluations out.

What each condition means (T is the reference time: the series' latest sample when samples arrive, the
clock's now on :meth:`Evaluator.tick` and :meth:`Evaluator.evaluate`):

- **threshold**: ``aggregation(field)`` over the samples in ``(T - window, T]`` compared with the value.
  Percentiles are nearest-rank exactly as the time-series stores define them (rank ``int(n * q + 0.5)``).
  A zero window reads the latest value, however old. An empty window is UNKNOWN ("no samples in the last
  5m"): absence is no_data's job, and an alert must not resolve falsely because a runner stalled.
- **change**: the percentage move from the oldest sample in the window to the latest (a move from 0 is
  infinite unless it stays 0); MET when it reaches ``percent`` up, down or either way. Empty: UNKNOWN.
- **monitor_down**: the monitor service's state: DOWN is MET; UP, PENDING and PAUSED are CLEAR; UNKNOWN and
  UNSPECIFIED are UNKNOWN. Evaluated when the state changes (:meth:`Evaluator.put_monitor`), not per sample.
- **no_data**: MET when the monitor has sent no sample (of any field) for ``duration``; the clock starts at
  the last sample, or when the pair started being watched if there was none (or when data became
  available again, or the start of a warm start's history). A paused monitor is CLEAR.
- **anomaly**: the latest value (zero window) or the window's mean, against the mean and sample standard
  deviation of the baseline samples before the window (see :class:`~services.alert_svc.windows.Band`).
  MET when ``z = (value - mean) / deviation`` is beyond ``deviations`` in the rule's direction. Until the
  baseline holds ``min_samples`` samples the verdict is CLEAR, saying how many it has. A baseline with
  zero deviation (every value equal) makes any different value infinitely many deviations away: MET in
  its direction, CLEAR when equal, so a constant status code that changes, or a price frozen by a broken
  feed that starts moving, is news.

Rules with the same (monitor, field, window) share one window structure whatever their aggregation, and
anomaly rules with the same (monitor, field, window, baseline) one band; memory per structure is bounded
(``windows.MAX_SAMPLES``, 10,000 samples). Time-driven work goes through one heap of deadlines (a window's
oldest sample leaving it, a no_data deadline), so :meth:`Evaluator.tick` costs what is due, never a scan.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, timedelta

from service_runtime.errors import NotFound
from services.alert_svc.domain import (
    MAX_WINDOWS_PER_USER,
    AlertRule,
    AnomalyCondition,
    ChangeCondition,
    Direction,
    Evaluation,
    Explainer,
    MonitorDownCondition,
    MonitorInfo,
    MonitorState,
    NoDataCondition,
    Operator,
    SampleEvent,
    ThresholdCondition,
    Verdict,
    seconds_text,
)
from services.alert_svc.windows import READERS, Arm, Band, Deadlines, Window

MET, CLEAR, UNKNOWN = Verdict.MET, Verdict.CLEAR, Verdict.UNKNOWN
UNAVAILABLE = "data unavailable: the sample feed or the time-series store is down"
# How far back a warm start looks for a zero-window rule's latest value (at least three check intervals).
LATEST_LOOKBACK = timedelta(hours=1)
NO_DATA_FIELD = "is_up"  # every monitor kind writes it with each sample
# A sample older than its series' newest by more than this is dropped from windows (counted in
# Evaluator.late_dropped; it still counts for no_data). Concurrent pings and several runners' results arrive
# out of order by up to a check's timeout (60 s at most) plus a runner's flush; the reconciliation merges
# anything later from the time-series store within a period. What a late sample costs is bounded in the
# windows themselves (windows.MAX_LATE_SHIFT), not by this.
LATE_TOLERANCE_S = 65.0
# Structures (windows, anomaly bands) one series keeps at most. Rule creation refuses a user's 21st distinct
# window (domain.MAX_WINDOWS_PER_USER); this holds for rules stored before that limit: a pair that would need
# one more is UNKNOWN and explains why, instead of making every sample of the series cost one more window.
MAX_STRUCTS_PER_SERIES = MAX_WINDOWS_PER_USER

_COMPARE: dict[Operator, Callable[[float, float], bool]] = {
    Operator.GT: operator.gt,
    Operator.GE: operator.ge,
    Operator.LT: operator.lt,
    Operator.LE: operator.le,
    Operator.EQ: operator.eq,
    Operator.NE: operator.ne,
}


class PairNotWatched(NotFound):
    """The rule does not watch the monitor (either is unknown, or the selector does not match)."""

    def __init__(self, rule_id: str, monitor_id: str) -> None:
        super().__init__("alert rule evaluation", f"{rule_id} on {monitor_id}")
        self.message = f"alert rule {rule_id} does not watch monitor {monitor_id}"


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """History a warm start needs: ``field`` of every series in ``series`` ((owner_id, monitor_id) pairs),
    over ``(now - lookback, now]``. Load each series' points with
    ``load(owner_id, monitor_id, field, points, since=now - lookback)``. ``latest_only``: no window or band
    holds the field, so each series' latest point in the range is all it needs (a zero window's value,
    no_data's last sample)."""

    field: str
    lookback: timedelta
    series: tuple[tuple[str, str], ...]
    latest_only: bool = False


def number(value: float) -> str:
    """A value as a person reads it: ``912``, ``60123.45``, ``0.0012``, ``∞``."""
    size = abs(value)
    if 1 <= size < 1e15:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    if value == 0:
        return "0"
    if size != size or size == math.inf:
        return "NaN" if size != size else ("∞" if value > 0 else "-∞")
    return f"{value:.4g}"


# --- per monitor and per series ---------------------------------------------------------------------------


class _Watch:
    """What the evaluator holds of one monitor: its info, its series, its pairs, its last sample time."""

    __slots__ = ("dirty", "last_sample", "monitor", "nodata", "owner_id", "pairs", "read", "series")

    def __init__(self, monitor: MonitorInfo) -> None:
        self.monitor = monitor
        self.owner_id = monitor.owner_id
        self.series: dict[str, _Series] = {}
        self.read: tuple[tuple[str, _Series], ...] = ()  # the series' items, iterated per sample
        self.pairs: dict[str, _Pair] = {}  # by rule id
        self.nodata: list[_NoDataPair] = []
        self.last_sample = -math.inf
        self.dirty = False

    @property
    def paused(self) -> bool:
        return self.monitor.paused or self.monitor.state is MonitorState.PAUSED


class _Series:
    """One field of one monitor: its latest value, the shared structures over it and the pairs reading it."""

    __slots__ = ("bands", "dirty", "field", "latest_t", "latest_v", "pairs", "structs", "windows")

    def __init__(self, field: str) -> None:
        self.field = field
        self.latest_t = -math.inf
        self.latest_v: float | None = None
        self.windows: dict[float, Window] = {}
        self.bands: dict[tuple[float, float], Band] = {}
        self.structs: list[Window | Band] = []
        self.pairs: list[_Pair] = []
        self.dirty = False

    def held(self) -> list[tuple[float, float]]:
        """Every sample some structure holds, oldest first, each once."""
        return sorted(self.held_set())

    def held_set(self) -> set[tuple[float, float]]:
        found: set[tuple[float, float]] = set()
        for struct in self.structs:
            found.update(struct.points())
        return found

    def lookback(self) -> float:
        longest = 0.0
        for struct in self.structs:
            longest = max(longest, struct.span if isinstance(struct, Window) else struct.window + struct.baseline)
        return longest


# --- pairs: one rule on one monitor ---------------------------------------------------------------------


class _Pair:
    __slots__ = ("monitor_id", "owner_id", "rule_id", "watch")

    def __init__(self, rule: AlertRule, watch: _Watch) -> None:
        self.rule_id = rule.id
        self.owner_id = rule.owner_id
        self.monitor_id = watch.monitor.monitor_id
        self.watch = watch

    @property
    def struct(self) -> Window | Band | None:
        return None

    @property
    def threshold(self) -> float | None:
        return None

    def evaluate(self, ref: float) -> Evaluation:
        """The pair's evaluation at ``ref`` (epoch seconds), which is also the evaluation's time."""
        raise NotImplementedError

    def verdict(self, ref: float, verdict: Verdict, why: str | Explainer, value: float | None = None) -> Evaluation:
        return Evaluation(self.rule_id, self.owner_id, self.monitor_id, ref, verdict, value, self.threshold, why)


class _SeriesPair(_Pair):
    """A pair reading one series of its monitor."""

    __slots__ = ("series",)

    def __init__(self, rule: AlertRule, watch: _Watch, series: _Series) -> None:
        super().__init__(rule, watch)
        self.series = series


class _OverLimitPair(_SeriesPair):
    """A pair whose series already keeps MAX_STRUCTS_PER_SERIES structures: never evaluated on samples (it is
    in no structure and not in the series' pairs), UNKNOWN when asked."""

    __slots__ = ("why",)

    def __init__(self, rule: AlertRule, watch: _Watch, series: _Series) -> None:
        super().__init__(rule, watch, series)
        self.why = (
            f"not evaluated: {series.field} of this monitor already has {MAX_STRUCTS_PER_SERIES} different "
            "windows, the most kept per monitor and field; use the window of another rule, or delete rules "
            "with other windows, then save this rule again"
        )

    def evaluate(self, ref: float) -> Evaluation:
        return self.verdict(ref, UNKNOWN, self.why)


class _ThresholdPair(_SeriesPair):
    __slots__ = ("compare", "empty", "how", "limit", "met_text", "not_text", "prefix", "read", "window")

    def __init__(self, rule: AlertRule, watch: _Watch, condition: ThresholdCondition, series: _Series) -> None:
        super().__init__(rule, watch, series)
        self.how = condition.aggregation
        self.read = READERS[condition.aggregation]
        self.compare = _COMPARE[condition.operator]
        self.limit = condition.value
        self.window: Window | None = None
        self.prefix, self.empty, self.met_text, self.not_text = _threshold_texts(condition)

    @property
    def struct(self) -> Window | Band | None:
        return self.window

    @property
    def threshold(self) -> float | None:
        return self.limit

    def evaluate(self, ref: float) -> Evaluation:
        window = self.window
        if window is None:
            value = self.series.latest_v
        elif window.values:
            value = self.read(window)
        else:
            return Evaluation(self.rule_id, self.owner_id, self.monitor_id, ref, UNKNOWN, None, self.limit, self.empty)
        if value is None:
            return Evaluation(self.rule_id, self.owner_id, self.monitor_id, ref, UNKNOWN, None, self.limit, self.empty)
        return Evaluation(
            self.rule_id, self.owner_id, self.monitor_id, ref, MET if self.compare(value, self.limit) else CLEAR,
            value, self.limit, self,
        )  # fmt: skip

    def explain(self, evaluation: Evaluation) -> str:
        value = evaluation.value
        assert value is not None
        return self.prefix + number(value) + (self.met_text if evaluation.verdict is MET else self.not_text)


@functools.lru_cache(maxsize=4096)
def _threshold_texts(condition: ThresholdCondition) -> tuple[str, str, str, str]:
    """A threshold pair's explanations, before and after the value: the same for every pair of a condition
    (building them for each of 100,000 pairs at a warm start took a second)."""
    span = condition.window
    if span:
        prefix = f"{condition.aggregation.value} {condition.field} over {seconds_text(span)} = "
        empty = f"no {condition.field} samples in the last {seconds_text(span)}"
    else:
        prefix = f"{condition.field} = "
        empty = f"no {condition.field} sample yet"
    limit = f"{condition.operator.value} {number(condition.value)}"
    return prefix, empty, f" {limit}", f", not {limit}"


class _ChangePair(_SeriesPair):
    __slots__ = ("direction", "empty", "field", "limit", "percent", "span_text", "window")

    def __init__(
        self, rule: AlertRule, watch: _Watch, condition: ChangeCondition, series: _Series, window: Window
    ) -> None:
        super().__init__(rule, watch, series)
        self.window = window
        self.percent = condition.percent
        self.direction = condition.direction
        self.field = condition.field
        self.span_text = seconds_text(condition.window)
        sign = {Direction.UP: "+", Direction.DOWN: "-", Direction.EITHER: "±"}[condition.direction]
        self.limit = f"{sign}{number(condition.percent)}%"
        self.empty = f"no {condition.field} samples in the last {self.span_text}"

    @property
    def struct(self) -> Window | Band | None:
        return self.window

    @property
    def threshold(self) -> float | None:
        return -self.percent if self.direction is Direction.DOWN else self.percent

    def evaluate(self, ref: float) -> Evaluation:
        values = self.window.values
        if not values:
            return self.verdict(ref, UNKNOWN, self.empty)
        first, last = values[0], values[-1]
        move = _percent_move(first, last)
        if self.direction is Direction.UP:
            met = move >= self.percent
        elif self.direction is Direction.DOWN:
            met = -move >= self.percent
        else:
            met = abs(move) >= self.percent
        return self.verdict(ref, MET if met else CLEAR, _Moved(self, first, last), move)


class _Moved:
    """A change evaluation's explanation, written when read."""

    __slots__ = ("first", "last", "pair")

    def __init__(self, pair: _ChangePair, first: float, last: float) -> None:
        self.pair = pair
        self.first = first
        self.last = last

    def explain(self, evaluation: Evaluation) -> str:
        pair, move = self.pair, evaluation.value
        assert move is not None
        shown = ("+" if move >= 0 else "") + number(round(move, 2) if math.isfinite(move) else move)
        text = f"{pair.field} changed {shown}% within {pair.span_text} ({number(self.first)} → {number(self.last)})"
        return text + (f" ≥ {pair.limit}" if evaluation.verdict is MET else f", not ≥ {pair.limit}")


class _AnomalyPair(_SeriesPair):
    __slots__ = ("band", "baseline_text", "deviations", "direction", "empty", "limit", "min_samples", "what")

    def __init__(
        self, rule: AlertRule, watch: _Watch, condition: AnomalyCondition, series: _Series, band: Band
    ) -> None:
        super().__init__(rule, watch, series)
        self.band = band
        self.deviations = condition.deviations
        self.min_samples = condition.min_samples
        self.direction = condition.direction
        span = condition.window
        self.what = f"mean {condition.field} over {seconds_text(span)}" if span else condition.field
        self.empty = f"no {condition.field} samples in the last {seconds_text(span)}"
        self.baseline_text = seconds_text(condition.baseline)
        self.limit: float | None = None

    @property
    def struct(self) -> Window | Band | None:
        return self.band

    @property
    def threshold(self) -> float | None:
        return self.limit

    def evaluate(self, ref: float) -> Evaluation:
        band = self.band
        value = band.current()
        self.limit = None
        if value is None:
            return self.verdict(ref, UNKNOWN, self.empty)
        n, mean, deviation = band.baseline_stats()
        if n < self.min_samples:
            return self.verdict(ref, CLEAR, _Deviation(self, n, mean, deviation), value)
        gap = value - mean
        z = _deviations(gap, deviation)
        k = self.deviations
        if self.direction is Direction.UP:
            met, upper = z > k, True
        elif self.direction is Direction.DOWN:
            met, upper = -z > k, False
        else:
            met, upper = abs(z) > k, gap >= 0
        self.limit = mean + k * deviation if upper else mean - k * deviation
        return self.verdict(ref, MET if met else CLEAR, _Deviation(self, n, mean, deviation), value)


class _Deviation:
    """An anomaly evaluation's explanation, written when read."""

    __slots__ = ("deviation", "mean", "n", "pair")

    def __init__(self, pair: _AnomalyPair, n: int, mean: float, deviation: float) -> None:
        self.pair = pair
        self.n = n
        self.mean = mean
        self.deviation = deviation

    def explain(self, evaluation: Evaluation) -> str:
        pair, value, n = self.pair, evaluation.value, self.n
        assert value is not None
        if n < pair.min_samples:
            return (
                f"{pair.what} = {number(value)}; its {pair.baseline_text} baseline has {n} of the "
                f"{pair.min_samples} samples needed"
            )
        gap = value - self.mean
        z = _deviations(gap, self.deviation)
        side = "above" if gap >= 0 else "below"
        text = (
            f"{pair.what} = {number(value)} is {number(round(abs(z), 1))} sd {side} its {pair.baseline_text} mean "
            f"{number(self.mean)} (sd {number(self.deviation)}, {n} samples)"
        )
        k = number(pair.deviations)
        return text + (f" > {k} sd" if evaluation.verdict is MET else f", not > {k} sd")


class _DownPair(_Pair):
    __slots__ = ()

    def evaluate(self, ref: float) -> Evaluation:
        monitor = self.watch.monitor
        state = monitor.state
        if state is MonitorState.DOWN:
            since = monitor.state_change_time
            text = "monitor is down" + (f" since {since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if since else "")
            if monitor.down_reason:
                text += f": {monitor.down_reason}"
            return self.verdict(ref, MET, text, 1.0)
        if state in (MonitorState.UP, MonitorState.PENDING, MonitorState.PAUSED):
            return self.verdict(ref, CLEAR, f"monitor is {state.value}", 0.0)
        return self.verdict(ref, UNKNOWN, "the monitor's state is unknown")


class _NoDataPair(_Pair):
    __slots__ = ("_arm", "armed", "dead", "duration", "duration_text", "met", "start")

    def __init__(self, rule: AlertRule, watch: _Watch, condition: NoDataCondition, start: float, arm: Arm) -> None:
        super().__init__(rule, watch)
        self._arm = arm
        self.armed: float | None = None
        self.dead = False
        self.duration = condition.duration.total_seconds()
        self.duration_text = seconds_text(condition.duration)
        self.start = start  # when watching began (or restarted: resumed, data available again)
        self.met = False

    @property
    def threshold(self) -> float | None:
        return self.duration

    def since(self) -> float:
        """Where the silence is counted from."""
        return max(self.watch.last_sample, self.start)

    def on_clock(self, now: float) -> Sequence[object]:
        """See :class:`~services.alert_svc.windows.Timed`: itself once the silence reaches the duration
        (re-armed instead when a sample came meanwhile)."""
        if self.watch.paused or self.met:
            return ()
        due = self.since() + self.duration
        if due > now:
            self._arm(self, due)
            return ()
        self.met = True
        return (self,)

    def evaluate(self, ref: float) -> Evaluation:
        if self.watch.paused:
            return self.verdict(ref, CLEAR, "monitor is paused")
        silent = max(0.0, ref - self.since())
        if silent >= self.duration:
            shown = _seconds(silent)
            if self.watch.last_sample == -math.inf or self.start > self.watch.last_sample:
                text = f"no sample for {shown} (watching since then); limit {self.duration_text}"
            else:
                text = f"no sample for {shown}; limit {self.duration_text}"
            return self.verdict(ref, MET, text, silent)
        return Evaluation(self.rule_id, self.owner_id, self.monitor_id, ref, CLEAR, silent, self.duration, self)

    def explain(self, evaluation: Evaluation) -> str:
        assert evaluation.value is not None
        return f"last sample {_seconds(evaluation.value)} ago; limit {self.duration_text}"


# --- rules ----------------------------------------------------------------------------------------------


class _RuleEntry:
    __slots__ = ("pairs", "rule")

    def __init__(self, rule: AlertRule) -> None:
        self.rule = rule
        self.pairs: dict[str, _Pair] = {}  # by monitor id


class Evaluator:
    """Incremental evaluation of every loaded rule on every monitor it watches. Not thread-safe: one caller
    (the alert service's event loop) drives it."""

    def __init__(self, cap: int | None = None) -> None:
        self._cap = cap
        self._rules: dict[str, _RuleEntry] = {}
        self._watches: dict[str, _Watch] = {}
        self._by_owner: dict[str, dict[str, _Watch]] = {}
        self._direct: dict[str, dict[str, _RuleEntry]] = {}  # monitor id -> rules naming it
        self._selectors: dict[str, dict[str, _RuleEntry]] = {}  # owner id -> selector rules
        self._owned: dict[str, dict[str, AlertRule]] = {}  # owner id -> enabled rules by id
        self._deadlines = Deadlines()
        self._arm = self._deadlines.arm
        self._available = True
        self.late_dropped = 0  # samples more than LATE_TOLERANCE_S older than their series' newest

    # --- monitors --------------------------------------------------------------------------------------

    def put_monitor(self, monitor: MonitorInfo, now: float) -> list[Evaluation]:
        """Add or update a monitor (labels decide which selector rules watch it; its state drives
        monitor_down). Returns evaluations of pairs whose verdict may have changed: monitor_down rules on a
        state change, no_data rules on a pause or resume, pairs that newly started being watched, and a
        CLEAR ("no longer watched") for pairs whose selector stopped matching."""
        watch = self._watches.get(monitor.monitor_id)
        old: MonitorInfo | None = None
        was_paused = False
        if watch is None:
            watch = _Watch(monitor)
            self._watches[monitor.monitor_id] = watch
            self._by_owner.setdefault(monitor.owner_id, {})[monitor.monitor_id] = watch
        else:
            old = watch.monitor
            was_paused = watch.paused
            watch.monitor = monitor
        out: list[Evaluation] = []
        candidates = [
            *self._direct.get(monitor.monitor_id, {}).values(),
            *self._selectors.get(monitor.owner_id, {}).values(),
        ]
        for entry in candidates:
            rule = entry.rule
            pair = watch.pairs.get(rule.id)
            watching = rule.watches(monitor)
            if pair is None:
                if watching:
                    out.append(self._evaluate_now(self._attach(entry, watch, now), now))
            elif not watching:
                self._detach(pair)
                out.append(self._no_longer_watched(pair, now))
            elif isinstance(pair, _DownPair):
                if old is None or old.state is not monitor.state:
                    out.append(self._evaluate_now(pair, now))
            elif isinstance(pair, _NoDataPair) and was_paused != watch.paused:
                if not watch.paused:
                    pair.start = now
                    pair.met = False
                    self._arm(pair, pair.since() + pair.duration)
                out.append(self._evaluate_now(pair, now))
        return out

    def remove_monitor(self, monitor_id: str) -> None:
        """Forget a monitor and every pair on it."""
        watch = self._watches.pop(monitor_id, None)
        if watch is None:
            return
        for pair in list(watch.pairs.values()):
            self._detach(pair)
        owned = self._by_owner.get(watch.owner_id)
        if owned is not None:
            owned.pop(monitor_id, None)
            if not owned:
                del self._by_owner[watch.owner_id]

    # --- rules -----------------------------------------------------------------------------------------

    def retitle_rule(self, rule: AlertRule) -> bool:
        """Hold ``rule`` in place of its former self when what it watches and judges is unchanged (a rename,
        other channels, timings the engine reads): its pairs, windows and verdicts stay as they are. False
        when the evaluator holds no enabled rule of that id (then :meth:`put_rule`)."""
        entry = self._rules.get(rule.id)
        if entry is None or not rule.enabled:
            return False
        old = entry.rule
        if (old.condition, old.monitor_id, dict(old.selector)) != (
            rule.condition,
            rule.monitor_id,
            dict(rule.selector),
        ):
            return False
        entry.rule = rule
        self._owned.setdefault(rule.owner_id, {})[rule.id] = rule
        return True

    def put_rule(self, rule: AlertRule, now: float) -> list[Evaluation]:
        """Add or replace a rule (a disabled rule is removed); returns an evaluation of every pair it now
        watches, and a CLEAR ("no longer watched") for pairs a replaced rule no longer watches. A replaced
        rule keeps the series state it shares with its former self."""
        old = self._rules.get(rule.id)
        if not rule.enabled:
            self.remove_rule(rule.id)
            return []
        entry = _RuleEntry(rule)
        if old is not None:
            self._unindex(old)
        self._rules[rule.id] = entry
        self._owned.setdefault(rule.owner_id, {})[rule.id] = rule
        if rule.monitor_id:
            self._direct.setdefault(rule.monitor_id, {})[rule.id] = entry
            known = self._watches.get(rule.monitor_id)
            watches = [known] if known is not None else []
        else:
            self._selectors.setdefault(rule.owner_id, {})[rule.id] = entry
            watches = list(self._by_owner.get(rule.owner_id, {}).values())
        out: list[Evaluation] = []
        fresh: list[_Pair] = []
        for watch in watches:
            if rule.watches(watch.monitor):
                fresh.append(self._attach(entry, watch, now, replacing=old is not None))
        # Detach the old pairs after attaching the new ones, so structures both use keep their samples.
        if old is not None:
            for pair in old.pairs.values():
                self._detach(pair)
                if pair.monitor_id not in entry.pairs:
                    out.append(self._no_longer_watched(pair, now))
        out.extend(self._evaluate_now(pair, now) for pair in fresh)
        return out

    def remove_rule(self, rule_id: str) -> None:
        """Forget a rule and all its state (structures no other rule uses go too)."""
        entry = self._rules.pop(rule_id, None)
        if entry is None:
            return
        owned = self._owned.get(entry.rule.owner_id)
        if owned is not None:
            owned.pop(rule_id, None)
            if not owned:
                del self._owned[entry.rule.owner_id]
        self._unindex(entry)
        for pair in list(entry.pairs.values()):
            self._detach(pair)

    def rules_of(self, owner_id: str) -> list[AlertRule]:
        """The enabled rules of ``owner_id`` (for limits on what they may add)."""
        return list(self._owned.get(owner_id, {}).values())

    def pairs(self, rule_id: str) -> list[str]:
        """The ids of the monitors ``rule_id`` watches now (none for an unknown rule)."""
        entry = self._rules.get(rule_id)
        return list(entry.pairs) if entry is not None else []

    # --- samples and the clock -------------------------------------------------------------------------

    def add_samples(self, samples: Iterable[SampleEvent]) -> list[Evaluation]:
        """Fold samples in; return one evaluation per (rule, monitor) pair whose series received a sample,
        taken after the whole batch is folded, with the window trailing the series' latest sample (and the
        evaluation's time that sample's). Samples of unknown monitors, of another owner than the monitor's,
        of fields no rule reads, and non-finite values are ignored (a field no rule reads still counts as a
        sample for no_data)."""
        touched: list[_Series] = []
        heard: list[_Watch] = []
        watches = self._watches
        for sample in samples:
            watch = watches.get(sample.monitor_id)
            if watch is None or watch.owner_id != sample.owner_id:
                continue
            t = sample.time
            if t > watch.last_sample:
                watch.last_sample = t
            if watch.nodata and not watch.dirty:
                watch.dirty = True
                heard.append(watch)
            if not watch.read:
                continue
            fields = sample.fields
            for name, series in watch.read:
                v = fields.get(name)
                if v is None or v - v != 0:  # absent, NaN or infinite
                    continue
                if t >= series.latest_t:
                    series.latest_t = t
                    series.latest_v = v
                    for struct in series.structs:
                        struct.add(t, v)
                elif t >= series.latest_t - LATE_TOLERANCE_S:
                    for struct in series.structs:
                        struct.add(t, v)
                else:
                    self.late_dropped += 1
                if not series.dirty:
                    series.dirty = True
                    touched.append(series)
        out: list[Evaluation] = []
        append = out.append
        available = self._available
        for series in touched:
            series.dirty = False
            ref = series.latest_t
            if available:
                for pair in series.pairs:
                    append(pair.evaluate(ref))
            else:
                out.extend(_unknown(pair, ref) for pair in series.pairs)
        for watch in heard:
            watch.dirty = False
            ref = watch.last_sample
            paused = watch.paused
            for nodata in watch.nodata:
                if nodata.armed is None and not paused:
                    self._arm(nodata, nodata.since() + nodata.duration)
                nodata.met = False
                append(nodata.evaluate(ref) if available else _unknown(nodata, ref))
        return out

    def tick(self, now: float) -> list[Evaluation]:
        """Evaluations that the clock makes due: no_data deadlines passing, samples leaving a window (a
        windowed aggregate changes without a new sample; windows then trail ``now``). Costs what is due
        (a heap of deadlines), never a scan of every pair. Does nothing while data is unavailable: what
        fell due is judged once it is available again."""
        out: list[Evaluation] = []
        if not self._available:
            return out
        for timed in self._deadlines.due(now):
            for pair in timed.on_clock(now):
                assert isinstance(pair, _Pair)
                out.append(pair.evaluate(now))
        return out

    def evaluate(self, rule_id: str, monitor_id: str, now: float) -> Evaluation:
        """Evaluate one pair now (windows trailing ``now``). Raises :class:`PairNotWatched` when the rule
        is unknown or does not watch the monitor."""
        entry = self._rules.get(rule_id)
        pair = entry.pairs.get(monitor_id) if entry is not None else None
        if pair is None:
            raise PairNotWatched(rule_id, monitor_id)
        return self._evaluate_now(pair, now)

    def set_available(self, available: bool, now: float | None = None) -> None:
        """False while the feed or the store is down: every evaluation is then UNKNOWN ("data unavailable")
        and the clock judges nothing. Back to True with ``now``: no_data clocks restart at ``now``, since
        silence during an outage is not evidence that a monitor stopped."""
        if available and not self._available and now is not None:
            for watch in self._watches.values():
                for pair in watch.nodata:
                    pair.start = max(pair.start, now)
                    if not pair.met:
                        self._arm(pair, pair.since() + pair.duration)
        self._available = available

    @property
    def available(self) -> bool:
        return self._available

    # --- warm start ------------------------------------------------------------------------------------

    def load(
        self,
        owner_id: str,
        monitor_id: str,
        field: str,
        points: Sequence[tuple[float, float]],
        *,
        since: float | None = None,
    ) -> int:
        """Warm start (and reconciliation): history of one series, as if the samples had arrived. Merged
        with what is held (a sample both have counts once), so samples that arrived meanwhile stay; history
        that holds nothing new (a reconciliation's usual case) changes no structure. Returns the work done
        (samples times the structures refilled with them), for a caller yielding by a budget.
        ``since``: the history covers everything from then on, so a monitor with no sample in it has been
        silent since then at least (no_data counts from there rather than from the start of watching)."""
        watch = self._watches.get(monitor_id)
        if watch is None or watch.owner_id != owner_id:
            return 0
        finite = [(t, v) for t, v in points if math.isfinite(t) and math.isfinite(v)]
        if finite:
            watch.last_sample = max(watch.last_sample, max(t for t, _ in finite))
        if since is not None or finite:
            for pair in watch.nodata:
                if since is not None:
                    pair.start = min(pair.start, since)
                if not watch.paused and not pair.met:
                    self._arm(pair, pair.since() + pair.duration)
        series = watch.series.get(field)
        if series is None or not finite:
            return len(finite)
        held = series.held_set()
        work = len(held) + len(finite)
        if not held.issuperset(finite):
            merged = sorted(held.union(finite))
            for struct in series.structs:
                struct.load(merged)
            work += len(merged) * len(series.structs)
        latest_t, latest_v = max(finite)
        if latest_t >= series.latest_t:
            series.latest_t, series.latest_v = latest_t, latest_v
        return work

    def history_needed(self, monitor_ids: Iterable[str] | None = None) -> list[HistoryRequest]:
        """For a warm start: one request per group of series sharing a field and the longest look-back any
        rule needs on it (window, change window, anomaly window + baseline; no_data's duration on
        ``is_up``; an hour, or three check intervals, for a zero window's latest value). A series no window
        or band holds is asked for its latest point alone (``latest_only``): an hour of 10 s checks had been
        360 points per series for one value. ``monitor_ids``: the series of these monitors only."""
        groups: dict[tuple[str, float, bool], list[tuple[str, str]]] = {}
        if monitor_ids is None:
            watches: Iterable[_Watch] = self._watches.values()
        else:
            watches = [self._watches[m] for m in monitor_ids if m in self._watches]
        for watch in watches:
            needs: dict[str, tuple[float, bool]] = {}
            latest = max(LATEST_LOOKBACK, 3 * watch.monitor.interval).total_seconds()
            for name, series in watch.series.items():
                back = series.lookback()
                if any(isinstance(p, _ThresholdPair) and p.window is None for p in series.pairs):
                    back = max(back, latest)
                needs[name] = (back, not series.structs)
            if watch.nodata:
                longest = max(p.duration for p in watch.nodata)
                back, latest_only = needs.get(NO_DATA_FIELD, (0.0, True))
                needs[NO_DATA_FIELD] = (max(back, longest), latest_only)
            for name, (back, latest_only) in needs.items():
                groups.setdefault((name, back, latest_only), []).append((watch.owner_id, watch.monitor.monitor_id))
        return [
            HistoryRequest(name, timedelta(seconds=back), tuple(series), latest_only)
            for (name, back, latest_only), series in sorted(groups.items())
        ]

    # --- inside ----------------------------------------------------------------------------------------

    def _evaluate_now(self, pair: _Pair, now: float) -> Evaluation:
        if not self._available:
            return _unknown(pair, now)
        struct = pair.struct
        if struct is not None and struct.expire(now):
            struct.stale = True  # the other pairs on it hear of it on the next tick (its deadline has passed)
        return pair.evaluate(now)

    def _no_longer_watched(self, pair: _Pair, now: float) -> Evaluation:
        return Evaluation(
            pair.rule_id, pair.owner_id, pair.monitor_id, now, CLEAR, None, None,
            "the rule no longer watches this monitor",
        )  # fmt: skip

    def _unindex(self, entry: _RuleEntry) -> None:
        rule = entry.rule
        index = self._direct if rule.monitor_id else self._selectors
        key = rule.monitor_id or rule.owner_id
        rules = index.get(key)
        if rules is not None and rules.get(rule.id) is entry:
            del rules[rule.id]
            if not rules:
                del index[key]

    def _series(self, watch: _Watch, field: str) -> _Series:
        series = watch.series.get(field)
        if series is None:
            series = watch.series[field] = _Series(field)
            watch.read = tuple(watch.series.items())
        return series

    def _add_struct(self, series: _Series, struct: Window | Band) -> None:
        held = series.held()
        series.structs.append(struct)
        if held:
            struct.load(held)

    def _window(self, series: _Series, span: float) -> Window:
        window = series.windows.get(span)
        if window is None:
            window = Window(span, self._arm) if self._cap is None else Window(span, self._arm, self._cap)
            series.windows[span] = window
            self._add_struct(series, window)
        return window

    def _attach(self, entry: _RuleEntry, watch: _Watch, now: float, replacing: bool = False) -> _Pair:
        rule = entry.rule
        condition = rule.condition
        pair: _Pair
        if isinstance(condition, ThresholdCondition):
            series = self._series(watch, condition.field)
            span = condition.window.total_seconds()
            if span and self._full(series, span in series.windows):
                pair = self._over_limit(rule, watch, entry, series)
                return pair
            pair = _ThresholdPair(rule, watch, condition, series)
            if span:
                window = self._window(series, span)
                window.require(condition.aggregation)
                window.pairs.append(pair)
                pair.window = window
            series.pairs.append(pair)
        elif isinstance(condition, ChangeCondition):
            series = self._series(watch, condition.field)
            if self._full(series, condition.window.total_seconds() in series.windows):
                return self._over_limit(rule, watch, entry, series)
            window = self._window(series, condition.window.total_seconds())
            window.require(None)
            pair = _ChangePair(rule, watch, condition, series, window)
            window.pairs.append(pair)
            series.pairs.append(pair)
        elif isinstance(condition, AnomalyCondition):
            series = self._series(watch, condition.field)
            key = (condition.window.total_seconds(), condition.baseline.total_seconds())
            if self._full(series, key in series.bands):
                return self._over_limit(rule, watch, entry, series)
            band = series.bands.get(key)
            if band is None:
                band = Band(*key, self._arm) if self._cap is None else Band(*key, self._arm, self._cap)
                series.bands[key] = band
                self._add_struct(series, band)
            pair = _AnomalyPair(rule, watch, condition, series, band)
            band.pairs.append(pair)
            series.pairs.append(pair)
        elif isinstance(condition, NoDataCondition):
            start = now
            previous = watch.pairs.get(rule.id)
            if replacing and isinstance(previous, _NoDataPair):
                start = previous.start  # an edited rule keeps counting from where it was
            nodata = _NoDataPair(rule, watch, condition, start, self._arm)
            watch.nodata.append(nodata)
            if not watch.paused:
                self._arm(nodata, nodata.since() + nodata.duration)
            pair = nodata
        else:
            assert isinstance(condition, MonitorDownCondition)
            pair = _DownPair(rule, watch)
        watch.pairs[rule.id] = pair
        entry.pairs[watch.monitor.monitor_id] = pair
        return pair

    @staticmethod
    def _full(series: _Series, shared: bool) -> bool:
        """Whether a pair needing a structure on ``series`` (``shared``: one it already keeps) must go without."""
        return not shared and len(series.structs) >= MAX_STRUCTS_PER_SERIES

    def _over_limit(self, rule: AlertRule, watch: _Watch, entry: _RuleEntry, series: _Series) -> _Pair:
        pair = _OverLimitPair(rule, watch, series)
        watch.pairs[rule.id] = pair
        entry.pairs[watch.monitor.monitor_id] = pair
        if not series.pairs and not series.structs and watch.series.get(series.field) is series:
            del watch.series[series.field]
            watch.read = tuple(watch.series.items())
        return pair

    def _detach(self, pair: _Pair) -> None:
        """Unhook a pair; structures and series nobody reads any more go. (A pair already replaced by its
        rule's new version stays out of the indexes, which point at the new one.)"""
        watch = pair.watch
        if watch.pairs.get(pair.rule_id) is pair:
            del watch.pairs[pair.rule_id]
        entry = self._rules.get(pair.rule_id)
        if entry is not None and entry.pairs.get(pair.monitor_id) is pair:
            del entry.pairs[pair.monitor_id]
        if isinstance(pair, _NoDataPair):
            pair.dead = True
            watch.nodata.remove(pair)
            return
        if isinstance(pair, _DownPair | _OverLimitPair):
            return
        assert isinstance(pair, _SeriesPair)
        series = pair.series
        struct = pair.struct
        if struct is not None:
            struct.pairs.remove(pair)
        series.pairs.remove(pair)
        if struct is not None and not struct.pairs:
            struct.dead = True
            series.structs.remove(struct)
            if isinstance(struct, Window):
                del series.windows[struct.span]
            else:
                del series.bands[(struct.window, struct.baseline)]
        if not series.pairs and watch.series.get(series.field) is series:
            del watch.series[series.field]
            watch.read = tuple(watch.series.items())


def _unknown(pair: _Pair, ref: float) -> Evaluation:
    return Evaluation(pair.rule_id, pair.owner_id, pair.monitor_id, ref, UNKNOWN, None, pair.threshold, UNAVAILABLE)


def _percent_move(first: float, last: float) -> float:
    """The move from ``first`` to ``last`` in percent of ``first``; from zero, any move is infinite."""
    if first:
        return (last - first) / abs(first) * 100
    return 0.0 if last == first else math.copysign(math.inf, last)


def _deviations(gap: float, deviation: float) -> float:
    """``gap`` in standard deviations; against a constant baseline any gap is infinitely many."""
    if deviation > 0:
        return gap / deviation
    return 0.0 if gap == 0 else math.copysign(math.inf, gap)


def _seconds(span: float) -> str:
    """A whole number of seconds as :func:`seconds_text` writes it (``0s``, ``90s``, ``10m``)."""
    whole = int(span)
    if whole < 60:
        return f"{whole}s"
    return seconds_text(timedelta(seconds=whole))
