"""Per-key rate limits that refuse rather than wait: a token bucket per key (a user, a ping token), in this
process's memory. Both the monitor service (heartbeat pings, RunCheck) and the notification service
(TestChannel) use it; with several replicas each keeps its own buckets, so a limit is per replica."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from service_runtime.settings import read_float, read_int


@dataclass(frozen=True)
class Rate:
    """``burst`` calls at once, then one more every ``every_s`` seconds."""

    burst: int
    every_s: float

    def from_env(self, env: Mapping[str, str], prefix: str) -> Rate:
        """This rate with ``<prefix>_BURST`` and ``<prefix>_EVERY_S`` from ``env`` where they are set;
        SettingsError naming a bad value."""
        return Rate(
            read_int(env, f"{prefix}_BURST", self.burst, minimum=1),
            read_float(env, f"{prefix}_EVERY_S", self.every_s, minimum=0.001),
        )


def wait_text(seconds: float) -> str:
    """How long to wait, for a message: "1 second", "10 seconds" (rounded up, never 0)."""
    whole = max(1, math.ceil(seconds))
    return f"{whole} second{'s' if whole > 1 else ''}"


class RateLimiter:
    """A token bucket per key: :meth:`take` spends a token or says how long until one comes. Keys whose bucket
    has refilled are dropped once the map outgrows what it held after the last pruning, so memory stays bounded
    by the keys seen within a refill time."""

    def __init__(self, rate: Rate, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key: (tokens, when they were counted)
        self._prune_at = 10_000

    def _tokens(self, key: str, now: float) -> float:
        tokens, stamp = self._buckets.get(key, (self.rate.burst, now))
        return min(float(self.rate.burst), tokens + (now - stamp) / self.rate.every_s)

    def take(self, key: str) -> float:
        """0 and a token of ``key`` is spent; else the seconds until one is there (nothing spent)."""
        now = self._clock()
        tokens = self._tokens(key, now)
        if tokens < 1:
            return (1 - tokens) * self.rate.every_s
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > self._prune_at:
            self._buckets = {k: b for k, b in self._buckets.items() if self._tokens(k, now) < self.rate.burst}
            self._prune_at = max(10_000, 2 * len(self._buckets))
        return 0.0

    def remaining(self, key: str) -> float:
        """Seconds until ``key`` has a token, without spending one (0: now)."""
        return max(0.0, (1 - self._tokens(key, self._clock())) * self.rate.every_s)

    def give_back(self, key: str) -> None:
        """The call spent its token on nothing that counts (an unknown ping token): return it."""
        now = self._clock()
        if key in self._buckets:
            self._buckets[key] = (min(float(self.rate.burst), self._tokens(key, now) + 1), now)
