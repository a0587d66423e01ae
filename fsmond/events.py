"""The contract between layers: what sources observe and what the engine publishes.

Sources turn kernel facts into *observations* (MountSnapshot, SpaceSample,
KernelReport, ...). The pure engine turns observations into *events* (Event)
and state. Publishers only ever see Events and read-only state. Everything
here is a `record`, read-only, so a value can cross threads and layers safely.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar, dataclass_transform

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True)
def record(cls: type[_T]) -> type[_T]:
    """A dataclass (slots) whose fields are read-only: mypy holds them so, as
    for a frozen one. Not frozen at run time: a frozen dataclass sets every
    field through object.__setattr__, which makes an Event several times as
    dear to build (BENCHMARKS.md), and a storm of 15,000 mounts and unmounts builds
    30,000 Events, 30,000 MountChanges and 30,000 MountEntries."""
    return dataclass(slots=True, unsafe_hash=True)(cls)


DevNum = tuple[int, int]
"""A superblock's device number (major, minor), as in mountinfo field 3."""

ROOT_PATH = "/org/fsmond/FsMon1"
# The ObjectManager of the file-system objects: GLib's client subscribes to
# every signal under it, so nothing per-mount is sent from here down.
OBJECTS_PATH = ROOT_PATH + "/fs"
FS_PATH_PREFIX = OBJECTS_PATH + "/"

CLASSES = ("info", "warn", "err", "thr")


@lru_cache(maxsize=4096)  # this and the path: formatted for every event, of a few devices
def dev_str(dev: DevNum | None) -> str:
    """'major:minor', or '' when there is no device."""
    return "" if dev is None else f"{dev[0]}:{dev[1]}"


@lru_cache(maxsize=4096)
def fs_object_path(dev: DevNum | None) -> str:
    """The D-Bus object path of a file system, '/' for none (SPEC section 1)."""
    return "/" if dev is None else f"{FS_PATH_PREFIX}{dev[0]}_{dev[1]}"


def format_time(t: float) -> str:
    """UTC with microseconds, ISO 8601 with a Z; rounded as datetime rounds."""
    frac, whole = math.modf(t)
    us = round(frac * 1e6)
    if us >= 1_000_000:
        whole, us = whole + 1, us - 1_000_000
    elif us < 0:
        whole, us = whole - 1, us + 1_000_000
    return f"{_utc_second(int(whole))}.{us:06d}Z"


@lru_cache(maxsize=8)
def _utc_second(t: int) -> str:
    # strftime is most of an event's formatting; a storm's events share seconds.
    return _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


# ---------------------------------------------------------------- observations


@record
class MountEntry:
    """One mount, as both backends see it (fields named as in mountinfo)."""

    mount_id: int  # the mountinfo id (statmount's mnt_id_old), same on both backends
    parent_id: int
    device: DevNum  # of the superblock
    root: str  # the root of the mount within the file system
    mount_point: str
    options: str  # per-mount options, e.g. "rw,nosuid,relatime"
    fstype: str  # "ext4", or "fuse.sshfs" with the subtype
    source: str  # "/dev/loop0", "tmpfs", "none"
    super_options: str  # superblock options, e.g. "rw,size=1024k"


@record
class MountSnapshot:
    """The whole mount table (start, resync after overflow, a mountinfo re-read)."""

    entries: tuple[MountEntry, ...]


@record
class MountDelta:
    """What changed, when the kernel said which mounts (fanotify + statmount)."""

    added: tuple[MountEntry, ...] = ()
    removed: tuple[int, ...] = ()  # mount ids
    changed: tuple[MountEntry, ...] = ()


@record
class SpaceSample:
    """One statvfs of a file system, in bytes and inodes (already multiplied by
    f_frsize); on btrfs, size and space as btrfs's own accounting gives them."""

    device: DevNum
    size: int
    free: int
    available: int
    files: int
    files_free: int
    files_available: int
    block_size: int  # f_frsize, for levels given in blocks
    # Which resource limits `available` where the file system can tell
    # (btrfs: "data" or "metadata"); "" for plain statvfs.
    resource: str = ""
    source: str = "statvfs"  # or "btrfs": its own accounting (sources/btrfs_usage.py)


@record
class Unresponsive:
    """statvfs of this file system did not return within `timeout` seconds."""

    device: DevNum
    timeout: float


@record
class Responsive:
    """A file system that was unresponsive answered statvfs again."""

    device: DevNum


@record
class SuperOptions:
    """The superblock options of a file system as read now (emergency_ro shows here)."""

    device: DevNum
    super_options: str


@record
class KernelReport:
    """The kernel reported something about a file system or its device."""

    kind: str  # "error" | "read-only" | "no-space"
    source: str  # "kmsg" | "fanotify" | "superblock" | "sysfs"
    device: DevNum | None  # resolved device number; None when it could not be resolved
    devname: str = ""  # the name the kernel used ("loop0", "sda1"), if any
    errno: int = 0
    count: int = 1
    function: str = ""
    message: str = ""
    pid: int = 0
    comm: str = ""
    replayed: bool = False  # read from the kmsg backlog at start
    read_only: bool = False  # an error that, by the same report, made it read-only (xfs shutdown)
    follows: bool = False  # part of the error just reported (jbd2's abort after ext4's error)
    resource: str = ""  # what ran out, where the kernel says: data, metadata, system


@record
class Members:
    """The block devices a file system lives on, other than its own device
    number (btrfs: an anonymous 0:NN superblock over loop0, nvme0n1p3, ...).
    Kernel reports that name a member belong to the file system."""

    device: DevNum
    members: tuple[DevNum, ...]


@record
class ErrorHistory:
    """Errors a file system recorded before fsmond started (ext4 sysfs): state, no event."""

    device: DevNum
    count: int
    last_error: str


@record
class WriteFailure:
    """System calls of one writer that failed with ENOSPC or EDQUOT (the ENOSPC
    trace), folded by the source per read.

    The mount ids are what the writer had open when the source looked at its
    /proc/PID, while it lived: `writable` those of files open for writing,
    `other` those of its other files, its cwd and its root. Both are empty when
    the writer was gone or could not be read; the engine then goes by which
    file systems are at risk."""

    pid: int
    comm: str
    syscall: str  # "write", "openat", ... (without "sys_")
    errno: int  # 28 (ENOSPC) or 122 (EDQUOT)
    count: int = 1
    writable: tuple[int, ...] = ()
    other: tuple[int, ...] = ()
    uid: int = -1  # the writer's file-system uid, for quota; -1 unknown


@record
class DeviceChange:
    """A udev block-device event."""

    action: str  # "added" | "removed" | "changed" | "media-change"
    device: DevNum | None
    devnode: str
    subsystem: str
    properties: Mapping[str, str] = field(default_factory=dict)


Observation = (
    MountSnapshot
    | MountDelta
    | SpaceSample
    | Unresponsive
    | Responsive
    | SuperOptions
    | KernelReport
    | ErrorHistory
    | WriteFailure
    | DeviceChange
    | Members
)


# ---------------------------------------------------------------------- events


@record
class Event:
    """One published event (SPEC section 3). `cls` is the event class."""

    seq: int
    time: float  # seconds since the epoch
    cls: str  # info | warn | err | thr | device
    name: str
    fs: str = "/"  # file-system object path
    mount_point: str = ""
    fstype: str = ""
    source: str = ""
    device: str = ""  # "major:minor"
    pid: int = 0
    comm: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    # A `mounted`/`unmounted` that is neither the file system's first mount
    # nor its last unmount: mount-table traffic, which the file system's own
    # object does not send (the Manager does). Not part of the event's text.
    per_mount: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of --print-events and MQTT."""
        return {
            "seq": self.seq,
            "time": format_time(self.time),
            "class": self.cls,
            "name": self.name,
            "fs": self.fs,
            "mount_point": self.mount_point,
            "fstype": self.fstype,
            "source": self.source,
            "device": self.device,
            "pid": self.pid,
            "comm": self.comm,
            "details": dict(self.details),
        }
