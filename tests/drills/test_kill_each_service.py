"""Fault drill: each process killed (SIGKILL) in turn under steady load: the monitor service, the alert service,
the notification service, the runner.

A real runner checks the fleet's websites every INTERVAL_S; each monitor has one rule (its last check failed)
to one webhook channel. For each process in turn, a fifth of the targets (another fifth each time) starts
failing, the process is killed half a second later and started again after DOWN_S, and the fifth recovers
EPISODE_S after it began failing (at least AFTER_RESTART_S after the restart). Then:

- every alert that should have fired fired, once: each monitor of each failing fifth has exactly one alert for
  its episode, resolved after it; no other monitor has one;
- each notification reached the channel exactly once: per alert, one firing and one resolved notification,
  each one delivery (a delivery POSTed again because a kill caught it in flight keeps its X-Monitors-Delivery
  id, by which a receiver drops it: counted and reported);
- no sample was lost beyond the runner's buffer at its kill: every check the targets answered is a sample in
  the time-series store, but for at most the results the killed runner held unsent (its one-second report
  batch and the checks in flight), counted.

The short form (``make test``): 50 monitors checked every second, embedded. ``make drills``
(MONITORS_DRILL=full): 1,000 monitors checked every 5 s, on MariaDB, Redis and InfluxDB.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from harness.external import production_env
from harness.fleet import Fleet, Targets, influx_counts
from harness.receivers import ProviderReceivers
from harness.services import ServiceProcess, Stack
from harness.waiting import eventually
from monitors.v1 import common_pb2

FULL = os.environ.get("MONITORS_DRILL") == "full"
pytestmark = pytest.mark.timeout(900 if FULL else 240)  # the full form runs for minutes
MONITORS = 1000 if FULL else 50
INTERVAL_S = 5 if FULL else 1
EPISODE_S = 30.0 if FULL else 8.0  # a fifth fails at least this long, the kill and restart within it
AFTER_RESTART_S = 3 * INTERVAL_S + 2.0  # and at least this long after the killed process is back
RECOVER_S = 15.0 if FULL else 5.0
DOWN_S = 1.0
KILLED = ("monitor", "alert", "notify", "runner")
REPORT_EVERY_S = 1.0  # the runner's report batch: what a killed runner may lose
DATABASE = f"drill_kill_{os.getpid()}"


@pytest.fixture(scope="module")
def receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderReceivers]:
    with ProviderReceivers(tmp_path_factory.mktemp("kill-receivers")) as found:
        yield found


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, receivers: ProviderReceivers
) -> Iterator[Stack]:
    """One stack for both tests (each its own user): a stack takes a loaded machine half a minute to start."""
    env = {
        "MONITORS_EGRESS": "private-allowed",
        "MONITORS_CA_FILE": str(receivers.ca_file),
        "MONITORS_MIN_INTERVAL_S": "1",
        "MONITORS_MAX_RULES_PER_USER": "3000",  # a rule or two per monitor, 1,000 monitors in the full form
        "MONITORS_NOTIFY_TIMEOUT_S": "3",
        "MONITORS_ALERT_LEASE_S": "3",
    }
    if FULL:
        mariadb, redis, influxdb = (request.getfixturevalue(n) for n in ("mariadb", "redis_server", "influxdb"))
        env |= production_env(mariadb, redis, influxdb, DATABASE)
    with Stack(tmp_path_factory.mktemp("kill-stack"), env) as found:
        yield found


def stored_samples(stack: Stack) -> dict[str, int]:
    """Samples per monitor in the stack's time-series store."""
    if FULL:
        url = stack.env["MONITORS_TIMESERIES_URL"].replace("influxdb://", "http://").rsplit("/", 1)[0]
        return influx_counts(url, DATABASE)
    with sqlite3.connect(f"file:{stack.data_dir / 'timeseries.sqlite3'}?mode=ro", uri=True) as db:
        return dict(db.execute("SELECT monitor_id, count(*) FROM samples GROUP BY monitor_id").fetchall())


def failed_samples(stack: Stack) -> dict[str, int]:
    """Samples of failed checks per monitor in the stack's time-series store."""
    if FULL:
        url = stack.env["MONITORS_TIMESERIES_URL"].replace("influxdb://", "http://").rsplit("/", 1)[0]
        return influx_counts(url, DATABASE, "is_up = 0")
    with sqlite3.connect(f"file:{stack.data_dir / 'timeseries.sqlite3'}?mode=ro", uri=True) as db:
        query = "SELECT monitor_id, count(*) FROM samples WHERE json_extract(fields, '$.is_up') = 0 GROUP BY monitor_id"
        return dict(db.execute(query).fetchall())


def test_killing_each_process_in_turn_loses_no_alert_notification_or_sample(
    stack: Stack, receivers: ProviderReceivers
) -> None:
    with Targets() as targets:
        fleet = Fleet.create(stack, targets, receivers, f"kill-{os.getpid()}", MONITORS, INTERVAL_S)
        runner = stack.runner(f"kill-{os.getpid()}", MONITORS_EGRESS="private-allowed")
        runner.start()
        processes: dict[str, ServiceProcess] = {**stack.services, "runner": runner}
        group = MONITORS // 5
        episodes: dict[str, tuple[set[int], float, float]] = {}
        try:
            time.sleep(2 * INTERVAL_S + 1)  # every monitor checked, up
            for phase, name in enumerate(KILLED):
                failing = set(range(phase * group, (phase + 1) * group))
                targets.failing = failing
                began = time.time()
                time.sleep(0.5)
                process = processes[name]
                assert process.process is not None
                process.process.kill()
                process.process.wait(timeout=10)
                time.sleep(DOWN_S)
                process.start(timeout_s=60)
                # Failing on for a while after the restart (on a loaded machine a restart takes up to 20 s): this
                # drill's alerts are of episodes the restarted process sees. One that begins and ends while the
                # alert service is down is the next test's.
                time.sleep(max(AFTER_RESTART_S, began + EPISODE_S - time.time()))
                targets.failing = set()
                episodes[name] = (failing, began, time.time())
                time.sleep(RECOVER_S)

            failed_rules = {fleet.rules[n] for failing, _, _ in episodes.values() for n in failing}

            def settled() -> bool:
                alerts = fleet.alerts()
                return {a.rule_id for a in alerts} >= failed_rules and all(
                    a.state == common_pb2.ALERT_STATE_RESOLVED for a in alerts
                )

            eventually(settled, 60, what="every episode's alert fired and resolved")
        finally:
            runner.stop()
        hits = dict(targets.hits_by_target)

    alerts = fleet.alerts()
    by_rule: dict[str, list[str]] = defaultdict(list)
    for alert in alerts:
        by_rule[alert.rule_id].append(alert.id)
    expected_rules = {fleet.rules[n]: name for name, (failing, _, _) in episodes.items() for n in failing}
    missing = {name for rule, name in expected_rules.items() if rule not in by_rule}
    split = Counter(expected_rules.get(rule, "none") for rule, ids in by_rule.items() if len(ids) != 1)
    unexpected = [rule for rule in by_rule if rule not in expected_rules]

    # Notifications: each delivery once (a POST repeated with its X-Monitors-Delivery id is the same one), each
    # alone (alert_id set) or a storm's summary ("10 alerts firing: name, name...", names up to 20).
    names = {alert.id: alert.monitor_name for alert in alerts}
    wanted = Counter((name, kind) for name in names.values() for kind in ("alert_firing", "alert_resolved"))
    per_kind = {"alert_firing": len(alerts), "alert_resolved": len(alerts)}

    def delivered() -> tuple[Counter[tuple[str, str]], Counter[str], int]:
        bodies: dict[str, Any] = {}
        reposted = 0
        for received in receivers.received(fleet.channel_path):
            delivery_id = received.headers.get("x-monitors-delivery", "")
            reposted += delivery_id in bodies
            bodies[delivery_id] = received.json
        listed: Counter[tuple[str, str]] = Counter()
        counted: Counter[str] = Counter()
        for body in bodies.values():
            if body["alert_id"]:
                listed[(names.get(body["alert_id"], body["alert_id"]), body["kind"])] += 1
                counted[body["kind"]] += 1
            else:
                count, _, shown = body["summary"].partition(" alerts ")
                listed.update((name, body["kind"]) for name in shown.split(": ", 1)[1].split(" and ")[0].split(", "))
                counted[body["kind"]] += int(count)
        return listed, counted, reposted

    deadline = time.monotonic() + 60
    while any(delivered()[1][kind] < n for kind, n in per_kind.items()) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)  # one more would come within this
    listed, counted, reposted = delivered()
    twice = {key: n for key, n in listed.items() if n > 1}

    # Samples: every check the targets answered, in the store, but what the killed runner held unsent.
    stored = stored_samples(stack)
    checks = sum(hits.values())
    samples = sum(stored.get(monitor_id, 0) for monitor_id in fleet.monitors)
    lost = checks - samples
    runner_buffer = MONITORS * (REPORT_EVERY_S / INTERVAL_S + 1)
    print(
        f"\nkilled {', '.join(KILLED)}: {len(alerts)} alerts for {len(expected_rules)} failing monitors"
        f" ({len(missing)} phases missing alerts, {sum(split.values())} monitors with more than one,"
        f" {len(unexpected)} unexpected); notified {dict(counted)} (in {len(receivers.received(fleet.channel_path))}"
        f" POSTs, {reposted} of them repeating a delivery id);"
        f" {checks} checks answered, {samples} samples stored, {lost} lost (runner buffer at its kill:"
        f" at most {runner_buffer:.0f})"
    )
    assert not missing, f"no alert for the episodes of {missing}"
    assert not split, f"monitors with more than one alert for their episode, by killed process: {dict(split)}"
    assert not unexpected, f"alerts of monitors that never failed: {len(unexpected)}"
    assert counted == per_kind, f"notified alerts by kind {dict(counted)}, alerts {len(alerts)}"
    assert not twice, f"notified more than once: {sorted(twice)[:10]}"
    assert set(listed) <= set(wanted), sorted(set(listed) - set(wanted))[:10]
    if MONITORS // 5 <= 20:  # every name is listed: each alert's firing and resolved, once
        assert listed == wanted
    assert 0 <= lost <= runner_buffer, f"{lost} samples lost; the runner held at most {runner_buffer:.0f}"


class MissedEpisode(AssertionError):
    """A failure the monitor service recorded that no alert was raised for."""


@pytest.mark.xfail(
    raises=MissedEpisode,
    strict=True,
    reason=(
        "an alert service started after an outage judges its rules on the latest samples only (the warm start and"
        " the reconciliation evaluate now): a failure that began and ended while it was down (or while its feed"
        " was reconnecting, up to a monitor service's restart) is recorded as DOWN then UP and never alerted;"
        " the missed samples must be replayed in order"
    ),
)
def test_a_failure_recorded_while_the_alert_service_was_down_is_alerted_after_its_restart(
    stack: Stack, receivers: ProviderReceivers
) -> None:
    with Targets() as targets:
        fleet = Fleet.create(stack, targets, receivers, f"gap-{os.getpid()}", 10, 1)
        runner = stack.runner(f"gap-{os.getpid()}", MONITORS_EGRESS="private-allowed")
        runner.start()
        try:
            time.sleep(3.0)  # every monitor checked, up
            alert = stack.services["alert"]
            assert alert.process is not None
            alert.process.kill()
            alert.process.wait(timeout=10)
            targets.failing = set(range(5))
            time.sleep(5.0)  # five failed checks each, recorded
            targets.failing = set()
            time.sleep(3.0)  # up again, recorded
            alert.start(timeout_s=60)
            time.sleep(10.0)  # the warm start, and whatever it would fire and resolve
        finally:
            runner.stop()
    down = {m: n for m, n in failed_samples(stack).items() if m in fleet.monitors}
    assert {fleet.monitors.index(m) for m in down} == set(range(5)), "the failures were not recorded"
    alerted = {alert.rule_id for alert in fleet.alerts()}
    missed = [n for n in range(5) if fleet.rules[n] not in alerted]
    if missed:
        raise MissedEpisode(f"monitors {missed} recorded {[down[fleet.monitors[n]] for n in missed]} failed checks")
