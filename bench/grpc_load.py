"""Load client for the gRPC benchmark, run as its own process so it never shares a core's GIL with the server.

    python -m bench.grpc_load closed --target HOST:PORT --key KEY --concurrency 64 --seconds 10
    python -m bench.grpc_load open --target HOST:PORT --key KEY --rps 1000 --seconds 10

Prints one JSON object. ``closed``: as many authenticated GetCurrentUser calls as ``concurrency`` workers
can complete. ``open``: calls started on a fixed schedule whatever the replies do; each latency counts from
the scheduled start, so a stalled server shows up in the tail (no coordinated omission).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import grpc

from monitors.v1 import account_service_pb2, account_service_pb2_grpc

DEADLINE_S = 5.0


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


async def closed_loop(target: str, key: str, concurrency: int, seconds: float) -> dict[str, float]:
    metadata = (("authorization", f"Bearer {key}"),)
    request = account_service_pb2.GetCurrentUserRequest()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = account_service_pb2_grpc.AccountServiceStub(channel)
        await stub.GetCurrentUser(request, metadata=metadata, timeout=DEADLINE_S)  # warm the connection
        done = 0
        errors = 0
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < stop_at:
                try:
                    await stub.GetCurrentUser(request, metadata=metadata, timeout=DEADLINE_S)
                    done += 1
                except grpc.aio.AioRpcError:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"calls": done, "errors": errors, "seconds": elapsed, "rps": done / elapsed}


async def open_loop(target: str, key: str, rps: float, seconds: float) -> dict[str, float]:
    metadata = (("authorization", f"Bearer {key}"),)
    request = account_service_pb2.GetCurrentUserRequest()
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = account_service_pb2_grpc.AccountServiceStub(channel)
        await stub.GetCurrentUser(request, metadata=metadata, timeout=DEADLINE_S)

        async def one(scheduled: float) -> None:
            nonlocal errors
            try:
                await stub.GetCurrentUser(request, metadata=metadata, timeout=DEADLINE_S)
                latencies.append(time.perf_counter() - scheduled)
            except grpc.aio.AioRpcError:
                errors += 1

        total = int(rps * seconds)
        interval = 1.0 / rps
        start = time.perf_counter() + 0.05
        tasks = []
        for i in range(total):
            scheduled = start + i * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "calls": len(latencies),
        "errors": errors,
        "achieved_rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["closed", "open"])
    parser.add_argument("--target", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rps", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    if args.mode == "closed":
        result = asyncio.run(closed_loop(args.target, args.key, args.concurrency, args.seconds))
    else:
        result = asyncio.run(open_loop(args.target, args.key, args.rps, args.seconds))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
