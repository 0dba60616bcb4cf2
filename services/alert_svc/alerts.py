"""Alerting's use cases, one short method per RPC: rules, alerts, silences of the calling user.
Plain Python over the store and the engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from service_runtime.auth import Principal
from service_runtime.database import utc_now
from service_runtime.errors import InvalidArgument, ResourceExhausted, require_id
from service_runtime.pagination import PageRequest
from service_runtime.streams import Subscription
from services.alert_svc.channels import NotifyChannels
from services.alert_svc.domain import (
    Alert,
    AlertEvent,
    AlertRule,
    AlertState,
    Evaluation,
    RuleDraft,
    Silence,
    SilenceDraft,
    Verdict,
    check_comment,
    check_windows,
    validate_rule,
    validate_silence,
)
from services.alert_svc.engine import AlertEngine, Change
from services.alert_svc.store import AlertStore

MUTABLE_PATHS = (
    "display_name",
    "monitor_id",
    "monitor_selector",
    "condition",
    "severity",
    "for_duration",
    "keep_firing_for",
    "repeat_interval",
    "cooldown",
    "escalate_after",
    "channel_ids",
    "escalation_channel_ids",
    "enabled",
    "description",
    "labels",
)
# A rule at its largest (description, labels, selector, channels) is about 6 KB: 250 keep a page well under the
# 4 MiB a gRPC message may hold.
MAX_RULES_PAGE = 250
# Mask path -> RuleDraft attribute.
_DRAFT_FIELD = {"monitor_selector": "selector"}


class Alerting:
    """AlertService's behaviour for one caller at a time."""

    def __init__(
        self, store: AlertStore, engine: AlertEngine, max_streams: int = 10, channels: NotifyChannels | None = None
    ) -> None:
        self._store = store
        self._engine = engine
        self._max_streams = max_streams
        self._channels = channels

    # --- rules ---------------------------------------------------------------------------------------

    async def _validated(self, caller: Principal, draft: RuleDraft, prefix: str = "alert_rule") -> RuleDraft:
        kind = None
        if draft.monitor_id:
            kind = (await self._engine.monitor_of(caller.user_id, draft.monitor_id)).kind
        valid = validate_rule(draft, kind, prefix)
        if self._channels is not None:
            await self._channels.require([*valid.channel_ids, *valid.escalation_channel_ids])
        return valid

    async def create_rule(self, caller: Principal, draft: RuleDraft) -> AlertRule:
        valid = await self._validated(caller, draft)
        check_windows(valid, self._engine.evaluator.rules_of(caller.user_id))
        rule = await self._store.create_rule(caller.user_id, valid)
        await self._engine.rule_changed(rule)
        return rule

    async def get_rule(self, caller: Principal, rule_id: str) -> AlertRule:
        return await self._store.get_rule(caller.user_id, _rule_id(rule_id))

    async def list_rules(
        self, caller: Principal, size: int, token: str, monitor_id: str
    ) -> tuple[list[AlertRule], str]:
        request = PageRequest.of(size, token, maximum=MAX_RULES_PAGE)
        found = await self._store.list_rules(caller.user_id, request.after or "", request.read_limit, monitor_id)
        return request.cut(found, lambda r: r.id)

    async def update_rule(self, caller: Principal, rule_id: str, draft: RuleDraft, paths: Sequence[str]) -> AlertRule:
        """Change the fields in ``paths`` (every mutable one when empty)."""
        unknown = sorted(set(paths) - set(MUTABLE_PATHS))
        if unknown:
            raise InvalidArgument(
                "update_mask", f"cannot update {', '.join(unknown)}; mutable: {', '.join(MUTABLE_PATHS)}"
            )
        current = await self._store.get_rule(caller.user_id, _rule_id(rule_id, "alert_rule.id"))
        merged = RuleDraft(
            display_name=current.display_name,
            monitor_id=current.monitor_id,
            selector=current.selector,
            condition=current.condition,
            severity=current.severity,
            for_duration=current.for_duration,
            keep_firing_for=current.keep_firing_for,
            repeat_interval=current.repeat_interval,
            cooldown=current.cooldown,
            escalate_after=current.escalate_after,
            channel_ids=current.channel_ids,
            escalation_channel_ids=current.escalation_channel_ids,
            enabled=current.enabled,
            description=current.description,
            labels=current.labels,
        )
        changes = {_DRAFT_FIELD.get(p, p): getattr(draft, _DRAFT_FIELD.get(p, p)) for p in paths or MUTABLE_PATHS}
        if "monitor_id" in changes and changes["monitor_id"] and "selector" not in changes:
            changes["selector"] = {}
        if changes.get("selector") and "monitor_id" not in changes:
            changes["monitor_id"] = ""
        valid = await self._validated(caller, replace(merged, **changes))
        check_windows(valid, self._engine.evaluator.rules_of(caller.user_id), rule_id)
        rule = await self._store.replace_rule(caller.user_id, rule_id, valid)
        await self._engine.rule_changed(rule)
        return rule

    async def delete_rule(self, caller: Principal, rule_id: str) -> None:
        await self._store.delete_rule(caller.user_id, _rule_id(rule_id))
        await self._engine.rule_deleted(rule_id)

    async def test_rule(self, caller: Principal, rule_id: str, draft: RuleDraft | None) -> list[Evaluation]:
        """Evaluate a saved rule (``rule_id``) or an unsaved one (``draft``) now; changes nothing."""
        if draft is None and not rule_id:
            raise InvalidArgument("rule_id", "set rule_id, or alert_rule to test a rule before saving it")
        if draft is None:
            rule = await self._store.get_rule(caller.user_id, rule_id)
        else:
            valid = await self._validated(caller, draft)
            now = utc_now()
            assert valid.condition is not None
            assert valid.severity is not None
            rule = AlertRule(
                id="",
                owner_id=caller.user_id,
                display_name=valid.display_name,
                monitor_id=valid.monitor_id,
                selector=valid.selector,
                condition=valid.condition,
                severity=valid.severity,
                for_duration=valid.for_duration or timedelta(0),
                keep_firing_for=valid.keep_firing_for or timedelta(0),
                repeat_interval=valid.repeat_interval,
                cooldown=valid.cooldown or timedelta(0),
                escalate_after=valid.escalate_after,
                channel_ids=tuple(valid.channel_ids),
                escalation_channel_ids=tuple(valid.escalation_channel_ids),
                enabled=True,
                description=valid.description,
                labels=valid.labels,
                is_default=False,
                create_time=now,
                update_time=now,
            )
        if rule.monitor_id:
            await self._engine.monitor_of(caller.user_id, rule.monitor_id)
        return await self._engine.test(rule)

    # --- alerts --------------------------------------------------------------------------------------

    async def list_alerts(
        self,
        caller: Principal,
        size: int,
        token: str,
        states: Sequence[AlertState],
        rule_id: str,
        monitor_id: str,
    ) -> tuple[list[Alert], str]:
        request = PageRequest.of(size, token)
        after = request.after or ""
        found = await self._store.list_alerts(caller.user_id, after, request.read_limit, states, rule_id, monitor_id)
        return request.cut(found, lambda a: a.id)

    async def get_alert(self, caller: Principal, alert_id: str) -> tuple[Alert, list[AlertEvent]]:
        alert = await self._store.get_alert(caller.user_id, _alert_id(alert_id))
        return alert, await self._store.events(caller.user_id, alert_id)

    async def acknowledge(self, caller: Principal, alert_id: str, comment: str) -> Alert:
        return await self._engine.acknowledge(
            caller.user_id, _alert_id(alert_id), caller.user_id, check_comment(comment)
        )

    async def resolve(self, caller: Principal, alert_id: str, comment: str) -> Alert:
        return await self._engine.resolve(caller.user_id, _alert_id(alert_id), caller.user_id, check_comment(comment))

    # --- silences ------------------------------------------------------------------------------------

    async def create_silence(self, caller: Principal, draft: SilenceDraft) -> Silence:
        valid = validate_silence(draft, datetime.now(UTC))
        if valid.monitor_id:
            await self._engine.monitor_of(caller.user_id, valid.monitor_id)
        if valid.rule_id:
            await self._store.get_rule(caller.user_id, valid.rule_id)
        silence = await self._store.create_silence(caller.user_id, valid)
        self._engine.silence_added(silence)
        return silence

    async def list_silences(
        self, caller: Principal, size: int, token: str, include_expired: bool
    ) -> tuple[list[Silence], str]:
        request = PageRequest.of(size, token)
        found = await self._store.list_silences(
            caller.user_id, request.after or "", request.read_limit, include_expired, datetime.now(UTC)
        )
        return request.cut(found, lambda s: s.id)

    async def delete_silence(self, caller: Principal, silence_id: str) -> None:
        await self._store.delete_silence(caller.user_id, require_id(silence_id, "id", "sil_...", "ListSilences"))
        self._engine.silence_removed(caller.user_id, silence_id)

    # --- streams -------------------------------------------------------------------------------------

    async def watch_evaluations(
        self, caller: Principal, rule_ids: Sequence[str], monitor_ids: Sequence[str]
    ) -> Subscription[Evaluation]:
        for rule_id in rule_ids:
            await self._store.get_rule(caller.user_id, rule_id)  # NOT_FOUND for another's
        self._check_streams(caller.user_id)
        rules, monitors = set(rule_ids), set(monitor_ids)
        return self._engine.evaluations.subscribe(
            caller.user_id,
            lambda e: (not rules or e.rule_id in rules) and (not monitors or e.monitor_id in monitors),
        )

    def watch_alerts(self, caller: Principal, include_open: bool) -> tuple[list[Alert], Subscription[Change]]:
        self._check_streams(caller.user_id)
        subscription = self._engine.changes.subscribe(caller.user_id)
        current = self._engine.open_alerts_of(caller.user_id) if include_open else []
        return current, subscription

    def _check_streams(self, owner_id: str) -> None:
        """At most ``max_streams`` open StreamEvaluations and WatchAlerts per user: each holds a buffer."""
        open_now = self._engine.evaluations.count(owner_id) + self._engine.changes.count(owner_id)
        if open_now >= self._max_streams:
            raise ResourceExhausted(
                "streams_per_user", f"at most {self._max_streams} open alert streams per user; close one first"
            )

    def unwatch_evaluations(self, subscription: Subscription[Evaluation]) -> None:
        self._engine.evaluations.unsubscribe(subscription)

    def unwatch_alerts(self, subscription: Subscription[Change]) -> None:
        self._engine.changes.unsubscribe(subscription)

    def silence_timing(self, silence: Silence) -> tuple[bool, datetime | None]:
        """Whether it mutes now, and when it next begins to."""
        now = datetime.now(UTC)
        return silence.active_at(now), silence.next_start(now)


def verdict_would_fire(evaluations: Sequence[Evaluation]) -> tuple[Evaluation | None, bool]:
    """The evaluation that decides TestAlertRule's answer: the first met, else the first."""
    for evaluation in evaluations:
        if evaluation.verdict is Verdict.MET:
            return evaluation, True
    return (evaluations[0] if evaluations else None), False


def _rule_id(rule_id: str, field: str = "id") -> str:
    return require_id(rule_id, field, "rul_...", "ListAlertRules")


def _alert_id(alert_id: str) -> str:
    return require_id(alert_id, "id", "alr_...", "ListAlerts")
