"""--print-events: one JSON object per event on stdout; logging to stderr."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import TextIO

from fsmond.events import Event
from fsmond.publishers.outbox import Outbox


def setup_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper(), logging.INFO),
        format="fsmond %(levelname)s %(name)s: %(message)s",
    )


def event_json(event: Event) -> str:
    # surrogateescape'd bytes of odd mount point names stay visible as \udcxx
    return json.dumps(event.to_dict(), ensure_ascii=True, separators=(",", ":"))


class ConsolePublisher:
    name = "console"

    def __init__(self, stream: TextIO | None = None, queue_size: int = 100_000) -> None:
        self.outbox: Outbox[Event] = Outbox("console", queue_size)
        self._stream = stream or sys.stdout

    def publish(self, events: list[Event]) -> None:
        self.outbox.put_all(events)

    async def run(self, started: Callable[[], None]) -> None:
        started()
        while True:
            batch = await self.outbox.get_batch()
            self._stream.write("".join(event_json(e) + "\n" for e in batch))
            self._stream.flush()
