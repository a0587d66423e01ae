"""udev block events from the kernel's uevent socket (no udevd needed)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from fsmond.events import DeviceChange, Observation
from fsmond.sources.udev import UdevSource, to_change
from tests.running import run


def test_to_change_maps_actions_media_and_device_numbers() -> None:
    c = to_change("change", {"DEVNAME": "sr0", "MAJOR": "11", "MINOR": "0",
                             "DISK_MEDIA_CHANGE": "1", "SUBSYSTEM": "block", "JUNK": "x"})
    assert c == DeviceChange("media-change", (11, 0), "/dev/sr0", "block",
                             {"DEVNAME": "sr0", "DISK_MEDIA_CHANGE": "1", "MAJOR": "11",
                              "MINOR": "0"})
    assert to_change("bind", {}) is None
    odd = to_change("add", {"MAJOR": "x"})
    assert odd is not None and odd.device is None and odd.devnode == ""


@pytest.mark.root
def test_a_new_loop_device_is_seen(tmp_path: Path) -> None:
    got: list[Observation] = []
    image = tmp_path / "img"
    image.write_bytes(b"\0" * (1 << 20))

    async def main() -> str:
        seen = asyncio.Event()
        dev = ""

        def emit(o: Observation) -> None:
            got.append(o)
            if isinstance(o, DeviceChange) and dev and o.devnode == dev:
                seen.set()

        src = UdevSource(emit)
        started = asyncio.Event()
        task = asyncio.create_task(src.run(started.set))
        await asyncio.wait_for(started.wait(), 5)
        dev = (await asyncio.to_thread(run, "losetup", "-f", "--show", str(image))).strip()
        if any(isinstance(o, DeviceChange) and o.devnode == dev for o in got):
            seen.set()  # it came while losetup was still running
        try:
            await asyncio.wait_for(seen.wait(), 10)
        finally:
            await asyncio.to_thread(run, "losetup", "-d", dev)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return dev

    dev = asyncio.run(main())
    st = os.stat(dev) if os.path.exists(dev) else None
    ours = [o for o in got if isinstance(o, DeviceChange) and o.devnode == dev]
    assert ours and ours[0].subsystem == "block"
    assert ours[0].action in ("added", "changed")
    if st is not None:
        assert ours[0].device == (os.major(st.st_rdev), os.minor(st.st_rdev))
