"""The delivery queue (SQLite or MySQL): deliveries, their attempts, and idempotency keys. Every read a user
can reach is scoped by owner.

The deliveries table is the durable queue: SendNotification commits its rows before it answers, and a worker
takes a delivery by setting a lease (a conditional UPDATE, atomic on both backends) just before it sends. A
process killed before sending leaves the row unleased, so the next worker sends it at once; killed while
sending, the lease expires and it is sent again (at least once; webhook receivers get a delivery id to
de-duplicate). A delivery its own process will send at once is queued already leased (:attr:`Target.lease_until`):
the insert is its lease, and a kill before the send leaves it to the next worker once the lease ends.

Calls that come together share transactions: :meth:`DeliveryQueue.enqueue_many` commits many calls' deliveries
at once and :meth:`DeliveryQueue.record_many` many attempts, each in a few statements whatever their number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from service_runtime.database import Database, new_id, utc_now
from service_runtime.errors import NotFound
from service_runtime.secretbox import SecretBox
from services.notify_svc.domain import (
    Attempt,
    Delivery,
    DeliveryState,
    Notification,
    NotificationKind,
    Outcome,
    Severity,
    notification_fields,
)
from services.notify_svc.schema import AttemptRow, DeliveryRow, IdempotencyRow

_DELIVERY = tuple(c for c in DeliveryRow.__table__.columns if c.name != "lease_until")
_ATTEMPT = tuple(AttemptRow.__table__.columns)
# The worker's hot statements, built once with bind parameters (SQLAlchemy then reuses their compiled form).
# Deliveries whose attempts came to the same (a storm delivered) are recorded in one statement, not one each.
_RECORD = (
    sa.update(DeliveryRow)
    .where(DeliveryRow.id.in_(sa.bindparam("b_ids", expanding=True)))
    .values(
        state=sa.bindparam("b_state"),
        next_attempt_time=sa.bindparam("b_next"),
        lease_until=None,
        update_time=sa.bindparam("b_now"),
        attempt_count=DeliveryRow.attempt_count + sa.bindparam("b_add"),
    )
)
_DUE_IDS = (
    sa.select(DeliveryRow.id)
    .where(
        DeliveryRow.state.in_(("pending", "retrying")),
        DeliveryRow.next_attempt_time <= sa.bindparam("now"),
        sa.or_(DeliveryRow.lease_until.is_(None), DeliveryRow.lease_until < sa.bindparam("now")),
    )
    .order_by(DeliveryRow.next_attempt_time, DeliveryRow.id)
    .limit(sa.bindparam("limit"))
)
_LEASE = (
    sa.update(DeliveryRow)
    .where(
        DeliveryRow.id.in_(sa.bindparam("delivery_ids", expanding=True)),
        DeliveryRow.state.in_(("pending", "retrying")),
        # Due still: another worker may have sent it since this one read it, and set a retry later.
        DeliveryRow.next_attempt_time <= sa.bindparam("now"),
        sa.or_(DeliveryRow.lease_until.is_(None), DeliveryRow.lease_until < sa.bindparam("now")),
    )
    .values(lease_until=sa.bindparam("until"))
)
# The accept path's statements, built once: a statement made anew per call costs its cache key each time.
_SEEN_KEYS = sa.select(IdempotencyRow.key, IdempotencyRow.delivery_ids).where(
    IdempotencyRow.key.in_(sa.bindparam("keys", expanding=True))
)
_INSERT_KEYS = sa.insert(IdempotencyRow)
_INSERT_DELIVERIES = sa.insert(DeliveryRow)
_INSERT_ATTEMPTS = sa.insert(AttemptRow)
_LEASED = sa.select(DeliveryRow.id).where(
    DeliveryRow.id.in_(sa.bindparam("delivery_ids", expanding=True)), DeliveryRow.lease_until == sa.bindparam("until")
)


@dataclass(frozen=True)
class Target:
    """Where one delivery goes: a channel (and whether it may receive), or a bare email address."""

    channel_id: str = ""
    email_address: str = ""
    suppressed: bool = False
    lease_until: datetime | None = None  # queued already taken, by a worker that sends it at once


@dataclass(frozen=True)
class Enqueue:
    """One call's deliveries to queue under idempotency ``key``, one per target."""

    key: str
    owner_id: str
    targets: Sequence[Target]
    notification: Notification


def _notification_to_json(n: Notification) -> str:
    return json.dumps({**notification_fields(n), "login_code": n.login_code})


def _notification_from_json(text: str) -> Notification:
    d = json.loads(text)
    return Notification(
        kind=NotificationKind(d["kind"]),
        severity=Severity(d["severity"]),
        alert_id=d["alert_id"],
        rule_id=d["rule_id"],
        monitor_id=d["monitor_id"],
        monitor_name=d["monitor_name"],
        summary=d["summary"],
        value=d["value"],
        threshold=d["threshold"],
        event_time=datetime.fromisoformat(d["event_time"]) if d["event_time"] else None,
        duration=timedelta(seconds=d["duration_s"]) if d["duration_s"] is not None else None,
        login_code=d["login_code"],
    )


def _attempt(row: Any) -> Attempt:
    return Attempt(
        attempt_time=row.attempt_time,
        outcome=Outcome(row.outcome),
        response_code=row.response_code,
        error=row.error,
        duration=timedelta(milliseconds=row.duration_ms),
    )


@dataclass(frozen=True, slots=True)
class Record:
    """What one attempt at a delivery came to: the attempt (None when none was made) and the new state."""

    delivery_id: str
    attempt: Attempt | None
    state: DeliveryState
    next_attempt_time: datetime | None


class DeliveryQueue:
    """Deliveries and their attempts. Notification payloads are sealed with ``box``, bound to their owner and
    row, so a sealed payload copied elsewhere does not open."""

    def __init__(self, database: Database, box: SecretBox) -> None:
        self._db = database
        self._box = box

    def _delivery(self, row: Any, attempts: Sequence[Attempt] = ()) -> Delivery:
        payload = self._box.open(row.sealed_notification, row.owner_id, row.id, "notification")
        return Delivery(
            id=row.id,
            owner_id=row.owner_id,
            channel_id=row.channel_id,
            email_address=row.email_address,
            idempotency_key=row.idempotency_key,
            notification=_notification_from_json(payload),
            state=DeliveryState(row.state),
            create_time=row.create_time,
            next_attempt_time=row.next_attempt_time,
            attempts=tuple(attempts),
            attempt_count=row.attempt_count,
        )

    def _read_deliveries(self, c: sa.Connection, ids: Sequence[str]) -> list[Delivery]:
        rows = {row.id: row for row in c.execute(sa.select(*_DELIVERY).where(DeliveryRow.id.in_(list(ids))))}
        attempts: dict[str, list[Attempt]] = {}
        query = sa.select(*_ATTEMPT).where(AttemptRow.delivery_id.in_(list(ids))).order_by(AttemptRow.id)
        for row in c.execute(query):
            attempts.setdefault(row.delivery_id, []).append(_attempt(row))
        return [self._delivery(rows[i], attempts.get(i, ())) for i in ids if i in rows]

    def _by_key(self, c: sa.Connection, key: str) -> list[Delivery] | None:
        found = c.execute(sa.select(IdempotencyRow.delivery_ids).where(IdempotencyRow.key == key)).scalar_one_or_none()
        return None if found is None else self._read_deliveries(c, json.loads(found))

    async def by_key(self, key: str) -> list[Delivery] | None:
        """The deliveries queued under idempotency ``key``, None for a key never seen."""
        return await self._db.run(lambda c: self._by_key(c, key))

    async def enqueue(
        self,
        key: str,
        owner_id: str,
        targets: Sequence[Target],
        notification: Notification,
        lease_until: datetime | None = None,
    ) -> tuple[list[Delivery], bool]:
        """Queue one delivery per target under idempotency ``key``, in one transaction. A key seen before
        queues nothing and returns the first call's deliveries with True. ``lease_until`` queues them
        already taken (for a caller that sends at once)."""
        if lease_until is not None:
            targets = [replace(t, lease_until=lease_until) for t in targets]
        return (await self.enqueue_many([Enqueue(key, owner_id, targets, notification)]))[0]

    def _rows(self, call: Enqueue, now: datetime) -> list[dict[str, Any]]:
        payload = _notification_to_json(call.notification)
        rows = []
        for target in call.targets:
            delivery_id = new_id("dlv")
            rows.append(
                {
                    "id": delivery_id,
                    "owner_id": call.owner_id,
                    "channel_id": target.channel_id,
                    "email_address": target.email_address,
                    "idempotency_key": call.key,
                    "kind": call.notification.kind.value,
                    "sealed_notification": self._box.seal(payload, call.owner_id, delivery_id, "notification"),
                    "state": (DeliveryState.SUPPRESSED if target.suppressed else DeliveryState.PENDING).value,
                    "attempt_count": 0,
                    "next_attempt_time": None if target.suppressed else now,
                    "lease_until": None if target.suppressed else target.lease_until,
                    "create_time": now,
                    "update_time": now,
                }
            )
        return rows

    async def enqueue_many(self, calls: Sequence[Enqueue]) -> list[tuple[list[Delivery], bool]]:
        """:meth:`enqueue` for several calls in one transaction (one commit for a burst of notifications): for
        each, its deliveries and whether its key had been seen (then the first call's deliveries, queuing
        nothing). Of two calls with one key in the batch, the first queues."""
        now = utc_now()
        rows = [self._rows(call, now) for call in calls]

        def insert(c: sa.Connection) -> tuple[dict[str, list[str]], list[Delivery]]:
            keys = sorted({call.key for call in calls})
            seen = {row.key: json.loads(row.delivery_ids) for row in c.execute(_SEEN_KEYS, {"keys": keys})}
            fresh: set[str] = set()
            keyed, queued = [], []
            for call, call_rows in zip(calls, rows, strict=True):
                if call.key in seen or call.key in fresh:
                    continue
                fresh.add(call.key)
                ids = json.dumps([r["id"] for r in call_rows])
                keyed.append({"key": call.key, "owner_id": call.owner_id, "delivery_ids": ids, "create_time": now})
                queued += call_rows
            if keyed:
                c.execute(_INSERT_KEYS, keyed)
            if queued:
                c.execute(_INSERT_DELIVERIES, queued)
            earlier = [i for ids in seen.values() for i in ids]
            return seen, self._read_deliveries(c, earlier) if earlier else []

        try:
            seen, earlier = await self._db.run(insert)
        except IntegrityError:  # a key committed concurrently (another process): each call on its own
            if len(calls) == 1:
                first = await self.by_key(calls[0].key)
                assert first is not None
                return [(first, True)]
            return [answer for call in calls for answer in await self.enqueue_many([call])]
        by_id = {d.id: d for d in earlier}
        answers: list[tuple[list[Delivery], bool]] = []
        first_of: dict[str, list[Delivery]] = {}
        for call, call_rows in zip(calls, rows, strict=True):
            if call.key in seen:
                answers.append(([by_id[i] for i in seen[call.key] if i in by_id], True))
            elif call.key in first_of:
                answers.append((first_of[call.key], True))
            else:
                first_of[call.key] = [_queued(row, call.notification) for row in call_rows]
                answers.append((first_of[call.key], False))
        return answers

    async def due(self, now: datetime, limit: int, skip: Sequence[str] = ()) -> list[Delivery]:
        """Deliveries waiting to be sent at ``now`` and not leased, soonest first, except ``skip`` (those a
        worker holds already). Ids first, then the chosen rows, so skipped ones cost an id each."""
        skipped = set(skip)

        def read(c: sa.Connection) -> list[Any]:
            ids = [
                row.id
                for row in c.execute(_DUE_IDS, {"now": now, "limit": limit + len(skipped)})
                if row.id not in skipped
            ][:limit]
            if not ids:
                return []
            rows = {row.id: row for row in c.execute(sa.select(*_DELIVERY).where(DeliveryRow.id.in_(ids)))}
            return [rows[i] for i in ids if i in rows]

        return [self._delivery(row) for row in await self._db.run(read)]

    async def lease(self, delivery_id: str, until: datetime) -> bool:
        """Take a delivery for sending until ``until``; False when another worker has it or it is done."""
        return delivery_id in await self.lease_many([delivery_id], until)

    async def lease_many(self, delivery_ids: Sequence[str], until: datetime) -> set[str]:
        """:meth:`lease` for several deliveries in one statement: the ids taken."""
        now = utc_now()
        ids = sorted(set(delivery_ids))

        def take(c: sa.Connection) -> set[str]:
            params = {"delivery_ids": ids, "now": now, "until": until}
            if c.execute(_LEASE, params).rowcount == len(ids):
                return set(ids)
            # Some were taken already (another worker, or sent meanwhile). Those this statement took carry its
            # lease's moment, to the microsecond; the others, a moment of another worker's.
            return {row.id for row in c.execute(_LEASED, params)}

        return await self._db.run(take)

    async def record(
        self, delivery_id: str, attempt: Attempt | None, state: DeliveryState, next_attempt_time: datetime | None
    ) -> None:
        """Record an attempt (if any) and the delivery's new state, releasing its lease."""
        await self.record_many([Record(delivery_id, attempt, state, next_attempt_time)])

    async def record_many(self, records: Sequence[Record]) -> None:
        """:meth:`record` for several deliveries in one transaction (one commit for many sends): their attempts
        in one insert, and one update for each group of deliveries that came to the same state."""
        now = utc_now()
        attempts = [
            {
                "delivery_id": r.delivery_id,
                "attempt_time": r.attempt.attempt_time,
                "outcome": r.attempt.outcome.value,
                "response_code": r.attempt.response_code,
                "error": r.attempt.error[:500],
                "duration_ms": r.attempt.duration.total_seconds() * 1000,
            }
            for r in records
            if r.attempt is not None
        ]
        alike: dict[tuple[str, datetime | None, int], list[str]] = {}
        for r in records:
            alike.setdefault((r.state.value, r.next_attempt_time, 0 if r.attempt is None else 1), []).append(
                r.delivery_id
            )

        def write(c: sa.Connection) -> None:
            if attempts:
                c.execute(_INSERT_ATTEMPTS, attempts)
            for (state, next_time, add), ids in alike.items():
                c.execute(_RECORD, {"b_ids": ids, "b_state": state, "b_next": next_time, "b_add": add, "b_now": now})

        await self._db.run(write)

    async def attempt_count(self, delivery_id: str) -> int:
        query = sa.select(DeliveryRow.attempt_count).where(DeliveryRow.id == delivery_id)
        return int(await self._db.run(lambda c: c.execute(query).scalar_one_or_none() or 0))

    async def get_delivery(self, owner_id: str, delivery_id: str) -> Delivery:
        def read(c: sa.Connection) -> list[Delivery]:
            return [d for d in self._read_deliveries(c, [delivery_id]) if d.owner_id == owner_id]

        found = await self._db.run(read)
        if not found:
            raise NotFound("delivery", delivery_id)
        return found[0]

    async def list_deliveries(
        self, owner_id: str, before_id: str | None, limit: int, channel_id: str = "", state: DeliveryState | None = None
    ) -> list[Delivery]:
        """The owner's deliveries with their attempts, newest first, after the page key ``before_id``."""
        query = sa.select(DeliveryRow.id).where(DeliveryRow.owner_id == owner_id)
        if before_id is not None:
            query = query.where(DeliveryRow.id < before_id)
        if channel_id:
            query = query.where(DeliveryRow.channel_id == channel_id)
        if state is not None:
            query = query.where(DeliveryRow.state == state.value)
        query = query.order_by(DeliveryRow.id.desc()).limit(limit)

        def read(c: sa.Connection) -> list[Delivery]:
            return self._read_deliveries(c, [row.id for row in c.execute(query)])

        return await self._db.run(read)


def _queued(row: dict[str, Any], notification: Notification) -> Delivery:
    """The delivery of a row just inserted (its notification as given, not unsealed again)."""
    return Delivery(
        id=row["id"],
        owner_id=row["owner_id"],
        channel_id=row["channel_id"],
        email_address=row["email_address"],
        idempotency_key=row["idempotency_key"],
        notification=notification,
        state=DeliveryState(row["state"]),
        create_time=row["create_time"],
        next_attempt_time=row["next_attempt_time"],
    )
