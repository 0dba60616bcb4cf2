"""The runner's scheduler with real checks against a real loopback listener: a bounded results queue."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from service_runtime.egress import EgressConfig, EgressPolicy
from services.monitor_svc.checks import CheckConfig, Checker
from services.monitor_svc.domain import CheckResult, TcpSpec
from services.monitor_svc.runner.scheduler import Job, Scheduler


async def test_when_results_are_not_taken_the_oldest_are_dropped_and_counted() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        checker = Checker(CheckConfig(egress=EgressConfig(policy=EgressPolicy.PRIVATE_ALLOWED)))
        results: asyncio.Queue[CheckResult] = asyncio.Queue(maxsize=3)
        scheduler = Scheduler(checker, concurrency=10, results=results)
        for i in range(8):
            scheduler.upsert(Job(f"mon_{i}", TcpSpec("127.0.0.1", port), interval_s=60, timeout_s=2, secrets={}))
        running = asyncio.create_task(scheduler.run_forever())
        try:
            for _ in range(100):
                if scheduler.checks == 8:
                    break
                await asyncio.sleep(0.05)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await checker.close()
    assert scheduler.checks == 8
    assert results.qsize() == 3
    assert scheduler.dropped == 5
    kept = [results.get_nowait().monitor_id for _ in range(3)]
    assert all(r.startswith("mon_") for r in kept)


async def test_cancelling_the_scheduler_as_it_is_woken_still_stops_it() -> None:
    """On Python 3.11, asyncio.wait_for returns the inner result when its task is cancelled in the same loop
    turn as the inner wait completes, so the cancellation is lost. A busy runner is woken constantly, and
    one given SIGTERM went on checking forever. Here the wake-up and the cancel land in one turn on purpose."""
    checker = Checker(CheckConfig(egress=EgressConfig(policy=EgressPolicy.PRIVATE_ALLOWED)))
    scheduler = Scheduler(checker, concurrency=10)
    running = asyncio.create_task(scheduler.run_forever())
    try:
        await asyncio.sleep(0.05)  # nothing to do: asleep until woken
        scheduler.upsert(Job("mon_1", TcpSpec("127.0.0.1", 9), interval_s=3600, timeout_s=2, secrets={}))
        running.cancel()
        done, _ = await asyncio.wait({running}, timeout=2)
        assert done == {running}
        assert running.cancelled()
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await scheduler.close()
        await checker.close()
