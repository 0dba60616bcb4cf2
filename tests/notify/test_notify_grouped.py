"""The delivery worker's grouping of store calls: sends that finish together share one transaction."""

from __future__ import annotations

import asyncio

import pytest

from services.notify_svc.delivery import Grouped


class Calls:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, items: list[int]) -> list[str]:
        self.batches.append(items)
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("store down")
        return [f"done {item}" for item in items]


async def test_calls_of_one_turn_go_in_one_batch_and_each_gets_its_own_answer() -> None:
    calls = Calls()
    grouped = Grouped(calls)

    answers = await asyncio.gather(*(grouped(i) for i in range(5)))

    assert answers == [f"done {i}" for i in range(5)]
    assert calls.batches == [[0, 1, 2, 3, 4]]


async def test_calls_made_while_a_batch_is_done_wait_for_the_next_one() -> None:
    calls = Calls()
    calls.gate.clear()
    grouped = Grouped(calls, most=3)
    first = [asyncio.create_task(grouped(i)) for i in range(2)]
    await asyncio.sleep(0.01)  # the first batch is being done
    later = [asyncio.create_task(grouped(i)) for i in range(2, 7)]
    await asyncio.sleep(0.01)
    assert calls.batches == [[0, 1]]
    assert not any(task.done() for task in first + later)

    calls.gate.set()

    assert await asyncio.gather(*first, *later) == [f"done {i}" for i in range(7)]
    assert calls.batches == [[0, 1], [2, 3, 4], [5, 6]]  # at most three at a time


async def test_a_failed_batch_fails_each_caller_and_the_next_batch_still_runs() -> None:
    calls = Calls(fail=True)
    grouped = Grouped(calls)

    results = await asyncio.gather(grouped(1), grouped(2), return_exceptions=True)

    assert [str(r) for r in results] == ["store down", "store down"]
    calls.fail = False
    assert await grouped(3) == "done 3"


async def test_a_cancelled_batch_leaves_no_caller_waiting() -> None:
    calls = Calls()
    calls.gate.clear()
    grouped = Grouped(calls)
    callers = [asyncio.create_task(grouped(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    assert grouped._task is not None

    grouped._task.cancel()

    for caller in callers:
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(caller, 1.0)


async def test_calls_within_the_linger_join_the_first_batch() -> None:
    # SendNotification's calls arrive one by one; lingering lets those in flight together share a transaction.
    calls = Calls()
    grouped = Grouped(calls, linger_s=0.2)
    first = asyncio.ensure_future(grouped(1))
    await asyncio.sleep(0.02)
    second = asyncio.ensure_future(grouped(2))
    assert [await first, await second] == ["done 1", "done 2"]
    assert calls.batches == [[1, 2]]
