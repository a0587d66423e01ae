"""An unpaced burst: N signals sent back to back, with nothing waiting for the
bus, while a subscriber to all of them reads slowly (issue 22, item 4).
Does each library's connection survive, and what does it cost?

Each way of sending runs in a process of its own (its peak memory is its
own), owns org.fsmond.FsMon1 on a private dbus-daemon, and sends fsmond's
Event pairs (a storm's `unmounted`, the Manager's and the object's, the
same values fsmond sends) as fast as the library takes them:

- `dbus-fast`: `MessageBus.send(Message.new_signal(...))` for each, as a
  dbus-fast user would; a full socket's EAGAIN is fatal to it (dbus-next
  #153);
- `dbus-fast+fsmond`: fsmond's transport (dbus_transport: EAGAIN means
  wait; signals marshalled by dbus_wire, 64 events a write) without its
  pacing;
- `sdbus`: python-sdbus, `new_signal_message` + `append_data` + `send()`
  for each (sd-bus queues what the socket does not take, up to its own
  limit of queued messages).

After the burst each waits for a Ping to the bus to be answered (the bus
has read everything before it). The subscriber (bench/slow_subscriber.py,
a `gdbus monitor` of fsmond's name) is stopped through the burst
(`--subscriber stopped`) or runs 0.1 s a second (`slow`), and is let go
at the end, or after `--hold` seconds: a bus that stops reading from a
sender until a subscriber reads (dbus-daemon past its limits) would
otherwise wait for ever. Root is not needed.

    .venv/bin/python bench/unpaced_burst.py [--signals 30000 100000] [--runs 3]
        [--subscriber stopped|slow] [--system-limits] [--hold 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.bus_floor import FS, ROOT
from bench.harness import private_bus
from bench.sdbus_publisher import event_fields
from bench.slow_subscriber import MODES, SlowSubscriber, peak_rss_mb
from fsmond.events import Event
from fsmond.publishers import dbus_wire as wire
from fsmond.publishers.dbus import EVENT_BATCH
from fsmond.publishers.dbus_convert import variants
from fsmond.publishers.dbus_entries import event_entries

WAYS = ("dbus-fast", "dbus-fast+fsmond", "sdbus")
NAME = "org.fsmond.FsMon1"
MANAGER, FILESYSTEM = "org.fsmond.FsMon1.Manager", "org.fsmond.FsMon1.FileSystem"


def event(i: int) -> Event:
    return Event(seq=i, time=time.time(), cls="info", name="unmounted", fs=FS,
                 mount_point=f"/tmp/fsmond-storm-x1y2z3ab/m{i}", fstype="tmpfs",
                 source="bench", device="0:50", details={"mount_id": 1000 + i})


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def with_dbus_fast(address: str, pairs: int, fsmond_transport: bool, ready: Any
                         ) -> dict[str, Any]:
    from dbus_fast import Message
    from dbus_fast.aio import MessageBus

    from fsmond.publishers.dbus_transport import make_nonblocking, send_bytes

    bus = await MessageBus(bus_address=address).connect()
    await bus.request_name(NAME)
    if fsmond_transport:
        make_nonblocking(bus)
    ready()
    events = [event(i) for i in range(pairs)]
    t0, c0 = time.monotonic(), cpu()
    error = ""
    try:
        if fsmond_transport:
            for start in range(0, pairs, EVENT_BATCH):
                data = b"".join(
                    wire.signal(bus.next_serial(), path, iface, "Event", sig, body)
                    for e in events[start:start + EVENT_BATCH]
                    for path, iface, sig, body in zip(
                        (ROOT, FS), (MANAGER, FILESYSTEM), ("ossa{sv}", "ssa{sv}"),
                        wire.event_bodies(e.fs, e.cls, e.name, event_entries(e)),
                        strict=True))
                send_bytes(bus, data)
        else:
            for e in events:
                f = variants(event_fields(e))
                bus.send(Message.new_signal(ROOT, MANAGER, "Event", "ossa{sv}",
                                            [e.fs, e.cls, e.name, f]))
                bus.send(Message.new_signal(FS, FILESYSTEM, "Event", "ssa{sv}",
                                            [e.cls, e.name, f]))
        sent = time.monotonic()
        await asyncio.wait_for(bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus.Peer", member="Ping")), 600)
    except Exception as e:  # what killed the connection is the result here
        error, sent = repr(e), time.monotonic()
    if not error and not bus.connected:
        error = "disconnected"
    bus.disconnect()
    return {"sent s": sent - t0, "all read s": time.monotonic() - t0, "cpu s": cpu() - c0,
            "error": error}


async def with_sdbus(address: str, pairs: int, ready: Any) -> dict[str, Any]:
    import sdbus

    from bench.sdbus_publisher import open_bus, ping

    bus = open_bus(address)
    await ping(bus)
    await bus.request_name_async(NAME, 0)
    ready()
    events = [event(i) for i in range(pairs)]
    t0, c0 = time.monotonic(), cpu()
    error = ""
    try:
        for e in events:
            f = event_fields(e)
            m = bus.new_signal_message(ROOT, MANAGER, "Event")
            m.append_data("ossa{sv}", e.fs, e.cls, e.name, f)
            m.send()
            m = bus.new_signal_message(FS, FILESYSTEM, "Event")
            m.append_data("ssa{sv}", e.cls, e.name, f)
            m.send()
        sent = time.monotonic()
        bus.process()  # sd-bus writes the rest only when driven
        await asyncio.wait_for(ping(bus), 600)
    except (OSError, sdbus.SdBusBaseError, TimeoutError) as e:
        error, sent = repr(e), time.monotonic()
    bus.close()
    return {"sent s": sent - t0, "all read s": time.monotonic() - t0, "cpu s": cpu() - c0,
            "error": error}


def one(way: str, address: str, pairs: int) -> None:
    """In the child: send, then print one JSON line of results."""
    rss0 = peak_rss_mb(os.getpid())

    def ready() -> None:
        print("ready", flush=True)
        sys.stdin.readline()  # the subscriber holds now

    run = with_sdbus(address, pairs, ready) if way == "sdbus" else \
        with_dbus_fast(address, pairs, way == "dbus-fast+fsmond", ready)
    out = asyncio.run(run)
    out["peak MB over start"] = peak_rss_mb(os.getpid()) - rss0
    print(json.dumps(out), flush=True)


def measure(way: str, signals: int, mode: str, system_limits: bool, hold: float
            ) -> dict[str, Any]:
    bus, address = private_bus(system_limits=system_limits)
    child = subprocess.Popen([sys.executable, __file__, "--one", way, "--address", address,
                              "--signals", str(signals)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    subscriber = None
    try:
        if child.stdout.readline().strip() != "ready":
            sys.exit(f"{way}: the sender did not start")
        subscriber = SlowSubscriber(address, mode)
        subscriber.hold()
        timer = threading.Timer(hold, subscriber.resume)
        bus_cpu0 = _cpu_of(bus.pid)
        child.stdin.write("go\n")
        child.stdin.flush()
        timer.start()
        out: dict[str, Any] = json.loads(child.stdout.readline())
        timer.cancel()
        out["bus cpu s"] = _cpu_of(bus.pid) - bus_cpu0
        out["bus peak MB"] = peak_rss_mb(bus.pid)
        if out["all read s"] > hold:
            out["note"] = f"all read only once the subscriber read again ({hold:.0f} s)"
        connected, received = subscriber.release(30)
        out["subscriber"] = f"{'connected' if connected else 'DISCONNECTED'}, got {received}"
        return out
    finally:
        if subscriber is not None:
            subscriber.stop()
        child.wait(60)
        bus.terminate()
        bus.wait()


def _cpu_of(pid: int) -> float:
    from bench.harness import cpu_seconds
    return cpu_seconds(pid)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--signals", type=int, nargs="+", default=[30000, 100000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    ap.add_argument("--subscriber", choices=MODES, default="stopped")
    ap.add_argument("--system-limits", action="store_true",
                    help="dbus-daemon with the system bus's limits (127 MB)")
    ap.add_argument("--hold", type=float, default=30.0,
                    help="seconds the subscriber is held at most")
    ap.add_argument("--one", choices=WAYS, help=argparse.SUPPRESS)
    ap.add_argument("--address", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(args.one, args.address, args.signals[0] // 2)
        return
    for signals in args.signals:
        for run in range(args.runs):
            for way in args.ways:  # alternated within each run
                r = measure(way, signals, args.subscriber, args.system_limits, args.hold)
                error = r.pop("error")
                print(f"{signals} signals, run {run + 1}, {way:17}: "
                      + (f"DIED ({error})" if error else "SURVIVED") + ", "
                      + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                  for k, v in r.items()), flush=True)


if __name__ == "__main__":
    main()
