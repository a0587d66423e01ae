"""FAN_FS_ERROR on a real loop-mounted ext4; the pure parser on hostile bytes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsmond.events import KernelReport, Observation
from fsmond.sources.fserror import FsErrorSource, fsid_key, parse_fs_error_events
from fsmond.sources.mountapi import Check, shows_device, shows_mount
from tests.running import loop_ext4, mount_id_of, tmpfs


def event(mask: int, fsid: tuple[int, int], errno: int, count: int) -> bytes:
    fid = struct.pack("=BBH", 1, 0, 4 + 8 + 8) + struct.pack("=II", *fsid) + b"\0" * 8
    err = struct.pack("=BBH", 5, 0, 12) + struct.pack("=iI", errno, count)
    body = fid + err
    return struct.pack("=IBBHQii", 24 + len(body), 3, 0, 24, mask, -1, 0) + body


def test_parser_reads_fsid_errno_and_count() -> None:
    buf = event(0x8000, (0x1234, 0x5678), 117, 3) * 2
    got = parse_fs_error_events(buf)
    assert [(e.fsid, e.errno, e.count) for e in got] == [(fsid_key(0x1234, 0x5678), 117, 3)] * 2
    assert parse_fs_error_events(event(0x4000, (0, 0), 0, 0))[0].overflow


def test_an_errno_of_either_sign_is_accepted() -> None:
    """ext4 on this kernel (6.18) and Linux 7.0's xfs reports send a positive
    errno; one sent as kernel functions return it (negative) means the same."""
    got = parse_fs_error_events(event(0x8000, (1, 2), -5, 1) + event(0x8000, (1, 2), 5, 1))
    assert [e.errno for e in got] == [5, 5]


@given(st.binary(max_size=200))
def test_parser_never_crashes_on_garbage(data: bytes) -> None:
    parse_fs_error_events(data)
    parse_fs_error_events(event(0x8000, (1, 2), 5, 1)[: len(data) % 60] + data)


def trigger(loop: str, message: str) -> None:
    Path(f"/sys/fs/ext4/{loop}/trigger_fs_error").write_text(message + "\n")


@pytest.mark.root
def test_real_ext4_error_reaches_the_device(tmp_path: Path) -> None:
    with loop_ext4(tmp_path / "img", tmp_path / "m") as (m, loop), \
            tmpfs(tmp_path / "t") as t:
        st = os.stat(m)
        dev = (os.major(st.st_dev), os.minor(st.st_dev))
        got: list[Observation] = []

        async def main() -> tuple[bool, bool]:
            arrived = asyncio.Event()
            src = FsErrorSource(lambda batch: (got.extend(batch), arrived.set()))
            started = asyncio.Event()
            task = asyncio.create_task(src.run(started.set))
            await asyncio.wait_for(started.wait(), 5)
            marked = (src.watch(dev, str(m), mount_id_of(m)),
                      src.watch((0, 99), str(t), mount_id_of(t)))
            trigger(loop, "fanotify test")
            try:
                await asyncio.wait_for(arrived.wait(), 10)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            return marked

        assert asyncio.run(main())[0]  # ext4 supports the mark (tmpfs may or may not)
    assert got == [KernelReport(kind="error", source="fanotify", device=dev,
                                errno=got[0].errno, count=1)]  # type: ignore[union-attr]
    assert got[0].errno > 0  # type: ignore[union-attr]


@pytest.mark.root
@pytest.mark.parametrize("check", [shows_device, shows_mount])
def test_a_file_system_unmounted_before_its_mark_is_not_marked(tmp_path: Path,
                                                               check: Check) -> None:
    """The mount table said an ext4 is at `m`, but it is gone by the time the
    mark is made: the path now shows the ext4 below it, whose errors must not
    be taken for the first one's. Told by the device (statmount) or, on kernels
    without statmount, by the mount id."""

    async def watch(dev: tuple[int, int], path: Path, mnt_id: int) -> bool:
        src = FsErrorSource(lambda batch: None, check)
        started = asyncio.Event()
        task = asyncio.create_task(src.run(started.set))
        await asyncio.wait_for(started.wait(), 5)
        try:
            return src.watch(dev, str(path), mnt_id)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    with loop_ext4(tmp_path / "below.img", tmp_path / "below") as (below, _):
        with loop_ext4(tmp_path / "img", below / "m") as (m, _):
            st = os.stat(m)
            dev = (os.major(st.st_dev), os.minor(st.st_dev))
            mnt_id = mount_id_of(m)
            assert asyncio.run(watch(dev, m, mnt_id)) is True
        assert os.stat(m).st_dev == os.stat(below).st_dev != st.st_dev
        assert asyncio.run(watch(dev, m, mnt_id)) is False
