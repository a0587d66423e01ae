"""Where an ext4 error's way to a D-Bus subscriber spends its time, from the
scheduler's own record (tracefs): the error, fsmond woken, fsmond on a CPU,
dbus-daemon woken (fsmond has written the signal), dbus-monitor woken
(dbus-daemon has passed it on). fsmond's own hop is split into the time it
waited for a CPU (woken, or preempted while runnable) and the time it ran.
And of the time it was on a CPU (until it slept again), what the scheduler
did not count as its run time: with PARAVIRT_TIME_ACCOUNTING (this VM's
kernel) sched_stat_runtime leaves out time the host took the virtual CPU
away (steal), which the guest otherwise sees as fsmond running.
A tracefs instance of our own keeps the system's tracing untouched.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
from pathlib import Path

HOPS = ("kernel -> fsmond woken", "fsmond woken -> on a CPU", "fsmond on a CPU -> its write",
        "  of which waiting, preempted", "dbus-daemon -> dbus-monitor woken", "in all",
        "fsmond on a CPU until it sleeps", "  of which not its run time (steal)")
ALL, STEAL = HOPS.index("in all"), HOPS.index("  of which not its run time (steal)")
_LINE = re.compile(r"\[(\d+)\].*?\s(\d+\.\d+): "
                   r"(sched_wakeup|sched_switch|sched_stat_runtime|ext4_error): (.*)$")
_STAMP = re.compile(r"^.*?\[\d+\].*?\s(\d+\.\d+): (\w+)", re.MULTILINE)
_WOKEN = re.compile(r"comm=(.+?) pid=(\d+) ")
_RUNTIME = re.compile(r"pid=(\d+) runtime=(\d+)")
_SWITCH = re.compile(r"prev_pid=(\d+) .*prev_state=(\S+) ==> .*next_pid=(\d+) ")


class Trace:
    """Kernel trace events, each with its filter, in a tracefs instance of our
    own while in use; CLOCK_MONOTONIC stamps, as time.monotonic()."""

    def __init__(self, work: Path, filters: dict[str, str]) -> None:
        root = Path("/sys/kernel/tracing")
        if not (root / "instances").is_dir():  # our namespace is private: mount it here
            root = work / "tracefs"
            root.mkdir(exist_ok=True)
            subprocess.run(["mount", "-t", "tracefs", "nodev", str(root)], check=True)
        self.dir = root / "instances" / f"fsmond-bench-{os.getpid()}"
        self.filters = filters  # event ("sched/sched_switch") -> filter ("" for none)
        self.text = ""

    def __enter__(self) -> Trace:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.dir.mkdir()
        (self.dir / "trace_clock").write_text("mono\n")
        (self.dir / "buffer_size_kb").write_text("16384\n")
        for event, condition in self.filters.items():
            if condition:
                (self.dir / "events" / event / "filter").write_text(condition + "\n")
            (self.dir / "events" / event / "enable").write_text("1\n")
        (self.dir / "tracing_on").write_text("1\n")

    def stop(self) -> None:
        (self.dir / "tracing_on").write_text("0\n")
        self.text = (self.dir / "trace").read_text()
        self.dir.rmdir()

    def times(self, event: str) -> list[float]:
        """The stamps of an event's records ("sys_sendto"), in order."""
        return [float(m.group(1)) for m in _STAMP.finditer(self.text) if m.group(2) == event]


class SchedTrace(Trace):
    """sched_wakeup, sched_switch and sched_stat_runtime (of fsmond only) and
    ext4_error."""

    def __init__(self, work: Path, fsmond: int) -> None:
        super().__init__(work, {
            "sched/sched_wakeup": "",
            "sched/sched_switch": f"prev_pid == {fsmond} || next_pid == {fsmond}",
            "sched/sched_stat_runtime": f"pid == {fsmond}",
            "ext4/ext4_error": ""})
        self.fsmond = fsmond


def _events(text: str, fsmond: int, bus: int) -> list[tuple[float, str]]:
    """(time, what): error, woken:<who>, in (fsmond switched in), out-R
    (fsmond switched out while runnable: preempted), out (asleep), ran:<ns>
    (run time the scheduler counted for fsmond)."""
    out: list[tuple[float, str]] = []
    for line in text.splitlines():
        m = _LINE.search(line)
        if m is None:
            continue
        t, kind, rest = float(m.group(2)), m.group(3), m.group(4)
        if kind == "ext4_error":
            out.append((t, "error"))
        elif kind == "sched_switch" and (s := _SWITCH.search(rest)) is not None:
            if int(s.group(3)) == fsmond:
                out.append((t, "in"))
            elif int(s.group(1)) == fsmond:
                out.append((t, "out-R" if s.group(2).startswith("R") else "out"))
        elif kind == "sched_stat_runtime" and (r := _RUNTIME.search(rest)) is not None:
            if int(r.group(1)) == fsmond:
                out.append((t, "ran:" + r.group(2)))
        elif kind == "sched_wakeup" and (w := _WOKEN.match(rest)) is not None:
            pid = int(w.group(2))
            who = ("fsmond" if pid == fsmond else "bus" if pid == bus
                   else "monitor" if w.group(1) == "dbus-monitor" else "")
            if who:
                out.append((t, "woken:" + who))
    return out


def hops(text: str, fsmond: int, bus: int) -> tuple[list[tuple[float, ...]], int]:
    """Per error, in ms: the HOPS; and how many errors had no switch-in record."""
    events = _events(text, fsmond, bus)
    out, unseen = [], 0
    for i, (t0, kind) in enumerate(events):
        if kind != "error":
            continue
        want = ["woken:fsmond", "in", "woken:bus", "woken:monitor"]
        times = [t0]
        preempted, out_at = 0.0, None
        for t, what in events[i + 1:]:
            if what == "error":
                break
            if what == "out-R" and len(times) == 3:
                out_at = t
            elif what == "in" and out_at is not None:
                preempted += t - out_at
                out_at = None
            if what == "woken:bus" and want[0] == "in":
                # The switch-in record is sometimes missing (seen from an idle
                # CPU): count that wait as running.
                times.append(times[-1])
                want.pop(0)
                unseen += 1
            if what == want[0]:
                times.append(t)
                want.pop(0)
                if not want:
                    break
        if not want:
            a, b, c, d, e = times
            on_cpu, counted = _on_cpu(events[i + 1:], c)
            out.append(tuple(x * 1000 for x in (b - a, c - b, d - c, preempted, e - d, e - a,
                                                on_cpu, on_cpu - counted)))
    return out, unseen


def _on_cpu(events: list[tuple[float, str]], start: float) -> tuple[float, float]:
    """From fsmond's switch-in at `start` until it next sleeps: the seconds
    it was on a CPU, and the run time the scheduler counted in them."""
    on_cpu = counted = 0.0
    since: float | None = start
    for t, what in events:
        if t < start:
            continue
        if what.startswith("ran:") and since is not None:
            counted += int(what[4:]) / 1e9
        elif what == "in" and since is None:
            since = t
        elif what in ("out", "out-R") and since is not None:
            on_cpu += t - since
            since = None
            if what == "out":
                break
    return on_cpu, counted


def report(rows: list[tuple[float, ...]], unseen: int, slowest: int = 5) -> None:
    if not rows:
        print("scheduler trace: no complete error found")
        return
    print(f"scheduler trace, {len(rows)} errors ({unseen} without a record of fsmond's "
          f"switch-in: counted as running), ms: {'median':>8} {'p90':>8} {'max':>8}")
    for k, name in enumerate(HOPS):
        col = sorted(r[k] for r in rows)
        print(f"  {name:36} {statistics.median(col):8.3f} {col[int(0.9 * (len(col) - 1))]:8.3f} "
              f"{col[-1]:8.3f}")
    stolen = [r for r in rows if r[STEAL] > 0.5]
    print(f"  errors that lost more than 0.5 ms on a CPU to steal: {len(stolen)}, "
          f"of them among the {slowest} slowest: "
          f"{sum(r in stolen for r in sorted(rows, key=lambda r: -r[ALL])[:slowest])}")
    print(f"  the {slowest} slowest, hop by hop: " + "; ".join(
        " / ".join(f"{x:.2f}" for x in r) for r in sorted(rows, key=lambda r: -r[ALL])[:slowest]))


def time_in_states(text: str, pid: int, t0: float, t1: float) -> dict[str, float]:
    """Seconds a thread spent running, runnable (woken or preempted, waiting
    for a CPU) and asleep between t0 and t1, from its sched_switch and
    sched_wakeup records. Its state before its first record is the one that
    record ends."""
    out = {"running": 0.0, "runnable": 0.0, "asleep": 0.0}
    state, since = "", t0
    for line in text.splitlines():
        m = _LINE.search(line)
        if m is None or m.group(3) == "ext4_error":
            continue
        t, rest = float(m.group(2)), m.group(4)
        if m.group(3) == "sched_switch" and (s := _SWITCH.search(rest)) is not None:
            if int(s.group(3)) == pid:
                was, now = "runnable", "running"
            elif int(s.group(1)) == pid:
                was, now = "running", "runnable" if s.group(2).startswith("R") else "asleep"
            else:
                continue
        elif m.group(3) == "sched_wakeup" and (w := _WOKEN.match(rest)) is not None \
                and int(w.group(2)) == pid:
            was, now = "asleep", "runnable"
        else:
            continue
        if t > t0:
            out[state or was] += min(t, t1) - max(since, t0)
        if t >= t1:
            return out
        state, since = now, max(t, t0)
    if state:
        out[state] += max(0.0, t1 - since)
    return out
