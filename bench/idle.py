"""Idle cost at a large mount table: CPU and wake-ups over a quiet minute, and RSS.

N bind mounts are made in a private namespace, then fsmond (D-Bus on a
private bus, default poll interval) and `findmnt --poll` sit idle beside each
other for --seconds. For each: CPU % of one core, voluntary context switches
per second (wake-ups) and resident memory. Prints a table and a summary.

    sudo .venv/bin/python bench/idle.py [--mounts 15000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.harness import (
    cpu_seconds,
    private_bus,
    private_namespace,
    start_fsmond,
    storm,
    storm_dir,
)


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mounts", type=int, default=15000)
    ap.add_argument("--seconds", type=float, default=60)
    args = ap.parse_args()
    private_namespace()
    work = storm_dir("fsmond-idle-", args.mounts)
    storm(work, args.mounts, True)
    bus, address = private_bus()
    fsmond = start_fsmond(work, f'[daemon]\nudev = false\n[[watch]]\npath = "{work}"\n',
                          "--bus", address)
    findmnt = subprocess.Popen(["findmnt", "--poll"], stdout=subprocess.DEVNULL)
    time.sleep(5)  # both settle after reading the table
    procs = {"fsmond": fsmond.pid, "findmnt --poll": findmnt.pid}
    cpu0 = {n: cpu_seconds(p) for n, p in procs.items()}
    sw0 = {n: proc_status(p, "voluntary_ctxt_switches") for n, p in procs.items()}
    time.sleep(args.seconds)
    print(f"{'watcher':16} {'cpu %':>7} {'wakeups/s':>10} {'rss MB':>8}")
    rows = {}
    for n, p in procs.items():
        cpu = 100 * (cpu_seconds(p) - cpu0[n]) / args.seconds
        wake = (proc_status(p, "voluntary_ctxt_switches") - sw0[n]) / args.seconds
        rss = proc_status(p, "VmRSS") / 1024
        rows[n] = (cpu, wake, rss)
        print(f"{n:16} {cpu:7.3f} {wake:10.1f} {rss:8.1f}")
    for p in (fsmond, findmnt, bus):
        p.terminate()
    subprocess.run(["umount", "-l", str(work)], check=False)
    cpu, wake, rss = rows["fsmond"]
    print(f"summary: {args.mounts} mounts idle {args.seconds:.0f}s: fsmond {cpu:.3f}% CPU, "
          f"{wake:.1f} wakeups/s, {rss:.1f} MB RSS")


if __name__ == "__main__":
    main()
