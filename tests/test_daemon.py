"""The daemon in-process: every component started before ready, and a clean stop
through the injectable shutdown trigger."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest

from fsmond.config import parse_config
from fsmond.daemon import Daemon
from fsmond.events import Event
from tests.running import tmpfs

pytestmark = [pytest.mark.root]


class Collect:
    name = "collect"

    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, events: list[Event]) -> None:
        self.events += events

    async def run(self, started: object) -> None:
        started()  # type: ignore[operator]
        await asyncio.Future()


def test_ready_after_every_component_then_injected_shutdown(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "t") as t:
        config = parse_config(f'[daemon]\nudev = false\n[[watch]]\npath = "{t}"\n')
        stop = asyncio.Event()
        seen_at_ready: dict[str, object] = {}
        collect = Collect()

        def ready() -> None:
            seen_at_ready.update(d.status())
            # fanotify's error batches read kmsg at once (its text is already there)
            seen_at_ready["then"] = d.fserror.then == d.kmsg.read_now
            seen_at_ready["frozen"] = gc.get_freeze_count()
            stop.set()  # stop as soon as it is ready

        d = Daemon(config, publishers=[collect], shutdown_trigger=stop.wait, ready=ready)
        try:
            asyncio.run(asyncio.wait_for(d.run(), 30))
        finally:
            gc.unfreeze()  # give the test process its collector back
    assert seen_at_ready["filesystems"] == 1 and seen_at_ready["mounts"] > 0
    assert seen_at_ready["mount_backend"] == "fanotify"
    assert "kmsg" in seen_at_ready["error_backends"]  # type: ignore[operator]
    assert seen_at_ready["then"] is True
    assert seen_at_ready["frozen"] > 10_000  # start-up's objects are out of the cyclic GC
    assert [e.name for e in collect.events] == ["watch-added"]
