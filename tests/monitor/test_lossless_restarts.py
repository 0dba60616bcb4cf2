"""Samples accepted during an InfluxDB outage survive the monitor service's restart or crash: a real runner's
results and heartbeat pings answered OK while InfluxDB is down, the monitor service stopped (SIGTERM) or killed
(SIGKILL) and started again, still without InfluxDB; once InfluxDB starts, every one of those samples is in it.

The monitor service also starts before InfluxDB here, so the database is made only once InfluxDB answers.
"""

from __future__ import annotations

import collections
import contextlib
import json
import signal
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import duration_pb2

from harness.external import InfluxDBServer
from harness.http import HttpServer, Reply
from harness.rpc import auth
from harness.services import Stack
from harness.waiting import eventually
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc

pb = monitor_service_pb2
DATABASE = "lossless"


@pytest.fixture
def target() -> Iterator[HttpServer]:
    with HttpServer() as server:
        server.routes["/up"] = Reply(200, b"fine")
        yield server


def samples_in(influxdb: InfluxDBServer, monitor_id: str) -> int:
    q = f'SELECT count(is_up) FROM "{DATABASE}"."monitors_raw"."check" WHERE monitor = \'{monitor_id}\''
    url = f"{influxdb.url}/query?{urllib.parse.urlencode({'q': q})}"
    with urllib.request.urlopen(url, timeout=5) as reply:
        result = json.loads(reply.read())["results"][0]
    return sum(int(row[1]) for series in result.get("series", []) for row in series["values"])


class RecordedResults:
    """Results the monitor service reports as recorded (WatchMonitorEvents with include_results), per monitor: each
    has its status stored and its sample accepted, so each must reach InfluxDB."""

    def __init__(self, stub: monitor_service_pb2_grpc.MonitorServiceStub, alert_token: str) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._call = stub.WatchMonitorEvents(
            pb.WatchMonitorEventsRequest(include_results=True), metadata=auth(alert_token)
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(grpc.RpcError):  # the service going away ends the stream
            for message in self._call:
                self.counts.update(result.monitor_id for result in message.results)

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(timeout=10)


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_samples_accepted_during_an_influxdb_outage_survive_a_restart_of_the_monitor_service(
    tmp_path: Path, target: HttpServer, stop: signal.Signals
) -> None:
    (tmp_path / "influxdb").mkdir()
    influxdb = InfluxDBServer(tmp_path / "influxdb")  # started only at the end
    stack = Stack(
        tmp_path / "stack",
        {
            "MONITORS_TIMESERIES_URL": f"influxdb://127.0.0.1:{influxdb.port}/{DATABASE}",
            "MONITORS_MIN_INTERVAL_S": "1",
        },
    )
    stack.data_dir.mkdir()
    monitor_service = stack.services["monitor"]
    monitor_service.start()
    runner = stack.runner("lossless", MONITORS_EGRESS="private-allowed")
    try:
        key = auth(stack.create_api_key("lossless@example.com"))
        with grpc.insecure_channel(stack.address("monitor")) as channel:
            stub = monitor_service_pb2_grpc.MonitorServiceStub(channel)
            website = stub.CreateMonitor(
                pb.CreateMonitorRequest(
                    monitor=pb.Monitor(
                        spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=target.url("/up"))),
                        interval=duration_pb2.Duration(seconds=1),
                        timeout=duration_pb2.Duration(seconds=1),
                    )
                ),
                metadata=key,
                timeout=5,
            ).monitor
            heartbeat = stub.CreateMonitor(
                pb.CreateMonitorRequest(
                    monitor=pb.Monitor(
                        spec=common_pb2.MonitorSpec(heartbeat=common_pb2.HeartbeatSpec()),
                        interval=duration_pb2.Duration(seconds=3600),  # no deadline passes: pings alone
                    )
                ),
                metadata=key,
                timeout=5,
            ).monitor
            recorded = RecordedResults(stub, stack.role_token("alert"))
            runner.start()
            pinged = 0
            while pinged < 5 or recorded.counts[website.id] < 5:
                if httpx.get(heartbeat.heartbeat_url, timeout=5).status_code == 200:
                    pinged += 1
                time.sleep(1.05)  # one recorded ping a second
            runner.stop()
            time.sleep(1.0)  # the stream's last results
            recorded.close()
        accepted = (recorded.counts[website.id], recorded.counts[heartbeat.id])
        assert accepted[0] >= 5
        assert accepted[1] == pinged

        assert monitor_service.process is not None
        monitor_service.process.send_signal(stop)
        monitor_service.process.wait(timeout=30)
        monitor_service.start()  # InfluxDB still down
        influxdb.start()
        deadline = time.monotonic() + 30
        while (found := (samples_in(influxdb, website.id), samples_in(influxdb, heartbeat.id))) != accepted:
            assert time.monotonic() < deadline, f"samples (website, heartbeat) {found}, accepted {accepted}"
            time.sleep(0.2)
        assert "before the restart" in monitor_service.log_path.read_text()
        spool = stack.data_dir / "timeseries-spool"
        eventually(lambda: not any(p.stat().st_size for p in spool.glob("*.lp")), timeout_s=5)  # written, let go of
    finally:
        runner.stop()
        stack.stop()
        influxdb.stop()
