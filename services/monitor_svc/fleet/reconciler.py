"""Keeps the runner fleet sized to the monitors, and says how its runners are doing.

Each location's runners are scaled to ceil(its monitors / MONITORS_MONITORS_PER_RUNNER), at least 1 and at most
MONITORS_MAX_RUNNERS_PER_LOCATION. A monitor counts in each location it names; one that names none goes to one
runner of any location (the assignment hub's rule), so those are shared out equally among the locations. Paused
and heartbeat monitors run on no runner and count nowhere, nor do dedicated monitors: each of those has a runner of
its own (on Kubernetes a Deployment of one pod, its secrets in a Secret), started when the monitor is created or
resumed, and removed when it is deleted or paused. A change of its location or of its secrets' values starts it anew
(a keyed digest of them marks each runner).

Each pass starts from what the platform reports, not from what the last pass did: one runs after monitor changes
(a burst of them makes one pass) and every RECONCILE_S, so a failed call, or a change made while the API was
down, is made good by the next pass. Failures are logged; callers of the monitor API never see them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace

from service_runtime.auth import Principal
from services.monitor_svc.assignments import runs_on_runners
from services.monitor_svc.domain import Monitor, Placement
from services.monitor_svc.fleet.port import DedicatedRunner, PlatformError, RunnerPlatform, RunnerPod
from services.monitor_svc.monitors import RunnerPlacement

log = logging.getLogger(__name__)

RECONCILE_S = 30.0
SETTLE_S = 0.5  # after a change, wait this long for the rest of its burst
RETRY_S = 1.0  # the first retry after a failed pass
# GetDeploymentStatus, which any user may call: pods listed at most this often, and waited for at most this long.
POD_LISTING_TTL_S = 2.0
DESCRIBE_TIMEOUT_S = 3.0


def runners_needed(monitors: float, per_runner: int, most: int) -> int:
    """Runners for ``monitors`` at ``per_runner`` each: at least one (a location is always served), at most ``most``."""
    return max(1, min(most, math.ceil(monitors / per_runner)))


def wanted_runners(monitors: Iterable[Monitor], locations: Sequence[str], per_runner: int, most: int) -> dict[str, int]:
    """How many runners each of ``locations`` should have for ``monitors``."""
    counts: Counter[str] = Counter()
    anywhere = 0
    for monitor in monitors:
        if not runs_on_runners(monitor) or monitor.placement is Placement.DEDICATED:
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
        load_secrets: Callable[[Monitor], Awaitable[Mapping[str, str]]],
        digest_key: bytes,
        monitors_per_runner: int,
        max_runners_per_location: int,
        interval_s: float = RECONCILE_S,
        settle_s: float = SETTLE_S,
        location_found: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.platform = platform
        self._load = load_monitors
        self._load_secrets = load_secrets
        self._digest_key = digest_key
        self._per_runner = monitors_per_runner
        self._most = max_runners_per_location
        self._interval_s = interval_s
        self._settle_s = settle_s
        self._monitors: dict[str, Monitor] | None = None
        # Changes notified while every monitor is being read: applied over what the read returns.
        self._pending: dict[str, Monitor | None] = {}
        # Told each location that has runners: monitors may name it before its first runner connects.
        self._location_found = location_found
        self._wake = asyncio.Event()
        self._pods: tuple[float, Sequence[RunnerPod]] | None = None  # when listed, and what
        self._listing: asyncio.Future[Sequence[RunnerPod]] | None = None
        self._wake.set()  # the first pass at once

    def forget(self) -> None:
        """Read every monitor again on the next pass (after changes may have been missed)."""
        self._monitors = None
        self._pending = {}
        self._wake.set()

    async def monitor_changed(self, monitor_id: str, monitor: Monitor | None) -> None:
        """A monitor was created, changed or deleted (``None``): reconcile soon."""
        if self._monitors is None:
            self._pending[monitor_id] = monitor
        elif monitor is None:
            self._monitors.pop(monitor_id, None)
        else:
            self._monitors[monitor_id] = monitor
        self._wake.set()

    def runner_digest(self, location: str, secrets: Mapping[str, str]) -> str:
        """A keyed digest of what a dedicated runner is made with: it tells a change of its location or of its
        secrets' values, and nothing of them to who reads it."""
        text = json.dumps([location, sorted(secrets.items())])
        return hmac.new(self._digest_key, text.encode(), hashlib.sha256).hexdigest()[:32]

    async def reconcile(self) -> None:
        """One pass: scale each location's runners to fit its monitors, start and remove dedicated runners.
        Raises :class:`PlatformError` (after trying everything else)."""
        if self._monitors is None:
            read = {m.id: m for m in await self._load()}
            for monitor_id, changed in self._pending.items():  # notified during the read: newer than it
                if changed is None:
                    read.pop(monitor_id, None)
                else:
                    read[monitor_id] = changed
            self._monitors, self._pending = read, {}
        monitors = list(self._monitors.values())
        runner_sets = await self.platform.runner_sets()
        if self._location_found is not None:
            for runner_set in runner_sets:
                await self._location_found(runner_set.location)
        wanted = wanted_runners(monitors, [s.location for s in runner_sets], self._per_runner, self._most)
        failures: list[PlatformError] = []
        for runner_set in runner_sets:
            replicas = wanted[runner_set.location]
            if runner_set.replicas != replicas:
                log.info(
                    "scaling runners",
                    extra={"runner_set": runner_set.name, "from": runner_set.replicas, "to": replicas},
                )
                try:
                    await self.platform.scale(runner_set, replicas)
                except PlatformError as error:
                    failures.append(error)
        dedicated = {m.id: m for m in monitors if m.placement is Placement.DEDICATED and runs_on_runners(m)}
        running = {r.monitor_id: r for r in await self.platform.dedicated_runners()}
        default_location = next((s.location for s in sorted(runner_sets, key=lambda s: s.location != "default")), "")
        for monitor_id in sorted(running.keys() - dedicated.keys()):
            log.info("removing a dedicated runner", extra={"monitor_id": monitor_id})
            try:
                await self.platform.stop_dedicated(monitor_id)
            except PlatformError as error:
                failures.append(error)
        for monitor in dedicated.values():
            try:
                await self._ensure_dedicated(monitor, running.get(monitor.id), default_location)
            except PlatformError as error:  # one monitor's trouble holds up no other's runner
                failures.append(error)
        if failures:
            raise PlatformError("; ".join(str(error) for error in failures))

    async def _ensure_dedicated(self, monitor: Monitor, running: DedicatedRunner | None, default_location: str) -> None:
        secrets = await self._load_secrets(monitor)
        location = monitor.locations[0] if monitor.locations else default_location
        digest = self.runner_digest(location, secrets)
        if running is not None and running.digest == digest:
            return
        if running is not None:  # moved, or its secrets changed: a new pod, where it now runs, with what it reads
            log.info("restarting a dedicated runner", extra={"monitor_id": monitor.id, "location": location})
            await self.platform.stop_dedicated(monitor.id)
        else:
            log.info("starting a dedicated runner", extra={"monitor_id": monitor.id, "location": location})
        await self.platform.start_dedicated(monitor.id, location, secrets, digest)

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

    async def _runner_pods(self) -> Sequence[RunnerPod]:
        """The runner pods as listed at most POD_LISTING_TTL_S ago; calls that come while a listing is under way
        wait for it (shielded: one caller giving up does not cancel it for the others)."""
        now = time.monotonic()
        if self._pods is not None and now - self._pods[0] < POD_LISTING_TTL_S:
            return self._pods[1]
        if self._listing is None or self._listing.done():
            self._listing = asyncio.ensure_future(self._list_pods())
            # Its failure is each waiting caller's to log; when every one of them gave up, nobody's.
            self._listing.add_done_callback(lambda done: done.cancelled() or done.exception())
        return await asyncio.shield(self._listing)

    async def _list_pods(self) -> Sequence[RunnerPod]:
        pods = await self.platform.runner_pods()
        self._pods = (time.monotonic(), pods)
        return pods

    async def describe(self, placed: Sequence[RunnerPlacement], caller: Principal) -> list[RunnerPlacement]:
        """``placed`` (the connected runners ``caller`` may see) with their pods' readiness and restarts, and for an
        operator the runner pods that are not connected too. Without an answer from the platform, ``placed``."""
        try:
            async with asyncio.timeout(DESCRIBE_TIMEOUT_S):
                pods = await self._runner_pods()
        except (PlatformError, TimeoutError) as error:
            log.warning("runner pods not listed", extra={"error": str(error) or "timed out"})
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
