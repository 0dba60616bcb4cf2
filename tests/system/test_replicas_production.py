"""Two of everything on the production stores, one of each killed mid-run.

Two monitor services, two alert services and two notification services, as real processes on one MariaDB,
Redis and InfluxDB, with two runner processes; every client (runners, services) is given both replicas of what
it calls (a gRPC ``ipv4:`` target with two addresses), as a Kubernetes Service gives one name for its pods.
Website monitors check real local HTTP targets that fail and recover on cue; alerts go to a real local webhook
receiver. Mid-run one replica of each service is killed with SIGKILL (the monitor service the runners and the
alert leader are connected to, the alert leader, and a notification service) while targets keep failing and
recovering. Then every expected alert fired (and resolved), and each notice reached the receiver exactly once.

Before that, while both notification services run, they race for the same due deliveries (every first attempt
answered 503, so all come due again together): their workers lease deliveries from the one database, across
processes, and neither sends one the other sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf import duration_pb2

from harness.external import InfluxDBServer, MariaDBServer, RedisServer, production_env
from harness.http import HttpServer, Reply
from harness.receivers import ProviderReceivers
from harness.rpc import auth
from harness.services import SERVICES, ServiceProcess, free_port, python_env
from monitors.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    common_pb2,
    monitor_service_pb2,
    monitor_service_pb2_grpc,
    notification_service_pb2,
    notification_service_pb2_grpc,
)
from service_runtime.settings import Settings
from services.monitor_svc.accounts.admin import create_api_key

mpb = monitor_service_pb2
npb = notification_service_pb2
T = TypeVar("T")
LEASE_S = 3.0  # the alert leader's lease: a standby takes over within about this after a kill
MONITORS = 6


def wait_until(check: Callable[[], T | None], timeout_s: float = 30.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s}s (last: {found!r})")
        time.sleep(0.05)


class Deployment:
    """Two replicas of each service and two runners, each client given both replicas of what it calls."""

    def __init__(self, directory: Path, settings: dict[str, str]) -> None:
        ports = {f"{name}-{replica}": free_port() for name in SERVICES for replica in "ab"}

        def both(name: str) -> str:
            return f"ipv4:127.0.0.1:{ports[name + '-a']},127.0.0.1:{ports[name + '-b']}"

        self.env = python_env(
            {
                **settings,
                "MONITORS_MONITOR_TARGET": both("monitor"),
                "MONITORS_NOTIFY_TARGET": both("notify"),
                "MONITORS_LOG_FORMAT": "json",
                "MONITORS_DRAIN_DELAY_S": "0",
            }
        )
        self.processes: dict[str, ServiceProcess] = {}
        for name in SERVICES:
            for replica in "ab":
                label = f"{name}-{replica}"
                own = {
                    "MONITORS_DATA_DIR": str(directory / label),
                    "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}",
                    "MONITORS_ALERT_INGEST_LISTEN": f"127.0.0.1:{free_port()}",
                }
                self.processes[label] = ServiceProcess(
                    name, {**self.env, **own}, directory / f"{label}.log", ports[label]
                )
        for n in (1, 2):
            runner = {
                "MONITORS_DATA_DIR": str(directory / f"runner-{n}"),
                "MONITORS_RUNNER_ID": f"runner-{n}",
                "MONITORS_RUNNER_LOCATION": "local",
            }
            self.processes[f"runner-{n}"] = ServiceProcess(
                "runner", {**self.env, **runner}, directory / f"runner-{n}.log"
            )

    def start(self) -> None:
        # The notification services first (the others call them), the monitor services before the alert
        # services (whose leader watches them) and the runners; "a" before "b", so alert-a leads.
        for label in ("notify-a", "notify-b", "monitor-a", "monitor-b", "alert-a", "alert-b", "runner-1", "runner-2"):
            self.processes[label].start()

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()

    def kill(self, label: str) -> None:
        process = self.processes[label].process
        assert process is not None
        process.kill()
        process.wait()

    def address(self, label: str) -> str:
        return self.processes[label].address


@pytest.fixture(scope="module")
def receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderReceivers]:
    with ProviderReceivers(tmp_path_factory.mktemp("receivers")) as found:
        yield found


@pytest.fixture(scope="module")
def targets() -> Iterator[HttpServer]:
    with HttpServer() as server:
        yield server


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory,
    receivers: ProviderReceivers,
    mariadb: MariaDBServer,
    redis_server: RedisServer,
    influxdb: InfluxDBServer,
) -> Iterator[Deployment]:
    settings = {
        **production_env(mariadb, redis_server, influxdb, "two_of_everything"),
        "MONITORS_EGRESS": "private-allowed",
        "MONITORS_CA_FILE": str(receivers.ca_file),
        "MONITORS_MIN_INTERVAL_S": "1",
        "MONITORS_NOTIFY_TIMEOUT_S": "3",
        "MONITORS_ALERT_LEASE_S": str(LEASE_S),
    }
    found = Deployment(tmp_path_factory.mktemp("two-of-everything"), settings)
    try:
        found.start()
        yield found
    finally:
        found.stop()


async def api_keys(env: dict[str, str], emails: list[str]) -> list[str]:
    """A new API key for each of ``emails``, made as ``python -m services.admin create-api-key`` makes them (in
    this process: one admin process per account took seconds each on a busy machine)."""
    settings = Settings.from_env("monitor", env)
    return [await create_api_key(settings, email, "replicas test") for email in emails]


def successful_sends(log_path: Path) -> list[str]:
    """Delivery ids a notification-service process sent successfully, from its JSON log's delivery events."""
    sent = []
    for line in log_path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("delivery_id") and record.get("outcome") == "success":
            sent.append(record["delivery_id"])
    return sent


@dataclass
class Tenant:
    """One account with its own webhook (its default channel) and one monitor of a target that fails on cue.
    One account per monitor: one account's alerts firing together are grouped into one message after the first
    (10 s storm windows), which this test is not about."""

    key: tuple[tuple[str, str]]
    hook: str
    path: str
    monitor_id: str = ""


def test_two_notification_processes_racing_for_the_same_due_deliveries_send_each_once(
    deployment: Deployment, receivers: ProviderReceivers
) -> None:
    """Every delivery's first attempt is answered 503, so all of them come due again from the one queue table at
    once, where both processes' workers look for due deliveries each second and lease what they find: each
    delivery is then sent successfully once, by one process, and each process sent some (a slow success holds
    one process's sends, so the other takes part even when one poll sees every delivery first)."""
    first, second = deployment.processes["notify-a"], deployment.processes["notify-b"]
    [key] = asyncio.run(api_keys(deployment.env, ["pair@example.com"]))
    user = auth(key)
    with grpc.insecure_channel(deployment.address("monitor-a")) as channel:
        accounts = account_service_pb2_grpc.AccountServiceStub(channel)
        owner = accounts.GetCurrentUser(account_service_pb2.GetCurrentUserRequest(), metadata=user, timeout=10).user.id
    hooks = [f"pair-{n}" for n in range(3)]
    stubs = [
        notification_service_pb2_grpc.NotificationServiceStub(grpc.insecure_channel(process.address))
        for process in (first, second)
    ]
    channel_ids = []
    for hook in hooks:
        # Then each success takes 1.5 s to answer (the send timeout is 3 s): one process's owner slots (20) are
        # taken meanwhile, so the other's next poll (each second) finds deliveries still due and unleased.
        receivers.script(f"/webhook/{hook}", *[Reply(503, b"busy")] * 10, *[Reply(200, b"ok", delay_s=1.5)] * 10)
        webhook = npb.WebhookConfig(url=receivers.url("webhook", hook))
        create = npb.CreateChannelRequest(channel=npb.Channel(display_name=hook, webhook=webhook))
        channel_ids.append(stubs[0].CreateChannel(create, metadata=user, timeout=10).channel.id)
    alert_service = auth(deployment.env["MONITORS_ALERT_SERVICE_TOKEN"])  # SendNotification as it calls it
    for n in range(10):
        request = npb.SendNotificationRequest(
            idempotency_key=f"pair-{n}",
            owner_id=owner,
            channel_ids=channel_ids,
            notification=npb.Notification(kind=npb.NOTIFICATION_KIND_ALERT_FIRING, alert_id=f"alr_pair_{n}"),
        )
        stubs[n % 2].SendNotification(request, metadata=alert_service, timeout=10)  # half through each process

    def answered(hook: str) -> list[str]:
        """Delivery ids of the POSTs to ``hook`` answered 200 (the first ten were answered 503)."""
        return [r.headers["x-monitors-delivery"] for r in receivers.received(f"/webhook/{hook}")[10:]]

    wait_until(lambda: all(len(set(answered(hook))) == 10 for hook in hooks), timeout_s=30, what="every delivery sent")

    def logged() -> list[str]:
        return sorted(successful_sends(first.log_path) + successful_sends(second.log_path))

    # A POST counts as received when it arrives; its sender logs it once the slow answer is in.
    wait_until(lambda: len(logged()) >= 30, timeout_s=30, what="every send logged")
    time.sleep(2)  # a second send of any would have come by now
    for hook in hooks:
        assert Counter(answered(hook)).most_common(1)[0][1] == 1, hook
    by_process = [successful_sends(process.log_path) for process in (first, second)]
    assert sorted(by_process[0] + by_process[1]) == sorted(d for hook in hooks for d in answered(hook))
    assert by_process[0], "the first process sent none: nothing raced"
    assert by_process[1], "the second process sent none: nothing raced"


def test_two_of_each_service_lose_and_repeat_no_alert_when_one_of_each_is_killed(
    deployment: Deployment, receivers: ProviderReceivers, targets: HttpServer
) -> None:
    """Runs last in this module: it kills one replica of each service."""
    keys = asyncio.run(api_keys(deployment.env, [f"tenant{n}.two@example.com" for n in range(MONITORS)]))
    tenants = [Tenant(auth(key), f"two-{n}", f"/target/{n}") for n, key in enumerate(keys)]
    monitors = monitor_service_pb2_grpc.MonitorServiceStub(grpc.insecure_channel(deployment.address("monitor-b")))
    notify = notification_service_pb2_grpc.NotificationServiceStub(
        grpc.insecure_channel(deployment.address("notify-b"))
    )
    for tenant in tenants:
        webhook = npb.WebhookConfig(url=receivers.url("webhook", tenant.hook))
        channel = npb.Channel(display_name=tenant.hook, webhook=webhook, is_default=True)
        notify.CreateChannel(npb.CreateChannelRequest(channel=channel), metadata=tenant.key, timeout=10)
        targets.routes[tenant.path] = Reply(200, b"fine")
        monitor = mpb.Monitor(
            spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=targets.url(tenant.path))),
            display_name=tenant.path,
            interval=duration_pb2.Duration(seconds=1),
            timeout=duration_pb2.Duration(seconds=1),
        )
        created = monitors.CreateMonitor(mpb.CreateMonitorRequest(monitor=monitor), metadata=tenant.key, timeout=10)
        tenant.monitor_id = created.monitor.id

    def state(n: int) -> int:
        request = mpb.GetMonitorStatusRequest(id=tenants[n].monitor_id)
        return monitors.GetMonitorStatus(request, metadata=tenants[n].key, timeout=10).status.state

    def fail(n: int) -> None:
        targets.routes[tenants[n].path] = Reply(503, b"down")

    def recover(n: int) -> None:
        targets.routes[tenants[n].path] = Reply(200, b"fine")

    def received() -> list[Any]:
        return [r.json for tenant in tenants for r in receivers.received(f"/webhook/{tenant.hook}")]

    def notices() -> Counter[tuple[str, str]]:
        """(monitor id, kind) of every webhook call received, repeats counted."""
        return Counter((body["monitor_id"], body["kind"]) for body in received())

    def heard(expected: Counter[tuple[str, str]], what: str) -> None:
        wait_until(lambda: notices() >= expected or None, timeout_s=30, what=what)

    firing, resolved = "alert_firing", "alert_resolved"
    wait_until(lambda: all(state(n) == common_pb2.MONITOR_STATE_UP for n in range(MONITORS)), what="all UP")
    # Both runners check, whichever monitor service they reached.
    operator = auth(deployment.env["MONITORS_OPERATOR_TOKEN"])
    status = monitors.GetDeploymentStatus(mpb.GetDeploymentStatusRequest(), metadata=operator, timeout=10)
    assert sorted(r.runner_id for r in status.runners) == ["runner-1", "runner-2"]
    assert all(r.assigned_monitors for r in status.runners), status.runners

    # Before: two targets fail.
    expected: Counter[tuple[str, str]] = Counter()
    for n in (0, 1):
        fail(n)
        expected[(tenants[n].monitor_id, firing)] += 1
    heard(expected, "the first two alerts")
    time.sleep(0.5)  # their deliveries recorded, not only received

    # One replica of each dies: the monitor service the runners and the alert leader reached first (the first
    # address of their targets), the alert leader, and the notification service it sent to. Meanwhile targets
    # keep failing and recovering.
    killed = time.monotonic()
    for label in ("monitor-a", "alert-a", "notify-a"):
        deployment.kill(label)
    for n in (2, 3):
        fail(n)
        expected[(tenants[n].monitor_id, firing)] += 1
    recover(0)
    expected[(tenants[0].monitor_id, resolved)] += 1
    heard(expected, "the alerts during the failover")
    print(f"alerts of the failover heard {time.monotonic() - killed:.1f}s after the kills")

    # After: the survivors serve alone.
    recover(1)
    expected[(tenants[1].monitor_id, resolved)] += 1
    fail(4)
    expected[(tenants[4].monitor_id, firing)] += 1
    heard(expected, "the alerts after the failover")
    time.sleep(LEASE_S)  # anything sent twice would have come by now

    got = notices()
    assert got == expected, {k: (got[k], expected[k]) for k in got.keys() | expected.keys() if got[k] != expected[k]}
    assert state(5) == common_pb2.MONITOR_STATE_UP
    # Each delivery sent by one process alone, and the survivor sent what came after the kill.
    by_process = {label: successful_sends(deployment.processes[label].log_path) for label in ("notify-a", "notify-b")}
    sent = Counter(by_process["notify-a"] + by_process["notify-b"])
    delivered = [body["delivery_id"] for body in received()]
    assert [sent[d] for d in delivered] == [1] * len(delivered)
    assert set(by_process["notify-b"]) & set(delivered)
