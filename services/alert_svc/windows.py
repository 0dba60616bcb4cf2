"""The evaluator's per-series state: trailing windows with running aggregates, and anomaly bands.

A window holds the samples of one series (monitor and field) whose time lies in ``(cutoff, latest]`` where
``cutoff`` is the latest reference time minus the window's span: the latest sample's time when samples
arrive, the clock's now when the clock moves the window on. The cutoff never moves back, so a sample older
than it (a late delivery) is not counted again.

Every aggregate is answered in O(1) from state updated per sample:

- count, first, last: the ring of samples itself (parallel deques of times and values, no tuple per sample);
- sum, mean: a running sum, recomputed exactly (``math.fsum``) after as many removals as the window holds,
  so rounding drift stays bounded at amortised O(1);
- min, max: monotonic deques of (sample index, value);
- p50, p95, p99: the window's values kept sorted (``bisect``; an insert or removal moves at most ``cap``
  pointers, cheap next to Python's per-call overhead at the sizes a window holds).

Only the structures some rule needs are kept (a window read only for ``mean`` keeps no sorted copy).

Memory is bounded: a window keeps at most ``cap`` samples (``MAX_SAMPLES``, 10,000 by default); beyond it
the oldest go first, so a window over a very frequent series covers its latest ``cap`` samples. An anomaly
band keeps at most ``cap`` samples in its current window and ``cap`` in its baseline.

A sample arriving out of time order (concurrent pings, a batch delivered late) is inserted in place: the
``k`` samples newer than it are taken off the tail (their share of the running state undone), the late one
added and the ``k`` put back, so it costs O(k log n) and never a rebuild. The evaluator drops samples more
than ``LATE_TOLERANCE_S`` older than a series' newest before they reach a window, and a window drops (and
counts in ``late_dropped``) one that more than ``MAX_LATE_SHIFT`` held samples are newer than, so ``k`` stays
small whatever the feed does. (A full rebuild per late sample had let one series with 990 windows freeze the
event loop for minutes.) History is merged by :meth:`Window.load`, a rebuild, once per warm start or
reconciliation.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from service_runtime.timeseries import Aggregation

MAX_SAMPLES = 10_000
MAX_LATE_SHIFT = 64  # at most this many held samples newer than a late one; beyond, it is dropped
_FAR = 2**62  # a bucket key later than any deadline

_NEEDS_SUM = frozenset({Aggregation.MEAN, Aggregation.SUM})
_NEEDS_SORTED = frozenset({Aggregation.P50, Aggregation.P95, Aggregation.P99})

# Arms a timed structure: called with (structure, deadline) when it first holds something that will expire.
Arm = Callable[["Timed", float], None]


class Timed(Protocol):
    """Something with a deadline on the evaluator's clock: ``armed`` is the deadline it is filed under
    (None: not filed); ``dead`` once nothing uses it (its entry is then skipped)."""

    armed: float | None
    dead: bool

    def on_clock(self, now: float) -> Sequence[object]:
        """Its deadline passed and the clock reads ``now``: catch up (re-arming as needed) and return
        the evaluator's pairs to evaluate at ``now`` (none when nothing they read changed)."""
        ...


class Deadlines:
    """The deadlines of timed structures, in buckets of one second (a timing wheel): arming appends to a
    bucket, and :meth:`due` visits the buckets up to now. A heap cost a pop of log n and a push for every
    sample: a window over a series sampled once a minute has its oldest sample leave just as the next one
    arrives, so each sample re-arms its window. Stale entries (re-armed elsewhere, dead) are skipped."""

    __slots__ = ("_buckets", "_next")

    def __init__(self) -> None:
        self._buckets: dict[int, list[Timed]] = {}
        self._next = _FAR  # no bucket before this one holds an entry

    def arm(self, timed: Timed, deadline: float) -> None:
        """``timed`` falls due at ``deadline`` (replacing any deadline it had)."""
        timed.armed = deadline
        key = math.floor(deadline)
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [timed]
            if key < self._next:
                self._next = key
        else:
            bucket.append(timed)

    def due(self, now: float) -> list[Timed]:
        """Take out what is due at ``now`` (``armed`` set to None), each once, in order of seconds. What is
        armed while the caller handles them is due on a later call."""
        buckets = self._buckets
        last = math.floor(now)
        first = self._next
        if first > last:
            return []
        keys: Iterable[int] = range(first, last + 1)
        if last - first > len(buckets):
            keys = sorted(key for key in buckets if key <= last)
        out: list[Timed] = []
        take = out.append
        for key in keys:
            bucket = buckets.pop(key, None)
            if bucket is None:
                continue
            later: list[Timed] = []
            for timed in bucket:
                deadline = timed.armed
                if deadline is None or timed.dead or math.floor(deadline) != key:
                    continue  # taken already, re-armed into another bucket, or no longer used
                if deadline > now:
                    later.append(timed)
                    continue
                timed.armed = None
                take(timed)
            if later:
                buckets[key] = later
        self._next = last
        return out


_UNUSED: deque[Any] = deque(maxlen=0)  # stands for a deque no rule needs: it stays empty (maxlen 0)


class Window:
    """The samples of one series in a trailing window of ``span`` seconds (span > 0), with the running
    aggregates the rules reading it need. Shared by every rule on the same (monitor, field, window)."""

    __slots__ = (
        "_arm",
        "_removed",
        "added",
        "armed",
        "cap",
        "cutoff",
        "dead",
        "last_t",
        "late_dropped",
        "max_i",
        "max_v",
        "min_i",
        "min_v",
        "need_max",
        "need_min",
        "need_sorted",
        "need_sum",
        "pairs",
        "sorted",
        "span",
        "stale",
        "times",
        "total",
        "values",
    )

    def __init__(self, span: float, arm: Arm, cap: int = MAX_SAMPLES) -> None:
        self.armed: float | None = None
        self.dead = False
        self.span = span
        self.cap = cap
        self._arm = arm
        self.times: deque[float] = deque()
        self.values: deque[float] = deque()
        self.cutoff = -math.inf
        self.last_t = -math.inf
        self.added = 0  # index of the next sample; the oldest held has index added - len(values)
        self._removed = 0  # removals since the running sum was last recomputed
        self.total = 0.0
        self.need_sum = self.need_min = self.need_max = self.need_sorted = False
        # The monotonic deques of min and max exist once a rule needs them (see _rebuild): four empty deques
        # per window were a quarter of a gigabyte at 100,000 rules, and most windows are read for a mean.
        self.min_i: deque[int] = _UNUSED
        self.min_v: deque[float] = _UNUSED
        self.max_i: deque[int] = _UNUSED
        self.max_v: deque[float] = _UNUSED
        self.sorted: list[float] = []
        self.pairs: list[object] = []  # the evaluator's pairs reading this window
        self.stale = False  # samples left on the clock since the pairs were last evaluated
        self.late_dropped = 0  # late samples dropped: more than MAX_LATE_SHIFT held samples were newer

    # --- what rules need -------------------------------------------------------------------------------

    def require(self, how: Aggregation | None) -> None:
        """Keep what ``how`` needs from now on (None: first and last only, for a change condition)."""
        before = (self.need_sum, self.need_min, self.need_max, self.need_sorted)
        if how in _NEEDS_SUM:
            self.need_sum = True
        elif how is Aggregation.MIN:
            self.need_min = True
        elif how is Aggregation.MAX:
            self.need_max = True
        elif how in _NEEDS_SORTED:
            self.need_sorted = True
        if (self.need_sum, self.need_min, self.need_max, self.need_sorted) != before:
            self._rebuild(list(zip(self.times, self.values, strict=True)))

    # --- samples ---------------------------------------------------------------------------------------

    def add(self, t: float, v: float) -> None:
        """Fold one sample in; the window then trails the latest sample's time."""
        if t < self.last_t or t <= self.cutoff:
            self._insert_late(t, v)
            return
        self.last_t = t
        times = self.times
        times.append(t)
        self.values.append(v)
        if self.need_sum:
            self.total += v
        if self.need_min:
            min_v = self.min_v
            while min_v and min_v[-1] >= v:
                min_v.pop()
                self.min_i.pop()
            min_v.append(v)
            self.min_i.append(self.added)
        if self.need_max:
            max_v = self.max_v
            while max_v and max_v[-1] <= v:
                max_v.pop()
                self.max_i.pop()
            max_v.append(v)
            self.max_i.append(self.added)
        if self.need_sorted:
            insort(self.sorted, v)
        self.added += 1
        cutoff = t - self.span
        if cutoff > self.cutoff:
            self.cutoff = cutoff
        if times[0] <= self.cutoff or len(times) > self.cap:
            self._evict()
        if self.armed is None:
            self._arm(self, times[0] + self.span)

    def expire(self, now: float) -> int:
        """Move the window on to trail ``now``; how many samples left it."""
        cutoff = now - self.span
        if cutoff <= self.cutoff:
            return 0
        self.cutoff = cutoff
        if not self.times or self.times[0] > cutoff:
            return 0
        return self._evict()

    def on_clock(self, now: float) -> Sequence[object]:
        """See :class:`Timed`: the pairs reading the window when samples left it (now or since they were
        last evaluated)."""
        times = self.times
        cutoff = now - self.span
        left = 0
        if cutoff > self.cutoff:
            self.cutoff = cutoff
            if times and times[0] <= cutoff:
                left = self._evict()
        if times:
            self._arm(self, times[0] + self.span)
        if left or self.stale:
            self.stale = False
            return self.pairs
        return ()

    def next_deadline(self) -> float | None:
        """When the oldest sample held leaves the window (None when empty)."""
        return self.times[0] + self.span if self.times else None

    def points(self) -> list[tuple[float, float]]:
        return list(zip(self.times, self.values, strict=True))

    def load(self, points: Iterable[tuple[float, float]]) -> None:
        """Replace the samples with ``points`` (any order), keeping the cutoff."""
        self._rebuild(sorted(points))

    def _evict(self) -> int:
        times, values = self.times, self.values
        cutoff = self.cutoff
        removed = 0
        while times and (times[0] <= cutoff or len(times) > self.cap):
            times.popleft()
            v = values.popleft()
            removed += 1
            if self.need_sum:
                self.total -= v
            if self.need_sorted:
                del self.sorted[bisect_left(self.sorted, v)]
        first = self.added - len(values)
        if self.need_min:
            while self.min_i and self.min_i[0] < first:
                self.min_i.popleft()
                self.min_v.popleft()
        if self.need_max:
            while self.max_i and self.max_i[0] < first:
                self.max_i.popleft()
                self.max_v.popleft()
        if self.need_sum:
            self._removed += removed
            if not values:
                self.total = 0.0
                self._removed = 0
            elif self._removed >= len(values):
                self.total = math.fsum(values)
                self._removed = 0
        return removed

    def _insert_late(self, t: float, v: float) -> None:
        if t <= self.cutoff:
            return  # it left the window already: counting it now would move the window back
        times, values = self.times, self.values
        held = len(times)
        k = 0  # held samples newer than t (a sample of the same time stays before it)
        while k < held and times[held - 1 - k] > t:
            k += 1
            if k > MAX_LATE_SHIFT:
                self.late_dropped += 1
                return
        newer = [(times.pop(), values.pop()) for _ in range(k)]
        newer.reverse()
        first = self.added - held  # index of the oldest held sample
        self.added -= k
        kept = first + held - k  # indices from here on were the newer samples'
        if self.need_sum:
            for _, old in newer:
                self.total -= old
            self._removed += k  # subtracting drifts like evicting: recomputed exactly in time
        if self.need_sorted:
            ordered = self.sorted
            for _, old in newer:
                del ordered[bisect_left(ordered, old)]
        # Min and max deques: drop the newer samples' entries. Entries they had pushed out are missing, but
        # each would be pushed out again when the same newer samples are added back after the late one.
        if self.need_min:
            while self.min_i and self.min_i[-1] >= kept:
                self.min_i.pop()
                self.min_v.pop()
        if self.need_max:
            while self.max_i and self.max_i[-1] >= kept:
                self.max_i.pop()
                self.max_v.pop()
        self.last_t = times[-1] if times else -math.inf
        self.add(t, v)
        for nt, nv in newer:
            self.add(nt, nv)
        if self.need_sum and self._removed >= len(self.values):
            self.total = math.fsum(self.values)
            self._removed = 0

    def _rebuild(self, ordered: list[tuple[float, float]]) -> None:
        cutoff = self.cutoff
        self.times.clear()
        self.values.clear()
        self.total = 0.0
        self._removed = 0
        self.min_i, self.min_v = (deque(), deque()) if self.need_min else (_UNUSED, _UNUSED)
        self.max_i, self.max_v = (deque(), deque()) if self.need_max else (_UNUSED, _UNUSED)
        self.sorted.clear()
        self.last_t = -math.inf
        for t, v in ordered:
            if t > cutoff:
                self.add(t, v)
        self.cutoff = max(self.cutoff, cutoff)
        if self.times and self.times[0] <= self.cutoff:
            self._evict()

    # --- answers ---------------------------------------------------------------------------------------

    def aggregate(self, how: Aggregation) -> float | None:
        """``how`` over the samples in the window; None when it is empty (count: 0)."""
        n = len(self.values)
        if not n:
            return 0.0 if how is Aggregation.COUNT else None
        match how:
            case Aggregation.MEAN:
                return self.total / n
            case Aggregation.LAST:
                return self.values[-1]
            case Aggregation.MAX:
                return self.max_v[0]
            case Aggregation.MIN:
                return self.min_v[0]
            case Aggregation.COUNT:
                return float(n)
            case Aggregation.SUM:
                return self.total
            case Aggregation.FIRST:
                return self.values[0]
        # Nearest rank, exactly as the time-series stores (InfluxQL's PERCENTILE) define it.
        percentile = how.percentile
        assert percentile is not None
        rank = int(n * percentile / 100 + 0.5)
        return self.sorted[rank - 1] if rank >= 1 else None


class Band:
    """An anomaly band of one series: the current window and the baseline before it, shared by every
    anomaly rule on the same (monitor, field, window, baseline).

    With reference time T (the latest sample's time, or now on the clock) the current window holds the
    samples in ``(T - window, T]`` and the baseline those in ``(T - window - baseline, T - window]``. A zero
    window's current value is the latest sample alone, and the baseline is the samples before it within
    ``(T - baseline, T]``. The baseline keeps a running count, sum and sum of squares of values shifted by a
    reference near their mean (so the variance does not cancel catastrophically), recomputed exactly after
    as many removals as it holds.
    """

    __slots__ = (
        "_arm",
        "_cur_removed",
        "_removed",
        "armed",
        "base_s1",
        "base_s2",
        "base_shift",
        "base_t",
        "base_v",
        "baseline",
        "cap",
        "cur_sum",
        "cur_t",
        "cur_v",
        "dead",
        "last_t",
        "late_dropped",
        "pairs",
        "ref",
        "stale",
        "window",
    )

    def __init__(self, window: float, baseline: float, arm: Arm, cap: int = MAX_SAMPLES) -> None:
        self.armed: float | None = None
        self.dead = False
        self.window = window
        self.baseline = baseline
        self.cap = cap
        self._arm = arm
        self.cur_t: deque[float] = deque()
        self.cur_v: deque[float] = deque()
        self.cur_sum = 0.0
        self._cur_removed = 0
        self.base_t: deque[float] = deque()
        self.base_v: deque[float] = deque()
        self.base_shift = 0.0
        self.base_s1 = 0.0
        self.base_s2 = 0.0
        self._removed = 0
        self.ref = -math.inf  # the latest reference time: never moves back
        self.last_t = -math.inf
        self.pairs: list[object] = []
        self.stale = False
        self.late_dropped = 0

    def add(self, t: float, v: float) -> None:
        """Fold one sample in; the band then trails the latest sample's time."""
        if t < self.last_t:
            self._insert_late(t, v)
            return
        self.last_t = t
        self.cur_t.append(t)
        self.cur_v.append(v)
        self.cur_sum += v
        if t > self.ref:
            self.ref = t
        self._advance()
        if self.armed is None:
            deadline = self.next_deadline()
            if deadline is not None:
                self._arm(self, deadline)

    def expire(self, now: float) -> int:
        """Move the band on to trail ``now``; how many samples moved out of the window or the baseline."""
        if now <= self.ref:
            return 0
        self.ref = now
        return self._advance()

    def on_clock(self, now: float) -> Sequence[object]:
        """See :class:`Timed`: the pairs reading the band when samples moved (now or since they were last
        evaluated)."""
        moved = self.expire(now)
        following = self.next_deadline()
        if following is not None:
            self._arm(self, following)
        if moved or self.stale:
            self.stale = False
            return self.pairs
        return ()

    def next_deadline(self) -> float | None:
        """When a sample next moves from the window to the baseline, or out of the baseline."""
        soonest = math.inf
        if self.window and self.cur_t:
            soonest = self.cur_t[0] + self.window
        if self.base_t:
            soonest = min(soonest, self.base_t[0] + self.window + self.baseline)
        return soonest if soonest != math.inf else None

    def _advance(self) -> int:
        moved = 0
        cur_t, cur_v = self.cur_t, self.cur_v
        if self.window:
            cut = self.ref - self.window
            while cur_t and (cur_t[0] <= cut or len(cur_t) > self.cap):
                self._to_baseline(cur_t.popleft(), cur_v.popleft())
                moved += 1
        else:
            while len(cur_t) > 1:
                self._to_baseline(cur_t.popleft(), cur_v.popleft())
                moved += 1
        if moved and self.window:
            self._cur_removed += moved
            if self._cur_removed >= len(cur_v):
                self.cur_sum = math.fsum(cur_v)
                self._cur_removed = 0
        base_t, base_v = self.base_t, self.base_v
        cut = self.ref - self.window - self.baseline
        removed = 0
        while base_t and (base_t[0] <= cut or len(base_t) > self.cap):
            base_t.popleft()
            d = base_v.popleft() - self.base_shift
            self.base_s1 -= d
            self.base_s2 -= d * d
            removed += 1
        if removed:
            self._removed += removed
            if self._removed >= len(base_v):
                self._recentre()
        return moved + removed

    def _to_baseline(self, t: float, v: float) -> None:
        self.cur_sum -= v
        if not self.base_v:
            self.base_shift = v
            self.base_s1 = self.base_s2 = 0.0
        self.base_t.append(t)
        self.base_v.append(v)
        d = v - self.base_shift
        self.base_s1 += d
        self.base_s2 += d * d

    def _recentre(self) -> None:
        values = self.base_v
        self._removed = 0
        if not values:
            self.base_s1 = self.base_s2 = 0.0
            return
        self.base_shift = math.fsum(values) / len(values)
        shifted = [v - self.base_shift for v in values]
        self.base_s1 = math.fsum(shifted)
        self.base_s2 = math.fsum(d * d for d in shifted)

    def points(self) -> list[tuple[float, float]]:
        return [*zip(self.base_t, self.base_v, strict=True), *zip(self.cur_t, self.cur_v, strict=True)]

    def load(self, points: Iterable[tuple[float, float]]) -> None:
        """Replace the samples with ``points`` (any order), keeping the reference time."""
        self._rebuild(sorted(points))

    def _insert_late(self, t: float, v: float) -> None:
        if t <= self.ref - self.window - self.baseline:
            return
        # As in Window: the newer samples come off the tail (the window's, then the baseline's), the late one
        # goes in, and they are added back; the reference time stays.
        cur_t, cur_v, base_t, base_v = self.cur_t, self.cur_v, self.base_t, self.base_v
        in_cur = in_base = 0
        while in_cur < len(cur_t) and cur_t[-1 - in_cur] > t and in_cur <= MAX_LATE_SHIFT:
            in_cur += 1
        if in_cur == len(cur_t):
            while in_base < len(base_t) and base_t[-1 - in_base] > t and in_cur + in_base <= MAX_LATE_SHIFT:
                in_base += 1
        if in_cur + in_base > MAX_LATE_SHIFT:
            self.late_dropped += 1
            return
        newer: list[tuple[float, float]] = []
        for _ in range(in_cur):
            old = cur_v.pop()
            newer.append((cur_t.pop(), old))
            self.cur_sum -= old
        self._cur_removed += in_cur
        for _ in range(in_base):
            old = base_v.pop()
            newer.append((base_t.pop(), old))
            d = old - self.base_shift
            self.base_s1 -= d
            self.base_s2 -= d * d
        self._removed += in_base
        self.last_t = cur_t[-1] if cur_t else (base_t[-1] if base_t else -math.inf)
        self.add(t, v)
        for nt, nv in reversed(newer):
            self.add(nt, nv)
        if self._removed >= len(base_v):
            self._recentre()
        if self._cur_removed >= len(cur_v):
            self.cur_sum = math.fsum(cur_v)
            self._cur_removed = 0

    def _rebuild(self, ordered: list[tuple[float, float]]) -> None:
        ref = self.ref
        for ring in (self.cur_t, self.cur_v, self.base_t, self.base_v):
            ring.clear()
        self.cur_sum = self.base_s1 = self.base_s2 = 0.0
        self._removed = 0
        self.last_t = -math.inf
        self.ref = -math.inf
        lowest = ref - self.window - self.baseline
        for t, v in ordered:
            if t > lowest:
                self.add(t, v)
        if ref > self.ref:
            self.ref = ref
            self._advance()
        self._recentre()
        self.cur_sum = math.fsum(self.cur_v)

    # --- answers ---------------------------------------------------------------------------------------

    def current(self) -> float | None:
        """The latest value (zero window) or the mean over the window; None when the window is empty."""
        n = len(self.cur_v)
        if not n:
            return None
        return self.cur_v[-1] if not self.window else self.cur_sum / n

    def baseline_stats(self) -> tuple[int, float, float]:
        """(count, mean, sample standard deviation) of the baseline; mean and deviation 0 below two samples."""
        n = len(self.base_v)
        if n < 2:
            return n, (self.base_v[0] if n else 0.0), 0.0
        s1 = self.base_s1
        variance = (self.base_s2 - s1 * s1 / n) / (n - 1)
        return n, self.base_shift + s1 / n, math.sqrt(variance) if variance > 0 else 0.0


def _percentile(q: float) -> Callable[[Window], float]:
    def read(window: Window) -> float:
        rank = int(len(window.sorted) * q / 100 + 0.5)  # nearest rank; at least 1 for a non-empty window
        return window.sorted[rank - 1]

    return read


# How each aggregation reads a non-empty window, without dispatching on the aggregation per call.
READERS: dict[Aggregation, Callable[[Window], float]] = {
    Aggregation.MEAN: lambda w: w.total / len(w.values),
    Aggregation.MIN: lambda w: w.min_v[0],
    Aggregation.MAX: lambda w: w.max_v[0],
    Aggregation.FIRST: lambda w: w.values[0],
    Aggregation.LAST: lambda w: w.values[-1],
    Aggregation.COUNT: lambda w: float(len(w.values)),
    Aggregation.SUM: lambda w: w.total,
    Aggregation.P50: _percentile(50.0),
    Aggregation.P95: _percentile(95.0),
    Aggregation.P99: _percentile(99.0),
}
