"""A bounded queue between the engine and one publisher.

Each publisher has its own, so a slow one (a broker far away) never stalls
another (D-Bus). When it is full the oldest item is dropped and counted:
for a monitoring daemon the newest news matters most, and the count says
exactly how much was lost (GetStatus, the log).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Outbox(Generic[T]):
    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self._items: deque[T] = deque()
        self._size = max(1, size)
        self._ready = asyncio.Event()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        if len(self._items) >= self._size:
            self._items.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("%s queue full: %d oldest items dropped so far",
                            self.name, self.dropped)
        self._items.append(item)
        self._ready.set()

    def put_all(self, items: Iterable[T]) -> None:
        for item in items:
            self.put(item)

    async def get_batch(self, limit: int = 1000) -> list[T]:
        """Wait for at least one item, then take up to `limit` in order."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        n = min(limit, len(self._items))
        return [self._items.popleft() for _ in range(n)]

    def peek_all(self) -> list[T]:
        return list(self._items)

    def requeue_front(self, items: list[T]) -> None:
        """Put back items a publisher could not send (order kept, bound kept)."""
        self._items.extendleft(reversed(items))
        while len(self._items) > self._size:
            self._items.popleft()
            self.dropped += 1
        if self._items:
            self._ready.set()
