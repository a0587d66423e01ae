"""udev block-device events via pyudev, from the kernel's uevent netlink socket.

How it works: a pyudev Monitor on the `kernel` netlink group (not `udev`)
works with systemd-udevd absent; its fd is non-blocking and handed to the
event loop. Each device event becomes a DeviceChange with the device number,
so the engine can attach it to the file system mounted from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from fsmond.events import DeviceChange, DevNum, Observation

log = logging.getLogger(__name__)

ACTIONS = {"add": "added", "remove": "removed", "change": "changed"}
KEEP = ("DEVNAME", "DEVTYPE", "DISK_MEDIA_CHANGE", "DISK_EJECT_REQUEST", "ID_FS_TYPE",
        "ID_FS_UUID", "ID_SERIAL", "MAJOR", "MINOR", "RESIZE", "SEQNUM")


def to_change(action: str, props: Mapping[str, str]) -> DeviceChange | None:
    """Pure: a uevent's action and properties -> DeviceChange (None for other actions)."""
    name = ACTIONS.get(action)
    if name is None:
        return None
    if name == "changed" and (props.get("DISK_MEDIA_CHANGE") == "1"
                              or props.get("DISK_EJECT_REQUEST") == "1"):
        name = "media-change"
    device: DevNum | None = None
    with contextlib.suppress(KeyError, ValueError):
        device = (int(props["MAJOR"]), int(props["MINOR"]))
    devname = props.get("DEVNAME", "")
    devnode = devname if devname.startswith("/") or not devname else "/dev/" + devname
    return DeviceChange(
        action=name, device=device, devnode=devnode,
        subsystem=props.get("SUBSYSTEM", "block"),
        properties={k: props[k] for k in KEEP if k in props},
    )


class UdevSource:
    name = "udev"

    def __init__(self, emit: Callable[[Observation], None]) -> None:
        self._emit = emit
        self.events = 0

    async def run(self, started: Callable[[], None]) -> None:
        import pyudev

        context = pyudev.Context()
        monitor = pyudev.Monitor.from_netlink(context, source="kernel")
        monitor.filter_by("block")
        monitor.start()
        loop = asyncio.get_running_loop()

        def on_ready() -> None:
            while (device := monitor.poll(timeout=0)) is not None:
                props: dict[str, Any] = dict(device.properties)
                change = to_change(device.action or "", props)
                if change is not None:
                    self.events += 1
                    self._emit(change)

        loop.add_reader(monitor.fileno(), on_ready)
        started()
        try:
            await asyncio.Future()  # runs until cancelled
        finally:
            loop.remove_reader(monitor.fileno())
