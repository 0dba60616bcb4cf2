"""Fault drill: MariaDB restarted, then Redis down, under steady load, in production mode.

The stack runs on this drill's own mariadbd and redis-server (it stops them) and the session's InfluxDB. A
real runner checks the fleet's websites every second; a user calls each service's reads all along (ListMonitors,
GetMonitor, ListAlerts, ListChannels, ListDeliveries). MariaDB is stopped and started again after DOWN_S; once
everything answers again, redis-server is stopped for DOWN_S and started again. Then:

- no process died: the three services and the runner are the processes started at the beginning;
- every failed call said why in words a user can act on: UNAVAILABLE (or a deadline), never INTERNAL, and
  never a traceback or a driver's message (pymysql, sqlalchemy, redis);
- each service answers again within RECOVER_BOUND_S of its store's return, with nothing restarted;
- the pipeline works after both: a target that starts failing then fires its alert, and the webhook has it.

The short form (``make test``): 50 monitors, each store down 5 s. ``make drills`` (MONITORS_DRILL=full):
1,000 monitors, each store down 30 s.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest

from harness.external import TEMPLATE_CACHE, InfluxDBServer, MariaDBServer, RedisServer, production_env
from harness.fleet import Fleet, Targets
from harness.receivers import ProviderReceivers
from harness.services import Stack
from harness.waiting import eventually
from monitors.v1 import (
    alert_service_pb2,
    alert_service_pb2_grpc,
    monitor_service_pb2,
    monitor_service_pb2_grpc,
    notification_service_pb2,
    notification_service_pb2_grpc,
)

FULL = os.environ.get("MONITORS_DRILL") == "full"
pytestmark = pytest.mark.timeout(900 if FULL else 240)  # the full form runs for minutes
MONITORS = 1000 if FULL else 50
INTERVAL_S = 5 if FULL else 1
DOWN_S = 30.0 if FULL else 5.0
RECOVER_BOUND_S = 30.0  # a store back -> every service answers again
CALL_TIMEOUT_S = 5.0
LEAKS = ("Traceback", "pymysql", "sqlalchemy", "redis.exceptions", "OperationalError", 'File "')


@pytest.fixture(scope="module")
def receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderReceivers]:
    with ProviderReceivers(tmp_path_factory.mktemp("store-receivers")) as found:
        yield found


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[MariaDBServer, RedisServer]]:
    """This drill's own mariadbd and redis-server, since it stops them."""
    (tmp_path / "mariadb").mkdir()
    (tmp_path / "redis").mkdir()
    with MariaDBServer(tmp_path / "mariadb", TEMPLATE_CACHE) as mariadb, RedisServer(tmp_path / "redis") as redis:
        yield mariadb, redis


@pytest.fixture
def stack(
    tmp_path: Path,
    receivers: ProviderReceivers,
    stores: tuple[MariaDBServer, RedisServer],
    influxdb: InfluxDBServer,
) -> Iterator[Stack]:
    env = {
        "MONITORS_EGRESS": "private-allowed",
        "MONITORS_CA_FILE": str(receivers.ca_file),
        "MONITORS_MIN_INTERVAL_S": "1",
        "MONITORS_MAX_RULES_PER_USER": "3000",  # a rule or two per monitor, 1,000 monitors in the full form
        "MONITORS_ALERT_LEASE_S": "3",
        **production_env(*stores, influxdb, f"drill_stores_{os.getpid()}"),
    }
    with Stack(tmp_path / "stack", env) as found:
        yield found


@dataclass
class Caller:
    """Calls each service's reads in turn, all along, as a user's dashboard would; keeps every answer."""

    calls: dict[str, Callable[[], Any]]
    answers: list[tuple[float, str, grpc.StatusCode, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            for name, call in self.calls.items():
                try:
                    call()
                    self.answers.append((time.monotonic(), name, grpc.StatusCode.OK, ""))
                except grpc.RpcError as error:
                    self.answers.append((time.monotonic(), name, error.code(), str(error.details())))
            time.sleep(0.2)

    def all_ok_since(self, moment: float) -> bool:
        """Each call answered OK at least twice since ``moment``, its latest answer OK too."""
        latest: dict[str, grpc.StatusCode] = {}
        oks: Counter[str] = Counter()
        for at, name, code, _ in self.answers[:]:
            if at >= moment:
                latest[name] = code
                oks[name] += code == grpc.StatusCode.OK
        return all(latest.get(name) == grpc.StatusCode.OK and oks[name] >= 2 for name in self.calls)


def test_the_services_degrade_clearly_and_recover_alone_from_a_mariadb_restart_and_a_redis_outage(
    stack: Stack, stores: tuple[MariaDBServer, RedisServer], receivers: ProviderReceivers
) -> None:
    mariadb, redis = stores
    with Targets() as targets:
        fleet = Fleet.create(stack, targets, receivers, f"stores-{os.getpid()}", MONITORS, INTERVAL_S)
        runner = stack.runner(f"stores-{os.getpid()}", MONITORS_EGRESS="private-allowed")
        runner.start()
        processes = {name: service.process for name, service in stack.services.items()} | {"runner": runner.process}
        channels = [grpc.insecure_channel(stack.address(name)) for name in ("monitor", "alert", "notify")]
        monitors = monitor_service_pb2_grpc.MonitorServiceStub(channels[0])
        alerts = alert_service_pb2_grpc.AlertServiceStub(channels[1])
        notify = notification_service_pb2_grpc.NotificationServiceStub(channels[2])
        key, t = fleet.key, CALL_TIMEOUT_S
        caller = Caller(
            {
                "ListMonitors": lambda: monitors.ListMonitors(
                    monitor_service_pb2.ListMonitorsRequest(page_size=10), metadata=key, timeout=t
                ),
                "GetMonitor": lambda: monitors.GetMonitor(
                    monitor_service_pb2.GetMonitorRequest(id=fleet.monitors[0]), metadata=key, timeout=t
                ),
                "ListAlerts": lambda: alerts.ListAlerts(
                    alert_service_pb2.ListAlertsRequest(page_size=10), metadata=key, timeout=t
                ),
                "ListChannels": lambda: notify.ListChannels(
                    notification_service_pb2.ListChannelsRequest(), metadata=key, timeout=t
                ),
                "ListDeliveries": lambda: notify.ListDeliveries(
                    notification_service_pb2.ListDeliveriesRequest(page_size=10), metadata=key, timeout=t
                ),
            }
        )
        thread = threading.Thread(target=caller.run, daemon=True)
        thread.start()
        recovered: dict[str, float] = {}
        try:
            eventually(lambda: caller.all_ok_since(time.monotonic() - 1), 30, what="every call answers at first")
            for store in (mariadb, redis):
                store.stop()
                time.sleep(DOWN_S)
                store.start()
                back = time.monotonic()
                eventually(
                    partial(caller.all_ok_since, back), RECOVER_BOUND_S, what=f"every call answers after {store.name}"
                )
                recovered[store.name] = time.monotonic() - back

            # The whole pipeline works after both: a target fails, its alert fires and reaches the webhook.
            targets.failing = {1}
            eventually(
                lambda: [a for a in fleet.alerts() if a.rule_id == fleet.rules[1]],
                30,
                what="an alert after the outages",
            )
            eventually(
                lambda: [r for r in receivers.received(fleet.channel_path) if r.json.get("rule_id") == fleet.rules[1]],
                30,
                what="its notification at the webhook",
            )
        finally:
            caller.stop.set()
            thread.join(timeout=30)
            alive = {name: process is not None and process.poll() is None for name, process in processes.items()}
            runner.stop()
            for channel in channels:
                channel.close()

    failures = Counter((name, code.name) for _, name, code, _ in caller.answers if code != grpc.StatusCode.OK)
    print(
        f"\n{len(caller.answers)} calls, failed: {dict(failures)}; every call answered again"
        f" {', '.join(f'{k} {v:.1f}s' for k, v in recovered.items())} after the store came back"
    )
    assert alive == dict.fromkeys(processes, True), f"processes died: {alive}"
    assert all(service.process is processes[name] for name, service in stack.services.items())
    unclear = [
        (name, code.name, details)
        for _, name, code, details in caller.answers
        if code not in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        or any(leak in details for leak in LEAKS)
    ]
    assert not unclear, f"unclear errors: {sorted(set(unclear))[:10]}"
    assert failures, "no call failed: the outages tested nothing"
