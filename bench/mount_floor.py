"""The floor under a mount watcher: fanotify mount events and a statmount of
each attached mount, as fsmond asks the kernel and paced as fsmond paces its
reads in a storm, and a line per event; nothing else (no engine, no events,
no bus). `mount_storm.py --floor` runs it beside fsmond: its system CPU is
what the kernel's side of watching costs, its user CPU the least Python
around those calls.

    .venv/bin/python bench/mount_floor.py    (as mount_storm.py starts it)
"""

from __future__ import annotations

import select
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from fsmond.sources import mountapi
from fsmond.sources.fanotify_mounts import GATHER, STORM_GAP


def main() -> None:
    fd = mountapi.open_mount_fanotify()
    print("mount_floor ready: ", file=sys.stderr, flush=True)  # as fsmond says it
    points: dict[int, str] = {}  # unique id -> mount point, for the detach's line
    last = 0.0
    while True:
        select.select([fd], [], [])
        if time.monotonic() - last < STORM_GAP:
            # Read a storm in batches, as fsmond does: woken for each event
            # (30,000 reads) this floor took 0.79 - 1.01 CPU s a storm, not 0.3.
            time.sleep(GATHER)
        last = time.monotonic()
        lines = []
        for kind, uid in mountapi.read_mount_events(fd):
            if kind == "attach" and (found := mountapi.statmount(uid)) is not None:
                points[uid] = found.entry.mount_point
                lines.append(f"mounted {found.entry.mount_point}\n")
            elif kind == "detach" and uid in points:
                lines.append(f"unmounted {points.pop(uid)}\n")
        sys.stdout.write("".join(lines))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
