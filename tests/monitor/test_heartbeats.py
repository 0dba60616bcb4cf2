"""Heartbeat (push) monitors end to end: a real monitor service serving ping URLs over HTTP, pings from a real
HTTP client, and the deadline sweep turning a silent monitor DOWN."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
from google.protobuf import duration_pb2

from harness.rpc import auth
from harness.services import Stack
from harness.waiting import eventually
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc
from services.monitor_svc.heartbeats import PingLimiter

pb = monitor_service_pb2
Metadata = tuple[tuple[str, str]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("heartbeats"), {"MONITORS_MIN_INTERVAL_S": "1"}) as started:
        yield started


@pytest.fixture(scope="module")
def key(stack: Stack) -> Metadata:
    return auth(stack.create_api_key("cron.jobs@example.com"))


@pytest.fixture(scope="module")
def stub(stack: Stack) -> Iterator[monitor_service_pb2_grpc.MonitorServiceStub]:
    with grpc.insecure_channel(stack.address("monitor")) as channel:
        yield monitor_service_pb2_grpc.MonitorServiceStub(channel)


def heartbeat(
    stub: monitor_service_pb2_grpc.MonitorServiceStub, key: Metadata, period_s: int, grace_s: int
) -> pb.Monitor:
    spec = common_pb2.MonitorSpec(
        heartbeat=common_pb2.HeartbeatSpec(grace_period=duration_pb2.Duration(seconds=grace_s))
    )
    monitor = pb.Monitor(spec=spec, interval=duration_pb2.Duration(seconds=period_s), display_name="nightly backup")
    return stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor), metadata=key, timeout=5).monitor


def status_of(stub: monitor_service_pb2_grpc.MonitorServiceStub, key: Metadata, monitor_id: str) -> pb.MonitorStatus:
    return stub.GetMonitorStatus(pb.GetMonitorStatusRequest(id=monitor_id), metadata=key, timeout=5).status


def test_a_ping_makes_it_up_and_silence_past_period_plus_grace_makes_it_down(
    stub: monitor_service_pb2_grpc.MonitorServiceStub, key: Metadata
) -> None:
    monitor = heartbeat(stub, key, period_s=2, grace_s=1)
    assert monitor.heartbeat_url.startswith("http://127.0.0.1:")
    assert status_of(stub, key, monitor.id).state == common_pb2.MONITOR_STATE_PENDING
    reply = httpx.get(monitor.heartbeat_url, timeout=5)
    assert (reply.status_code, reply.text) == (200, "OK\n")
    up = status_of(stub, key, monitor.id)
    assert up.state == common_pb2.MONITOR_STATE_UP
    # Keep pinging every second for a while: it stays up.
    for _ in range(3):
        time.sleep(1)
        httpx.post(monitor.heartbeat_url, content=b"done", timeout=5)
        assert status_of(stub, key, monitor.id).state == common_pb2.MONITOR_STATE_UP
    pinged_at = time.monotonic()
    down = eventually(lambda: (s := status_of(stub, key, monitor.id)).state == common_pb2.MONITOR_STATE_DOWN and s)
    assert isinstance(down, pb.MonitorStatus)
    silent_for = time.monotonic() - pinged_at
    assert 3.0 <= silent_for <= 6.0, silent_for  # period 2 s + grace 1 s, swept every second
    assert down.last_result.error_class == common_pb2.ERROR_CLASS_TIMEOUT
    assert "no ping since" in down.last_result.message
    httpx.head(monitor.heartbeat_url, timeout=5)
    assert status_of(stub, key, monitor.id).state == common_pb2.MONITOR_STATE_UP
    uptime = stub.QuerySamples(pb.QuerySamplesRequest(monitor_id=monitor.id, field="is_up"), metadata=key, timeout=5)
    assert [p.value for p in uptime.points][-2:] == [0.0, 1.0]


def test_the_job_can_report_its_own_failure(stub: monitor_service_pb2_grpc.MonitorServiceStub, key: Metadata) -> None:
    monitor = heartbeat(stub, key, period_s=60, grace_s=60)
    httpx.get(monitor.heartbeat_url, timeout=5)
    failure = b"backup failed: disk full\n" + b"x" * 20_000
    reply = httpx.post(monitor.heartbeat_url + "/fail", content=failure, timeout=5)
    if reply.status_code == 429:  # within a second of the first ping: retried as curl --retry does
        time.sleep(float(reply.headers["Retry-After"]))
        reply = httpx.post(monitor.heartbeat_url + "/fail", content=failure, timeout=5)
    assert reply.status_code == 200
    down = status_of(stub, key, monitor.id)
    assert down.state == common_pb2.MONITOR_STATE_DOWN
    assert down.last_result.message.startswith("backup failed: disk full")
    assert len(down.last_result.message) <= 500


def test_one_ping_per_monitor_per_second_is_recorded_and_the_others_are_told_to_retry(
    stub: monitor_service_pb2_grpc.MonitorServiceStub, key: Metadata
) -> None:
    """16 threads pinging one monitor, alternating success and /fail (a flood had recorded 366 results a second
    and, alternating, written thousands of alerts): one ping a second is recorded, the rest are 429."""
    monitor = heartbeat(stub, key, period_s=60, grace_s=60)
    started = time.monotonic()

    def pinger(n: int) -> list[httpx.Response]:
        replies = []
        with httpx.Client(timeout=5) as client:
            while time.monotonic() - started < 2.5:
                replies.append(client.get(monitor.heartbeat_url + ("/fail" if n % 2 else "")))
                n += 1
        return replies

    with ThreadPoolExecutor(16) as pool:
        replies = [r for batch in pool.map(pinger, range(16)) for r in batch]
    recorded = [r for r in replies if r.status_code == 200]
    limited = [r for r in replies if r.status_code == 429]
    assert len(recorded) + len(limited) == len(replies)
    assert 2 <= len(recorded) <= 3, len(recorded)  # 2.5 s
    assert len(limited) > 20
    assert all(r.headers["Retry-After"] == "1" and "not recorded" in r.text for r in limited)
    uptime = stub.QuerySamples(pb.QuerySamplesRequest(monitor_id=monitor.id, field="is_up"), metadata=key, timeout=5)
    assert len(uptime.points) == len(recorded)
    time.sleep(1.0)
    assert httpx.get(monitor.heartbeat_url, timeout=5).status_code == 200  # a second later: recorded again


def test_the_ping_limiter_counts_per_token_gives_back_unrecorded_pings_and_forgets_old_ones() -> None:
    now = [100.0]
    limiter = PingLimiter(lambda: now[0])
    assert limiter.take("a") == 0
    assert limiter.take("b") == 0
    assert limiter.take("a") == pytest.approx(1.0)
    limiter.give_back("b")  # unknown token or paused monitor: nothing was recorded
    assert limiter.take("b") == 0
    now[0] += 1.0
    assert limiter.take("a") == 0
    for i in range(20_000):
        limiter.take(f"old{i}")
    now[0] += 2.0
    for i in range(30_000):  # the map outgrows twice what was live at its last pruning: what is past its time goes
        limiter.take(f"new{i}")
    assert "old0" not in limiter._buckets
    assert len(limiter._buckets) <= 30_000


def test_unknown_tokens_and_other_paths_are_not_found(
    stack: Stack, stub: monitor_service_pb2_grpc.MonitorServiceStub, key: Metadata
) -> None:
    monitor = heartbeat(stub, key, period_s=60, grace_s=60)
    base = monitor.heartbeat_url.rsplit("/ping/", 1)[0]
    for path in ("/ping/not-a-token", "/ping/", "/", "/ping/x/y/z", "/metrics"):
        assert httpx.get(base + path, timeout=5).status_code == 404, path
    # A website monitor's token is not a ping URL either.
    website = stub.CreateMonitor(
        pb.CreateMonitorRequest(
            monitor=pb.Monitor(spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url="https://example.com")))
        ),
        metadata=key,
        timeout=5,
    ).monitor
    assert website.heartbeat_url == ""


def test_a_paused_heartbeat_is_neither_swept_down_nor_changed_by_pings(
    stub: monitor_service_pb2_grpc.MonitorServiceStub, key: Metadata
) -> None:
    monitor = heartbeat(stub, key, period_s=1, grace_s=0)
    httpx.get(monitor.heartbeat_url, timeout=5)
    stub.PauseMonitor(pb.PauseMonitorRequest(id=monitor.id), metadata=key, timeout=5)
    time.sleep(1.0)  # one ping a second
    reply = httpx.get(monitor.heartbeat_url, timeout=5)
    assert (reply.status_code, reply.text) == (200, "OK (monitor paused)\n")
    time.sleep(3)
    paused = status_of(stub, key, monitor.id)
    assert paused.state == common_pb2.MONITOR_STATE_PAUSED
    assert paused.last_result.is_up  # the sweep wrote no failure while paused
    # Resuming starts a fresh period: not DOWN at once.
    stub.ResumeMonitor(pb.ResumeMonitorRequest(id=monitor.id), metadata=key, timeout=5)
    assert status_of(stub, key, monitor.id).state == common_pb2.MONITOR_STATE_UP
    eventually(lambda: status_of(stub, key, monitor.id).state == common_pb2.MONITOR_STATE_DOWN, timeout_s=5)


def test_a_heartbeats_uptime_weighs_the_time_it_was_silent_not_its_pings(
    stub: monitor_service_pb2_grpc.MonitorServiceStub, key: Metadata
) -> None:
    """Three results (a ping, a missed deadline, a ping): 2 of 3 succeeded, but DOWN for as long as it was
    silent, which SummarizeMonitor weighs against the time observed."""
    monitor = heartbeat(stub, key, period_s=1, grace_s=1)
    httpx.get(monitor.heartbeat_url, timeout=5)
    eventually(lambda: status_of(stub, key, monitor.id).state == common_pb2.MONITOR_STATE_DOWN)
    time.sleep(4)  # silent well beyond the 2 s it was up before its deadline (and the sweep's second)
    assert httpx.get(monitor.heartbeat_url, timeout=5).status_code == 200

    summary = stub.SummarizeMonitor(pb.SummarizeMonitorRequest(monitor_id=monitor.id), metadata=key, timeout=5)

    availability = summary.availability
    assert (availability.checks, availability.failed_checks, summary.sample_count) == (3, 1, 3)
    [outage] = availability.outages
    assert outage.HasField("end_time")
    assert availability.downtime == outage.duration
    observed, down = availability.observed.ToTimedelta(), availability.downtime.ToTimedelta()
    assert down.total_seconds() >= 4
    assert availability.uptime_percent == pytest.approx((observed - down) / observed * 100)
    assert availability.uptime_percent < 60  # per ping it would be 66.7 %
    assert [(c.error_class, c.failed_checks) for c in outage.causes] == [(common_pb2.ERROR_CLASS_TIMEOUT, 1)]
    assert "no ping since" in outage.causes[0].message


def test_start_exit_status_and_bodies_over_http_and_list_heartbeat_pings(
    stub: monitor_service_pb2_grpc.MonitorServiceStub, key: Metadata
) -> None:
    """A week-long period with two days of grace, a /start and a /0 in the same second (limited apart), then
    a POSTed /3 whose output is kept: ListHeartbeatPings shows them newest first with the run time."""
    spec = common_pb2.MonitorSpec(
        heartbeat=common_pb2.HeartbeatSpec(grace_period=duration_pb2.Duration(seconds=2 * 86400))
    )
    weekly = pb.Monitor(spec=spec, interval=duration_pb2.Duration(seconds=7 * 86400), display_name="weekly export")
    monitor = stub.CreateMonitor(pb.CreateMonitorRequest(monitor=weekly), metadata=key, timeout=5).monitor
    assert (monitor.interval.seconds, monitor.spec.heartbeat.grace_period.seconds) == (7 * 86400, 2 * 86400)
    url = monitor.heartbeat_url
    assert httpx.get(url + "/start", timeout=5).status_code == 200
    assert httpx.get(url + "/0", headers={"user-agent": "backup.sh"}, timeout=5).status_code == 200
    assert status_of(stub, key, monitor.id).state == common_pb2.MONITOR_STATE_UP
    assert httpx.get(url + "/256", timeout=5).status_code == 400
    assert httpx.get(url + "/later", timeout=5).status_code == 404
    time.sleep(1.0)  # one result a second
    output = b"tar: /srv: Cannot open: Permission denied\n" + b"x" * 12_000
    assert httpx.post(url + "/3", content=output, timeout=5).status_code == 200
    down = status_of(stub, key, monitor.id)
    assert down.state == common_pb2.MONITOR_STATE_DOWN
    assert down.last_result.message.startswith("exit status 3: tar: /srv: Cannot open: Permission denied")

    listed = stub.ListHeartbeatPings(pb.ListHeartbeatPingsRequest(monitor_id=monitor.id), metadata=key, timeout=5)

    failed, succeeded, started = listed.pings
    assert [p.kind for p in listed.pings] == [
        pb.HEARTBEAT_PING_KIND_FAIL,
        pb.HEARTBEAT_PING_KIND_SUCCESS,
        pb.HEARTBEAT_PING_KIND_START,
    ]
    assert (failed.exit_status, failed.method, len(failed.body), failed.body_truncated) == (3, "POST", 10 * 1024, True)
    assert failed.body.startswith("tar: /srv")
    assert (succeeded.exit_status, succeeded.user_agent, succeeded.HasField("run_time")) == (0, "backup.sh", True)
    assert succeeded.run_time.ToTimedelta() == succeeded.time.ToDatetime() - started.time.ToDatetime()
    assert not started.HasField("exit_status")
    assert failed.remote_address == "127.0.0.1"
    assert listed.next_page_token == ""


def test_a_cron_schedule_and_its_time_zone_are_kept_and_checked(
    stub: monitor_service_pb2_grpc.MonitorServiceStub, key: Metadata
) -> None:
    nightly = common_pb2.HeartbeatSpec(cron="0 3 * * *", time_zone="Europe/Paris")
    monitor = pb.Monitor(spec=common_pb2.MonitorSpec(heartbeat=nightly), display_name="nightly backup")
    created = stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor), metadata=key, timeout=5).monitor
    got = stub.GetMonitor(pb.GetMonitorRequest(id=created.id), metadata=key, timeout=5).monitor
    assert (got.spec.heartbeat.cron, got.spec.heartbeat.time_zone) == ("0 3 * * *", "Europe/Paris")
    monitor.spec.heartbeat.time_zone = "Europe/Atlantis"
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor), metadata=key, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "monitor.spec.heartbeat.time_zone" in (caught.value.details() or "")
