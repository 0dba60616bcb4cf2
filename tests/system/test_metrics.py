"""Prometheus metrics: a real monitor service with MONITORS_METRICS_LISTEN, called over gRPC, then scraped over
HTTP as Prometheus would, the exposition parsed with prometheus-client's own parser."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import duration_pb2
from prometheus_client.parser import text_string_to_metric_families

from harness.http import HttpServer, Reply
from harness.rpc import auth
from harness.services import REPO, ServiceProcess, Stack, create_api_key, free_port, python_env
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc, notification_service_pb2_grpc
from monitors.v1 import notification_service_pb2 as notify_pb

SERVICE = "monitors.v1.MonitorService"


@pytest.fixture(scope="module")
def monitor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, str, str]]:
    """The monitor service (embedded), its metrics address, and an API key."""
    data_dir = tmp_path_factory.mktemp("metrics")
    metrics = f"127.0.0.1:{free_port()}"
    env = python_env(
        {
            "MONITORS_DATA_DIR": str(data_dir),
            "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}",
            "MONITORS_METRICS_LISTEN": metrics,
            "MONITORS_DRAIN_DELAY_S": "0",
            "MONITORS_MIN_INTERVAL_S": "1",
        }
    )
    service = ServiceProcess("monitor", env, data_dir / "monitor.log")
    service.start()
    try:
        key = create_api_key(env, "metrics@example.com")
        yield service, metrics, key
    finally:
        assert service.stop() == 0


def scrape(address: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """GET /metrics: every sample by name and labels."""
    reply = httpx.get(f"http://{address}/metrics", timeout=5)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def labels(method: str, **extra: str) -> frozenset[tuple[str, str]]:
    return frozenset({"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": method, **extra}.items())


def test_calls_are_counted_by_method_and_code_with_their_latencies(monitor: tuple[ServiceProcess, str, str]) -> None:
    service, metrics, key = monitor
    with grpc.insecure_channel(service.address) as channel:
        stub = monitor_service_pb2_grpc.MonitorServiceStub(channel)
        for _ in range(3):
            stub.ListMonitors(monitor_service_pb2.ListMonitorsRequest(), metadata=auth(key), timeout=5)
        for missing in ("mon_missing1", "mon_missing2"):
            with pytest.raises(grpc.RpcError) as error:
                stub.GetMonitor(monitor_service_pb2.GetMonitorRequest(id=missing), metadata=auth(key), timeout=5)
            assert error.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as error:
            stub.ListMonitors(monitor_service_pb2.ListMonitorsRequest(), timeout=5)  # no token
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    samples = scrape(metrics)
    assert samples[("grpc_server_started_total", labels("ListMonitors"))] == 4
    assert samples[("grpc_server_handled_total", labels("ListMonitors", grpc_code="OK"))] == 3
    assert samples[("grpc_server_handled_total", labels("ListMonitors", grpc_code="UNAUTHENTICATED"))] == 1
    assert samples[("grpc_server_handled_total", labels("GetMonitor", grpc_code="NOT_FOUND"))] == 2
    assert ("grpc_server_handled_total", labels("GetMonitor", grpc_code="OK")) not in samples
    # Latencies: a histogram per method, every call in it, each taking some time.
    assert samples[("grpc_server_handling_seconds_count", labels("ListMonitors"))] == 4
    assert samples[("grpc_server_handling_seconds_sum", labels("ListMonitors"))] > 0
    assert samples[("grpc_server_handling_seconds_bucket", labels("GetMonitor", le="+Inf"))] == 2
    # Streams are typed as such (their series exist once registered, before any call).
    stream = frozenset(
        {"grpc_type": "server_stream", "grpc_service": SERVICE, "grpc_method": "WatchMonitorStatus"}.items()
    )
    assert ("grpc_server_handling_seconds_count", stream) in samples
    # Health checks (the harness's, Kubernetes' probes) are not counted.
    assert not [name for name, found in samples if "grpc.health" in str(dict(found).get("grpc_service"))]
    # The process's own figures come along.
    assert samples[("process_resident_memory_bytes", frozenset())] > 0


def test_a_runner_counts_its_checks_their_lag_and_its_results(
    monitor: tuple[ServiceProcess, str, str], tmp_path: Path
) -> None:
    service, _, key = monitor
    metrics = f"127.0.0.1:{free_port()}"
    env = {
        **service.env,
        "MONITORS_MONITOR_TARGET": service.address,
        "MONITORS_METRICS_LISTEN": metrics,
        "MONITORS_EGRESS": "private-allowed",
    }
    runner = ServiceProcess("runner", {**env, "MONITORS_RUNNER_ID": "metered"}, tmp_path / "runner.log")
    runner.start()
    with HttpServer() as target, grpc.insecure_channel(service.address) as channel:
        target.routes["/up"] = Reply(200, b"up")
        stub = monitor_service_pb2_grpc.MonitorServiceStub(channel)
        created = stub.CreateMonitor(
            monitor_service_pb2.CreateMonitorRequest(
                monitor=monitor_service_pb2.Monitor(
                    spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=target.url("/up"))),
                    interval=duration_pb2.Duration(seconds=1),
                    timeout=duration_pb2.Duration(seconds=1),
                )
            ),
            metadata=auth(key),
            timeout=5,
        ).monitor
        try:
            deadline = time.monotonic() + 20
            while True:
                samples = scrape(metrics)
                if samples[("monitors_runner_results_total", frozenset({("outcome", "accepted")}))] >= 2:
                    break
                assert time.monotonic() < deadline, samples
                time.sleep(0.2)
        finally:
            stub.DeleteMonitor(monitor_service_pb2.DeleteMonitorRequest(id=created.id), metadata=auth(key), timeout=5)
            assert runner.stop() == 0
    assert samples[("monitors_runner_checks_total", frozenset())] >= 2
    assert samples[("monitors_runner_checks_down_total", frozenset())] == 0
    assert samples[("monitors_runner_monitors", frozenset())] == 1
    assert samples[("monitors_runner_results_queued", frozenset())] >= 0
    assert samples[("monitors_runner_results_total", frozenset({("outcome", "dropped")}))] == 0
    # Every check's lag observed: the histogram holds as many as checks finished or under way.
    lags = samples[("monitors_runner_schedule_lag_seconds_count", frozenset())]
    assert lags >= samples[("monitors_runner_checks_total", frozenset())]
    assert samples[("monitors_runner_schedule_lag_seconds_sum", frozenset())] >= 0


def test_the_notification_service_counts_attempts_by_kind_outcome_and_state(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    stack = Stack(tmp_path_factory.mktemp("notify-metrics"), {"MONITORS_EGRESS": "private-allowed"})
    del stack.services["alert"]  # channels need only the account and notification services
    notify = stack.services["notify"]
    notify.env = {**notify.env, "MONITORS_METRICS_LISTEN": metrics}
    with stack, HttpServer() as receiver, grpc.insecure_channel(stack.address("notify")) as channel:
        receiver.routes["/ok"] = Reply(204, b"")
        receiver.routes["/gone"] = Reply(410, b"gone")
        receiver.routes["/busy"] = Reply(503, b"busy")
        who = auth(stack.create_api_key("metrics@example.com"))
        stub = notification_service_pb2_grpc.NotificationServiceStub(channel)
        states = {}
        for path in ("/ok", "/ok", "/gone", "/busy"):
            created = stub.CreateChannel(
                notify_pb.CreateChannelRequest(
                    channel=notify_pb.Channel(webhook=notify_pb.WebhookConfig(url=receiver.url(path)))
                ),
                metadata=who,
                timeout=10,
            ).channel
            delivery = stub.TestChannel(notify_pb.TestChannelRequest(id=created.id), metadata=who, timeout=20).delivery
            states[path] = notify_pb.DeliveryState.Name(delivery.state)
        samples = scrape(metrics)
    assert states == {
        "/ok": "DELIVERY_STATE_DELIVERED",
        "/gone": "DELIVERY_STATE_FAILED",
        "/busy": "DELIVERY_STATE_FAILED",
    }

    def attempts(outcome: str, state: str) -> float:
        return samples[
            (
                "monitors_notify_attempts_total",
                frozenset({"kind": "webhook", "outcome": outcome, "state": state}.items()),
            )
        ]

    assert attempts("success", "delivered") == 2
    assert attempts("permanent", "failed") == 1
    assert attempts("retryable", "failed") == 1  # a test is one attempt: a retryable failure is final
    assert samples[("monitors_notify_attempt_seconds_count", frozenset({("kind", "webhook")}))] == 4
    assert samples[("monitors_notify_lane_queued", frozenset())] == 0
    # The RPCs were counted too, on the same endpoint.
    test_channel = labels("TestChannel", grpc_code="OK") - {("grpc_service", SERVICE)} | {
        ("grpc_service", "monitors.v1.NotificationService")
    }
    assert samples[("grpc_server_handled_total", test_channel)] == 4


def test_a_metrics_port_in_use_stops_the_service_before_it_starts_naming_the_variable(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        env = python_env(
            {
                "MONITORS_DATA_DIR": str(tmp_path),
                "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}",
                "MONITORS_METRICS_LISTEN": address,
            }
        )
        result = subprocess.run(
            [sys.executable, "-m", "services.monitor_svc", "--listen", f"127.0.0.1:{free_port()}"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert f"{address} (MONITORS_METRICS_LISTEN) is already in use" in result.stderr
    assert not (tmp_path / "monitor.sqlite3").exists()  # refused before any side effect


def test_the_alert_service_counts_evaluation_transitions_and_notices(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A heartbeat's failure ping fires the default monitor_down rule; the alert service's metrics show the
    samples it evaluated, the transition, the notice sent, and what the leader holds."""
    metrics = f"127.0.0.1:{free_port()}"
    stack = Stack(tmp_path_factory.mktemp("alert-metrics"), {"MONITORS_EGRESS": "private-allowed"})
    alert = stack.services["alert"]
    alert.env = {**alert.env, "MONITORS_METRICS_LISTEN": metrics}
    with stack, HttpServer() as receiver:
        receiver.routes["/hook"] = Reply(204, b"")
        who = auth(stack.create_api_key("alert.metrics@example.com"))
        with grpc.insecure_channel(stack.address("notify")) as channel:
            notify = notification_service_pb2_grpc.NotificationServiceStub(channel)
            hook = notify_pb.Channel(webhook=notify_pb.WebhookConfig(url=receiver.url("/hook")), is_default=True)
            notify.CreateChannel(notify_pb.CreateChannelRequest(channel=hook), metadata=who, timeout=10)
        before = scrape(metrics)
        assert before[("monitors_alert_leader", frozenset())] == 1
        assert before[("monitors_alert_open_alerts", frozenset())] == 0
        with grpc.insecure_channel(stack.address("monitor")) as channel:
            monitors = monitor_service_pb2_grpc.MonitorServiceStub(channel)
            spec = common_pb2.MonitorSpec(
                heartbeat=common_pb2.HeartbeatSpec(grace_period=duration_pb2.Duration(seconds=600))
            )
            monitor = monitor_service_pb2.Monitor(spec=spec, interval=duration_pb2.Duration(seconds=600))
            created = monitors.CreateMonitor(
                monitor_service_pb2.CreateMonitorRequest(monitor=monitor), metadata=who, timeout=10
            ).monitor
        assert httpx.post(created.heartbeat_url + "/fail", content=b"", timeout=5).status_code == 200
        deadline = time.monotonic() + 30
        while not [path for _, path, _ in receiver.requests if path == "/hook"]:
            assert time.monotonic() < deadline, "no notification reached the webhook"
            time.sleep(0.1)
        sent = ("monitors_alert_notices_total", frozenset({("outcome", "sent")}))
        while (samples := scrape(metrics)).get(sent, 0) < 1:  # counted as the notify service's answer arrives
            assert time.monotonic() < deadline, samples
            time.sleep(0.1)
    assert samples[("monitors_alert_transitions_total", frozenset({("transition", "fired")}))] == 1
    assert samples[("monitors_alert_notices_total", frozenset({("outcome", "sent")}))] == 1
    assert samples[("monitors_alert_samples_evaluated_total", frozenset())] >= 1
    assert samples[("monitors_alert_open_alerts", frozenset())] == 1
    assert samples[("monitors_alert_rules", frozenset())] >= 1  # the owner's default rule
    assert samples[("monitors_alert_reconcile_seconds_count", frozenset())] >= 0
