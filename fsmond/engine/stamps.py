"""What makes a Notice an Event: its sequence number, its time, its file system. Pure.

How it works: every event fsmond publishes gets the next sequence number
(clients order and de-duplicate by it) and its time. The engine runs on the
caller's clock for durations (fold windows, fill rates): the daemon gives it
monotonic time, so that a step of the wall clock (NTP at boot) neither
silences errors for the length of the step nor bends a fill rate. Only the
stamp adds `wall_offset`, the wall clock's lead over that clock, which the
caller keeps up to date as it reads both together.
"""

from __future__ import annotations

from typing import Any

from fsmond.engine.filesystems import FileSystem, Notice
from fsmond.events import CLASSES, DevNum, Event, dev_str, fs_object_path


class Stamps:
    def __init__(self) -> None:
        self.seq = 0
        self.wall_offset = 0.0

    def of(self, fs: FileSystem, notices: list[Notice], now: float,
           mount_point: str | None = None) -> list[Event]:
        """The events of a watched file system's notices, those of the classes
        it is watched for (or of no class the watch names: device events)."""
        if mount_point is None:
            mount_point = fs.mount_points[0] if fs.mount_points else ""
        return [self.one(fs, n.cls, n.name, n.details, now, mount_point, n.source, n.pid, n.comm)
                for n in notices if n.cls not in CLASSES or n.cls in fs.watch.classes]

    def one(self, fs: FileSystem, cls: str, name: str, details: dict[str, Any], now: float,
            mount_point: str, source: str = "", pid: int = 0, comm: str = "",
            per_mount: bool = False) -> Event:
        """An event of a watched file system (straight, for a storm's thousands)."""
        self.seq += 1
        return Event(self.seq, now + self.wall_offset, cls, name, fs_object_path(fs.device),
                     mount_point, fs.fstype, source or fs.source, dev_str(fs.device), pid,
                     comm, details, per_mount)

    def unowned(self, n: Notice, now: float, device: DevNum | None, source: str) -> Event:
        """An event that no watched file system owns."""
        self.seq += 1
        return Event(seq=self.seq, time=now + self.wall_offset, cls=n.cls, name=n.name,
                     source=source, device=dev_str(device), pid=n.pid, comm=n.comm,
                     details=n.details)
