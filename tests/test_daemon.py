"""The daemon in-process: every component started before ready, and a clean stop
through the injectable shutdown trigger."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from pathlib import Path

import pytest

from fsmond.config import parse_config
from fsmond.daemon import Daemon
from fsmond.events import Event
from tests.running import loop_ext4, tmpfs

pytestmark = [pytest.mark.root]


class Collect:
    name = "collect"

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.calls: list[tuple[list[Event], asyncio.Task[object] | None]] = []
        self.arrived = asyncio.Event()

    def publish(self, events: list[Event]) -> None:
        self.events += events
        self.calls.append((events, asyncio.current_task()))
        self.arrived.set()

    async def errors(self, n: int) -> None:
        """Until `n` error events have come."""
        while sum(e.name == "error" for e in self.events) < n:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)

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
    assert seen_at_ready["frozen"] > 10_000  # start-up's objects are out of the cyclic GC
    assert [e.name for e in collect.events] == ["watch-added"]


class LosesOneCancel(Collect):
    """A component inside which the stop's cancel is lost, as on 3.11 in
    asyncio.wait_for when the awaited thing completes at the same moment."""

    name = "loses-one-cancel"

    async def run(self, started: object) -> None:
        started()  # type: ignore[operator]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Future()
        await asyncio.Future()


def test_a_component_that_loses_the_stop_s_cancel_still_stops(tmp_path: Path) -> None:
    config = parse_config("[daemon]\nudev = false\n")
    stop = asyncio.Event()
    d = Daemon(config, publishers=[LosesOneCancel()], shutdown_trigger=stop.wait,
               ready=stop.set)
    try:
        asyncio.run(asyncio.wait_for(d.run(), 30))  # it never stopped before
    finally:
        gc.unfreeze()


def test_an_ext4_error_is_one_event_with_both_views_from_the_fanotify_read(
        tmp_path: Path) -> None:
    """kmsg wakes its readers a timer tick late, but ext4 stores its text
    before it notifies fanotify: the daemon reads kmsg in the fanotify
    callback itself, so the error goes out at once, with fanotify's errno and
    kmsg's text in one event."""
    with loop_ext4(tmp_path / "img", tmp_path / "m") as (m, loop):
        config = parse_config(f'[daemon]\nudev = false\n[[watch]]\npath = "{m}"\n')
        collect = Collect()

        async def stop_after_error() -> None:
            await asyncio.to_thread(
                Path(f"/sys/fs/ext4/{loop}/trigger_fs_error").write_text, "one turn\n")
            await collect.errors(1)

        d = Daemon(config, publishers=[collect], shutdown_trigger=stop_after_error)
        try:
            asyncio.run(asyncio.wait_for(d.run(), 30))
        finally:
            gc.unfreeze()
    calls = [(events, task) for events, task in collect.calls
             if any(e.name == "error" for e in events)]
    assert len(calls) == 1
    (error,), task = calls[0]
    assert "one turn" in error.details["message"] and error.details["errno"] > 0
    assert error.details["sources"] == ["fanotify", "kmsg"]
    assert task is None  # the fanotify reader's callback, not kmsg's own task


def test_a_step_back_of_the_wall_clock_never_silences_errors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NTP may set the clock back by hours at boot. The second of two errors
    a moment apart is folded into the first one's one-second window and
    published when it ends: that end must come a second later by the
    monotonic clock, not when the wall clock is back where it was."""
    with loop_ext4(tmp_path / "img", tmp_path / "m") as (m, loop):
        config = parse_config(f'[daemon]\nudev = false\n[[watch]]\npath = "{m}"\n')
        collect = Collect()
        trigger = Path(f"/sys/fs/ext4/{loop}/trigger_fs_error")
        wall = time.time

        async def two_errors_an_hour_apart_by_the_wall_clock() -> None:
            await asyncio.to_thread(trigger.write_text, "before the step\n")
            await collect.errors(1)
            monkeypatch.setattr(time, "time", lambda: wall() - 3600)
            await asyncio.to_thread(trigger.write_text, "after the step\n")
            await collect.errors(2)  # the fold window's end: about a second later

        d = Daemon(config, publishers=[collect],
                   shutdown_trigger=two_errors_an_hour_apart_by_the_wall_clock)
        try:
            asyncio.run(asyncio.wait_for(d.run(), 30))
        finally:
            gc.unfreeze()
    first, second = [e for e in collect.events if e.name == "error"]
    assert second.details["count"] >= 1  # the folded one (it keeps the window's text)
    assert second.time < first.time - 3000  # stamps still follow the wall clock
