"""Python steps (bytecode instructions run) for fsmond's per-event work.

A diagnostic beside the benchmarks: this VM's timings move by 2x from one
minute to the next, but the number of instructions a step runs does not, and
on fsmond's cold paths (an error after seconds of quiet) time follows it.
Counted with sys.settrace's opcode events, after a warm-up call, so caches
are as they are in a running daemon.

    .venv/bin/python bench/python_steps.py [--cold N]

--cold N times the ext4 error's work N times back to back, then N times
after each of several pauses up to 1.1 s (as error_latency spaces its
errors): how much slower this VM runs the same Python steps cold, with no
I/O and no other process in the way, and how soon they go cold. With
`--busy` the pauses spin instead of sleeping, so the CPU never goes idle.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.harness import percentile
from fsmond.config import parse_config
from fsmond.engine.core import Engine
from fsmond.engine.mounts import REMOVED, MountChange
from fsmond.events import Event, KernelReport, MountDelta, MountEntry, MountSnapshot
from fsmond.publishers import dbus_wire as wire
from fsmond.publishers.dbus_entries import change_entries, event_entries
from fsmond.sources.kmsg_parse import classify, parse_kmsg

ROOT, FS = "/org/fsmond/FsMon1", "/org/fsmond/FsMon1/fs/7_3"
MOUNT = MountEntry(4567, 33, (7, 3), "/", "/srv/storm/m/12345", "rw,relatime", "ext4",
                   "/dev/loop3", "rw,errors=continue")
MOUNTED = Event(12345, 1764400000.123456, "info", "mounted", FS, MOUNT.mount_point, "ext4",
                "/dev/loop3", "7:3", 0, "", {"options": MOUNT.options,
                                             "super_options": MOUNT.super_options,
                                             "mount_id": MOUNT.mount_id})
KMSG = (b"2,%d,%d,-;EXT4-fs error (device loop3): ext4_lookup:1855: comm ls: "
        b"deleted inode referenced: %d\n SUBSYSTEM=block\n DEVICE=b7:3\n")


def steps(work: Callable[[], object]) -> int:
    work()  # warm: caches filled, code specialised
    count = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        frame.f_trace_opcodes = True
        count += event == "opcode"
        return tracer

    sys.settrace(tracer)
    try:
        work()
    finally:
        sys.settrace(None)
    return count


def event_signals(both: bool = True) -> None:
    manager, obj = wire.event_bodies(MOUNTED.fs, MOUNTED.cls, MOUNTED.name,
                                     event_entries(MOUNTED))
    wire.signal(1, ROOT, "org.fsmond.FsMon1.Manager", "Event", "ossa{sv}", manager)
    if both:
        wire.signal(2, FS, "org.fsmond.FsMon1.FileSystem", "Event", "ssa{sv}", obj)


def engine_with_binds(n: int) -> Engine:
    e = Engine(parse_config("[daemon]\nudev = false\n"), merge_wait=0.05)
    binds = [dataclasses.replace(MOUNT, mount_id=100 + i, mount_point=f"/srv/m/{i}")
             for i in range(n)]
    e.process(MountSnapshot((MOUNT, *binds)), 1.0)
    return e


PAUSES = (0.0, 0.001, 0.01, 0.1, 1.1)  # seconds before each call


def timed(work: Callable[[], object], n: int, gap: float, busy: bool = False) -> list[float]:
    """Milliseconds each of n calls took, each after `gap` seconds asleep
    (or spinning, with `busy`)."""
    out = []
    for _ in range(n):
        if busy:
            end = time.perf_counter() + gap
            while time.perf_counter() < end:
                pass
        else:
            time.sleep(gap)
        t0 = time.perf_counter()
        work()
        out.append((time.perf_counter() - t0) * 1000)
    return sorted(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cold", type=int, metavar="N", help="also time the error's work N times "
                    "back to back and N times after each pause")
    ap.add_argument("--busy", action="store_true",
                    help="with --cold: spin through the pauses instead of sleeping")
    args = ap.parse_args()
    engine = engine_with_binds(2000)
    batches = iter(range(100, 2100, 100))

    def unmounts() -> None:
        first = next(batches)
        engine.process(MountDelta(removed=tuple(range(first, first + 100))), 2.0)

    errors = engine_with_binds(0)
    rounds = iter(range(1, 1_000_000))

    def error() -> None:
        i = next(rounds)
        now = 10.0 * i  # each error opens a fold window of its own, as in the bench
        errors.process(KernelReport("error", "fanotify", (7, 3), errno=5), now)
        found = classify(parse_kmsg(KMSG % (i, i * 1000, i)))
        assert found is not None
        for e in errors.process(KernelReport(
                "error", "kmsg", found.device, found.devname, function=found.function,
                message=found.message, comm=found.comm), now + 0.001).events:
            wire.event_bodies(e.fs, e.cls, e.name, event_entries(e))

    change = MountChange(99, REMOVED, MOUNT)
    # (what, its steps, how many warm calls to time, what a call is in units of it)
    rows = [
        ("a mounted event's two Event signals", event_signals, 2000, 1),
        ("  the Manager's alone (what a second signal costs)", lambda: event_signals(False),
         2000, 1),
        ("  their a{sv} alone", lambda: event_entries(MOUNTED), 2000, 1),
        ("a mount change's MountsChanged entry", lambda: change_entries(change, FS), 2000, 1),
        # its 20 batches: one to warm up, one counted, 18 timed
        ("the engine, 100 unmounts at 2,000 mounts (each)", unmounts, 18, 100),
        ("an ext4 error: kmsg parse, engine merge, both bodies", error, 200, 1),
    ]
    print(f"{'':55} {'steps':>6} {'us warm':>8}")
    counted = []
    for name, work, calls, per in rows:
        counted.append((name, steps(work) // per))
        # Back to back, so the time of code and caches as a storm keeps them.
        us = statistics.median(timed(work, calls, 0.0)) * 1000 / per
        print(f"{name:55} {counted[-1][1]:6d} {us:8.2f}")
    print("summary: " + ", ".join(f"{n} ({name.split(':')[0].strip()})" for name, n in counted))
    if args.cold:
        print(f"{'the ext4 error, ms':30} {'p50':>7} {'p99':>7} {'max':>7}")
        for gap in PAUSES:
            ms = timed(error, args.cold, gap, args.busy)
            name = f"after {gap * 1000:g} ms {'spinning' if args.busy else 'asleep'}" \
                if gap else "back to back"
            print(f"{name:30} {statistics.median(ms):7.3f} "
                  f"{percentile(ms, 99):7.3f} {ms[-1]:7.3f}")


if __name__ == "__main__":
    main()
