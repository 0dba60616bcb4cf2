"""The alert lifecycle on a real store (SQLite and MariaDB): pending -> firing -> acknowledged -> resolved,
for_duration and keep_firing_for on a clock, repeats, escalation, silences, cooldown, storms grouped, the
outbox written with each transition, and the default "monitor is down" rule.

The engine takes its clock as a parameter; the tests move it by hand so that minutes pass in no time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import pytest

from harness.clock import midnight_days_ago
from service_runtime.database import Database, open_database
from service_runtime.errors import InvalidArgument
from service_runtime.timeseries import Aggregation
from services.alert_svc.domain import (
    AlertRule,
    AlertState,
    MonitorDownCondition,
    MonitorInfo,
    MonitorState,
    NoticeKind,
    Operator,
    RuleDraft,
    SampleEvent,
    SilenceDraft,
    ThresholdCondition,
    Transition,
    validate_rule,
    validate_silence,
)
from services.alert_svc.engine import AlertEngine, Change
from services.alert_svc.notifier import grouped, request_for
from services.alert_svc.server import MIGRATIONS, VERSION_TABLE
from services.alert_svc.store import AlertStore

OWNER = "usr_alice"
COIN = MonitorInfo("mon_btc", OWNER, "BTC-USD", {"team": "crypto"}, "crypto_price", MonitorState.UP)
SITE = MonitorInfo("mon_site", OWNER, "Shop", {"team": "web"}, "website", MonitorState.UP)
ABOVE_70K = ThresholdCondition("price", Aggregation.LAST, timedelta(0), Operator.GT, 70_000.0)


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: midnight_days_ago(0) - timedelta(hours=6))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **span: float) -> None:
        self.now += timedelta(**span)


@dataclass
class Rig:
    engine: AlertEngine
    store: AlertStore
    clock: Clock
    changes: list[Change]

    async def rule(self, **fields: object) -> AlertRule:
        draft = RuleDraft(**{"monitor_id": COIN.monitor_id, "condition": ABOVE_70K, **fields})  # type: ignore[arg-type]
        kind = COIN.kind if draft.monitor_id == COIN.monitor_id else None
        rule = await self.store.create_rule(OWNER, validate_rule(draft, kind))
        await self.engine.rule_changed(rule)
        return rule

    async def price(self, value: float, monitor: MonitorInfo = COIN) -> None:
        sample = SampleEvent(monitor.owner_id, monitor.monitor_id, self.clock.now.timestamp(), {"price": value})
        await self.engine.feed_samples([sample])

    async def notices(self) -> list[tuple[NoticeKind, str]]:
        """Notices due now, claimed and marked sent: (kind, summary)."""
        claimed = await self.store.claim_notices(1000, timedelta(seconds=30), self.clock.now)
        for notice in claimed:
            await self.store.notice_sent(notice.id)
        return [(n.kind, n.summary) for n in claimed]

    def transitions(self) -> list[Transition]:
        return [c.transition for c in self.changes if c.alert.rule_id != self.default_rule_id]

    @property
    def default_rule_id(self) -> str:
        return next((r.id for r in self.engine._rules.values() if r.is_default), "")


@pytest.fixture
async def rig(database_url: str) -> AsyncIterator[Rig]:
    database: Database = await open_database(database_url, MIGRATIONS, VERSION_TABLE)
    store = AlertStore(database, 1000)
    clock = Clock()
    engine = AlertEngine(store, None, clock=clock)
    await engine.load()
    changes: list[Change] = []

    def record(change: Change) -> bool:
        changes.append(change)  # every transition, in order
        return True

    engine.changes.subscribe_everyone(record)
    await engine.feed_snapshot([COIN, SITE])
    yield Rig(engine, store, clock, changes)
    await engine.stop()
    await database.close()


async def open_alert(rig: Rig, rule: AlertRule) -> AlertState | None:
    alerts = await rig.store.list_alerts(OWNER, "", 10, rule_id=rule.id)
    open_ = [a for a in alerts if a.state is not AlertState.RESOLVED]
    return open_[0].state if open_ else None


async def test_a_threshold_fires_at_once_and_resolves_with_notices(rig: Rig) -> None:
    rule = await rig.rule()
    await rig.price(69_000)
    assert await open_alert(rig, rule) is None
    await rig.price(70_412)
    assert await open_alert(rig, rule) is AlertState.FIRING
    [(kind, summary)] = await rig.notices()
    assert kind is NoticeKind.FIRING
    assert summary == "price = 70412 > 70000"  # the monitor, value and time travel in their own fields
    await rig.price(69_500)
    assert await open_alert(rig, rule) is None
    assert [k for k, _ in await rig.notices()] == [NoticeKind.RESOLVED]
    assert rig.transitions() == [Transition.FIRED, Transition.RESOLVED]
    [alert] = await rig.store.list_alerts(OWNER, "", 10, rule_id=rule.id)
    events = await rig.store.events(OWNER, alert.id)
    assert [(e.transition, e.value) for e in events] == [(Transition.FIRED, 70_412), (Transition.RESOLVED, 70_412)]


async def test_for_duration_holds_pending_then_fires_on_the_clock_without_a_sample(rig: Rig) -> None:
    rule = await rig.rule(for_duration=timedelta(minutes=1))
    await rig.price(71_000)
    assert await open_alert(rig, rule) is AlertState.PENDING
    assert await rig.notices() == []
    rig.clock.advance(seconds=59)
    await rig.engine.tick()
    assert await open_alert(rig, rule) is AlertState.PENDING
    rig.clock.advance(seconds=2)
    await rig.engine.tick()
    assert await open_alert(rig, rule) is AlertState.FIRING
    assert [k for k, _ in await rig.notices()] == [NoticeKind.FIRING]


async def test_a_pending_alert_that_clears_resolves_quietly(rig: Rig) -> None:
    rule = await rig.rule(for_duration=timedelta(minutes=5))
    await rig.price(71_000)
    rig.clock.advance(seconds=30)
    await rig.price(60_000)
    assert await open_alert(rig, rule) is None
    assert await rig.notices() == []
    assert rig.transitions() == [Transition.PENDING, Transition.RESOLVED]


async def test_keep_firing_for_holds_through_a_flap(rig: Rig) -> None:
    rule = await rig.rule(keep_firing_for=timedelta(minutes=2))
    await rig.price(71_000)
    rig.clock.advance(seconds=30)
    await rig.price(69_000)  # clear, but within keep_firing_for
    await rig.engine.tick()
    assert await open_alert(rig, rule) is AlertState.FIRING
    rig.clock.advance(seconds=30)
    await rig.price(71_500)  # back: the same alert goes on, no second notice
    rig.clock.advance(seconds=30)
    await rig.price(69_000)
    rig.clock.advance(seconds=119)
    await rig.engine.tick()
    assert await open_alert(rig, rule) is AlertState.FIRING
    rig.clock.advance(seconds=2)
    await rig.engine.tick()
    assert await open_alert(rig, rule) is None
    assert [k for k, _ in await rig.notices()] == [NoticeKind.FIRING, NoticeKind.RESOLVED]


async def test_repeats_until_acknowledged_then_escalation_stops_too(rig: Rig) -> None:
    rule = await rig.rule(
        repeat_interval=timedelta(minutes=5),
        escalate_after=timedelta(minutes=12),
        escalation_channel_ids=["chn_oncall"],
    )
    await rig.price(71_000)
    assert [k for k, _ in await rig.notices()] == [NoticeKind.FIRING]
    rig.clock.advance(minutes=5, seconds=1)
    await rig.engine.tick()
    assert [k for k, _ in await rig.notices()] == [NoticeKind.REPEATED]
    rig.clock.advance(minutes=7)
    await rig.engine.tick()
    escalated = await rig.store.claim_notices(10, timedelta(seconds=30), rig.clock.now)
    kinds = sorted((n.kind.value, n.channel_ids) for n in escalated)
    assert (NoticeKind.FIRING.value, ("chn_oncall",)) in kinds
    assert any(n.summary.startswith("Escalated") for n in escalated)
    for notice in escalated:
        await rig.store.notice_sent(notice.id)
    [alert] = rig.engine.open_alerts_of(OWNER)[-1:]
    acknowledged = await rig.engine.acknowledge(OWNER, alert.id, OWNER, "looking")
    assert acknowledged.state is AlertState.ACKNOWLEDGED
    assert (await rig.engine.acknowledge(OWNER, alert.id, OWNER, "again")).state is AlertState.ACKNOWLEDGED
    rig.clock.advance(minutes=30)
    await rig.engine.tick()
    assert await rig.notices() == []
    assert Transition.ESCALATED in rig.transitions()
    assert rule.id == alert.rule_id


async def test_a_silence_mutes_notices_not_state(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rule = await rig.rule()
    draft = validate_silence(
        SilenceDraft(monitor_id=COIN.monitor_id, end_time=rig.clock.now + timedelta(hours=1)), rig.clock.now
    )
    silence = await rig.store.create_silence(OWNER, draft)
    rig.engine.silence_added(silence)
    with caplog.at_level(logging.INFO, logger="monitors.events.alert"):
        await rig.price(71_000)
        assert await open_alert(rig, rule) is AlertState.FIRING
        await rig.price(69_000)
    assert await rig.notices() == []  # neither fired nor resolved was told
    # The terminal says which silence kept each quiet, so a person knows why nothing arrived.
    lines = [r.getMessage() for r in caplog.records if r.name == "monitors.events.alert"]
    assert [line.split(" is ")[1].split(":")[0] for line in lines] == ["FIRING", "RESOLVED"]
    assert all(line.endswith(f"(no notification: silenced by {silence.id})") for line in lines), lines


async def test_a_recurring_maintenance_window_mutes_only_inside_it(rig: Rig) -> None:
    await rig.rule()
    start = rig.clock.now.replace(minute=0, second=0, microsecond=0)
    draft = validate_silence(
        SilenceDraft(cron_schedule=f"0 {start.hour} * * *", duration=timedelta(minutes=30)), rig.clock.now
    )
    silence = replace(await rig.store.create_silence(OWNER, draft), start_time=start - timedelta(days=1))
    rig.engine.silence_added(silence)
    rig.clock.now = start + timedelta(minutes=10)
    await rig.price(71_000)
    await rig.price(69_000)
    assert await rig.notices() == []
    rig.clock.now = start + timedelta(minutes=40)
    await rig.price(71_000)
    assert [k for k, _ in await rig.notices()] == [NoticeKind.FIRING]


async def test_cooldown_keeps_a_refire_quiet(rig: Rig) -> None:
    rule = await rig.rule(cooldown=timedelta(minutes=10))
    await rig.price(71_000)
    await rig.price(69_000)
    assert len(await rig.notices()) == 2
    rig.clock.advance(minutes=5)
    await rig.price(71_000)
    assert await open_alert(rig, rule) is AlertState.FIRING
    await rig.price(69_000)
    assert await rig.notices() == []  # within the cooldown: fired and resolved, told nobody
    rig.clock.advance(minutes=11)
    await rig.price(71_000)
    assert [k for k, _ in await rig.notices()] == [NoticeKind.FIRING]


async def test_a_hand_resolved_alert_does_not_refire_until_the_condition_clears(rig: Rig) -> None:
    rule = await rig.rule()
    await rig.price(71_000)
    [alert] = [a for a in rig.engine.open_alerts_of(OWNER) if a.rule_id == rule.id]
    resolved = await rig.engine.resolve(OWNER, alert.id, OWNER, "known issue")
    assert (resolved.state, resolved.resolved_by, resolved.comment) == (AlertState.RESOLVED, OWNER, "known issue")
    await rig.price(71_500)
    assert await open_alert(rig, rule) is None
    await rig.price(69_000)
    await rig.price(71_500)
    assert await open_alert(rig, rule) is AlertState.FIRING


async def test_every_user_hears_a_monitor_go_down_by_default(rig: Rig) -> None:
    rules = await rig.store.list_rules(OWNER, "", 10)
    [default] = [r for r in rules if r.is_default]
    assert isinstance(default.condition, MonitorDownCondition)
    assert default.channel_ids == ()  # the owner's default channels
    await rig.engine.feed_monitor(replace(SITE, state=MonitorState.DOWN))
    alerts = [a for a in rig.engine.open_alerts_of(OWNER) if a.rule_id == default.id]
    assert [(a.monitor_id, a.state) for a in alerts] == [(SITE.monitor_id, AlertState.FIRING)]
    await rig.engine.feed_monitor(replace(SITE, state=MonitorState.UP))
    assert [k for k, _ in await rig.notices()] == [NoticeKind.FIRING, NoticeKind.RESOLVED]
    # Deleted, it stays deleted: no second default for this owner.
    await rig.store.delete_rule(OWNER, default.id)
    assert await rig.store.ensure_default_rule(OWNER) is None


async def test_a_storm_sends_the_first_at_once_and_the_rest_as_one_message(rig: Rig) -> None:
    many = [MonitorInfo(f"mon_{i:03}", OWNER, f"site {i:03}", {}, "website", MonitorState.UP) for i in range(500)]
    await rig.engine.feed_snapshot([COIN, SITE, *many])
    for monitor in many:
        await rig.engine.feed_monitor(replace(monitor, state=MonitorState.DOWN))
    now = await rig.store.claim_notices(1000, timedelta(seconds=30), rig.clock.now)
    assert len(now) == 1
    rig.clock.advance(seconds=10)
    later = await rig.store.claim_notices(1000, timedelta(seconds=30), rig.clock.now)
    groups = grouped(later)
    assert [len(g) for g in groups] == [499]
    message = request_for(groups[0])
    assert message.notification.summary.startswith("499 alerts firing: site 001, site 002")
    assert "and 479 more" in message.notification.summary
    assert message.idempotency_key == request_for(list(reversed(groups[0]))).idempotency_key


async def test_unknown_neither_fires_nor_resolves(rig: Rig) -> None:
    rule = await rig.rule()
    await rig.price(71_000)
    await rig.engine.feed_down()
    await rig.price(60_000)
    assert await open_alert(rig, rule) is AlertState.FIRING
    await rig.engine.feed_snapshot([COIN, SITE])
    await rig.price(60_000)
    assert await open_alert(rig, rule) is None


async def test_a_transition_the_store_refuses_is_tried_again_not_half_done(rig: Rig) -> None:
    """The store fails once (a stand-in for a database outage: the real store's save is made to raise once)."""
    rule = await rig.rule()
    real_save = rig.store.save_alert
    failures = [ConnectionError("database went away")]

    async def failing_once(*args: object, **kwargs: object) -> None:
        if failures:
            raise failures.pop()
        await real_save(*args, **kwargs)  # type: ignore[arg-type]

    rig.store.save_alert = failing_once  # type: ignore[method-assign]
    await rig.price(71_000)
    assert await open_alert(rig, rule) is None
    assert rig.engine.open_alerts_of(OWNER) == []  # nothing fired in memory that the store does not have
    await rig.price(71_200)
    assert await open_alert(rig, rule) is AlertState.FIRING
    assert [k for k, _ in await rig.notices()] == [NoticeKind.FIRING]


async def test_deleting_a_monitor_resolves_its_alerts_and_removes_its_own_rules(rig: Rig) -> None:
    bound = await rig.rule()
    selector = await rig.rule(monitor_id="", selector={"team": "crypto"}, display_name="crypto team")
    await rig.price(71_000)
    assert {a.rule_id for a in rig.engine.open_alerts_of(OWNER)} == {bound.id, selector.id}
    await rig.engine.feed_deleted(COIN.monitor_id)
    assert rig.engine.open_alerts_of(OWNER) == []
    remaining = {r.id for r in await rig.store.list_rules(OWNER, "", 100)}
    assert bound.id not in remaining
    assert selector.id in remaining
    [alert] = await rig.store.list_alerts(OWNER, "", 10, rule_id=bound.id)
    assert (alert.state, alert.resolved_by) == (AlertState.RESOLVED, "monitor deleted")


async def test_a_monitor_that_went_down_while_the_feed_was_away_fires_on_the_next_snapshot(rig: Rig) -> None:
    """A new leader, or a feed that reconnects: the snapshot's states are judged as soon as it arrives."""
    default = next(r for r in await rig.store.list_rules(OWNER, "", 10) if r.is_default)
    await rig.engine.feed_down()
    await rig.engine.feed_snapshot([COIN, replace(SITE, state=MonitorState.DOWN)])
    assert [(a.rule_id, a.monitor_id) for a in rig.engine.open_alerts_of(OWNER)] == [(default.id, SITE.monitor_id)]


def test_a_heartbeats_run_time_may_be_alerted_on_and_an_unknown_field_is_named() -> None:
    """Heartbeat monitors write run_time_ms (a /start ping then a finishing one): "alert me if the backup
    takes over an hour" is a rule; a field no heartbeat writes is refused, naming where."""
    slow = ThresholdCondition("run_time_ms", Aggregation.LAST, timedelta(0), Operator.GT, 3_600_000.0)
    assert validate_rule(RuleDraft(monitor_id="mon_job", condition=slow), "heartbeat").condition == slow

    price = ThresholdCondition("price", Aggregation.LAST, timedelta(0), Operator.GT, 1.0)
    with pytest.raises(InvalidArgument) as refused:
        validate_rule(RuleDraft(monitor_id="mon_job", condition=price), "heartbeat")
    assert [v.field for v in refused.value.violations] == ["alert_rule.condition.threshold.field"]


async def test_an_alert_resolved_while_its_firing_notice_is_held_is_told_resolved_after_firing(rig: Rig) -> None:
    """In a storm the second alert's firing notice waits for the group window; its alert resolving meanwhile
    (a monitor deleted, a brief outage) must not be told before it was told firing."""
    first = MonitorInfo("mon_first", OWNER, "first", {}, "website", MonitorState.UP)
    second = MonitorInfo("mon_second", OWNER, "second", {}, "website", MonitorState.UP)
    await rig.engine.feed_snapshot([COIN, SITE, first, second])
    await rig.engine.feed_monitor(replace(first, state=MonitorState.DOWN))
    rig.clock.advance(seconds=2)
    await rig.engine.feed_monitor(replace(second, state=MonitorState.DOWN))
    rig.clock.advance(seconds=1)
    await rig.engine.feed_monitor(second)  # up again: resolved, 3 s into the firing window

    assert [kind for kind, _ in await rig.notices()] == [NoticeKind.FIRING]  # the first's firing, at once
    rig.clock.advance(seconds=7)  # the window's end: the second's firing is due, not yet its resolved notice
    assert [kind for kind, _ in await rig.notices()] == [NoticeKind.FIRING]
    rig.clock.advance(seconds=1)
    assert [kind for kind, _ in await rig.notices()] == [NoticeKind.RESOLVED]


async def test_a_monitor_down_notice_carries_no_value(rig: Rig) -> None:
    """A state has no value: the notice sends 0 and 0, which messages leave out (a threshold's stay)."""
    await rig.engine.feed_monitor(replace(SITE, state=MonitorState.DOWN))
    claimed = await rig.store.claim_notices(10, timedelta(seconds=30), rig.clock.now)
    assert [(n.kind, n.value, n.threshold) for n in claimed] == [(NoticeKind.FIRING, 0.0, 0.0)]

    await rig.rule()
    rig.clock.advance(seconds=11)  # past the group window the site's notice opened
    await rig.price(71_000)
    claimed = await rig.store.claim_notices(10, timedelta(seconds=30), rig.clock.now)
    assert [(n.kind, n.value, n.threshold) for n in claimed] == [(NoticeKind.FIRING, 71_000.0, 70_000.0)]


async def test_renaming_a_rule_keeps_its_pairs_and_its_open_alert(rig: Rig) -> None:
    """A rename (or other channels) changes nothing the evaluator watches or judges: the pairs stay as they
    are (re-making and re-reading a rule's 1,000 pairs on each rename had slowed every user's calls), the open
    alert stays open, and its next notice carries the new name. A new condition is re-attached as before."""
    rule = await rig.rule(display_name="BTC high")
    await rig.price(71_000)
    assert rig.transitions() == [Transition.FIRED]
    entry = rig.engine.evaluator._rules[rule.id]
    pairs = dict(entry.pairs)

    draft = validate_rule(
        RuleDraft(monitor_id=COIN.monitor_id, condition=ABOVE_70K, display_name="BTC moon"), "crypto_price"
    )
    renamed = await rig.store.replace_rule(OWNER, rule.id, draft)
    await rig.engine.rule_changed(renamed)

    assert rig.engine.evaluator._rules[rule.id] is entry
    assert entry.pairs == pairs
    assert rig.transitions() == [Transition.FIRED]  # neither resolved nor fired again
    await rig.price(69_000)
    assert rig.transitions() == [Transition.FIRED, Transition.RESOLVED]

    higher = ThresholdCondition("price", Aggregation.LAST, timedelta(0), Operator.GT, 80_000.0)
    draft = validate_rule(RuleDraft(monitor_id=COIN.monitor_id, condition=higher), "crypto_price")
    await rig.engine.rule_changed(await rig.store.replace_rule(OWNER, rule.id, draft))
    assert rig.engine.evaluator._rules[rule.id] is not entry  # a new condition: attached again
