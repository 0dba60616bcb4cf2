"""One tenant's RunChecks against another tenant's calls: does a heavy check slow the API down for everyone?

Starts a real monitor service process (embedded, ``MONITORS_EGRESS=private-allowed`` so it may reach the
loopback target), a target process serving an 860 KB JSON document, and API keys for ``--users`` attackers
and one bystander. Then, for ``--seconds`` each:

- idle: the bystander's ``AccountService.GetCurrentUser`` latency with nothing else running;
- attack: every attacker keeps ``--per-user`` RunChecks of the JSON document in flight (a JSON-path
  assertion, so the body is parsed and the path evaluated), ``--users`` x ``--per-user`` at once, while the
  bystander keeps calling GetCurrentUser.

The bystander runs in a process of its own, one call at a time, so its figures are the server's, not the
load generator's. Writes ``bench/results/runcheck.json``: the bystander's p50, p90 and max latency idle and
under attack, the RunChecks answered per second and how many were refused RESOURCE_EXHAUSTED.

    .venv/bin/python -m bench.runcheck_bench [--seconds 10] [--users 10] [--per-user 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc

from bench import write_figures
from harness.services import REPO, ServiceProcess, create_api_key, free_port, python_env
from monitors.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    common_pb2,
    monitor_service_pb2,
    monitor_service_pb2_grpc,
)

RESULTS = REPO / "bench" / "results" / "runcheck.json"
ITEMS = 11000  # about 860 KB of JSON


def document() -> bytes:
    items = [{"id": i, "name": f"item-{i:05d}", "tags": ["a", "b", "c"], "price": i * 1.25} for i in range(ITEMS)]
    return json.dumps({"items": items, "count": ITEMS}).encode()


def serve_target(port: int) -> None:
    """The target process: the JSON document on every path."""
    body = document()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def probe(address: str, key: str, seconds: float) -> None:
    """The bystander process: GetCurrentUser one call at a time; prints the latencies (ms) as JSON."""
    metadata = (("authorization", f"Bearer {key}"),)
    latencies = []
    with grpc.insecure_channel(address) as channel:
        stub = account_service_pb2_grpc.AccountServiceStub(channel)
        stub.GetCurrentUser(account_service_pb2.GetCurrentUserRequest(), metadata=metadata, timeout=30)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.perf_counter()
            stub.GetCurrentUser(account_service_pb2.GetCurrentUserRequest(), metadata=metadata, timeout=30)
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.02)
    print(json.dumps(latencies))


def start_probe(address: str, key: str, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.runcheck_bench", "--probe", address, key, str(seconds)],
        env=python_env({}),
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )


def latency_figures(prefix: str, latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        f"{prefix}_calls": len(ordered),
        f"{prefix}_p50_ms": round(statistics.median(ordered), 2),
        f"{prefix}_p90_ms": round(ordered[int(len(ordered) * 0.9)], 2),
        f"{prefix}_max_ms": round(ordered[-1], 2),
    }


async def attack(address: str, keys: list[str], per_user: int, url: str, seconds: float) -> dict[str, int]:
    """Every key keeps ``per_user`` RunChecks in flight for ``seconds``; counts answers by status."""
    spec = common_pb2.MonitorSpec(
        website=common_pb2.WebsiteSpec(
            url=url,
            json_path=common_pb2.JsonPathAssertion(
                path=f"$.items[{ITEMS - 1}].name",
                operator=common_pb2.COMPARISON_OPERATOR_EQUAL,
                expected=f"item-{ITEMS - 1:05d}",
            ),
        )
    )
    counts: dict[str, int] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = monitor_service_pb2_grpc.MonitorServiceStub(channel)
        end = time.monotonic() + seconds

        async def one_user(key: str) -> None:
            metadata = (("authorization", f"Bearer {key}"),)
            while time.monotonic() < end:
                try:
                    reply = await stub.RunCheck(
                        monitor_service_pb2.RunCheckRequest(spec=spec), metadata=metadata, timeout=60
                    )
                    outcome = "up" if reply.result.is_up else f"down:{reply.result.message[:40]}"
                except grpc.aio.AioRpcError as error:
                    outcome = error.code().name
                    if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        await asyncio.sleep(0.05)  # as a client told to back off would, briefly
                counts[outcome] = counts.get(outcome, 0) + 1

        await asyncio.gather(*(one_user(key) for key in keys for _ in range(per_user)))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--per-user", type=int, default=4)
    parser.add_argument("--probe", nargs=3, metavar=("ADDRESS", "KEY", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(args.probe[0], args.probe[1], float(args.probe[2]))
        return
    with tempfile.TemporaryDirectory(prefix="runcheck-bench-") as temp:
        work = Path(temp)
        env = python_env(
            {
                "MONITORS_DATA_DIR": str(work / "data"),
                "MONITORS_EGRESS": "private-allowed",
                "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}",
                # RunCheck's per-user rate would refuse nearly all of the attack after its burst: lifted, so the
                # figures say what many checks at once cost another user (as from many users, each within it).
                "MONITORS_RUN_CHECK_BURST": "1000000",
            }
        )
        server = ServiceProcess("monitor", env, work / "monitor.log")
        target_port = free_port()
        target = subprocess.Popen(
            [sys.executable, "-c", f"from bench.runcheck_bench import serve_target; serve_target({target_port})"],
            env=python_env({}),
            cwd=REPO,
        )
        server.start()
        try:
            keys = [create_api_key(env, f"user{i}@example.com") for i in range(args.users + 1)]
            bystander, attackers = keys[0], keys[1:]
            idle = start_probe(server.address, bystander, args.seconds)
            idle_latencies = json.loads(idle.communicate(timeout=args.seconds + 60)[0])
            load_before = os.getloadavg()
            busy = start_probe(server.address, bystander, args.seconds)
            url = f"http://127.0.0.1:{target_port}/items.json"
            counts = asyncio.run(attack(server.address, attackers, args.per_user, url, args.seconds))
            busy_latencies = json.loads(busy.communicate(timeout=args.seconds + 60)[0])
            load_after = os.getloadavg()
        finally:
            server.stop()
            target.terminate()
            target.wait()
    answered = sum(n for outcome, n in counts.items() if outcome != "RESOURCE_EXHAUSTED")
    figures: dict[str, Any] = {
        "document_bytes": len(document()),
        "attackers": args.users,
        "in_flight_per_attacker": args.per_user,
        "seconds": args.seconds,
        **latency_figures("idle", idle_latencies),
        **latency_figures("attack", busy_latencies),
        "runchecks_answered_per_s": round(answered / args.seconds, 1),
        "runcheck_outcomes": counts,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
    }
    write_figures(RESULTS, figures)


if __name__ == "__main__":
    main()
