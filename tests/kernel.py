"""Probes for kernel features a test needs. A kernel without one is not a
failure: the test skips with the reason (never a root-only skip, so
FSMOND_REQUIRE_ROOT=1 leaves these alone)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def filesystems() -> set[str]:
    return {line.split()[-1] for line in Path("/proc/filesystems").read_text().splitlines()
            if line.strip()}


def require_filesystem(fstype: str) -> None:
    """Skip unless the kernel knows `fstype`, loading its module if it is one."""
    if fstype not in filesystems() and shutil.which("modprobe"):
        subprocess.run(["modprobe", "-q", fstype], check=False, capture_output=True)
    if fstype not in filesystems():
        pytest.skip(f"this kernel has no {fstype} (not in /proc/filesystems, no module)")


def require_mount_api(fanotify: bool = True) -> None:
    """Skip unless listmount/statmount (Linux >= 6.8) and, with `fanotify`,
    fanotify mount-namespace marks (>= 6.15) work here."""
    from fsmond.sources import mountapi

    missing = mountapi.statmount_missing() or (fanotify and mountapi.fanotify_mounts_missing())
    if missing:
        pytest.skip(f"this kernel cannot: {missing}")


TRACEFS = "/sys/kernel/tracing"


def require_tracefs() -> str:
    """Skip unless syscall trace events work here. tracefs is mounted at its
    usual place when it is not (in the test session's private mount
    namespace, so the host does not see it). Returns its path."""
    if not Path(TRACEFS, "instances").is_dir():
        if "tracefs" not in filesystems():
            pytest.skip("this kernel has no tracefs")
        r = subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], check=False,
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount tracefs at {TRACEFS}: {r.stderr.strip()}")
    if not Path(TRACEFS, "events", "syscalls", "sys_exit_write").is_dir():
        pytest.skip("this kernel has no syscall trace events (CONFIG_FTRACE_SYSCALLS)")
    return TRACEFS
