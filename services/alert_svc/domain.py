"""Alerting's types and rules, plain Python: alert rules and their conditions, alerts and their transitions,
silences and maintenance windows, evaluations, and what the alert service knows of monitors.

Nothing here imports grpc, the generated code, or an adapter: the servicer translates, the stores persist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from service_runtime.errors import InvalidArgument, ResourceExhausted, Violations
from service_runtime.timeseries import Aggregation, check_field_name

# --- what the alert service knows of monitors ----------------------------------------------------------


class MonitorState(StrEnum):
    """A monitor's state as the monitor service reports it (retries and quorum applied)."""

    UNSPECIFIED = "unspecified"
    UP = "up"
    DOWN = "down"
    PENDING = "pending"
    PAUSED = "paused"
    UNKNOWN = "unknown"


# The fields each monitor kind writes (the contract's spec comments; the monitor service holds the same).
FIELDS_BY_KIND: Mapping[str, frozenset[str]] = {
    "website": frozenset({"is_up", "status_code", "response_time_ms", "cert_days_left"}),
    "crypto_price": frozenset({"is_up", "price"}),
    "tcp": frozenset({"is_up", "connect_time_ms"}),
    "dns": frozenset({"is_up", "response_time_ms", "answer_count"}),
    "heartbeat": frozenset({"is_up", "run_time_ms"}),
    "grpc_health": frozenset({"is_up", "response_time_ms"}),
}
ANY_KIND_FIELDS = frozenset().union(*FIELDS_BY_KIND.values())


@dataclass(frozen=True, slots=True)
class MonitorInfo:
    """A monitor as the alert service sees it: whose, which labels, which kind, and its current state."""

    monitor_id: str
    owner_id: str
    display_name: str
    labels: Mapping[str, str]
    kind: str
    state: MonitorState
    state_change_time: datetime | None = None
    paused: bool = False
    interval: timedelta = timedelta(seconds=60)
    # The owner's account address: their alerts go there when they have no default channel.
    owner_email: str = ""
    # While DOWN: what the last check found ("connection failed: ..."), for the alert's explanation.
    down_reason: str = ""


@dataclass(frozen=True, slots=True)
class SampleEvent:
    """One recorded sample of a monitor: the numeric fields written at one time (seconds since the epoch)."""

    owner_id: str
    monitor_id: str
    time: float
    fields: Mapping[str, float]


# --- rules ---------------------------------------------------------------------------------------------


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Operator(StrEnum):
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="
    EQ = "=="
    NE = "!="

    def holds(self, value: float, threshold: float) -> bool:
        """Whether ``value <op> threshold``."""
        match self:
            case Operator.GT:
                return value > threshold
            case Operator.GE:
                return value >= threshold
            case Operator.LT:
                return value < threshold
            case Operator.LE:
                return value <= threshold
            case Operator.EQ:
                return value == threshold
            case Operator.NE:
                return value != threshold


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"
    EITHER = "either"


@dataclass(frozen=True, slots=True)
class ThresholdCondition:
    """``aggregation(field) over window <operator> value``; a zero window means the latest sample."""

    field: str
    aggregation: Aggregation
    window: timedelta
    operator: Operator
    value: float


@dataclass(frozen=True, slots=True)
class ChangeCondition:
    """``field`` moved by at least ``percent`` % within ``window`` (oldest sample in it to the latest)."""

    field: str
    window: timedelta
    percent: float
    direction: Direction


@dataclass(frozen=True, slots=True)
class MonitorDownCondition:
    """The monitor's state is DOWN."""


@dataclass(frozen=True, slots=True)
class NoDataCondition:
    """No sample for ``duration``."""

    duration: timedelta


@dataclass(frozen=True, slots=True)
class AnomalyCondition:
    """The latest value (or the mean over ``window``) lies more than ``deviations`` standard deviations from
    the mean of the ``baseline`` before it, once the baseline holds ``min_samples`` samples."""

    field: str
    window: timedelta
    baseline: timedelta
    deviations: float
    min_samples: int
    direction: Direction


Condition = ThresholdCondition | ChangeCondition | MonitorDownCondition | NoDataCondition | AnomalyCondition

DEFAULT_BASELINE = timedelta(hours=24)
DEFAULT_MIN_SAMPLES = 30
MAX_WINDOW = timedelta(days=7)
MAX_DURATION = timedelta(days=30)
MAX_DISPLAY_NAME = 200
MAX_DESCRIPTION = 2000
MAX_CRON = 200  # characters of a maintenance window's cron expression ("0 22 * * 1-5" is 12)
MAX_SELECTOR = 20
MAX_CHANNELS = 20
# Different windows (field and window length; an anomaly's window and baseline) one user's enabled rules may
# use. Every sample of a series is folded into each window kept over it, and each keeps up to 10,000 samples:
# 990 rules with distinct 7-day windows on one heartbeat had made each ping cost 990 window updates (and a late
# one 990 rebuilds). Rules sharing a field and window share one, so this bounds work and memory, not rules.
MAX_WINDOWS_PER_USER = 20
DEFAULT_RULE_NAME = "A monitor is down"


def condition_field(condition: Condition) -> str | None:
    """The sample field a condition reads, if it reads one."""
    if isinstance(condition, ThresholdCondition | ChangeCondition | AnomalyCondition):
        return condition.field
    return None


@dataclass(frozen=True, slots=True)
class RuleDraft:
    """A rule as a caller writes it: everything but the server's own fields. Durations unset are None."""

    display_name: str = ""
    monitor_id: str = ""
    selector: Mapping[str, str] = field(default_factory=dict)
    condition: Condition | None = None
    severity: Severity | None = None
    for_duration: timedelta | None = None
    keep_firing_for: timedelta | None = None
    repeat_interval: timedelta | None = None
    cooldown: timedelta | None = None
    escalate_after: timedelta | None = None
    channel_ids: Sequence[str] = ()
    escalation_channel_ids: Sequence[str] = ()
    enabled: bool | None = None
    description: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AlertRule:
    """A stored rule. Watches ``monitor_id``, or, when it is empty, every monitor of the owner's whose labels
    include ``selector`` (all of them for an empty selector)."""

    id: str
    owner_id: str
    display_name: str
    monitor_id: str
    selector: Mapping[str, str]
    condition: Condition
    severity: Severity
    for_duration: timedelta
    keep_firing_for: timedelta
    repeat_interval: timedelta | None
    cooldown: timedelta
    escalate_after: timedelta | None
    channel_ids: tuple[str, ...]
    escalation_channel_ids: tuple[str, ...]
    enabled: bool
    description: str
    labels: Mapping[str, str]
    is_default: bool
    create_time: datetime
    update_time: datetime

    def watches(self, monitor: MonitorInfo) -> bool:
        """Whether this rule applies to ``monitor``."""
        if monitor.owner_id != self.owner_id:
            return False
        if self.monitor_id:
            return monitor.monitor_id == self.monitor_id
        return all(monitor.labels.get(k) == v for k, v in self.selector.items())


def default_rule_draft() -> RuleDraft:
    """The rule every user starts with: any of their monitors DOWN, to their default channels."""
    return RuleDraft(
        display_name=DEFAULT_RULE_NAME,
        condition=MonitorDownCondition(),
        severity=Severity.CRITICAL,
        description="Created for every account, so a monitor going down is always heard. Change or delete it.",
    )


_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")


def _check_duration(bad: Violations, path: str, value: timedelta | None, most: timedelta = MAX_DURATION) -> None:
    if value is not None and (value < timedelta(0) or value > most):
        bad.add(path, f"must be between 0s and {int(most.total_seconds())}s")


def _check_labels(bad: Violations, path: str, labels: Mapping[str, str], most: int) -> None:
    if len(labels) > most:
        bad.add(path, f"at most {most} entries")
    for key, value in labels.items():
        if not _LABEL_KEY.match(key) or len(value) > 200:
            bad.add(path, f"label {key[:40]!r}: keys are lower-case identifiers, values up to 200 characters")
            return


def _check_channels(bad: Violations, path: str, ids: Sequence[str]) -> None:
    if len(ids) > MAX_CHANNELS:
        bad.add(path, f"at most {MAX_CHANNELS} channels")
    elif any(not i or len(i) > 64 for i in ids):
        bad.add(path, "channel ids are non-empty, up to 64 characters")


def _check_field(bad: Violations, path: str, name: str, kind: str | None) -> None:
    """A field the watched monitor's kind writes (when the rule watches one monitor), or one some kind writes (a
    rule over a selector: a misspelt field would leave it unknown on every monitor, never firing)."""
    allowed = FIELDS_BY_KIND.get(kind) if kind else None
    if allowed is not None:
        if name not in allowed:
            bad.add(path, f"a {kind} monitor writes {', '.join(sorted(allowed))}")
        return
    try:
        check_field_name(name, field_path=path)
    except InvalidArgument as invalid:
        bad.found.extend(invalid.violations)
        return
    if name not in ANY_KIND_FIELDS:
        bad.add(path, f"no monitor writes {name!r}; monitors write {', '.join(sorted(ANY_KIND_FIELDS))}")


def validate_condition(condition: Condition | None, kind: str | None, bad: Violations, path: str) -> None:
    """Every invalid value of ``condition``; ``kind`` is the watched monitor's kind (None for a selector)."""
    if condition is None:
        bad.add(path, "is required: set one of threshold, change, monitor_down, no_data, anomaly")
        return
    if isinstance(condition, ThresholdCondition):
        _check_field(bad, f"{path}.threshold.field", condition.field, kind)
        _check_duration(bad, f"{path}.threshold.window", condition.window, MAX_WINDOW)
        if condition.value != condition.value or abs(condition.value) == float("inf"):
            bad.add(f"{path}.threshold.value", "must be a finite number")
    elif isinstance(condition, ChangeCondition):
        _check_field(bad, f"{path}.change.field", condition.field, kind)
        if condition.window <= timedelta(0) or condition.window > MAX_WINDOW:
            bad.add(f"{path}.change.window", f"must be more than 0s and at most {int(MAX_WINDOW.total_seconds())}s")
        if not 0 < condition.percent < 1e6:
            bad.add(f"{path}.change.percent", "must be a percentage more than 0")
    elif isinstance(condition, NoDataCondition):
        if condition.duration <= timedelta(0) or condition.duration > MAX_DURATION:
            bad.add(f"{path}.no_data.duration", "must be more than 0s and at most 30 days")
    elif isinstance(condition, AnomalyCondition):
        _check_field(bad, f"{path}.anomaly.field", condition.field, kind)
        _check_duration(bad, f"{path}.anomaly.window", condition.window, MAX_WINDOW)
        if condition.baseline <= condition.window or condition.baseline > MAX_WINDOW:
            bad.add(f"{path}.anomaly.baseline", "must be longer than the window and at most 7 days")
        if not 0 < condition.deviations <= 100 or condition.deviations != condition.deviations:
            bad.add(f"{path}.anomaly.deviations", "must be more than 0 (and at most 100)")
        if not 2 <= condition.min_samples <= 100_000:
            bad.add(f"{path}.anomaly.min_samples", "must be between 2 and 100000")


def validate_rule(draft: RuleDraft, kind: str | None, prefix: str = "alert_rule") -> RuleDraft:
    """The draft with defaults filled in; INVALID_ARGUMENT naming every invalid field. ``kind`` is the watched
    monitor's kind when the rule names one."""
    bad = Violations()
    name = draft.display_name.strip()
    if len(draft.display_name) > MAX_DISPLAY_NAME:
        bad.add(f"{prefix}.display_name", f"must be at most {MAX_DISPLAY_NAME} characters")
    if len(draft.description) > MAX_DESCRIPTION:
        bad.add(f"{prefix}.description", f"must be at most {MAX_DESCRIPTION} characters")
    if draft.monitor_id and draft.selector:
        bad.add(f"{prefix}.monitor_selector", "set either monitor_id or monitor_selector, not both")
    _check_labels(bad, f"{prefix}.monitor_selector", draft.selector, MAX_SELECTOR)
    _check_labels(bad, f"{prefix}.labels", draft.labels, MAX_SELECTOR)
    validate_condition(draft.condition, kind, bad, f"{prefix}.condition")
    _check_duration(bad, f"{prefix}.for_duration", draft.for_duration)
    _check_duration(bad, f"{prefix}.keep_firing_for", draft.keep_firing_for)
    _check_duration(bad, f"{prefix}.cooldown", draft.cooldown)
    for path, every in (
        (f"{prefix}.repeat_interval", draft.repeat_interval),
        (f"{prefix}.escalate_after", draft.escalate_after),
    ):
        if every is not None and not timedelta(minutes=1) <= every <= MAX_DURATION:
            bad.add(path, "must be between 60s and 30 days (unset: never)")
    _check_channels(bad, f"{prefix}.channel_ids", draft.channel_ids)
    _check_channels(bad, f"{prefix}.escalation_channel_ids", draft.escalation_channel_ids)
    if draft.escalate_after is not None and not draft.escalation_channel_ids:
        bad.add(f"{prefix}.escalation_channel_ids", "name at least one channel to escalate to")
    bad.raise_any()
    condition = draft.condition
    return RuleDraft(
        display_name=name or _default_name(condition),
        monitor_id=draft.monitor_id,
        selector=dict(draft.selector),
        condition=condition,
        severity=draft.severity or Severity.WARNING,
        for_duration=draft.for_duration or timedelta(0),
        keep_firing_for=draft.keep_firing_for or timedelta(0),
        repeat_interval=draft.repeat_interval,
        cooldown=draft.cooldown or timedelta(0),
        escalate_after=draft.escalate_after,
        channel_ids=tuple(dict.fromkeys(draft.channel_ids)),
        escalation_channel_ids=tuple(dict.fromkeys(draft.escalation_channel_ids)),
        enabled=True if draft.enabled is None else draft.enabled,
        description=draft.description,
        labels=dict(draft.labels),
    )


def window_key(condition: Condition | None) -> tuple[str, float, float] | None:
    """The window structure a condition keeps over its series, as (field, window s, baseline s); None for
    conditions keeping none (monitor_down, no_data, a threshold on the latest value)."""
    if isinstance(condition, ThresholdCondition):
        span = condition.window.total_seconds()
        return (condition.field, span, 0.0) if span else None
    if isinstance(condition, ChangeCondition):
        return (condition.field, condition.window.total_seconds(), 0.0)
    if isinstance(condition, AnomalyCondition):
        return (condition.field, condition.window.total_seconds(), condition.baseline.total_seconds())
    return None


def check_windows(draft: RuleDraft, others: Iterable[AlertRule], rule_id: str = "") -> None:
    """RESOURCE_EXHAUSTED (limit ``windows_per_user``) when saving ``draft`` (as rule ``rule_id`` when it
    replaces one) would bring its owner's enabled rules (``others``) to more than MAX_WINDOWS_PER_USER
    different windows. A draft reusing a window already in use always passes."""
    key = window_key(draft.condition)
    if key is None or draft.enabled is False:
        return
    used = {k for r in others if r.enabled and r.id != rule_id and (k := window_key(r.condition)) is not None}
    if key in used or len(used) < MAX_WINDOWS_PER_USER:
        return
    shown = sorted({f"{name} over {seconds_text(timedelta(seconds=span))}" for name, span, _ in used})
    raise ResourceExhausted(
        "windows_per_user",
        f"at most {MAX_WINDOWS_PER_USER} different windows (field and window length) across your rules; rules "
        f"with the same field and window share one. Use one already in use ({', '.join(shown[:5])}"
        f"{', ...' if len(shown) > 5 else ''}) or delete rules using others",
    )


def _default_name(condition: Condition | None) -> str:
    return describe_condition(condition) if condition is not None else ""


def seconds_text(span: timedelta) -> str:
    """``5m``, ``1h``, ``90s``: a duration as a person writes it."""
    total = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total and total % size == 0:
            return f"{total // size}{unit}"
    return f"{total}s"


def describe_condition(condition: Condition) -> str:
    """The condition in one line: ``mean response_time_ms over 5m > 800``."""
    if isinstance(condition, ThresholdCondition):
        compared = f"{condition.operator.value} {condition.value:g}"
        if condition.window:
            over = seconds_text(condition.window)
            return f"{condition.aggregation.value} {condition.field} over {over} {compared}"
        return f"{condition.field} {compared}"
    if isinstance(condition, ChangeCondition):
        way = {"up": "rose", "down": "fell", "either": "moved"}[condition.direction.value]
        return f"{condition.field} {way} {condition.percent:g}% within {seconds_text(condition.window)}"
    if isinstance(condition, MonitorDownCondition):
        return "monitor is down"
    if isinstance(condition, NoDataCondition):
        return f"no data for {seconds_text(condition.duration)}"
    what = f"mean {condition.field} over {seconds_text(condition.window)}" if condition.window else condition.field
    side = {"up": "above", "down": "below", "either": "away from"}[condition.direction.value]
    return f"{what} {condition.deviations:g} standard deviations {side} its {seconds_text(condition.baseline)} baseline"


# --- evaluations ----------------------------------------------------------------------------------------


class Verdict(StrEnum):
    """What one evaluation found: the condition holds, it does not, or it cannot be told (store or feed down)."""

    MET = "met"
    CLEAR = "clear"
    UNKNOWN = "unknown"


class Explainer(Protocol):
    """Writes an evaluation's explanation from it and what the writer holds, when the explanation is read."""

    def explain(self, evaluation: Evaluation) -> str: ...


@dataclass(slots=True)
class Evaluation:
    """One evaluation of a rule on one monitor. ``value`` is None when there was no data.

    The evaluator builds one for every (rule, monitor) pair a sample reaches, about as many as samples
    arrive (100,000 a second), and most are dropped unread (CLEAR with no open alert, nobody watching the
    stream). So building one is cheap: ``timestamp`` holds the time as epoch seconds (``time`` is the
    datetime, made when read), and ``why`` holds the explanation or an :class:`Explainer` that writes it
    when ``explanation`` is read. Not frozen, since a frozen dataclass's __init__ costs five times as much
    (1 µs of the 10 µs a sample may take); treat it as immutable all the same and derive with
    ``dataclasses.replace``, as the lifecycle does.
    """

    rule_id: str
    owner_id: str
    monitor_id: str
    timestamp: float
    verdict: Verdict
    value: float | None
    threshold: float | None
    why: str | Explainer
    # Filled in by the lifecycle: the alert state after this evaluation and the open alert, if any.
    state: AlertState | None = None
    alert_id: str = ""

    @property
    def time(self) -> datetime:
        """When the evaluation applies: the series' latest sample, or the clock's now."""
        return datetime.fromtimestamp(self.timestamp, UTC)

    @property
    def explanation(self) -> str:
        """Why the verdict, in one line: ``mean response_time_ms over 5m = 912 > 800``."""
        why = self.why
        return why if isinstance(why, str) else why.explain(self)


# --- alerts ---------------------------------------------------------------------------------------------


class AlertState(StrEnum):
    PENDING = "pending"
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"

    @property
    def is_open(self) -> bool:
        return self is not AlertState.RESOLVED


class Transition(StrEnum):
    CURRENT = "current"
    PENDING = "pending"
    FIRED = "fired"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    REPEATED = "repeated"
    ESCALATED = "escalated"


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert of a rule on one monitor. At most one is open (not resolved) per rule and monitor."""

    id: str
    owner_id: str
    rule_id: str
    monitor_id: str
    state: AlertState
    severity: Severity
    value: float
    threshold: float
    summary: str
    explanation: str
    rule_name: str
    monitor_name: str
    start_time: datetime
    update_time: datetime
    fire_time: datetime | None = None
    acknowledge_time: datetime | None = None
    acknowledged_by: str = ""
    resolve_time: datetime | None = None
    resolved_by: str = ""
    comment: str = ""
    escalate_time: datetime | None = None
    # When the condition last held (keep_firing_for counts from here), and the last notification's time
    # and sequence number (repeat_interval counts from it; the sequence makes idempotency keys unique).
    last_met_time: datetime | None = None
    notify_time: datetime | None = None
    notify_sequence: int = 0


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One transition of an alert, with the value and explanation that caused it."""

    alert_id: str
    transition: Transition
    time: datetime
    value: float
    explanation: str
    actor: str


# --- silences and maintenance windows -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SilenceDraft:
    monitor_id: str = ""
    rule_id: str = ""
    selector: Mapping[str, str] = field(default_factory=dict)
    start_time: datetime | None = None
    end_time: datetime | None = None
    comment: str = ""
    cron_schedule: str = ""
    duration: timedelta | None = None
    time_zone: str = ""


@dataclass(frozen=True, slots=True)
class Silence:
    """Mutes notifications of matching alerts (never their state) while active: from ``start_time`` to
    ``end_time``, or, with a cron schedule, for ``duration`` after each occurrence within them."""

    id: str
    owner_id: str
    monitor_id: str
    rule_id: str
    selector: Mapping[str, str]
    start_time: datetime
    end_time: datetime | None
    comment: str
    cron_schedule: str
    duration: timedelta | None
    time_zone: str
    create_time: datetime

    def matches(self, rule_id: str, monitor: MonitorInfo | None, monitor_id: str) -> bool:
        """Whether this silence covers an alert of ``rule_id`` on ``monitor_id``."""
        if self.rule_id and self.rule_id != rule_id:
            return False
        if self.monitor_id and self.monitor_id != monitor_id:
            return False
        if self.selector:
            labels = monitor.labels if monitor is not None else {}
            return all(labels.get(k) == v for k, v in self.selector.items())
        return True

    def active_at(self, now: datetime) -> bool:
        """Whether it mutes at ``now``."""
        if now < self.start_time or (self.end_time is not None and now >= self.end_time):
            return False
        if not self.cron_schedule or self.duration is None:
            return True
        local = now.astimezone(ZoneInfo(self.time_zone or "UTC"))
        # Only the latest occurrence at or before now can still be running (one step back, whatever the
        # schedule: "* * * * *" with a 7-day window had walked 10,080 occurrences per check).
        latest = next(CronSim(self.cron_schedule, local + timedelta(seconds=1), reverse=True), None)
        return latest is not None and local < latest + self.duration

    def next_start(self, now: datetime) -> datetime | None:
        """When it next begins to mute after ``now`` (None: it will not again)."""
        if not self.cron_schedule:
            return self.start_time if now < self.start_time else None
        local = max(now, self.start_time).astimezone(ZoneInfo(self.time_zone or "UTC"))
        upcoming = next(CronSim(self.cron_schedule, local), None)
        if upcoming is None or (self.end_time is not None and upcoming >= self.end_time):
            return None
        return upcoming.astimezone(UTC)


def validate_silence(draft: SilenceDraft, now: datetime, prefix: str = "silence") -> SilenceDraft:
    """The draft with its start filled in (now); INVALID_ARGUMENT naming every invalid field."""
    bad = Violations()
    start = draft.start_time or now
    if draft.end_time is not None and draft.end_time <= start:
        bad.add(f"{prefix}.end_time", "must be after start_time")
    if draft.end_time is None and not draft.cron_schedule:
        bad.add(f"{prefix}.end_time", "is required (a recurring window may leave it unset)")
    if len(draft.comment) > MAX_DESCRIPTION:
        bad.add(f"{prefix}.comment", f"must be at most {MAX_DESCRIPTION} characters")
    _check_labels(bad, f"{prefix}.monitor_selector", draft.selector, MAX_SELECTOR)
    if len(draft.cron_schedule) > MAX_CRON:
        # Parsing a megabyte of cron (every minute listed a thousand times) held the service for seconds.
        bad.add(f"{prefix}.cron_schedule", f"must be at most {MAX_CRON} characters")
    elif draft.cron_schedule:
        try:
            CronSim(draft.cron_schedule, now)
        except (CronSimError, ValueError) as error:
            bad.add(f"{prefix}.cron_schedule", f"not a five-field cron expression: {error}")
        if draft.duration is None or not timedelta(minutes=1) <= draft.duration <= timedelta(days=7):
            bad.add(f"{prefix}.duration", "a recurring window lasts between 60s and 7 days")
    elif draft.duration is not None:
        bad.add(f"{prefix}.duration", "only a recurring window (cron_schedule) has a duration")
    if draft.time_zone:
        try:
            ZoneInfo(draft.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            bad.add(f"{prefix}.time_zone", "not an IANA time zone such as Europe/Paris")
    bad.raise_any()
    return SilenceDraft(
        monitor_id=draft.monitor_id,
        rule_id=draft.rule_id,
        selector=dict(draft.selector),
        start_time=start,
        end_time=draft.end_time,
        comment=draft.comment,
        cron_schedule=draft.cron_schedule.strip(),
        duration=draft.duration,
        time_zone=draft.time_zone,
    )


# --- hand-off to notifications ----------------------------------------------------------------------------


class NoticeKind(StrEnum):
    """What a notification tells (NotificationService's kinds)."""

    FIRING = "firing"
    RESOLVED = "resolved"
    REPEATED = "repeated"
    ACKNOWLEDGED = "acknowledged"


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification to hand to NotificationService, kept in the outbox until it is accepted.

    ``idempotency_key`` is alert id + transition + sequence, so a resend after a crash sends nothing twice.
    Empty ``channel_ids`` means the owner's default channels."""

    id: str
    owner_id: str
    idempotency_key: str
    channel_ids: tuple[str, ...]
    kind: NoticeKind
    severity: Severity
    alert_id: str
    rule_id: str
    monitor_id: str
    monitor_name: str
    summary: str
    value: float
    threshold: float
    event_time: datetime
    duration: timedelta | None = None
    attempts: int = 0
    next_attempt_time: datetime | None = None


def check_comment(comment: str, field: str = "comment") -> str:
    """An acknowledgement's or a manual resolution's comment: INVALID_ARGUMENT past MAX_DESCRIPTION characters
    (a 3,000,000-character comment had been stored)."""
    if len(comment) > MAX_DESCRIPTION:
        raise InvalidArgument(field, f"must be at most {MAX_DESCRIPTION} characters")
    return comment
