"""What a mount storm costs fsmond's subscribers, beside what it costs an app
that follows the mount table itself (issue 22).

In a private mount namespace: a watched tmpfs, then N bind mounts of it and
N unmounts, for each N given, with three watchers side by side: fsmond (on a
private bus, given to the apps as the system bus); a GLib app that follows
fsmond's file-system objects as GNOME apps do (GDBusObjectManagerClient on
the ObjectManager's path, default flags, a handler on every signal:
bench/glib_objects.py); and a GLib app that follows the mount table
(GUnixMountMonitor, g_unix_mounts_get on each change: bench/glib_mounts.py).
Both apps run under the distribution's python3 (python3-gi). CPU seconds
(utime+stime) of each over both storms, from the first mount until all
three are idle again.

    sudo .venv/bin/python bench/subscriber_storm.py [--mounts 10000 15000]
        [--dbus-library dbus-fast|sdbus]

With --dbus-library sdbus, fsmond's D-Bus publisher is the python-sdbus
prototype (bench/sdbus_publisher.py), which sends the same signals.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.harness import (
    cpu_seconds,
    private_bus,
    private_namespace,
    ratio,
    start_fsmond,
    storm,
    storm_dir,
)
from bench.notify_storm import settle

HERE = Path(__file__).parent


class App:
    """A GLib app under /usr/bin/python3 that prints `ready` and, on SIGUSR1,
    a `report` line."""

    def __init__(self, script: str, address: str) -> None:
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": address}
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(["/usr/bin/python3", "-u", str(HERE / script)],
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.line("ready")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def line(self, start: str) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(start):
                return line.rstrip("\n")
        sys.exit(f"{self.proc.args} ended")

    def report(self) -> str:
        self.proc.send_signal(signal.SIGUSR1)
        return self.line("report ")[7:]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def one_storm(n: int, backend: str, library: str = "dbus-fast") -> dict[str, float]:
    work = storm_dir("fsmond-subscriber-storm-", n)
    bus, address = private_bus()
    fsmond = start_fsmond(work, f'[daemon]\nmount_backend = "{backend}"\nkmsg = false\n'
                          f'udev = false\nfanotify_errors = false\n'
                          f'[[watch]]\npath = "{work}"\n', "--bus", address,
                          launcher=("-m", "fsmond") if library == "dbus-fast"
                          else (str(HERE / "sdbus_publisher.py"),))
    objects = mounts = None
    try:
        objects = App("glib_objects.py", address)
        mounts = App("glib_mounts.py", address)
        pids = {"fsmond": fsmond.pid, "objects": objects.pid, "mounts": mounts.pid}
        settle(list(pids.values()))
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        took = storm(work, n, True)
        print(f"mount: {n} in {took:.2f}s", file=sys.stderr)
        settle(list(pids.values()), 900)
        took = storm(work, n, False)
        print(f"umount: {n} in {took:.2f}s", file=sys.stderr)
        settle(list(pids.values()), 900)
        cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
        got = json.loads(objects.report())
        print(f"ObjectManager app received: {got['members']}, at most "
              f"{got['most_mount_points']} MountPoints", file=sys.stderr)
        print(f"mount-table app: {mounts.report()} (changes, mounts last read)",
              file=sys.stderr)
    finally:
        for app in (objects, mounts):
            if app is not None:
                app.stop()
        fsmond.terminate()
        fsmond.wait(10)
        bus.terminate()
        subprocess.run(["umount", "-l", str(work)], check=False)
    return cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mounts", type=int, nargs="+", default=[10000, 15000])
    ap.add_argument("--backend", default="fanotify", choices=["fanotify", "mountinfo"])
    ap.add_argument("--dbus-library", choices=["dbus-fast", "sdbus"], default="dbus-fast")
    args = ap.parse_args()
    private_namespace()
    for n in args.mounts:
        cpu = one_storm(n, args.backend, args.dbus_library)
        print(f"{n:6} mounts: cpu s  fsmond {cpu['fsmond']:6.2f}  ObjectManager app "
              f"{cpu['objects']:6.2f}  GUnixMountMonitor app {cpu['mounts']:6.2f}  "
              f"({ratio(cpu['mounts'], cpu['objects'])} the ObjectManager app's)", flush=True)


if __name__ == "__main__":
    main()
