"""A runner's two conversations with MonitorService: watching its assignments, reporting results."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from pathlib import Path

import grpc

from monitors.v1 import monitor_service_pb2 as pb
from monitors.v1 import monitor_service_pb2_grpc
from services.monitor_svc.domain import CheckResult
from services.monitor_svc.runner.scheduler import Job, Scheduler
from services.monitor_svc.translate import result_to_proto, spec_from_proto

log = logging.getLogger(__name__)

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),  # keep pinging on an idle assignment stream
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # gRPC's own reconnect backoff (1 s growing 1.6 times to 120 s) would decide when a runner comes back
    # after an outage of the monitor service, up to tens of seconds after it serves again: capped at 1 s.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]
# The runner's own retries of its two calls: from a quarter second, doubling, jittered, at most this long.
RETRY_MAX_S = 1.0
REPORT_DEADLINE_S = 15.0
MAX_PENDING_RESULTS = 100_000


def mounted_secrets(directory: Path) -> dict[str, str]:
    """A dedicated runner's secrets: a file per secret in ``directory`` (a Kubernetes Secret's volume: each name a
    link into the volume's own ``..data`` directory, whose entries start with dots). One that cannot be read is
    logged and left out: its monitor's checks then fail naming the missing secret, and the runner goes on."""
    found = {}
    try:
        paths = [p for p in directory.iterdir() if not p.name.startswith(".")]
        for path in paths:
            if path.is_file():
                found[path.name] = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        log.error("mounted secrets not read", extra={"directory": str(directory), "error": str(error)})
    return found


def job_of(assignment: pb.Assignment, secrets: Mapping[str, str] | None = None) -> Job | None:
    """The job of ``assignment``, with the secret values it carries, or else ``secrets`` (a dedicated runner's)."""
    monitor = assignment.monitor
    spec = spec_from_proto(monitor.spec)
    if spec is None:
        return None
    return Job(
        monitor_id=monitor.id,
        spec=spec,
        interval_s=max(1.0, monitor.interval.ToTimedelta() / timedelta(seconds=1)),
        timeout_s=max(0.1, monitor.timeout.ToTimedelta() / timedelta(seconds=1)),
        secrets=dict(assignment.secrets) or dict(secrets or {}),
    )


def _jittered(delay_s: float) -> float:
    """Between half and all of ``delay_s``: runners cut off together do not all come back in one instant."""
    return random.uniform(delay_s / 2, delay_s)


def _worth_logging(failures: int) -> bool:
    """Log the first failure of a run and then every 30th (about every 30 s at the capped backoff)."""
    return failures == 1 or failures % 30 == 0


class RunnerClient:
    """Keeps the assignment stream open (reconnecting with backoff) and sends results in batches, over
    ``channel`` (opened with :data:`CHANNEL_OPTIONS`; closed by :meth:`close`)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        token: str,
        runner_id: str,
        location: str,
        scheduler: Scheduler,
        version: str = "",
        batch_size: int = 1000,
        flush_interval_s: float = 1.0,
        on_synced: Callable[[], Awaitable[None]] | None = None,
        dedicated_monitor_id: str = "",
        secrets_dir: Path | None = None,
    ) -> None:
        self._channel = channel
        self._stub = monitor_service_pb2_grpc.MonitorServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self.runner_id = runner_id
        self.location = location
        self.scheduler = scheduler
        self.version = version
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._on_synced = on_synced
        self.dedicated_monitor_id = dedicated_monitor_id
        self._secrets_dir = secrets_dir
        self.reported = 0
        self.rejected = 0
        self.dropped = 0
        # Each monitor's last result, up or down: one that changes it is reported at once (see _urgent).
        self._last_up: dict[str, bool] = {}
        # Results taken from the scheduler and not yet accepted (the batch in flight included).
        self._pending: list[CheckResult] = []
        self._finishing = False  # stopping: send what is held at once, batching no longer waits
        self._all_reported = asyncio.Event()  # set once finishing and nothing is held

    async def watch_forever(self) -> None:
        backoff = 0.25
        failures = 0  # calls failed in a row
        request = pb.WatchAssignmentsRequest(
            runner_id=self.runner_id,
            location=self.location,
            version=self.version,
            dedicated_monitor_id=self.dedicated_monitor_id,
        )
        while True:
            try:
                # A long-lived stream: no deadline; keepalive pings notice a dead server.
                # A full set comes in pages: gathered here, and put in place only once its last page is in
                # (a stream cut half-way leaves the previous set running until the next full set).
                full_set: list[Job] | None = None
                async for change in self._stub.WatchAssignments(request, metadata=self._metadata):
                    backoff, failures = 0.25, 0
                    # Read at each change: a Secret's new values reach the volume without a restart.
                    mounted = mounted_secrets(self._secrets_dir) if self._secrets_dir else None
                    jobs = [job for job in (job_of(a, mounted) for a in change.upserts) if job is not None]
                    if change.full_sync:
                        full_set = []
                    if full_set is not None:
                        full_set.extend(jobs)
                        if change.full_sync_continues:
                            continue
                        self.scheduler.replace_all(full_set)
                        log.info("assignments synced", extra={"monitors": len(full_set), "runner_id": self.runner_id})
                        full_set = None
                        if self._on_synced is not None:
                            await self._on_synced()
                    else:
                        for job in jobs:
                            self.scheduler.upsert(job)
                        for monitor_id in change.removed_monitor_ids:
                            self.scheduler.remove(monitor_id)
                log.warning("assignment stream ended; reconnecting")
            except grpc.aio.AioRpcError as error:
                failures += 1
                if _worth_logging(failures):
                    log.warning(
                        "assignment stream failed; reconnecting",
                        extra={"code": error.code().name, "details": error.details(), "attempts": failures},
                    )
            await asyncio.sleep(_jittered(backoff))
            backoff = min(backoff * 2, RETRY_MAX_S)

    def _urgent(self, result: CheckResult) -> bool:
        """Whether ``result`` turns its monitor up or down (a first result counts when it is down): such a
        result is what an alert waits for, so it goes now rather than after the batch's flush interval."""
        last = self._last_up.get(result.monitor_id)
        self._last_up[result.monitor_id] = result.is_up
        return last != result.is_up if last is not None else not result.is_up

    @property
    def held(self) -> int:
        """Results checked and not reported yet."""
        return len(self._pending) + self.scheduler.results.qsize()

    async def finish(self, timeout_s: float) -> int:
        """For a stopping runner whose scheduler no longer checks: report what is held now, for at most
        ``timeout_s``, while :meth:`report_forever` runs (and the assignment stream is still open: the monitor
        service refuses results of a runner that has gone). Returns how many results stay unreported."""
        self._finishing = True
        if self.held:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._all_reported.wait()
        return self.held

    async def report_forever(self) -> None:
        pending = self._pending
        backoff = 0.25
        failures = 0  # calls failed in a row
        while True:
            urgent = False
            if not pending:
                first = await self.scheduler.results.get()
                urgent = self._urgent(first)
                pending.append(first)
            deadline = asyncio.get_running_loop().time() + self._flush_interval_s
            results = self.scheduler.results
            while len(pending) < self._batch_size:
                # Take what is there without waiting: a busy runner fills a batch in one go, where a timed
                # wait per result would fall behind the checks.
                while len(pending) < self._batch_size and not results.empty():
                    taken = results.get_nowait()
                    urgent = self._urgent(taken) or urgent
                    pending.append(taken)
                remaining = deadline - asyncio.get_running_loop().time()
                if urgent or self._finishing or len(pending) >= self._batch_size or remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        taken = await results.get()
                except TimeoutError:
                    break
                urgent = self._urgent(taken) or urgent
                pending.append(taken)
            batch = pending[: self._batch_size]
            try:
                reply = await self._stub.ReportResults(
                    iter(
                        [pb.ReportResultsRequest(runner_id=self.runner_id, results=[result_to_proto(r) for r in batch])]
                    ),
                    metadata=self._metadata,
                    timeout=REPORT_DEADLINE_S,
                )
            except grpc.aio.AioRpcError as error:
                failures += 1
                if _worth_logging(failures):
                    log.warning(
                        "reporting failed; will retry",
                        extra={"code": error.code().name, "pending": len(pending), "attempts": failures},
                    )
                while not self.scheduler.results.empty():  # hold everything here, so one bound applies
                    pending.append(self.scheduler.results.get_nowait())
                if len(pending) > MAX_PENDING_RESULTS:
                    self.dropped += len(pending) - MAX_PENDING_RESULTS
                    del pending[: len(pending) - MAX_PENDING_RESULTS]
                await asyncio.sleep(_jittered(backoff))
                backoff = min(backoff * 2, RETRY_MAX_S)
                continue
            backoff, failures = 0.25, 0
            self.reported += reply.accepted
            self.rejected += reply.rejected
            del pending[: len(batch)]
            if self._finishing and not self.held:
                self._all_reported.set()

    async def close(self) -> None:
        await self._channel.close()
