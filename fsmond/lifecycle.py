"""One lifecycle for every component: what the daemon starts, and how it stops.

Each source and publisher is a `Component` with `async def run(started)`,
started in one task group, in order, each saying when it has started; the
daemon is ready (READY for systemd) only when all have. Publishers also take
the engine's steps (`publish`); one that `announce`s (a bus name) does so
after every component has started. Stopping is an awaitable
(`wait_for_signals` by default) so that tests can stop the daemon cleanly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from fsmond.engine.step import Step

log = logging.getLogger(__name__)


class Component(Protocol):
    name: str

    async def run(self, started: Callable[[], None]) -> None: ...


class Publisher(Component, Protocol):
    def publish(self, step: Step) -> None:
        """The engine's step of one input (a storm's batch is one call)."""


@runtime_checkable
class Announcer(Protocol):
    async def announce(self) -> None:
        """Say we are here (a bus name), once every component has started and
        every file system has answered its first statvfs: whoever the
        announcement wakes (a D-Bus-activated call) must find the whole mount
        table and every object, not what was there before the sources ran."""


def wait_for_signals(*signums: int) -> Awaitable[None]:
    """The handlers are in place when this returns, not when it is first
    awaited: a stop right after "ready" must find them (it used to kill us)."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for s in signums:
        loop.add_signal_handler(s, done.set)

    async def wait() -> None:
        try:
            await done.wait()
        finally:
            for s in signums:
                loop.remove_signal_handler(s)

    return wait()


RECANCEL = 3.0  # seconds; more than the MQTT publisher's 2 s to say offline


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel, and cancel again whatever still runs: on 3.11 a cancel that
    comes together with a wake-up is lost inside asyncio.wait_for, which
    libraries use (aiomqtt around every publish), and the component goes on."""
    pending = set(tasks)
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL)
        if pending:
            log.warning("still stopping: %s", ", ".join(t.get_name() for t in pending))
