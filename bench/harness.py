"""What every benchmark here sets up: a private mount namespace, a tmpfs with
mount-point directories, a private D-Bus, the real fsmond, and CPU accounting."""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MNT_DETACH = 2
TICK = os.sysconf("SC_CLK_TCK")
libc = ctypes.CDLL(None, use_errno=True)


def cpu_seconds(pid: int) -> float:
    """Of the whole process, all its threads."""
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def _stat_cpu(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def thread_cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds of the main thread and of all other threads (Python does
    not name its threads to the kernel, so the main one is told by its id)."""
    main = other = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            # task/<tid>/stat: /proc/<pid>/stat would count every thread
            seconds = _stat_cpu(task / "stat")
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
        if int(task.name) == pid:
            main += seconds
        else:
            other += seconds
    return main, other


def private_namespace() -> None:
    if libc.unshare(CLONE_NEWNS) != 0:
        sys.exit("unshare(CLONE_NEWNS) failed: run as root")
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)


def work_dir(prefix: str) -> Path:
    """A directory in /tmp, removed at exit with whatever is mounted below it
    (the namespace is the benchmark's own, so are those mounts)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(_remove, work)
    return work


def _remove(work: Path) -> None:
    with open("/proc/self/mountinfo") as f:  # mkdtemp's names need no unescaping
        points = {line.split()[4] for line in f}
    # Outermost first: detaching one detaches all below it (an autofs map's
    # mount points are never walked into, so nothing is triggered).
    for point in sorted((p for p in points if p == str(work) or p.startswith(f"{work}/")),
                        key=len):
        libc.umount2(point.encode(), MNT_DETACH)
    shutil.rmtree(work, ignore_errors=True)


def storm_dir(prefix: str, mounts: int) -> Path:
    """A tmpfs holding `src` and the directories m0..m<mounts-1> to bind onto."""
    work = work_dir(prefix)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "bench", str(work)], check=True)
    (work / "src").mkdir()
    for i in range(mounts):
        (work / f"m{i}").mkdir()
    return work


def one(target: Path, mount: bool) -> float:
    """Bind the `src` beside `target` onto it (or unmount it); the call's time."""
    t0 = time.monotonic()
    rc = libc.mount(str(target.parent / "src").encode(), str(target).encode(), None, MS_BIND,
                    None) if mount else libc.umount2(str(target).encode(), MNT_DETACH)
    if rc != 0:
        sys.exit(f"mount/umount {target}: {os.strerror(ctypes.get_errno())}")
    return time.monotonic() - t0


def storm(base: Path, n: int, mount: bool) -> float:
    """Bind src onto m0..m<n-1> (or unmount them) as fast as the kernel goes."""
    t0 = time.monotonic()
    for i in range(n):
        one(base / f"m{i}", mount)
    return time.monotonic() - t0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def private_bus() -> tuple[subprocess.Popen[str], str]:
    bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address"],
                           stdout=subprocess.PIPE, text=True)
    assert bus.stdout is not None
    return bus, bus.stdout.readline().strip()


def start_fsmond(work: Path, config: str, *args: str,
                 launcher: tuple[str, ...] = ("-m", "fsmond")) -> subprocess.Popen[bytes]:
    """The real daemon, logging to a file (a pipe nobody reads would stall it),
    returned once it says it is ready. `launcher`: how Python is told to run it."""
    cfg = work / "fsmond.toml"
    cfg.write_text(config)
    log = work / "fsmond.log"
    with open(log, "w") as err:
        p = subprocess.Popen([sys.executable, *launcher, "--config", str(cfg), *args],
                             stderr=err)
    while " ready: " not in log.read_text():
        if p.poll() is not None:
            sys.exit("fsmond did not start:\n" + log.read_text())
        time.sleep(0.05)
    return p
