"""Kernel reports on the right file system, counted once, each event one report's;
read-only from the superblock on any file system. Pure: no kernel, no clock."""

from __future__ import annotations

import dataclasses

from fsmond.engine.core import Engine
from fsmond.engine.filesystems import RO_GRACE
from fsmond.events import KernelReport, Members, MountDelta, MountEntry, MountSnapshot, SuperOptions
from tests.engine.test_engine import DATA, DEV, PROC, Policy, names

BTRFS_DEV = (0, 40)
BTRFS = MountEntry(50, 1, BTRFS_DEV, "/", "/pool", "rw,relatime", "btrfs", "/dev/loop1",
                   "rw,space_cache=v2,subvolid=5,subvol=/")
XFS = MountEntry(60, 1, (7, 5), "/", "/x", "rw,relatime", "xfs", "/dev/loop5", "rw,inode64")


def engine() -> Engine:
    e = Engine(Policy(), merge_wait=0.05)
    e.process(MountSnapshot((PROC, DATA, BTRFS, XFS)), 0.0)
    return e


def test_a_member_device_report_lands_on_the_btrfs_file_system() -> None:
    e = engine()
    assert e.process(Members(BTRFS_DEV, ((7, 1), (7, 2))), 1).events == ()
    ev = e.process(KernelReport("error", "kmsg", (7, 2), "loop2", errno=5,
                                message="I/O error, dev loop2, sector 8"), 2).events
    assert names(ev) == [("err", "error")]
    assert (ev[0].fs, ev[0].mount_point, ev[0].device, ev[0].fstype) == (
        "/org/fsmond/FsMon1/fs/0_40", "/pool", "0:40", "btrfs")
    assert e.filesystems[BTRFS_DEV].error_count == 1
    ro = e.process(KernelReport("read-only", "kmsg", (7, 1), "loop1", message="forced readonly"),
                   3).events
    assert names(ro) == [("err", "read-only")] and e.filesystems[BTRFS_DEV].read_only
    # New members replace the old; gone with the file system.
    e.process(Members(BTRFS_DEV, ((7, 1),)), 4)
    assert e.owner_of((7, 2)) is None and e.owner_of((7, 1)) == BTRFS_DEV
    e.process(MountDelta(removed=(50,)), 5)
    assert e.owner_of((7, 1)) is None
    late = e.process(KernelReport("error", "kmsg", (7, 1), "loop1", message="x"), 6).events
    assert late[0].fs == "/"


def test_one_ext4_error_with_its_journal_abort_is_one_error() -> None:
    e = engine()
    fan = KernelReport("error", "fanotify", DEV, errno=5)
    kmsg = KernelReport("error", "kmsg", DEV, "loop0", function="trigger_test_error",
                        message="EXT4-fs error (device loop0): trigger_test_error:129: ...")
    abort = KernelReport("error", "kmsg", DEV, "loop0", errno=5, follows=True,
                         message="Aborting journal on device loop0-8.")
    assert e.process(fan, 10.0).events == ()
    first = e.process(kmsg, 10.001).events
    assert names(first) == [("err", "error")] and first[0].details["count"] == 1
    assert e.process(abort, 10.002).events == ()
    assert e.tick(11.1).events == ()
    assert e.filesystems[DEV].error_count == 1
    # A journal abort on its own is an error of its own.
    alone = e.process(abort, 20.0).events
    assert names(alone) == [("err", "error")] and e.filesystems[DEV].error_count == 2


def test_a_folded_event_is_one_reports_text_errno_and_function() -> None:
    e = engine()
    dev = (7, 5)
    crc = KernelReport("error", "kmsg", dev, "loop5", errno=74,
                       function="xfs_dir3_block_read_verify", message="Metadata CRC error ...")
    io = KernelReport("error", "kmsg", dev, "loop5", errno=74, function="xfs_da_read_buf",
                      message='metadata I/O error in "xfs_da_read_buf" ... error 74')
    bare = KernelReport("error", "kmsg", dev, "loop5", message="Corruption detected.")
    first = e.process(crc, 1.0).events
    assert (first[0].details["errno"], first[0].details["function"]) == (
        74, "xfs_dir3_block_read_verify")
    e.process(io, 1.1)
    e.process(bare, 1.2)
    folded = e.tick(2.0).events
    assert names(folded) == [("err", "error")] and folded[0].details["count"] == 2
    d = folded[0].details
    assert (d["message"], d["errno"], d["function"]) == ("Corruption detected.", 0, "")


def test_an_xfs_shutdown_is_an_error_and_read_only() -> None:
    e = engine()
    shut = KernelReport("error", "kmsg", (7, 5), "loop5", errno=5, function="xfs_fs_goingdown",
                        read_only=True, message="XFS (loop5): Log I/O Error (0x6) ...")
    ev = e.process(shut, 1.0).events
    assert names(ev) == [("err", "error"), ("err", "read-only")]
    assert ev[0].details["function"] == "xfs_fs_goingdown" and ev[0].details["errno"] == 5
    assert ev[1].details["source"] == "kmsg"
    fs = e.filesystems[(7, 5)]
    assert fs.read_only and fs.error_count == 1


def test_the_superblock_going_ro_without_a_remount_is_read_only_on_any_file_system() -> None:
    e = engine()
    ro = "ro,space_cache=v2,subvolid=5,subvol=/"
    assert e.process(SuperOptions(BTRFS_DEV, ro), 1.0).events == ()
    assert e.next_deadline() == 1.0 + RO_GRACE
    assert e.tick(1.0 + RO_GRACE / 2).events == ()
    ev = e.tick(1.0 + RO_GRACE).events
    assert names(ev) == [("err", "read-only")] and ev[0].details["source"] == "superblock"
    assert ev[0].mount_point == "/pool" and e.filesystems[BTRFS_DEV].read_only
    assert e.process(SuperOptions(BTRFS_DEV, ro), 5.0).events == () and e.next_deadline() is None


def test_an_admins_remount_ro_seen_first_by_the_sampler_stays_a_remount() -> None:
    e = engine()
    ro = "ro,space_cache=v2,subvolid=5,subvol=/"
    assert e.process(SuperOptions(BTRFS_DEV, ro), 1.0).events == ()
    remount = dataclasses.replace(BTRFS, options="ro,relatime", super_options=ro)
    assert names(e.process(MountDelta(changed=(remount,)), 1.01).events) == [("info", "remounted")]
    assert e.tick(1.0 + RO_GRACE).events == () and e.next_deadline() is None


def test_a_kernel_no_space_names_the_resource() -> None:
    e = engine()
    ev = e.process(KernelReport("no-space", "kmsg", (7, 1), "loop1", errno=28,
                                resource="metadata", message="space_info METADATA ... is full"),
                   1.0).events
    assert ev[0].fs == "/"  # no members known yet: no file system to put it on
    e.process(Members(BTRFS_DEV, ((7, 1),)), 2.0)
    ev = e.process(KernelReport("no-space", "kmsg", (7, 1), "loop1", errno=28,
                                resource="metadata", message="space_info METADATA ... is full"),
                   3.0).events
    assert names(ev) == [("warn", "no-space")] and ev[0].details["resource"] == "metadata"
    assert ev[0].fs.endswith("/0_40")
