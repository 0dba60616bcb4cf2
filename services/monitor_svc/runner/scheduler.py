"""Runs assigned monitors on schedule: a timer heap, jittered first runs, bounded concurrency, per-check
timeouts. Results go to a queue the reporter drains."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import random
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from services.monitor_svc.checks import Checker
from services.monitor_svc.domain import CheckResult, Spec
from services.monitor_svc.runner.metrics import SCHEDULE_LAG

log = logging.getLogger(__name__)
MAX_QUEUED_RESULTS = 100_000


@dataclass(frozen=True)
class SchedulerStats:
    """What the scheduler did since the previous :meth:`Scheduler.take_stats`."""

    checks: int
    down: int  # checks that found their monitor down
    lag_p50_s: float
    lag_p99_s: float
    lag_max_s: float
    monitors: int
    running: int


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


@dataclass(frozen=True)
class Job:
    """What the scheduler needs of a monitor."""

    monitor_id: str
    spec: Spec
    interval_s: float
    timeout_s: float
    secrets: Mapping[str, str]


class Scheduler:
    """Holds the runner's monitors and checks each every interval; at most ``concurrency`` at once."""

    def __init__(
        self, checker: Checker, concurrency: int = 500, results: asyncio.Queue[CheckResult] | None = None
    ) -> None:
        self._checker = checker
        self._jobs: dict[str, tuple[Job, int]] = {}  # monitor id -> (job, generation)
        self._heap: list[tuple[float, int, str, int]] = []  # (due, sequence, monitor id, generation)
        self._sequence = 0
        self._generation = 0
        self._slots = asyncio.Semaphore(concurrency)
        self._wakeup = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        # Bounded: while MonitorService cannot take results, the oldest go first (counted in ``dropped``).
        self.results: asyncio.Queue[CheckResult] = results or asyncio.Queue(maxsize=MAX_QUEUED_RESULTS)
        self.dropped = 0
        # Seconds between each check's due time and its start, since the last take_stats (at most 100,000).
        self.lags: deque[float] = deque(maxlen=100_000)
        self.checks = 0
        self.down = 0
        self._checks_reported = 0
        self._down_reported = 0

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def running_checks(self) -> int:
        return len(self._running)

    def replace_all(self, jobs: list[Job]) -> None:
        """A full sync: exactly these jobs from now on."""
        wanted = {job.monitor_id for job in jobs}
        for monitor_id in [m for m in self._jobs if m not in wanted]:
            self.remove(monitor_id)
        for job in jobs:
            self.upsert(job, spread=True)

    def upsert(self, job: Job, spread: bool = False) -> None:
        """Add or change a job; a changed one runs again at once. A new one runs within a second, or with
        ``spread`` (a full sync: a runner starting, or taking over another's monitors) anywhere in its first
        interval (at most a minute), so a burst of assignments does not fire at once."""
        previous = self._jobs.get(job.monitor_id)
        if previous is not None and previous[0] == job:
            return
        self._generation += 1
        self._jobs[job.monitor_id] = (job, self._generation)
        now = time.monotonic()
        if previous is not None:
            first = now
        else:
            first = now + random.uniform(0, min(job.interval_s, 60.0) if spread else min(job.interval_s, 1.0))
        self._push(first, job.monitor_id, self._generation)

    def remove(self, monitor_id: str) -> None:
        self._jobs.pop(monitor_id, None)  # its heap entries are skipped as stale

    def _push(self, due: float, monitor_id: str, generation: int) -> None:
        self._sequence += 1
        heapq.heappush(self._heap, (due, self._sequence, monitor_id, generation))
        self._wakeup.set()

    async def run_forever(self) -> None:
        while True:
            self._wakeup.clear()
            now = time.monotonic()
            while self._heap and self._heap[0][0] <= now:
                due, _, monitor_id, generation = heapq.heappop(self._heap)
                current = self._jobs.get(monitor_id)
                if current is None or current[1] != generation:
                    continue  # removed or replaced since it was queued
                job = current[0]
                # Fixed rate: the next run is due one interval after this one was due, not after it ends.
                self._push(max(due + job.interval_s, now), monitor_id, generation)
                await self._slots.acquire()
                task = asyncio.create_task(self._check(job, due))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
                now = time.monotonic()
            delay = self._heap[0][0] - time.monotonic() if self._heap else 3600.0
            # asyncio.timeout, never wait_for: on Python 3.11 wait_for loses a cancellation that arrives in the
            # same loop turn as the wake-up, and a busy runner given SIGTERM went on checking forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, delay)):
                    await self._wakeup.wait()

    async def _check(self, job: Job, due: float) -> None:
        try:
            started = time.monotonic()
            self.lags.append(started - due)
            SCHEDULE_LAG.observe(started - due)
            at = datetime.now(UTC)
            outcome = await self._checker.run(job.spec, job.timeout_s, job.secrets)
            self.checks += 1
            self.down += not outcome.is_up
            if self.results.full():
                self.results.get_nowait()
                self.dropped += 1
            self.results.put_nowait(outcome.result(job.monitor_id, at))
        except Exception:  # a check must never take the scheduler down
            log.exception("check crashed", extra={"monitor_id": job.monitor_id})
        finally:
            self._slots.release()

    def take_stats(self) -> SchedulerStats:
        """Checks finished and schedule lag percentiles since the previous call."""
        lags = sorted(self.lags)
        self.lags.clear()
        checks, self._checks_reported = self.checks - self._checks_reported, self.checks
        down, self._down_reported = self.down - self._down_reported, self.down
        return SchedulerStats(
            checks=checks,
            down=down,
            lag_p50_s=_percentile(lags, 0.50),
            lag_p99_s=_percentile(lags, 0.99),
            lag_max_s=lags[-1] if lags else 0.0,
            monitors=len(self._jobs),
            running=len(self._running),
        )

    async def close(self, wait_s: float = 0.0) -> None:
        """Cancel the checks still running, once they had up to ``wait_s`` to finish (their results queued)."""
        if self._running and wait_s > 0:
            await asyncio.wait(set(self._running), timeout=wait_s)
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
