"""The alert store on both relational stores: rules (quota, default rule), alerts (one open per rule and
monitor, atomic with their transitions and outbox notices), silences, and the outbox leases that two replicas
share."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.exc import IntegrityError

import services.alert_svc
from harness.external import MariaDBServer
from service_runtime.database import (
    MYSQL_COLLATION,
    Database,
    create_sync_engine,
    migrate,
    new_id,
    open_database,
    utc_now,
)
from service_runtime.errors import NotFound, ResourceExhausted
from service_runtime.timeseries import Aggregation
from services.alert_svc import store as store_module
from services.alert_svc.domain import (
    DEFAULT_RULE_NAME,
    Alert,
    AlertEvent,
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
    SilenceDraft,
    ThresholdCondition,
    Transition,
    validate_rule,
    validate_silence,
)
from services.alert_svc.store import AlertConflict, AlertStore, condition_from_dict, condition_to_dict

MIGRATIONS = Path(services.alert_svc.__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_alert"
ALICE, BOB = "usr_alice", "usr_bob"

CONDITIONS: list[Condition] = [
    ThresholdCondition("response_time_ms", Aggregation.P95, timedelta(minutes=5), Operator.GT, 800.5),
    ThresholdCondition("price", Aggregation.LAST, timedelta(0), Operator.LE, 97123.4567891),
    ChangeCondition("price", timedelta(hours=1), 5.0, Direction.EITHER),
    MonitorDownCondition(),
    NoDataCondition(timedelta(minutes=10)),
    AnomalyCondition("response_time_ms", timedelta(minutes=1), timedelta(hours=24), 3.0, 30, Direction.UP),
]


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = await open_database(database_url, MIGRATIONS, VERSION_TABLE)
    yield database
    await database.close()


@pytest.fixture
async def store(database: Database) -> AlertStore:
    return AlertStore(database, max_rules_per_user=100)


def draft(monitor_id: str = "mon_1", condition: Condition | None = None, **changes: object) -> RuleDraft:
    written = RuleDraft(monitor_id=monitor_id, condition=condition or MonitorDownCondition())
    return replace(validate_rule(written, kind=None), **changes)  # type: ignore[arg-type]


def alert(
    owner_id: str, rule_id: str, monitor_id: str, state: AlertState = AlertState.PENDING, start: datetime | None = None
) -> Alert:
    now = start or utc_now()
    return Alert(
        id=new_id("alr"),
        owner_id=owner_id,
        rule_id=rule_id,
        monitor_id=monitor_id,
        state=state,
        severity=Severity.CRITICAL,
        value=812.25,
        threshold=800.0,
        summary="p95 response_time_ms over 5m > 800",
        explanation="812.25 > 800 since 12:00",
        rule_name="slow",
        monitor_name="example.com",
        start_time=now,
        update_time=now,
    )


def event(a: Alert, transition: Transition, value: float = 812.25) -> AlertEvent:
    return AlertEvent(a.id, transition, utc_now(), value, f"{transition.value} because", "evaluator")


def notice(a: Alert, sequence: int, due: datetime | None = None, notice_id: str = "") -> Notice:
    return Notice(
        id=notice_id or new_id("ntc"),
        owner_id=a.owner_id,
        idempotency_key=f"{a.id}:fired:{sequence}",
        channel_ids=("chn_1", "chn_2"),
        kind=NoticeKind.FIRING,
        severity=a.severity,
        alert_id=a.id,
        rule_id=a.rule_id,
        monitor_id=a.monitor_id,
        monitor_name=a.monitor_name,
        summary=a.summary,
        value=a.value,
        threshold=a.threshold,
        event_time=a.start_time,
        duration=timedelta(minutes=5),
        next_attempt_time=due,
    )


# --- schema ---------------------------------------------------------------------------------------------------


def test_migrations_create_the_tables_and_are_idempotent(database_url: str) -> None:
    migrate(database_url, MIGRATIONS, VERSION_TABLE)
    migrate(database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_sync_engine(database_url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
        with engine.connect() as connection:
            version = connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar_one()
    finally:
        engine.dispose()
    assert set(store_module.Base.metadata.tables) | {VERSION_TABLE} <= tables
    assert version == ScriptDirectory(str(MIGRATIONS)).get_current_head()


def test_text_compares_exactly_and_long_text_is_mediumtext_on_mariadb(mariadb: MariaDBServer) -> None:
    url = mariadb.create_database("alert_exact_text")  # utf8mb4_unicode_ci, as users create theirs
    migrate(url, MIGRATIONS, VERSION_TABLE)
    engine = create_sync_engine(url)
    try:
        with engine.connect() as connection:
            columns = connection.execute(
                sa.text(
                    "SELECT table_name, column_name, data_type, collation_name FROM information_schema.columns"
                    " WHERE table_schema = DATABASE() AND table_name LIKE 'alert%'"
                    " AND table_name NOT LIKE 'alembic_version%'"
                )
            ).all()
    finally:
        engine.dispose()
    assert {c.table_name for c in columns} == set(store_module.Base.metadata.tables)
    assert [f"{c.table_name}.{c.column_name}" for c in columns if c.collation_name not in (None, MYSQL_COLLATION)] == []
    assert [f"{c.table_name}.{c.column_name}" for c in columns if c.data_type in ("text", "blob")] == []
    assert {c.data_type for c in columns if c.column_name == "summary"} == {"mediumtext"}


@pytest.mark.parametrize("condition", CONDITIONS, ids=lambda c: type(c).__name__)
def test_a_condition_survives_its_json_form(condition: Condition) -> None:
    assert condition_from_dict(condition_to_dict(condition)) == condition


# --- rules ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("condition", CONDITIONS, ids=lambda c: type(c).__name__)
async def test_a_rule_reads_back_as_created(store: AlertStore, condition: Condition) -> None:
    written = draft(
        condition=condition,
        display_name="p95 latency ✓",
        severity=Severity.CRITICAL,
        for_duration=timedelta(seconds=90),
        keep_firing_for=timedelta(minutes=5),
        repeat_interval=timedelta(hours=4),
        cooldown=timedelta(minutes=15, microseconds=500),
        escalate_after=timedelta(minutes=30),
        channel_ids=("chn_b", "chn_a"),
        escalation_channel_ids=("chn_pager",),
        enabled=False,
        description="long " * 500,
        labels={"team": "web"},
    )
    created = await store.create_rule(ALICE, written)
    assert created.id.startswith("rul_")
    stored = await store.get_rule(ALICE, created.id)
    assert stored == created
    assert stored.condition == condition
    assert stored.channel_ids == ("chn_b", "chn_a")
    assert stored.cooldown == timedelta(minutes=15, microseconds=500)
    assert not stored.enabled
    assert not stored.is_default


async def test_a_selector_rule_keeps_its_selector(store: AlertStore) -> None:
    created = await store.create_rule(ALICE, draft(monitor_id="", selector={"env": "prod", "team": "web"}))
    stored = await store.get_rule(ALICE, created.id)
    assert stored.monitor_id == ""
    assert stored.selector == {"env": "prod", "team": "web"}
    assert stored.repeat_interval is None
    assert stored.escalate_after is None


async def test_replace_rule_writes_every_field_and_returns_it_as_stored(store: AlertStore) -> None:
    created = await store.create_rule(ALICE, draft(channel_ids=("chn_1",), repeat_interval=timedelta(hours=1)))
    changed = draft(
        monitor_id="mon_2",
        condition=NoDataCondition(timedelta(minutes=3)),
        display_name="stalled",
        severity=Severity.INFO,
        channel_ids=(),
        repeat_interval=None,
        enabled=False,
    )
    replaced = await store.replace_rule(ALICE, created.id, changed)
    assert replaced == await store.get_rule(ALICE, created.id)
    assert (replaced.id, replaced.create_time, replaced.owner_id) == (created.id, created.create_time, ALICE)
    assert replaced.update_time >= created.update_time
    assert (replaced.monitor_id, replaced.display_name, replaced.severity) == ("mon_2", "stalled", Severity.INFO)
    assert replaced.condition == NoDataCondition(timedelta(minutes=3))
    assert replaced.channel_ids == ()
    assert replaced.repeat_interval is None
    assert not replaced.enabled


async def test_rules_page_by_id_and_filter_by_monitor(store: AlertStore) -> None:
    ids = [(await store.create_rule(ALICE, draft(monitor_id=f"mon_{i % 2}"))).id for i in range(7)]
    await store.create_rule(BOB, draft())
    pages: list[list[str]] = []
    after = ""
    while page := await store.list_rules(ALICE, after, 3):
        pages.append([r.id for r in page])
        after = page[-1].id
    assert pages == [ids[0:3], ids[3:6], ids[6:7]]
    on_one = await store.list_rules(ALICE, "", 10, monitor_id="mon_1")
    assert [r.id for r in on_one] == ids[1::2]


async def test_user_cannot_read_change_or_delete_another_users_rule(store: AlertStore) -> None:
    rule = await store.create_rule(ALICE, draft())
    with pytest.raises(NotFound):
        await store.get_rule(BOB, rule.id)
    with pytest.raises(NotFound):
        await store.replace_rule(BOB, rule.id, draft(display_name="mine now"))
    with pytest.raises(NotFound):
        await store.delete_rule(BOB, rule.id)
    assert await store.list_rules(BOB, "", 10) == []
    assert await store.get_rule(ALICE, rule.id) == rule
    await store.delete_rule(ALICE, rule.id)
    with pytest.raises(NotFound):
        await store.get_rule(ALICE, rule.id)
    with pytest.raises(NotFound):
        await store.delete_rule(ALICE, rule.id)


async def test_all_rules_spans_owners_across_internal_pages(store: AlertStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "_PAGE", 3)
    made = [(await store.create_rule(owner, draft())).id for owner in (ALICE, BOB) * 4]
    assert [r.id for r in await store.all_rules()] == made


async def test_deleting_a_monitor_deletes_the_rules_bound_to_it(store: AlertStore) -> None:
    bound = [(await store.create_rule(ALICE, draft(monitor_id="mon_gone"))).id for _ in range(2)]
    kept = await store.create_rule(ALICE, draft(monitor_id="mon_kept"))
    selector = await store.create_rule(ALICE, draft(monitor_id=""))
    bobs = await store.create_rule(BOB, draft(monitor_id="mon_gone"))
    assert sorted(await store.delete_monitor_rules(ALICE, "mon_gone")) == sorted(bound)
    assert {r.id for r in await store.all_rules()} == {kept.id, selector.id, bobs.id}
    assert await store.delete_monitor_rules(ALICE, "") == []


async def test_the_rule_quota_holds_under_concurrent_creates_from_two_replicas(database_url: str) -> None:
    first = await open_database(database_url, MIGRATIONS, VERSION_TABLE)
    second = Database(database_url)
    try:
        replicas = [AlertStore(first, max_rules_per_user=5), AlertStore(second, max_rules_per_user=5)]
        outcomes = await asyncio.gather(
            *(replicas[i % 2].create_rule(ALICE, draft()) for i in range(16)), return_exceptions=True
        )
        refused = [o for o in outcomes if isinstance(o, BaseException)]
        assert all(isinstance(o, ResourceExhausted) and o.metadata == {"limit": "rules_per_user"} for o in refused)
        assert len(outcomes) - len(refused) == 5
        assert len(await replicas[0].list_rules(ALICE, "", 100)) == 5
        await replicas[1].create_rule(BOB, draft())  # Bob has his own quota
        await replicas[0].delete_rule(ALICE, (await replicas[0].list_rules(ALICE, "", 1))[0].id)
        await replicas[1].create_rule(ALICE, draft())  # deleting makes room
    finally:
        await second.close()
        await first.close()


async def test_the_default_rule_is_made_once_ever(store: AlertStore) -> None:
    made = await store.ensure_default_rule(ALICE)
    assert made is not None
    assert made.is_default
    assert made.display_name == DEFAULT_RULE_NAME
    assert made.condition == MonitorDownCondition()
    assert made.severity is Severity.CRITICAL
    assert (made.monitor_id, dict(made.selector), made.channel_ids) == ("", {}, ())
    assert await store.get_rule(ALICE, made.id) == made
    assert await store.ensure_default_rule(ALICE) is None
    await store.delete_rule(ALICE, made.id)
    assert await store.ensure_default_rule(ALICE) is None, "a deleted default stays deleted"
    assert await store.list_rules(ALICE, "", 10) == []
    assert await store.ensure_default_rule(BOB) is not None


async def test_an_owner_with_rules_of_their_own_still_gets_the_default_rule_once(database: Database) -> None:
    store = AlertStore(database, max_rules_per_user=1)
    await store.create_rule(ALICE, draft())
    made = await store.ensure_default_rule(ALICE)  # the quota does not refuse the rule the system gives
    assert made is not None
    assert len(await store.list_rules(ALICE, "", 10)) == 2


async def test_two_replicas_at_once_make_one_default_rule(database_url: str) -> None:
    first = await open_database(database_url, MIGRATIONS, VERSION_TABLE)
    second = Database(database_url)
    try:
        replicas = [AlertStore(first, 100), AlertStore(second, 100)]
        made = await asyncio.gather(*(replicas[i % 2].ensure_default_rule(ALICE) for i in range(10)))
        assert len([m for m in made if m is not None]) == 1
        assert len(await replicas[0].list_rules(ALICE, "", 10)) == 1
    finally:
        await second.close()
        await first.close()


# --- alerts ---------------------------------------------------------------------------------------------------


async def test_an_alert_its_events_and_notices_read_back(store: AlertStore) -> None:
    pending = alert(ALICE, "rul_1", "mon_1")
    await store.save_alert(pending, event(pending, Transition.PENDING, 801.0))
    fired_at = utc_now()
    firing = replace(pending, state=AlertState.FIRING, fire_time=fired_at, update_time=fired_at, notify_sequence=1)
    await store.save_alert(firing, event(firing, Transition.FIRED), [notice(firing, 1)])
    assert await store.get_alert(ALICE, pending.id) == firing
    history = await store.events(ALICE, pending.id)
    assert [(e.transition, e.value) for e in history] == [(Transition.PENDING, 801.0), (Transition.FIRED, 812.25)]
    assert (history[1].alert_id, history[1].explanation, history[1].actor) == (pending.id, "fired because", "evaluator")
    assert await store.open_alerts() == [firing]
    claimed = await store.claim_notices(10, timedelta(seconds=30), utc_now())
    assert [replace(n, next_attempt_time=None) for n in claimed] == [notice(firing, 1, notice_id=claimed[0].id)]


async def test_a_value_with_no_number_reads_back_as_nan(store: AlertStore) -> None:
    unknown = replace(alert(ALICE, "rul_1", "mon_1"), value=math.nan, threshold=math.inf)
    await store.save_alert(unknown, event(unknown, Transition.PENDING, math.nan))
    stored = await store.get_alert(ALICE, unknown.id)
    assert math.isnan(stored.value)
    assert math.isnan(stored.threshold)
    assert math.isnan((await store.events(ALICE, unknown.id))[0].value)


async def test_one_open_alert_per_rule_and_monitor_until_it_resolves(store: AlertStore) -> None:
    first = alert(ALICE, "rul_1", "mon_1")
    await store.save_alert(first)
    second = alert(ALICE, "rul_1", "mon_1", AlertState.FIRING)
    with pytest.raises(AlertConflict) as caught:
        await store.save_alert(second, event(second, Transition.FIRED), [notice(second, 1)])
    assert caught.value.metadata == {"rule_id": "rul_1", "monitor_id": "mon_1"}
    with pytest.raises(NotFound):
        await store.get_alert(ALICE, second.id)
    assert await store.outbox_size() == 0
    await store.save_alert(alert(ALICE, "rul_1", "mon_2"))  # another monitor
    await store.save_alert(alert(ALICE, "rul_2", "mon_1"))  # another rule
    resolved = replace(first, state=AlertState.RESOLVED, resolve_time=utc_now())
    await store.save_alert(resolved, event(resolved, Transition.RESOLVED))
    await store.save_alert(second)
    await store.save_alert(replace(second, state=AlertState.ACKNOWLEDGED))  # updating the open one is fine
    assert {(a.rule_id, a.monitor_id, a.state) for a in await store.open_alerts()} == {
        ("rul_1", "mon_1", AlertState.ACKNOWLEDGED),
        ("rul_1", "mon_2", AlertState.PENDING),
        ("rul_2", "mon_1", AlertState.PENDING),
    }
    reopened = replace(resolved, state=AlertState.FIRING, resolve_time=None)
    with pytest.raises(AlertConflict):  # a resolved alert cannot reopen beside the open one
        await store.save_alert(reopened)


async def test_a_failed_notice_insert_rolls_back_the_alert_change_and_its_event(store: AlertStore) -> None:
    pending = alert(ALICE, "rul_1", "mon_1")
    queued = notice(pending, 0)
    await store.save_alert(pending, event(pending, Transition.PENDING), [queued])
    firing = replace(pending, state=AlertState.FIRING, fire_time=utc_now(), notify_sequence=1)
    duplicate = notice(firing, 1, notice_id=queued.id)  # the outbox already holds this id: the insert fails
    with pytest.raises(IntegrityError):
        await store.save_alert(firing, event(firing, Transition.FIRED), [notice(firing, 1), duplicate])
    assert await store.get_alert(ALICE, pending.id) == pending
    assert [e.transition for e in await store.events(ALICE, pending.id)] == [Transition.PENDING]
    assert await store.outbox_size() == 1
    new = alert(ALICE, "rul_2", "mon_1")
    with pytest.raises(IntegrityError):
        await store.save_alert(new, event(new, Transition.PENDING), [notice(new, 0, notice_id=queued.id)])
    with pytest.raises(NotFound):
        await store.get_alert(ALICE, new.id)


async def test_alerts_list_newest_first_in_pages_and_filter(store: AlertStore) -> None:
    start = utc_now() - timedelta(hours=1)
    made: list[Alert] = []
    for i in range(7):
        state = AlertState.RESOLVED if i % 3 == 0 else AlertState.FIRING
        made.append(alert(ALICE, f"rul_{i % 2}", f"mon_{i}", state, start + timedelta(minutes=i)))
        await store.save_alert(made[-1])
    await store.save_alert(alert(BOB, "rul_0", "mon_0"))
    newest_first = [a.id for a in reversed(made)]
    pages: list[list[str]] = []
    after = ""
    while page := await store.list_alerts(ALICE, after, 3):
        pages.append([a.id for a in page])
        after = page[-1].id
    assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:7]]
    resolved = await store.list_alerts(ALICE, "", 10, states=[AlertState.RESOLVED])
    assert [a.id for a in resolved] == [made[6].id, made[3].id, made[0].id]
    both = await store.list_alerts(ALICE, "", 10, states=[AlertState.RESOLVED, AlertState.FIRING])
    assert len(both) == 7
    of_rule = await store.list_alerts(ALICE, "", 10, rule_id="rul_1", states=[AlertState.FIRING])
    assert [a.id for a in of_rule] == [made[5].id, made[1].id]
    assert [a.id for a in await store.list_alerts(ALICE, "", 10, monitor_id="mon_4")] == [made[4].id]


async def test_user_cannot_read_another_users_alert_or_its_events(store: AlertStore) -> None:
    mine = alert(ALICE, "rul_1", "mon_1")
    await store.save_alert(mine, event(mine, Transition.PENDING))
    with pytest.raises(NotFound):
        await store.get_alert(BOB, mine.id)
    with pytest.raises(NotFound):
        await store.events(BOB, mine.id)
    assert await store.list_alerts(BOB, "", 10) == []


async def test_last_resolve_time_is_the_latest_resolution_of_the_rule_on_the_monitor(store: AlertStore) -> None:
    assert await store.last_resolve_time("rul_1", "mon_1") is None
    earlier = utc_now() - timedelta(minutes=30)
    later = utc_now() - timedelta(minutes=5)
    for resolved_at in (later, earlier):
        await store.save_alert(replace(alert(ALICE, "rul_1", "mon_1", AlertState.RESOLVED), resolve_time=resolved_at))
    await store.save_alert(alert(ALICE, "rul_1", "mon_1"))  # open: no resolution
    await store.save_alert(replace(alert(ALICE, "rul_1", "mon_2", AlertState.RESOLVED), resolve_time=utc_now()))
    assert await store.last_resolve_time("rul_1", "mon_1") == later
    assert await store.last_resolve_time("rul_2", "mon_1") is None


async def test_open_alerts_spans_owners_across_internal_pages(
    store: AlertStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "_PAGE", 2)
    opened = [alert(owner, "rul_1", f"mon_{i}") for i, owner in enumerate((ALICE, BOB) * 3)]
    for a in opened:
        await store.save_alert(a)
    await store.save_alert(alert(ALICE, "rul_1", "mon_0", AlertState.RESOLVED))
    assert [a.id for a in await store.open_alerts()] == [a.id for a in opened]


async def test_a_storm_of_alerts_saved_at_once_is_stored_whole(store: AlertStore) -> None:
    """Many alerts firing together are saved concurrently (on MariaDB through several connections): an UPDATE
    of a not yet existing id took a gap lock there, and concurrent inserts into that gap deadlocked."""
    storm = [alert(ALICE, "rul_1", f"mon_{i}", AlertState.FIRING) for i in range(60)]
    await asyncio.gather(*(store.save_alert(a, event(a, Transition.FIRED), [notice(a, 1)]) for a in storm))
    resolved = [replace(a, state=AlertState.RESOLVED, resolve_time=utc_now()) for a in storm[:30]]
    await asyncio.gather(*(store.save_alert(a, event(a, Transition.RESOLVED), [notice(a, 2)]) for a in resolved))
    assert len(await store.open_alerts()) == 30
    assert await store.outbox_size() == 90
    assert [e.transition for e in await store.events(ALICE, storm[0].id)] == [Transition.FIRED, Transition.RESOLVED]


# --- silences -------------------------------------------------------------------------------------------------


def silence_draft(now: datetime, end: timedelta | None, **changes: object) -> SilenceDraft:
    written = SilenceDraft(start_time=now - timedelta(hours=2), end_time=None if end is None else now + end)
    return validate_silence(replace(written, **changes), now)  # type: ignore[arg-type]


async def test_silences_list_live_or_all_and_delete(store: AlertStore) -> None:
    now = utc_now()
    ended = await store.create_silence(ALICE, silence_draft(now, -timedelta(hours=1), monitor_id="mon_1"))
    live = await store.create_silence(ALICE, silence_draft(now, timedelta(hours=1), rule_id="rul_1", comment="deploy"))
    weekly = await store.create_silence(
        ALICE,
        silence_draft(
            now,
            None,
            selector={"env": "staging"},
            cron_schedule="0 2 * * 0",
            duration=timedelta(hours=2),
            time_zone="Europe/Paris",
        ),
    )
    bobs = await store.create_silence(BOB, silence_draft(now, timedelta(hours=1)))
    assert await store.get_silence(ALICE, weekly.id) == weekly
    assert [s.id for s in await store.list_silences(ALICE, "", 10, include_expired=False, now=now)] == [
        live.id,
        weekly.id,
    ]
    everything = await store.list_silences(ALICE, "", 10, include_expired=True, now=now)
    assert everything == [ended, live, weekly]
    assert await store.list_silences(ALICE, live.id, 1, include_expired=True, now=now) == [weekly]
    assert {s.id for s in await store.live_silences(now)} == {live.id, weekly.id, bobs.id}
    with pytest.raises(NotFound):
        await store.delete_silence(BOB, live.id)
    with pytest.raises(NotFound):
        await store.get_silence(BOB, live.id)
    await store.delete_silence(ALICE, live.id)
    assert {s.id for s in await store.live_silences(now)} == {weekly.id, bobs.id}
    with pytest.raises(NotFound):
        await store.delete_silence(ALICE, live.id)


# --- outbox ---------------------------------------------------------------------------------------------------


async def queue(store: AlertStore, count: int, due: datetime) -> list[Notice]:
    a = alert(ALICE, "rul_1", "mon_1")
    notices = [notice(a, i, due - timedelta(seconds=count - i)) for i in range(count)]
    await store.save_alert(a, None, notices)
    return notices


async def test_notices_are_claimed_oldest_first_and_only_when_due(store: AlertStore) -> None:
    now = utc_now()
    queued = await queue(store, 3, now)
    later = notice(alert(ALICE, "rul_2", "mon_1"), 0, now + timedelta(minutes=1))
    await store.save_alert(alert(ALICE, "rul_2", "mon_1"), None, [later])
    claimed = await store.claim_notices(2, timedelta(seconds=30), now)
    assert [n.id for n in claimed] == [queued[0].id, queued[1].id]
    assert [n.id for n in await store.claim_notices(10, timedelta(seconds=30), now)] == [queued[2].id]
    assert await store.claim_notices(10, timedelta(seconds=30), now + timedelta(seconds=10)) == []
    # A lease that ran out (its worker died) is claimed again, with the notice that became due meanwhile.
    again = await store.claim_notices(10, timedelta(seconds=30), now + timedelta(minutes=2))
    assert [n.id for n in again] == [*(n.id for n in queued), later.id]


async def test_a_retried_notice_counts_its_attempt_and_waits_and_a_sent_one_leaves(store: AlertStore) -> None:
    now = utc_now()
    first, second = await queue(store, 2, now)
    await store.claim_notices(10, timedelta(minutes=5), now)
    await store.notice_retry(first.id, now + timedelta(seconds=20))
    await store.notice_sent(second.id)
    assert await store.outbox_size() == 1
    assert await store.claim_notices(10, timedelta(minutes=5), now + timedelta(seconds=10)) == []
    (retried,) = await store.claim_notices(10, timedelta(minutes=5), now + timedelta(seconds=20))
    assert (retried.id, retried.attempts, retried.next_attempt_time) == (first.id, 1, now + timedelta(seconds=20))


async def test_two_replicas_never_hold_the_same_notice(database_url: str) -> None:
    first = await open_database(database_url, MIGRATIONS, VERSION_TABLE)
    second = Database(database_url)
    try:
        replicas = [AlertStore(first, 100), AlertStore(second, 100)]
        now = utc_now()
        queued = await queue(replicas[0], 60, now)
        taken: list[str] = []
        for _ in range(5):  # workers poll again after a short claim; a few rounds empty the outbox
            claims: Sequence[list[Notice]] = await asyncio.gather(
                *(replicas[i % 2].claim_notices(7, timedelta(seconds=30), now) for i in range(12))
            )
            assert all(len(claim) <= 7 for claim in claims)
            taken.extend(n.id for claim in claims for n in claim)
        assert len(taken) == len(set(taken)), "a notice was held by two workers"
        assert sorted(taken) == sorted(n.id for n in queued)
    finally:
        await second.close()
        await first.close()


async def test_silences_per_user_are_capped_and_ended_ones_do_not_count(database: Database) -> None:
    store = AlertStore(database, max_rules_per_user=10, max_silences_per_user=2)
    now = utc_now()
    live = SilenceDraft(start_time=now, end_time=now + timedelta(hours=1))
    ended = SilenceDraft(start_time=now - timedelta(hours=2), end_time=now - timedelta(hours=1))
    await store.create_silence("usr_a", ended)
    await store.create_silence("usr_a", live)
    await store.create_silence("usr_a", live)
    with pytest.raises(ResourceExhausted) as caught:
        await store.create_silence("usr_a", live)
    assert caught.value.metadata == {"limit": "silences_per_user"}
    await store.create_silence("usr_b", live)  # another user's quota is their own
