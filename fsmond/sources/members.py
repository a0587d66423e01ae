"""Which block devices a file system lives on (btrfs): kernel -> Members.

How it works: a btrfs superblock has an anonymous device number (0:NN, the
one in mountinfo), while the kernel's messages name its member devices
("BTRFS error (device loop1)", "I/O error, dev nvme0n1p3"). The
BTRFS_IOC_FS_INFO ioctl on the mount point gives the file system's UUID;
/sys/fs/btrfs/<uuid>/devices/ holds one link per member device, each with
its `dev` ("7:1"). The UUID is read once per file system (it does not change
while mounted); the member list is cheap sysfs and is read again whenever a
kernel report names a device no file system owns (a device added since).
`BtrfsMembers` does both, following the engine's steps as the sampler does:
the UUID in a worker thread (an ioctl on a mount point can wait on the file
system), the answer as a `Members` observation.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from fsmond.events import DevNum, Members, Observation

if TYPE_CHECKING:
    from fsmond.engine.step import Step

log = logging.getLogger(__name__)

# _IOR(BTRFS_IOCTL_MAGIC 0x94, 31, struct btrfs_ioctl_fs_info_args), 1024 bytes:
# max_id u64, num_devices u64, fsid[16], ...
BTRFS_IOC_FS_INFO = 0x8400941F
_FS_INFO_SIZE = 1024
SYSFS_BTRFS = "/sys/fs/btrfs"


def parse_fs_info_fsid(buf: bytes) -> str:
    """Pure: the fsid of a filled btrfs_ioctl_fs_info_args, as sysfs names it."""
    if len(buf) < 32:
        raise ValueError("btrfs fs_info shorter than its fsid")
    return str(uuid.UUID(bytes=bytes(buf[16:32])))


def parse_devnum(text: bytes) -> DevNum | None:
    """Pure: a sysfs `dev` file ("7:1\\n") -> (7, 1); None when it is not one."""
    major, sep, minor = text.strip().partition(b":")
    if not sep or not major.isdigit() or not minor.isdigit():
        return None
    return int(major), int(minor)


def btrfs_fsid(path: str) -> str:
    """The UUID of the btrfs mounted at `path`; OSError when it cannot be read
    (unmounted meanwhile, or something refused the ioctl)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        buf = bytearray(_FS_INFO_SIZE)
        fcntl.ioctl(fd, BTRFS_IOC_FS_INFO, buf)
    finally:
        os.close(fd)
    try:
        return parse_fs_info_fsid(bytes(buf))
    except ValueError as e:
        raise OSError(f"btrfs fs_info of {path}: {e}") from e


def btrfs_members(fsid: str, sysfs: str = SYSFS_BTRFS) -> tuple[DevNum, ...]:
    """The device numbers of a mounted btrfs' member devices, from sysfs."""
    base = f"{sysfs}/{fsid}/devices"
    out: list[DevNum] = []
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return ()
    for name in names:
        try:
            with open(f"{base}/{name}/dev", "rb") as f:
                dev = parse_devnum(f.read(64))
        except OSError:
            continue
        if dev is not None:
            out.append(dev)
    return tuple(out)


class BtrfsMembers:
    """Tells the engine which devices each watched btrfs lives on."""

    def __init__(self, emit: Callable[[Observation], None],
                 owner_of: Callable[[DevNum], DevNum | None]) -> None:
        self._emit = emit
        self._owner_of = owner_of  # the engine's: the file system a device belongs to
        self._watched: set[DevNum] = set()  # btrfs file systems read (or being read)
        self._fsids: dict[DevNum, str] = {}  # btrfs file system -> its UUID (sysfs name)
        self._strangers: set[DevNum] = set()  # devices of no file system, as of the last look

    def follow(self, step: Step) -> None:
        """A btrfs is read once a mount point shows it: when it is added, or
        when a step uncovers it."""
        for dev in step.removed:
            self._watched.discard(dev)
            self._fsids.pop(dev, None)
        for s in step.states:
            if s.fstype == "btrfs" and s.sample_path and s.device not in self._watched:
                self._watched.add(s.device)
                loop = asyncio.get_running_loop()
                loop.run_in_executor(None, self._read, s.device, s.sample_path, loop)

    def look_for(self, device: DevNum) -> None:
        """A report names a device no file system owns: a device added to a
        btrfs since its members were read? sysfs says (cheap, never hangs);
        once per device until the file systems change."""
        if device in self._strangers or self._owner_of(device) is not None:
            return
        for dev, fsid in self._fsids.items():
            members = btrfs_members(fsid)
            if device in members:
                self._emit(Members(dev, members))
                return
        self._strangers.add(device)

    def _read(self, dev: DevNum, path: str, loop: asyncio.AbstractEventLoop) -> None:
        """In a worker thread: the btrfs' UUID and members."""
        try:
            fsid = btrfs_fsid(path)
        except OSError as e:
            # Its kernel messages name member devices: they will reach no object.
            log.warning("cannot tell the devices of the btrfs at %s: %s", path, e)
            return
        members = btrfs_members(fsid)

        def done() -> None:
            if dev in self._watched:
                self._fsids[dev] = fsid
                self._strangers.clear()
                self._emit(Members(dev, members))

        loop.call_soon_threadsafe(done)
