"""The runner platform port: what the monitor service asks of wherever its runners run, and the twin for runners
that someone else starts (``make run``, systemd units), where there is nothing to ask."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RunnerPod:
    """A runner's pod. ``name`` is the runner's id (the pod's name is its MONITORS_RUNNER_ID)."""

    name: str
    location: str
    ready: bool
    restarts: int


@dataclass(frozen=True)
class RunnerSet:
    """The runners of one location (a StatefulSet) and how many of them are asked for."""

    name: str
    location: str
    replicas: int


@dataclass(frozen=True)
class DedicatedRunner:
    """A dedicated monitor's runner, and the digest of what it was started with (location and secrets)."""

    monitor_id: str
    digest: str


class PlatformError(Exception):
    """The platform did not do what was asked (an API error, a timeout): the next reconcile tries again.
    ``status`` is the API's HTTP status when it answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RunnerPlatform(Protocol):
    """Lists and sizes the runners. Each call is bounded by a timeout and raises :class:`PlatformError`."""

    async def runner_pods(self) -> Sequence[RunnerPod]:
        """Every runner pod, running or not."""
        ...

    async def runner_sets(self) -> Sequence[RunnerSet]:
        """Each location's runner set."""
        ...

    async def scale(self, runner_set: RunnerSet, replicas: int) -> None:
        """Ask for ``replicas`` runners in ``runner_set``."""
        ...

    async def dedicated_runners(self) -> Sequence[DedicatedRunner]:
        """The dedicated runners there are (each with its secrets)."""
        ...

    async def start_dedicated(self, monitor_id: str, location: str, secrets: Mapping[str, str], digest: str) -> None:
        """Start a runner for ``monitor_id`` alone, in ``location``, with ``secrets`` mounted."""
        ...

    async def stop_dedicated(self, monitor_id: str) -> None:
        """Remove the dedicated runner of ``monitor_id`` and its secrets (done if there is none)."""
        ...

    async def close(self) -> None: ...


class LocalRunners:
    """Runners started outside the service: it sees them only when they connect, and sizes nothing."""

    async def runner_pods(self) -> Sequence[RunnerPod]:
        return []

    async def runner_sets(self) -> Sequence[RunnerSet]:
        return []

    async def scale(self, runner_set: RunnerSet, replicas: int) -> None:
        raise PlatformError("runners started outside the service cannot be scaled by it")

    async def dedicated_runners(self) -> Sequence[DedicatedRunner]:
        return []

    async def start_dedicated(self, monitor_id: str, location: str, secrets: Mapping[str, str], digest: str) -> None:
        raise PlatformError("runners started outside the service: it starts no dedicated runner")

    async def stop_dedicated(self, monitor_id: str) -> None:
        return None

    async def close(self) -> None:
        return None
