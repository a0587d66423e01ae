"""The bounded queue between the engine and a publisher."""

from __future__ import annotations

import asyncio

from fsmond.publishers.outbox import Outbox


def test_oldest_dropped_and_counted_order_kept() -> None:
    box: Outbox[int] = Outbox("t", 3)
    for i in range(5):
        box.put(i)
    assert box.dropped == 2 and box.peek_all() == [2, 3, 4]
    batch = asyncio.run(box.get_batch(2))
    assert batch == [2, 3]
    box.requeue_front(batch)  # could not be sent: back in front, in order
    box.put(5)  # bound still holds: the oldest goes
    assert box.peek_all() == [3, 4, 5] and box.dropped == 3
