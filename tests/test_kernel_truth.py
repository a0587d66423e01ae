"""What the kernel says about btrfs, xfs and ext4, on the right object, once.

Real file systems on loop devices, broken for real (tests/loopfs.py), and
the real `fsmond --print-events`. Other tests (and other people) may break
their own loop devices meanwhile: every assertion counts only events of this
test's devices.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from fsmond.engine.error_folds import FOLD_WINDOW
from fsmond.engine.filesystems import RO_GRACE
from tests.kernel import require_filesystem, require_mount_api
from tests.loopfs import (
    break_btrfs,
    corrupted_btrfs,
    corrupted_xfs_dir,
    loop_btrfs,
    loop_xfs,
    raid1_with_a_bad_mirror,
    superblock_device,
)
from tests.running import FsmondProcess, daemon_config, fsmond, loop_ext4, run

pytestmark = [pytest.mark.root]
Event = dict[str, Any]


def fs_path(dev: str) -> str:
    return "/org/fsmond/FsMon1/fs/" + dev.replace(":", "_")


def devnum(loop: str) -> str:
    rdev = os.stat(loop).st_rdev
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def on(dev: str, name: str) -> Any:
    return lambda e: e["name"] == name and e["device"] == dev


def of(p: FsmondProcess, dev: str, name: str) -> list[Event]:
    return [e for e in p.events if e["name"] == name and e["device"] == dev]


def strays(p: FsmondProcess, loops: list[str]) -> list[Event]:
    """Events about our member devices that missed the file system."""
    nums = {devnum(d) for d in loops}
    return [e for e in p.events if e["device"] in nums or e["details"].get("devname") in
            {os.path.basename(d) for d in loops}]


def config(tmp_path: Path, watch: Path | str, **daemon: str) -> Path:
    return daemon_config(tmp_path / "fsmond.toml", str(watch), **daemon)


# ------------------------------------------------------------------- btrfs

@pytest.mark.parametrize("kmsg", [True, False], ids=["kmsg", "superblock-only"])
def test_btrfs_forced_read_only_by_a_real_corruption_is_on_the_btrfs_object(
        tmp_path: Path, kmsg: bool) -> None:
    """Both copies of an extent-tree leaf broken on disk, then a delete: the
    transaction aborts and btrfs forces itself read-only. Its messages name
    the loop device; they belong to the btrfs (0:NN). Without kmsg, the
    superblock gaining `ro` with no remount asked for says it."""
    require_filesystem("btrfs")
    with corrupted_btrfs(tmp_path, tmp_path / "b") as (m, loop):
        dev = superblock_device(m)
        assert dev.startswith("0:")
        with fsmond(config(tmp_path, m, kmsg="true" if kmsg else "false")) as p:
            p.wait_for(on(dev, "watch-added"))
            break_btrfs(m)
            ro = p.wait_for(on(dev, "read-only"))
            assert (ro["fs"], ro["mount_point"], ro["fstype"]) == (fs_path(dev), str(m), "btrfs")
            assert ro["details"]["source"] == ("kmsg" if kmsg else "superblock")
            if kmsg:
                first = p.wait_for(on(dev, "error"))
                assert first["fs"] == fs_path(dev) and first["mount_point"] == str(m)
                d = first["details"]
                assert d["errno"] == 5 and d["count"] == 1  # the abort's -EIO
                assert d["function"] and d["function"] in d["message"]
                assert first["seq"] < ro["seq"]
            else:
                assert "ro" in ro["details"]["message"].split(",")
            # What the fold window still owed would be out long before this.
            time.sleep(FOLD_WINDOW * 2)
            run("umount", str(m))
            p.wait_for(on(dev, "unmounted"))
        assert len(of(p, dev, "read-only")) == 1
        # One abort is one error: what btrfs prints after it (state E) follows it.
        assert len(of(p, dev, "error")) == (1 if kmsg else 0)
        assert strays(p, [loop]) == []


def test_btrfs_raid1_errors_found_by_scrub_are_on_the_btrfs_object(tmp_path: Path) -> None:
    require_filesystem("btrfs")
    with raid1_with_a_bad_mirror(tmp_path, tmp_path / "r") as (m, devs):
        dev = superblock_device(m)
        with fsmond(config(tmp_path, m)) as p:
            p.wait_for(on(dev, "watch-added"))
            subprocess.run(["btrfs", "scrub", "start", "-B", str(m)], check=False,
                           capture_output=True)
            err = p.wait_for(on(dev, "error"))
            assert (err["fs"], err["mount_point"], err["fstype"]) == (fs_path(dev), str(m),
                                                                      "btrfs")
            assert "scrub" in err["details"]["message"] or "errs" in err["details"]["message"]
            run("umount", str(m))
            p.wait_for(on(dev, "unmounted"))
        assert strays(p, devs) == []


def test_an_admins_remount_ro_of_btrfs_is_a_remount_not_a_read_only(tmp_path: Path) -> None:
    require_filesystem("btrfs")
    with loop_btrfs(tmp_path, tmp_path / "b") as (m, _devs):
        dev = superblock_device(m)
        with fsmond(config(tmp_path, m)) as p:
            p.wait_for(on(dev, "watch-added"))
            run("mount", "-o", "remount,ro", str(m))
            remount = p.wait_for(on(dev, "remounted"))
            assert remount["details"]["super_options"].startswith("ro")
            time.sleep(RO_GRACE + 1)  # past the hold a superblock `ro` alone gets
            run("umount", str(m))
            p.wait_for(on(dev, "unmounted"))
        assert of(p, dev, "read-only") == []


# --------------------------------------------------------------------- xfs

def test_an_xfs_shutdown_is_an_error_with_its_reason_and_read_only(tmp_path: Path) -> None:
    require_filesystem("xfs")
    with loop_xfs(tmp_path, tmp_path / "x") as (m, loop):
        dev = superblock_device(m)
        assert dev == devnum(loop)
        with fsmond(config(tmp_path, m)) as p:
            p.wait_for(on(dev, "watch-added"))
            run("xfs_io", "-x", "-c", "shutdown", str(m))
            err = p.wait_for(on(dev, "error"))
            ro = p.wait_for(on(dev, "read-only"))
            assert err["seq"] < ro["seq"] and err["fs"] == ro["fs"] == fs_path(dev)
            d = err["details"]
            assert (d["function"], d["errno"]) == ("xfs_fs_goingdown", 5)
            assert "Shutting down filesystem" in d["message"]
            assert ro["mount_point"] == str(m)
            run("umount", str(m))  # a shut-down xfs still unmounts
            gone = p.wait_for(on(dev, "unmounted"))
            assert gone["fs"] == fs_path(dev)


def test_xfs_metadata_corruption_is_recognised(tmp_path: Path) -> None:
    """A directory block with a wrong magic and a right checksum: the
    verifier's "Metadata corruption detected" (EFSCORRUPTED) is the error."""
    require_filesystem("xfs")
    with corrupted_xfs_dir(tmp_path, tmp_path / "x", how="magic") as (m, _loop):
        dev = superblock_device(m)
        with fsmond(config(tmp_path, m)) as p:
            p.wait_for(on(dev, "watch-added"))
            with pytest.raises(OSError):
                os.listdir(m / "d")
            err = p.wait_for(lambda e: on(dev, "error")(e) and "Metadata corruption detected"
                             in e["details"]["message"])
            d = err["details"]
            assert d["errno"] == 117 and d["function"].startswith("xfs_dir3_")
            assert d["function"] in d["message"] and err["fs"] == fs_path(dev)


def test_xfs_metadata_crc_errors_are_recognised_and_each_event_is_one_report(
        tmp_path: Path) -> None:
    require_filesystem("xfs")
    with corrupted_xfs_dir(tmp_path, tmp_path / "x") as (m, _loop):
        dev = superblock_device(m)
        with fsmond(config(tmp_path, m)) as p:
            p.wait_for(on(dev, "watch-added"))
            for _ in range(3):
                with pytest.raises(OSError):
                    os.listdir(m / "d")
            first = p.wait_for(on(dev, "error"))
            assert first["details"]["function"] == "xfs_dir3_block_read_verify"
            assert first["details"]["errno"] == 74  # EFSBADCRC, as the kernel returns it
            assert "Metadata CRC error detected" in first["details"]["message"]
            p.wait_for(lambda e: on(dev, "error")(e) and e["seq"] > first["seq"])  # folded
            for e in of(p, dev, "error"):
                d = e["details"]
                assert d["function"] and d["function"] in d["message"], d
                assert d["errno"] == 74, d  # every line of this corruption says 74


# -------------------------------------------------------------------- ext4

def trigger(loop: str, message: str) -> None:
    Path(f"/sys/fs/ext4/{loop}/trigger_fs_error").write_text(message + "\n")


def test_one_ext4_error_and_its_journal_abort_are_one_error(tmp_path: Path) -> None:
    with loop_ext4(tmp_path / "img", tmp_path / "e", options="errors=remount-ro") as (m, loop):
        dev = superblock_device(m)
        with fsmond(config(tmp_path, m)) as p:
            p.wait_for(on(dev, "watch-added"))
            trigger(loop, "first of two")
            first = p.wait_for(on(dev, "error"))
            assert first["details"]["count"] == 1 and "first of two" in first["details"]["message"]
            p.wait_for(on(dev, "read-only"))  # errors=remount-ro: after the journal abort
            # Whatever the error's fold window still owed is published when it
            # ends (a timer of the daemon's loop): long before an unmount a
            # second later, which is the last thing this test waits for.
            time.sleep(FOLD_WINDOW * 2)
            run("umount", str(m))
            p.wait_for(on(dev, "unmounted"))
        assert [e["seq"] for e in of(p, dev, "error")] == [first["seq"]]


# ------------------------------------------------------------------ mounts

@pytest.mark.parametrize("backend", ["fanotify", "mountinfo"])
def test_a_remount_right_before_an_unmount_is_reported(tmp_path: Path, backend: str) -> None:
    """`mount; mount -o remount,ro; umount` within 0.2 s: the remount is
    reported although the mount is gone moments later (the fanotify backend
    used to wait half a second after any attach or detach before it looked
    for remounts)."""
    if backend == "fanotify":
        require_mount_api(fanotify=True)
    base = tmp_path / "q"
    base.mkdir()
    cfg = config(tmp_path, f"{base}/*", mount_backend=f'"{backend}"')
    with fsmond(cfg) as p:
        for i in range(3):
            t = base / f"t{i}"
            t.mkdir()
            run("mount", "-t", "tmpfs", "-o", "size=1m", "quick", str(t))
            p.wait_for(lambda e, t=t: e["name"] == "mounted" and e["mount_point"] == str(t))
            run("mount", "-o", "remount,ro", str(t))
            # A moment, as a script's next command takes. Back to back (a few
            # ms) it was seen 30 times in 30 per backend, but that is a race:
            # if fsmond reads nothing before the unmount, nothing is left to ask.
            time.sleep(0.05)
            run("umount", str(t))
            p.wait_for(lambda e, t=t: e["name"] == "unmounted" and e["mount_point"] == str(t))
            remounts = [e for e in p.events
                        if e["name"] == "remounted" and e["mount_point"] == str(t)]
            assert len(remounts) == 1, [(e["name"], e["mount_point"]) for e in p.events]
            assert remounts[0]["details"]["options"].startswith("ro")
