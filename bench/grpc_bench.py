"""Unary RPC throughput and tail latency of one service process, through the full interceptor chain.

Starts a real monitor service process (embedded: SQLite), creates an API key with the admin command, then
drives authenticated ``AccountService.GetCurrentUser`` calls (auth interceptor + a database read) from a
separate client process: first closed-loop for throughput, then open-loop at a steady 1,000 RPS for p99.
Writes ``bench/results/grpc.json``: ``unary_rps``, ``p99_ms_at_1000_rps`` and the details behind them.

    make bench            # or: .venv/bin/python -m bench.grpc_bench [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.harness.services import REPO, ServiceProcess, python_env

RESULTS = REPO / "bench" / "results" / "grpc.json"


def load(mode: str, target: str, key: str, env: dict[str, str], **options: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.grpc_load", mode, "--target", target, "--key", key]
    for name, value in options.items():
        command += [f"--{name}", str(value)]
    output = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, check=True, timeout=600)
    return dict(json.loads(output.stdout))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        env = python_env({"MONITORS_DATA_DIR": data_dir, "MONITORS_LOG_LEVEL": "INFO"})
        server = ServiceProcess("monitor", env, Path(data_dir) / "monitor.log")
        server.start()
        try:
            key = subprocess.run(
                [sys.executable, "-m", "services.admin", "create-api-key", "--email", "bench@example.com"],
                env=env,
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout.strip()
            load("closed", server.address, key, env, concurrency=args.concurrency, seconds=2)  # warm-up
            closed = load("closed", server.address, key, env, concurrency=args.concurrency, seconds=args.seconds)
            steady = load("open", server.address, key, env, rps=1000, seconds=args.seconds)
        finally:
            server.stop()
    figures = {
        "unary_rps": round(closed["rps"], 1),
        "p99_ms_at_1000_rps": round(steady["p99_ms"], 2),
        "p50_ms_at_1000_rps": round(steady["p50_ms"], 2),
        "max_ms_at_1000_rps": round(steady["max_ms"], 2),
        "achieved_rps_open_loop": round(steady["achieved_rps"], 1),
        "errors": closed["errors"] + steady["errors"],
        "concurrency": args.concurrency,
        "seconds_per_phase": args.seconds,
        "rpc": "AccountService.GetCurrentUser (bearer API key, full interceptor chain, SQLite read)",
        "cpus": os.cpu_count() or 0,
        "python": platform.python_version(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
