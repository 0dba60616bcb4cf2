"""AlertService end to end, on both stacks: real monitor, alert and notification services (embedded, and on
MariaDB, Redis and InfluxDB), heartbeat monitors pinged over real HTTP, and a real HTTPS webhook receiver.

A heartbeat monitor is the quickest way to drive a monitor's state and samples from a test: a ping to its URL
is an UP result, a ping to ``/fail`` a DOWN one, recorded exactly like a runner's.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.rpc import error_details_pb2

from harness.alerting import User, ping
from harness.external import production_env
from harness.receivers import ProviderReceivers
from harness.rpc import rich_details
from harness.services import Stack
from harness.waiting import eventually
from monitors.v1 import (
    alert_service_pb2,
    common_pb2,
    monitor_service_pb2,
    notification_service_pb2,
)

apb = alert_service_pb2
mpb = monitor_service_pb2
npb = notification_service_pb2
Metadata = tuple[tuple[str, str]]
T = TypeVar("T")
_names = itertools.count()


@pytest.fixture(scope="module")
def receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderReceivers]:
    with ProviderReceivers(tmp_path_factory.mktemp("receivers")) as found:
        yield found


@pytest.fixture(scope="module", params=["embedded", "production"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, receivers: ProviderReceivers
) -> Iterator[Stack]:
    env = {
        "MONITORS_EGRESS": "private-allowed",
        "MONITORS_CA_FILE": str(receivers.ca_file),
        "MONITORS_MIN_INTERVAL_S": "1",
        "MONITORS_NOTIFY_TIMEOUT_S": "3",
    }
    if request.param == "production":
        mariadb, redis, influxdb = (request.getfixturevalue(n) for n in ("mariadb", "redis_server", "influxdb"))
        env |= production_env(mariadb, redis, influxdb, "alerting")
    with Stack(tmp_path_factory.mktemp(f"alerting-{request.param}"), env) as found:
        yield found


def bodies(receivers: ProviderReceivers, name: str) -> list[Any]:
    return [json.loads(r.body) for r in receivers.received(f"/webhook/{name}")]


def violations(error: grpc.RpcError) -> dict[str, str]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    bad = next(d for d in rich_details(error) if isinstance(d, error_details_pb2.BadRequest))
    return {v.field: v.description for v in bad.field_violations}


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


@pytest.fixture(scope="module")
def alice(stack: Stack) -> User:
    return User(stack, "alice.alerting@example.com")


@pytest.fixture(scope="module")
def bob(stack: Stack) -> User:
    return User(stack, "bob.alerting@example.com")


def test_a_monitor_going_down_is_heard_by_default_then_its_recovery(alice: User, receivers: ProviderReceivers) -> None:
    hook = unique("default")
    alice.webhook(receivers, hook)
    monitor = alice.heartbeat("nightly backup")
    ping(monitor)
    ping(monitor, up=False)
    [fired] = receivers.wait_for(f"/webhook/{hook}", 1)
    text = json.dumps(json.loads(fired.body))
    assert "nightly backup" in text
    assert "monitor is down" in text
    assert "the job reported a failure" in text  # why: what the last check found, as the terminal says
    rules = alice.call(alice.alerts.ListAlertRules, apb.ListAlertRulesRequest()).alert_rules
    [default] = [r for r in rules if r.is_default]
    [alert] = alice.alerts_of(default.id)
    assert (alert.monitor_id, alert.state) == (monitor.id, common_pb2.ALERT_STATE_FIRING)
    ping(monitor)
    receivers.wait_for(f"/webhook/{hook}", 2)
    resolved = eventually(
        lambda: [a for a in alice.alerts_of(default.id) if a.state == common_pb2.ALERT_STATE_RESOLVED]
    )
    assert resolved[0].resolved_by == "condition"
    got = alice.call(alice.alerts.GetAlert, apb.GetAlertRequest(id=alert.id))
    assert [e.transition for e in got.events] == [apb.ALERT_TRANSITION_FIRED, apb.ALERT_TRANSITION_RESOLVED]


def test_a_threshold_rule_on_a_selector_fires_for_a_new_monitor_and_is_acknowledged(
    alice: User, receivers: ProviderReceivers
) -> None:
    hook = unique("oncall")
    channel = alice.webhook(receivers, hook, default=False)
    team = unique("team")
    rule = alice.call(
        alice.alerts.CreateAlertRule,
        apb.CreateAlertRuleRequest(
            alert_rule=apb.AlertRule(
                display_name="job failing",
                monitor_selector={"team": team},
                condition=common_pb2.AlertCondition(
                    threshold=common_pb2.ThresholdCondition(
                        field="is_up", operator=common_pb2.COMPARISON_OPERATOR_LESS_THAN, value=1
                    )
                ),
                severity=common_pb2.SEVERITY_CRITICAL,
                channel_ids=[channel.id],
            )
        ),
    ).alert_rule
    assert rule.id.startswith("rul")
    assert dict(rule.monitor_selector) == {"team": team}
    monitor = alice.heartbeat("etl", {"team": team})  # created after the rule
    watch = alice.alerts.WatchAlerts(apb.WatchAlertsRequest(), metadata=alice.key, timeout=30)
    seen: list[apb.WatchAlertsResponse] = []

    def read_until_acknowledged() -> None:
        for item in watch:
            seen.append(item)
            if item.transition == apb.ALERT_TRANSITION_ACKNOWLEDGED:
                return

    reader = threading.Thread(target=read_until_acknowledged, daemon=True)
    reader.start()
    time.sleep(0.3)
    ping(monitor, up=False)
    [message] = receivers.wait_for(f"/webhook/{hook}", 1)
    assert "etl" in json.dumps(json.loads(message.body))
    [alert] = alice.alerts_of(rule.id)
    assert "is_up" in alert.explanation
    acknowledged = alice.call(alice.alerts.AcknowledgeAlert, apb.AcknowledgeAlertRequest(id=alert.id, comment="on it"))
    assert acknowledged.alert.state == common_pb2.ALERT_STATE_ACKNOWLEDGED
    assert acknowledged.alert.comment == "on it"
    reader.join(timeout=10)
    watch.cancel()
    # The default "monitor is down" rule fires for the same monitor too; this rule's alert is the one watched.
    assert [(s.transition, s.alert.id) for s in seen if s.alert.rule_id == rule.id] == [
        (apb.ALERT_TRANSITION_FIRED, alert.id),
        (apb.ALERT_TRANSITION_ACKNOWLEDGED, alert.id),
    ]
    test = alice.call(alice.alerts.TestAlertRule, apb.TestAlertRuleRequest(rule_id=rule.id))
    assert test.would_fire
    assert test.evaluation.monitor_id == monitor.id


def test_another_users_rules_alerts_and_monitors_are_not_found(alice: User, bob: User) -> None:
    monitor = alice.heartbeat("private")
    condition = common_pb2.AlertCondition(monitor_down=common_pb2.MonitorDownCondition())
    rule = alice.call(
        alice.alerts.CreateAlertRule,
        apb.CreateAlertRuleRequest(alert_rule=apb.AlertRule(monitor_id=monitor.id, condition=condition)),
    ).alert_rule
    attempts: list[tuple[Callable[..., Any], object]] = [
        (bob.alerts.GetAlertRule, apb.GetAlertRuleRequest(id=rule.id)),
        (bob.alerts.DeleteAlertRule, apb.DeleteAlertRuleRequest(id=rule.id)),
        (bob.alerts.TestAlertRule, apb.TestAlertRuleRequest(rule_id=rule.id)),
        (
            bob.alerts.UpdateAlertRule,
            apb.UpdateAlertRuleRequest(
                alert_rule=apb.AlertRule(id=rule.id, display_name="mine"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
        ),
        (
            bob.alerts.CreateAlertRule,
            apb.CreateAlertRuleRequest(alert_rule=apb.AlertRule(monitor_id=monitor.id, condition=condition)),
        ),
        (
            bob.alerts.CreateSilence,
            apb.CreateSilenceRequest(
                silence=apb.Silence(rule_id=rule.id, end_time=timestamp_pb2.Timestamp(seconds=int(time.time()) + 60))
            ),
        ),
    ]
    for method, request in attempts:
        with pytest.raises(grpc.RpcError) as caught:
            bob.call(method, request)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND, method
    assert bob.call(bob.alerts.ListAlertRules, apb.ListAlertRulesRequest(monitor_id=monitor.id)).alert_rules == []


def test_invalid_rules_name_their_fields(alice: User) -> None:
    monitor = alice.heartbeat("fields")
    cases = [
        (
            apb.AlertRule(
                monitor_id=monitor.id,
                condition=common_pb2.AlertCondition(
                    threshold=common_pb2.ThresholdCondition(
                        field="price", operator=common_pb2.COMPARISON_OPERATOR_GREATER_THAN, value=1
                    )
                ),
            ),
            "alert_rule.condition.threshold.field",
        ),
        (
            apb.AlertRule(
                monitor_id=monitor.id,
                condition=common_pb2.AlertCondition(anomaly=common_pb2.AnomalyCondition(field="is_up", deviations=-1)),
            ),
            "alert_rule.condition.anomaly.deviations",
        ),
        (
            apb.AlertRule(
                monitor_id=monitor.id,
                condition=common_pb2.AlertCondition(no_data=common_pb2.NoDataCondition()),
            ),
            "alert_rule.condition.no_data.duration",
        ),
        (
            apb.AlertRule(
                monitor_id=monitor.id,
                condition=common_pb2.AlertCondition(monitor_down=common_pb2.MonitorDownCondition()),
                for_duration=duration_pb2.Duration(seconds=-5),
            ),
            "alert_rule.for_duration",
        ),
        (apb.AlertRule(monitor_id=monitor.id), "alert_rule.condition"),
        (
            # Over every monitor (no monitor_id): a field no monitor writes would keep the rule unknown forever.
            apb.AlertRule(
                condition=common_pb2.AlertCondition(
                    threshold=common_pb2.ThresholdCondition(
                        field="response_time", operator=common_pb2.COMPARISON_OPERATOR_GREATER_THAN, value=1
                    )
                ),
            ),
            "alert_rule.condition.threshold.field",
        ),
        (
            apb.AlertRule(
                monitor_id=monitor.id,
                condition=common_pb2.AlertCondition(monitor_down=common_pb2.MonitorDownCondition()),
                for_duration=duration_pb2.Duration(seconds=10**15),
            ),
            "alert_rule.for_duration",
        ),
        (
            apb.AlertRule(
                monitor_id=monitor.id,
                condition=common_pb2.AlertCondition(monitor_down=common_pb2.MonitorDownCondition()),
                keep_firing_for=duration_pb2.Duration(seconds=5, nanos=-5),
            ),
            "alert_rule.keep_firing_for",
        ),
        (
            apb.AlertRule(
                monitor_id=monitor.id,
                condition=common_pb2.AlertCondition(monitor_down=common_pb2.MonitorDownCondition()),
                display_name=" " * 100_000,
            ),
            "alert_rule.display_name",
        ),
    ]
    for rule, field in cases:
        with pytest.raises(grpc.RpcError) as caught:
            alice.call(alice.alerts.CreateAlertRule, apb.CreateAlertRuleRequest(alert_rule=rule))
        assert field in violations(caught.value), (field, violations(caught.value))
    with pytest.raises(grpc.RpcError) as caught:
        alice.call(
            alice.alerts.CreateSilence,
            apb.CreateSilenceRequest(silence=apb.Silence(cron_schedule="every day", comment="x")),
        )
    assert {"silence.cron_schedule", "silence.duration"} <= set(violations(caught.value))


def test_a_silence_mutes_the_default_rule_but_the_alert_still_fires(alice: User, receivers: ProviderReceivers) -> None:
    hook = unique("muted")
    alice.webhook(receivers, hook)
    monitor = alice.heartbeat("maintenance box")
    end = int(time.time()) + 3600
    silence = alice.call(
        alice.alerts.CreateSilence,
        apb.CreateSilenceRequest(
            silence=apb.Silence(
                monitor_id=monitor.id, end_time=timestamp_pb2.Timestamp(seconds=end), comment="upgrading"
            )
        ),
    ).silence
    assert silence.active
    ping(monitor, up=False)
    rules = alice.call(alice.alerts.ListAlertRules, apb.ListAlertRulesRequest()).alert_rules
    [default] = [r for r in rules if r.is_default]
    eventually(lambda: [a for a in alice.alerts_of(default.id) if a.monitor_id == monitor.id], what="alert fired")
    time.sleep(1.5)
    assert receivers.received(f"/webhook/{hook}") == []
    listed = alice.call(alice.alerts.ListSilences, apb.ListSilencesRequest()).silences
    assert silence.id in [s.id for s in listed]
    alice.call(alice.alerts.DeleteSilence, apb.DeleteSilenceRequest(id=silence.id))


def test_listings_that_end_on_a_full_page_hand_out_no_token(stack: Stack) -> None:
    """ListAlertRules, ListAlerts and ListSilences read one item past the page, so a listing whose count is a
    multiple of the page size ends on that full page: a next_page_token there used to lead to an empty page."""
    erin = User(stack, "erin.pages@example.com")
    monitor = erin.heartbeat("paged")
    ping(monitor, up=False)  # the default rule fires one alert for it
    alerts = eventually(lambda: erin.call(erin.alerts.ListAlerts, apb.ListAlertsRequest()).alerts, what="alert fired")
    rules = erin.call(erin.alerts.ListAlertRules, apb.ListAlertRulesRequest()).alert_rules
    end = timestamp_pb2.Timestamp(seconds=int(time.time()) + 3600)
    for _ in range(2):
        silence = apb.Silence(monitor_id=monitor.id, end_time=end, comment="paged")
        erin.call(erin.alerts.CreateSilence, apb.CreateSilenceRequest(silence=silence))

    full_rules = erin.call(erin.alerts.ListAlertRules, apb.ListAlertRulesRequest(page_size=len(rules)))
    full_alerts = erin.call(erin.alerts.ListAlerts, apb.ListAlertsRequest(page_size=len(alerts)))
    full_silences = erin.call(erin.alerts.ListSilences, apb.ListSilencesRequest(page_size=2))
    assert ([r.id for r in full_rules.alert_rules], full_rules.next_page_token) == ([r.id for r in rules], "")
    assert ([a.id for a in full_alerts.alerts], full_alerts.next_page_token) == ([a.id for a in alerts], "")
    assert (len(full_silences.silences), full_silences.next_page_token) == (2, "")


def is_up_below_one() -> common_pb2.AlertCondition:
    return common_pb2.AlertCondition(
        threshold=common_pb2.ThresholdCondition(
            field="is_up", operator=common_pb2.COMPARISON_OPERATOR_LESS_THAN, value=1
        )
    )


def test_an_unsaved_rule_is_tested_on_stored_data_then_saved_streamed_and_updated(alice: User) -> None:
    monitor = alice.heartbeat("tested")
    ping(monitor)
    unsaved = apb.TestAlertRuleRequest(alert_rule=apb.AlertRule(monitor_id=monitor.id, condition=is_up_below_one()))

    def tested(want: bool) -> apb.TestAlertRuleResponse | None:
        answer = alice.call(alice.alerts.TestAlertRule, unsaved)
        return answer if answer.evaluation.has_value and answer.would_fire is want else None

    calm = eventually(lambda: tested(False), what="the test to read the stored sample")
    assert (calm.evaluation.value, calm.evaluation.condition_met) == (1.0, False)
    ping(monitor, up=False)
    failing = eventually(lambda: tested(True), what="the test to read the failed check")
    assert failing.evaluation.value == 0.0
    assert "is_up" in failing.evaluation.explanation

    rule = alice.call(
        alice.alerts.CreateAlertRule,
        apb.CreateAlertRuleRequest(alert_rule=apb.AlertRule(monitor_id=monitor.id, condition=is_up_below_one())),
    ).alert_rule
    stream = alice.alerts.StreamEvaluations(
        apb.StreamEvaluationsRequest(rule_ids=[rule.id]), metadata=alice.key, timeout=30
    )
    seen: list[apb.StreamEvaluationsResponse] = []
    reader = threading.Thread(target=lambda: seen.extend(itertools.islice(stream, 1)), daemon=True)
    reader.start()
    time.sleep(0.3)
    ping(monitor)
    reader.join(timeout=15)
    stream.cancel()
    [first] = seen
    assert (first.evaluation.rule_id, first.evaluation.monitor_id) == (rule.id, monitor.id)
    assert first.evaluation.has_value
    assert not first.evaluation.condition_met

    updated = alice.call(
        alice.alerts.UpdateAlertRule,
        apb.UpdateAlertRuleRequest(
            alert_rule=apb.AlertRule(id=rule.id, display_name="renamed", severity=common_pb2.SEVERITY_INFO),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "severity"]),
        ),
    ).alert_rule
    assert (updated.display_name, updated.severity) == ("renamed", common_pb2.SEVERITY_INFO)
    assert updated.condition == rule.condition
    with pytest.raises(grpc.RpcError) as caught:
        alice.call(
            alice.alerts.UpdateAlertRule,
            apb.UpdateAlertRuleRequest(
                alert_rule=apb.AlertRule(id=rule.id), update_mask=field_mask_pb2.FieldMask(paths=["owner_id"])
            ),
        )
    assert "update_mask" in violations(caught.value)


def test_a_user_without_any_channel_is_emailed_at_their_account_address(stack: Stack) -> None:
    carol = User(stack, "carol.no.channels@example.com")
    monitor = carol.heartbeat("carol's backup")
    ping(monitor, up=False)
    outbox = stack.data_dir / "outbox.txt"

    def mailed() -> str | None:
        text = outbox.read_text() if outbox.exists() else ""
        mine = [block for block in text.split("\n\n") if "carol.no.channels@example.com" in block]
        return next((block for block in mine if "carol's backup" in block), None)

    message = eventually(mailed, what="an email to carol's address")
    assert "monitor is down" in message


def test_a_new_rule_judges_on_the_stored_history_at_once(alice: User) -> None:
    monitor = alice.heartbeat("history")
    for _ in range(3):
        ping(monitor)
    condition = common_pb2.AlertCondition(
        threshold=common_pb2.ThresholdCondition(
            field="is_up",
            aggregation=common_pb2.AGGREGATION_COUNT,
            window=duration_pb2.Duration(seconds=600),
            operator=common_pb2.COMPARISON_OPERATOR_GREATER_THAN_OR_EQUAL,
            value=3,
        )
    )
    draft = apb.AlertRule(monitor_id=monitor.id, condition=condition)

    def fires_unsaved() -> apb.TestAlertRuleResponse | None:
        tested = alice.call(alice.alerts.TestAlertRule, apb.TestAlertRuleRequest(alert_rule=draft))
        return tested if tested.would_fire else None

    unsaved = eventually(fires_unsaved, what="three stored samples")
    rule = alice.call(alice.alerts.CreateAlertRule, apb.CreateAlertRuleRequest(alert_rule=draft)).alert_rule
    saved = alice.call(alice.alerts.TestAlertRule, apb.TestAlertRuleRequest(rule_id=rule.id))
    # The saved rule's window was filled from the store when it was made: not one sample, not "no samples".
    assert (saved.would_fire, saved.evaluation.value) == (True, unsaved.evaluation.value)
    assert saved.evaluation.explanation == unsaved.evaluation.explanation


def test_a_test_without_a_rule_names_it_and_streams_per_user_are_capped(stack: Stack) -> None:
    dave = User(stack, "dave.streams@example.com")
    with pytest.raises(grpc.RpcError) as caught:
        dave.call(dave.alerts.TestAlertRule, apb.TestAlertRuleRequest())
    assert "rule_id" in violations(caught.value)
    opened = [dave.alerts.WatchAlerts(apb.WatchAlertsRequest(), metadata=dave.key, timeout=30) for _ in range(10)]
    try:
        time.sleep(0.5)  # the ten are open on the server
        refused = dave.alerts.WatchAlerts(apb.WatchAlertsRequest(), metadata=dave.key, timeout=10)
        with pytest.raises(grpc.RpcError) as caught:
            next(refused)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "streams" in (caught.value.details() or "")
        # Another user's streams are theirs to open.
        erin = User(stack, "erin.streams@example.com")
        mine = erin.alerts.WatchAlerts(apb.WatchAlertsRequest(include_open=True), metadata=erin.key, timeout=2)
        with pytest.raises(grpc.RpcError) as waited:
            next(mine)
        assert waited.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # open, and nothing to say yet
    finally:
        for stream in opened:
            stream.cancel()


def test_a_rule_may_name_only_its_owners_channels_and_a_deleted_one_falls_back_to_the_defaults(
    alice: User, bob: User, receivers: ProviderReceivers
) -> None:
    alices = alice.webhook(receivers, unique("alices-own"), default=False)
    monitor = bob.heartbeat("bob's job")
    condition = common_pb2.AlertCondition(monitor_down=common_pb2.MonitorDownCondition())
    for field in ("channel_ids", "escalation_channel_ids"):
        rule = apb.AlertRule(monitor_id=monitor.id, condition=condition)
        getattr(rule, field).append(alices.id)
        if field == "escalation_channel_ids":
            rule.escalate_after.FromSeconds(600)
        with pytest.raises(grpc.RpcError) as caught:
            bob.call(bob.alerts.CreateAlertRule, apb.CreateAlertRuleRequest(alert_rule=rule))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND, field
        assert alices.id in (caught.value.details() or "")

    defaults = unique("bob-defaults")
    bob.webhook(receivers, defaults)
    gone = bob.webhook(receivers, unique("bob-gone"), default=False)
    named = bob.call(
        bob.alerts.CreateAlertRule,
        apb.CreateAlertRuleRequest(
            alert_rule=apb.AlertRule(
                monitor_id=monitor.id,
                display_name="job failed",
                condition=is_up_below_one(),
                channel_ids=[gone.id],
            )
        ),
    ).alert_rule
    bob.call(bob.notify.DeleteChannel, npb.DeleteChannelRequest(id=gone.id))
    ping(monitor, up=False)
    # Both the default rule and the named one fire; the named rule's channel is gone, so its notice goes to
    # the default channel too instead of nowhere.
    received = receivers.wait_for(f"/webhook/{defaults}", 2)
    assert any("job failed" in json.dumps(json.loads(r.body)) for r in received)
    assert named.channel_ids == [gone.id]
