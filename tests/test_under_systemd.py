"""fsmond under a real systemd: a Debian 12 container (tests/nspawn.py) with
fsmond installed as a user would (venv, `fsmond install-system-files`), one
container for the whole module.

The first boot may build the Debian tree (about a minute) and fsmond's
wheels: the per-test timeout counts only the test itself (func_only), the
fixture's steps have timeouts of their own.
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fsmond.sources import mountapi
from fsmond.sources.btrfs import read_figures
from fsmond.sources.btrfs_usage import estimate
from tests import nspawn
from tests.kernel import require_filesystem
from tests.loopfs import broken_btrfs, loop_devices, mkfs_btrfs
from tests.nspawn import Container
from tests.running import run, wait_until

pytestmark = [pytest.mark.root, pytest.mark.timeout(120, func_only=True)]

DROP_INS = "/etc/systemd/system/fsmond.service.d"
CONFIG, EXAMPLE = "/etc/fsmond/fsmond.toml", "/usr/share/doc/fsmond/fsmond.toml.example"
NAME, ROOT = "org.fsmond.FsMon1", "/org/fsmond/FsMon1"
MANAGER, FS = "org.fsmond.FsMon1.Manager", "org.fsmond.FsMon1.FileSystem"


@pytest.fixture(scope="module")
def booted() -> Iterator[Container]:
    nspawn.require()
    try:
        lowers = nspawn.fsmond_tree()
    except nspawn.Unavailable as e:
        nspawn.skip_or_fail(f"cannot install fsmond in the tree: {e}")
    with Container(lowers) as c:
        yield c


@pytest.fixture
def container(booted: Container) -> Iterator[Container]:
    """The module's container; fsmond stopped, drop-ins gone after each test."""
    yield booted
    booted.systemctl("stop", "fsmond", check=False)
    booted.run("rm", "-rf", DROP_INS)
    booted.run("cp", EXAMPLE, CONFIG)
    booted.systemctl("daemon-reload")
    booted.systemctl("reset-failed", "fsmond", check=False)


def get_status(c: Container) -> dict[str, Any]:
    """fsmond's GetStatus on the container's system bus, variants unwrapped."""
    reply = c.busctl("call", "org.fsmond.FsMon1", "/org/fsmond/FsMon1",
                     "org.fsmond.FsMon1.Manager", "GetStatus")
    return {k: v["data"] for k, v in reply["data"][0].items()}




def test_fsmond_starts_answers_on_the_system_bus_and_stops_cleanly(container: Container) -> None:
    c = container
    assert c.boot_state == "running", c.systemctl("--failed", check=False).stdout
    c.systemctl("start", "fsmond")
    assert c.systemctl("is-active", "fsmond", check=False).stdout.strip() == "active"
    status = get_status(c)
    assert status["mounts"] > 0 and status["filesystems"] > 0, status
    if not (mountapi.statmount_missing() or mountapi.fanotify_mounts_missing()):
        # The host's kernel can; nspawn's own seccomp filter (SYSTEMD_SECCOMP=0
        # turns it off) would leave fsmond with mountinfo in the container.
        assert status["mount_backend"] == "fanotify", c.journal("-u", "fsmond")
    # IPAccounting= needs BPF in the container: a number, not "[no data]".
    assert c.show("fsmond", "IPIngressBytes")["IPIngressBytes"].isdigit()
    pid = int(c.show("fsmond", "MainPID")["MainPID"])
    assert pid > 0

    c.systemctl("stop", "fsmond")
    after = c.show("fsmond", "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    assert after["ActiveState"] == "inactive" and after["Result"] == "success", after
    assert after["ExecMainStatus"] == "0", after  # it exited by itself on SIGTERM
    assert "Deactivated successfully" in c.journal("-u", "fsmond", "-o", "cat")


def test_the_container_enforces_device_rules(container: Container) -> None:
    """DevicePolicy=/DeviceAllow= take effect only with a unified cgroup
    hierarchy in the container (SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1)."""
    def write_kmsg(allow: str) -> int:
        return container.run("systemd-run", "--wait", "--pipe", "--quiet",
                             "-p", "DevicePolicy=closed", "-p", f"DeviceAllow=/dev/kmsg {allow}",
                             "sh", "-c", ": > /dev/kmsg", check=False).returncode

    assert write_kmsg("r") != 0
    assert write_kmsg("rw") == 0


def test_watchdog_restarts_a_stopped_daemon(container: Container) -> None:
    c = container
    c.write_file(f"{DROP_INS}/50-test-watchdog.conf", "[Service]\nWatchdogSec=3s\n")
    c.systemctl("daemon-reload")
    c.systemctl("start", "fsmond")
    before = c.show("fsmond", "MainPID", "NRestarts", "WatchdogUSec")
    assert before["WatchdogUSec"] == "3s" and before["MainPID"] != "0", before

    c.systemctl("kill", "--signal=SIGSTOP", "fsmond")

    def restarted() -> dict[str, str] | None:
        now = c.show("fsmond", "MainPID", "NRestarts", "ActiveState", "SubState")
        moved = now["MainPID"] not in ("0", before["MainPID"])
        return now if moved and now["ActiveState"] == "active" else None

    # 3 s watchdog + RestartSec=2s + start
    now = wait_until(restarted, "restart after the watchdog timeout", 60)
    assert int(now["NRestarts"]) > int(before["NRestarts"]), now
    journal = c.journal("-u", "fsmond", "-o", "cat")
    assert "Watchdog timeout" in journal, journal
    assert get_status(c)["mounts"] > 0


# ------------------------------------------------ the five faults, as the unit runs

def call(c: Container, member: str, *args: str) -> Any:
    return c.busctl("call", NAME, ROOT, MANAGER, member, *args)["data"]


def prop(c: Container, obj: str, name: str) -> Any:
    return c.busctl("get-property", NAME, obj, FS, name)["data"]


def mount_ids(mountinfo: str) -> set[int]:
    return {int(line.split()[0]) for line in mountinfo.splitlines() if line.strip()}


def main_pid(c: Container) -> int:
    return int(c.show("fsmond", "MainPID")["MainPID"])


@contextmanager
def monitor(c: Container) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """`fsmonctl monitor --json` inside, as its own transient unit; yields a
    function that returns the events it printed so far."""
    c.run("systemd-run", "--unit=fsmond-test-monitor", "--quiet",
          "-p", "StandardOutput=file:/run/monitor.json",
          "/opt/fsmond/bin/fsmonctl", "monitor", "--json")
    try:
        yield lambda: [json.loads(line) for line in
                       c.run("cat", "/run/monitor.json").stdout.splitlines() if line]
    finally:
        c.systemctl("stop", "fsmond-test-monitor", check=False)
        c.run("rm", "-f", "/run/monitor.json")


@contextmanager
def loop_ext4(tmp_path: Path) -> Iterator[str]:
    """A fresh ext4 image on a loop device of the host; yields '/dev/loopN'."""
    with loop_devices([tmp_path / "e4.img"], 32) as (dev,):
        run("mkfs.ext4", "-q", "-F", dev)
        yield dev


def test_a_tmpfs_mounted_after_start_counts_once_with_its_path(container: Container) -> None:
    """The unit's namespace keeps the old root under its own: a new mount
    propagates into both, fanotify reports both, and only one is a mount.
    One under /tmp is seen too (no PrivateTmp to hide it)."""
    c = container
    c.systemctl("start", "fsmond")
    before = get_status(c)["mounts"]
    c.run("mkdir", "-p", "/mnt/late", "/tmp/late")
    c.run("mount", "-t", "tmpfs", "-o", "size=10m", "late", "/mnt/late")
    c.run("mount", "-t", "tmpfs", "-o", "size=10m", "late-tmp", "/tmp/late")
    try:
        wait_until(lambda: get_status(c)["mounts"] >= before + 2, "the two mounts", 10)
        time.sleep(1)  # a second copy of either would be counted by now
        assert get_status(c)["mounts"] == before + 2
        _, mounts = call(c, "ListMounts")
        points = [m["mount_point"]["data"] for m in mounts]
        assert points.count("/mnt/late") == 1 and points.count("/tmp/late") == 1
        assert "" not in points
        ids = {m["mount_id"]["data"] for m in mounts}
        assert ids == mount_ids(c.run("cat", f"/proc/{main_pid(c)}/mountinfo").stdout)
    finally:
        c.run("umount", "/mnt/late", "/tmp/late", check=False)


def test_an_ext4_mounted_after_start_is_one_sampled_object_with_its_error_mark(
        container: Container, tmp_path: Path) -> None:
    """kmsg off: the error can only come from the FAN_FS_ERROR mark, which
    needs the mount point fsmond could not name before."""
    c = container
    c.write_file(CONFIG, '[daemon]\nkmsg = false\npoll_interval = "1s"\n')
    with loop_ext4(tmp_path) as dev, monitor(c) as events:
        c.systemctl("start", "fsmond")
        c.add_device(dev)
        c.run("mkdir", "-p", "/mnt/e4")
        c.run("mount", "-o", "errors=continue", dev, "/mnt/e4")
        try:
            rdev = os.stat(dev).st_rdev
            obj = f"{ROOT}/fs/{os.major(rdev)}_{os.minor(rdev)}"
            wait_until(lambda: obj in managed(c), "the object", 10)
            assert prop(c, obj, "MountPoints") == ["/mnt/e4"]
            points = [m["mount_point"]["data"] for m in call(c, "ListMounts")[1]]
            assert points.count("/mnt/e4") == 1 and "" not in points
            assert wait_until(lambda: prop(c, obj, "Size"), "a sample", 10) > 16 << 20
            Path(f"/sys/fs/ext4/{Path(dev).name}/trigger_fs_error").write_text("fsmond test\n")
            wait_until(lambda: prop(c, obj, "ErrorCount") >= 1, "the error from fanotify", 10)
            added = [e for e in events() if e["name"] == "watch-added" and e["fs"] == obj]
            assert [e["mount_point"] for e in added] == ["/mnt/e4"]
        finally:
            c.run("umount", "/mnt/e4", check=False)


def managed(c: Container) -> list[str]:
    reply = c.busctl("call", NAME, ROOT + "/fs", "org.freedesktop.DBus.ObjectManager",
                     "GetManagedObjects")
    return list(reply["data"][0])


def test_the_host_namespace_option_reports_that_namespace_s_table(container: Container) -> None:
    """mount_namespace = /proc/1/ns/mnt: the unit does not grant CAP_SYS_PTRACE,
    so fsmond says why at WARNING and follows PID 1's mountinfo instead; with
    the capability (a drop-in) fanotify follows it. Either way the table is
    what /proc/1/mountinfo shows."""
    c = container
    c.write_file(CONFIG, '[daemon]\nmount_namespace = "/proc/1/ns/mnt"\n')
    c.systemctl("start", "fsmond")
    warnings = c.journal("-u", "fsmond", "-p", "warning", "-o", "cat")
    assert "[Errno 13]" in warnings and "CAP_SYS_PTRACE" in warnings, warnings
    assert get_status(c)["mount_backend"] == "mountinfo"
    _, mounts = call(c, "ListMounts")
    assert {m["mount_id"]["data"] for m in mounts} == mount_ids(c.run(
        "cat", "/proc/1/mountinfo").stdout)
    c.systemctl("stop", "fsmond")

    c.write_file(f"{DROP_INS}/50-ptrace.conf", "[Service]\nCapabilityBoundingSet=CAP_SYS_PTRACE\n")
    c.systemctl("daemon-reload")
    c.systemctl("start", "fsmond")
    c.run("mkdir", "-p", "/mnt/host-late")
    c.run("mount", "-t", "tmpfs", "-o", "size=1m", "host-late", "/mnt/host-late")
    try:
        assert get_status(c)["mount_backend"] == "fanotify"
        want = {(int(f[0]), f[4]) for f in (line.split() for line in c.run(
            "cat", "/proc/1/mountinfo").stdout.splitlines())}

        def table() -> set[tuple[int, str]]:
            return {(m["mount_id"]["data"], m["mount_point"]["data"])
                    for m in call(c, "ListMounts")[1]}

        wait_until(lambda: table() == want, f"the table of /proc/1/mountinfo, {want}", 10)
    finally:
        c.run("umount", "/mnt/host-late", check=False)


def test_a_broken_configuration_is_a_failed_reload_at_error_priority(
        container: Container) -> None:
    c = container
    c.systemctl("start", "fsmond")
    watches = call(c, "ListWatches")
    c.write_file(CONFIG, "[daemon]\nkmsg = 3\n")
    r = c.systemctl("reload", "fsmond", check=False)
    assert r.returncode != 0, r
    assert c.systemctl("is-active", "fsmond", check=False).stdout.strip() == "active"
    warnings = c.journal("-u", "fsmond", "-p", "warning", "-o", "cat")
    assert "daemon.kmsg" in warnings, warnings
    # The daemon's own error, when the signal comes without the check:
    c.systemctl("kill", "--signal=SIGHUP", "--kill-who=main", "fsmond")
    wait_until(lambda: "reload failed" in c.journal("-u", "fsmond", "-p", "err", "-o", "cat"),
               "the daemon's reload error in the journal at priority err", 10)
    assert "ready:" not in c.journal("-u", "fsmond", "-p", "warning", "-o", "cat")
    assert "ready:" in c.journal("-u", "fsmond", "-p", "info", "-o", "cat")
    assert call(c, "ListWatches") == watches  # the old configuration stays

    c.write_file(CONFIG, '[[watch]]\npath = "/"\nlower = "3%"\nupper = "2%"\n')
    c.systemctl("reload", "fsmond")
    wait_until(lambda: [w["lower"]["data"] for w in call(c, "ListWatches")[0]] == ["3%"],
               "the new configuration", 10)


def test_the_call_that_activates_fsmond_gets_the_whole_table(container: Container) -> None:
    c = container
    assert c.systemctl("is-active", "fsmond", check=False).stdout.strip() != "active"
    generation, mounts = call(c, "ListMounts")  # D-Bus activation starts the unit
    assert generation > 0
    ids = mount_ids(c.run("cat", f"/proc/{main_pid(c)}/mountinfo").stdout)
    assert {m["mount_id"]["data"] for m in mounts} == ids


def host_pid_named(comm: str) -> int | None:
    """The host's pid of the one process named `comm` (the trace's numbers)."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if status.read_text().startswith(f"Name:\t{comm}\n"):
                return int(status.parent.name)
        except OSError:
            continue
    return None


WRITER = """\
import ctypes, os, time
ctypes.CDLL(None).prctl(15, b"enospc-writer", 0, 0, 0)  # PR_SET_NAME
fd = os.open("/srv/full/b", os.O_WRONLY | os.O_CREAT)
try:
    while True:
        os.write(fd, b"x" * 65536)
except OSError:
    time.sleep(60)
"""


def test_a_write_that_fails_with_enospc_names_the_writer(container: Container) -> None:
    """The sandbox lets fsmond make its tracefs instance (ProtectKernelTunables=
    makes /sys read-only; ReadWritePaths= opens /sys/kernel/tracing), it arms
    the trace once the file system is at risk, and a writer that runs out of
    space is a no-space event with its pid (as the kernel numbers it: the
    host's) and comm."""
    c = container
    mounted = c.run("sh", "-c", "test -d /sys/kernel/tracing/instances || "
                    "mount -t tracefs nodev /sys/kernel/tracing", check=False).returncode == 0
    if not mounted or c.run("test", "-d", "/sys/kernel/tracing/events/syscalls/sys_exit_write",
                            check=False).returncode != 0:
        pytest.skip("no tracefs with syscall events in the container")
    c.run("mkdir", "-p", "/srv/full")
    c.run("mount", "-t", "tmpfs", "-o", "size=4m", "full", "/srv/full")
    c.write_file(CONFIG, '[daemon]\npoll_interval = "200ms"\nmin_poll_interval = "100ms"\n'
                 '[[watch]]\npath = "/srv/full"\nlower = "50%"\nupper = "20%"\n')
    try:
        with monitor(c) as events:
            c.systemctl("start", "fsmond")
            status = get_status(c)
            assert status["enospc_trace"] == "disarmed", (
                status["unavailable"], c.journal("-u", "fsmond", "-p", "warning", "-o", "cat"))
            c.run("dd", "if=/dev/zero", "of=/srv/full/a", "bs=1M", "count=3")
            wait_until(lambda: get_status(c)["enospc_trace"] == "armed", "the trace armed", 10)
            c.run("systemd-run", "--unit=enospc-writer", "--quiet", "/opt/fsmond/bin/python",
                  "-c", WRITER)

            def traced() -> dict[str, Any] | None:
                return next((e for e in events() if e["name"] == "no-space"
                             and e["details"]["source"] == "trace"), None)

            event = wait_until(traced, "a traced no-space", 10)
            pid = host_pid_named("enospc-writer")
        assert (event["mount_point"], event["comm"], event["pid"]) == (
            "/srv/full", "enospc-writer", pid), event
        assert event["details"]["errno"] == 28
    finally:
        c.systemctl("stop", "enospc-writer", check=False)
        c.run("umount", "/srv/full", check=False)


def test_a_btrfs_forced_read_only_is_its_object_s_state_under_the_unit(
        container: Container, tmp_path: Path) -> None:
    """A btrfs broken on disk (tests/loopfs.py), mounted in the container and
    touched: under the unit's sandbox fsmond still finds its member device
    (BTRFS_IOC_FS_INFO, /sys/fs/btrfs), so the kernel's messages about loopN
    count on the btrfs object (0:NN): ReadOnly and ErrorCount, no stray event."""
    require_filesystem("btrfs")
    c = container
    with broken_btrfs(tmp_path, tmp_path / "b") as dev, monitor(c) as events:
        c.systemctl("start", "fsmond")
        c.add_device(dev)
        c.run("mkdir", "-p", "/mnt/b")
        c.run("mount", dev, "/mnt/b")
        try:
            line = next(li for li in c.run("cat", "/proc/self/mountinfo").stdout.splitlines()
                        if li.split()[4] == "/mnt/b")
            major, minor = line.split()[2].split(":")
            obj = f"{ROOT}/fs/{major}_{minor}"
            assert major == "0"
            wait_until(lambda: obj in managed(c), "the object", 10)
            assert prop(c, obj, "ReadOnly") is False
            c.run("sh", "-c", "rm -f /mnt/b/f*; sync", check=False)
            wait_until(lambda: prop(c, obj, "ReadOnly"), "ReadOnly", 20)
            wait_until(lambda: prop(c, obj, "ErrorCount") >= 1, "ErrorCount", 10)
            loop = Path(dev).name
            rdev = os.stat(dev).st_rdev
            strays = [e for e in events() if e["fs"] == "/" and (
                e["details"].get("devname") == loop
                or e["device"] == f"{os.major(rdev)}:{os.minor(rdev)}")]
            assert strays == []
            ours = [e for e in events() if e["fs"] == obj and e["class"] == "err"]
            assert {"read-only", "error"} <= {e["name"] for e in ours}
            assert all(e["mount_point"] == "/mnt/b" for e in ours)
            assert [e["fs"] for e in events() if e["name"] == "mounted"
                    and e["mount_point"] == "/mnt/b"] == [obj]
        finally:
            c.run("umount", "/mnt/b", check=False)


def test_btrfs_space_comes_from_btrfs_under_the_unit(container: Container,
                                                      tmp_path: Path) -> None:
    """ProtectKernelTunables= leaves /sys readable, and BTRFS_IOC_FS_INFO needs
    no capability the unit lacks: Size and Available are btrfs's own."""
    require_filesystem("btrfs")
    c = container
    c.write_file(CONFIG, '[daemon]\npoll_interval = "1s"\n')
    with loop_devices([tmp_path / "bt.img"], 256) as (dev,):
        mkfs_btrfs([dev])
        c.add_device(dev)
        c.run("mkdir", "-p", "/mnt/bt")
        c.run("mount", dev, "/mnt/bt")
        try:
            c.systemctl("start", "fsmond")
            majmin = c.run("findmnt", "-no", "MAJ:MIN", "/mnt/bt").stdout.strip()
            obj = f"{ROOT}/fs/{majmin.replace(':', '_')}"
            (folder,) = {os.path.dirname(os.path.dirname(p)) for p in
                         glob.glob(f"/sys/fs/btrfs/*/devices/{os.path.basename(dev)}")}
            expected = estimate(read_figures(folder))  # an idle, fresh btrfs: it stays put
            avail, bsize = c.run("stat", "-f", "-c", "%a %S", "/mnt/bt").stdout.split()
            assert int(avail) * int(bsize) != expected.available  # the two can be told apart
            wait_until(lambda: prop(c, obj, "Available") == expected.available,
                       "btrfs's own available space", 15)
            assert prop(c, obj, "Size") == expected.size
            assert "cannot be read" not in c.journal("-u", "fsmond", "-p", "warning")
        finally:
            c.systemctl("stop", "fsmond", check=False)
            c.run("umount", "/mnt/bt", check=False)
