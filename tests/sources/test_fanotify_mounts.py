"""The fanotify backend: attach, detach, remount, and a storm past the queue."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fsmond.engine.mounts import MountTable
from fsmond.sources import mountapi
from fsmond.sources.fanotify_mounts import (
    STORM_QUIET,
    SWEEP_MAX_WAIT,
    FanotifyMountSource,
)
from tests.kernel import require_mount_api
from tests.running import run, tmpfs
from tests.sources.follow import follow as follow_source

pytestmark = [pytest.mark.root]


@pytest.fixture(autouse=True)
def _kernel_has_it() -> None:
    require_mount_api(fanotify=True)
libc = ctypes.CDLL(None, use_errno=True)


async def follow(table: MountTable, action: Callable[[], None],
                 until: Callable[[FanotifyMountSource], bool],
                 block: bool = False) -> FanotifyMountSource:
    return await follow_source(table, action, until, FanotifyMountSource, block)


def kernel_table() -> dict[int, object]:
    out = {}
    for uid in mountapi.listmount_all():
        found = mountapi.statmount(uid)
        if found is not None:
            out[found.entry.mount_id] = found.entry
    return out


def test_attach_remount_detach(tmp_path: Path) -> None:
    table = MountTable()
    t = tmp_path / "t"
    t.mkdir()

    def mount() -> None:
        run("mount", "-t", "tmpfs", "-o", "size=1m", "fan", str(t))

    def at(point: Path, opts: str) -> Callable[[FanotifyMountSource], bool]:
        return lambda _: any(e.mount_point == str(point) and opts in e.super_options
                             for e in table.mounts.values())

    asyncio.run(follow(table, mount, at(t, "size=1024k")))
    asyncio.run(follow(table, lambda: None, at(t, "size=1024k")))  # resync sees it too
    try:
        table2 = MountTable()
        src = asyncio.run(follow(
            table2, lambda: run("mount", "-o", "remount,size=2m", str(t)), at2 := (
                lambda _: any(e.mount_point == str(t) and "size=2048k" in e.super_options
                              for e in table2.mounts.values()))))
        assert at2(src) and src.sweeps >= 1
        assert asyncio.run(follow(
            table2, lambda: run("umount", str(t)),
            lambda _: all(e.mount_point != str(t) for e in table2.mounts.values())))
    finally:
        with contextlib.suppress(Exception):
            run("umount", str(t))


def test_a_remount_is_found_by_statmount_of_its_mount_alone(tmp_path: Path) -> None:
    n = 300
    with tmpfs(tmp_path / "s") as base:
        (base / "src").mkdir()
        for i in range(n):
            (base / f"m{i}").mkdir()
            assert libc.mount(str(base / "src").encode(), str(base / f"m{i}").encode(),
                              None, 0x1000, None) == 0
        with tmpfs(base / "t", "size=1m") as t:
            table = MountTable()
            src = asyncio.run(follow(
                table, lambda: run("mount", "-o", "remount,size=2m", str(t)),
                lambda _: any(e.mount_point == str(t) and "size=2048k" in e.super_options
                              for e in table.mounts.values())))
            assert src.sweeps >= 1
            # The remounted mount, not the whole table (over 300 mounts)
            assert 1 <= src.swept <= 3


def test_after_a_storm_only_the_mount_remounted_in_it_is_statmounted_again(
        tmp_path: Path) -> None:
    n = 300
    with tmpfs(tmp_path / "s") as base:
        (base / "src").mkdir()
        for i in range(n):
            (base / f"m{i}").mkdir()
        last = str(base / f"m{n - 1}")

        def storm() -> None:
            for i in range(n):
                assert libc.mount(str(base / "src").encode(), str(base / f"m{i}").encode(),
                                  None, 0x1000, None) == 0
            # MS_REMOUNT | MS_BIND | MS_RDONLY: fanotify says nothing of it
            assert libc.mount(None, last.encode(), None, 0x1021, None) == 0
            time.sleep(STORM_QUIET + 1)  # the sweep after the storm
            assert libc.mount(str(base / "src").encode(), str(base / "src").encode(),
                              None, 0x1000, None) == 0  # a last change to wait for

        table = MountTable()
        src = asyncio.run(follow(
            table, storm, lambda _: any(e.mount_point == f"{base}/src"
                                        for e in table.mounts.values())))
        ours = [e for e in table.mounts.values() if e.mount_point.startswith(f"{base}/m")]
        assert len(ours) == n
        assert [e.mount_point for e in ours if e.options.startswith("ro")] == [last]
        # Every line of the storm was new to the sweep; it asked only for the
        # remounted mount (if its attach was read before the remount), not all 300.
        assert src.sweeps >= 1 and src.swept <= 1


def test_a_remount_is_seen_while_mounts_keep_changing(tmp_path: Path) -> None:
    # The sweep waits out a storm; under churn that never pauses for
    # STORM_QUIET it must still come, or a remount would never be seen.
    with tmpfs(tmp_path / "s") as base:
        src, churned, keep = (str(base / name).encode() for name in ("src", "churn", "keep"))
        for name in ("src", "churn", "keep"):
            (base / name).mkdir()
        assert libc.mount(src, keep, None, 0x1000, None) == 0
        stop = threading.Event()
        failed: list[int] = []  # an errno: the churn stopped early, the test means nothing

        def churn() -> None:
            until = time.monotonic() + 5 * SWEEP_MAX_WAIT
            steps = (lambda: libc.mount(src, churned, None, 0x1000, None),
                     lambda: libc.umount2(churned, 0))
            while not stop.is_set() and time.monotonic() < until:
                for step in steps:
                    if step() != 0:
                        failed.append(ctypes.get_errno())
                        return
                    time.sleep(0.02)

        churner = threading.Thread(target=churn)

        def churn_then_remount() -> None:
            churner.start()
            time.sleep(STORM_QUIET)  # the churn is well under way
            assert libc.mount(None, keep, None, 0x1021, None) == 0  # remount,bind,ro

        table = MountTable()
        try:
            asyncio.run(follow(table, churn_then_remount, lambda _: any(
                e.mount_point == str(base / "keep") and e.options.startswith("ro")
                for e in table.mounts.values())))
            assert not failed, f"the churn failed: errno {failed}"
            assert churner.is_alive(), "the remount was seen only once the churn had stopped"
        finally:
            stop.set()
            if churner.ident is not None:  # started
                churner.join()


def test_a_storm_past_the_queue_resyncs_to_the_exact_table(tmp_path: Path) -> None:
    n = 20_000  # more than the 16,384 events a fanotify queue holds
    with tmpfs(tmp_path / "s", "size=16m") as base:
        (base / "src").mkdir()
        for i in range(n):
            (base / f"m{i}").mkdir()
        table = MountTable()

        def storm() -> None:
            src = str(base / "src").encode()
            for i in range(n):
                assert libc.mount(src, str(base / f"m{i}").encode(), None, 0x1000, None) == 0
            for i in range(0, n, 2):  # and half of them go again
                assert libc.umount2(str(base / f"m{i}").encode(), 2) == 0

        expected: dict[int, object] = {}

        def storm_then_read_kernel() -> None:
            storm()
            expected.update(kernel_table())

        # The loop is blocked during the storm: nothing drains the queue, so it
        # overflows, as it would behind a busy daemon.
        src = asyncio.run(follow(table, storm_then_read_kernel,
                                 lambda s: s.overflows > 0 and table.mounts == expected,
                                 block=True))
        assert src.overflows >= 1
        assert table.mounts == kernel_table()
        ours = [e for e in table.mounts.values() if e.mount_point.startswith(f"{base}/m")]
        assert len(ours) == n // 2
