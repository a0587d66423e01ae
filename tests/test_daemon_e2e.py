"""The real `fsmond --print-events` against real kernel objects, on both backends.

Every test here runs as root inside the private mount namespace of the test
session: size-limited tmpfs filled with real writes, loop-mounted ext4 with
real errors, real mounts, remounts and unmounts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.running import (
    FsmondProcess,
    daemon_config,
    dev_of,
    fsmond,
    loop_ext4,
    run,
    tmpfs,
    write_config,
)

pytestmark = [pytest.mark.root]

BACKENDS = ["fanotify", "mountinfo"]


def config(tmp_path: Path, backend: str, watch: str, **daemon: str) -> Path:
    return daemon_config(tmp_path / "fsmond.toml", watch, mount_backend=f'"{backend}"', **daemon)


def fill(path: Path, name: str, mib: float) -> None:
    with open(path / name, "wb") as f:
        f.write(b"x" * int(mib * (1 << 20)))
        f.flush()
        os.fsync(f.fileno())


def thresholds(p: object) -> list[tuple[str, str]]:
    return [(e["details"]["level"], e["details"]["state"]) for e in p.events  # type: ignore[attr-defined]
            if e["name"] == "threshold" and e["details"]["resource"] == "space"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_space_levels_crossed_down_then_up_by_real_writes(tmp_path: Path, backend: str) -> None:
    with tmpfs(tmp_path / "t", "size=10m") as t, fsmond(config(tmp_path, backend, str(t))) as p:
        p.wait_for(p.named("watch-added"))
        fill(t, "a", 6)  # 40% left: lower (50%) reached
        e = p.wait_for(p.named("threshold", level="lower", state="reached"))
        assert e["mount_point"] == str(t) and e["device"] == dev_of(t)
        assert e["details"]["percent_available"] <= 50
        fill(t, "b", 2.5)  # 15% left: upper (20%) reached
        p.wait_for(p.named("threshold", level="upper", state="reached"))
        (t / "b").unlink()  # 40%: upper cleared (> 25%), lower still reached
        p.wait_for(p.named("threshold", level="upper", state="cleared"))
        (t / "a").unlink()
        p.wait_for(p.named("threshold", level="lower", state="cleared"))
        assert thresholds(p) == [("lower", "reached"), ("upper", "reached"),
                                 ("upper", "cleared"), ("lower", "cleared")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_both_levels_in_one_poll_each_way(tmp_path: Path, backend: str) -> None:
    # A poll interval of an hour: samples happen only at start and on SIGHUP, so
    # each jump is seen by exactly one poll.
    cfg = config(tmp_path, backend, str(tmp_path / "t"),
                 poll_interval='"1h"', min_poll_interval='"1h"')
    with tmpfs(tmp_path / "t", "size=10m") as t, fsmond(cfg) as p:
        p.wait_for(p.named("watch-added"))
        run("fallocate", "-l", "9M", str(t / "big"))
        p.signal(signal.SIGHUP)
        upper = p.wait_for(p.named("threshold", level="upper", state="reached"))
        lower = p.wait_for(p.named("threshold", level="lower", state="reached"))
        assert lower["seq"] + 1 == upper["seq"] and lower["time"] == upper["time"]
        (t / "big").unlink()
        p.signal(signal.SIGHUP)
        cl = p.wait_for(p.named("threshold", level="lower", state="cleared"))
        cu = p.wait_for(p.named("threshold", level="upper", state="cleared"))
        assert cu["seq"] + 1 == cl["seq"] and cu["time"] == cl["time"]


def test_start_below_a_level_reports_reached_once(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "t", "size=10m") as t:
        fill(t, "a", 7)
        with fsmond(config(tmp_path, "mountinfo", str(t))) as p:
            p.wait_for(p.named("threshold", level="lower", state="reached"))
            fill(t, "b", 0.1)  # more samples, still between the levels
            time.sleep(0.5)  # a window of about five polls in which nothing may repeat
        assert thresholds(p) == [("lower", "reached")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_full_tmpfs_gives_no_space(tmp_path: Path, backend: str) -> None:
    with tmpfs(tmp_path / "t", "size=2m") as t, fsmond(config(tmp_path, backend, str(t))) as p:
        p.wait_for(p.named("watch-added"))
        with pytest.raises(OSError) as err:
            fill(t, "a", 3)
        assert err.value.errno == 28  # ENOSPC, for real
        e = p.wait_for(p.named("no-space"))
        assert e["class"] == "warn" and e["details"]["available"] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_inode_limited_tmpfs_gives_no_inodes(tmp_path: Path, backend: str) -> None:
    cfg = config(tmp_path, backend, str(tmp_path / "t"))
    with tmpfs(tmp_path / "t", "size=2m,nr_inodes=16") as t, fsmond(cfg) as p:
        p.wait_for(p.named("watch-added"))
        with pytest.raises(OSError) as err:
            for i in range(32):
                (t / f"f{i}").touch()
        assert err.value.errno == 28
        e = p.wait_for(p.named("no-inodes"))
        assert e["details"]["files_available"] == 0
        p.wait_for(p.named("threshold", resource="inodes", level="upper", state="reached"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_late_mount_remount_unmount_and_odd_names(tmp_path: Path, backend: str) -> None:
    base = tmp_path / "m"
    base.mkdir()
    odd = base / "a b\tc"
    with fsmond(config(tmp_path, backend, f"{base}/*")) as p, tmpfs(odd, "size=1m") as t:
        e = p.wait_for(p.named("mounted"))
        assert e["mount_point"] == str(t) and e["fstype"] == "tmpfs"
        p.wait_for(p.named("watch-added"))
        run("mount", "-o", "remount,size=2m", str(t))
        e = p.wait_for(p.named("remounted"))
        assert "size=2048k" in e["details"]["super_options"]
        run("mount", "-o", "remount,ro", str(t))
        e = p.wait_for(
            lambda e: e["name"] == "remounted" and e["details"]["options"].startswith("ro"))
        assert not [x for x in p.events if x["name"] == "read-only"]  # an admin's ro is info
        run("umount", str(t))
        p.wait_for(p.named("unmounted"))
        p.wait_for(p.named("watch-removed"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_ext4_error_and_forced_read_only(tmp_path: Path, backend: str) -> None:
    mnt = tmp_path / "ext4"
    with loop_ext4(tmp_path / "img", mnt, "errors=remount-ro") as (m, loop), \
            fsmond(config(tmp_path, backend, str(mnt))) as p:
        p.wait_for(p.named("watch-added"))
        Path(f"/sys/fs/ext4/{loop}/trigger_fs_error").write_text("fsmond test error\n")
        e = p.wait_for(p.named("error"))
        assert e["class"] == "err" and e["device"] == dev_of(m)
        assert "fsmond test error" in e["details"]["message"] or e["details"]["errno"]
        ro = p.wait_for(p.named("read-only"))
        assert ro["device"] == dev_of(m)
        with pytest.raises(OSError):
            (m / "x").write_text("no")  # really read-only


def test_forged_kmsg_line_gives_no_event(tmp_path: Path) -> None:
    mnt = tmp_path / "ext4"
    with loop_ext4(tmp_path / "img", mnt) as (_, loop), \
            fsmond(config(tmp_path, "fanotify", str(mnt))) as p:
        p.wait_for(p.named("watch-added"))
        with open("/dev/kmsg", "w") as k:
            k.write(f"EXT4-fs error (device {loop}): forged_func:1: comm x: forged by a process\n")
            k.write(f"EXT4-fs ({loop}): Remounting filesystem read-only\n")
        # A real error afterwards: once it is seen, the forged lines were read too.
        Path(f"/sys/fs/ext4/{loop}/trigger_fs_error").write_text("real one\n")
        p.wait_for(lambda e: e["name"] == "error" and "real one" in e["details"]["message"])
        assert not [e for e in p.events if "forged" in str(e["details"])]
        assert not [e for e in p.events if e["name"] == "read-only"]


def test_bad_config_exits_78_with_the_key(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "bad.toml", '[daemon]\npoll_interval = "soon"\n')
    r = subprocess.run([sys.executable, "-m", "fsmond", "--config", str(cfg), "--no-dbus"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 78
    assert "daemon.poll_interval" in r.stderr and "soon" in r.stderr


def test_sigterm_stops_cleanly_and_sighup_with_a_broken_file_keeps_going(tmp_path: Path) -> None:
    cfg = config(tmp_path, "fanotify", str(tmp_path / "t"))
    with tmpfs(tmp_path / "t", "size=10m") as t:
        p = FsmondProcess(cfg)
        try:
            p.wait_ready()
            p.wait_for(p.named("watch-added"))
            good = cfg.read_text()
            cfg.write_text("[daemon]\npoll_interval = 'never'\n")
            p.signal(signal.SIGHUP)
            e = p.wait_for(p.named("config"))
            assert "daemon.poll_interval" in e["details"]["message"] and e["class"] == "err"
            cfg.write_text(good)
            fill(t, "a", 6)  # the old configuration still applies: 50% lower level
            p.wait_for(p.named("threshold", level="lower", state="reached"))
        finally:
            rc = p.stop()
    assert rc == 0
    assert any("shutting down" in line for line in p.stderr)
