"""listmount(2) / statmount(2) (Linux >= 6.8) and fanotify mount marks (>= 6.15) via ctypes.

How it works: listmount gives the unique 64-bit ids of a namespace's mounts
in pages; statmount fills a `struct statmount` whose strings live after a
fixed 512-byte header at offsets the header gives. The result is rendered
exactly as /proc/self/mountinfo would show it (per-mount flags in field 6,
"rw"/"ro", superblock flags and the file system's own options in field 11),
so both backends produce equal MountEntry values. fanotify's mount events
carry the unique id; the caller keeps unique id -> mountinfo id to map
detaches back. Layouts follow include/uapi/linux/mount.h and fanotify.h.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import fcntl
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from fsmond.errors import KernelFeatureError, KernelFormatError
from fsmond.events import DevNum, MountEntry
from fsmond.sources.fanotify_records import FAN_Q_OVERFLOW, fanotify_events

SYS_STATMOUNT, SYS_LISTMOUNT = 457, 458  # x86_64 and the generic table alike
LSMT_ROOT = 0xFFFFFFFFFFFFFFFF
MNT_ID_REQ_SIZE_VER1 = 32
STATMOUNT_SB_BASIC, STATMOUNT_MNT_BASIC = 0x1, 0x2
STATMOUNT_MNT_ROOT, STATMOUNT_MNT_POINT, STATMOUNT_FS_TYPE = 0x8, 0x10, 0x20
STATMOUNT_MNT_OPTS, STATMOUNT_FS_SUBTYPE, STATMOUNT_SB_SOURCE = 0x80, 0x100, 0x200
ALL = (STATMOUNT_SB_BASIC | STATMOUNT_MNT_BASIC | STATMOUNT_MNT_ROOT | STATMOUNT_MNT_POINT
       | STATMOUNT_FS_TYPE | STATMOUNT_MNT_OPTS | STATMOUNT_FS_SUBTYPE | STATMOUNT_SB_SOURCE)
NS_GET_MNTNS_ID = 0x8008B705  # _IOR(0xb7, 5, __u64)

FAN_CLOEXEC, FAN_NONBLOCK, FAN_REPORT_MNT = 0x1, 0x2, 0x4000
FAN_MARK_ADD, FAN_MARK_MNTNS = 0x1, 0x110
FAN_MNT_ATTACH, FAN_MNT_DETACH = 0x01000000, 0x02000000
FAN_EVENT_INFO_TYPE_MNT = 7  # 6 is FAN_EVENT_INFO_TYPE_RANGE in the merged uapi

# struct statmount header: (name, offset, format)
_HDR = struct.Struct("=IIQIIQII QQII QQQQQ II Q II II II Q II II")
_HEADER_SIZE = 512
(_SIZE, _MNT_OPTS, _MASK, _MAJ, _MIN, _MAGIC, _SBF, _FS_TYPE, _MNT_ID, _PARENT_ID,
 _ID_OLD, _PARENT_OLD, _ATTR, _PROP, _PEER, _MASTER, _PROP_FROM, _ROOT, _POINT, _NS_ID,
 _SUBTYPE, _SOURCE) = range(22)

_MNT_FLAGS = ((0x2, "nosuid"), (0x4, "nodev"), (0x8, "noexec"))
_ATIME = {0x10: "noatime", 0x00: "relatime", 0x20: ""}
_SB_FLAG_NAMES = ((0x10, "sync"), (0x80, "dirsync"), (0x40, "mand"), (0x2000000, "lazytime"))

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                                ctypes.c_char_p]


@dataclass(frozen=True, slots=True)
class StatMount:
    unique_id: int
    parent_unique_id: int
    entry: MountEntry


def _req(mnt_id: int, param: int = 0, ns_id: int = 0) -> bytes:
    return struct.pack("=IIQQQ", MNT_ID_REQ_SIZE_VER1, 0, mnt_id, param, ns_id)


def listmount_all(mnt_ns_id: int = 0, below: int = LSMT_ROOT) -> list[int]:
    """Every unique mount id of the namespace (0: our own), in pages: those
    reachable from our root, or from the root of mount `below` (not itself)."""
    out: list[int] = []
    last = 0
    page = 4096
    ids = (ctypes.c_uint64 * page)()
    while True:
        req = _req(below, last, mnt_ns_id)
        n = _libc.syscall(SYS_LISTMOUNT, req, ids, page, 0)
        if n < 0:
            err = ctypes.get_errno()
            raise KernelFeatureError(err, f"listmount: {os.strerror(err)}")
        out.extend(ids[:n])
        if n < page:
            return out
        last = ids[n - 1]


def _string(buf: bytes, mask: int, bit: int, offset: int) -> str:
    if not mask & bit:
        return ""
    start = _HEADER_SIZE + offset
    end = buf.find(b"\0", start)
    if end < 0:
        raise KernelFormatError("statmount string without its NUL")
    return buf[start:end].decode("utf-8", "surrogateescape")


@lru_cache(maxsize=256)  # this and super_options: a storm's mounts share a few values
def mount_options(attr: int) -> str:
    """Field 6 of mountinfo from MOUNT_ATTR_* flags."""
    opts = ["ro" if attr & 0x1 else "rw"]
    opts += [name for bit, name in _MNT_FLAGS if attr & bit]
    atime = _ATIME.get(attr & 0x70, "")
    if atime == "noatime":
        opts.append(atime)
    if attr & 0x80:
        opts.append("nodiratime")
    if atime == "relatime":
        opts.append(atime)
    if attr & 0x200000:
        opts.append("nosymfollow")
    return ",".join(opts)


@lru_cache(maxsize=1024)
def super_options(sb_flags: int, fs_opts: str) -> str:
    """Field 11 of mountinfo: rw/ro, superblock flags, the file system's own options."""
    opts = ["ro" if sb_flags & 0x1 else "rw"]
    opts += [name for bit, name in _SB_FLAG_NAMES if sb_flags & bit]
    if fs_opts:
        opts.append(fs_opts)
    return ",".join(opts)


def decode_statmount(buf: bytes) -> StatMount:
    """Pure: a filled `struct statmount` -> StatMount."""
    if len(buf) < _HEADER_SIZE:
        raise KernelFormatError("statmount buffer shorter than its header")
    h = _HDR.unpack_from(buf, 0)
    mask = h[_MASK]
    if mask & (STATMOUNT_SB_BASIC | STATMOUNT_MNT_BASIC) != 3:
        raise KernelFormatError(f"statmount did not fill the basics (mask {mask:#x})")
    fstype = _string(buf, mask, STATMOUNT_FS_TYPE, h[_FS_TYPE])
    subtype = _string(buf, mask, STATMOUNT_FS_SUBTYPE, h[_SUBTYPE])
    return StatMount(h[_MNT_ID], h[_PARENT_ID], MountEntry(
        mount_id=h[_ID_OLD],
        parent_id=h[_PARENT_OLD],
        device=(h[_MAJ], h[_MIN]),
        root=_string(buf, mask, STATMOUNT_MNT_ROOT, h[_ROOT]),
        mount_point=_string(buf, mask, STATMOUNT_MNT_POINT, h[_POINT]),
        options=mount_options(h[_ATTR]),
        fstype=f"{fstype}.{subtype}" if subtype else fstype,
        source=_string(buf, mask, STATMOUNT_SB_SOURCE, h[_SOURCE]) or "none",
        super_options=super_options(h[_SBF], _string(buf, mask, STATMOUNT_MNT_OPTS,
                                                     h[_MNT_OPTS])),
    ))


def statmount(mnt_id: int, mnt_ns_id: int = 0, mask: int = ALL) -> StatMount | None:
    """The mount with this unique id, or None once it is gone."""
    size = 4096
    while True:
        buf = ctypes.create_string_buffer(size)
        rc = _libc.syscall(SYS_STATMOUNT, _req(mnt_id, mask, mnt_ns_id), buf, size, 0)
        if rc == 0:
            return decode_statmount(buf.raw)
        err = ctypes.get_errno()
        if err == errno_mod.EOVERFLOW and size < 1 << 24:
            size *= 4  # long mount points or options: grow and ask again
            continue
        if err == errno_mod.ENOENT:
            return None
        raise KernelFeatureError(err, f"statmount: {os.strerror(err)}")


def read_all(fd: int) -> bytes:
    """A /proc file from offset 0 (a seq_file: read until EOF)."""
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def mnt_ns_id_of(ns_path: str) -> int:
    """The 64-bit id of a mount namespace file (0 means our own for the syscalls)."""
    fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        out = bytearray(8)
        fcntl.ioctl(fd, NS_GET_MNTNS_ID, out)
        return int(struct.unpack("=Q", out)[0])
    finally:
        os.close(fd)


def is_own_namespace(ns_path: str) -> bool:
    """Whether a namespace file ("/proc/1/ns/mnt") is our own mount namespace:
    the same nsfs inode, whatever the pid in its path."""
    try:
        theirs, ours = os.stat(ns_path), os.stat("/proc/self/ns/mnt")
    except OSError:
        return False
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def file_system_at(path: str) -> tuple[DevNum, str] | None:
    """The superblock device and options of what is mounted at `path` now,
    from statx's unique mount id and statmount; None where the kernel cannot
    tell. The options are where ext4's emergency_ro shows; the device tells
    whether a statvfs of `path` was of the file system meant, or of what the
    path showed once it was unmounted."""
    mnt_id = _statx_mnt_id(path, _STATX_MNT_ID_UNIQUE)
    if mnt_id is None:
        return None
    try:
        found = statmount(mnt_id, mask=STATMOUNT_SB_BASIC | STATMOUNT_MNT_BASIC
                          | STATMOUNT_MNT_OPTS)
    except (KernelFeatureError, KernelFormatError):
        return None
    return None if found is None else (found.entry.device, found.entry.super_options)


def root_mount_of(ns_path: str) -> int | None:
    """The unique id of the mount that is the root of /proc/PID/ns/mnt's
    process, or None for our own namespace or a namespace file of no process.
    listmount's own root for another namespace is that namespace's first
    mount, under which a container's or a service's real root may sit."""
    m = re.fullmatch(r"/proc/(\d+)/ns/mnt", ns_path)
    if m is None or is_own_namespace(ns_path):
        return None
    return _statx_mnt_id(f"/proc/{m.group(1)}/root/.", _STATX_MNT_ID_UNIQUE)


def mount_id_at(path: str) -> int | None:
    """The mountinfo id of the mount `path` shows now (statx, Linux >= 5.8);
    None where the kernel cannot tell."""
    return _statx_mnt_id(path, _STATX_MNT_ID)


# Whether `path` still shows the file system meant, given as its device and
# the mountinfo id of the mount the table says shows it, and its superblock
# options where they come with the answer. A path can show another file
# system than the table says: unmounted (or mounted over) since.
Check = Callable[[str, DevNum, int], tuple[bool, str | None]]


def shows_device(path: str, device: DevNum, mount_id: int) -> tuple[bool, str | None]:
    """By the device (needs statmount, Linux >= 6.8; works in any namespace)."""
    seen = file_system_at(path)
    if seen is None:
        return True, None
    return (True, seen[1]) if seen[0] == device else (False, None)


def shows_mount(path: str, device: DevNum, mount_id: int) -> tuple[bool, str | None]:
    """By the mount id (Linux >= 5.8), which is per namespace: only for mount
    ids of the namespace the path is looked up in."""
    seen = mount_id_at(path)
    return seen is None or seen == mount_id, None


_STATX_MNT_ID, _STATX_MNT_ID_UNIQUE = 0x1000, 0x4000
_AT_NO_AUTOMOUNT, _AT_STATX_DONT_SYNC, _AT_SYMLINK_NOFOLLOW = 0x800, 0x4000, 0x100
_STX_MNT_ID_OFFSET = 0x90  # struct statx: stx_mnt_id


# glibc < 2.28 and musl < 1.2.5 have no statx(): then no mount id is known.
_statx = getattr(_libc, "statx", None)


def _statx_mnt_id(path: str, which: int) -> int | None:
    if _statx is None:
        return None
    buf = ctypes.create_string_buffer(256)
    flags = _AT_NO_AUTOMOUNT | _AT_STATX_DONT_SYNC | _AT_SYMLINK_NOFOLLOW
    if _statx(-100, os.fsencode(path), flags, which, buf) != 0:
        return None
    mask = struct.unpack_from("=I", buf.raw, 0)[0]
    if not mask & which:
        return None
    return int(struct.unpack_from("=Q", buf.raw, _STX_MNT_ID_OFFSET)[0])


def open_mount_fanotify(ns_path: str = "/proc/self/ns/mnt") -> int:
    """A non-blocking fanotify fd reporting attach/detach in a mount namespace."""
    fd = _libc.fanotify_init(FAN_REPORT_MNT | FAN_NONBLOCK | FAN_CLOEXEC, os.O_RDONLY)
    if fd < 0:
        err = ctypes.get_errno()
        raise KernelFeatureError(err, f"fanotify_init(FAN_REPORT_MNT): {os.strerror(err)}")
    try:
        ns = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(fd)
        raise
    try:
        if _libc.fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_MNTNS,
                               FAN_MNT_ATTACH | FAN_MNT_DETACH, ns, None) != 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise KernelFeatureError(err, f"fanotify mount-namespace mark: {os.strerror(err)}")
    finally:
        os.close(ns)
    return int(fd)


# An event with one MNT info record (header, 4 bytes of padding, the u64
# mount id): what every read but an overflow's holds, 40 bytes each.
_MNT_EVENT = struct.Struct("=IBBHQiiBBH4xQ")


def parse_mount_events(buf: bytes) -> list[tuple[str, int]]:
    """Pure: ("attach"|"detach"|"overflow", unique id) from a read(); a malformed
    record ends the parse (what came before it is kept)."""
    if len(buf) % _MNT_EVENT.size == 0:
        # The usual read, unpacked in one pass (a storm reads 15,000 of these);
        # anything else goes the general way.
        out: list[tuple[str, int]] = []
        for size, _v, _r, meta, mask, _fd, _pid, itype, _pad, ilen, mnt_id in \
                _MNT_EVENT.iter_unpack(buf):
            if (size != _MNT_EVENT.size or meta != 24 or itype != FAN_EVENT_INFO_TYPE_MNT
                    or ilen != 16 or mask & FAN_Q_OVERFLOW):
                break
            if mask & FAN_MNT_DETACH:
                out.append(("detach", mnt_id))
            if mask & FAN_MNT_ATTACH:
                out.append(("attach", mnt_id))
        else:
            return out
    return _parse_each(buf)


def read_mount_events(fd: int) -> list[tuple[str, int]]:
    """Every event queued on a non-blocking fanotify mount fd, parsed."""
    events: list[tuple[str, int]] = []
    while True:
        try:
            buf = os.read(fd, 1 << 16)
        except (BlockingIOError, InterruptedError):
            return events
        if not buf:
            return events
        events += parse_mount_events(buf)


def _parse_each(buf: bytes) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for mask, infos in fanotify_events(buf):
        if mask & FAN_Q_OVERFLOW:
            out.append(("overflow", 0))
        body = infos.get(FAN_EVENT_INFO_TYPE_MNT, b"")
        if len(body) >= 12:  # 4 bytes of padding, then the u64 mount id
            (mnt_id,) = struct.unpack_from("=Q", body, 4)
            if mask & FAN_MNT_DETACH:
                out.append(("detach", mnt_id))
            if mask & FAN_MNT_ATTACH:
                out.append(("attach", mnt_id))
    return out


def has_statmount() -> bool:
    return statmount_missing() is None


def statmount_missing() -> OSError | None:
    """Why listmount/statmount cannot be used here (with the errno), or None."""
    try:
        listmount_all()
    except KernelFeatureError as e:
        return e
    return None


def fanotify_mounts_missing(ns_path: str = "/proc/self/ns/mnt") -> OSError | None:
    """Why fanotify cannot mark this mount namespace (with the errno), or None."""
    try:
        os.close(open_mount_fanotify(ns_path))
    except OSError as e:
        return e
    return None
