"""Webhook delivery throughput of the notification service, end to end.

Starts the three services as real processes (embedded: SQLite, logs at INFO as users run them, egress
``private-allowed`` so the service may reach loopback), a local HTTPS receiver standing in for a customer's
webhook endpoint (answers 200 at once), and one webhook channel. Then ``--notifications`` SendNotification
calls (the alert service's token, distinct idempotency keys, ``--senders`` in flight at a time) queue one delivery each,
and the clock runs from the first call until the receiver has taken the last signed POST. Every delivery
goes the whole way: committed to the queue table, leased, signed, POSTed through the SSRF-safe client,
attempt recorded.

- ``webhook_deliveries_per_s``: notifications / (time of last receipt - time of first call), one channel
  (its lane sends 8 at a time).
- ``webhook_deliveries_per_s_distinct``: the same over ``--channels`` webhook channels (one per notification
  in turn: a storm reaching many customers' endpoints), embedded; ``webhook_deliveries_per_s_mariadb``: the
  same with the services on MariaDB, Redis and InfluxDB (the harness's throwaway servers).
- ``accept_per_s``: SendNotification calls answered per second while the worker was also sending.
- ``notify_cpu_ms_per_delivery*``: CPU time of the notification service's process per delivery (the machine
  is shared with the receiver and the callers: CPU time is the steadier figure).
- ``bench_cpu_ms_per_delivery*``: CPU time of this process per delivery: the receiver's threads (TLS, HTTP
  parsing) and the callers' gRPC stubs, which share the machine's cores with the service; with
  ``mariadbd_cpu_ms_per_delivery_mariadb`` (the database server's), where the cores go besides the service.
- ``load_average*``: the machine's one-minute load average as the run started (other work on the machine
  lowers the rates, and CPU times less so).

Writes ``bench/results/notify.json``.

    make bench     # or: .venv/bin/python -m bench.notify_bench [--notifications 2000] [--channels 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from bench import merge_figures
from harness.external import InfluxDBServer, MariaDBServer, RedisServer, production_env
from harness.http import HttpServer, Reply, self_signed_certificate
from harness.rpc import auth
from harness.services import REPO, Stack
from monitors.v1 import account_service_pb2, account_service_pb2_grpc, notification_service_pb2_grpc
from monitors.v1 import notification_service_pb2 as pb

RESULTS = REPO / "bench" / "results" / "notify.json"


class CountingReceiver:
    """Counts POSTs to one path and notes when the ``expected``-th arrives."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.done = threading.Event()
        self.last_time = 0.0
        self._lock = threading.Lock()

    def __call__(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        with self._lock:
            self.count += 1
            if self.count >= self.expected and not self.done.is_set():
                self.last_time = time.perf_counter()
                self.done.set()
        return Reply(200, b"ok")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(
    notifications: int,
    senders: int,
    channels: int,
    production: dict[str, str] | None,
    database_pid: int | None = None,
) -> dict[str, object]:
    """One run: ``channels`` webhook channels of one owner, notification i to channel i mod ``channels``;
    ``database_pid``: the database server's process, whose CPU time is measured too."""
    with tempfile.TemporaryDirectory(prefix="notify-bench-") as scratch:
        directory = Path(scratch)
        certificate = self_signed_certificate(directory)
        receiver = CountingReceiver(notifications)
        env = {
            **(production or {}),
            "MONITORS_EGRESS": "private-allowed",
            "MONITORS_CA_FILE": str(certificate[0]),
            "MONITORS_LOG_LEVEL": "INFO",
            "MONITORS_MAX_CHANNELS_PER_USER": str(max(channels, 50)),
        }
        with HttpServer(certificate) as server, Stack(directory / "stack", env) as stack:
            for c in range(channels):
                server.routes[f"/hook/{c}"] = receiver
            user = auth(stack.create_api_key("bench.notify@example.com"))
            with grpc.insecure_channel(stack.address("monitor")) as channel:
                accounts = account_service_pb2_grpc.AccountServiceStub(channel)
                request = account_service_pb2.GetCurrentUserRequest()
                owner = accounts.GetCurrentUser(request, metadata=user, timeout=5).user.id
            with grpc.insecure_channel(stack.address("notify")) as channel:
                stub = notification_service_pb2_grpc.NotificationServiceStub(channel)
                channel_ids = [
                    stub.CreateChannel(
                        pb.CreateChannelRequest(
                            channel=pb.Channel(webhook=pb.WebhookConfig(url=server.url(f"/hook/{c}")))
                        ),
                        metadata=user,
                        timeout=5,
                    ).channel.id
                    for c in range(channels)
                ]
                notify = stack.services["notify"].process
                assert notify is not None
                cpu_before = cpu_seconds(notify.pid)
                own_before = time.process_time()
                database_before = cpu_seconds(database_pid) if database_pid else 0.0
                load = os.getloadavg()[0]
                alert_service = auth(stack.role_token("alert"))  # SendNotification as the alert service calls it

                def send(index: int) -> None:
                    notification = pb.Notification(
                        kind=pb.NOTIFICATION_KIND_ALERT_FIRING, alert_id=f"alr_{index}", summary="bench", value=index
                    )
                    stub.SendNotification(
                        pb.SendNotificationRequest(
                            idempotency_key=f"bench-{index}",
                            owner_id=owner,
                            channel_ids=[channel_ids[index % channels]],
                            notification=notification,
                        ),
                        metadata=alert_service,
                        timeout=30,
                    )

                started = time.perf_counter()
                with ThreadPoolExecutor(max_workers=senders) as pool:
                    list(pool.map(send, range(notifications)))
                accepted = time.perf_counter()
                if not receiver.done.wait(timeout=600):
                    raise SystemExit(f"only {receiver.count} of {notifications} deliveries arrived")
                cpu = cpu_seconds(notify.pid) - cpu_before
                own = time.process_time() - own_before
                database = cpu_seconds(database_pid) - database_before if database_pid else 0.0
                for channel_id in channel_ids[:20]:
                    failed = stub.ListDeliveries(
                        pb.ListDeliveriesRequest(channel_id=channel_id, state=pb.DELIVERY_STATE_FAILED),
                        metadata=user,
                        timeout=30,
                    ).deliveries
                    if failed:
                        raise SystemExit(f"{len(failed)} deliveries failed: {failed[0]}")
        elapsed = receiver.last_time - started
        return {
            "deliveries_per_s": round(notifications / elapsed, 1),
            "accept_per_s": round(notifications / (accepted - started), 1),
            "cpu_ms_per_delivery": round(cpu * 1000 / notifications, 3),
            "bench_cpu_ms_per_delivery": round(own * 1000 / notifications, 3),
            "database_cpu_ms_per_delivery": round(database * 1000 / notifications, 3),
            "load_average": round(load, 2),
            "seconds": round(elapsed, 2),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--notifications", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=16, help="SendNotification calls in flight at a time")
    parser.add_argument("--channels", type=int, default=200, help="webhook channels of the distinct-channel runs")
    parser.add_argument("--runs", default="one,distinct,mariadb", help="which runs (comma-separated)")
    args = parser.parse_args()
    runs = set(args.runs.split(","))
    figures: dict[str, object] = {}
    if "one" in runs:
        one = run(args.notifications, args.senders, 1, None)
        figures["webhook_deliveries_per_s"] = one["deliveries_per_s"]
        figures["accept_per_s"] = one["accept_per_s"]
        figures["notify_cpu_ms_per_delivery"] = one["cpu_ms_per_delivery"]
        figures["bench_cpu_ms_per_delivery"] = one["bench_cpu_ms_per_delivery"]
        figures["load_average"] = one["load_average"]
    if "distinct" in runs:
        distinct = run(args.notifications, args.senders, args.channels, None)
        figures["webhook_deliveries_per_s_distinct"] = distinct["deliveries_per_s"]
        figures["notify_cpu_ms_per_delivery_distinct"] = distinct["cpu_ms_per_delivery"]
        figures["bench_cpu_ms_per_delivery_distinct"] = distinct["bench_cpu_ms_per_delivery"]
        figures["load_average_distinct"] = distinct["load_average"]
    if "mariadb" in runs:
        with tempfile.TemporaryDirectory(prefix="notify-bench-servers-") as servers:
            base = Path(servers)
            for name in ("mariadb", "redis", "influxdb"):
                (base / name).mkdir()
            with (
                MariaDBServer(base / "mariadb", REPO / ".cache" / "mariadb-template") as mariadb,
                RedisServer(base / "redis") as redis,
                InfluxDBServer(base / "influxdb") as influxdb,
            ):
                production = production_env(mariadb, redis, influxdb, "notify_bench")
                on_mariadb = run(args.notifications, args.senders, args.channels, production, mariadb.pid)
        figures["webhook_deliveries_per_s_mariadb"] = on_mariadb["deliveries_per_s"]
        figures["notify_cpu_ms_per_delivery_mariadb"] = on_mariadb["cpu_ms_per_delivery"]
        figures["bench_cpu_ms_per_delivery_mariadb"] = on_mariadb["bench_cpu_ms_per_delivery"]
        figures["mariadbd_cpu_ms_per_delivery_mariadb"] = on_mariadb["database_cpu_ms_per_delivery"]
        figures["load_average_mariadb"] = on_mariadb["load_average"]
    figures |= {
        "notifications": args.notifications,
        "concurrent_senders": args.senders,
        "distinct_channels": args.channels,
        "setup": "three services as processes, local HTTPS receiver answering 200 (one thread per connection),"
        " same machine; embedded (SQLite) unless _mariadb",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    merge_figures(RESULTS, figures)


if __name__ == "__main__":
    main()
