"""--print-events: one JSON object per event on stdout; logging to stderr."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from typing import TextIO

from fsmond.engine.step import Step
from fsmond.events import Event
from fsmond.publishers.outbox import Outbox

# sd-daemon(3)'s "<N>" line prefixes: the first level a record reaches (else 7, debug).
PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
              (logging.INFO, 6))


class JournalFormatter(logging.Formatter):
    """Each line (a traceback's too) starts with its syslog priority, so
    journald files it as that, not as the stream's default (info)."""

    def format(self, record: logging.LogRecord) -> str:
        prio = next((p for level, p in PRIORITIES if record.levelno >= level), 7)
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).split("\n"))


def to_the_journal(stream: TextIO, environ: dict[str, str]) -> bool:
    """Whether `stream` is the journal's own stream (JOURNAL_STREAM names its
    device and inode), and not, say, a pipe the service's output was moved to."""
    dev, _, ino = environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == f"{dev}:{ino}"


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if to_the_journal(sys.stderr, dict(os.environ)):
        # journald adds the time and the name: the priority says the level.
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("fsmond %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])


def event_json(event: Event) -> str:
    # surrogateescape'd bytes of odd mount point names stay visible as \udcxx
    return json.dumps(event.to_dict(), ensure_ascii=True, separators=(",", ":"))


class ConsolePublisher:
    name = "console"

    def __init__(self, stream: TextIO | None = None, queue_size: int = 100_000) -> None:
        self.outbox: Outbox[Event] = Outbox("console", queue_size)
        self._stream = stream or sys.stdout

    def publish(self, step: Step) -> None:
        if step.events:
            self.outbox.put_all(step.events)

    async def run(self, started: Callable[[], None]) -> None:
        started()
        while True:
            batch = await self.outbox.get_batch()
            self._stream.write("".join(event_json(e) + "\n" for e in batch))
            self._stream.flush()
