"""The hand-off to notifications loses nothing and sends nothing twice: an alert that fires while
NotificationService is down, and whose alert service is then killed with SIGKILL and restarted, reaches the
webhook exactly once when NotificationService returns. Real processes on both stacks."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from harness.alerting import User, ping
from harness.external import production_env
from harness.receivers import ProviderReceivers
from harness.services import Stack


@pytest.fixture(scope="module")
def receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderReceivers]:
    with ProviderReceivers(tmp_path_factory.mktemp("receivers")) as found:
        yield found


@pytest.fixture(params=["embedded", "production"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, receivers: ProviderReceivers
) -> Iterator[Stack]:
    env = {"MONITORS_EGRESS": "private-allowed", "MONITORS_CA_FILE": str(receivers.ca_file)}
    if request.param == "production":
        mariadb, redis, influxdb = (request.getfixturevalue(n) for n in ("mariadb", "redis_server", "influxdb"))
        env |= production_env(mariadb, redis, influxdb, "durability")
    with Stack(tmp_path_factory.mktemp(f"durability-{request.param}"), env) as found:
        yield found


def test_an_alert_fired_during_a_notification_outage_and_an_alert_service_crash_arrives_once(
    stack: Stack, receivers: ProviderReceivers
) -> None:
    user = User(stack, "outage.once@example.com")
    hook = f"durable-{stack.data_dir.name}"
    user.webhook(receivers, hook)
    monitor = user.heartbeat("payments")
    ping(monitor)

    stack.services["notify"].stop()
    ping(monitor, up=False)
    deadline = time.monotonic() + 20
    while not [a for a in user.alerts_of("") if a.monitor_id == monitor.id]:
        assert time.monotonic() < deadline, "the alert did not fire"
        time.sleep(0.1)
    time.sleep(1.0)  # the notifier has tried and failed at least once
    alert_service = stack.services["alert"]
    assert alert_service.process is not None
    alert_service.process.kill()  # SIGKILL: nothing is flushed or handed over
    alert_service.process.wait()
    alert_service.start()
    stack.services["notify"].start()

    [delivered] = receivers.wait_for(f"/webhook/{hook}", 1, timeout_s=60)
    assert "payments" in json.dumps(json.loads(delivered.body))
    time.sleep(3)  # any second copy would have come by now (retries back off from 2 s)
    assert len(receivers.received(f"/webhook/{hook}")) == 1
