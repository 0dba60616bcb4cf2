"""Fault drill: a StreamEvaluations and a WatchAlerts consumer that read nothing for a while.

A real runner checks the fleet's websites every second while the drill makes a share of them fail and recover
again and again. Two watchers of each stream are opened before the first check: a prompt one, and a slow one
whose client reads nothing for STALL_S (its HTTP/2 window fills, then the service's buffer of 1,000 for it),
then reads everything. The contract (service_runtime/streams.py): a slow reader costs the evaluator nothing;
its buffer keeps the newest, and the number dropped rides on the next item it reads. So:

- the prompt watchers keep up all along: each evaluation reaches the prompt watcher within a bound of its
  evaluation time, and the alerts fire and resolve while the slow ones stall;
- the slow ones lost only whole, counted items: what a slow one read is, in order, a part of what the prompt
  one read, and what it read plus the ``dropped`` counts it was told equals all the prompt one read;
- the slow StreamEvaluations did overflow (it was told of drops), so the drill tested the overflow.

The short form (``make test``): 50 monitors, 5 rules each, a 15 s stall, embedded. ``make drills``
(MONITORS_DRILL=full): 1,000 monitors with a rule each and a 40 s stall, on MariaDB, Redis and InfluxDB.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

import grpc
import pytest

from harness.external import production_env
from harness.fleet import Fleet, StreamReader, Targets
from harness.receivers import ProviderReceivers
from harness.services import Stack
from harness.waiting import eventually
from monitors.v1 import alert_service_pb2, alert_service_pb2_grpc, common_pb2

apb = alert_service_pb2
FULL = os.environ.get("MONITORS_DRILL") == "full"
pytestmark = pytest.mark.timeout(900 if FULL else 240)  # the full form runs for minutes
MONITORS = 1000 if FULL else 50
EXTRA_RULES = 0 if FULL else 4  # more rules per monitor: more evaluations a second, to overflow the slow buffer
INTERVAL_S = 5 if FULL else 1
STALL_S = 40.0 if FULL else 15.0
FLIP_EVERY_S = 3.0  # a fifth of the targets fail, then recover, then the next fifth...
LATENCY_P99_BOUND_S = 3.0  # a check's time -> the prompt watcher has its evaluation (the runner reports each second)
# The slow client's receive window is not grown (no BDP probing), so its buffers fill as they would on a slow
# link: about 64 KiB in flight, then the service's buffer.
SLOW_OPTIONS = [("grpc.http2.bdp_probe", 0)]


@pytest.fixture(scope="module")
def receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderReceivers]:
    with ProviderReceivers(tmp_path_factory.mktemp("slow-receivers")) as found:
        yield found


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path: Path, receivers: ProviderReceivers) -> Iterator[Stack]:
    env = {
        "MONITORS_EGRESS": "private-allowed",
        "MONITORS_CA_FILE": str(receivers.ca_file),
        "MONITORS_MIN_INTERVAL_S": "1",
        "MONITORS_MAX_RULES_PER_USER": "3000",  # a rule or two per monitor, 1,000 monitors in the full form
    }
    if FULL:
        mariadb, redis, influxdb = (request.getfixturevalue(n) for n in ("mariadb", "redis_server", "influxdb"))
        env |= production_env(mariadb, redis, influxdb, f"drill_slow_{os.getpid()}")
    with Stack(tmp_path / "stack", env) as found:
        yield found


def key(evaluation: apb.Evaluation) -> tuple[str, str, int, bool, bool]:
    return (
        evaluation.rule_id,
        evaluation.monitor_id,
        evaluation.evaluation_time.ToNanoseconds(),
        evaluation.condition_met,
        evaluation.unknown,
    )


def alert_key(change: apb.WatchAlertsResponse) -> tuple[int, str, int]:
    return (change.transition, change.alert.id, change.alert.update_time.ToNanoseconds())


def is_ordered_part(part: Sequence[object], whole: Sequence[object]) -> bool:
    """Whether ``part`` is ``whole`` with some items left out, in the same order."""
    items = iter(whole)
    return all(any(item == other for other in items) for item in part)


def test_a_slow_stream_reader_is_skipped_ahead_and_never_stalls_the_alert_service(
    stack: Stack, receivers: ProviderReceivers
) -> None:
    with Targets() as targets:
        fleet = Fleet.create(stack, targets, receivers, f"slow-{os.getpid()}", MONITORS, INTERVAL_S)
        for extra in range(EXTRA_RULES):
            threshold = common_pb2.ThresholdCondition(
                field="response_time_ms",
                aggregation=common_pb2.AGGREGATION_MEAN,
                operator=common_pb2.COMPARISON_OPERATOR_GREATER_THAN,
                value=5000 + extra,
            )
            fleet.add_rules(f"slow response {extra}", common_pb2.AlertCondition(threshold=threshold))

        with grpc.insecure_channel(stack.address("alert"), options=SLOW_OPTIONS) as slow_channel:
            prompt_stub = alert_service_pb2_grpc.AlertServiceStub(
                channel := grpc.insecure_channel(stack.address("alert"))
            )
            slow_stub = alert_service_pb2_grpc.AlertServiceStub(slow_channel)
            streams: dict[str, StreamReader[Any]] = {
                "prompt evaluations": StreamReader(
                    prompt_stub.StreamEvaluations(apb.StreamEvaluationsRequest(), metadata=fleet.key)
                ),
                "prompt alerts": StreamReader(prompt_stub.WatchAlerts(apb.WatchAlertsRequest(), metadata=fleet.key)),
                "slow evaluations": StreamReader(
                    slow_stub.StreamEvaluations(apb.StreamEvaluationsRequest(), metadata=fleet.key), STALL_S
                ),
                "slow alerts": StreamReader(
                    slow_stub.WatchAlerts(apb.WatchAlertsRequest(), metadata=fleet.key), STALL_S
                ),
            }
            time.sleep(1.0)  # every stream subscribed before the first sample
            runner = stack.runner(f"slow-{os.getpid()}", MONITORS_EGRESS="private-allowed")
            runner.start()
            try:
                stall_end = time.monotonic() + STALL_S
                flips = 0
                group = max(1, MONITORS // 5)
                while time.monotonic() < stall_end - FLIP_EVERY_S:
                    start = (flips * group) % MONITORS
                    targets.failing = set(range(start, start + group))
                    flips += 1
                    time.sleep(FLIP_EVERY_S)
                targets.failing = set()
                stalled = streams["prompt evaluations"].items[:]
                fired_while_stalled = sum(
                    1 for _, m in streams["prompt alerts"].items if m.transition == apb.ALERT_TRANSITION_FIRED
                )
                resolved_while_stalled = sum(
                    1 for _, m in streams["prompt alerts"].items if m.transition == apb.ALERT_TRANSITION_RESOLVED
                )
                # Everything recovers; then the checks stop, and every stream is read to its end.
                eventually(
                    lambda: not [a for a in fleet.alerts() if a.state != common_pb2.ALERT_STATE_RESOLVED],
                    30,
                    what="every alert resolved",
                )
            finally:
                runner.stop()
            time.sleep(3.0)  # the last evaluations reach every reader
            for name, reader in streams.items():
                assert reader.ended is None, f"{name} ended: {reader.ended}"
                reader.close()
            channel.close()

    prompt_evaluations = [m for _, m in streams["prompt evaluations"].items]
    slow_evaluations = [m for _, m in streams["slow evaluations"].items]
    prompt_alerts = [m for _, m in streams["prompt alerts"].items]
    slow_alerts = [m for _, m in streams["slow alerts"].items]
    assert sum(m.dropped for m in prompt_evaluations) == 0
    assert sum(m.dropped for m in prompt_alerts) == 0
    slow_dropped = sum(m.dropped for m in slow_evaluations)
    slow_alerts_dropped = sum(m.dropped for m in slow_alerts)

    # The prompt watchers kept up while the slow ones read nothing.
    latencies = sorted(arrival - m.evaluation.evaluation_time.ToDatetime(UTC).timestamp() for arrival, m in stalled)
    assert stalled, "no evaluation reached the prompt watcher while the slow one stalled"
    p99 = latencies[int(len(latencies) * 0.99)]
    expected_evaluations = MONITORS * (1 + EXTRA_RULES) * (STALL_S - 2) / INTERVAL_S
    print(
        f"\nwhile the slow readers stalled {STALL_S:g}s: {len(stalled)} evaluations reached the prompt watcher"
        f" (about {expected_evaluations:.0f} expected), p99 latency {p99:.3f}s, {fired_while_stalled} fired,"
        f" {resolved_while_stalled} resolved; slow evaluations read {len(slow_evaluations)} + dropped"
        f" {slow_dropped} = {len(slow_evaluations) + slow_dropped} of {len(prompt_evaluations)};"
        f" slow alerts read {len(slow_alerts)} + dropped {slow_alerts_dropped} of {len(prompt_alerts)}"
    )
    assert p99 <= LATENCY_P99_BOUND_S, latencies[-10:]
    assert len(stalled) >= 0.5 * expected_evaluations, (len(stalled), expected_evaluations)
    assert fired_while_stalled >= MONITORS // 5
    assert resolved_while_stalled >= MONITORS // 10

    # The slow ones skipped whole, counted items, and nothing else.
    assert slow_dropped > 0, "the slow StreamEvaluations never overflowed: the stall tested nothing"
    assert len(slow_evaluations) + slow_dropped == len(prompt_evaluations)
    assert is_ordered_part(
        [key(m.evaluation) for m in slow_evaluations], [key(m.evaluation) for m in prompt_evaluations]
    )
    assert len(slow_alerts) + slow_alerts_dropped == len(prompt_alerts)
    assert is_ordered_part([alert_key(m) for m in slow_alerts], [alert_key(m) for m in prompt_alerts])
