"""Cost of the ENOSPC trace, and how often a failure is tied to its writer's files.

Cost: `dd if=/dev/zero bs=512` into a tmpfs (dd's CPU time), with no
tracefs instance at all, with fsmond's instance made and filtered but
disarmed, and armed (every sys_exit_* event fsmond uses
enabled, filtered on ENOSPC/EDQUOT: nothing passes, only the slow path is
paid). The three run interleaved, --runs times; medians and ratios.

Attribution (--attribution N): fsmond's own source (mode "always") reads
failures of N short writers into a full tmpfs: `dd` that exits at once on
ENOSPC, and a shell that keeps its file open a moment after the failure.
Counted: how often the writer's /proc files were still there to say which
file system it wrote to (the rest go by which file systems are at risk).

    sudo .venv/bin/python bench/trace_cost.py [--runs 9] [--count 200000] [--attribution 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.harness import private_namespace, work_dir
from fsmond.events import Observation, WriteFailure
from fsmond.sources.enospc_trace import (
    EnospcTraceSource,
    configure,
    find_tracefs,
    make_instance,
    set_enabled,
)
from fsmond.sources.mountinfo import parse_mountinfo

TRACEFS = "/sys/kernel/tracing"


def ensure_tracefs() -> str:
    try:
        return find_tracefs()
    except OSError:
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], check=True)
        return find_tracefs()


def dd_seconds(target: Path, count: int) -> float:
    """dd's CPU time (user + system): unlike its elapsed time, not what the
    other processes of a busy machine take from it."""
    p = subprocess.Popen(["dd", "if=/dev/zero", f"of={target}", "bs=512", f"count={count}"],
                         stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    assert p.returncode == 0, p.returncode
    return usage.ru_utime + usage.ru_stime


def cost(work: Path, root: str, runs: int, count: int) -> None:
    target = work / "dd.out"
    times: dict[str, list[float]] = {"no trace": [], "disarmed": [], "armed": []}
    for _ in range(runs):
        for phase in times:
            path = ""
            if phase != "no trace":
                path = make_instance(root)
                set_enabled(switches := configure(path), phase == "armed")
            try:
                times[phase].append(dd_seconds(target, count))
            finally:
                if path:
                    set_enabled(switches, False)
                    os.rmdir(path)
    base = statistics.median(times["no trace"])
    mb = count * 512 / 1e6
    print(f"dd bs=512 count={count} to tmpfs, {runs} interleaved runs each "
          f"({len(switches)} sys_exit events when armed)")
    print(f"{'':10} {'CPU s':>9} {'MB/CPU s':>9} {'x no trace':>11} {'min - max s':>16}")
    for phase, ts in times.items():
        med = statistics.median(ts)
        print(f"{phase:10} {med:9.4f} {mb / med:9.1f} {med / base:11.3f} "
              f"{min(ts):7.4f} - {max(ts):.4f}")


def mount_id(path: Path) -> int:
    table = parse_mountinfo(Path("/proc/self/mountinfo").read_bytes())
    return [e.mount_id for e in table if e.mount_point == str(path)][-1]


async def attribution(work: Path, root: str, n: int) -> None:
    full = work / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "bench-full", str(full)],
                   check=True)
    subprocess.run(["dd", "if=/dev/zero", f"of={full}/fill", "bs=64k"], check=False,
                   capture_output=True)
    mnt = mount_id(full)
    got: dict[int, WriteFailure] = {}
    arrived = asyncio.Event()

    def emit(obs: Observation) -> None:
        if isinstance(obs, WriteFailure):
            got[obs.pid] = obs
            arrived.set()

    source = EnospcTraceSource(emit, mode="always", tracefs=root)
    started = asyncio.Event()
    task = asyncio.create_task(source.run(started.set))
    await started.wait()
    writers = {
        "dd (exits at once)": ["dd", "if=/dev/zero", f"of={full}/f", "bs=4k", "count=1"],
        "sh (lingers 50 ms)": ["sh", "-c", f"exec 3>>{full}/g; echo x >&3; sleep 0.05"],
    }
    try:
        for name, cmd in writers.items():
            found = 0
            for _ in range(n):
                p = await asyncio.create_subprocess_exec(*cmd, stderr=asyncio.subprocess.DEVNULL)
                while p.pid not in got:
                    arrived.clear()
                    await asyncio.wait_for(arrived.wait(), 5)
                await p.wait()
                found += mnt in got[p.pid].writable
            print(f"{name:20} writer's files read in {found}/{n} ({100 * found / n:.0f}%)")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        subprocess.run(["umount", "-l", str(full)], check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--attribution", type=int, default=0, metavar="N")
    args = ap.parse_args()
    private_namespace()
    root = ensure_tracefs()
    work = work_dir("fsmond-trace-cost-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "bench", str(work)], check=True)
    try:
        cost(work, root, args.runs, args.count)
        if args.attribution:
            asyncio.run(attribution(work, root, args.attribution))
    finally:
        subprocess.run(["umount", "-l", str(work)], check=False)


if __name__ == "__main__":
    main()
