"""fanotify FAN_FS_ERROR (Linux >= 5.16): file systems report their own errors.

How it works: one fanotify group (FAN_REPORT_FID, needed for FAN_FS_ERROR)
gets a FAN_MARK_FILESYSTEM mark per watched file system on a block device
(ext4 reports its errors this way; kmsg covers the others). Only those: the
mark calls the file system's statfs, in which a network or FUSE file system
can hang, and neither reports errors through fanotify. An error event
carries the file system's fsid, the errno of the first error and how many
errors happened since the last event was read. The fsid is mapped back to
the device through statvfs' f_fsid taken when the mark was added. A path
can show another file system by then (unmounted since the mount table said
otherwise): the mark is checked after it is made, and undone if it went to
the wrong one. The parser is pure and never trusts a length it reads.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import struct
from collections.abc import Callable

from fsmond.errors import KernelFeatureError
from fsmond.events import DevNum, KernelReport, Observation, record
from fsmond.sources.fanotify_records import FAN_Q_OVERFLOW, fanotify_events
from fsmond.sources.mountapi import Check

log = logging.getLogger(__name__)

FAN_CLOEXEC, FAN_NONBLOCK, FAN_CLASS_NOTIF, FAN_REPORT_FID = 0x1, 0x2, 0x0, 0x200
FAN_MARK_ADD, FAN_MARK_REMOVE, FAN_MARK_FILESYSTEM = 0x1, 0x2, 0x100
FAN_FS_ERROR = 0x8000
FAN_EVENT_INFO_TYPE_FID, FAN_EVENT_INFO_TYPE_ERROR = 1, 5
AT_FDCWD = -100
_FSID = struct.Struct("=II")
_ERROR = struct.Struct("=iI")  # error, error_count

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                                ctypes.c_char_p]


@record
class FsError:
    fsid: int  # val[0] | val[1] << 32, as statvfs' f_fsid on 64-bit Linux
    errno: int
    count: int
    overflow: bool = False


def fsid_key(val0: int, val1: int) -> int:
    return (val0 & 0xFFFFFFFF) | (val1 & 0xFFFFFFFF) << 32


def parse_fs_error_events(buf: bytes) -> list[FsError]:
    """Pure: error events in a read() buffer; a malformed record ends the parse."""
    out: list[FsError] = []
    for mask, infos in fanotify_events(buf):
        if mask & FAN_Q_OVERFLOW:
            out.append(FsError(0, 0, 0, overflow=True))
        fid = infos.get(FAN_EVENT_INFO_TYPE_FID, b"")
        err = infos.get(FAN_EVENT_INFO_TYPE_ERROR, b"")
        if mask & FAN_FS_ERROR and len(fid) >= _FSID.size and len(err) >= _ERROR.size:
            errno, count = _ERROR.unpack_from(err)
            out.append(FsError(fsid_key(*_FSID.unpack_from(fid)), abs(errno), count))
    return out


class FsErrorSource:
    name = "fanotify-errors"

    def __init__(self, emit: Callable[[list[Observation]], None],
                 check: Check | None = None) -> None:
        self._emit = emit  # the reports of one read (the daemon reads kmsg with them)
        self._check = check
        self._fd = -1
        self._by_fsid: dict[int, DevNum] = {}
        self._paths: dict[DevNum, tuple[str, int]] = {}
        self.overflows = 0

    def watch(self, device: DevNum, path: str, mount_id: int) -> bool:
        """Mark the file system the mount table says `path` (mount `mount_id`)
        shows; False when it (or the kernel) cannot."""
        if self._fd < 0 or device in self._paths:
            return device in self._paths
        if device[0] == 0:  # no block device: nothing to report, maybe a hang (above)
            return False
        try:
            fsid = os.statvfs(path).f_fsid
        except OSError:
            return False
        rc = _libc.fanotify_mark(self._fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_FS_ERROR,
                                 AT_FDCWD, os.fsencode(path))
        if rc != 0:
            log.debug("no FAN_FS_ERROR on %s: %s", path, os.strerror(ctypes.get_errno()))
            return False
        if self._check is not None and not self._check(path, device, mount_id)[0]:
            # Unmounted meanwhile: the fsid and the mark were the parent's.
            if fsid not in self._by_fsid:
                self._unmark(path)
            return False
        self._by_fsid[fsid] = device
        self._paths[device] = (path, fsid)
        return True

    def unwatch(self, device: DevNum) -> None:
        path, fsid = self._paths.pop(device, ("", 0))
        self._by_fsid.pop(fsid, None)
        if path and self._fd >= 0:
            self._unmark(path)  # the mark usually went with the superblock already

    def _unmark(self, path: str) -> None:
        _libc.fanotify_mark(self._fd, FAN_MARK_REMOVE | FAN_MARK_FILESYSTEM, FAN_FS_ERROR,
                            AT_FDCWD, os.fsencode(path))

    async def run(self, started: Callable[[], None]) -> None:
        fd = _libc.fanotify_init(FAN_CLASS_NOTIF | FAN_REPORT_FID | FAN_NONBLOCK | FAN_CLOEXEC,
                                 os.O_RDONLY)
        if fd < 0:
            err = ctypes.get_errno()
            raise KernelFeatureError(err, f"fanotify_init for FAN_FS_ERROR: {os.strerror(err)}")
        self._fd = fd
        loop = asyncio.get_running_loop()
        loop.add_reader(fd, self._on_readable)
        started()
        try:
            await asyncio.Future()  # until cancelled
        finally:
            loop.remove_reader(fd)
            os.close(fd)
            self._fd = -1

    def _on_readable(self) -> None:
        while True:
            try:
                buf = os.read(self._fd, 65536)
            except (BlockingIOError, InterruptedError):
                return
            reports: list[Observation] = []
            for e in parse_fs_error_events(buf):
                if e.overflow:
                    self.overflows += 1
                    continue
                device = self._by_fsid.get(e.fsid)
                if device is not None:
                    reports.append(KernelReport(kind="error", source="fanotify", device=device,
                                                errno=e.errno, count=max(1, e.count)))
            self._emit(reports)
