"""Two monitor-service replicas on one MariaDB, Redis and InfluxDB, as real processes.

Each replica here is reached by its own runner: a real gRPC client of the test, watching its assignments and
reporting results as a runner does (so the test sees exactly what each runner is sent and when). Then:

- the runners of both replicas share the monitors, each checked by one of them, whichever replica the monitor
  was created, changed or deleted through, and each change reaches the runner on the other replica within a
  second; a runner that leaves one replica has its monitors taken over by the runner on the other;
- a user's WatchMonitorStatus and the alert service's WatchMonitorEvents on one replica see the changes and
  results made on the other;
- results of one monitor reported to both replicas at once (two locations, or a resend to the other replica
  after a kill) lose no status update and store no sample twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2

from harness.external import InfluxDBServer, MariaDBServer, RedisServer, production_env
from harness.rpc import auth
from harness.services import REPO, ServiceProcess, free_port, python_env
from harness.waiting import eventually
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc
from service_runtime.settings import ROLE_TOKENS, Role
from services.monitor_svc import replicas as replicas_module
from services.monitor_svc.assignments import AssignmentHub
from services.monitor_svc.replicas import RedisReplicas

pb = monitor_service_pb2
DATABASE = "monitor_replicas"
FAN_OUT_S = 1.0  # the bound: a change on one replica reaches runners on another within a second


@dataclass
class Replicas:
    processes: dict[str, ServiceProcess]
    env: dict[str, str]  # the replicas' shared settings, each role's token among them
    key: tuple[tuple[str, str]]
    mariadb: MariaDBServer
    channels: dict[str, grpc.Channel] = field(default_factory=dict)

    def stub(self, name: str) -> monitor_service_pb2_grpc.MonitorServiceStub:
        if name not in self.channels:
            self.channels[name] = grpc.insecure_channel(self.processes[name].address)
        return monitor_service_pb2_grpc.MonitorServiceStub(self.channels[name])

    def role(self, role: Role) -> tuple[tuple[str, str]]:
        """Metadata with ``role``'s token (a runner, the alert service, the operator)."""
        return auth(self.env[ROLE_TOKENS[role][0]])


@contextlib.contextmanager
def running_replicas(directory: Path, env: dict[str, str], mariadb: MariaDBServer) -> Iterator[Replicas]:
    """Two monitor-service processes, a and b, with ``env`` (production settings)."""
    processes = {}
    for name in ("a", "b"):
        extra = {
            "MONITORS_DATA_DIR": str(directory / name),
            "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}",
            "MONITORS_NOTIFY_TARGET": f"127.0.0.1:{free_port()}",  # no notification service: no logins by mail
            "MONITORS_MIN_INTERVAL_S": "1",
            "MONITORS_LOG_FORMAT": "json",
            "MONITORS_DRAIN_DELAY_S": "0",
        }
        processes[name] = ServiceProcess("monitor", python_env({**env, **extra}), directory / f"monitor-{name}.log")
    try:
        for process in processes.values():
            process.start()  # the second starts: no replica lock with Redis set
        found = Replicas(processes, env, auth(_api_key(processes["a"].env)), mariadb)
        yield found
        for channel in found.channels.values():
            channel.close()
    finally:
        for process in processes.values():
            process.stop()


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory,
    mariadb: MariaDBServer,
    redis_server: RedisServer,
    influxdb: InfluxDBServer,
) -> Iterator[Replicas]:
    env = production_env(mariadb, redis_server, influxdb, DATABASE)
    with running_replicas(tmp_path_factory.mktemp("monitor-replicas"), env, mariadb) as found:
        yield found


def _api_key(env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "services.admin", "create-api-key", "--email", "replicas@example.com"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


class TestRunner:
    """A runner played by the test: its assignment stream to one replica, read on a thread."""

    __test__ = False

    def __init__(self, replicas: Replicas, replica: str, runner_id: str, location: str = "local") -> None:
        self.runner_id = runner_id
        self.location = location
        self.replica = replica
        self.stub = replicas.stub(replica)
        self._metadata = replicas.role("runner")
        self.assigned: dict[str, pb.Assignment] = {}
        self.seen: dict[str, float] = {}  # monitor id -> when it was first assigned here
        self.removed: dict[str, float] = {}  # monitor id -> when it was last removed
        self.synced = threading.Event()
        self._lock = threading.Lock()
        self._call = self.stub.WatchAssignments(
            pb.WatchAssignmentsRequest(runner_id=runner_id, location=location, version="test"),
            metadata=self._metadata,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.synced.wait(10), f"{runner_id} got no full set"

    def _read(self) -> None:
        try:
            for change in self._call:
                now = time.monotonic()
                with self._lock:
                    if change.full_sync:
                        self.assigned = {}
                    for upsert in change.upserts:
                        self.assigned[upsert.monitor.id] = upsert
                        self.seen.setdefault(upsert.monitor.id, now)
                    for monitor_id in change.removed_monitor_ids:
                        self.assigned.pop(monitor_id, None)
                        self.removed[monitor_id] = now
                if not change.full_sync_continues:
                    self.synced.set()
        except grpc.RpcError:
            pass

    def ids(self) -> set[str]:
        with self._lock:
            return set(self.assigned)

    def url_of(self, monitor_id: str) -> str:
        """The URL this runner was last sent for ``monitor_id`` ("" if it does not check it)."""
        with self._lock:
            found = self.assigned.get(monitor_id)
        return found.monitor.spec.website.url if found is not None else ""

    def report(self, *results: common_pb2.CheckResult) -> pb.ReportResultsResponse:
        request = pb.ReportResultsRequest(runner_id=self.runner_id, results=list(results))
        return self.stub.ReportResults(iter([request]), metadata=self._metadata, timeout=10)

    def leave(self) -> None:
        self._call.cancel()
        self._thread.join(5)


def website(path: str, *locations: str) -> pb.Monitor:
    return pb.Monitor(
        spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=f"http://127.0.0.1:9/{path}")),
        interval=duration_pb2.Duration(seconds=60),
        timeout=duration_pb2.Duration(seconds=5),
        locations=list(locations),
    )


def result(monitor_id: str, at: datetime, up: bool) -> common_pb2.CheckResult:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(at)
    return common_pb2.CheckResult(
        monitor_id=monitor_id,
        check_time=stamp,
        is_up=up,
        duration=duration_pb2.Duration(nanos=5_000_000),
        error_class=common_pb2.ERROR_CLASS_UNSPECIFIED if up else common_pb2.ERROR_CLASS_STATUS,
        message="" if up else "HTTP 503",
        fields={"response_time_ms": 5.0},
    )


def stored_failures(replicas: Replicas, monitor_id: str) -> dict[str, int]:
    """Each location's consecutive failures in the monitor's stored status (the API shows the latest's alone)."""
    connection = replicas.mariadb.connect(DATABASE)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT location_results FROM monitor_status WHERE monitor_id = %s", (monitor_id,))
            (text,) = cursor.fetchone()
    finally:
        connection.close()
    return {location: entry["failures"] for location, entry in json.loads(text).items()}


def samples_in(influxdb: InfluxDBServer, monitor_id: str) -> int:
    q = f'SELECT count(is_up) FROM "{DATABASE}"."monitors_raw"."check" WHERE monitor = \'{monitor_id}\''
    url = f"{influxdb.url}/query?{urllib.parse.urlencode({'q': q})}"
    with urllib.request.urlopen(url, timeout=5) as reply:
        found: Any = json.loads(reply.read())["results"][0]
    return sum(int(row[1]) for series in found.get("series", []) for row in series["values"])


def test_runners_on_both_replicas_share_the_monitors_and_follow_changes_made_on_either(replicas: Replicas) -> None:
    east = TestRunner(replicas, "a", "share-a")
    west = TestRunner(replicas, "b", "share-b")
    created: dict[str, float] = {}
    through_of: dict[str, str] = {}
    on_west = ""
    try:
        for n in range(20):
            through = "ab"[n % 2]
            started = time.monotonic()
            monitor = (
                replicas.stub(through)
                .CreateMonitor(
                    pb.CreateMonitorRequest(monitor=website(f"share/{n}")), metadata=replicas.key, timeout=10
                )
                .monitor
            )
            created[monitor.id] = started
            through_of[monitor.id] = through
        everyone = set(created)
        eventually(lambda: east.ids() | west.ids() >= everyone, timeout_s=5)
        # Each monitor goes to one runner, whichever replica it was created through; both runners get some.
        assert not east.ids() & west.ids() & everyone
        assert east.ids() & everyone
        assert west.ids() & everyone
        lag = max(min(r.seen.get(i, 99e9) for r in (east, west)) - created[i] for i in everyone)
        assert lag < FAN_OUT_S, lag
        across = [
            r.seen[i] - created[i] for i in everyone for r in (east, west) if i in r.seen and r.replica != through_of[i]
        ]
        print(f"created on one replica, assigned to a runner of the other: at most {max(across) * 1000:.0f} ms")

        # Both replicas tell the same placement (once each has applied the other's last notices).
        def placement(name: str) -> dict[str, int]:
            status = replicas.stub(name).GetDeploymentStatus(
                pb.GetDeploymentStatusRequest(), metadata=replicas.role("operator"), timeout=10
            )
            return {r.runner_id: r.assigned_monitors for r in status.runners}

        wanted = {"share-a": len(east.ids()), "share-b": len(west.ids())}
        eventually(lambda: placement("a") == wanted, timeout_s=FAN_OUT_S)
        eventually(lambda: placement("b") == wanted, timeout_s=FAN_OUT_S)

        # A monitor checked by the runner on b is paused through a: that runner drops it within a second.
        on_west = sorted(west.ids() & everyone)[0]
        paused_at = time.monotonic()
        replicas.stub("a").PauseMonitor(pb.PauseMonitorRequest(id=on_west), metadata=replicas.key, timeout=10)
        eventually(lambda: on_west not in west.ids(), timeout_s=5, interval_s=0.01)
        assert west.removed[on_west] - paused_at < FAN_OUT_S
        print(f"paused through a, dropped by b's runner {(west.removed[on_west] - paused_at) * 1000:.0f} ms later")
        replicas.stub("b").DeleteMonitor(pb.DeleteMonitorRequest(id=on_west), metadata=replicas.key, timeout=10)
        everyone.discard(on_west)

        # The runner on b leaves: the runner on a takes every monitor over.
        west.leave()
        left_at = time.monotonic()
        eventually(lambda: east.ids() >= everyone, timeout_s=5, interval_s=0.01)
        taken_over = max(east.seen[i] for i in everyone) - left_at
        assert taken_over < FAN_OUT_S
        print(f"b's runner left: a's runner had all its monitors {taken_over * 1000:.0f} ms later")
    finally:
        east.leave()
        west.leave()
        for monitor_id in set(created) - {on_west}:
            replicas.stub("a").DeleteMonitor(pb.DeleteMonitorRequest(id=monitor_id), metadata=replicas.key, timeout=10)


def test_watchers_on_one_replica_see_changes_and_results_made_on_the_other(replicas: Replicas) -> None:
    runner = TestRunner(replicas, "b", "watched-b")
    monitor = (
        replicas.stub("b")
        .CreateMonitor(pb.CreateMonitorRequest(monitor=website("watched")), metadata=replicas.key, timeout=10)
        .monitor
    )
    statuses = replicas.stub("a").WatchMonitorStatus(pb.WatchMonitorStatusRequest(), metadata=replicas.key, timeout=30)
    events = replicas.stub("a").WatchMonitorEvents(
        pb.WatchMonitorEventsRequest(include_results=True), metadata=replicas.role("alert"), timeout=30
    )
    received: queue.Queue[Any] = queue.Queue()

    def read(stream: Any, tag: str) -> None:
        try:
            for message in stream:
                received.put((tag, message))
        except grpc.RpcError:
            pass

    for stream, tag in ((statuses, "status"), (events, "events")):
        threading.Thread(target=read, args=(stream, tag), daemon=True).start()
    try:
        eventually(lambda: monitor.id in runner.ids(), timeout_s=5)
        snapshot_done = False
        while not snapshot_done:
            tag, message = received.get(timeout=10)
            snapshot_done = tag == "events" and message.snapshot_complete
        at = datetime.now(UTC)
        assert runner.report(result(monitor.id, at, up=False)).accepted == 1  # to replica b
        replicas.stub("b").PauseMonitor(pb.PauseMonitorRequest(id=monitor.id), metadata=replicas.key, timeout=10)
        wanted: dict[str, Callable[[str, Any], bool]] = {
            "down on a's status stream": lambda t, m: t == "status" and m.state == common_pb2.MONITOR_STATE_DOWN,
            "paused on a's status stream": lambda t, m: t == "status" and m.state == common_pb2.MONITOR_STATE_PAUSED,
            "the result on a's event feed": lambda t, m: (
                t == "events" and any(r.monitor_id == monitor.id and r.fields["is_up"] == 0 for r in m.results)
            ),
            "paused on a's event feed": lambda t, m: (
                t == "events"
                and any(i.monitor_id == monitor.id and i.state == common_pb2.MONITOR_STATE_PAUSED for i in m.monitors)
            ),
        }
        deadline = time.monotonic() + 5
        while wanted and time.monotonic() < deadline:
            try:
                tag, message = received.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            for name, matches in list(wanted.items()):
                if matches(tag, message):
                    del wanted[name]
        assert not wanted, sorted(wanted)
    finally:
        statuses.cancel()
        events.cancel()
        runner.leave()
        replicas.stub("a").DeleteMonitor(pb.DeleteMonitorRequest(id=monitor.id), metadata=replicas.key, timeout=10)


def test_results_of_one_monitor_reported_to_both_replicas_at_once_lose_nothing_and_repeat_nothing(
    replicas: Replicas, influxdb: InfluxDBServer
) -> None:
    """Two locations of one monitor report to two replicas at once, each result in its own call, as fast as
    they can: each location's failures are all counted (a status read by both replicas at once and written by
    both would lose one's update). Then each batch is resent to the other replica (a runner whose replica died
    before answering): nothing is counted or stored twice."""
    east = TestRunner(replicas, "a", "serial-a", location="east")
    west = TestRunner(replicas, "b", "serial-b", location="west")
    monitor = (
        replicas.stub("a")
        .CreateMonitor(
            pb.CreateMonitorRequest(monitor=website("serial", "east", "west")), metadata=replicas.key, timeout=10
        )
        .monitor
    )
    try:
        eventually(lambda: monitor.id in east.ids() and monitor.id in west.ids(), timeout_s=5)
        per_location = 40
        start = datetime.now(UTC) - timedelta(minutes=5)
        batches = {
            runner.location: [result(monitor.id, start + timedelta(seconds=n), up=False) for n in range(per_location)]
            for runner in (east, west)
        }

        def send(runner: TestRunner) -> None:
            for one in batches[runner.location]:
                assert runner.report(one).accepted == 1

        threads = [threading.Thread(target=send, args=(runner,)) for runner in (east, west)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        status = (
            replicas.stub("b")
            .GetMonitorStatus(pb.GetMonitorStatusRequest(id=monitor.id), metadata=replicas.key, timeout=10)
            .status
        )
        failures = stored_failures(replicas, monitor.id)
        assert failures == {"east": per_location, "west": per_location}, failures
        last = {r.location: r.check_time.ToDatetime(UTC) for r in status.location_results}
        assert last == {"east": start + timedelta(seconds=per_location - 1)} | {
            "west": start + timedelta(seconds=per_location - 1)
        }
        assert status.state == common_pb2.MONITOR_STATE_DOWN
        assert samples_in(influxdb, monitor.id) == 2 * per_location

        # Resent to the other replica: each is a repeat there too.
        for runner, other in ((east, "b"), (west, "a")):
            resend = pb.ReportResultsRequest(runner_id=runner.runner_id, results=batches[runner.location])
            replicas.stub(other).ReportResults(iter([resend]), metadata=replicas.role("runner"), timeout=10)
        assert stored_failures(replicas, monitor.id) == failures
        assert samples_in(influxdb, monitor.id) == 2 * per_location
    finally:
        east.leave()
        west.leave()
        replicas.stub("a").DeleteMonitor(pb.DeleteMonitorRequest(id=monitor.id), metadata=replicas.key, timeout=10)


def test_replicas_cut_off_from_redis_catch_up_once_it_answers_again(
    tmp_path: Path, mariadb: MariaDBServer, influxdb: InfluxDBServer
) -> None:
    """Redis down: each replica goes on serving its own runners and users (nothing waits on Redis), and the
    notices of changes made meanwhile are lost. Once Redis answers again, the replicas reload from the database:
    the runner on a gets its share of the monitors created through b, and a user's WatchMonitorStatus on a
    hears of the result reported to b."""
    (tmp_path / "redis").mkdir()
    with RedisServer(tmp_path / "redis") as redis:
        env = production_env(mariadb, redis, influxdb, "monitor_replicas_outage")
        with running_replicas(tmp_path, env, mariadb) as replicas:
            east = TestRunner(replicas, "a", "outage-a")
            west = TestRunner(replicas, "b", "outage-b")
            watch = replicas.stub("a").WatchMonitorStatus(
                pb.WatchMonitorStatusRequest(), metadata=replicas.key, timeout=60
            )
            changes: queue.Queue[pb.WatchMonitorStatusResponse] = queue.Queue()

            def read() -> None:
                with contextlib.suppress(grpc.RpcError):
                    for change in watch:
                        changes.put(change)

            threading.Thread(target=read, daemon=True).start()
            try:
                # Both replicas know both runners before Redis goes.
                eventually(
                    lambda: (
                        len(
                            replicas.stub("b")
                            .GetDeploymentStatus(
                                pb.GetDeploymentStatusRequest(), metadata=replicas.role("operator"), timeout=10
                            )
                            .runners
                        )
                        == 2
                    ),
                    timeout_s=5,
                )
                # A monitor checked by a's runner, to be changed through b while Redis is away.
                early = [
                    replicas.stub("a")
                    .CreateMonitor(
                        pb.CreateMonitorRequest(monitor=website(f"outage/early/{n}")), metadata=replicas.key, timeout=10
                    )
                    .monitor.id
                    for n in range(6)
                ]
                eventually(lambda: east.ids() & set(early), timeout_s=5)
                edited = sorted(east.ids() & set(early))[0]
                redis.stop()
                moved = website("outage/edited")
                moved.id = edited
                replicas.stub("b").UpdateMonitor(
                    pb.UpdateMonitorRequest(monitor=moved, update_mask=field_mask_pb2.FieldMask(paths=["spec"])),
                    metadata=replicas.key,
                    timeout=10,
                )
                started = time.monotonic()
                ids = [
                    replicas.stub("b")
                    .CreateMonitor(
                        pb.CreateMonitorRequest(monitor=website(f"outage/{n}")), metadata=replicas.key, timeout=10
                    )
                    .monitor.id
                    for n in range(12)
                ]
                assert time.monotonic() - started < 5  # no call waited out Redis's timeouts
                # b's runner gets its share at once; a's waits for Redis.
                eventually(lambda: west.ids() & set(ids), timeout_s=5)
                on_west = sorted(west.ids() & set(ids))[0]
                at = datetime.now(UTC)
                assert west.report(result(on_west, at, up=False)).accepted == 1
                time.sleep(2)
                assert not east.ids() & set(ids)
                redis.start()

                # Each monitor with one runner again, both runners with some (a restarted Redis's registry fills
                # again as each replica renews its entry; until then each gives every monitor to its own runner).
                def shared() -> bool:
                    mine, theirs = east.ids() & set(ids), west.ids() & set(ids)
                    return bool(mine and theirs and not mine & theirs and mine | theirs == set(ids))

                eventually(shared, timeout_s=10)
                # The monitor changed meanwhile is checked as changed (its runner had kept the old spec).
                eventually(lambda: east.url_of(edited).endswith("/outage/edited"), timeout_s=5)
                deadline = time.monotonic() + 10
                heard = False
                while not heard and time.monotonic() < deadline:
                    with contextlib.suppress(queue.Empty):
                        change = changes.get(timeout=0.5)
                        heard = change.monitor_id == on_west and change.state == common_pb2.MONITOR_STATE_DOWN
                assert heard, "a's status stream never heard of the result reported to b"
            finally:
                watch.cancel()
                east.leave()
                west.leave()


async def test_a_replica_further_behind_than_the_stream_keeps_reloads_rather_than_miss_notices(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas' fan-out on a real Redis, in this process, with a stream cap of about 10 notices (Redis trims
    a whole node of 100 at a time) and pages of 5: one replica reads nothing while the other sends 500 changes,
    so the stream drops notices it never read; when it reads again it reloads from the database (its resync)
    instead of applying what is left as if it were all."""
    monkeypatch.setattr(replicas_module, "STREAM_MAXLEN", 10)
    monkeypatch.setattr(replicas_module, "READ_COUNT", 5)
    changed: list[str] = []
    resyncs: list[float] = []

    async def nothing() -> list[Any]:
        return []

    async def record(results: Any) -> None:
        return None

    async def change(monitor_id: str) -> None:
        changed.append(monitor_id)

    async def recorded(samples: Any, ids: Any) -> None:
        return None

    async def resync() -> None:
        resyncs.append(time.monotonic())

    database = f"mysql+pymysql://u:p@127.0.0.1:1/behind_{time.monotonic_ns()}"  # names the deployment only
    reader = RedisReplicas(
        redis_server.url, database, AssignmentHub(nothing, record), change, recorded, resync, name="r"
    )
    sender = RedisReplicas(
        redis_server.url, database, AssignmentHub(nothing, record), change, recorded, resync, name="s"
    )
    await reader.start()
    await sender.start()
    sending = asyncio.create_task(sender.send_forever())
    try:
        await sender.monitor_changed("mon_first")
        reading = asyncio.create_task(reader.run())
        await until_true(lambda: changed == ["mon_first"])
        reading.cancel()
        for n in range(500):
            await sender.monitor_changed(f"mon_{n:03d}")
        await until_true(lambda: sender.outbox_empty())
        await asyncio.sleep(0.2)
        assert not resyncs
        reading = asyncio.create_task(reader.run())
        await until_true(lambda: bool(resyncs))
        reading.cancel()
    finally:
        sending.cancel()
        await reader.close()
        await sender.close()


async def until_true(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not true in time"
        await asyncio.sleep(0.02)
