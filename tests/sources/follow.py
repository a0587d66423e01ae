"""Run a real mount-table source into a MountTable while a test changes mounts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from fsmond.engine.mounts import MountTable
from fsmond.events import MountDelta, MountSnapshot, Observation

S = TypeVar("S")


async def follow(table: MountTable, action: Callable[[], None], until: Callable[[S], bool],
                 source: Callable[[Callable[[Observation], None]], S],
                 block: bool = False) -> S:
    """Start `source` feeding `table`, do `action` (in a thread, or blocking the
    loop so that the source cannot read meanwhile), then wait for `until`."""
    changed = asyncio.Event()

    def emit(o: Observation) -> None:
        if isinstance(o, MountSnapshot):
            table.apply_snapshot(o)
        elif isinstance(o, MountDelta):
            table.apply_delta(o)
        changed.set()

    src: Any = source(emit)
    started = asyncio.Event()
    task = asyncio.create_task(src.run(started.set))
    await asyncio.wait_for(started.wait(), 10)
    if block:
        action()
    else:
        await asyncio.to_thread(action)
    try:
        async with asyncio.timeout(60):
            while not until(src):
                changed.clear()
                await changed.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return src
