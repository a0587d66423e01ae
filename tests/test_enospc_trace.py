"""ENOSPC traces end to end: the real `fsmond --print-events`, a real tracefs
instance, size-limited tmpfs filled by child processes until they get ENOSPC.

tracefs is mounted in the test session's private mount namespace when the
host has not mounted it (tests/kernel.py); a kernel without syscall trace
events skips these tests with the reason.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fsmond.config import parse_config
from fsmond.daemon import Daemon
from fsmond.sources import enospc_trace
from fsmond.sources.enospc_trace import SYSCALLS
from tests.kernel import require_tracefs
from tests.running import (
    FSMOND,
    FsmondProcess,
    daemon_config,
    dev_of,
    fsmond,
    run,
    run_daemon,
    tmpfs,
    wait_until,
)

pytestmark = [pytest.mark.root]


@pytest.fixture
def tracefs() -> Path:
    return Path(require_tracefs())


def pidns() -> int:
    return os.stat("/proc/self/ns/pid").st_ino


def instance(tracefs: Path, p: FsmondProcess) -> Path:
    return tracefs / "instances" / f"fsmond-{pidns()}-{p.proc.pid}"


def switches(inst: Path) -> set[str]:
    """The enable switches of the events fsmond uses: {"0"} disarmed, {"1"} armed."""
    events = inst / "events" / "syscalls"
    return {(events / f"sys_exit_{c}" / "enable").read_text().strip()
            for c in SYSCALLS if (events / f"sys_exit_{c}").is_dir()}




def fill(path: Path, mib: float) -> None:
    with open(path, "wb") as f:
        f.write(b"x" * int(mib * (1 << 20)))


def traced(e: dict[str, object]) -> bool:
    return e["name"] == "no-space" and e["details"].get("source") == "trace"  # type: ignore[attr-defined]


def fs_path(mount_point: Path) -> str:
    return "/org/fsmond/FsMon1/fs/" + dev_of(mount_point).replace(":", "_")


def test_a_writer_that_gets_enospc_is_named_and_the_trace_is_armed_only_at_risk(
        tmp_path: Path, tracefs: Path) -> None:
    with tmpfs(tmp_path / "t", "size=4m") as t, \
            fsmond(daemon_config(tmp_path / "c.toml", str(t))) as p:
        inst = instance(tracefs, p)
        p.wait_for(p.named("watch-added"))
        assert switches(inst) == {"0"}  # nothing at risk: no cost to anyone
        fill(t / "a", 2.5)  # past the lower level (50% available)
        p.wait_for(p.named("threshold", level="lower", state="reached"))
        wait_until(lambda: switches(inst) == {"1"}, "armed")
        dd = subprocess.run(["dd", "if=/dev/zero", f"of={t}/b", "bs=64k"], check=False,
                            capture_output=True, text=True)
        assert "No space left" in dd.stderr
        ev = p.wait_for(traced)
        assert (ev["fs"], ev["mount_point"], ev["fstype"], ev["comm"]) == (
            fs_path(t), str(t), "tmpfs", "dd")
        assert ev["pid"] > 0 and ev["class"] == "warn"
        assert {k: ev["details"][k] for k in ("errno", "syscall", "resource", "count")} == {
            "errno": 28, "syscall": "write", "resource": "data", "count": 1}
        os.remove(t / "a")
        os.remove(t / "b")
        p.wait_for(p.named("threshold", level="lower", state="cleared"))
        wait_until(lambda: switches(inst) == {"0"}, "disarmed")
    assert not inst.exists()  # removed at stop


def test_the_writer_s_pid_is_the_one_that_failed(tmp_path: Path, tracefs: Path) -> None:
    """A writer that lives on after its failure is found from its own open
    files (attribution "writer"), with its pid: not a guess by risk."""
    code = ("import os, sys\n"
            "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\n"
            "while True:\n"
            "    try: os.write(fd, b'x' * 65536)\n"
            "    except OSError: break\n"
            "print(os.getpid(), flush=True)\n"
            "sys.stdin.read()\n")
    with tmpfs(tmp_path / "t", "size=4m") as t, tmpfs(tmp_path / "u", "size=4m") as u, \
            fsmond(daemon_config(tmp_path / "c.toml", str(tmp_path / "*"),
                                 enospc_trace='"always"')) as p:
        fill(u / "a", 3)  # also at risk: the risk alone cannot tell them apart
        wait_until(lambda: switches(instance(tracefs, p)) == {"1"}, "armed")
        child = subprocess.Popen([sys.executable, "-c", code, str(t / "f")],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            pid = int(child.stdout.readline())
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            ev = p.wait_for(lambda e: traced(e) and e["pid"] == pid)
        finally:
            child.communicate("")
        assert (ev["mount_point"], ev["comm"], ev["details"]["attribution"]) == (
            str(t), comm, "writer")


def test_a_storm_of_failures_is_folded_with_the_count(tmp_path: Path, tracefs: Path) -> None:
    failures = 400
    code = ("import os, sys\n"
            "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\n"
            "n = 0\n"
            f"while n < {failures}:\n"
            "    try: os.write(fd, b'x' * 65536)\n"
            "    except OSError: n += 1\n"
            "sys.stdin.read()\n")
    with tmpfs(tmp_path / "t", "size=4m") as t, \
            fsmond(daemon_config(tmp_path / "c.toml", str(t), enospc_trace='"always"')) as p:
        wait_until(lambda: switches(instance(tracefs, p)) == {"1"}, "armed")
        child = subprocess.Popen([sys.executable, "-c", code, str(t / "f")],
                                 stdin=subprocess.PIPE)

        def mine() -> list[dict[str, object]]:
            return [e for e in p.events if traced(e) and e["pid"] == child.pid]

        try:
            p.wait_for(lambda _: sum(e["details"]["count"] for e in mine()) >= failures)  # type: ignore[index]
        finally:
            child.communicate(b"")
        events = mine()
        assert sum(e["details"]["count"] for e in events) == failures  # type: ignore[index]
        assert len(events) < 10  # one per second, not one per failure
        assert {e["details"]["attribution"] for e in events} == {"writer"}  # type: ignore[index]


def test_a_dead_fsmond_s_instance_is_removed_and_another_namespace_s_kept(
        tmp_path: Path, tracefs: Path) -> None:
    dead = next(n for n in range(4_000_000, 3_000_000, -1) if not Path(f"/proc/{n}").exists())
    stale = tracefs / "instances" / f"fsmond-{pidns()}-{dead}"
    elsewhere = tracefs / "instances" / f"fsmond-1-{dead}"
    stale.mkdir()
    elsewhere.mkdir()
    try:
        with tmpfs(tmp_path / "t") as t, fsmond(daemon_config(tmp_path / "c.toml", str(t))) as p:
            assert instance(tracefs, p).is_dir()
            assert not stale.exists()
            assert elsewhere.exists()
    finally:
        for d in (stale, elsewhere):
            if d.exists():
                d.rmdir()


def test_off_makes_no_instance(tmp_path: Path, tracefs: Path) -> None:
    with tmpfs(tmp_path / "t") as t, \
            fsmond(daemon_config(tmp_path / "c.toml", str(t), enospc_trace='"off"')) as p:
        assert not instance(tracefs, p).exists()


def test_a_read_only_tracefs_is_one_warning_with_the_errno_and_statvfs_still_works(
        tmp_path: Path, tracefs: Path) -> None:
    """What ProtectKernelTunables= without a way out does to the unit."""
    ro = f"mount -o remount,bind,ro {tracefs} && exec \"$@\""
    with tmpfs(tmp_path / "t", "size=4m") as t:
        p = FsmondProcess(daemon_config(tmp_path / "c.toml", str(t)),
                          launcher=["unshare", "-m", "sh", "-c", ro, "sh", *FSMOND])
        try:
            p.wait_ready()
            subprocess.run(["dd", "if=/dev/zero", f"of={t}/a", "bs=64k"], check=False,
                           capture_output=True)
            p.wait_for(p.named("no-space", source="statvfs"))
        finally:
            assert p.stop() == 0
    warnings = [line for line in p.stderr if "enospc-trace not available" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and "[Errno 30]" in warnings[0], \
        "".join(p.stderr[-20:])


def test_without_tracefs_get_status_says_unavailable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(enospc_trace, "TRACEFS_PATHS", (str(tmp_path / "none"),))
    config = parse_config("[daemon]\nudev = false\nkmsg = false\nfanotify_errors = false\n")
    stop = asyncio.Event()
    status: dict[str, object] = {}

    def ready() -> None:
        status.update(d.control.status())
        stop.set()

    d = Daemon(config, shutdown_trigger=stop.wait, ready=ready)
    run_daemon(d)
    assert status["enospc_trace"] == "unavailable"
    assert "tracefs is not mounted" in status["unavailable"]["enospc-trace"]  # type: ignore[index]


def ext4_with_quota(image: Path, mount_point: Path) -> str:
    """A loop device with an ext4 that enforces user quota, or a skip: some
    kernels have quota support without a format ext4 can use (CONFIG_QFMT_V2)."""
    with open(image, "wb") as f:
        f.truncate(32 << 20)
    run("mkfs.ext4", "-q", "-F", "-O", "quota", str(image))
    dev = run("losetup", "-f", "--show", str(image)).strip()
    mount_point.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-o", "usrquota", dev, str(mount_point)], check=False,
                       capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["losetup", "-d", dev], check=False)
        pytest.skip("this kernel cannot mount ext4 with user quota (CONFIG_QFMT_V2): "
                    + r.stderr.strip().splitlines()[0])
    return dev


def set_block_limit(dev: str, uid: int, kib: int) -> None:
    import ctypes
    import struct

    libc = ctypes.CDLL(None, use_errno=True)
    q_setquota, usrquota, qif_blimits = 0x800008, 0, 1
    dqblk = ctypes.create_string_buffer(struct.pack("=8QI4x", kib, kib, 0, 0, 0, 0, 0, 0,
                                                    qif_blimits))
    if libc.quotactl((q_setquota << 8) | usrquota, dev.encode(), uid, dqblk) != 0:
        raise OSError(ctypes.get_errno(), "quotactl(Q_SETQUOTA)")


def test_edquot_is_a_quota_event_with_the_writer(tmp_path: Path, tracefs: Path) -> None:
    q = tmp_path / "q"
    dev = ext4_with_quota(tmp_path / "img", q)
    try:
        set_block_limit(dev, 1000, 64)
        (q / "u").mkdir()
        os.chown(q / "u", 1000, 1000)
        with fsmond(daemon_config(tmp_path / "c.toml", str(q), enospc_trace='"always"')) as p:
            wait_until(lambda: switches(instance(tracefs, p)) == {"1"}, "armed")
            subprocess.run(["setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups",
                            "dd", "if=/dev/zero", f"of={q}/u/f", "bs=4k", "count=100"],
                           check=False, capture_output=True)
            ev = p.wait_for(p.named("quota-exceeded"))
        assert (ev["mount_point"], ev["comm"], ev["details"]["errno"]) == (str(q), "dd", "EDQUOT")
    finally:
        subprocess.run(["umount", "-l", str(q)], check=False)
        subprocess.run(["losetup", "-d", dev], check=False)


def test_a_reload_to_always_arms_and_back_to_at_risk_disarms(tmp_path: Path,
                                                             tracefs: Path) -> None:
    with tmpfs(tmp_path / "t") as t:
        cfg = daemon_config(tmp_path / "c.toml", str(t))
        with fsmond(cfg) as p:
            inst = instance(tracefs, p)
            assert switches(inst) == {"0"}
            daemon_config(cfg, str(t), enospc_trace='"always"')
            p.signal(signal.SIGHUP)
            wait_until(lambda: switches(inst) == {"1"}, "armed")
            daemon_config(cfg, str(t))
            p.signal(signal.SIGHUP)
            wait_until(lambda: switches(inst) == {"0"}, "disarmed")


def test_xfs_out_of_space_despite_its_reserve_is_no_space_from_the_trace(
        tmp_path: Path, tracefs: Path) -> None:
    """xfs keeps a reserve: at ENOSPC statvfs still shows room, so statvfs
    alone never says no-space (the issue's row). The trace does, on the xfs
    object, with the writer."""
    from tests.kernel import require_filesystem
    from tests.loopfs import loop_xfs

    require_filesystem("xfs")
    with loop_xfs(tmp_path, tmp_path / "x") as (x, _dev), \
            fsmond(daemon_config(tmp_path / "c.toml", str(x))) as p:
        p.wait_for(p.named("watch-added"))
        dd = subprocess.run(["dd", "if=/dev/zero", f"of={x}/big", "bs=1M"], check=False,
                            capture_output=True, text=True, timeout=120)
        assert "No space left" in dd.stderr
        assert os.statvfs(x).f_bavail > 0  # the reserve: statvfs says there is room
        if not [e for e in p.events if traced(e)]:
            # The trace arms when the lower level is reached; a write that
            # fails after that is named.
            wait_until(lambda: switches(instance(tracefs, p)) == {"1"}, "armed")
            subprocess.run(["dd", "if=/dev/zero", f"of={x}/more", "bs=1M"], check=False,
                           capture_output=True, timeout=60)
        ev = p.wait_for(traced)
        assert (ev["fs"], ev["mount_point"], ev["fstype"]) == (fs_path(x), str(x), "xfs")
        assert ev["comm"] == "dd" and ev["details"]["errno"] == 28
