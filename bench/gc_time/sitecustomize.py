"""Time spent in Python's cyclic GC, per process, for any Python run with
this directory on PYTHONPATH (the bench and the fsmond it starts alike):

    mkdir -p /tmp/gc
    GC_TIME_DIR=/tmp/gc PYTHONPATH=$PWD/bench/gc_time .venv/bin/python bench/mount_storm.py

Each process that exits cleanly writes one line to GC_TIME_DIR/<pid>: its
command line, the collections and the seconds they took (all, and the
oldest generation's). fsmond exits cleanly on SIGTERM, as the benches stop it.
"""

import atexit
import gc
import os
import sys
import time

_DIR = os.environ.get("GC_TIME_DIR")
_started = 0.0
_totals = [0, 0.0, 0, 0.0]  # collections, seconds; of them the oldest generation's


def _on_gc(phase: str, info: dict[str, int]) -> None:
    global _started
    if phase == "start":
        _started = time.perf_counter()
        return
    took = time.perf_counter() - _started
    _totals[0] += 1
    _totals[1] += took
    if info["generation"] == 2:
        _totals[2] += 1
        _totals[3] += took


def _write() -> None:
    n, seconds, full, full_seconds = _totals
    with open(os.path.join(_DIR or ".", str(os.getpid())), "w") as f:
        f.write(f"{' '.join(sys.argv)}: {n} collections, {seconds:.3f} s; "
                f"full {full}, {full_seconds:.3f} s\n")


if _DIR:
    gc.callbacks.append(_on_gc)
    atexit.register(_write)
