"""Where an ext4 error's way to a D-Bus subscriber spends its time, from the
scheduler's own record (tracefs): the error, fsmond woken, dbus-daemon woken
(fsmond has written the signal), dbus-monitor woken (dbus-daemon has passed
it on). A tracefs instance of our own keeps the system's tracing untouched.
"""

from __future__ import annotations

import itertools
import os
import re
import statistics
import subprocess
from pathlib import Path

HOPS = ("kernel -> fsmond woken", "fsmond's handling -> its write",
        "dbus-daemon -> dbus-monitor woken", "in all")
_LINE = re.compile(r"\s(\d+\.\d+): (sched_wakeup|ext4_error): (.*)$")
_WOKEN = re.compile(r"comm=(.+?) pid=(\d+) ")


class SchedTrace:
    """sched_wakeup and ext4_error in an instance of our own, while in use."""

    def __init__(self, work: Path) -> None:
        root = Path("/sys/kernel/tracing")
        if not (root / "instances").is_dir():  # our namespace is private: mount it here
            root = work / "tracefs"
            root.mkdir()
            subprocess.run(["mount", "-t", "tracefs", "nodev", str(root)], check=True)
        self.dir = root / "instances" / f"fsmond-bench-{os.getpid()}"
        self.text = ""

    def __enter__(self) -> SchedTrace:
        self.dir.mkdir()
        (self.dir / "trace_clock").write_text("mono\n")
        (self.dir / "buffer_size_kb").write_text("16384\n")
        for event in ("sched/sched_wakeup", "ext4/ext4_error"):
            (self.dir / "events" / event / "enable").write_text("1\n")
        (self.dir / "tracing_on").write_text("1\n")
        return self

    def __exit__(self, *exc: object) -> None:
        (self.dir / "tracing_on").write_text("0\n")
        self.text = (self.dir / "trace").read_text()
        self.dir.rmdir()


def hops(text: str, fsmond: int, bus: int) -> list[tuple[float, ...]]:
    """Per error, in ms: the HOPS, each from the wake-up before it."""
    events: list[tuple[float, str]] = []  # (time, who was woken, or "error")
    for line in text.splitlines():
        m = _LINE.search(line)
        if m is None:
            continue
        if m.group(2) == "ext4_error":
            events.append((float(m.group(1)), "error"))
        elif (w := _WOKEN.match(m.group(3))) is not None:
            pid = int(w.group(2))
            who = ("fsmond" if pid == fsmond else "bus" if pid == bus
                   else "monitor" if w.group(1) == "dbus-monitor" else "")
            if who:
                events.append((float(m.group(1)), who))
    out = []
    for i, (t0, kind) in enumerate(events):
        if kind != "error":
            continue
        times, want = [t0], ["fsmond", "bus", "monitor"]
        for t, who in events[i + 1:]:
            if who == "error":
                break
            if who == want[0]:
                times.append(t)
                want.pop(0)
                if not want:
                    break
        if not want:
            steps = [(b - a) * 1000 for a, b in itertools.pairwise(times)]
            out.append((*steps, (times[-1] - t0) * 1000))
    return out


def report(rows: list[tuple[float, ...]], slowest: int = 5) -> None:
    if not rows:
        print("scheduler trace: no complete error found")
        return
    print(f"scheduler trace, {len(rows)} errors, ms: {'median':>8} {'p90':>8} {'max':>8}")
    for k, name in enumerate(HOPS):
        col = sorted(r[k] for r in rows)
        print(f"  {name:36} {statistics.median(col):8.3f} {col[int(0.9 * (len(col) - 1))]:8.3f} "
              f"{col[-1]:8.3f}")
    print(f"  the {slowest} slowest, hop by hop: " + "; ".join(
        " / ".join(f"{x:.2f}" for x in r) for r in sorted(rows, key=lambda r: -r[-1])[:slowest]))
