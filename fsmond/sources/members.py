"""Which block devices a file system lives on (btrfs): kernel -> Members.

How it works: a btrfs superblock has an anonymous device number (0:NN, the
one in mountinfo), while the kernel's messages name its member devices
("BTRFS error (device loop1)", "I/O error, dev nvme0n1p3"). The
BTRFS_IOC_FS_INFO ioctl on the mount point gives the file system's UUID;
/sys/fs/btrfs/<uuid>/devices/ holds one link per member device, each with
its `dev` ("7:1"). The UUID is read once per file system (it does not change
while mounted); the member list is cheap sysfs and is read again whenever a
kernel report names a device no file system owns (a device added since).
"""

from __future__ import annotations

import fcntl
import os
import uuid

from fsmond.events import DevNum

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
