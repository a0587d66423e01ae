"""The statvfs sampler: real statvfs on real paths, and a call that hangs.

The hang is a real blocked thread (the statvfs function given to the sampler
waits on an Event for one path): the point is that the scheduling around a
call that does not return keeps every other file system on time and holds a
bounded number of threads. A hung FUSE server is exercised in the
reliability tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fsmond.engine.step import FsState, Step
from fsmond.events import DevNum, Observation, Responsive, SpaceSample, SuperOptions, Unresponsive
from fsmond.sources.mountapi import Check, file_system_at, shows_device, shows_mount
from fsmond.sources.space import SpaceSampler, sample_path
from tests.running import dev_of, mount_id_of, tmpfs

BLANK = FsState((0, 0), "", "", (), 0, "", 0, False, 0, 0, 0, 0, 0, 0.0, "ok", "ok", False,
                True, 0, "", 0.0, -1.0, (), "", "", False, math.inf)


def shown(*targets: tuple[DevNum, str, int], seconds_to_level: float = math.inf) -> Step:
    """A step that adds file systems shown at these (device, path, mount id)."""
    states = tuple(BLANK._replace(device=d, sample_path=p, mount_id=m, mount_points=(p,),
                                  seconds_to_level=seconds_to_level) for d, p, m in targets)
    return Step(states=states, added=frozenset(s.device for s in states))


def test_the_sampler_follows_steps_and_looks_sooner_as_a_level_nears() -> None:
    s = SpaceSampler(lambda o: None, interval=5.0, min_interval=0.1)
    s.follow(shown(((0, 1), "/a", 1), ((0, 2), "/b", 2)))
    assert s.delay((0, 1)) == 5.0  # not filling
    s.follow(Step(states=(BLANK._replace(device=(0, 1), sample_path="/a", seconds_to_level=4),)))
    assert s.delay((0, 1)) == 2.0  # half the predicted time
    s.follow(Step(states=(BLANK._replace(device=(0, 1), sample_path="/a", seconds_to_level=0),)))
    assert s.delay((0, 1)) == 0.1
    # Covered (no mount point shows it) and removed: neither is sampled.
    s.follow(Step(states=(BLANK._replace(device=(0, 1)),), removed=frozenset({(0, 2)})))
    s._schedule(0.0)
    assert s._jobs.empty()
    s.follow(shown(((0, 1), "/a2", 7)))
    s._schedule(0.0)
    assert s._jobs.get_nowait() == ((0, 1), "/a2", 7, "") and s._jobs.empty()


def test_sample_path_matches_statvfs() -> None:
    st = os.statvfs("/")
    s = sample_path((1, 2), "/")
    bs = st.f_frsize
    assert (s.size, s.files, s.block_size) == (st.f_blocks * bs, st.f_files, bs)
    assert s.device == (1, 2)


def test_a_hung_file_system_never_delays_the_others() -> None:
    release = threading.Event()
    hung_calls = 0

    def statvfs(path: str) -> os.statvfs_result:
        nonlocal hung_calls
        if path == "/proc" and not release.is_set():  # a stopped FUSE server
            hung_calls += 1
            release.wait(30)
        return os.statvfs("/")

    got: list[tuple[float, Observation]] = []
    during: list[SpaceSample] = []
    targets = [((0, 1), "/", 1), ((0, 2), "/proc", 2), ((0, 3), "/tmp", 3)]

    async def main() -> SpaceSampler:
        s = SpaceSampler(lambda o: got.append((time.monotonic(), o)), interval=0.05,
                         timeout=0.2, workers=1, max_threads=4, statvfs=statvfs)
        s.follow(shown(*targets))
        task = asyncio.create_task(s.run(lambda: None))
        await asyncio.sleep(1.5)
        assert s.threads <= 3  # the base worker, the stuck one, at most one spare
        during.extend(o for _, o in got if isinstance(o, SpaceSample) and o.device == (0, 1))
        release.set()
        await asyncio.sleep(0.3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return s

    asyncio.run(main())
    hung = [o for _, o in got if isinstance(o, Unresponsive)]
    assert hung == [Unresponsive((0, 2), 0.2)]
    assert [o for _, o in got if isinstance(o, Responsive)] == [Responsive((0, 2))]
    assert hung_calls == 1  # never re-asked while its call was still in flight
    # The others kept being sampled while the hung call was pending (about 30
    # polls fit in the window; a sampler blocked behind the hang would manage 1).
    assert len(during) >= 5
    assert any(isinstance(o, SpaceSample) and o.device == (0, 3) for _, o in got)


def test_a_cancel_that_comes_with_a_wake_up_still_stops_the_sampler() -> None:
    """The daemon cancels its components at shutdown while the mount table may
    be poking the sampler: neither may be lost (asyncio.wait_for loses it on 3.11)."""

    async def main() -> bool:
        s = SpaceSampler(lambda o: None, interval=60.0)
        task = asyncio.create_task(s.run(lambda: None))
        await asyncio.sleep(0.05)  # waiting for its next wake-up
        s.poke()
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2)
        if not done:  # let the test end either way
            task.cancel()
            await asyncio.wait([task], timeout=2)
        return bool(done)

    assert asyncio.run(main())


@pytest.mark.root
@pytest.mark.parametrize("check", [shows_device, shows_mount])
def test_a_file_system_unmounted_under_the_call_is_not_sampled(tmp_path: Path,
                                                               check: Check) -> None:
    """The mount table said the tmpfs is at `t`, and it is unmounted just before
    the statvfs: the numbers are the parent's (a full disk can look like a
    tmpfs past its levels), so nothing may be reported for the tmpfs. Told by
    the device (statmount) or, on kernels without statmount, by the mount id."""
    t = tmp_path / "t"
    calls: list[str] = []
    two_calls: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def statvfs(path: str) -> os.statvfs_result:
        if path == str(t) and not calls:
            subprocess.run(["umount", str(t)], check=True)
        calls.append(path)
        if len(calls) % 2 == 0:  # the racing call and one after it
            loop, event = two_calls[-1]
            loop.call_soon_threadsafe(event.set)
        return os.statvfs(path)

    got: list[Observation] = []

    async def main() -> None:
        two_calls.append((asyncio.get_running_loop(), asyncio.Event()))
        s = SpaceSampler(got.append, interval=0.05, check=check, statvfs=statvfs)
        s.follow(shown((dev, str(t), mnt_id)))
        task = asyncio.create_task(s.run(lambda: None))
        await asyncio.wait_for(two_calls[-1][1].wait(), 10)
        await asyncio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with tmpfs(t, "size=1m"):
        dev = tuple(int(x) for x in dev_of(t).split(":"))
        mnt_id = mount_id_of(t)
        assert file_system_at(str(t)) == (dev, "rw,size=1024k")
        asyncio.run(main())
    assert got == []  # the parent's numbers, not the tmpfs's: dropped
    # Where the tmpfs is still mounted, its numbers and options are reported.
    with tmpfs(t, "size=1m"):
        dev = tuple(int(x) for x in dev_of(t).split(":"))
        mnt_id = mount_id_of(t)
        asyncio.run(main())
    # The mount id says nothing of the options: they come from the mount table there.
    assert {type(o) for o in got} == ({SpaceSample, SuperOptions} if check is shows_device
                                      else {SpaceSample})
    assert all(o.device == dev for o in got)  # type: ignore[union-attr]
    assert any(isinstance(o, SpaceSample) and o.size == 1 << 20 for o in got)
