"""The engine end to end on observations: no kernel, no clock, no fixtures."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsmond.engine.core import Engine
from fsmond.engine.step import Step
from fsmond.errors import InvalidArgsError, NotFoundError
from fsmond.events import (
    DevNum,
    Event,
    KernelReport,
    MountDelta,
    MountEntry,
    MountSnapshot,
    Responsive,
    SpaceSample,
    SuperOptions,
    Unresponsive,
)

GIB = 1 << 30


@dataclass(frozen=True)
class Pct:
    p: float

    def to_bytes(self, size: int, block_size: int) -> int:
        return int(size * self.p / 100)

    def __str__(self) -> str:
        return f"{self.p:g}%"


@dataclass(frozen=True)
class Blocks:
    n: int

    def to_bytes(self, size: int, block_size: int) -> int:
        return self.n * block_size

    def __str__(self) -> str:
        return str(self.n)


@dataclass(frozen=True)
class Watch:
    classes: tuple[str, ...] = ("info", "warn", "err", "thr")
    lower: Pct | Blocks = Pct(10)
    upper: Pct = Pct(5)
    hysteresis: Pct = Pct(1)
    inodes_lower: Pct = Pct(5)
    inodes_upper: Pct = Pct(1)


@dataclass
class Policy:
    watch: Watch | None = Watch()
    paths: tuple[str, ...] | None = None  # None: every path

    def watch_for(self, mount_point: str) -> Watch | None:
        if self.paths is not None and mount_point not in self.paths:
            return None
        return self.watch

    def ignored_fstype(self, fstype: str) -> bool:
        return fstype in ("proc", "autofs")


DEV = (7, 0)
DATA = MountEntry(30, 1, DEV, "/", "/data", "rw,relatime", "ext4", "/dev/loop0", "rw")
PROC = MountEntry(2, 1, (0, 21), "/", "/proc", "rw", "proc", "proc", "rw")


def started(policy: Policy | None = None) -> tuple[Engine, list[Event]]:
    e = Engine(policy or Policy())
    return e, e.process(MountSnapshot((PROC, DATA)), 0.0).events


def sample(avail_pct: float, files_avail: int = 1000, t: float = 1.0) -> SpaceSample:
    avail = int(GIB * avail_pct / 100)
    return SpaceSample(DEV, GIB, avail, avail, 1000, files_avail, files_avail, 4096)


def names(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.cls, e.name) for e in events]


def test_start_watches_non_ignored_file_systems_without_mount_events() -> None:
    e, events = started()
    assert names(events) == [("info", "watch-added")]
    assert events[0].fs == "/org/fsmond/FsMon1/fs/7_0" and events[0].mount_point == "/data"
    assert list(e.filesystems) == [DEV]
    assert e.state(e.filesystems[DEV])[:7] == (
        DEV, "ext4", "/dev/loop0", ("/data",), 1, "/data", DATA.mount_id)
    assert [ev.seq for ev in events] == [1]


def test_a_covered_mount_point_is_not_sampled_through() -> None:
    """A file system mounted over /data hides DATA's file system there: its
    statvfs would measure the other one. The steps say where each file system
    is looked at (the sampler follows them), also for the one covered or
    uncovered, though nothing of its own changed."""
    e, _ = started()

    def shown_at(step: Step) -> dict[DevNum, tuple[str, int]]:
        return {s.device: (s.sample_path, s.mount_id) for s in step.states}

    over = MountEntry(31, 30, (0, 50), "/", "/data", "rw", "tmpfs", "tmpfs", "rw")
    assert shown_at(e.process(MountDelta(added=(over,)), 1)) == {
        DEV: ("", 0), (0, 50): ("/data", 31)}
    bind = dataclasses.replace(DATA, mount_id=32, mount_point="/srv/more")
    step = e.process(MountDelta(added=(bind,)), 2)
    assert e.filesystems[DEV].mount_points[0] == "/data"  # its best name, covered
    assert shown_at(step) == {DEV: ("/srv/more", 32)}  # visible there
    assert e.index.visible_mount(DEV) == bind
    step = e.process(MountDelta(removed=(31,)), 3)
    assert shown_at(step) == {DEV: ("/data", DATA.mount_id)}


def test_thresholds_both_ways_with_details() -> None:
    e, _ = started()
    assert e.process(sample(50), 1).events == ()
    down = e.process(sample(3), 2).events
    assert [(ev.details["level"], ev.details["state"]) for ev in down] == [
        ("lower", "reached"), ("upper", "reached")]
    assert down[0].details["resource"] == "space" and down[0].details["size"] == GIB
    assert e.filesystems[DEV].level == "upper"
    up = e.process(sample(50), 3).events
    assert [(ev.details["level"], ev.details["state"]) for ev in up] == [
        ("upper", "cleared"), ("lower", "cleared")]
    assert [ev.seq for ev in down + up] == [2, 3, 4, 5]


def test_no_space_and_no_inodes_fire_once_while_they_hold() -> None:
    e, _ = started()
    e.process(sample(50), 1)
    first = e.process(sample(0, files_avail=0), 2).events
    assert ("warn", "no-space") in names(first) and ("warn", "no-inodes") in names(first)
    assert not {("warn", "no-space"), ("warn", "no-inodes")} & set(
        names(e.process(sample(0, files_avail=0), 3).events))
    e.process(sample(50), 4)
    assert ("warn", "no-space") in names(e.process(sample(0), 5).events)


def test_classes_filter_what_is_published() -> None:
    e, events = started(Policy(Watch(classes=("err",))))
    assert events == ()
    assert e.process(sample(1), 1).events == ()
    assert e.filesystems[DEV].level == "upper"  # state is kept even when unpublished


def test_a_batch_unmounting_every_mount_point_names_the_first_in_watch_removed() -> None:
    e, _ = started()
    binds = [dataclasses.replace(DATA, mount_id=40 + i, mount_point=f"/b{i}") for i in range(3)]
    e.process(MountDelta(added=tuple(binds)), 1)
    assert e.filesystems[DEV].mount_points == ["/b0", "/b1", "/b2", "/data"]
    gone = e.process(MountDelta(removed=(41, 30, 40, 42)), 2).events
    assert [(g.name, g.mount_point) for g in gone][-1] == ("watch-removed", "/b0")


def test_only_a_file_systems_first_mount_and_last_unmount_are_its_own() -> None:
    """Each bind mount's mounted/unmounted is mount-table traffic (per_mount):
    the file system's own object does not send it."""
    e, _ = started()

    def mount_events(events: list[Event]) -> list[tuple[str, str, bool]]:
        return [(ev.name, ev.mount_point, ev.per_mount) for ev in events
                if ev.name in ("mounted", "unmounted")]

    gone = e.process(MountDelta(removed=(30,)), 1).events
    assert mount_events(gone) == [("unmounted", "/data", False)]
    binds = [dataclasses.replace(DATA, mount_id=40 + i, mount_point=f"/b{i}") for i in range(3)]
    assert mount_events(e.process(MountDelta(added=tuple(binds)), 2).events) == [
        ("mounted", "/b0", False), ("mounted", "/b1", True), ("mounted", "/b2", True)]
    assert mount_events(e.process(MountDelta(added=(DATA,)), 3).events) == [
        ("mounted", "/data", True)]
    assert mount_events(e.process(MountDelta(removed=(40, 30)), 4).events) == [
        ("unmounted", "/b0", True), ("unmounted", "/data", True)]
    assert mount_events(e.process(MountDelta(removed=(41, 42)), 5).events) == [
        ("unmounted", "/b1", True), ("unmounted", "/b2", False)]


def test_mount_unmount_remount_and_forced_read_only() -> None:
    e, _ = started()
    bind = dataclasses.replace(DATA, mount_id=31, mount_point="/bind")
    assert names(e.process(MountDelta(added=(bind,)), 1).events) == [("info", "mounted")]
    assert e.filesystems[DEV].mount_points == ["/bind", "/data"]
    ro = dataclasses.replace(bind, options="ro,relatime", super_options="ro")
    remount = e.process(MountDelta(changed=(ro,)), 2).events
    assert names(remount) == [("info", "remounted")]
    assert remount[0].details["old_options"] == "rw,relatime"
    assert e.filesystems[DEV].read_only
    e.process(MountDelta(changed=(bind,)), 3)
    assert not e.filesystems[DEV].read_only
    forced = dataclasses.replace(DATA, super_options="rw,emergency_ro")
    assert names(e.process(MountDelta(changed=(forced,)), 4).events) == [("err", "read-only")]
    assert names(e.process(MountDelta(removed=(31,)), 5).events) == [("info", "unmounted")]
    step = e.process(MountDelta(removed=(30,)), 6)
    gone = step.events
    assert names(gone) == [("info", "unmounted"), ("info", "watch-removed")]
    assert [g.mount_point for g in gone] == ["/data", "/data"]  # what the watch was on
    assert e.filesystems == {}
    assert step.removed == {DEV} and not step.added and len(step.mount_changes) == 1


def test_superblock_options_from_the_sampler_and_kernel_read_only_deduplicated() -> None:
    e, _ = started()
    forced = e.process(SuperOptions(DEV, "rw,emergency_ro"), 1).events
    assert names(forced) == [("err", "read-only")]
    assert e.process(KernelReport("read-only", "kmsg", DEV, "loop0"), 1.1).events == ()
    assert e.process(sample(1), 2).events == ()  # no thresholds on a read-only file system


def test_kernel_errors_fold_per_second_and_merge_sources() -> None:
    e, _ = started()
    kmsg = KernelReport("error", "kmsg", DEV, "loop0", function="ext4_x", message="boom")
    fan = KernelReport("error", "fanotify", DEV, errno=117)
    first = e.process(kmsg, 10.0).events
    assert names(first) == [("err", "error")] and first[0].details["count"] == 1
    assert e.process(fan, 10.001).events == ()  # the same error from the other source
    for i in range(5):
        assert e.process(kmsg, 10.1 + i / 100).events == ()
    assert e.next_deadline() == 11.0
    assert e.tick(10.9).events == ()
    folded = e.tick(11.0).events
    assert names(folded) == [("err", "error")]
    assert folded[0].details["count"] == 5 and folded[0].details["errno"] == 117
    assert e.filesystems[DEV].error_count == 6
    assert e.tick(12).events == () and e.next_deadline() is None


def test_a_textless_error_waits_briefly_for_kmsg_and_becomes_one_event() -> None:
    e = Engine(Policy(), merge_wait=0.05)
    e.process(MountSnapshot((DATA,)), 0.0)
    fan = KernelReport("error", "fanotify", DEV, errno=117)
    kmsg = KernelReport("error", "kmsg", DEV, "loop0", function="f", message="boom")
    held = e.process(fan, 10.0)
    assert held.events == () and e.next_deadline() == 10.05
    assert not held  # held: nothing a publisher shows has changed yet
    step = e.process(kmsg, 10.001)
    merged = step.events
    assert step.changed == {DEV}  # ErrorCount, LastError
    assert names(merged) == [("err", "error")]
    assert merged[0].details["message"] == "boom" and merged[0].details["errno"] == 117
    assert merged[0].details["count"] == 1 and merged[0].details["sources"] == ["fanotify", "kmsg"]
    assert e.tick(11.0).events == ()
    # kmsg never comes (another file system type): published when the hold ends
    assert e.process(fan, 20.0).events == ()
    late = e.tick(20.05).events
    assert names(late) == [("err", "error")] and late[0].details["errno"] == 117


def test_unresponsive_then_responsive_once_each() -> None:
    e, _ = started()
    assert names(e.process(Unresponsive(DEV, 2.0), 1).events) == [("warn", "unresponsive")]
    assert e.process(Unresponsive(DEV, 2.0), 2).events == ()
    assert names(e.process(Responsive(DEV), 3).events) == [("info", "responsive")]
    assert e.process(Responsive(DEV), 4).events == ()


def test_reports_for_unknown_devices_go_to_no_object() -> None:
    e, _ = started()
    ev = e.process(KernelReport("error", "kmsg", (8, 0), "sda", message="I/O error"), 1).events
    assert names(ev) == [("err", "error")] and ev[0].fs == "/" and ev[0].device == "8:0"


def test_run_time_watch_changes_and_config_reload() -> None:
    e, _ = started(Policy(paths=()))
    assert e.filesystems == {}
    added = e.add_watch("/data", Watch(lower=Pct(60), upper=Pct(40)), 1).events
    assert names(added) == [("info", "watch-added")]
    e.process(sample(50), 2)
    assert e.filesystems[DEV].level == "lower"
    removed = e.remove_watch("/data", 3).events
    assert names(removed) == [("info", "watch-removed")]
    # a removed watch stays removed until restart
    assert names(e.set_policy(Policy(), 4).events) == []


def test_a_run_time_watch_is_refused_before_anything_changes() -> None:
    e, _ = started()
    with pytest.raises(InvalidArgsError, match="proc file system, which fsmond ignores"):
        e.add_watch("/proc", Watch(), 1)
    with pytest.raises(NotFoundError):
        e.add_watch("/nowhere", Watch(), 1)
    e.process(sample(50), 1)
    # 15 blocks of 4 KiB leave less room than 5% of 1 GiB: the RFC's rule, told at the call
    with pytest.raises(InvalidArgsError, match=r'watch\.lower = "15".* blocks of 4096 bytes'):
        e.add_watch("/data", Watch(lower=Blocks(15)), 2)
    assert e.watches.runtime == {} and e.filesystems[DEV].watch == Watch()


def test_a_changed_run_time_watch_says_so_and_a_glob_watches_what_it_matches() -> None:
    e, _ = started()
    e.process(sample(50), 1)
    changed = e.add_watch("/data", Watch(classes=("info", "err")), 2).events
    assert names(changed) == [("info", "watch-added")]
    assert changed[0].details["classes"] == ["info", "err"]
    e2, _ = started(Policy(paths=()))
    assert e2.filesystems == {}
    added = e2.add_watch("/d*", Watch(lower=Pct(60), upper=Pct(40)), 1).events
    assert names(added) == [("info", "watch-added")] and added[0].mount_point == "/data"
    later = e2.process(MountDelta(added=(dataclasses.replace(
        DATA, mount_id=31, device=(7, 1), mount_point="/dump"),)), 2).events
    assert ("info", "watch-added") in names(later) and (7, 1) in e2.filesystems
    assert names(e2.remove_watch("/d*", 3).events) == [("info", "watch-removed")] * 2
    assert e2.filesystems == {}


def test_fill_rate_and_adaptive_poll_delay() -> None:
    e, _ = started()
    fs = e.filesystems[DEV]
    e.process(sample(50), 0.0)
    e.process(sample(40), 1.0)
    assert fs.fill_rate > 0 and fs.seconds_to_full > 0
    assert 0 < fs.seconds_to_level < 10  # 10%/s: a level within 40% of GIB
    e.process(sample(40), 2.0)
    e.process(sample(40), 30.0)
    assert fs.seconds_to_level == math.inf


def test_btrfs_metadata_running_out_is_no_space_with_the_resource() -> None:
    """btrfs's own figures: data has room (free) but metadata cannot take
    another file, so available is 0 and the event says which resource."""
    e, _ = started()
    fs = e.filesystems[DEV]
    room = dataclasses.replace(sample(20), source="btrfs", resource="metadata")
    assert ("warn", "no-space") not in names(e.process(room, 1).events)
    full = dataclasses.replace(room, available=0)
    ev = [x for x in e.process(full, 2).events if x.name == "no-space"]
    assert [x.details for x in ev] == [{"available": 0, "size": GIB, "source": "btrfs",
                                        "resource": "metadata"}]
    assert fs.free == room.free and fs.seconds_to_full == 0.0
    assert [x for x in e.process(full, 3).events if x.name == "no-space"] == []  # once


def test_a_kernel_no_space_first_does_not_hide_which_resource_ran_out() -> None:
    e, _ = started()
    e.process(sample(20), 1)
    said = e.process(KernelReport("no-space", "kmsg", DEV, message="ENOSPC"), 2).events
    assert names(said) == [("warn", "no-space")]
    full = dataclasses.replace(sample(0), source="btrfs", resource="metadata")
    ev = [x for x in e.process(full, 3).events if x.name == "no-space"]
    assert [x.details["resource"] for x in ev] == ["metadata"]
    assert [x for x in e.process(full, 4).events if x.name == "no-space"] == []


def test_a_plain_statvfs_no_space_names_no_resource() -> None:
    e, _ = started()
    ev = [x for x in e.process(sample(0), 1).events if x.name == "no-space"]
    assert [x.details for x in ev] == [{"available": 0, "size": GIB, "source": "statvfs"}]


@given(st.integers(1, 64), st.integers(2, 20))
def test_a_steady_fill_in_steps_is_seen_at_its_rate_on_every_poll(mib_s: int, every: int) -> None:
    """statvfs moving in steps (every `every` polls of 0.1 s), as on btrfs: once
    5 s of samples are in, FillRate stays near the true rate and SecondsToFull
    goes down, instead of swinging between a burst and nothing."""
    e, _ = started()
    fs = e.filesystems[DEV]
    size, rate = 1 << 40, mib_s << 20
    for i in range(200):
        t = i / 10
        moved = int(rate * (t - t % (every / 10)))  # the figure jumps every `every` polls
        s = SpaceSample(DEV, size, size // 2 - moved, size // 2 - moved, 0, 0, 0, 4096)
        e.process(s, t)
        if t >= 6:
            assert 0.75 * rate <= fs.fill_rate <= 1.25 * rate, (t, fs.fill_rate)
            assert 0 < fs.seconds_to_full < (size // 2 - moved) / (0.75 * rate)
    flat = SpaceSample(DEV, size, 1 << 30, 1 << 30, 0, 0, 0, 4096)
    for t in (30.0, 31.0, 40.0):
        e.process(flat, t)
    assert fs.seconds_to_full == -1.0


def test_reload_keeps_the_threshold_state_of_unchanged_watches() -> None:
    e, _ = started()
    assert [ev.details["level"] for ev in e.process(sample(8), 1).events] == ["lower"]
    assert e.set_policy(Policy(), 2).events == ()  # an equal configuration: nothing to say
    assert e.filesystems[DEV].level == "lower"
    assert e.process(sample(8), 3).events == ()  # and no second "reached" after the reload
    tighter = e.set_policy(Policy(Watch(lower=Pct(5), upper=Pct(2))), 4).events
    assert names(tighter) == [("info", "watch-added"), ("thr", "threshold")]
    assert tighter[0].details["lower"] == "5%"  # the watch as it now is, then what it changes
    assert (tighter[1].details["level"], tighter[1].details["state"]) == (
        "lower", "cleared")  # new levels apply at once to the last sample


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 7), st.integers(1, 6)), max_size=40),
       st.sets(st.integers(0, 7), max_size=4))
def test_the_watch_is_that_of_the_best_watched_mount_point(
        ops: list[tuple[bool, int, int]], watched: set[int]) -> None:
    """However mounts come and go, a file system's watch is the one of its first
    watched mount point in (whole root, shortest, name) order: the remembered
    search gives what a full search would."""
    specs = {f"/p{i}": Watch(lower=Pct(10 + i)) for i in watched}

    class Paths:
        def watch_for(self, mount_point: str) -> Watch | None:
            return specs.get(mount_point)

        def ignored_fstype(self, fstype: str) -> bool:
            return False

    e = Engine(Paths())
    mounts: dict[int, MountEntry] = {}
    e.process(MountSnapshot(()), 0)
    for add, point, mid in ops:
        if add and mid not in mounts:
            mounts[mid] = dataclasses.replace(DATA, mount_id=mid, mount_point=f"/p{point}")
            e.process(MountDelta(added=(mounts[mid],)), 1)
        elif not add and mid in mounts:
            del mounts[mid]
            e.process(MountDelta(removed=(mid,)), 1)
        best = sorted((len(m.mount_point), m.mount_point, m.mount_id) for m in mounts.values())
        expected = next((specs[p] for _, p, _ in best if p in specs), None)
        fs = e.filesystems.get(DEV)
        assert (fs.watch if fs else None) == expected


@given(st.lists(st.tuples(st.sets(st.integers(0, 30), max_size=12),
                          st.sets(st.integers(0, 30), max_size=12),
                          st.sets(st.integers(0, 30), max_size=3)), max_size=12))
def test_mount_points_stay_in_order_through_batches(
        batches: list[tuple[set[int], set[int], set[int]]]) -> None:
    """Batches that unmount many at once (cut out of the sorted list in one
    pass), mount others and move some leave the mount points as a full sort
    of what is mounted would order them."""
    e = Engine(Policy())
    e.process(MountSnapshot((DATA,)), 0)
    mounts = {DATA.mount_id: DATA}
    for gone, new, moved in batches:
        removed = tuple(100 + m for m in gone if 100 + m in mounts)
        for mid in removed:
            del mounts[mid]
        added = tuple(dataclasses.replace(DATA, mount_id=100 + m, mount_point=f"/b{m}")
                      for m in new if 100 + m not in mounts)
        changed = tuple(dataclasses.replace(mounts[100 + m], mount_point=f"/moved/{m}")
                        for m in moved if 100 + m in mounts)
        mounts.update({m.mount_id: m for m in (*added, *changed)})
        e.process(MountDelta(added=added, removed=removed, changed=changed), 1)
        best = sorted(mounts.values(), key=lambda m: (m.root != "/", len(m.mount_point),
                                                       m.mount_point, m.mount_id))
        assert list(e.filesystems[DEV].mount_points) == [m.mount_point for m in best]
