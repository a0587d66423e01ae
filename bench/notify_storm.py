"""fsmond-notify in a mount storm: its CPU beside fsmond's own.

In a private mount namespace: a watched tmpfs, filled to its lower level so
the agent has a notification open, then N bind mounts of it and N unmounts
(its `MountPoints` grows to N+1 entries and back). fsmond publishes on a
private bus; fsmond-notify follows it and talks to a spec-faithful
notification server on a private session bus. CPU seconds (utime+stime) of
each over the two storms, from the first mount until both are idle again,
and the agent's notifications over the storm (there must be none).

    sudo .venv/bin/python bench/notify_storm.py [--mounts 15000] [--backend fanotify|mountinfo]
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
    ratio,
    start_fsmond,
    storm,
    storm_dir,
)
from tests.notify.servers import SpecServer


def settle(pids: list[int], limit: float = 300) -> None:
    """Until none of them has used CPU for a second: the storm is digested."""
    end = time.monotonic() + limit
    before = [cpu_seconds(p) for p in pids]
    while time.monotonic() < end:
        time.sleep(1.0)
        now = [cpu_seconds(p) for p in pids]
        if now == before:
            return
        before = now
    sys.exit("still busy after the storm")


def wait_log(log: Path, text: str, proc: subprocess.Popen[bytes], what: str) -> None:
    while text not in log.read_text():
        if proc.poll() is not None:
            sys.exit(f"{what} ended:\n" + log.read_text())
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mounts", type=int, default=15000)
    ap.add_argument("--backend", default="fanotify", choices=["fanotify", "mountinfo"])
    args = ap.parse_args()
    private_namespace()
    work = storm_dir("fsmond-notify-storm-", args.mounts)
    bus, address = private_bus()
    session, session_address = private_bus()
    server = SpecServer(session_address, ["actions", "body"])
    fsmond = start_fsmond(work, f'[daemon]\nmount_backend = "{args.backend}"\nkmsg = false\n'
                          f'udev = false\nfanotify_errors = false\n'
                          f'[defaults]\nlower = "50%"\nupper = "5%"\n'
                          f'[[watch]]\npath = "{work}"\n', "--bus", address)
    log = work / "notify.log"
    with open(log, "w") as err:
        agent = subprocess.Popen([sys.executable, "-m", "fsmond.notify", "--bus", address,
                                  "--session-bus", session_address], stderr=err)
    try:
        wait_log(log, "following fsmond", agent, "fsmond-notify")
        with open(work / "fill", "wb") as f:  # 64 MiB tmpfs: 40 MiB leaves 37%, lower
            f.write(b"x" * (40 << 20))
        wait_log(log, "notified #", agent, "fsmond-notify")
        shown = log.read_text().count("notified #")
        settle([fsmond.pid, agent.pid])
        cpu0 = {p: cpu_seconds(p) for p in (fsmond.pid, agent.pid)}
        took = storm(work, args.mounts, True)
        print(f"mount: {args.mounts} in {took:.2f}s", file=sys.stderr)
        settle([fsmond.pid, agent.pid])
        took = storm(work, args.mounts, False)
        print(f"umount: {args.mounts} in {took:.2f}s", file=sys.stderr)
        settle([fsmond.pid, agent.pid])
        cpu = {p: cpu_seconds(p) - cpu0[p] for p in cpu0}
        during = log.read_text().count("notified #") - shown
    finally:
        agent.terminate()
        agent.wait(10)
        fsmond.terminate()
        fsmond.wait(10)
        server.close()
        bus.terminate()
        session.terminate()
        subprocess.run(["umount", "-l", str(work)], check=False)
    print(f"cpu s  fsmond {args.backend:10} {cpu[fsmond.pid]:6.2f}")
    print(f"cpu s  fsmond-notify     {cpu[agent.pid]:6.2f}")
    print(f"summary: {args.mounts} bind mounts and unmounts of a watched file system, "
          f"backend {args.backend}: fsmond {cpu[fsmond.pid]:.2f} CPU s, fsmond-notify "
          f"{cpu[agent.pid]:.2f} ({ratio(cpu[fsmond.pid], cpu[agent.pid])} less); "
          f"notifications during the storm: {during}")


if __name__ == "__main__":
    main()
