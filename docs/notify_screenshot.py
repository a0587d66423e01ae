"""Makes docs/fsmond-notify.png: what fsmond-notify shows, for real.

In a private mount namespace: a tmpfs at /home/alice/Videos filled at a
steady rate past its levels, and an ext4 on a loop device at /srv/backup
forced read-only by an error (`trigger_fs_error`); the real fsmond on a
private bus, the real agent, dunst drawing on Xvfb, and imagemagick's
`import -window root` once both notifications are up.

    sudo .venv/bin/python docs/notify_screenshot.py [--out docs/fsmond-notify.png]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.harness import private_namespace, work_dir
from tests.notify.servers import NotificationsMonitor, agent, dunst, summary, xvfb
from tests.publishers.buses import dbus_daemon
from tests.running import fsmond, loop_ext4, run, tmpfs, write_config

CONFIG = """[daemon]
poll_interval = "200ms"
min_poll_interval = "50ms"
udev = false

[defaults]
lower = "25%"
upper = "10%"

[[watch]]
path = "/home/alice/Videos"

[[watch]]
path = "/srv/backup"
"""


def fill_steadily(path: Path, stop: threading.Event) -> None:
    """About 1 MiB/s, so fsmond has a fill rate (and a time to full) to tell."""
    with open(path / "recording.mkv", "wb") as f:
        while not stop.is_set():
            f.write(b"x" * (512 << 10))
            f.flush()
            time.sleep(0.5)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).parent / "fsmond-notify.png"))
    args = ap.parse_args()
    private_namespace()
    work = work_dir("fsmond-shot-")
    run("mount", "-t", "tmpfs", "shot", "/home")
    run("mount", "-t", "tmpfs", "shot", "/srv")
    (Path("/home/alice/Videos")).mkdir(parents=True)
    cfg = write_config(work / "fsmond.toml", CONFIG)
    stop = threading.Event()
    with tmpfs(Path("/home/alice/Videos"), "size=1g") as videos, \
            loop_ext4(work / "backup.img", Path("/srv/backup"), "errors=remount-ro",
                      size_mb=64) as (_backup, loop), \
            dbus_daemon() as system, xvfb("760x250x24") as display, \
            dbus_daemon() as session, dunst(session, display):
        run("fallocate", "-l", "890M", str(videos / "holiday.mkv"))
        mon = NotificationsMonitor(session)
        try:
            with fsmond(cfg, bus=system), \
                    agent(system, session, Path("/home/alice")) as a:
                a.wait_log("following fsmond")
                writer = threading.Thread(target=fill_steadily, args=(videos, stop))
                writer.start()
                try:
                    mon.wait_for(lambda c: c.member == "Notify" and "Very low" in summary(c),
                                 timeout=60)
                finally:
                    stop.set()
                    writer.join()
                Path(f"/sys/fs/ext4/{loop}/trigger_fs_error").write_text("x")
                mon.wait_for(lambda c: c.member == "Notify" and "read-only" in summary(c))
                time.sleep(1)  # dunst draws on its next frame
                subprocess.run(["import", "-display", display, "-window", "root", args.out],
                               check=True)
                for c in mon.notifies():
                    print(summary(c), "|", c.body[4].replace("\n", " / "))
        finally:
            mon.close()
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
