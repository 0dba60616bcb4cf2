"""What the MCP adapter adds to a call: tool-call latency minus the latency of the gRPC call it makes.

Starts a real monitor service (embedded), creates an API key and one monitor, then alternates, one call in flight
at a time: ``MonitorService.GetMonitor`` straight over gRPC (grpc.aio, bearer key, a deadline) and the
``get_monitor`` tool, which makes exactly that call, through the adapter as a subprocess over stdio, then over
streamable HTTP (bearer key, verified with AccountService and cached). Alternating keeps the machine's drift
out of the difference. The overhead at a percentile is the tool's latency there minus the direct call's. The
client is the official ``mcp`` Python client in this process, so its own JSON work is counted too.

Target: tool_overhead_p99_ms <= 5 over stdio. Writes ``bench/results/mcp.json``.

    make bench            # or: .venv/bin/python -m bench.mcp_bench [--calls 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import httpx
import httpx2
from mcp.client import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from bench import write_figures
from harness.services import REPO, ServiceProcess, create_api_key, free_port, python_env
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc

RESULTS = REPO / "bench" / "results" / "mcp.json"


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


async def paired_latencies(
    direct: Callable[[], Awaitable[object]], tool: Callable[[], Awaitable[object]], calls: int, warm_up: int = 50
) -> tuple[list[float], list[float]]:
    """Milliseconds of ``calls`` direct calls and ``calls`` tool calls, alternating, after a warm-up of each."""
    for _ in range(warm_up):
        await direct()
        await tool()
    direct_ms, tool_ms = [], []
    for _ in range(calls):
        start = time.perf_counter()
        await direct()
        direct_ms.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        await tool()
        tool_ms.append((time.perf_counter() - start) * 1000)
    return sorted(direct_ms), sorted(tool_ms)


@asynccontextmanager
async def stdio_session(env: dict[str, str], log: Path) -> AsyncIterator[ClientSession]:
    parameters = StdioServerParameters(command=sys.executable, args=["-m", "mcp_adapter"], env=env, cwd=str(REPO))
    with log.open("a") as errlog:
        async with stdio_client(parameters, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


@asynccontextmanager
async def http_session(env: dict[str, str], key: str, log: Path) -> AsyncIterator[ClientSession]:
    port = free_port()
    command = [sys.executable, "-m", "mcp_adapter", "--transport", "http", "--port", str(port)]
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            *command, env=env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=1) as probe:
            while True:
                try:
                    if (await probe.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or process.returncode is not None:
                        raise
                await asyncio.sleep(0.1)
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as client,
            streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=client) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=15)


async def measure(server: ServiceProcess, key: str, work: Path, calls: int) -> dict[str, object]:
    metadata = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = monitor_service_pb2_grpc.MonitorServiceStub(channel)
        created = await stub.CreateMonitor(
            monitor_service_pb2.CreateMonitorRequest(
                monitor=monitor_service_pb2.Monitor(
                    spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url="https://bench.example"))
                )
            ),
            metadata=metadata,
            timeout=10,
        )
        monitor_id = created.monitor.id
        request = monitor_service_pb2.GetMonitorRequest(id=monitor_id)

        async def direct() -> object:
            return await stub.GetMonitor(request, metadata=metadata, timeout=10)

        env = {
            **python_env({"MONITORS_MONITOR_TARGET": server.address}),
            "MONITORS_API_KEY": key,
        }
        figures: dict[str, object] = {}
        for transport in ("stdio", "http"):
            context = (
                stdio_session(env, work / "stdio.log")
                if transport == "stdio"
                else http_session({k: v for k, v in env.items() if k != "MONITORS_API_KEY"}, key, work / "http.log")
            )
            async with context as session:

                async def tool(session: ClientSession = session) -> object:
                    result = await session.call_tool("get_monitor", {"monitor_id": monitor_id})
                    if result.is_error:
                        raise RuntimeError(f"get_monitor failed: {result.content}")
                    return result

                direct_ms, tool_ms = await paired_latencies(direct, tool, calls)
            prefix = "" if transport == "stdio" else "http_"
            for name, fraction in (("p50", 0.50), ("p99", 0.99)):
                figures[f"{prefix}tool_overhead_{name}_ms"] = round(
                    percentile(tool_ms, fraction) - percentile(direct_ms, fraction), 2
                )
                figures[f"{prefix}tool_{name}_ms"] = round(percentile(tool_ms, fraction), 2)
                figures[f"{prefix}grpc_{name}_ms"] = round(percentile(direct_ms, fraction), 2)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000, help="measured calls per transport (each kind)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = python_env({"MONITORS_DATA_DIR": str(work / "data"), "MONITORS_LOG_LEVEL": "INFO"})
        server = ServiceProcess("monitor", env, work / "monitor.log")
        server.start()
        try:
            key = create_api_key(env, "bench@example.com")
            figures = asyncio.run(measure(server, key, work, args.calls))
        finally:
            server.stop()
    ordered = {
        key: figures[key] for key in ("tool_overhead_p50_ms", "tool_overhead_p99_ms", "http_tool_overhead_p99_ms")
    }
    ordered.update(figures)
    ordered.update(
        {
            "calls_per_transport": args.calls,
            "tool": "get_monitor (one MonitorService.GetMonitor call)",
            "baseline": "MonitorService.GetMonitor over grpc.aio from the benchmark process, alternating",
            "client": "official mcp Python client (stdio subprocess; streamable HTTP with a bearer key)",
            "target_tool_overhead_p99_ms": 5.0,
            "cpus": os.cpu_count() or 0,
            "python": platform.python_version(),
        }
    )
    write_figures(RESULTS, ordered)


if __name__ == "__main__":
    main()
