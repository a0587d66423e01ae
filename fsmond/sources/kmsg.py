"""/dev/kmsg reader: kernel records -> KernelReport observations.

How it works: /dev/kmsg is opened non-blocking and, unless replaying from
boot, moved to its end, so only new records come. Each read() returns
exactly one record; EAGAIN means none yet; EPIPE means the ring buffer
overwrote records we had not read yet: that is counted and reading goes on
from the oldest record still there. Records are classified by the pure
kmsg_parse; a device name ("loop0", "sda1", "dm-3") is resolved to its
device number through /sys/class/block/<name>/dev so the engine can attach
the report to the file system on that device.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Callable

from fsmond.errors import KernelFeatureError, KernelFormatError
from fsmond.events import DevNum, KernelReport, Observation
from fsmond.sources.kmsg_parse import classify, parse_kmsg

log = logging.getLogger(__name__)

MAX_RECORD = 8192  # a record never exceeds this (PRINTK_MESSAGE_MAX plus dict)
BATCH = 256  # records per wake-up, so a flood never starves the loop


def resolve_devname(name: str, sysfs: str = "/sys/class/block") -> DevNum | None:
    """'sda1' -> (8, 1) from sysfs; None when there is no such block device."""
    if not name or "/" in name or name.startswith("."):
        return None
    try:  # os calls, not open(): this runs cold on an error's way out
        fd = os.open(f"{sysfs}/{name}/dev", os.O_RDONLY | os.O_CLOEXEC)
        try:
            major, minor = os.read(fd, 64).split(b":")
        finally:
            os.close(fd)
        return int(major), int(minor)
    except (OSError, ValueError):
        return None


class KmsgSource:
    name = "kmsg"

    def __init__(
        self, emit: Callable[[Observation], None], replay: bool = False, path: str = "/dev/kmsg"
    ) -> None:
        self._emit = emit
        self.replay = replay
        self.path = path
        self.records = 0
        self.overruns = 0
        self.malformed = 0
        self._replaying = replay
        self._fd = -1

    async def run(self, started: Callable[[], None]) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise KernelFeatureError(e.errno, f"cannot read {self.path}: {e.strerror}") from e
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        try:
            if not self.replay:
                os.lseek(fd, 0, os.SEEK_END)
            self._fd = fd
            loop.add_reader(fd, wake.set)
            started()
            while True:
                if self._drain(fd):
                    await asyncio.sleep(0)  # more waiting: let others run first
                    continue
                self._replaying = False  # the backlog is read: what comes now is new
                wake.clear()
                await wake.wait()
        finally:
            self._fd = -1
            loop.remove_reader(fd)
            os.close(fd)

    def read_now(self) -> None:
        """Read what is there without waiting to be woken.

        printk stores a record before the code that printed it goes on (ext4
        notifies fanotify right after its message), but the kernel wakes
        /dev/kmsg readers lazily, at a later timer tick: milliseconds on an
        idle machine. A source that knows a record is there calls this.
        """
        if self._fd >= 0:
            self._drain(self._fd)

    def _drain(self, fd: int) -> bool:
        """Read up to BATCH records; True when more may be waiting."""
        for _ in range(BATCH):
            try:
                record = os.read(fd, MAX_RECORD)
            except BlockingIOError:
                return False
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno != errno.EPIPE:
                    raise
                self.overruns += 1
                log.warning("kernel log overran: records lost (%d times)", self.overruns)
                continue
            if not record:
                return False
            self.records += 1
            self._handle(record)
        return True

    def _handle(self, record: bytes) -> None:
        try:
            found = classify(parse_kmsg(record))
        except KernelFormatError as e:
            self.malformed += 1
            log.debug("%s", e)
            return
        if found is None:
            return
        device = found.device or resolve_devname(found.devname)
        self._emit(KernelReport(
            kind=found.kind, source="kmsg", device=device, devname=found.devname,
            errno=found.errno, function=found.function, message=found.message,
            comm=found.comm, replayed=self._replaying, read_only=found.read_only,
            follows=found.follows, resource=found.resource,
        ))
