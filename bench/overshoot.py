"""Threshold overshoot under a steady fill: adaptive sampling against fixed polling.

A writer fills a 2 GiB tmpfs at about --rate MB/s. fsmond (poll_interval 5s)
watches it with lower 50% and upper 20%; when each `threshold reached` event
arrives, statvfs says how far available space had already fallen past the
level, as % of size. The same run is made twice: with the adaptive sampler
(min_poll_interval 100ms, the default) and with sampling fixed at 5 s (what
a `df` in a loop does). Prints a table and a summary.

    sudo .venv/bin/python bench/overshoot.py [--rate 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.harness import private_namespace, work_dir

SIZE = 2 << 30
LEVELS = {"lower": 50.0, "upper": 20.0}


def run(work: Path, rate: float, min_poll: str) -> dict[str, float]:
    mnt = work / f"fill-{min_poll}"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "fill", str(mnt)], check=True)
    cfg = work / f"f-{min_poll}.toml"
    cfg.write_text(f'[daemon]\npoll_interval = "5s"\nmin_poll_interval = "{min_poll}"\n'
                   'udev = false\nkmsg = false\n[defaults]\nlower = "50%"\nupper = "20%"\n'
                   f'[[watch]]\npath = "{mnt}"\n')
    p = subprocess.Popen([sys.executable, "-m", "fsmond", "--config", str(cfg), "--no-dbus",
                          "--print-events"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
    overshoot: dict[str, float] = {}

    def read() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            e = json.loads(line)
            if e["name"] == "threshold" and e["details"]["state"] == "reached":
                st = os.statvfs(mnt)
                pct_now = 100 * st.f_bavail / st.f_blocks
                overshoot[e["details"]["level"]] = LEVELS[e["details"]["level"]] - pct_now

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(2)
    chunk = b"\0" * (1 << 20)
    start = time.monotonic()
    with open(mnt / "data", "wb") as f:
        for i in range(int(SIZE * 0.9) >> 20):  # down to 10% left
            f.write(chunk)
            ahead = start + (i + 1) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    time.sleep(6)
    p.terminate()
    p.wait(10)
    subprocess.run(["umount", "-l", str(mnt)], check=False)
    return overshoot


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=100.0, help="MB/s")
    args = ap.parse_args()
    private_namespace()
    work = work_dir("fsmond-fill-")
    results = {"adaptive (100ms..5s)": run(work, args.rate, "100ms"),
               "fixed 5s": run(work, args.rate, "5s")}
    print(f"{'sampling':22} {'lower: past by % of size':>26} {'upper: past by %':>18}")
    for name, r in results.items():
        lower, upper = r.get("lower", float("nan")), r.get("upper", float("nan"))
        print(f"{name:22} {lower:26.2f} {upper:18.2f}")
    a = results["adaptive (100ms..5s)"]
    f = results["fixed 5s"]
    print(f"summary: fill at {args.rate:.0f} MB/s into 2 GiB: adaptive overshoot max "
          f"{max(a.values()):.2f}% of size, fixed 5s max {max(f.values()):.2f}%")


if __name__ == "__main__":
    main()
