"""Live streams to watchers: the alert service's evaluations and alert transitions (StreamEvaluations,
WatchAlerts) and the monitor service's state changes (WatchMonitorStatus).

A watcher may stay for hours and read slowly. Each has a bounded buffer: when it is full the oldest item is
dropped and counted, and the count rides on the next item the watcher reads, so a slow reader costs the
evaluator nothing and knows what it missed. Publishing never waits.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

DEFAULT_BUFFER = 1000


@dataclass(eq=False)
class Subscription(Generic[T]):
    """One watcher's buffer. Iterate it for ``(item, dropped_before_it)``; it ends when closed."""

    accepts: Callable[[T], bool]
    size: int = DEFAULT_BUFFER
    # Each buffered item with how many were dropped just before it; the count moves to the new head when
    # the head itself is dropped, so the reader learns of every loss with the first item after it.
    _items: deque[list[Any]] = field(default_factory=deque)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _closed: bool = False

    def offer(self, item: T) -> None:
        if self._closed or not self.accepts(item):
            return
        self._items.append([item, 0])
        if len(self._items) > self.size:
            _, carried = self._items.popleft()
            self._items[0][1] += 1 + carried
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def __aiter__(self) -> AsyncIterator[tuple[T, int]]:
        while True:
            while self._items:
                item, dropped = self._items.popleft()
                yield item, dropped
            if self._closed:
                return
            self._ready.clear()
            await self._ready.wait()


class Broadcast(Generic[T]):
    """Fan-out of one kind of item to the subscriptions of the item's owner that accept it. Indexed by owner:
    publishing costs the owner's watchers only, however many streams other users hold open."""

    def __init__(self, size: int = DEFAULT_BUFFER) -> None:
        self._size = size
        self._by_owner: dict[str, set[Subscription[T]]] = {}
        self._everyone: set[Subscription[T]] = set()  # our own watchers of every owner's items

    def watched_by(self, owner_id: str) -> bool:
        """Whether anybody listens to ``owner_id``'s items (publishers may skip building items for nobody)."""
        return owner_id in self._by_owner or bool(self._everyone)

    def count(self, owner_id: str) -> int:
        return len(self._by_owner.get(owner_id, ()))

    def subscribe(self, owner_id: str, accepts: Callable[[T], bool] = lambda _: True) -> Subscription[T]:
        subscription: Subscription[T] = Subscription(accepts, self._size)
        self._by_owner.setdefault(owner_id, set()).add(subscription)
        return subscription

    def subscribe_everyone(self, accepts: Callable[[T], bool] = lambda _: True) -> Subscription[T]:
        """Every owner's items (for the service itself, never for a user's call)."""
        subscription: Subscription[T] = Subscription(accepts, self._size)
        self._everyone.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription[T]) -> None:
        self._everyone.discard(subscription)
        for owner_id, subscriptions in list(self._by_owner.items()):
            if subscription in subscriptions:
                subscriptions.discard(subscription)
                if not subscriptions:
                    del self._by_owner[owner_id]
        subscription.close()

    def publish(self, owner_id: str, item: T) -> None:
        for subscription in self._by_owner.get(owner_id, ()):
            subscription.offer(item)
        for subscription in self._everyone:
            subscription.offer(item)

    def close_all(self) -> None:
        """End every stream (the server is draining)."""
        for subscriptions in [*self._by_owner.values(), self._everyone]:
            for subscription in list(subscriptions):
                self.unsubscribe(subscription)
