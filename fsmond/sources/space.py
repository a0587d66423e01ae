"""statvfs sampling in worker threads, with a timeout that never blocks the rest.

How it works: each watched file system (one path per superblock) has a due
time. When it is due and no call for it is in flight, a job goes on a queue
that a few worker threads drain; results come back to the event loop with
`call_soon_threadsafe`. A call that has not returned after `timeout` makes
the file system `Unresponsive`; it is not asked again until that call
returns (then `Responsive`), so a hung NFS or a stopped FUSE server holds
exactly one thread, never a pile of them. A worker stuck in such a call is
replaced, up to `max_threads` in all, so the other file systems keep their
schedule. statvfs can hang in the kernel and a Python thread cannot be
killed, which is why threads are the only safe way to call it.

What to sample comes from the engine's steps (`follow`), as publishers
follow them: each FsState says where its file system is looked at
(`sample_path`, `mount_id`; none while every mount point is covered), its
type, and when its fill rate predicts the next level (`seconds_to_level`).
The interval is `interval`, sooner (never below `min_interval`) as that
prediction nears, so that a crossing is seen within a small share of the fill.

statvfs is not the truth on btrfs: there the same thread replaces its
figures with btrfs's own accounting (sources/btrfs.py), so that metadata
running out and RAID profiles are seen.

The path is a mount point, and its file system can be unmounted between the
mount table and the call; statvfs then measures whatever the path shows
instead. So after each statvfs the sampler asks whether the path still
shows the file system meant (`check`: by statmount's device where the kernel
has statmount, which also gives the superblock options, else by statx's mount
id) and drops numbers that belong to another one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fsmond.events import DevNum, Observation, Responsive, SpaceSample, SuperOptions, Unresponsive
from fsmond.sources.btrfs import BtrfsReader

if TYPE_CHECKING:
    from fsmond.engine.step import FsState, Step
    from fsmond.sources.mountapi import Check

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Flight:
    started: float | None = None  # set by the worker: time queued for a thread is no hang
    reported: bool = False


def sample_path(
    device: DevNum, path: str, statvfs: Callable[[str], os.statvfs_result] = os.statvfs
) -> SpaceSample:
    """One statvfs, in bytes (f_frsize units multiplied out)."""
    st = statvfs(path)
    bs = st.f_frsize or st.f_bsize
    return SpaceSample(
        device=device,
        size=st.f_blocks * bs,
        free=st.f_bfree * bs,
        available=st.f_bavail * bs,
        files=st.f_files,
        files_free=st.f_ffree,
        files_available=st.f_favail,
        block_size=bs,
    )


class SpaceSampler:
    name = "statvfs"

    def __init__(
        self,
        emit: Callable[[Observation], None],
        *,
        interval: float = 5.0,
        min_interval: float = 0.1,
        timeout: float = 2.0,
        workers: int = 2,
        max_threads: int = 16,
        check: Check | None = None,
        statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
        btrfs: BtrfsReader | None = None,
    ) -> None:
        self._btrfs = btrfs or BtrfsReader()
        self._statvfs = statvfs
        self._emit = emit
        self.interval = interval
        self.min_interval = min_interval
        self._targets: dict[DevNum, FsState] = {}  # the file systems a mount point shows
        self.timeout = timeout
        self._base_workers = workers
        self.max_threads = max(workers, max_threads)
        self._check = check
        self._jobs: queue.SimpleQueue[tuple[DevNum, str, int, str] | None] = queue.SimpleQueue()
        self._due: dict[DevNum, float] = {}
        self._flights: dict[DevNum, _Flight] = {}
        self._busy: dict[int, DevNum] = {}  # worker thread ident -> device in its call
        self._threads: list[threading.Thread] = []
        self._wake = asyncio.Event()
        # File systems that answered once (a sample, an error) or were found
        # unresponsive: see first_round.
        self._answered: set[DevNum] = set()
        self._answer = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.samples = 0

    @property
    def threads(self) -> int:
        return sum(t.is_alive() for t in self._threads)

    def poke(self) -> None:
        """Sample every file system now (mount table changed, levels changed)."""
        self._due.clear()
        self._wake.set()

    def follow(self, step: Step) -> None:
        """What to sample, from the engine's step: file systems come and go,
        are covered or uncovered, and move closer to a level."""
        for dev in step.removed:
            self._targets.pop(dev, None)
            self._due.pop(dev, None)
            self._answered.discard(dev)
        if step.removed:
            self._btrfs.forget(set(self._targets))
        for state in step.states:
            if state.sample_path:
                self._targets[state.device] = state
            elif self._targets.pop(state.device, None) is not None:
                self._due.pop(state.device, None)
        if step.added or step.removed:
            self.poke()

    async def first_round(self) -> None:
        """Until every file system to sample has answered once, or was found
        unresponsive (after `timeout`). The daemon announces itself only then:
        an object appears with its first sample, so a client's first look
        would otherwise miss the file systems still in their first statvfs."""
        while not self._answered.issuperset(self._targets):
            self._answer.clear()
            await self._answer.wait()

    def _answered_by(self, dev: DevNum) -> None:
        if dev not in self._answered:
            self._answered.add(dev)
            self._answer.set()

    def delay(self, dev: DevNum) -> float:
        """Seconds until a file system's next sample: half the predicted time
        to its next level, between min_interval and interval."""
        state = self._targets.get(dev)
        if state is None:
            return self.interval
        return max(self.min_interval, min(self.interval, state.seconds_to_level / 2))

    async def run(self, started: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        for _ in range(self._base_workers):
            self._spawn()
        started()
        try:
            while True:
                next_wake = self._schedule(time.monotonic())
                self._wake.clear()
                # Not asyncio.wait_for: on 3.11 it loses a cancel that comes as
                # the wake does, and the daemon then never stops.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, next_wake)):
                        await self._wake.wait()
        finally:
            for _ in self._threads:
                self._jobs.put(None)

    def _schedule(self, now: float) -> float:
        """Start due jobs, flag overdue calls; seconds until something is due."""
        wait = self.timeout
        # A copy: what is emitted here comes back at once, through the engine, to `follow`.
        for dev, state in list(self._targets.items()):
            flight = self._flights.get(dev)
            if flight is not None:
                if flight.started is None:
                    continue
                overdue = flight.started + self.timeout - now
                if overdue <= 0 and not flight.reported:
                    flight.reported = True
                    log.warning("statvfs of %s has not returned in %.1fs", state.sample_path,
                                self.timeout)
                    self._emit(Unresponsive(dev, self.timeout))
                    self._answered_by(dev)
                    self._replace_stuck_worker()
                elif overdue > 0:
                    wait = min(wait, overdue)
                continue
            due = self._due.setdefault(dev, now)
            if due <= now:
                self._flights[dev] = _Flight()
                self._jobs.put((dev, state.sample_path, state.mount_id, state.fstype))
            else:
                wait = min(wait, due - now)
        return wait

    def _replace_stuck_worker(self) -> None:
        free = self.threads - len(self._busy_stuck())
        if free < self._base_workers and self.threads < self.max_threads:
            self._spawn()
        elif free < 1:
            log.error("all %d statvfs threads are stuck in hung file systems", self.threads)

    def _busy_stuck(self) -> list[DevNum]:
        return [d for d in self._busy.values() if (f := self._flights.get(d)) and f.reported]

    def _spawn(self) -> None:
        t = threading.Thread(target=self._work, name="fsmond-statvfs", daemon=True)
        self._threads.append(t)
        self._threads = [x for x in self._threads if x.is_alive() or x is t]
        t.start()

    def _work(self) -> None:
        me = threading.get_ident()
        while (job := self._jobs.get()) is not None:
            dev, path, mnt_id, fstype = job
            self._busy[me] = dev
            flight = self._flights.get(dev)
            if flight is not None:
                flight.started = time.monotonic()
            result: SpaceSample | OSError
            options = None
            try:
                result = sample_path(dev, path, self._statvfs)
                if self._check is not None:
                    ours, options = self._check(path, dev, mnt_id)
                    if not ours:
                        # Unmounted (or mounted over) since the mount table said
                        # so: the numbers are of whatever the path shows now.
                        result = OSError(errno.ESTALE, "the path shows another file system")
                if fstype == "btrfs" and isinstance(result, SpaceSample):
                    result = self._btrfs.sample(result, path)
            except OSError as e:
                result = e
            finally:
                self._busy.pop(me, None)
            loop = self._loop
            if loop is None or loop.is_closed():
                return
            try:
                loop.call_soon_threadsafe(self._done, dev, path, result, options)
            except RuntimeError:  # the loop closed while we were in statvfs
                return
            if self.threads > self._base_workers and not self._busy_stuck():
                return  # a replacement worker that is no longer needed

    def _done(
        self, dev: DevNum, path: str, result: SpaceSample | OSError, opts: str | None
    ) -> None:
        flight = self._flights.pop(dev, None)
        now = time.monotonic()
        if dev in self._targets:
            self._answered_by(dev)
        if flight is not None and flight.reported:
            self._emit(Responsive(dev))
        if isinstance(result, OSError):
            # Gone between the mount table and the call, or permission: not a hang.
            log.debug("statvfs %s: %s", path, result)
            self._due[dev] = now + self.delay(dev)
            return
        self.samples += 1
        if opts is not None:
            self._emit(SuperOptions(dev, opts))
        self._emit(result)
        self._due[dev] = now + self.delay(dev)
        self._wake.set()
