"""Monitor storage (SQLite or MySQL): monitors and their current status. Every read is scoped by owner."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from service_runtime.database import Database, HeldTransaction, Quota, UtcDateTime, insert_under_quota, new_id, utc_now
from service_runtime.errors import NotFound
from services.monitor_svc.domain import (
    CheckResult,
    CryptoPriceSpec,
    DnsSpec,
    GrpcHealthSpec,
    HeartbeatSpec,
    JsonPathAssertion,
    KeywordAssertion,
    LocationResult,
    Monitor,
    MonitorDraft,
    MonitorKind,
    MonitorState,
    MonitorStatus,
    Placement,
    Spec,
    TcpSpec,
    WebsiteSpec,
    secret_names,
)
from services.monitor_svc.schema import Base


class MonitorRow(Base):
    __tablename__ = "monitors"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    owner_id: Mapped[str] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    display_name: Mapped[str] = mapped_column(sa.String(200))
    kind: Mapped[str] = mapped_column(sa.String(20))
    spec: Mapped[str] = mapped_column(sa.Text())
    interval_s: Mapped[float] = mapped_column(sa.Float())
    timeout_s: Mapped[float] = mapped_column(sa.Float())
    retries: Mapped[int] = mapped_column(sa.Integer())
    locations: Mapped[str] = mapped_column(sa.Text())
    quorum: Mapped[int] = mapped_column(sa.Integer())
    paused: Mapped[bool] = mapped_column(sa.Boolean())
    labels: Mapped[str] = mapped_column(sa.Text())
    heartbeat_token: Mapped[str] = mapped_column(sa.String(64), unique=True)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    update_time: Mapped[datetime] = mapped_column(UtcDateTime())
    placement: Mapped[str] = mapped_column(sa.String(16))


class MonitorStatusRow(Base):
    __tablename__ = "monitor_status"

    monitor_id: Mapped[str] = mapped_column(sa.ForeignKey("monitors.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[str] = mapped_column(sa.String(16))
    last_check_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    last_result: Mapped[str | None] = mapped_column(sa.Text(), nullable=True)
    runner_id: Mapped[str] = mapped_column(sa.String(100))
    location: Mapped[str] = mapped_column(sa.String(32))
    consecutive_failures: Mapped[int] = mapped_column(sa.Integer())
    state_change_time: Mapped[datetime] = mapped_column(UtcDateTime())
    location_results: Mapped[str | None] = mapped_column(sa.Text(), nullable=True)


_MONITOR = tuple(MonitorRow.__table__.columns)
_STATUS = tuple(MonitorStatusRow.__table__.columns)
_IN_CHUNK = 500  # ids per IN (...) list, well under every backend's limit on bound parameters
# Executed with many parameter sets: each sets the columns it names on the row of its b_monitor_id.
_UPDATE_STATUS = sa.update(MonitorStatusRow).where(MonitorStatusRow.monitor_id == sa.bindparam("b_monitor_id"))


# The storage form of a spec: a JSON-ready dict, kept as JSON in the monitors table's spec column.


def spec_to_dict(spec: Spec) -> dict[str, Any]:
    match spec:
        case WebsiteSpec():
            return {
                "url": spec.url,
                "method": spec.method,
                "headers": dict(spec.headers),
                "body": spec.body,
                "accepted_status_codes": [list(r) for r in spec.accepted_status_codes],
                "follow_redirects": spec.follow_redirects,
                "keyword": None if spec.keyword is None else vars(spec.keyword).copy(),
                "json_path": None if spec.json_path is None else vars(spec.json_path).copy(),
                "cert_expiry_days": spec.cert_expiry_days,
            }
        case HeartbeatSpec():
            return {"grace_period_s": spec.grace_period.total_seconds(), "cron": spec.cron, "time_zone": spec.time_zone}
        case CryptoPriceSpec() | DnsSpec():
            return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(spec).items()}
        case TcpSpec() | GrpcHealthSpec():
            return dict(vars(spec))
    raise AssertionError(spec)


def spec_from_dict(kind: MonitorKind, data: Mapping[str, Any]) -> Spec:
    match kind:
        case MonitorKind.WEBSITE:
            keyword, json_path = data.get("keyword"), data.get("json_path")
            return WebsiteSpec(
                url=data["url"],
                method=data["method"],
                headers=dict(data["headers"]),
                body=data["body"],
                accepted_status_codes=tuple((int(a), int(b)) for a, b in data["accepted_status_codes"]),
                follow_redirects=bool(data["follow_redirects"]),
                keyword=None if keyword is None else KeywordAssertion(**keyword),
                json_path=None if json_path is None else JsonPathAssertion(**json_path),
                cert_expiry_days=int(data["cert_expiry_days"]),
            )
        case MonitorKind.HEARTBEAT:
            return HeartbeatSpec(
                timedelta(seconds=float(data["grace_period_s"])), data.get("cron", ""), data.get("time_zone", "")
            )
        case MonitorKind.CRYPTO_PRICE:
            return CryptoPriceSpec(data["pair"], tuple(data["providers"]))
        case MonitorKind.DNS:
            return DnsSpec(data["name"], data["record_type"], tuple(data["expected_answers"]), data["resolver"])
        case MonitorKind.TCP:
            return TcpSpec(data["host"], int(data["port"]))
        case MonitorKind.GRPC_HEALTH:
            return GrpcHealthSpec(data["target"], data["service"], bool(data["use_tls"]))
    raise AssertionError(kind)


def _monitor(row: Any) -> Monitor:
    kind = MonitorKind(row.kind)
    return Monitor(
        id=row.id,
        owner_id=row.owner_id,
        display_name=row.display_name,
        spec=spec_from_dict(kind, json.loads(row.spec)),
        interval=timedelta(seconds=row.interval_s),
        timeout=timedelta(seconds=row.timeout_s),
        retries=row.retries,
        locations=tuple(json.loads(row.locations)),
        quorum=row.quorum,
        paused=bool(row.paused),
        labels=json.loads(row.labels),
        heartbeat_token=row.heartbeat_token,
        create_time=row.create_time,
        update_time=row.update_time,
        placement=Placement(row.placement),
    )


def _values(monitor: Monitor) -> dict[str, Any]:
    return {
        "id": monitor.id,
        "owner_id": monitor.owner_id,
        "display_name": monitor.display_name,
        "kind": monitor.kind.value,
        "spec": json.dumps(spec_to_dict(monitor.spec)),
        "interval_s": monitor.interval.total_seconds(),
        "timeout_s": monitor.timeout.total_seconds(),
        "retries": monitor.retries,
        "locations": json.dumps(list(monitor.locations)),
        "quorum": monitor.quorum,
        "paused": monitor.paused,
        "labels": json.dumps(dict(monitor.labels)),
        "heartbeat_token": monitor.heartbeat_token,
        "create_time": monitor.create_time,
        "update_time": monitor.update_time,
        "placement": monitor.placement.value,
    }


def result_to_json(result: CheckResult) -> str:
    return json.dumps(
        {
            "time": result.time.isoformat(),
            "is_up": result.is_up,
            "duration_s": result.duration.total_seconds(),
            "error_class": result.error_class,
            "message": result.message,
            "fields": dict(result.fields),
            "location": result.location,
            "runner_id": result.runner_id,
            "tags": dict(result.tags),
        }
    )


def result_from_json(monitor_id: str, text: str) -> CheckResult:
    data = json.loads(text)
    return CheckResult(
        monitor_id=monitor_id,
        time=datetime.fromisoformat(data["time"]),
        is_up=data["is_up"],
        duration=timedelta(seconds=data["duration_s"]),
        error_class=data["error_class"],
        message=data["message"],
        fields=data["fields"],
        location=data["location"],
        runner_id=data["runner_id"],
        tags=data.get("tags", {}),
    )


def _location_results_to_json(results: Mapping[str, LocationResult]) -> str | None:
    if not results:
        return None
    return json.dumps({loc: {"result": result_to_json(e.result), "failures": e.failures} for loc, e in results.items()})


def _location_results_from_json(monitor_id: str, text: str | None) -> dict[str, LocationResult]:
    if not text:
        return {}
    return {
        location: LocationResult(result_from_json(monitor_id, entry["result"]), entry["failures"])
        for location, entry in json.loads(text).items()
    }


class MonitorStore:
    """Monitors of every owner; each method that reads one takes its owner."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def create(self, owner_id: str, draft: MonitorDraft, max_monitors: int) -> Monitor:
        """A new monitor from a validated draft; RESOURCE_EXHAUSTED when the owner has ``max_monitors``."""
        assert draft.spec is not None, "validate() first"
        assert draft.interval is not None
        assert draft.timeout is not None
        now = utc_now()
        monitor = Monitor(
            id=new_id("mon"),
            owner_id=owner_id,
            display_name=draft.display_name,
            spec=draft.spec,
            interval=draft.interval,
            timeout=draft.timeout,
            retries=draft.retries,
            locations=draft.locations,
            quorum=draft.quorum,
            paused=False,
            labels=dict(draft.labels),
            heartbeat_token=secrets.token_urlsafe(24),
            create_time=now,
            update_time=now,
            placement=draft.placement,
        )
        values = _values(monitor)
        quota = Quota(
            "monitors_per_user",
            max_monitors,
            f"you have {max_monitors} monitors, the most this deployment allows; delete one first",
        )
        await self._db.run(lambda c: insert_under_quota(c, MonitorRow, values, MonitorRow.owner_id == owner_id, quota))
        return monitor

    async def get(self, owner_id: str, monitor_id: str) -> Monitor:
        query = sa.select(*_MONITOR).where(MonitorRow.id == monitor_id, MonitorRow.owner_id == owner_id)
        row = await self._db.run(lambda c: c.execute(query).first())
        if row is None:
            raise NotFound("monitor", monitor_id)
        return _monitor(row)

    async def by_heartbeat_token(self, token: str) -> Monitor | None:
        query = sa.select(*_MONITOR).where(MonitorRow.heartbeat_token == token)
        row = await self._db.run(lambda c: c.execute(query).first())
        return None if row is None else _monitor(row)

    async def list_page(self, owner_id: str, after_id: str | None, limit: int) -> list[Monitor]:
        query = sa.select(*_MONITOR).where(MonitorRow.owner_id == owner_id).order_by(MonitorRow.id).limit(limit)
        if after_id is not None:
            query = query.where(MonitorRow.id > after_id)
        return await self._db.run(lambda c: [_monitor(row) for row in c.execute(query)])

    async def of_owner(self, owner_id: str) -> list[Monitor]:
        query = sa.select(*_MONITOR).where(MonitorRow.owner_id == owner_id).order_by(MonitorRow.id)
        return await self._db.run(lambda c: [_monitor(row) for row in c.execute(query)])

    async def active_heartbeats(self) -> list[tuple[Monitor, MonitorStatus]]:
        """Every heartbeat monitor that is not paused, with its status (for the missed-ping sweep)."""
        query = (
            sa.select(*_MONITOR, *[c.label(f"status_{c.name}") for c in _STATUS])
            .select_from(MonitorRow)
            .outerjoin(MonitorStatusRow, MonitorStatusRow.monitor_id == MonitorRow.id)
            .where(MonitorRow.kind == MonitorKind.HEARTBEAT.value, MonitorRow.paused.is_(False))
        )

        def rows(c: sa.Connection) -> list[tuple[Monitor, MonitorStatus]]:
            found = []
            for row in c.execute(query):
                monitor = _monitor(row)
                status = MonitorStatus(monitor.id, MonitorState.PENDING, state_change_time=monitor.create_time)
                if row.status_monitor_id is not None:
                    status = replace(
                        status,
                        state=MonitorState(row.status_state),
                        last_check_time=row.status_last_check_time,
                        consecutive_failures=row.status_consecutive_failures,
                        state_change_time=row.status_state_change_time,
                    )
                found.append((monitor, status))
            return found

        return await self._db.run(rows)

    async def referring_to_secret(self, owner_id: str, name: str) -> list[str]:
        """Ids of the owner's monitors whose spec refers to secret ``name``."""
        return [m.id for m in await self.of_owner(owner_id) if name in secret_names(m.spec)]

    async def find(self, monitor_ids: Collection[str]) -> list[Monitor]:
        """Those of ``monitor_ids`` that exist, of any owner (for applying another replica's changes)."""
        ids = sorted(set(monitor_ids))

        def select(c: sa.Connection) -> list[Monitor]:
            found: list[Monitor] = []
            for i in range(0, len(ids), _IN_CHUNK):
                query = sa.select(*_MONITOR).where(MonitorRow.id.in_(ids[i : i + _IN_CHUNK]))
                found.extend(_monitor(row) for row in c.execute(query))
            return found

        return await self._db.run(select) if ids else []

    async def all_monitors(self) -> list[Monitor]:
        """Every monitor of every owner (for assigning work to runners)."""
        query = sa.select(*_MONITOR).order_by(MonitorRow.id)
        return await self._db.run(lambda c: [_monitor(row) for row in c.execute(query)])

    async def save(self, monitor: Monitor, columns: Collection[str]) -> Monitor:
        """Write ``columns`` of a changed monitor (same id and owner) and return it as now stored: the other
        columns keep what other writers set meanwhile (an update that read the monitor before a pause does not
        undo the pause). NOT_FOUND if it is gone."""
        values = {key: value for key, value in _values(monitor).items() if key in columns}
        values["update_time"] = utc_now()
        this = (MonitorRow.id == monitor.id, MonitorRow.owner_id == monitor.owner_id)

        def write(c: sa.Connection) -> Any:
            if c.execute(sa.update(MonitorRow).where(*this).values(values)).rowcount == 0:
                return None
            return c.execute(sa.select(*_MONITOR).where(*this)).first()

        row = await self._db.run(write)
        if row is None:
            raise NotFound("monitor", monitor.id)
        return _monitor(row)

    async def delete(self, owner_id: str, monitor_id: str) -> None:
        # The status row goes by ON DELETE CASCADE: the monitor row is locked before it, the order put_statuses
        # takes them in, so a delete and a status write wait for each other rather than deadlock.
        query = sa.delete(MonitorRow).where(MonitorRow.id == monitor_id, MonitorRow.owner_id == owner_id)
        if await self._db.run(lambda c: c.execute(query).rowcount) == 0:
            raise NotFound("monitor", monitor_id)

    async def status(self, monitor: Monitor) -> MonitorStatus:
        return (await self.statuses([monitor]))[monitor.id]

    async def statuses(self, monitors: Sequence[Monitor]) -> dict[str, MonitorStatus]:
        """The status of each of ``monitors`` (PENDING for one never checked), read in one transaction."""
        if not monitors:
            return {}
        return await self._db.run(lambda c: _read_statuses(c, monitors))

    async def put_status(self, status: MonitorStatus) -> None:
        await self.put_statuses([status])

    async def put_statuses(self, statuses: Sequence[MonitorStatus]) -> None:
        """Store these statuses (one per monitor), updated or inserted, in one transaction."""
        if statuses:
            await self._db.run(lambda c: _write_statuses(c, statuses))

    @asynccontextmanager
    async def updating_statuses(self, monitors: Sequence[Monitor]) -> AsyncIterator[StatusUpdate]:
        """The statuses of ``monitors``, kept from every other writer (another replica's) until the block ends,
        and stored by its :meth:`StatusUpdate.put`: one transaction that holds the monitors' rows (FOR UPDATE,
        in id order, so two such blocks over overlapping monitors wait for each other rather than deadlock) from
        the read to the write, committed as the block ends. On SQLite, which one process serves, a read now and
        a write at ``put``, which that process orders by its own locks."""
        ids = sorted({m.id for m in monitors})

        def lock_and_read(c: sa.Connection) -> dict[str, MonitorStatus]:
            for i in range(0, len(ids), _IN_CHUNK):
                chunk = ids[i : i + _IN_CHUNK]
                query = sa.select(MonitorRow.id).where(MonitorRow.id.in_(chunk)).order_by(MonitorRow.id)
                c.execute(query.with_for_update()).all()
            return _read_statuses(c, monitors)

        async with self._db.held() as run:
            current = await run(lock_and_read) if ids else {}
            yield StatusUpdate(current, run)


@dataclass
class StatusUpdate:
    """Statuses read under :meth:`MonitorStore.updating_statuses`, and the way to store their successors."""

    current: dict[str, MonitorStatus]
    _run: HeldTransaction

    async def put(self, statuses: Sequence[MonitorStatus]) -> None:
        """Store these statuses (one per monitor) in the block's transaction."""
        if statuses:
            await self._run(lambda c: _write_statuses(c, statuses))


def _read_statuses(c: sa.Connection, monitors: Sequence[Monitor]) -> dict[str, MonitorStatus]:
    ids = list({m.id: None for m in monitors})
    found = {m.id: MonitorStatus(m.id, MonitorState.PENDING, state_change_time=m.create_time) for m in monitors}
    for i in range(0, len(ids), _IN_CHUNK):
        query = sa.select(*_STATUS).where(MonitorStatusRow.monitor_id.in_(ids[i : i + _IN_CHUNK]))
        for row in c.execute(query):
            found[row.monitor_id] = MonitorStatus(
                monitor_id=row.monitor_id,
                state=MonitorState(row.state),
                last_check_time=row.last_check_time,
                last_result=None if row.last_result is None else result_from_json(row.monitor_id, row.last_result),
                runner_id=row.runner_id,
                location=row.location,
                consecutive_failures=row.consecutive_failures,
                state_change_time=row.state_change_time,
                location_results=_location_results_from_json(row.monitor_id, row.location_results),
            )
    return found


def _write_statuses(c: sa.Connection, statuses: Sequence[MonitorStatus]) -> None:
    values = {
        status.monitor_id: {
            "state": status.state.value,
            "last_check_time": status.last_check_time,
            "last_result": None if status.last_result is None else result_to_json(status.last_result),
            "runner_id": status.runner_id,
            "location": status.location,
            "consecutive_failures": status.consecutive_failures,
            "state_change_time": status.state_change_time or utc_now(),
            "location_results": _location_results_to_json(status.location_results),
        }
        for status in statuses
    }
    ids = list(values)
    existing: set[str] = set()
    for i in range(0, len(ids), _IN_CHUNK):
        query = sa.select(MonitorStatusRow.monitor_id).where(MonitorStatusRow.monitor_id.in_(ids[i : i + _IN_CHUNK]))
        existing.update(c.execute(query).scalars())
    # A monitor deleted since its result came in has no status to keep: insert only for monitors that
    # still exist, read under a shared lock (MySQL) so that a delete waits for this transaction to end.
    alive: set[str] = set()
    new_ids = [m for m in ids if m not in existing]
    for i in range(0, len(new_ids), _IN_CHUNK):
        query = sa.select(MonitorRow.id).where(MonitorRow.id.in_(new_ids[i : i + _IN_CHUNK])).with_for_update(read=True)
        alive.update(c.execute(query).scalars())
    updates = [{"b_monitor_id": m, **v} for m, v in values.items() if m in existing]
    inserts = [{"monitor_id": m, **v} for m, v in values.items() if m in alive]
    if updates:
        c.execute(_UPDATE_STATUS, updates)
    if inserts:
        c.execute(sa.insert(MonitorStatusRow), inserts)
