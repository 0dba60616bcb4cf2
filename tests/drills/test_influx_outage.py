"""Fault drill: InfluxDB down for a while under steady load.

A real runner checks the fleet's websites every second; a fifth of them fail from the start, so their rules
fire, and nothing changes after that. Each monitor has two rules: its last check failed, and no data for
NODATA_S (shorter than the outage, so a rule that took the outage's silence for a silent monitor would fire).
Once the alerts of the failing fifth fire, influxd is stopped for OUTAGE_S and started again. Then:

- every sample the monitor service recorded (its WatchMonitorEvents results) is in InfluxDB once it is back:
  those of the outage were buffered (on the spool) and flushed, and counted;
- while InfluxDB was down, the rules said "unknown" (TestAlertRule) within DETECT_BOUND_S and to the end, and
  StreamEvaluations carried no known evaluation;
- nothing fired or resolved: no alert transition from the steady state to the end, and the open alerts at the
  end are the ones open before (same ids), the failing fifth's "last check failed" alerts.

The short form (``make test``): 50 monitors, a 10 s outage, SQLite beside InfluxDB. ``make drills``
(MONITORS_DRILL=full): 1,000 monitors checked every 5 s, a 60 s outage, on MariaDB, Redis and InfluxDB.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from harness.external import InfluxDBServer, production_env
from harness.fleet import Fleet, RecordedResults, StreamReader, Targets, influx_counts
from harness.receivers import ProviderReceivers
from harness.services import Stack
from harness.waiting import eventually
from monitors.v1 import alert_service_pb2, alert_service_pb2_grpc, common_pb2

apb = alert_service_pb2
FULL = os.environ.get("MONITORS_DRILL") == "full"
pytestmark = pytest.mark.timeout(900 if FULL else 240)  # the full form runs for minutes
MONITORS = 1000 if FULL else 50
INTERVAL_S = 5 if FULL else 1
OUTAGE_S = 60.0 if FULL else 10.0
NODATA_S = 30 if FULL else 5
DETECT_BOUND_S = 10.0  # InfluxDB stops -> the rules say unknown
DATABASE = "drill_outage"


@pytest.fixture(scope="module")
def receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderReceivers]:
    with ProviderReceivers(tmp_path_factory.mktemp("outage-receivers")) as found:
        yield found


@pytest.fixture
def influxdb(tmp_path: Path) -> Iterator[InfluxDBServer]:
    """This drill's own influxd, since it stops it."""
    (tmp_path / "influxdb").mkdir()
    with InfluxDBServer(tmp_path / "influxdb") as server:
        yield server


@pytest.fixture
def stack(
    request: pytest.FixtureRequest, tmp_path: Path, receivers: ProviderReceivers, influxdb: InfluxDBServer
) -> Iterator[Stack]:
    env = {
        "MONITORS_EGRESS": "private-allowed",
        "MONITORS_CA_FILE": str(receivers.ca_file),
        "MONITORS_MIN_INTERVAL_S": "1",
        "MONITORS_MAX_RULES_PER_USER": "3000",  # a rule or two per monitor, 1,000 monitors in the full form
        "MONITORS_TIMESERIES_URL": f"influxdb://127.0.0.1:{influxdb.port}/{DATABASE}",
    }
    if FULL:
        mariadb, redis = (request.getfixturevalue(n) for n in ("mariadb", "redis_server"))
        env |= production_env(mariadb, redis, influxdb, DATABASE)
    with Stack(tmp_path / "stack", env) as found:
        yield found


def test_an_influxdb_outage_loses_no_sample_and_fires_or_resolves_nothing(
    stack: Stack, influxdb: InfluxDBServer, receivers: ProviderReceivers
) -> None:
    with Targets() as targets:
        targets.failing = set(range(MONITORS // 5))
        fleet = Fleet.create(stack, targets, receivers, f"outage-{os.getpid()}", MONITORS, INTERVAL_S)
        recorded = RecordedResults(stack)
        channel = grpc.insecure_channel(stack.address("alert"))
        stub = alert_service_pb2_grpc.AlertServiceStub(channel)
        evaluations: StreamReader[Any] = StreamReader(
            stub.StreamEvaluations(apb.StreamEvaluationsRequest(), metadata=fleet.key)
        )
        transitions: StreamReader[Any] = StreamReader(stub.WatchAlerts(apb.WatchAlertsRequest(), metadata=fleet.key))
        runner = stack.runner(f"outage-{os.getpid()}", MONITORS_EGRESS="private-allowed")
        runner.start()
        try:
            # The no-data rules once samples flow (before, they would rightly fire).
            eventually(lambda: len(recorded.counts()) == MONITORS, 60, what="every monitor checked")
            nodata = common_pb2.NoDataCondition(duration=duration_pb2.Duration(seconds=NODATA_S))
            nodata_rules = fleet.add_rules("no data", common_pb2.AlertCondition(no_data=nodata))
            failing_rules = {fleet.rules[n] for n in targets.failing}
            eventually(
                lambda: (
                    {a.rule_id for a in fleet.alerts() if a.state == common_pb2.ALERT_STATE_FIRING} == failing_rules
                ),
                60,
                what="the failing fifth's alerts fire",
            )
            time.sleep(max(3.0, 2 * INTERVAL_S))  # steady: every monitor checked again since
            before = {a.id: a.rule_id for a in fleet.alerts() if a.state != common_pb2.ALERT_STATE_RESOLVED}
            steady = time.time()

            influxdb.stop()
            stopped = time.time()
            # The rules say so: TestAlertRule evaluates a saved rule against what the service holds now.
            probed = [fleet.rules[0], fleet.rules[-1], nodata_rules[0], nodata_rules[-1]]

            def rules_unknown() -> bool:
                return all(
                    stub.TestAlertRule(
                        apb.TestAlertRuleRequest(rule_id=r), metadata=fleet.key, timeout=10
                    ).evaluation.unknown
                    for r in probed
                )

            eventually(rules_unknown, DETECT_BOUND_S, what="the rules say unknown while InfluxDB is down")
            unknown_after = time.time() - stopped
            time.sleep(max(0.0, stopped + OUTAGE_S - time.time()))
            still_unknown = rules_unknown()
            influxdb.start()
            started = time.time()

            # Back: the buffered samples are flushed, and evaluations are known again.
            def flushed() -> bool:
                counts = influx_counts(influxdb.url, DATABASE)
                return all(counts.get(m, 0) >= n for m, n in recorded.counts().items())

            eventually(flushed, 60, what="every recorded sample in InfluxDB")
            eventually(
                lambda: any(
                    at > started and not m.evaluation.unknown and m.evaluation.evaluation_time.seconds > started
                    for at, m in evaluations.items[-200:]
                ),
                60,
                what="known evaluations again",
            )
            time.sleep(max(3.0, 2 * INTERVAL_S))
            after = {a.id: a.rule_id for a in fleet.alerts() if a.state != common_pb2.ALERT_STATE_RESOLVED}
        finally:
            runner.stop()
        time.sleep(2.0)
        recorded.close()
        evaluations.close()
        transitions.close()
        channel.close()
        expected = recorded.counts()
        counts = influx_counts(influxdb.url, DATABASE)

    during = [at for at, _ in recorded.arrivals if stopped <= at <= started]
    known_during = [
        m.evaluation
        for at, m in evaluations.items
        if stopped + DETECT_BOUND_S <= at <= started and not m.evaluation.unknown
    ]
    moved = [
        (apb.AlertTransition.Name(m.transition), m.alert.rule_id, round(at - stopped, 1))
        for at, m in transitions.items
        if at > steady
    ]
    print(
        f"\nInfluxDB down {started - stopped:.1f}s: {len(during)} samples recorded meanwhile (buffered, then"
        f" flushed), {sum(expected.values())} recorded in all, {sum(counts.values())} in InfluxDB;"
        f" the rules said unknown {unknown_after:.1f}s after the stop;"
        f" transitions after the steady state: {len(moved)}; open alerts {len(before)} before, {len(after)} after"
    )
    assert during, "nothing was recorded during the outage: the drill buffered nothing"
    assert {m: counts.get(m, 0) for m in expected} == expected, "samples lost (or doubled) across the outage"
    assert still_unknown, "the rules said unknown for a while, but not to the outage's end"
    assert not known_during, f"known evaluations while InfluxDB was down: {known_during[:3]}"
    assert not moved, f"alerts moved across the outage: {moved[:10]}"
    assert after == before
    assert set(before.values()) == {fleet.rules[n] for n in range(MONITORS // 5)}
