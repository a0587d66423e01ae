"""The daemon in-process: every component started before ready, and a clean stop
through the injectable shutdown trigger."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fsmond import daemon as daemon_module
from fsmond.config import parse_config
from fsmond.daemon import Daemon, _fs_check
from fsmond.engine.step import FsState, Step
from fsmond.events import DevNum, ErrorHistory, Event
from fsmond.sources import mountapi
from tests.running import dev_of, loop_ext4, run, run_daemon, tmpfs, wait_until

pytestmark = [pytest.mark.root]


class Collect:
    name = "collect"

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.calls: list[tuple[list[Event], asyncio.Task[object] | None]] = []
        self.arrived = asyncio.Event()

    def publish(self, step: Step) -> None:
        if not step.events:
            return  # state only: this collects events
        events = list(step.events)
        self.events += events
        self.calls.append((events, asyncio.current_task()))
        self.arrived.set()

    async def until(self, done: Callable[[list[Event]], bool]) -> None:
        """Until the events published so far are `done`."""
        while not done(self.events):
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)

    async def errors(self, n: int) -> None:
        """Until `n` error events have come."""
        await self.until(lambda events: sum(e.name == "error" for e in events) >= n)

    async def run(self, started: object) -> None:
        started()  # type: ignore[operator]
        await asyncio.Future()


def test_ready_after_every_component_then_injected_shutdown(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "t") as t:
        config = parse_config(f'[daemon]\nudev = false\n[[watch]]\npath = "{t}"\n')
        stop = asyncio.Event()
        seen_at_ready: dict[str, object] = {}
        collect = Collect()

        def ready() -> None:
            seen_at_ready.update(d.control.status())
            seen_at_ready["frozen"] = gc.get_freeze_count()
            stop.set()  # stop as soon as it is ready

        d = Daemon(config, publishers=[collect], shutdown_trigger=stop.wait, ready=ready)
        run_daemon(d)
    assert seen_at_ready["filesystems"] == 1 and seen_at_ready["mounts"] > 0
    assert seen_at_ready["mount_backend"] == "fanotify"
    assert "kmsg" in seen_at_ready["error_backends"]  # type: ignore[operator]
    assert seen_at_ready["frozen"] > 10_000  # start-up's objects are out of the cyclic GC
    assert [e.name for e in collect.events] == ["watch-added"]


class LosesOneCancel(Collect):
    """A component inside which the stop's cancel is lost, as on 3.11 in
    asyncio.wait_for when the awaited thing completes at the same moment."""

    name = "loses-one-cancel"

    async def run(self, started: object) -> None:
        started()  # type: ignore[operator]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Future()
        await asyncio.Future()


def test_a_component_that_loses_the_stop_s_cancel_still_stops(tmp_path: Path) -> None:
    config = parse_config("[daemon]\nudev = false\n")
    stop = asyncio.Event()
    d = Daemon(config, publishers=[LosesOneCancel()], shutdown_trigger=stop.wait,
               ready=stop.set)
    run_daemon(d)  # it never stopped before


def test_an_ext4_error_is_one_event_with_both_views_from_the_fanotify_read(
        tmp_path: Path) -> None:
    """kmsg wakes its readers a timer tick late, but ext4 stores its text
    before it notifies fanotify: the daemon reads kmsg in the fanotify
    callback itself, so the error goes out at once, with fanotify's errno and
    kmsg's text in one event."""
    with loop_ext4(tmp_path / "img", tmp_path / "m") as (m, loop):
        config = parse_config(f'[daemon]\nudev = false\n[[watch]]\npath = "{m}"\n')
        collect = Collect()

        async def stop_after_error() -> None:
            await asyncio.to_thread(
                Path(f"/sys/fs/ext4/{loop}/trigger_fs_error").write_text, "one turn\n")
            await collect.errors(1)

        d = Daemon(config, publishers=[collect], shutdown_trigger=stop_after_error)
        run_daemon(d)
    calls = [(events, task) for events, task in collect.calls
             if any(e.name == "error" for e in events)]
    assert len(calls) == 1
    (error,), task = calls[0]
    assert "one turn" in error.details["message"] and error.details["errno"] > 0
    assert error.details["sources"] == ["fanotify", "kmsg"]
    assert task is None  # the fanotify reader's callback, not kmsg's own task


def test_a_step_back_of_the_wall_clock_never_silences_errors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NTP may set the clock back by hours at boot. The second of two errors
    a moment apart is folded into the first one's one-second window and
    published when it ends: that end must come a second later by the
    monotonic clock, not when the wall clock is back where it was."""
    with loop_ext4(tmp_path / "img", tmp_path / "m") as (m, loop):
        config = parse_config(f'[daemon]\nudev = false\n[[watch]]\npath = "{m}"\n')
        collect = Collect()
        trigger = Path(f"/sys/fs/ext4/{loop}/trigger_fs_error")
        wall = time.time

        async def two_errors_an_hour_apart_by_the_wall_clock() -> None:
            await asyncio.to_thread(trigger.write_text, "before the step\n")
            await collect.errors(1)
            monkeypatch.setattr(time, "time", lambda: wall() - 3600)
            await asyncio.to_thread(trigger.write_text, "after the step\n")
            await collect.errors(2)  # the fold window's end: about a second later

        d = Daemon(config, publishers=[collect],
                   shutdown_trigger=two_errors_an_hour_apart_by_the_wall_clock)
        run_daemon(d)
    first, second = [e for e in collect.events if e.name == "error"]
    assert second.details["count"] >= 1  # the folded one (it keeps the window's text)
    assert second.time < first.time - 3000  # stamps still follow the wall clock


@pytest.mark.parametrize("namespace", ["", "/proc/self/ns/mnt"])
def test_without_statmount_samples_are_checked_by_the_mount_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, namespace: str) -> None:
    """Kernels 5.8 - 6.7 have no statmount: the sampler tells a path that no
    longer shows its file system by statx's mount id against the mount table's,
    which must be the same kind of id (mountinfo's), or nothing is ever sampled."""
    monkeypatch.setattr(mountapi, "has_statmount", lambda: False)
    with tmpfs(tmp_path / "t", "size=1m") as t:
        config = parse_config(
            f'[daemon]\nudev = false\nmount_backend = "mountinfo"\n'
            f'mount_namespace = "{namespace}"\n'
            f'[[watch]]\npath = "{t}"\nlower = "2MiB"\nupper = "1KiB"\n')
        collect = Collect()

        d = Daemon(config, publishers=[collect], shutdown_trigger=lambda: collect.until(
            lambda events: any(e.name == "threshold" for e in events)))
        run_daemon(d)
    assert d.sampler._check is mountapi.shows_mount
    (reached,) = [e for e in collect.events if e.name == "threshold"]
    assert reached.details["level"] == "lower" and reached.details["available"] == 1 << 20


def test_without_statmount_another_namespace_s_mount_ids_are_not_compared(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Mount ids are per namespace: statx here gives this namespace's ids, never
    the followed one's, so the check would drop every sample."""
    monkeypatch.setattr(mountapi, "has_statmount", lambda: False)
    other = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep", "30"])
    try:
        ns = f"/proc/{other.pid}/ns/mnt"
        deadline = time.monotonic() + 5
        while os.readlink(ns) == os.readlink("/proc/self/ns/mnt"):  # until unshare has run
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert _fs_check(ns) is None
        assert _fs_check(f"/proc/{os.getpid()}/ns/mnt") is mountapi.shows_mount  # ours
    finally:
        other.kill()
        other.wait()
    monkeypatch.undo()
    assert _fs_check(ns) is mountapi.shows_device  # statmount works in any namespace


def test_a_file_system_whose_mount_point_is_covered_is_sampled_where_it_still_shows(
        tmp_path: Path) -> None:
    """A tmpfs at `a`, bound at `u` too; another tmpfs is mounted over `a`.
    The first one is then sampled through `u` (the sampler learns it from the
    engine's steps, though nothing of that file system changed), so filling
    it through `u` is seen."""
    u = tmp_path / "u"
    u.mkdir()
    with tmpfs(tmp_path / "a", "size=4m") as a:
        run("mount", "--bind", str(a), str(u))
        fs_path = "/org/fsmond/FsMon1/fs/" + dev_of(a).replace(":", "_")
        config = parse_config(
            f'[daemon]\nudev = false\npoll_interval = 0.5\n'
            f'[[watch]]\npath = "{a}"\nlower = "2MiB"\nupper = "1KiB"\n')
        collect = Collect()

        async def cover_then_fill() -> None:
            await asyncio.to_thread(run, "mount", "-t", "tmpfs", "-o", "size=8m", "over", str(a))
            await collect.until(lambda events: sum(e.name == "watch-added" for e in events) == 2)
            await asyncio.sleep(1.0)  # a poll or two while it is covered
            (u / "fill").write_bytes(b"x" * (3 << 20))
            await collect.until(lambda events: any(
                e.name == "threshold" and e.fs == fs_path for e in events))

        d = Daemon(config, publishers=[collect], shutdown_trigger=cover_then_fill)
        try:
            run_daemon(d)
        finally:
            subprocess.run(["umount", "-l", str(a)], check=False)  # the one over it
            subprocess.run(["umount", "-l", str(u)], check=False)
    (reached,) = [e for e in collect.events if e.name == "threshold"]
    assert reached.details["level"] == "lower"


def test_an_ext4_s_recorded_errors_are_its_state_from_the_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ext4 that recorded an error before fsmond started (its superblock's
    count, in sysfs) has that ErrorCount and LastError from its first state,
    read once (kmsg is off: nothing else could say it)."""
    with loop_ext4(tmp_path / "img", tmp_path / "m") as (m, loop):
        Path(f"/sys/fs/ext4/{loop}/trigger_fs_error").write_text("before start\n")
        count = Path(f"/sys/fs/ext4/{loop}/errors_count")
        wait_until(lambda: count.read_text().strip() != "0", "ext4 recording the error")
        config = parse_config(f'[daemon]\nudev = false\nkmsg = false\n[[watch]]\npath = "{m}"\n')
        at_ready: list[FsState] = []
        stop = asyncio.Event()

        def ready() -> None:
            at_ready.extend(s for s in d.states.values() if s.fstype == "ext4")
            stop.set()

        d = Daemon(config, publishers=[Collect()], shutdown_trigger=stop.wait, ready=ready)
        reads: list[DevNum] = []
        real = daemon_module._error_history

        def counted(dev: DevNum) -> ErrorHistory | None:
            reads.append(dev)
            return real(dev)

        monkeypatch.setattr(daemon_module, "_error_history", counted)
        run_daemon(d)
    (state,) = at_ready
    assert state.error_count == 1 and state.last_error.startswith("trigger_test_error:")
    assert reads == [state.device]


def test_an_ext4_covered_when_fsmond_starts_is_marked_for_errors_once_uncovered(
        tmp_path: Path) -> None:
    """Its FAN_FS_ERROR mark needs a path that shows it: an ext4 whose only
    mount point is covered at start is marked when the cover goes (kmsg is
    off, so its error can only come from the mark)."""
    with loop_ext4(tmp_path / "img", tmp_path / "m") as (m, loop), \
            tmpfs(m, "size=1m"):  # over the ext4
        config = parse_config(f'[daemon]\nudev = false\nkmsg = false\n[[watch]]\npath = "{m}"\n')
        collect = Collect()

        async def uncover_then_fail() -> None:
            await asyncio.to_thread(run, "umount", str(m))  # the tmpfs
            # Its watch goes in the step that uncovers the ext4.
            await collect.until(lambda events: any(
                e.name == "watch-removed" and e.fstype == "tmpfs" for e in events))
            trigger = Path(f"/sys/fs/ext4/{loop}/trigger_fs_error")
            await asyncio.to_thread(trigger.write_text, "uncovered\n")
            await collect.errors(1)

        d = Daemon(config, publishers=[collect], shutdown_trigger=uncover_then_fail)
        run_daemon(d)
    (error,) = [e for e in collect.events if e.name == "error"]
    assert error.fstype == "ext4" and error.details["source"] == "fanotify"
