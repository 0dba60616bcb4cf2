"""Alert storage (SQLite or MySQL): rules, alerts and their transitions, silences, and the notification
outbox. Every read a user can reach is scoped by owner; the evaluator's and the outbox worker's reads span
owners.

Invariants the store keeps, on both backends:

- At most one open alert per rule and monitor: an open alert carries ``open_key`` (rule id + monitor id), a
  resolved one NULL, under a unique index (both backends allow many NULLs in one). A second open alert is
  :class:`AlertConflict`.
- An alert change, its transition and its outbox notices are written in one transaction: a crash or a
  failing write leaves all of them or none.
- Per-owner rule quota and the default rule go through the owner's row in ``alert_owners``, locked for the
  transaction (``SELECT ... FOR UPDATE``), so concurrent creates on several replicas count one at a time. The
  same row remembers that the default rule was made, so a deleted default stays deleted.
- Outbox notices are leased by a conditional UPDATE (atomic on both backends), so two workers never hold the
  same notice at once; a worker that dies leaves its lease to expire, and the notice goes again (at least
  once; NotificationService de-duplicates on the idempotency key).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
import sqlalchemy.dialects.mysql
import sqlalchemy.dialects.sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from service_runtime.database import Database, Quota, UtcDateTime, insert_under_quota, new_id, utc_now
from service_runtime.errors import FailedPrecondition, NotFound
from service_runtime.timeseries import Aggregation
from services.alert_svc.domain import (
    Alert,
    AlertEvent,
    AlertRule,
    AlertState,
    AnomalyCondition,
    ChangeCondition,
    Condition,
    Direction,
    MonitorDownCondition,
    NoDataCondition,
    Notice,
    NoticeKind,
    Operator,
    RuleDraft,
    Severity,
    Silence,
    SilenceDraft,
    ThresholdCondition,
    Transition,
    default_rule_draft,
    validate_rule,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_ID = 100  # width of id columns: our ids are 26 characters, ids callers name are kept whole up to this
_PAGE = 1000  # rows per internal page when a read spans owners
_DEADLOCK_RETRIES = 3
_MYSQL_DEADLOCK = 1213  # ER_LOCK_DEADLOCK: the transaction was rolled back, "try restarting transaction"
_CLAIM_CANDIDATES = 4  # due notices read per notice a worker claims (see claim_notices)


class AlertConflict(FailedPrecondition):
    """The rule already has an open alert on the monitor (another writer opened it first)."""

    def __init__(self, rule_id: str, monitor_id: str) -> None:
        super().__init__(
            f"rule {rule_id} already has an open alert on monitor {monitor_id}",
            {"rule_id": rule_id, "monitor_id": monitor_id},
        )


class Base(DeclarativeBase):
    pass


class OwnerRow(Base):
    """One row per owner who ever had a rule: the lock that serialises quota checks, and the default rule's
    marker."""

    __tablename__ = "alert_owners"

    owner_id: Mapped[str] = mapped_column(sa.String(_ID), primary_key=True)
    default_rule_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class RuleRow(Base):
    __tablename__ = "alert_rules"

    id: Mapped[str] = mapped_column(sa.String(_ID), primary_key=True)
    owner_id: Mapped[str] = mapped_column(sa.String(_ID))
    display_name: Mapped[str] = mapped_column(sa.Text())
    monitor_id: Mapped[str] = mapped_column(sa.String(_ID))
    selector: Mapped[str] = mapped_column(sa.Text())
    condition: Mapped[str] = mapped_column(sa.Text())
    severity: Mapped[str] = mapped_column(sa.String(16))
    for_duration_s: Mapped[float] = mapped_column(sa.Double())
    keep_firing_for_s: Mapped[float] = mapped_column(sa.Double())
    repeat_interval_s: Mapped[float | None] = mapped_column(sa.Double(), nullable=True)
    cooldown_s: Mapped[float] = mapped_column(sa.Double())
    escalate_after_s: Mapped[float | None] = mapped_column(sa.Double(), nullable=True)
    channel_ids: Mapped[str] = mapped_column(sa.Text())
    escalation_channel_ids: Mapped[str] = mapped_column(sa.Text())
    enabled: Mapped[bool] = mapped_column(sa.Boolean())
    description: Mapped[str] = mapped_column(sa.Text())
    labels: Mapped[str] = mapped_column(sa.Text())
    is_default: Mapped[bool] = mapped_column(sa.Boolean())
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    update_time: Mapped[datetime] = mapped_column(UtcDateTime())


class AlertRow(Base):
    __tablename__ = "alert_alerts"

    id: Mapped[str] = mapped_column(sa.String(_ID), primary_key=True)
    owner_id: Mapped[str] = mapped_column(sa.String(_ID))
    rule_id: Mapped[str] = mapped_column(sa.String(_ID))
    monitor_id: Mapped[str] = mapped_column(sa.String(_ID))
    # rule_id + "/" + monitor_id while open, NULL once resolved (unique: one open alert per rule and monitor).
    open_key: Mapped[str | None] = mapped_column(sa.String(2 * _ID + 1), nullable=True, unique=True)
    state: Mapped[str] = mapped_column(sa.String(16))
    severity: Mapped[str] = mapped_column(sa.String(16))
    value: Mapped[float | None] = mapped_column(sa.Double(), nullable=True)
    threshold: Mapped[float | None] = mapped_column(sa.Double(), nullable=True)
    summary: Mapped[str] = mapped_column(sa.Text())
    explanation: Mapped[str] = mapped_column(sa.Text())
    rule_name: Mapped[str] = mapped_column(sa.Text())
    monitor_name: Mapped[str] = mapped_column(sa.Text())
    start_time: Mapped[datetime] = mapped_column(UtcDateTime())
    update_time: Mapped[datetime] = mapped_column(UtcDateTime())
    fire_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    acknowledge_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    acknowledged_by: Mapped[str] = mapped_column(sa.Text())
    resolve_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    resolved_by: Mapped[str] = mapped_column(sa.Text())
    comment: Mapped[str] = mapped_column(sa.Text())
    escalate_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    last_met_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    notify_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    notify_sequence: Mapped[int] = mapped_column(sa.Integer())


class EventRow(Base):
    __tablename__ = "alert_events"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True)
    alert_id: Mapped[str] = mapped_column(sa.String(_ID))
    transition: Mapped[str] = mapped_column(sa.String(16))
    time: Mapped[datetime] = mapped_column(UtcDateTime())
    value: Mapped[float | None] = mapped_column(sa.Double(), nullable=True)
    explanation: Mapped[str] = mapped_column(sa.Text())
    actor: Mapped[str] = mapped_column(sa.Text())


class SilenceRow(Base):
    __tablename__ = "alert_silences"

    id: Mapped[str] = mapped_column(sa.String(_ID), primary_key=True)
    owner_id: Mapped[str] = mapped_column(sa.String(_ID))
    monitor_id: Mapped[str] = mapped_column(sa.String(_ID))
    rule_id: Mapped[str] = mapped_column(sa.String(_ID))
    selector: Mapped[str] = mapped_column(sa.Text())
    start_time: Mapped[datetime] = mapped_column(UtcDateTime())
    end_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    comment: Mapped[str] = mapped_column(sa.Text())
    cron_schedule: Mapped[str] = mapped_column(sa.Text())
    duration_s: Mapped[float | None] = mapped_column(sa.Double(), nullable=True)
    time_zone: Mapped[str] = mapped_column(sa.String(64))
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())


class NoticeRow(Base):
    __tablename__ = "alert_outbox"

    id: Mapped[str] = mapped_column(sa.String(_ID), primary_key=True)
    owner_id: Mapped[str] = mapped_column(sa.String(_ID))
    idempotency_key: Mapped[str] = mapped_column(sa.String(200))
    channel_ids: Mapped[str] = mapped_column(sa.Text())
    kind: Mapped[str] = mapped_column(sa.String(16))
    severity: Mapped[str] = mapped_column(sa.String(16))
    alert_id: Mapped[str] = mapped_column(sa.String(_ID))
    rule_id: Mapped[str] = mapped_column(sa.String(_ID))
    monitor_id: Mapped[str] = mapped_column(sa.String(_ID))
    monitor_name: Mapped[str] = mapped_column(sa.Text())
    summary: Mapped[str] = mapped_column(sa.Text())
    value: Mapped[float | None] = mapped_column(sa.Double(), nullable=True)
    threshold: Mapped[float | None] = mapped_column(sa.Double(), nullable=True)
    event_time: Mapped[datetime] = mapped_column(UtcDateTime())
    duration_s: Mapped[float | None] = mapped_column(sa.Double(), nullable=True)
    attempts: Mapped[int] = mapped_column(sa.Integer())
    next_attempt_time: Mapped[datetime] = mapped_column(UtcDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())


_RULE = tuple(RuleRow.__table__.columns)
_ALERT = tuple(c for c in AlertRow.__table__.columns if c.name != "open_key")
_EVENT = tuple(EventRow.__table__.columns)
_SILENCE = tuple(SilenceRow.__table__.columns)
_NOTICE = tuple(c for c in NoticeRow.__table__.columns if c.name not in ("lease_until", "create_time"))

# save_alert's statements, built once with bind parameters: statements built per call from ORM columns and
# value dicts cost more (about 0.4 ms each) than SQLite took to run them.
_ALERT_EXISTS = sa.select(AlertRow.id).where(AlertRow.id == sa.bindparam("b_id"))
_INSERT_ALERT = sa.insert(AlertRow)
_UPDATE_ALERT = sa.update(AlertRow).where(AlertRow.id == sa.bindparam("b_id"))
_INSERT_EVENT = sa.insert(EventRow)
_INSERT_NOTICE = sa.insert(NoticeRow)
_DUE_NOTICES = (
    sa.select(NoticeRow.id)
    .where(
        NoticeRow.next_attempt_time <= sa.bindparam("now"),
        sa.or_(NoticeRow.lease_until.is_(None), NoticeRow.lease_until < sa.bindparam("now")),
    )
    .order_by(NoticeRow.next_attempt_time, NoticeRow.id)
    .limit(sa.bindparam("limit"))
)
_LEASE_NOTICE = (
    sa.update(NoticeRow)
    .where(
        NoticeRow.id == sa.bindparam("notice_id"),
        # Still due and unleased: another worker may have leased it (or sent and retried it) since the read.
        NoticeRow.next_attempt_time <= sa.bindparam("now"),
        sa.or_(NoticeRow.lease_until.is_(None), NoticeRow.lease_until < sa.bindparam("now")),
    )
    .values(lease_until=sa.bindparam("until"))
)
_GET_RULE = sa.select(*_RULE).where(RuleRow.id == sa.bindparam("rule_id"), RuleRow.owner_id == sa.bindparam("owner"))
_LAST_RESOLVE = sa.select(sa.func.max(AlertRow.resolve_time)).where(
    AlertRow.rule_id == sa.bindparam("rule_id"),
    AlertRow.monitor_id == sa.bindparam("monitor_id"),
    AlertRow.resolve_time.is_not(None),
)


# --- conditions as JSON -----------------------------------------------------------------------------------


def condition_to_dict(condition: Condition) -> dict[str, Any]:
    """A condition as plain JSON values, tagged by its ``type``."""
    match condition:
        case ThresholdCondition():
            return {
                "type": "threshold",
                "field": condition.field,
                "aggregation": condition.aggregation.value,
                "window_s": condition.window.total_seconds(),
                "operator": condition.operator.value,
                "value": condition.value,
            }
        case ChangeCondition():
            return {
                "type": "change",
                "field": condition.field,
                "window_s": condition.window.total_seconds(),
                "percent": condition.percent,
                "direction": condition.direction.value,
            }
        case MonitorDownCondition():
            return {"type": "monitor_down"}
        case NoDataCondition():
            return {"type": "no_data", "duration_s": condition.duration.total_seconds()}
        case AnomalyCondition():
            return {
                "type": "anomaly",
                "field": condition.field,
                "window_s": condition.window.total_seconds(),
                "baseline_s": condition.baseline.total_seconds(),
                "deviations": condition.deviations,
                "min_samples": condition.min_samples,
                "direction": condition.direction.value,
            }
    raise TypeError(f"not a condition: {condition!r}")


def condition_from_dict(data: Mapping[str, Any]) -> Condition:
    """The inverse of :func:`condition_to_dict`."""
    match data["type"]:
        case "threshold":
            return ThresholdCondition(
                field=data["field"],
                aggregation=Aggregation(data["aggregation"]),
                window=timedelta(seconds=data["window_s"]),
                operator=Operator(data["operator"]),
                value=float(data["value"]),
            )
        case "change":
            return ChangeCondition(
                field=data["field"],
                window=timedelta(seconds=data["window_s"]),
                percent=float(data["percent"]),
                direction=Direction(data["direction"]),
            )
        case "monitor_down":
            return MonitorDownCondition()
        case "no_data":
            return NoDataCondition(duration=timedelta(seconds=data["duration_s"]))
        case "anomaly":
            return AnomalyCondition(
                field=data["field"],
                window=timedelta(seconds=data["window_s"]),
                baseline=timedelta(seconds=data["baseline_s"]),
                deviations=float(data["deviations"]),
                min_samples=int(data["min_samples"]),
                direction=Direction(data["direction"]),
            )
    raise ValueError(f"unknown condition type {data['type']!r}")


# --- row conversions --------------------------------------------------------------------------------------


def _seconds(span: timedelta | None) -> float | None:
    return None if span is None else span.total_seconds()


def _span(seconds: float | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=seconds)


def _finite(value: float) -> float | None:
    # MySQL's DOUBLE holds no NaN or infinity; such a value is kept as NULL and read back as NaN.
    return value if math.isfinite(value) else None


def _number(value: float | None) -> float:
    return math.nan if value is None else value


def _rule_values(draft: RuleDraft) -> dict[str, Any]:
    """The mutable columns of a rule, from a validated draft."""
    assert draft.condition is not None, "validate_rule() first"
    assert draft.severity is not None
    assert draft.for_duration is not None
    assert draft.keep_firing_for is not None
    assert draft.cooldown is not None
    return {
        "display_name": draft.display_name,
        "monitor_id": draft.monitor_id,
        "selector": json.dumps(dict(draft.selector), sort_keys=True),
        "condition": json.dumps(condition_to_dict(draft.condition)),
        "severity": draft.severity.value,
        "for_duration_s": draft.for_duration.total_seconds(),
        "keep_firing_for_s": draft.keep_firing_for.total_seconds(),
        "repeat_interval_s": _seconds(draft.repeat_interval),
        "cooldown_s": draft.cooldown.total_seconds(),
        "escalate_after_s": _seconds(draft.escalate_after),
        "channel_ids": json.dumps(list(draft.channel_ids)),
        "escalation_channel_ids": json.dumps(list(draft.escalation_channel_ids)),
        "enabled": True if draft.enabled is None else draft.enabled,
        "description": draft.description,
        "labels": json.dumps(dict(draft.labels), sort_keys=True),
    }


def _rule(row: Any, memo: dict[Any, Any] | None = None) -> AlertRule:
    """The rule of a row. ``memo``, shared by the rows of one read: the JSON columns, durations and
    severities that many rules share (a default rule's condition, ``{}``, ``[]``) are decoded once and the
    same immutable value is given to each rule; reading 100,000 rules took twice as long decoding each."""
    if memo is None:
        memo = {}

    def decoded(text: Any, decode: Callable[[Any], Any]) -> Any:
        key = (decode, text)
        value = memo.get(key)
        if value is None:
            value = memo[key] = decode(text)
        return value

    return AlertRule(
        id=row.id,
        owner_id=row.owner_id,
        display_name=row.display_name,
        monitor_id=row.monitor_id,
        selector=decoded(row.selector, _mapping),
        condition=decoded(row.condition, _condition),
        severity=decoded(row.severity, Severity),
        for_duration=decoded(row.for_duration_s, _duration),
        keep_firing_for=decoded(row.keep_firing_for_s, _duration),
        repeat_interval=_span(row.repeat_interval_s),
        cooldown=decoded(row.cooldown_s, _duration),
        escalate_after=_span(row.escalate_after_s),
        channel_ids=decoded(row.channel_ids, _ids),
        escalation_channel_ids=decoded(row.escalation_channel_ids, _ids),
        enabled=bool(row.enabled),
        description=row.description,
        labels=decoded(row.labels, _mapping),
        is_default=bool(row.is_default),
        create_time=row.create_time,
        update_time=row.update_time,
    )


def _mapping(text: str) -> Mapping[str, str]:
    return json.loads(text)  # type: ignore[no-any-return]


def _condition(text: str) -> Condition:
    return condition_from_dict(json.loads(text))


def _ids(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


def _duration(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def _open_key(alert: Alert) -> str | None:
    return f"{alert.rule_id}/{alert.monitor_id}" if alert.state.is_open else None


def _alert_values(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "owner_id": alert.owner_id,
        "rule_id": alert.rule_id,
        "monitor_id": alert.monitor_id,
        "open_key": _open_key(alert),
        "state": alert.state.value,
        "severity": alert.severity.value,
        "value": _finite(alert.value),
        "threshold": _finite(alert.threshold),
        "summary": alert.summary,
        "explanation": alert.explanation,
        "rule_name": alert.rule_name,
        "monitor_name": alert.monitor_name,
        "start_time": alert.start_time,
        "update_time": alert.update_time,
        "fire_time": alert.fire_time,
        "acknowledge_time": alert.acknowledge_time,
        "acknowledged_by": alert.acknowledged_by,
        "resolve_time": alert.resolve_time,
        "resolved_by": alert.resolved_by,
        "comment": alert.comment,
        "escalate_time": alert.escalate_time,
        "last_met_time": alert.last_met_time,
        "notify_time": alert.notify_time,
        "notify_sequence": alert.notify_sequence,
    }


def _alert(row: Any) -> Alert:
    return Alert(
        id=row.id,
        owner_id=row.owner_id,
        rule_id=row.rule_id,
        monitor_id=row.monitor_id,
        state=AlertState(row.state),
        severity=Severity(row.severity),
        value=_number(row.value),
        threshold=_number(row.threshold),
        summary=row.summary,
        explanation=row.explanation,
        rule_name=row.rule_name,
        monitor_name=row.monitor_name,
        start_time=row.start_time,
        update_time=row.update_time,
        fire_time=row.fire_time,
        acknowledge_time=row.acknowledge_time,
        acknowledged_by=row.acknowledged_by,
        resolve_time=row.resolve_time,
        resolved_by=row.resolved_by,
        comment=row.comment,
        escalate_time=row.escalate_time,
        last_met_time=row.last_met_time,
        notify_time=row.notify_time,
        notify_sequence=row.notify_sequence,
    )


def _event(row: Any) -> AlertEvent:
    return AlertEvent(
        alert_id=row.alert_id,
        transition=Transition(row.transition),
        time=row.time,
        value=_number(row.value),
        explanation=row.explanation,
        actor=row.actor,
    )


def _silence(row: Any) -> Silence:
    return Silence(
        id=row.id,
        owner_id=row.owner_id,
        monitor_id=row.monitor_id,
        rule_id=row.rule_id,
        selector=json.loads(row.selector),
        start_time=row.start_time,
        end_time=row.end_time,
        comment=row.comment,
        cron_schedule=row.cron_schedule,
        duration=_span(row.duration_s),
        time_zone=row.time_zone,
        create_time=row.create_time,
    )


def _notice_values(notice: Notice, now: datetime) -> dict[str, Any]:
    return {
        "id": notice.id,
        "owner_id": notice.owner_id,
        "idempotency_key": notice.idempotency_key,
        "channel_ids": json.dumps(list(notice.channel_ids)),
        "kind": notice.kind.value,
        "severity": notice.severity.value,
        "alert_id": notice.alert_id,
        "rule_id": notice.rule_id,
        "monitor_id": notice.monitor_id,
        "monitor_name": notice.monitor_name,
        "summary": notice.summary,
        "value": _finite(notice.value),
        "threshold": _finite(notice.threshold),
        "event_time": notice.event_time,
        "duration_s": _seconds(notice.duration),
        "attempts": notice.attempts,
        "next_attempt_time": notice.next_attempt_time or now,
        "lease_until": None,
        "create_time": now,
    }


def _notice(row: Any) -> Notice:
    return Notice(
        id=row.id,
        owner_id=row.owner_id,
        idempotency_key=row.idempotency_key,
        channel_ids=tuple(json.loads(row.channel_ids)),
        kind=NoticeKind(row.kind),
        severity=Severity(row.severity),
        alert_id=row.alert_id,
        rule_id=row.rule_id,
        monitor_id=row.monitor_id,
        monitor_name=row.monitor_name,
        summary=row.summary,
        value=_number(row.value),
        threshold=_number(row.threshold),
        event_time=row.event_time,
        duration=_span(row.duration_s),
        attempts=row.attempts,
        next_attempt_time=row.next_attempt_time,
    )


def _ensure_owner_row(c: sa.Connection, owner_id: str) -> None:
    """Insert the owner's row unless it exists, in one statement (no error when a concurrent writer made it)."""
    if c.dialect.name == "mysql":
        on_mysql = sqlalchemy.dialects.mysql.insert(OwnerRow).values(owner_id=owner_id, default_rule_time=None)
        c.execute(on_mysql.on_duplicate_key_update(owner_id=on_mysql.inserted.owner_id))
    else:
        on_sqlite = sqlalchemy.dialects.sqlite.insert(OwnerRow).values(owner_id=owner_id, default_rule_time=None)
        c.execute(on_sqlite.on_conflict_do_nothing(index_elements=["owner_id"]))


def _lock_owner(c: sa.Connection, owner_id: str) -> datetime | None:
    """Lock the owner's row until the transaction ends (MySQL; SQLite writers are serialised already) and
    return its default rule marker. Reads after the lock see every rule committed before it."""
    query = sa.select(OwnerRow.default_rule_time).where(OwnerRow.owner_id == owner_id).with_for_update()
    return c.execute(query).scalar_one()


class AlertStore:
    """Rules, alerts, silences and the outbox of every owner; each method that reads a user's resource takes
    its owner, and another owner's resource is NOT_FOUND."""

    def __init__(self, database: Database, max_rules_per_user: int, max_silences_per_user: int = 200) -> None:
        self._db = database
        self._rule_quota = Quota(
            "rules_per_user", max_rules_per_user, f"at most {max_rules_per_user} alert rules per user; delete one first"
        )
        self._silence_quota = Quota(
            "silences_per_user",
            max_silences_per_user,
            f"at most {max_silences_per_user} silences per user; delete one first",
        )
        self._get_rule = database.prepare(_GET_RULE)
        self._last_resolve = database.prepare(_LAST_RESOLVE)

    async def _run_retrying(self, work: Callable[[sa.Connection], T]) -> T:
        """``work`` in one transaction, run again (whole) when MySQL chose it as a deadlock's victim and
        rolled it back, as MySQL asks; other errors pass."""
        for attempt in range(_DEADLOCK_RETRIES):
            try:
                return await self._db.run(work)
            except OperationalError as error:
                code = error.orig.args[0] if error.orig is not None and error.orig.args else None
                if code != _MYSQL_DEADLOCK or attempt == _DEADLOCK_RETRIES - 1:
                    raise
                log.warning("transaction retried after a deadlock", extra={"attempt": attempt + 1})
        raise AssertionError("unreachable")

    # --- rules ----------------------------------------------------------------------------------------------

    async def create_rule(self, owner_id: str, draft: RuleDraft, *, is_default: bool = False) -> AlertRule:
        """A new rule from a validated draft; RESOURCE_EXHAUSTED when the owner has ``max_rules_per_user``."""
        rule = await self._create_rule(owner_id, draft, is_default=is_default, only_first_default=False)
        assert rule is not None
        return rule

    async def _create_rule(
        self, owner_id: str, draft: RuleDraft, *, is_default: bool, only_first_default: bool
    ) -> AlertRule | None:
        now = utc_now()
        rule_id = new_id("rul")
        values = {
            "id": rule_id,
            "owner_id": owner_id,
            "is_default": is_default,
            "create_time": now,
            "update_time": now,
            **_rule_values(draft),
        }

        def create(c: sa.Connection) -> bool:
            marker = _lock_owner(c, owner_id)
            if only_first_default:
                if marker is not None:
                    return False
                c.execute(sa.update(OwnerRow).where(OwnerRow.owner_id == owner_id).values(default_rule_time=now))
                c.execute(sa.insert(RuleRow).values(values))  # the system's rule: no quota refuses it
            else:
                insert_under_quota(c, RuleRow, values, RuleRow.owner_id == owner_id, self._rule_quota)
            return True

        # The owner's row first, in a transaction of its own: the lock below then always finds it, and two
        # first creates of one owner do not both wait on an insert of the same new key.
        await self._run_retrying(lambda c: _ensure_owner_row(c, owner_id))
        if not await self._run_retrying(create):
            return None
        return _rule(_Row(values))

    async def get_rule(self, owner_id: str, rule_id: str) -> AlertRule:
        row = await self._db.fetch_one(self._get_rule, {"rule_id": rule_id, "owner": owner_id})
        if row is None:
            raise NotFound("alert rule", rule_id)
        return _rule(_Row(dict(zip((c.name for c in _RULE), row, strict=True))))

    async def list_rules(self, owner_id: str, after: str, limit: int, monitor_id: str = "") -> list[AlertRule]:
        """The owner's rules by id, those after ``after`` (the last id of the previous page; "" for the first);
        with ``monitor_id``, only the rules that name that monitor."""
        query = sa.select(*_RULE).where(RuleRow.owner_id == owner_id).order_by(RuleRow.id).limit(limit)
        if after:
            query = query.where(RuleRow.id > after)
        if monitor_id:
            query = query.where(RuleRow.monitor_id == monitor_id)
        memo: dict[Any, Any] = {}
        return await self._db.run(lambda c: [_rule(row, memo) for row in c.execute(query)])

    async def replace_rule(self, owner_id: str, rule_id: str, draft: RuleDraft) -> AlertRule:
        """Write every mutable field of the rule from a validated draft; the rule as now stored."""
        values = {**_rule_values(draft), "update_time": utc_now()}
        update = sa.update(RuleRow).where(RuleRow.id == rule_id, RuleRow.owner_id == owner_id).values(values)
        if await self._db.run(lambda c: c.execute(update).rowcount) == 0:
            raise NotFound("alert rule", rule_id)
        return await self.get_rule(owner_id, rule_id)

    async def delete_rule(self, owner_id: str, rule_id: str) -> None:
        """Delete a rule (its alerts stay, as history)."""
        delete = sa.delete(RuleRow).where(RuleRow.id == rule_id, RuleRow.owner_id == owner_id)
        if await self._db.run(lambda c: c.execute(delete).rowcount) == 0:
            raise NotFound("alert rule", rule_id)

    async def all_rules(self) -> list[AlertRule]:
        """Every owner's rules, by id (read a page at a time, so no one statement holds them all)."""
        rules: list[AlertRule] = []
        memo: dict[Any, Any] = {}
        while True:
            page = await self._rules_page(rules[-1].id if rules else "", memo)
            rules.extend(page)
            if len(page) < _PAGE:
                return rules

    async def _rules_page(self, after: str, memo: dict[Any, Any]) -> list[AlertRule]:
        query = sa.select(*_RULE).where(RuleRow.id > after).order_by(RuleRow.id).limit(_PAGE)
        return await self._db.run(lambda c: [_rule(row, memo) for row in c.execute(query)])

    async def ensure_default_rule(self, owner_id: str) -> AlertRule | None:
        """Create the owner's default "a monitor is down" rule if they never had one: the new rule, or None
        when they had one (even if they deleted it since). Safe to call from several replicas at once.

        The quota does not refuse it: it is the rule the system gives every owner, not one they asked for."""
        draft = validate_rule(default_rule_draft(), kind=None)
        return await self._create_rule(owner_id, draft, is_default=True, only_first_default=True)

    async def delete_monitor_rules(self, owner_id: str, monitor_id: str) -> list[str]:
        """Delete the owner's rules that name ``monitor_id`` (the monitor was deleted); their ids."""

        def delete(c: sa.Connection) -> list[str]:
            query = sa.select(RuleRow.id).where(RuleRow.owner_id == owner_id, RuleRow.monitor_id == monitor_id)
            ids = [row.id for row in c.execute(query)]
            if ids:
                c.execute(sa.delete(RuleRow).where(RuleRow.id.in_(ids)))
            return ids

        if not monitor_id:
            return []
        return await self._db.run(delete)

    # --- alerts ---------------------------------------------------------------------------------------------

    async def open_alerts(self) -> list[Alert]:
        """Every owner's alerts that are not resolved (read a page at a time)."""
        alerts: list[Alert] = []
        while True:
            page = await self._open_alerts_page(alerts[-1].id if alerts else "")
            alerts.extend(page)
            if len(page) < _PAGE:
                return alerts

    async def _open_alerts_page(self, after: str) -> list[Alert]:
        query = (
            sa.select(*_ALERT)
            .where(AlertRow.open_key.is_not(None), AlertRow.id > after)
            .order_by(AlertRow.id)
            .limit(_PAGE)
        )
        return await self._db.run(lambda c: [_alert(row) for row in c.execute(query)])

    async def get_alert(self, owner_id: str, alert_id: str) -> Alert:
        query = sa.select(*_ALERT).where(AlertRow.id == alert_id, AlertRow.owner_id == owner_id)
        row = await self._db.run(lambda c: c.execute(query).first())
        if row is None:
            raise NotFound("alert", alert_id)
        return _alert(row)

    async def list_alerts(
        self,
        owner_id: str,
        after: str,
        limit: int,
        states: Sequence[AlertState] = (),
        rule_id: str = "",
        monitor_id: str = "",
    ) -> list[Alert]:
        """The owner's alerts, newest first (ids sort by creation time), those after ``after`` (the last id of
        the previous page; "" for the first), filtered by any of ``states``, by rule and by monitor."""
        query = sa.select(*_ALERT).where(AlertRow.owner_id == owner_id)
        if after:
            query = query.where(AlertRow.id < after)
        if states:
            query = query.where(AlertRow.state.in_([s.value for s in states]))
        if rule_id:
            query = query.where(AlertRow.rule_id == rule_id)
        if monitor_id:
            query = query.where(AlertRow.monitor_id == monitor_id)
        query = query.order_by(AlertRow.id.desc()).limit(limit)
        return await self._db.run(lambda c: [_alert(row) for row in c.execute(query)])

    async def events(self, owner_id: str, alert_id: str) -> list[AlertEvent]:
        """The alert's transitions, oldest first."""
        owned = sa.select(AlertRow.id).where(AlertRow.id == alert_id, AlertRow.owner_id == owner_id)
        query = sa.select(*_EVENT).where(EventRow.alert_id == alert_id).order_by(EventRow.id)

        def read(c: sa.Connection) -> list[AlertEvent] | None:
            if c.execute(owned).first() is None:
                return None
            return [_event(row) for row in c.execute(query)]

        found = await self._db.run(read)
        if found is None:
            raise NotFound("alert", alert_id)
        return found

    async def save_alert(self, alert: Alert, event: AlertEvent | None = None, notices: Sequence[Notice] = ()) -> None:
        """Insert or update ``alert``, append ``event`` and queue ``notices``, in one transaction: all of them
        or none. :class:`AlertConflict` when the alert would be a second open one of its rule and monitor."""
        now = utc_now()
        values = _alert_values(alert)
        event_values = None
        if event is not None:
            event_values = {
                "alert_id": event.alert_id or alert.id,
                "transition": event.transition.value,
                "time": event.time,
                "value": _finite(event.value),
                "explanation": event.explanation,
                "actor": event.actor,
            }
        notice_rows = [_notice_values(notice, now) for notice in notices]

        def save(c: sa.Connection) -> None:
            try:
                # Look first (a plain read takes no lock), then update or insert. An UPDATE of an id not yet
                # stored locks the gap where it would go on MySQL, and new ids all go in the same gap (they
                # grow with time): two alerts saved at once each held it and deadlocked inserting.
                if c.execute(_ALERT_EXISTS, {"b_id": alert.id}).first() is not None:
                    c.execute(_UPDATE_ALERT, {**values, "b_id": alert.id})
                else:
                    c.execute(_INSERT_ALERT, values)
            except IntegrityError as error:
                raise AlertConflict(alert.rule_id, alert.monitor_id) from error
            if event_values is not None:
                c.execute(_INSERT_EVENT, event_values)
            if notice_rows:
                c.execute(_INSERT_NOTICE, notice_rows)

        await self._run_retrying(save)

    async def last_resolve_time(self, rule_id: str, monitor_id: str) -> datetime | None:
        """When the rule's last alert on the monitor resolved (for its cooldown), or None."""
        row = await self._db.fetch_one(self._last_resolve, {"rule_id": rule_id, "monitor_id": monitor_id})
        return None if row is None else row[0]

    # --- silences and maintenance windows ---------------------------------------------------------------

    async def create_silence(self, owner_id: str, draft: SilenceDraft) -> Silence:
        """A new silence from a validated draft (its start filled in)."""
        assert draft.start_time is not None, "validate_silence() first"
        silence = Silence(
            id=new_id("sil"),
            owner_id=owner_id,
            monitor_id=draft.monitor_id,
            rule_id=draft.rule_id,
            selector=dict(draft.selector),
            start_time=draft.start_time,
            end_time=draft.end_time,
            comment=draft.comment,
            cron_schedule=draft.cron_schedule,
            duration=draft.duration,
            time_zone=draft.time_zone,
            create_time=utc_now(),
        )
        values = {
            "id": silence.id,
            "owner_id": owner_id,
            "monitor_id": silence.monitor_id,
            "rule_id": silence.rule_id,
            "selector": json.dumps(dict(silence.selector), sort_keys=True),
            "start_time": silence.start_time,
            "end_time": silence.end_time,
            "comment": silence.comment,
            "cron_schedule": silence.cron_schedule,
            "duration_s": _seconds(silence.duration),
            "time_zone": silence.time_zone,
            "create_time": silence.create_time,
        }
        live = sa.and_(
            SilenceRow.owner_id == owner_id,
            sa.or_(SilenceRow.end_time.is_(None), SilenceRow.end_time > silence.create_time),
        )

        def create(c: sa.Connection) -> None:
            _lock_owner(c, owner_id)
            insert_under_quota(c, SilenceRow, values, live, self._silence_quota)

        await self._run_retrying(lambda c: _ensure_owner_row(c, owner_id))
        await self._run_retrying(create)
        return silence

    async def get_silence(self, owner_id: str, silence_id: str) -> Silence:
        query = sa.select(*_SILENCE).where(SilenceRow.id == silence_id, SilenceRow.owner_id == owner_id)
        row = await self._db.run(lambda c: c.execute(query).first())
        if row is None:
            raise NotFound("silence", silence_id)
        return _silence(row)

    async def list_silences(
        self, owner_id: str, after: str, limit: int, include_expired: bool, now: datetime
    ) -> list[Silence]:
        """The owner's silences by id, after ``after``; without ``include_expired`` only those not ended at
        ``now`` (a recurring window with no end never ends)."""
        query = sa.select(*_SILENCE).where(SilenceRow.owner_id == owner_id)
        if after:
            query = query.where(SilenceRow.id > after)
        if not include_expired:
            query = query.where(sa.or_(SilenceRow.end_time.is_(None), SilenceRow.end_time > now))
        query = query.order_by(SilenceRow.id).limit(limit)
        return await self._db.run(lambda c: [_silence(row) for row in c.execute(query)])

    async def delete_silence(self, owner_id: str, silence_id: str) -> None:
        delete = sa.delete(SilenceRow).where(SilenceRow.id == silence_id, SilenceRow.owner_id == owner_id)
        if await self._db.run(lambda c: c.execute(delete).rowcount) == 0:
            raise NotFound("silence", silence_id)

    async def live_silences(self, now: datetime) -> list[Silence]:
        """Every owner's silences not ended at ``now`` (including those not started yet)."""
        query = (
            sa.select(*_SILENCE)
            .where(sa.or_(SilenceRow.end_time.is_(None), SilenceRow.end_time > now))
            .order_by(SilenceRow.id)
        )
        return await self._db.run(lambda c: [_silence(row) for row in c.execute(query)])

    # --- outbox ---------------------------------------------------------------------------------------------

    async def claim_notices(self, limit: int, lease: timedelta, now: datetime) -> list[Notice]:
        """Up to ``limit`` notices due at ``now``, oldest first, each leased to the caller until ``now + lease``
        (none that another worker holds)."""
        until = now + lease

        def claim(c: sa.Connection) -> list[Notice]:
            # More candidates than asked for: a worker claiming at the same moment reads the same oldest ones,
            # and the loser of each (its conditional UPDATE matches nothing) goes on to the next instead of
            # coming back short. (SELECT ... FOR UPDATE SKIP LOCKED would lock every row a filesort reads.)
            candidates = c.execute(_DUE_NOTICES, {"now": now, "limit": limit * _CLAIM_CANDIDATES})
            taken: list[str] = []
            for row in candidates.all():
                if c.execute(_LEASE_NOTICE, {"notice_id": row.id, "now": now, "until": until}).rowcount:
                    taken.append(row.id)
                    if len(taken) == limit:
                        break
            if not taken:
                return []
            rows = {row.id: row for row in c.execute(sa.select(*_NOTICE).where(NoticeRow.id.in_(taken)))}
            return [_notice(rows[i]) for i in taken if i in rows]

        return await self._run_retrying(claim)

    async def notice_sent(self, notice_id: str) -> None:
        """NotificationService accepted the notice: it leaves the outbox."""
        await self._db.run(lambda c: c.execute(sa.delete(NoticeRow).where(NoticeRow.id == notice_id)))

    async def notice_retry(self, notice_id: str, next_attempt_time: datetime) -> None:
        """The hand-off failed: count the attempt, release the lease, try again at ``next_attempt_time``."""
        update = (
            sa.update(NoticeRow)
            .where(NoticeRow.id == notice_id)
            .values(attempts=NoticeRow.attempts + 1, next_attempt_time=next_attempt_time, lease_until=None)
        )
        await self._db.run(lambda c: c.execute(update))

    async def outbox_size(self) -> int:
        """How many notices wait in the outbox (leased or not)."""
        query = sa.select(sa.func.count()).select_from(NoticeRow)
        return int(await self._db.run(lambda c: c.execute(query).scalar_one()))


class _Row:
    """A dict read as a row (for rows just written, and prepared reads)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)
