"""Several alert-service replicas: one leader evaluates every rule, standbys forward calls to it, and when the
leader dies a standby takes over within about one lease period.

First the lease itself (:class:`Leadership` on the in-process store, short leases): who leads, renewal, losing
the lease, stepping down before it can expire. Then two real alert-service processes on MariaDB, Redis and
InfluxDB with a monitor and a notification service, heartbeat monitors pinged over HTTP and a real webhook
receiver, and the leader killed with SIGKILL mid-run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from service_runtime.cache import InProcessStore
from services.alert_svc.leadership import Holder, Leadership

LEASE_S = 0.6
KEY = "alert:leader:test"


@dataclass
class Candidate:
    """A replica in miniature: its leadership, and the spans (start, end) of the terms it led."""

    name: str
    leadership: Leadership
    terms: list[list[float]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @property
    def leads(self) -> bool:
        return self.leadership.is_leader


class FlakyStore(InProcessStore):
    """A view of a shared in-process store that can be cut off (the store out of reach for one replica)."""

    def __init__(self, shared: InProcessStore) -> None:
        super().__init__()
        self._shared = shared
        self.unreachable = False

    def _reach(self) -> None:
        if self.unreachable:
            raise ConnectionError("store unreachable")

    async def get(self, key: str) -> str | None:
        self._reach()
        return await self._shared.get(key)

    async def set(
        self,
        key: str,
        value: str,
        ttl_s: float | None = None,
        *,
        only_if_absent: bool = False,
        only_if_present: bool = False,
    ) -> bool:
        self._reach()
        return await self._shared.set(key, value, ttl_s, only_if_absent=only_if_absent, only_if_present=only_if_present)

    async def renew(self, key: str, value: str, ttl_s: float) -> bool:
        self._reach()
        return await self._shared.renew(key, value, ttl_s)


def candidate(name: str, store: InProcessStore) -> Candidate:
    spans: list[list[float]] = []

    async def lead() -> None:
        spans.append([time.monotonic(), float("inf")])
        try:
            await asyncio.Event().wait()
        finally:
            spans[-1][1] = time.monotonic()

    found = Candidate(name, Leadership(store, KEY, Holder.new(f"127.0.0.1:{name}"), lead, lease_s=LEASE_S), spans)
    found.task = asyncio.create_task(found.leadership.run())
    return found


async def until(check: object, timeout_s: float = 5.0) -> float:
    """Seconds until ``check()`` holds."""
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s}s")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


def never_overlap(*candidates: Candidate) -> None:
    spans = sorted(span for c in candidates for span in c.terms)
    for before, after in zip(spans, spans[1:], strict=False):
        assert before[1] <= after[0], f"two leaders at once: {spans}"


@pytest.fixture
async def shared() -> AsyncIterator[InProcessStore]:
    store = InProcessStore()
    yield store
    await store.close()


async def stop(*candidates: Candidate) -> None:
    for c in candidates:
        assert c.task is not None
        c.task.cancel()
    await asyncio.gather(*(c.task for c in candidates if c.task is not None), return_exceptions=True)


async def test_one_candidate_leads_and_keeps_leading_while_the_other_knows_where(shared: InProcessStore) -> None:
    a = candidate("a", shared)
    await until(lambda: a.leads)
    b = candidate("b", shared)
    await until(lambda: b.leadership.standby_target is not None)
    await asyncio.sleep(LEASE_S * 4)  # renewals keep the lease through four of its lengths
    assert a.leads and not b.leads
    assert a.leadership.terms == 1 and len(a.terms) == 1 and a.terms[0][1] == float("inf")
    assert b.terms == []
    assert b.leadership.standby_target == "127.0.0.1:a"
    assert a.leadership.standby_target is None
    await stop(a, b)


async def test_a_dead_leaders_lease_moves_within_one_lease_period(shared: InProcessStore) -> None:
    a = candidate("a", shared)
    await until(lambda: a.leads)
    b = candidate("b", shared)
    await until(lambda: b.leadership.standby_target is not None)
    assert a.task is not None
    a.task.cancel()  # dies without handing the lease back
    died = time.monotonic()
    await until(lambda: b.leads)
    took = time.monotonic() - died
    # The lease runs out (at most a lease after the last renewal), then the standby's next round takes it.
    assert took <= LEASE_S * 4 / 3 + 0.2, took
    assert took >= LEASE_S / 3, took  # not before the dead leader's lease could have expired
    never_overlap(a, b)
    await stop(b)


async def test_a_leader_that_cannot_renew_steps_down_before_its_lease_expires(shared: InProcessStore) -> None:
    flaky = FlakyStore(shared)
    a = candidate("a", flaky)
    await until(lambda: a.leads)
    b = candidate("b", shared)
    await until(lambda: b.leadership.standby_target is not None)
    flaky.unreachable = True
    cut = time.monotonic()
    await until(lambda: not a.leads and a.terms[0][1] != float("inf"))  # its work cancelled too
    stepped_down = time.monotonic() - cut
    assert stepped_down <= LEASE_S * 2 / 3 + 0.1, stepped_down
    await until(lambda: b.leads)
    never_overlap(a, b)  # b began only after a's work had stopped
    assert b.terms[0][0] - a.terms[0][1] >= LEASE_S / 3 - 0.05  # and with the margin the lease leaves
    await stop(a, b)


async def test_a_leader_whose_lease_was_taken_steps_down_at_its_next_renewal(shared: InProcessStore) -> None:
    a = candidate("a", shared)
    await until(lambda: a.leads)
    await shared.set(KEY, Holder("rep_other", "127.0.0.1:other").encode(), LEASE_S * 10)
    assert await until(lambda: not a.leads) <= LEASE_S / 3 + 0.1
    await until(lambda: a.leadership.standby_target == "127.0.0.1:other")
    await stop(a)


async def test_a_released_lease_is_taken_at_the_next_round(shared: InProcessStore) -> None:
    a = candidate("a", shared)
    await until(lambda: a.leads)
    b = candidate("b", shared)
    await until(lambda: b.leadership.standby_target is not None)
    await a.leadership.release()
    assert not a.leads and a.terms[0][1] != float("inf")
    assert await until(lambda: b.leads) <= LEASE_S / 3 + 0.1
    await asyncio.sleep(LEASE_S)
    assert not a.leads  # a released replica does not campaign again
    never_overlap(a, b)
    await stop(a, b)
