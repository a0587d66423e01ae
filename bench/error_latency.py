"""Event latency: a real ext4 error to the D-Bus `Event` signal at a subscriber.

A loop-mounted ext4 (errors=continue) in a private mount namespace; each
round writes to /sys/fs/ext4/<loop>/trigger_fs_error and times how long
until (a) fsmond's `Event` signal reaches a subscriber on another D-Bus
connection and (b) the same error's line reaches `dmesg --follow`, the
real alternative a script would use. Prints p50/p99 of both and a summary.

    sudo .venv/bin/python bench/error_latency.py [--errors 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from bench.harness import private_bus, private_namespace, start_fsmond


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class DmesgFollower:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(["stdbuf", "-oL", "dmesg", "--follow", "--notime"],
                                     stdout=subprocess.PIPE, text=True)
        self.seen: dict[str, float] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "bench-" in line:
                tag = line.split("bench-", 1)[1].split()[0]
                self.seen.setdefault(tag, time.perf_counter())


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--errors", type=int, default=200)
    args = ap.parse_args()
    private_namespace()
    work = Path(tempfile.mkdtemp(prefix="fsmond-lat-"))
    img = work / "img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
    dev = subprocess.run(["losetup", "-f", "--show", str(img)], check=True, text=True,
                         capture_output=True).stdout.strip()
    loop = os.path.basename(dev)
    mnt = work / "m"
    mnt.mkdir()
    bus_proc = fsmond = None
    try:
        subprocess.run(["mount", "-o", "errors=continue", dev, str(mnt)], check=True)
        # ext4 rate-limits its error messages; lift that for the measurement.
        for knob in ("err_ratelimit_interval_ms", "msg_ratelimit_interval_ms"):
            Path(f"/sys/fs/ext4/{loop}/{knob}").write_text("0\n")  # 0: no limit
        bus_proc, address = private_bus()
        fsmond = start_fsmond(work, f'[daemon]\nudev = false\n[[watch]]\npath = "{mnt}"\n',
                              "--bus", address)
        bus = await MessageBus(bus_address=address).connect()
        got: asyncio.Queue[tuple[str, float]] = asyncio.Queue()

        def handler(msg: Message) -> None:
            if (msg.message_type is MessageType.SIGNAL and msg.member == "Event"
                    and msg.path == "/org/fsmond/FsMon1" and msg.body[2] == "error"):
                message = msg.body[3]["details"].value.get("message")
                got.put_nowait((message.value if message else "", time.perf_counter()))

        bus.add_message_handler(handler)
        await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                               interface="org.freedesktop.DBus", member="AddMatch",
                               signature="s", body=["type='signal',member='Event'"]))
        dmesg = DmesgFollower()
        await asyncio.sleep(0.5)
        fsmond_lat, dmesg_lat = [], []
        trigger = Path(f"/sys/fs/ext4/{loop}/trigger_fs_error")
        for i in range(args.errors):
            # 1.1 s apart: each error opens its own fold window, so each is
            # published at once, as the first error of a storm is.
            await asyncio.sleep(1.1)
            t0 = time.perf_counter()
            trigger.write_text(f"bench-{i} latency\n")
            while True:
                message, t = await asyncio.wait_for(got.get(), 10)
                if f"bench-{i} " in message or message == "":
                    break
            fsmond_lat.append(t - t0)
            for _ in range(100):
                if str(i) in dmesg.seen:
                    break
                await asyncio.sleep(0.01)
            if str(i) in dmesg.seen:
                dmesg_lat.append(dmesg.seen[str(i)] - t0)
        dmesg.proc.terminate()
        bus.disconnect()
        ms = 1000
        print(f"{'watcher':24} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for name, lat in (("fsmond D-Bus Event", fsmond_lat), ("dmesg --follow", dmesg_lat)):
            print(f"{name:24} {len(lat):5d} {statistics.median(lat) * ms:8.2f} "
                  f"{percentile(lat, 99) * ms:8.2f} {max(lat) * ms:8.2f}")
        print(f"summary: {len(fsmond_lat)} ext4 errors: fsmond p50 "
              f"{statistics.median(fsmond_lat) * ms:.2f} ms, p99 "
              f"{percentile(fsmond_lat, 99) * ms:.2f} ms; dmesg --follow p50 "
              f"{statistics.median(dmesg_lat) * ms:.2f} ms")
    finally:
        if fsmond is not None:
            fsmond.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                fsmond.wait(10)
        if bus_proc is not None:
            bus_proc.terminate()
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        subprocess.run(["losetup", "-d", dev], check=False)


if __name__ == "__main__":
    asyncio.run(main())
