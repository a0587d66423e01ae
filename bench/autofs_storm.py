"""The original case: automount starting with a large direct map, fsmond beside findmnt.

In a private mount namespace, Debian's automount (package autofs, installed
here when missing) starts with an N-entry direct map: N autofs trigger
mounts appear at once. fsmond (D-Bus on a private bus, the default
configuration: every file system) and `findmnt --poll` watch. Measured: CPU
seconds of each during start-up (until fsmond's Generation has counted every
trigger) and over the quiet --after seconds that follow, and whether any
automount was triggered (it must never be). With --floor, bench/mount_floor.py
(fanotify mount events and statmount, nothing else) watches too.

    sudo .venv/bin/python bench/autofs_storm.py [--entries 15000] [--after 60] [--floor]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.harness import (
    FLOOR_COMMAND,
    cpu_seconds,
    private_bus,
    private_namespace,
    ratio,
    start_fsmond,
    work_dir,
)
from bench.mount_storm import generation


def ensure_automount() -> None:
    if shutil.which("automount"):
        return
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    subprocess.run(["apt-get", "install", "-y", "-qq", "autofs"], check=True, env=env)
    # Debian starts the host's automount on install; the bench runs its own.
    subprocess.run(["systemctl", "disable", "--now", "autofs"], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=15000)
    ap.add_argument("--after", type=float, default=60)
    ap.add_argument("--floor", action="store_true",
                    help="also run bench/mount_floor.py: the kernel's cost of watching")
    args = ap.parse_args()
    ensure_automount()
    private_namespace()
    work = work_dir("fsmond-autofs-")
    (work / "auto.direct").write_text("".join(
        f"{work}/d/k{i} -fstype=tmpfs,size=1m :tmpfs\n" for i in range(args.entries)))
    (work / "auto.master").write_text(f"/- {work}/auto.direct\n")
    bus, address = private_bus()
    fsmond = start_fsmond(work, "[daemon]\nudev = false\n", "--bus", address)
    findmnt = subprocess.Popen(["findmnt", "--poll"], stdout=subprocess.DEVNULL)
    watchers = [fsmond, findmnt]
    procs = {"fsmond": fsmond.pid, "findmnt --poll": findmnt.pid}
    if args.floor:
        floor = subprocess.Popen(FLOOR_COMMAND, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        assert floor.stderr is not None
        floor.stderr.readline()  # it says it is ready
        watchers.append(floor)
        procs["floor"] = floor.pid
    time.sleep(2)
    gen0 = generation(address)
    cpu0 = {n: cpu_seconds(p) for n, p in procs.items()}
    t0 = time.monotonic()
    automount = subprocess.Popen(["automount", "-f", "-t", "0", str(work / "auto.master")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while generation(address) < gen0 + args.entries:
        time.sleep(0.05)
    caught_up = time.monotonic() - t0
    time.sleep(2)  # let findmnt finish too, as far as it will
    cpu1 = {n: cpu_seconds(p) for n, p in procs.items()}
    time.sleep(args.after)
    cpu2 = {n: cpu_seconds(p) for n, p in procs.items()}
    triggered = sum(1 for line in Path("/proc/self/mountinfo").read_text().splitlines()
                    if f" {work}/d/" in line and " - autofs " not in line)
    automount.terminate()
    automount.wait(60)
    for p in (*watchers, bus):
        p.terminate()
    startup = {n: cpu1[n] - cpu0[n] for n in procs}
    print(f"{'watcher':16} {'start-up cpu s':>15} {'after cpu %':>12}")
    for n in procs:
        print(f"{n:16} {startup[n]:15.2f} {100 * (cpu2[n] - cpu1[n]) / args.after:12.3f}")
    ratios = f"findmnt/fsmond start-up CPU {ratio(startup['findmnt --poll'], startup['fsmond'])}"
    if args.floor:
        ratios += f", fsmond/floor {ratio(startup['fsmond'], startup['floor'])}"
    print(f"summary: automount with {args.entries} direct entries: fsmond caught up in "
          f"{caught_up:.2f}s, {ratios}, automounts triggered: {triggered}")


if __name__ == "__main__":
    main()
