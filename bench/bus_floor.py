"""The bus's own cost: dbus-daemon passing a storm's Event signals, and nothing else.

After a storm of unmounts, fsmond waits for the bus (mount_storm.py shows its
main thread asleep while dbus-daemon runs). This measures that floor: a
sender that does nothing but write signals already marshalled, as fsmond
marshals them (unmounted events, the Manager's Event and the object's), the
way fsmond writes them (64 events a write, at most 32 writes queued), with
a dbus-monitor subscribed to the Manager's Event as in mount_storm.py. Beside
it, in the same run, the Manager's Event alone and pairs with an empty a{sv},
to show what the cost follows, and the same unmounts' MountsChanged signals
(2,048 changes each, as fsmond splits them), which come on top.
Alternated, --runs times each. With --no-monitor nobody subscribes: what
dbus-daemon takes to route the signals to no one. With --broker dbus-broker
the bus is dbus-broker instead (Fedora's and Arch's; needs root, for its
journal stand-in in a private mount namespace).

    .venv/bin/python bench/bus_floor.py [--events 15000] [--runs 3] [--no-monitor]
        [--broker dbus-daemon|dbus-broker]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from dbus_fast import Message
from dbus_fast.aio import MessageBus

from bench.harness import (
    BROKERS,
    cpu_seconds,
    private_bus,
    private_namespace,
    ratio,
    router_pid,
)
from fsmond.engine.mounts import REMOVED, MountChange
from fsmond.events import Event, MountEntry
from fsmond.publishers import dbus_wire as wire
from fsmond.publishers.dbus import CHANGES_PER_SIGNAL, EVENT_BATCH, HIGH_WATER
from fsmond.publishers.dbus_convert import mounts_changed_bodies
from fsmond.publishers.dbus_entries import change_entries, event_entries
from fsmond.publishers.dbus_transport import Marshalled, backlog, make_nonblocking

ROOT, FS = "/org/fsmond/FsMon1", "/org/fsmond/FsMon1/fs/0_50"
KINDS = {"pairs": "Event pairs, as fsmond sends them",
         "manager": "the Manager's Event alone",
         "empty": "pairs with an empty a{sv}",
         "changes": "MountsChanged, 2,048 removed a signal"}


def removed(i: int) -> MountEntry:
    return MountEntry(1000 + i, 33, (0, 50), "/", f"/tmp/fsmond-storm-x1y2z3ab/m{i}",
                      "rw,relatime", "tmpfs", "bench", "rw,size=4096k")


def mounts_changed(events: int, serial: int) -> list[bytes]:
    """The unmount half's MountsChanged signals, as fsmond marshals them."""
    changes = [(i + 1, change_entries(MountChange(i + 1, REMOVED, removed(i)), FS))
               for i in range(events)]
    return [wire.signal(serial + n, ROOT, "org.fsmond.FsMon1.Manager", "MountsChanged",
                        "taa{sv}", wire.body("taa{sv}", body))
            for n, body in enumerate(mounts_changed_bodies(changes, CHANGES_PER_SIGNAL))]


def messages(kind: str, i: int, serial: int) -> bytes:
    e = Event(seq=i, time=time.time(), cls="info", name="unmounted", fs=FS,
              mount_point=f"/tmp/fsmond-storm-x1y2z3ab/m{i}", fstype="tmpfs", source="bench",
              device="0:50", details={"mount_id": 1000 + i})
    manager, obj = wire.event_bodies(FS, "info", "unmounted",
                                     b"" if kind == "empty" else event_entries(e))
    out = wire.signal(serial, ROOT, "org.fsmond.FsMon1.Manager", "Event", "ossa{sv}", manager)
    if kind != "manager":
        out += wire.signal(serial + 1, FS, "org.fsmond.FsMon1.FileSystem", "Event", "ssa{sv}",
                           obj)
    return out


async def one_run(kind: str, events: int, subscribed: bool, broker: str
                  ) -> tuple[float, float, float, int]:
    """The bus's CPU s, dbus-monitor's, the wall time, and bytes an event."""
    bus_proc, address = private_bus(broker)
    router = router_pid(bus_proc)
    # Without a subscriber a process that does nothing stands in for the
    # monitor, so that the rest of the run stays the same.
    monitor = subprocess.Popen(
        ["dbus-monitor", "--address", address, "--profile",
         "type='signal',interface='org.fsmond.FsMon1.Manager',member='Event'"]
        if subscribed else ["sleep", "infinity"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bus = await MessageBus(bus_address=address).connect()
    make_nonblocking(bus)
    try:
        await asyncio.sleep(0.5)  # the monitor is subscribed
        batches = mounts_changed(events, 100) if kind == "changes" else [
            b"".join(messages(kind, i, 2 * i + 100)
                     for i in range(start, min(events, start + EVENT_BATCH)))
            for start in range(0, events, EVENT_BATCH)]
        bus_cpu, monitor_cpu, t0 = cpu_seconds(router), cpu_seconds(monitor.pid), \
            time.monotonic()
        for data in batches:
            bus.send(Marshalled(data))  # type: ignore[arg-type]
            while backlog(bus) > HIGH_WATER:
                await asyncio.sleep(0.005)
        # Passed on when a call after them is answered (the bus keeps order).
        await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                               interface="org.freedesktop.DBus", member="GetId"))
        wall = time.monotonic() - t0
        await asyncio.sleep(0.3)  # the monitor has read the rest
        size = sum(map(len, batches)) // events if kind == "changes" \
            else len(messages(kind, 0, 1))
        return (cpu_seconds(router) - bus_cpu, cpu_seconds(monitor.pid) - monitor_cpu,
                wall, size)
    finally:
        bus.disconnect()
        monitor.terminate()
        bus_proc.terminate()
        monitor.wait()
        bus_proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=15000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-monitor", dest="monitor", action="store_false",
                    help="nobody subscribes to the signals")
    ap.add_argument("--broker", choices=BROKERS, default="dbus-daemon")
    args = ap.parse_args()
    if args.broker == "dbus-broker":
        private_namespace()
    results: dict[str, list[tuple[float, float, float, int]]] = {k: [] for k in KINDS}
    for _ in range(args.runs):
        for kind in KINDS:
            results[kind].append(asyncio.run(one_run(kind, args.events, args.monitor, args.broker)))
    print(f"{'signals':36} {'bytes/event':>11} {args.broker + ' CPU s':>18} {'monitor CPU s':>14} "
          f"{'wall s':>7}  (medians of {args.runs})")
    med = {}
    for kind, name in KINDS.items():
        rows = results[kind]
        med[kind] = [statistics.median(r[k] for r in rows) for k in range(3)]
        print(f"{name:36} {rows[0][3]:11d} {med[kind][0]:18.2f} {med[kind][1]:14.2f} "
              f"{med[kind][2]:7.2f}")
    print(f"summary: {args.events} events: {args.broker} takes {med['pairs'][0]:.2f} CPU s "
          f"({med['pairs'][0] / args.events * 1e6:.0f} us an event) to pass fsmond's Event "
          f"pairs, {ratio(med['pairs'][0], med['manager'][0])} the Manager's alone, "
          f"{ratio(med['pairs'][0], med['empty'][0])} pairs with an empty a{{sv}}")


if __name__ == "__main__":
    main()
