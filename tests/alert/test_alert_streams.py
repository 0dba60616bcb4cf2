"""Live streams to watchers: a slow reader loses the oldest items, is told how many, and costs the
publisher nothing; closing ends the stream after what is buffered."""

from __future__ import annotations

import asyncio

from service_runtime.streams import Broadcast


async def test_a_slow_reader_keeps_the_newest_and_is_told_how_many_it_missed() -> None:
    broadcast: Broadcast[int] = Broadcast(size=3)
    subscription = broadcast.subscribe("usr_a")
    for item in range(10):
        broadcast.publish("usr_a", item)  # never waits, however slow the reader
    broadcast.unsubscribe(subscription)
    got = [pair async for pair in subscription]
    assert got == [(7, 7), (8, 0), (9, 0)]  # 0..6 dropped, counted on the first item read


async def test_each_watcher_sees_only_its_owners_items_that_it_accepts() -> None:
    broadcast: Broadcast[int] = Broadcast(size=100)
    evens = broadcast.subscribe("usr_a", lambda n: n % 2 == 0)
    everything = broadcast.subscribe("usr_a")
    theirs = broadcast.subscribe("usr_b")
    assert (broadcast.watched_by("usr_a"), broadcast.watched_by("usr_c"), broadcast.count("usr_a")) == (True, False, 2)
    for item in range(6):
        broadcast.publish("usr_a", item)
    broadcast.publish("usr_b", 99)
    broadcast.close_all()
    assert [n async for n, _ in evens] == [0, 2, 4]
    assert [n async for n, _ in everything] == [0, 1, 2, 3, 4, 5]
    assert [n async for n, _ in theirs] == [99]
    assert not broadcast.watched_by("usr_a")


async def test_a_waiting_reader_wakes_for_a_new_item_and_ends_when_closed() -> None:
    broadcast: Broadcast[str] = Broadcast()
    subscription = broadcast.subscribe("usr_a")

    async def read() -> list[str]:
        return [item async for item, _ in subscription]

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.01)
    broadcast.publish("usr_a", "fired")
    await asyncio.sleep(0.01)
    broadcast.close_all()  # the server drains
    assert await asyncio.wait_for(reader, 1) == ["fired"]
