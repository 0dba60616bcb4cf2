"""Several alert-service replicas: one leader evaluates every rule, standbys forward calls to it, and when the
leader dies a standby takes over within about one lease period.

First the lease itself (:class:`Leadership` on the in-process store, short leases): who leads, renewal, losing
the lease, stepping down before it can expire. Then two real alert-service processes on MariaDB, Redis and
InfluxDB with a monitor and a notification service, heartbeat monitors pinged over HTTP and a real webhook
receiver, and the leader killed with SIGKILL mid-run.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
import pytest
import redis
from google.protobuf import duration_pb2

from harness.alerting import ping
from harness.external import InfluxDBServer, MariaDBServer, RedisServer, production_env
from harness.receivers import ProviderReceivers
from harness.rpc import auth
from harness.services import ServiceProcess, Stack
from monitors.v1 import (
    alert_service_pb2,
    alert_service_pb2_grpc,
    common_pb2,
    monitor_service_pb2,
    monitor_service_pb2_grpc,
    notification_service_pb2,
    notification_service_pb2_grpc,
)
from service_runtime.cache import InProcessStore
from services.alert_svc.leadership import Holder, Leadership
from services.alert_svc.server import lease_key

apb = alert_service_pb2
mpb = monitor_service_pb2
npb = notification_service_pb2

LEASE_S = 0.6
KEY = "alert:leader:test"


@dataclass
class Candidate:
    """A replica in miniature: its leadership, and the spans (start, end) of the terms it led."""

    name: str
    leadership: Leadership
    terms: list[list[float]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @property
    def leads(self) -> bool:
        return self.leadership.is_leader


class FlakyStore(InProcessStore):
    """A view of a shared in-process store that can be cut off (the store out of reach for one replica)."""

    def __init__(self, shared: InProcessStore) -> None:
        super().__init__()
        self._shared = shared
        self.unreachable = False

    def _reach(self) -> None:
        if self.unreachable:
            raise ConnectionError("store unreachable")

    async def get(self, key: str) -> str | None:
        self._reach()
        return await self._shared.get(key)

    async def set(
        self,
        key: str,
        value: str,
        ttl_s: float | None = None,
        *,
        only_if_absent: bool = False,
        only_if_present: bool = False,
    ) -> bool:
        self._reach()
        return await self._shared.set(key, value, ttl_s, only_if_absent=only_if_absent, only_if_present=only_if_present)

    async def renew(self, key: str, value: str, ttl_s: float) -> bool:
        self._reach()
        return await self._shared.renew(key, value, ttl_s)


def candidate(name: str, store: InProcessStore) -> Candidate:
    spans: list[list[float]] = []

    async def lead() -> None:
        spans.append([time.monotonic(), float("inf")])
        try:
            await asyncio.Event().wait()
        finally:
            spans[-1][1] = time.monotonic()

    found = Candidate(name, Leadership(store, KEY, Holder.new(f"127.0.0.1:{name}"), lead, lease_s=LEASE_S), spans)
    found.task = asyncio.create_task(found.leadership.run())
    return found


async def until(check: object, timeout_s: float = 5.0) -> float:
    """Seconds until ``check()`` holds."""
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s}s")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


def never_overlap(*candidates: Candidate) -> None:
    spans = sorted(span for c in candidates for span in c.terms)
    for before, after in itertools.pairwise(spans):
        assert before[1] <= after[0], f"two leaders at once: {spans}"


@pytest.fixture
async def shared() -> AsyncIterator[InProcessStore]:
    store = InProcessStore()
    yield store
    await store.close()


async def stop(*candidates: Candidate) -> None:
    for c in candidates:
        assert c.task is not None
        c.task.cancel()
    await asyncio.gather(*(c.task for c in candidates if c.task is not None), return_exceptions=True)


async def test_one_candidate_leads_and_keeps_leading_while_the_other_knows_where(shared: InProcessStore) -> None:
    a = candidate("a", shared)
    await until(lambda: a.leads)
    b = candidate("b", shared)
    await until(lambda: b.leadership.standby_target is not None)
    await asyncio.sleep(LEASE_S * 4)  # renewals keep the lease through four of its lengths
    assert a.leads
    assert not b.leads
    assert a.leadership.terms == 1
    assert len(a.terms) == 1
    assert a.terms[0][1] == float("inf")
    assert b.terms == []
    assert b.leadership.standby_target == "127.0.0.1:a"
    assert a.leadership.standby_target is None
    await stop(a, b)


async def test_a_dead_leaders_lease_moves_within_one_lease_period(shared: InProcessStore) -> None:
    a = candidate("a", shared)
    await until(lambda: a.leads)
    b = candidate("b", shared)
    await until(lambda: b.leadership.standby_target is not None)
    assert a.task is not None
    a.task.cancel()  # dies without handing the lease back
    died = time.monotonic()
    await until(lambda: b.leads)
    took = time.monotonic() - died
    # The lease runs out (at most a lease after the last renewal), then the standby's next round takes it.
    assert took <= LEASE_S * 4 / 3 + 0.2, took
    assert took >= LEASE_S / 3, took  # not before the dead leader's lease could have expired
    never_overlap(a, b)
    await stop(b)


async def test_a_leader_that_cannot_renew_steps_down_before_its_lease_expires(shared: InProcessStore) -> None:
    flaky = FlakyStore(shared)
    a = candidate("a", flaky)
    await until(lambda: a.leads)
    b = candidate("b", shared)
    await until(lambda: b.leadership.standby_target is not None)
    flaky.unreachable = True
    cut = time.monotonic()
    await until(lambda: not a.leads and a.terms[0][1] != float("inf"))  # its work cancelled too
    stepped_down = time.monotonic() - cut
    assert stepped_down <= LEASE_S * 2 / 3 + 0.25, stepped_down  # slack for a loaded machine's event loop
    await until(lambda: b.leads)
    never_overlap(a, b)  # b began only after a's work had stopped
    await stop(a, b)


async def test_a_leader_whose_lease_was_taken_steps_down_at_its_next_renewal(shared: InProcessStore) -> None:
    a = candidate("a", shared)
    await until(lambda: a.leads)
    await shared.set(KEY, Holder("rep_other", "127.0.0.1:other").encode(), LEASE_S * 10)
    assert await until(lambda: not a.leads) <= LEASE_S / 3 + 0.1
    await until(lambda: a.leadership.standby_target == "127.0.0.1:other")
    await stop(a)


async def test_a_released_lease_is_taken_at_the_next_round(
    shared: InProcessStore, caplog: pytest.LogCaptureFixture
) -> None:
    a = candidate("a", shared)
    await until(lambda: a.leads)
    b = candidate("b", shared)
    await until(lambda: b.leadership.standby_target is not None)
    with caplog.at_level(logging.INFO, logger="services.alert_svc.leadership"):
        await a.leadership.release()
    assert not a.leads
    # Released at a stop (Ctrl-C of make run) is the plan: said at INFO, not as a warning.
    [stepped] = [r for r in caplog.records if r.getMessage() == "no longer leading the alert service"]
    assert stepped.levelno == logging.INFO
    assert a.terms[0][1] != float("inf")
    assert await until(lambda: b.leads) <= LEASE_S / 3 + 0.1
    await asyncio.sleep(LEASE_S)
    assert not a.leads  # a released replica does not campaign again
    never_overlap(a, b)
    await stop(a, b)


# --- two real replicas -----------------------------------------------------------------------------------

REPLICA_LEASE_S = 3.0


class Tenant:
    """One account, with its own webhook (its default channel), one heartbeat monitor, and AlertService stubs
    on both replicas."""

    def __init__(self, stack: Stack, receivers: ProviderReceivers, replicas: dict[str, str], n: int) -> None:
        self.key = auth(stack.create_api_key(f"tenant{n}.replicas@example.com"))
        self.hook = f"replicas-{n}"
        self.alerts = {
            name: alert_service_pb2_grpc.AlertServiceStub(grpc.insecure_channel(address))
            for name, address in replicas.items()
        }
        monitors = monitor_service_pb2_grpc.MonitorServiceStub(grpc.insecure_channel(stack.address("monitor")))
        notify = notification_service_pb2_grpc.NotificationServiceStub(grpc.insecure_channel(stack.address("notify")))
        channel = npb.Channel(
            display_name=self.hook, webhook=npb.WebhookConfig(url=receivers.url("webhook", self.hook)), is_default=True
        )
        notify.CreateChannel(npb.CreateChannelRequest(channel=channel), metadata=self.key, timeout=10)
        spec = common_pb2.MonitorSpec(
            heartbeat=common_pb2.HeartbeatSpec(grace_period=duration_pb2.Duration(seconds=600))
        )
        monitor = mpb.Monitor(spec=spec, interval=duration_pb2.Duration(seconds=600), display_name=f"job {n}")
        self.monitor = monitors.CreateMonitor(
            mpb.CreateMonitorRequest(monitor=monitor), metadata=self.key, timeout=10
        ).monitor

    def ping(self, up: bool) -> None:
        ping(self.monitor, up)

    def alerts_on(self, replica: str) -> list[apb.Alert]:
        """This tenant's alerts, asked of ``replica`` (retried while it answers UNAVAILABLE: no leader yet)."""

        def ask() -> list[apb.Alert] | None:
            try:
                reply = self.alerts[replica].ListAlerts(apb.ListAlertsRequest(), metadata=self.key, timeout=5)
            except grpc.RpcError as error:
                if error.code() is grpc.StatusCode.UNAVAILABLE:
                    return None
                raise
            return list(reply.alerts)

        return wait_until(ask, what=f"ListAlerts on {replica}")

    def notices(self, receivers: ProviderReceivers) -> list[tuple[str, str]]:
        """(alert id, kind) of every webhook call this tenant received."""
        return [(r.json["alert_id"], r.json["kind"]) for r in receivers.received(f"/webhook/{self.hook}")]


T = TypeVar("T")


def wait_until(check: Callable[[], T | None], timeout_s: float = 30.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s}s")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderReceivers]:
    with ProviderReceivers(tmp_path_factory.mktemp("receivers")) as found:
        yield found


@pytest.fixture(scope="module")
def replicated(
    tmp_path_factory: pytest.TempPathFactory,
    receivers: ProviderReceivers,
    mariadb: MariaDBServer,
    redis_server: RedisServer,
    influxdb: InfluxDBServer,
) -> Iterator[tuple[Stack, ServiceProcess]]:
    """A production stack (MariaDB, Redis, InfluxDB) whose alert service has a second replica, on a 3 s lease."""
    env = {
        "MONITORS_EGRESS": "private-allowed",
        "MONITORS_CA_FILE": str(receivers.ca_file),
        "MONITORS_MIN_INTERVAL_S": "1",
        "MONITORS_NOTIFY_TIMEOUT_S": "3",
        "MONITORS_ALERT_LEASE_S": str(REPLICA_LEASE_S),
        **production_env(mariadb, redis_server, influxdb, "replicas"),
    }
    with Stack(tmp_path_factory.mktemp("replicas"), env) as stack:
        standby = stack.alert_replica("b")
        standby.start()
        try:
            yield stack, standby
        finally:
            standby.stop()


def lease_holder(stack: Stack) -> str | None:
    """The address the alert-service lease names right now (None: nobody holds it)."""
    with redis.Redis.from_url(stack.env["MONITORS_REDIS_URL"], decode_responses=True, socket_timeout=2) as client:
        holder = Holder.decode(client.get("monitors:" + lease_key(stack.env["MONITORS_DATABASE_URL"])))
    return holder.address if holder is not None else None


def test_when_the_leader_is_killed_its_standby_takes_over_and_every_alert_is_heard_once(
    replicated: tuple[Stack, ServiceProcess], receivers: ProviderReceivers
) -> None:
    stack, standby = replicated
    leader = stack.services["alert"]
    replicas = {"a": leader.address, "b": standby.address}
    assert lease_holder(stack) == leader.address  # the first replica started leads; b is its standby
    tenants = [Tenant(stack, receivers, replicas, n) for n in range(6)]
    for tenant in tenants:
        tenant.ping(up=True)
    # Both replicas answer, the standby by forwarding (with the caller's key: each sees only its own).
    for tenant in tenants:
        rules = {
            name: tenant.alerts[name].ListAlertRules(apb.ListAlertRulesRequest(), metadata=tenant.key, timeout=10)
            for name in replicas
        }
        assert rules["a"] == rules["b"]
        assert [r.is_default for r in rules["b"].alert_rules] == [True]
    with pytest.raises(grpc.RpcError) as refused:
        tenants[0].alerts["b"].ListAlerts(apb.ListAlertsRequest(), timeout=10)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED  # the leader's verdict, relayed

    def heard(tenant: Tenant, count: int) -> list[tuple[str, str]]:
        def enough() -> list[tuple[str, str]] | None:
            found = tenant.notices(receivers)
            return found if len(found) >= count else None

        return wait_until(enough, what=f"{count} notices on {tenant.hook}")

    # Before: three monitors go down, one comes back; a standby's forwarded WatchAlerts streams it.
    watch = tenants[0].alerts["b"].WatchAlerts(apb.WatchAlertsRequest(), metadata=tenants[0].key, timeout=60)
    for tenant in tenants[:3]:
        tenant.ping(up=False)
    for tenant in tenants[:3]:
        heard(tenant, 1)
    tenants[0].ping(up=True)
    heard(tenants[0], 2)
    streamed = [next(watch).transition for _ in range(2)]
    watch.cancel()
    assert streamed == [apb.ALERT_TRANSITION_FIRED, apb.ALERT_TRANSITION_RESOLVED]

    # The leader dies mid-run; meanwhile two more go down and one comes back.
    assert leader.process is not None
    leader.process.kill()
    killed = time.monotonic()
    leader.process.wait()
    tenants[3].ping(up=False)
    tenants[4].ping(up=False)
    tenants[1].ping(up=True)
    wait_until(lambda: lease_holder(stack) == standby.address, what="standby leading")
    took_over = time.monotonic() - killed
    for tenant, count in ((tenants[3], 1), (tenants[4], 1), (tenants[1], 2)):
        heard(tenant, count)
    heard_after = time.monotonic() - killed
    # The lease runs out at most one lease after the last renewal; the standby's next round takes it.
    assert took_over <= REPLICA_LEASE_S * 4 / 3 + 1.0, took_over
    print(f"failover: lease taken {took_over:.2f}s after kill -9, missed alerts heard {heard_after:.2f}s after")

    # After: the survivor serves on its own.
    tenants[5].ping(up=False)
    tenants[2].ping(up=True)
    heard(tenants[5], 1)
    heard(tenants[2], 2)
    time.sleep(REPLICA_LEASE_S)  # anything sent twice would have arrived by now
    firing, resolved = "alert_firing", "alert_resolved"
    for n, tenant in enumerate(tenants):
        alerts = tenant.alerts_on("b")
        expected_kinds = [firing, resolved] if n < 3 else [firing]
        [alert] = alerts
        assert alert.state == (common_pb2.ALERT_STATE_RESOLVED if n < 3 else common_pb2.ALERT_STATE_FIRING), n
        notices = tenant.notices(receivers)
        assert notices == [(alert.id, kind) for kind in expected_kinds], (n, notices)  # each exactly once
    with pytest.raises(grpc.RpcError) as gone:
        tenants[0].alerts["a"].ListAlerts(apb.ListAlertsRequest(), metadata=tenants[0].key, timeout=2)
    assert gone.value.code() is grpc.StatusCode.UNAVAILABLE
