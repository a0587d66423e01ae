"""The `mountinfo` mount-table backend, and the choice between the two backends.

How it works: /proc/<pid>/mountinfo always polls readable; a change to the
mount namespace (mount, unmount, remount, move) adds EPOLLPRI|EPOLLERR. An
epoll fd watching it for EPOLLPRI is handed to the event loop. Reads are
paced (ReadPacer): a change after a quiet spell is read at once, but reads
follow each other at most once per `gap`, which grows with what a read
costs (reading, parsing, the engine's diff), so a storm of N changes costs a
bounded share of one CPU instead of N full reads. Each read is parsed by a
cached parser (only new lines are parsed) in a worker thread and handed on
as a MountSnapshot; the engine diffs it by mount id. A small table (up to
EARLY_READ_MAX mounts) is also read the moment POLLPRI comes, on the loop,
and the paced read hands on that text first: a remount followed at once by
an unmount is in it, where a read made after the pace's wait shows neither.

The `fanotify` backend (fanotify_mounts.py) is preferred when the kernel has
mount-namespace marks and statmount: it is told which mount changed.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
import time
from collections.abc import Callable
from typing import Protocol

from fsmond.errors import KernelFeatureError
from fsmond.events import MountSnapshot, Observation
from fsmond.sources import mountapi
from fsmond.sources.fanotify_mounts import EARLY_READ_MAX, FanotifyMountSource
from fsmond.sources.mountinfo import MountinfoParser, mountinfo_path

log = logging.getLogger(__name__)

MIN_GAP = 0.02  # seconds between the starts of two reads, at the least
MAX_GAP = 1.0  # and at the most: news is never held back longer
COST_FACTOR = 10.0  # in a storm, reads take at most 1/COST_FACTOR of the time


class MountSource(Protocol):
    name: str

    async def run(self, started: Callable[[], None]) -> None: ...


class ReadPacer:
    """When to re-read a table whose every read costs O(table): at once after
    a quiet spell, else `gap` after the start of the last read."""

    def __init__(self) -> None:
        self.gap = MIN_GAP
        self._last = float("-inf")

    def delay(self, now: float) -> float:
        """How long a read wanted at `now` should wait for more changes."""
        return max(0.0, self._last + self.gap - now)

    def read(self, start: float, cost: float) -> None:
        """A read started at `start` and took `cost` seconds, handling included."""
        self._last = start
        self.gap = min(MAX_GAP, max(MIN_GAP, COST_FACTOR * cost))


class MountinfoSource:
    name = "mountinfo"

    def __init__(self, emit: Callable[[Observation], None], path: str = "/proc/self/mountinfo"):
        self._emit = emit
        self.path = path
        self._parser = MountinfoParser()
        self.pacer = ReadPacer()
        self.reads = 0
        self.wakeups = 0
        self._size = 0  # mounts in the last read
        self._early: bytes | None = None  # the table as read when POLLPRI came

    async def _read_and_emit(self, fd: int) -> None:
        start = time.monotonic()
        early, self._early = self._early, None
        if early is not None:
            # The table as the change left it; then as it is now, read after
            # listening again (a change since the early read may have left no
            # POLLPRI to wake us: listening again polls it away).
            self._emit(MountSnapshot(await asyncio.to_thread(self._parser.parse, early)))
        entries = await asyncio.to_thread(lambda: self._parser.parse(mountapi.read_all(fd)))
        self._size = len(entries)
        self._emit(MountSnapshot(entries))
        self.pacer.read(start, time.monotonic() - start)
        self.reads += 1

    async def run(self, started: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise KernelFeatureError(e.errno, f"cannot open {self.path}: {e.strerror}") from e
        ep = select.epoll()
        changed = asyncio.Event()
        try:
            ep.register(fd, select.EPOLLPRI | select.EPOLLERR)
            ep.poll(0)  # consume the "changed since open" state

            def on_ready() -> None:
                # The loop's own epoll asking ours already consumed the POLLPRI
                # state, so being called is the news; poll(0) only drains.
                # Then stop listening until the read: in a storm every change
                # would wake the loop (a fifth of fsmond's CPU in one).
                ep.poll(0)
                loop.remove_reader(ep.fileno())
                self.wakeups += 1
                if self._size <= EARLY_READ_MAX:
                    self._early = mountapi.read_all(fd)
                changed.set()

            loop.add_reader(ep.fileno(), on_ready)
            await self._read_and_emit(fd)
            started()
            while True:
                await changed.wait()
                if (delay := self.pacer.delay(time.monotonic())) > 0:
                    await asyncio.sleep(delay)  # in a storm: let it add to this read
                changed.clear()
                # Listen again before reading: a change from now on may be
                # missing from the read, and wakes us for the next one.
                ep.poll(0)
                loop.add_reader(ep.fileno(), on_ready)
                await self._read_and_emit(fd)
        finally:
            loop.remove_reader(ep.fileno())
            ep.close()
            os.close(fd)


def make_mount_source(
    backend: str, emit: Callable[[Observation], None], mount_namespace: str = ""
) -> MountSource:
    """`auto` takes fanotify when the kernel has it, else mountinfo. Why not
    is logged with the errno: ENOSYS is an older kernel, EPERM a seccomp
    filter or a missing capability, EACCES another process's namespace
    without CAP_SYS_PTRACE; only the first is expected."""
    if backend in ("auto", "fanotify"):
        ns = mount_namespace or "/proc/self/ns/mnt"
        reason = mountapi.statmount_missing() or mountapi.fanotify_mounts_missing(ns)
        if reason is None:
            return FanotifyMountSource(emit, ns_path=ns)
        if backend == "fanotify":
            raise KernelFeatureError(f"mount_backend = fanotify is not available: {reason}")
        old_kernel = reason.errno in (errno.ENOSYS, errno.EINVAL)
        log.log(logging.INFO if old_kernel else logging.WARNING,
                "mount backend: mountinfo, as fanotify mount marks or statmount fail: %s%s",
                reason, "" if old_kernel else _hint(reason, mount_namespace))
    return MountinfoSource(emit, mountinfo_path(mount_namespace))


def _hint(reason: OSError, mount_namespace: str) -> str:
    if reason.errno == errno.EACCES and mount_namespace:
        return (f" (opening {mount_namespace} needs CAP_SYS_PTRACE, which the shipped unit "
                "does not grant; its own namespace already receives the host's mounts)")
    return " (a seccomp filter, or no CAP_SYS_ADMIN)"
