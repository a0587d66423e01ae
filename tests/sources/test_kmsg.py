"""The /dev/kmsg reader against real kernel errors on a loop-mounted ext4."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from fsmond.events import KernelReport, Observation
from fsmond.sources.kmsg import KmsgSource, resolve_devname
from tests.running import loop_ext4

pytestmark = [pytest.mark.root]


async def collect(got: list[Observation], action: Callable[[], None],
                  until: Callable[[], bool]) -> KmsgSource:
    """Run a KmsgSource, do `action`, and return once `until()` holds."""
    done = asyncio.Event()

    def emit(o: Observation) -> None:
        got.append(o)
        if until():
            done.set()

    src = KmsgSource(emit)
    started = asyncio.Event()
    task = asyncio.create_task(src.run(started.set))
    await asyncio.wait_for(started.wait(), 5)
    action()
    try:
        await asyncio.wait_for(done.wait(), 10)
        return src
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_real_ext4_error_and_remount_ro_resolved_to_the_device(tmp_path: Path) -> None:
    with loop_ext4(tmp_path / "img", tmp_path / "m", "errors=remount-ro") as (m, loop):
        st = os.stat(m)
        dev = (os.major(st.st_dev), os.minor(st.st_dev))
        assert resolve_devname(loop) == dev
        got: list[Observation] = []

        def act() -> None:
            with open("/dev/kmsg", "w") as k:  # a process's line first: must be ignored
                k.write(f"EXT4-fs error (device {loop}): forged_x:1: comm x: forged\n")
            Path(f"/sys/fs/ext4/{loop}/trigger_fs_error").write_text("kmsg test\n")

        def done() -> bool:
            return any(isinstance(o, KernelReport) and o.kind == "read-only" for o in got)

        src = asyncio.run(collect(got, act, done))
    reports = [o for o in got if isinstance(o, KernelReport)]
    assert [r.kind for r in reports] == ["error", "error", "read-only"]  # error, jbd2, ro
    assert all(r.device == dev and r.devname == loop and r.source == "kmsg" for r in reports)
    assert "kmsg test" in reports[0].message and reports[0].comm
    assert not any("forged" in r.message for r in reports)
    assert src.records >= 4 and src.overruns == 0


def test_unknown_device_names_do_not_resolve() -> None:
    assert resolve_devname("no-such-disk") is None
    assert resolve_devname("../etc") is None
    assert resolve_devname("") is None
