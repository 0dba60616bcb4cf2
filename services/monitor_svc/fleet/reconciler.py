"""Keeps the runner fleet sized to the monitors, and says how its runners are doing.

Each location's runners are scaled to ceil(its monitors / MONITORS_MONITORS_PER_RUNNER), at least 1 and at most
MONITORS_MAX_RUNNERS_PER_LOCATION. A monitor counts in each location it names; one that names none goes to one
runner of any location (the assignment hub's rule), so those are shared out equally among the locations. Paused
and heartbeat monitors run on no runner and count nowhere.

Each pass starts from what the platform reports, not from what the last pass did: one runs after monitor changes
(a burst of them makes one pass) and every RECONCILE_S, so a failed call, or a change made while the API was
down, is made good by the next pass. Failures are logged; callers of the monitor API never see them.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace

from service_runtime.auth import Principal
from services.monitor_svc.assignments import runs_on_runners
from services.monitor_svc.domain import Monitor
from services.monitor_svc.fleet.port import PlatformError, RunnerPlatform
from services.monitor_svc.monitors import RunnerPlacement

log = logging.getLogger(__name__)

RECONCILE_S = 30.0
SETTLE_S = 0.5  # after a change, wait this long for the rest of its burst
RETRY_S = 1.0  # the first retry after a failed pass


def runners_needed(monitors: float, per_runner: int, most: int) -> int:
    """Runners for ``monitors`` at ``per_runner`` each: at least one (a location is always served), at most ``most``."""
    return max(1, min(most, math.ceil(monitors / per_runner)))


def wanted_runners(monitors: Iterable[Monitor], locations: Sequence[str], per_runner: int, most: int) -> dict[str, int]:
    """How many runners each of ``locations`` should have for ``monitors``."""
    counts: Counter[str] = Counter()
    anywhere = 0
    for monitor in monitors:
        if not runs_on_runners(monitor):
            continue
        if monitor.locations:
            counts.update(monitor.locations)
        else:
            anywhere += 1
    share = anywhere / len(locations) if locations else 0.0
    return {location: runners_needed(counts[location] + share, per_runner, most) for location in locations}


class RunnerFleet:
    """Sizes the runners through ``platform`` from the monitors (``load_monitors`` once, then each change)."""

    def __init__(
        self,
        platform: RunnerPlatform,
        load_monitors: Callable[[], Awaitable[list[Monitor]]],
        monitors_per_runner: int,
        max_runners_per_location: int,
        interval_s: float = RECONCILE_S,
        settle_s: float = SETTLE_S,
    ) -> None:
        self.platform = platform
        self._load = load_monitors
        self._per_runner = monitors_per_runner
        self._most = max_runners_per_location
        self._interval_s = interval_s
        self._settle_s = settle_s
        self._monitors: dict[str, Monitor] | None = None
        self._wake = asyncio.Event()
        self._wake.set()  # the first pass at once

    async def monitor_changed(self, monitor_id: str, monitor: Monitor | None) -> None:
        """A monitor was created, changed or deleted (``None``): reconcile soon."""
        if self._monitors is not None:
            if monitor is None:
                self._monitors.pop(monitor_id, None)
            else:
                self._monitors[monitor_id] = monitor
        self._wake.set()

    async def reconcile(self) -> None:
        """One pass: scale each location's runners to fit its monitors. Raises :class:`PlatformError`."""
        if self._monitors is None:
            self._monitors = {m.id: m for m in await self._load()}
        runner_sets = await self.platform.runner_sets()
        wanted = wanted_runners(
            self._monitors.values(), [s.location for s in runner_sets], self._per_runner, self._most
        )
        for runner_set in runner_sets:
            replicas = wanted[runner_set.location]
            if runner_set.replicas != replicas:
                log.info(
                    "scaling runners",
                    extra={"runner_set": runner_set.name, "from": runner_set.replicas, "to": replicas},
                )
                await self.platform.scale(runner_set, replicas)

    async def run(self) -> None:
        """Reconcile after changes and every ``interval_s``, until cancelled; failures are logged and retried."""
        wait_s = self._interval_s
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), wait_s)
                await asyncio.sleep(self._settle_s)
            except TimeoutError:
                pass
            self._wake.clear()
            # After a failure, again soon (1 s, doubling up to the interval), not only at the next change.
            retry_s = RETRY_S if wait_s >= self._interval_s else min(wait_s * 2, self._interval_s)
            try:
                await self.reconcile()
                wait_s = self._interval_s
            except PlatformError as error:  # an outage of the API: one line
                log.warning("runner fleet not reconciled; retrying", extra={"error": str(error), "in_s": retry_s})
                wait_s = retry_s
            except Exception:
                log.exception("runner fleet not reconciled; retrying", extra={"in_s": retry_s})
                wait_s = retry_s

    async def describe(self, placed: Sequence[RunnerPlacement], caller: Principal) -> list[RunnerPlacement]:
        """``placed`` (the connected runners ``caller`` may see) with their pods' readiness and restarts, and for an
        operator the runner pods that are not connected too. Without an answer from the platform, ``placed``."""
        try:
            pods = await self.platform.runner_pods()
        except PlatformError as error:
            log.warning("runner pods not listed", extra={"error": str(error)})
            return list(placed)
        by_name = {pod.name: pod for pod in pods}
        shown = [
            replace(runner, ready=by_name[runner.runner_id].ready, restarts=by_name[runner.runner_id].restarts)
            if runner.runner_id in by_name
            else runner
            for runner in placed
        ]
        if caller.service:
            connected = {runner.runner_id for runner in placed}
            shown += [
                RunnerPlacement(pod.name, pod.location, None, None, 0, "", ready=pod.ready, restarts=pod.restarts)
                for pod in pods
                if pod.name not in connected
            ]
        return sorted(shown, key=lambda runner: runner.runner_id)
