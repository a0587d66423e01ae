"""Mount storm: N bind mounts, then N unmounts; fsmond beside `findmnt --poll`.

Runs in a private mount namespace of its own (nothing leaks to the host).
Both watchers run during the same storm; for each: CPU seconds (utime+stime
from /proc/<pid>/stat) and catch-up lag (from the storm's end to the last
line it printed about the storm). Prints a table and a summary line.
With --lone, the unmount storm is replaced by one mount and one unmount at
the full table, timed from the call: the latency of an everyday change.
With --without-findmnt, fsmond runs alone: what findmnt's busy CPU costs it.
With --floor, bench/mount_floor.py watches too: the same kernel calls and
nothing else, so its system CPU is the kernel's cost of watching the storm.
With --no-publisher, fsmond publishes nowhere: its sources and engine alone.

    sudo .venv/bin/python bench/mount_storm.py [--mounts 15000] [--backend fanotify|mountinfo]
        [--lone] [--without-findmnt] [--floor] [--broker dbus-daemon|dbus-broker]
        [--no-publisher] [--dbus-library dbus-fast|dbus-fast+ping|sdbus]
        [--slow-subscriber stopped|slow]
        [--system-limits]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.harness import (
    BROKERS,
    FLOOR_COMMAND,
    cpu_seconds,
    one,
    private_bus,
    private_namespace,
    ratio,
    router_pid,
    storm,
    storm_dir,
    thread_cpu_seconds,
    user_system_seconds,
)
from bench.sched_trace import Trace, time_in_states
from bench.slow_subscriber import MODES, SlowSubscriber, peak_rss_mb

# How fsmond is started: as it is; with a Ping to the bus added to its pacing;
# with its D-Bus publisher on python-sdbus (a prototype). Issue 22.
LAUNCHERS = {"dbus-fast": ["-m", "fsmond"],
             "dbus-fast+ping": [str(Path(__file__).parent / "ping_paced.py")],
             "sdbus": [str(Path(__file__).parent / "sdbus_publisher.py")]}

LONE_PAIRS = 3  # findmnt may come out of a storm behind: its first lone change shows it


class Watcher:
    """A subprocess whose output lines are timestamped as they arrive."""

    def __init__(self, name: str, cmd: list[str], marker: str) -> None:
        self.name = name
        self.marker = marker
        self.last = 0.0
        self.received = 0.0
        self.lines = 0
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     errors="replace", text=True)
        self.ready = threading.Event()
        self.errors: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._stderr, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if self.marker in line:
                self.lines += 1
                self.last = time.monotonic()
                if line.startswith("sig\t"):
                    # dbus-monitor --profile stamps each signal as it receives
                    # it: that, not when this thread read the line, is when
                    # the subscriber had it.
                    self.received = float(line.split("\t")[1]) - (time.time() - time.monotonic())

    def _stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.errors.append(line)
            if " ready: " in line:
                self.ready.set()

    def quiet_for(self, seconds: float, limit: float) -> None:
        """Wait until no storm line has arrived for `seconds` (or `limit` passes)."""
        if self.name.startswith("fsmond") and self.last and not self.proc.stdout:
            return
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if self.last and time.monotonic() - self.last > seconds:
                return
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        problems = [e for e in self.errors if " WARNING " in e or " ERROR " in e]
        if problems:  # a benchmark of a daemon that complained is no benchmark
            print(f"{self.name} said:\n" + "".join(problems[-10:]), file=sys.stderr)


def generation(address: str) -> int:
    out = subprocess.run(["busctl", f"--address={address}", "get-property",
                          "org.fsmond.FsMon1", "/org/fsmond/FsMon1",
                          "org.fsmond.FsMon1.Manager", "Generation"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[1])


def settle(watchers: list[Watcher], limit: float = 300) -> None:
    """Wait until no watcher has used CPU for a second: the storm is digested."""
    end = time.monotonic() + limit
    before = [cpu_seconds(w.proc.pid) for w in watchers]
    while time.monotonic() < end:
        time.sleep(1.0)
        now = [cpu_seconds(w.proc.pid) for w in watchers]
        if now == before:
            return
        before = now


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mounts", type=int, default=15000)
    ap.add_argument("--backend", default="fanotify", choices=["fanotify", "mountinfo"])
    ap.add_argument("--profile", metavar="FILE",
                    help="run fsmond under cProfile, writing its stats to FILE")
    ap.add_argument("--sample", metavar="FILE",
                    help="sample fsmond with py-spy: collapsed stacks of the thread "
                    "holding the GIL to FILE, without cProfile's overhead per call")
    ap.add_argument("--sample-phase", choices=["all", "umount"], default="all",
                    help="with --sample: the whole run, or the unmount storm alone")
    ap.add_argument("--lone", action="store_true",
                    help="after the mount storm, once every watcher is idle, time one mount "
                    "and its unmount at the full table (the everyday change) instead of "
                    "the unmount storm; no CPU ratio")
    ap.add_argument("--without-findmnt", dest="findmnt", action="store_false",
                    help="do not run findmnt beside fsmond (it keeps one of the CPUs busy "
                    "through the storm): what fsmond and the bus do with the machine to "
                    "themselves; no CPU ratio")
    ap.add_argument("--floor", action="store_true",
                    help="also run bench/mount_floor.py (fanotify mount events and "
                    "statmount, nothing else) through the storm: the kernel's cost of "
                    "watching it (the floor's system CPU) beside fsmond's")
    ap.add_argument("--broker", choices=BROKERS, default="dbus-daemon",
                    help="the bus fsmond publishes on: the reference dbus-daemon (Debian's "
                    "system bus), or dbus-broker (Fedora's, Arch's)")
    ap.add_argument("--no-dbus", dest="dbus", action="store_false",
                    help="do not publish on a private session bus")
    ap.add_argument("--no-publisher", action="store_true",
                    help="fsmond publishes nowhere (no D-Bus, no printing): the CPU its "
                    "sources and engine take alone, the part no publisher can save; "
                    "no lag (it says nothing)")
    ap.add_argument("--unwatched", action="store_true",
                    help="the storm's file system is not watched: no per-mount events, only "
                    "the mount table and MountsChanged (lag read from Generation over D-Bus)")
    ap.add_argument("--dbus-library", choices=list(LAUNCHERS), default="dbus-fast",
                    help="fsmond's D-Bus publisher as it is (dbus-fast), with a Ping to the "
                    "bus every 256 signals (bench/ping_paced.py), or the prototype on "
                    "python-sdbus that sends the same signals (bench/sdbus_publisher.py)")
    ap.add_argument("--slow-subscriber", choices=MODES,
                    help="a subscriber to every signal of fsmond's that does not read "
                    "through the storms (stopped) or reads 0.1 s a second (slow): "
                    "bench/slow_subscriber.py")
    ap.add_argument("--system-limits", action="store_true",
                    help="dbus-daemon with the system bus's limits (127 MB queued for or "
                    "from a connection) rather than the session bus's 1 GB")
    args = ap.parse_args()
    if args.unwatched and not args.dbus:
        sys.exit("--unwatched measures through D-Bus")
    if args.no_publisher and (args.unwatched or args.lone):
        sys.exit("--no-publisher has no lag to measure: not with --unwatched or --lone")
    args.dbus = args.dbus and not args.no_publisher
    spy = Path(sys.executable).parent / "py-spy"
    if args.sample and not spy.exists():
        sys.exit("--sample needs py-spy: .venv/bin/pip install -e '.[bench]'")
    private_namespace()
    work = storm_dir("fsmond-storm-", args.mounts)
    cfg = work / "fsmond.toml"
    cfg.write_text(f'[daemon]\nmount_backend = "{args.backend}"\nkmsg = false\n'
                   f'udev = false\nfanotify_errors = false\n'
                   f'[[watch]]\npath = "{"/nonexistent" if args.unwatched else work}"\n')
    # With D-Bus on, fsmond publishes there only and its catch-up is the last
    # Event signal a dbus-monitor sees (Generation, when the storm is
    # unwatched and makes no events); without, it prints events.
    fsmond_cmd = [sys.executable, *LAUNCHERS[args.dbus_library], "--config", str(cfg)]
    bus, address = None, ""
    if args.dbus:
        bus, address = private_bus(args.broker, args.system_limits)
        fsmond_cmd += ["--bus", address]
    elif args.no_publisher:
        fsmond_cmd += ["--no-dbus"]
    else:
        fsmond_cmd += ["--no-dbus", "--print-events"]
    if args.profile:  # cProfile writes when fsmond exits cleanly on SIGTERM
        fsmond_cmd[1:1] = ["-m", "cProfile", "-o", args.profile]
    fsmond = Watcher("fsmond " + args.backend, fsmond_cmd, str(work / "m"))
    findmnt = Watcher("findmnt --poll", ["findmnt", "--poll", "-o", "ACTION,TARGET"],
                      str(work / "m")) if args.findmnt else None
    floor = Watcher("floor", list(FLOOR_COMMAND), str(work / "m")) if args.floor else None
    if not fsmond.ready.wait(30):
        sys.exit("fsmond did not start")
    if floor is not None and not floor.ready.wait(30):
        sys.exit("the floor's watcher did not start: " + "".join(floor.errors))
    monitor = None
    if args.dbus and not args.unwatched:
        monitor = Watcher("events", ["stdbuf", "-oL", "dbus-monitor", "--address", address,
                                     "--profile",
                                     "type='signal',interface='org.fsmond.FsMon1.Manager',"
                                     "member='Event'"], "Event")
    slow = SlowSubscriber(address, args.slow_subscriber) \
        if args.dbus and args.slow_subscriber else None
    sampler = None

    def sample() -> subprocess.Popen[bytes]:
        return subprocess.Popen([str(spy), "record",
                                 "--pid", str(fsmond.proc.pid), "--format", "raw",
                                 "--rate", "250", "--nonblocking", "--gil", "-o", args.sample],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if args.sample and args.sample_phase == "all":
        sampler = sample()
    time.sleep(1.0)  # findmnt has read its first table
    watchers = [fsmond, *(w for w in (findmnt, floor) if w is not None)]
    times0 = {w.name: user_system_seconds(w.proc.pid) for w in watchers}
    cpu0 = {name: sum(t) for name, t in times0.items()}
    # The bus is on fsmond's way to its subscribers and shares the CPUs: say its cost.
    bus_pid = router_pid(bus) if bus is not None else 0
    bus_cpu0 = cpu_seconds(bus_pid) if bus is not None else 0.0
    rows = []
    # When fsmond handed each phase's last Event to the bus: its own catch-up,
    # before dbus-daemon passes it on. Its last send before the monitor saw that
    # Event (the send that carried it, or a later one: an upper bound).
    # And how its main thread and dbus-daemon spent that time: running, waiting
    # for a CPU, asleep (fsmond: waiting for the bus to take its writes, or for
    # fanotify).
    pid = fsmond.proc.pid
    sends = Trace(work, {
        "syscalls/sys_enter_sendto": f"common_pid == {pid}",
        "syscalls/sys_enter_sendmsg": f"common_pid == {pid}",
        "syscalls/sys_enter_writev": f"common_pid == {pid}",  # sd-bus's
        "sched/sched_switch": f"prev_pid == {pid} || next_pid == {pid} || "
                              f"prev_pid == {bus_pid} || next_pid == {bus_pid}",
        "sched/sched_wakeup": f"pid == {pid} || pid == {bus_pid}"}) if monitor is not None else None
    spans = []
    lone = work / "m-lone"
    phases = [("mount", True, args.mounts), ("umount", False, args.mounts)]
    if args.lone:  # lag is then from the call, not from the end of a storm
        lone.mkdir()
        phases[1:] = [("lone mount", True, 1), ("lone umount", False, 1)] * LONE_PAIRS
    lone_cpu0: dict[str, float] = {}
    if sends is not None:
        sends.start()
    if slow is not None:
        slow.hold()
    for phase, mount, count in phases:
        if phase.startswith("lone"):
            settle(watchers)
            lone_cpu0 = lone_cpu0 or {w.name: cpu_seconds(w.proc.pid) for w in watchers}
        for w in watchers:
            w.last = 0.0
        gen0 = generation(address) if args.unwatched else 0
        if monitor is not None:
            monitor.last, monitor.lines = 0.0, 0
        if args.sample and phase == args.sample_phase:
            sampler = sample()
            time.sleep(1.0)  # py-spy has attached
        start = time.monotonic()
        took = storm(work, args.mounts, mount) if count > 1 else one(lone, mount)
        end = start + took if count > 1 else start
        if args.unwatched:  # caught up when Generation has counted every change
            while (gen := generation(address)) < gen0 + count:
                time.sleep(0.01)
            fsmond.last, fsmond.lines = time.monotonic(), gen - gen0
        elif monitor is not None:
            monitor.quiet_for(2.0, 300)
            fsmond.last, fsmond.lines = monitor.received, monitor.lines
        for w in watchers:
            if w is fsmond and args.no_publisher:
                settle([fsmond])  # it says nothing: done when its CPU stops
            else:
                w.quiet_for(2.0, 300)
        for w in watchers:
            if w is fsmond and args.no_publisher:
                continue
            rows.append((phase, w.name, w.lines, max(0.0, w.last - end)))
            w.lines = 0
        spans.append((phase, end, fsmond.last))
        print(f"{phase}: {count} in {took:.2f}s", file=sys.stderr)
    times = {w.name: user_system_seconds(w.proc.pid) for w in watchers}
    cpu = {name: sum(t) - cpu0[name] for name, t in times.items()}
    kernel = {name: t[1] - times0[name][1] for name, t in times.items()}
    if sends is not None:
        sends.stop()
        stamps = sorted(sends.times("sys_sendto") + sends.times("sys_sendmsg"))
        print(f"fsmond's writes to the bus (send calls, those that took nothing "
              f"included): {len(stamps)}", file=sys.stderr)
        for phase, end, received in spans:
            sent = [t for t in stamps if t <= received]
            rows.append((phase, "fsmond's last send", 0, max(0.0, sent[-1] - end) if sent else 0.0))
            if sent and sent[-1] > end:
                print(f"{phase}: from the storm's end to fsmond's last send, " + "; ".join(
                    f"{who} " + ", ".join(f"{k} {v:.3f} s" for k, v in
                                          time_in_states(sends.text, p, end, sent[-1]).items())
                    for who, p in (("fsmond's main thread", pid), (args.broker, bus_pid))))
    bus_cpu = cpu_seconds(bus_pid) - bus_cpu0 if bus is not None else 0.0
    peaks = [f"fsmond {peak_rss_mb(fsmond.proc.pid):.0f} MB"] + (
        [f"{args.broker} {peak_rss_mb(bus_pid):.0f} MB"] if bus is not None else [])
    if slow is not None:
        connected, received = slow.release()
        slow.stop()
        print(f"slow subscriber ({args.slow_subscriber}): "
              f"{'still connected' if connected else 'DISCONNECTED'}, received {received} "
              f"of fsmond's signals", file=sys.stderr)
    if fsmond.proc.poll() is not None:
        print(f"fsmond ENDED (exit status {fsmond.proc.returncode})", file=sys.stderr)
    threads = thread_cpu_seconds(fsmond.proc.pid)  # since its start, start-up included
    if sampler is not None:
        sampler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        sampler.wait(30)
    for w in [*watchers, *([monitor] if monitor else [])]:
        w.stop()
    if bus is not None:
        bus.terminate()
    subprocess.run(["umount", "-l", str(work)], check=False)
    print(f"{'phase':12} {'watcher':22} {'lines':>7} {'lag s':>8}")
    for phase, name, lines, lag in rows:
        print(f"{phase:12} {name:22} {lines:7d} {lag:8.3f}")
    for w in watchers:
        print(f"{'cpu s':12} {w.name:22} {cpu[w.name]:7.2f}  (in the kernel {kernel[w.name]:.2f})")
    print(f"fsmond since its start: main thread {threads[0]:.2f} CPU s, "
          f"worker threads (statmount, mountinfo reads) {threads[1]:.2f}"
          + (f"; {args.broker} over the storm {bus_cpu:.2f} CPU s" if bus is not None else "")
          + "; peak memory " + ", ".join(peaks))
    if args.lone:
        changes = len(phases) - 1
        seen = {name: [lag for phase, n, lines, lag in rows
                       if n == name and phase != "mount" and lines]  # unseen: no lag
                for name in cpu}
        per_change = {name: (cpu[name] + cpu0[name] - lone_cpu0[name]) / changes
                      for name in cpu}
        print(f"summary: at {args.mounts} mounts, backend {args.backend}: a lone change seen "
              + ", ".join(f"by {name} after {statistics.median(lags) * 1000:.0f} ms (median of "
                          f"{len(lags)} seen of {changes}, max {max(lags) * 1000:.0f}; "
                          f"{per_change[name]:.3f} CPU s a change)" if lags else
                          f"by {name} never ({changes} changes)"
                          for name, lags in seen.items()))
        return
    by_findmnt = (f"findmnt/fsmond CPU {ratio(cpu[findmnt.name], cpu[fsmond.name])}"
                  if findmnt else "")
    by_floor = (f"fsmond/floor CPU {ratio(cpu[fsmond.name], cpu[floor.name])} (the floor's "
                f"{cpu[floor.name]:.2f} s, {kernel[floor.name]:.2f} in the kernel)"
                if floor else "")
    if args.no_publisher:
        print(f"summary: {args.mounts} mounts, backend {args.backend}, no publisher: "
              + "; ".join(filter(None, (f"fsmond CPU {cpu[fsmond.name]:.2f}s (in the kernel "
                                        f"{kernel[fsmond.name]:.2f})", by_findmnt, by_floor))))
        return
    worst_lag = max(lag for _, name, _, lag in rows if name == fsmond.name)
    sent = [lag for _, name, _, lag in rows if name == "fsmond's last send"]
    ratios = "; ".join(filter(None, (
        by_findmnt or f"fsmond CPU {cpu[fsmond.name]:.2f}s (findmnt not run)", by_floor)))
    print(f"summary: {args.mounts} mounts, backend {args.backend}: {ratios}, fsmond lag "
          f"{worst_lag:.2f}s" + (f" (its last send {max(sent):.2f}s)" if sent else ""))


if __name__ == "__main__":
    main()
