"""fsmonctl: ask a running fsmond over D-Bus (SPEC section 9).

Human tables by default, `--json` for data. Exit status: 0 done, 1 the
daemon refused (its error message is printed), 2 usage, 3 the daemon is not
running (or its bus cannot be reached), 78 a bad configuration file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from fsmond.publishers.dbus import bus_type_and_address

NAME, ROOT = "org.fsmond.FsMon1", "/org/fsmond/FsMon1"
MANAGER, FS = "org.fsmond.FsMon1.Manager", "org.fsmond.FsMon1.FileSystem"
NOT_RUNNING = ("org.freedesktop.DBus.Error.ServiceUnknown",
               "org.freedesktop.DBus.Error.NameHasNoOwner")
EXIT_REFUSED, EXIT_NOT_RUNNING = 1, 3


class CtlError(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def plain(value: Any) -> Any:
    """Variants and their containers -> plain Python values, for JSON and tables."""
    if isinstance(value, Variant):
        return plain(value.value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "K", "M", "G", "T", "P"):
        if size < 1024 or unit == "P":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return str(n)


def human_seconds(s: float) -> str:
    if s < 0:
        return "-"
    for unit, width in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= width:
            return f"{s / width:.1f}{unit}"
    return f"{s:.0f}s"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]
    return "\n".join(lines)


class Client:
    def __init__(self, bus: str) -> None:
        self.bus_name = bus
        self.bus: MessageBus | None = None

    async def __aenter__(self) -> Client:
        bus_type, address = bus_type_and_address(self.bus_name)
        try:
            self.bus = await MessageBus(bus_address=address, bus_type=bus_type).connect()
        except (OSError, ValueError) as e:
            raise CtlError(f"cannot reach the {self.bus_name} bus: {e}", EXIT_NOT_RUNNING) from e
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.bus is not None:
            self.bus.disconnect()

    async def call(self, member: str, sig: str = "", *body: Any, path: str = ROOT,
                   interface: str = MANAGER, destination: str = NAME) -> list[Any]:
        assert self.bus is not None
        reply = await self.bus.call(Message(destination=destination, path=path,
                                            interface=interface,
                                            member=member, signature=sig, body=list(body)))
        if reply is None:
            raise CtlError("no reply", EXIT_REFUSED)
        if reply.message_type is MessageType.ERROR:
            text = reply.body[0] if reply.body else reply.error_name
            if reply.error_name in NOT_RUNNING:
                raise CtlError("fsmond is not running", EXIT_NOT_RUNNING)
            raise CtlError(f"{reply.error_name}: {text}", EXIT_REFUSED)
        return [plain(b) for b in reply.body]

    async def filesystems(self) -> dict[str, dict[str, Any]]:
        objects = (await self.call("GetManagedObjects",
                                   interface="org.freedesktop.DBus.ObjectManager"))[0]
        return {path: ifaces[FS] for path, ifaces in sorted(objects.items()) if FS in ifaces}


def status_rows(fss: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for p in fss.values():
        used = 100 - p["PercentAvailable"] if p["Size"] else 0.0
        rows.append([p["Device"], (p["MountPoints"] or ["-"])[0], human_bytes(p["Size"]),
                     f"{used:.1f}%", p["Level"], "yes" if p["ReadOnly"] else "no",
                     str(p["ErrorCount"]), human_seconds(p["SecondsToFull"])])
    return rows


async def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    async with Client(args.bus) as c:
        cmd = args.command
        if cmd == "status":
            status = (await c.call("GetStatus"))[0]
            fss = await c.filesystems()
            if args.json:
                print(json.dumps({"status": status, "filesystems": fss}, indent=2), file=out)
                return 0
            print(f"fsmond {status['version']}: {status['mounts']} mounts via "
                  f"{status['mount_backend']}, errors via "
                  f"{', '.join(status['error_backends']) or 'nothing'}, "
                  f"ENOSPC trace {status.get('enospc_trace', 'off')}, "
                  f"{status['events']} events", file=out)
            print(table(status_rows(fss), ["DEVICE", "MOUNT", "SIZE", "USED", "LEVEL", "RO",
                                           "ERRORS", "FULL IN"]), file=out)
        elif cmd == "fs":
            fss = await c.filesystems()
            if args.json:
                print(json.dumps(fss, indent=2), file=out)
                return 0
            for path, p in fss.items():
                print(path, file=out)
                for k, v in p.items():
                    print(f"  {k:16} {v}", file=out)
        elif cmd == "mounts":
            gen, mounts = await c.call("ListMounts")
            if args.json:
                print(json.dumps({"generation": gen, "mounts": mounts}, indent=2), file=out)
                return 0
            rows = [[str(m["mount_id"]), m["device"], m["fstype"], m["mount_point"],
                     m["source"], m["options"]] for m in mounts]
            print(table(rows, ["ID", "DEVICE", "FSTYPE", "MOUNT", "SOURCE", "OPTIONS"]),
                  file=out)
        elif cmd == "watches":
            watches = (await c.call("ListWatches"))[0]
            if args.json:
                print(json.dumps(watches, indent=2), file=out)
                return 0
            rows = [[w["mount_point"], w["device"], w["fstype"], ",".join(w["classes"]),
                     w["lower"], w["upper"]] for w in watches]
            print(table(rows, ["MOUNT", "DEVICE", "FSTYPE", "CLASSES", "LOWER", "UPPER"]),
                  file=out)
        elif cmd == "watch":
            if args.action == "add":
                classes = [x for x in args.classes.split(",") if x]
                path = (await c.call("AddWatch", "sasss", args.mount, classes,
                                     args.lower, args.upper))[0]
                print(path, file=out)
            else:
                await c.call("RemoveWatch", "s", args.mount)
        elif cmd == "reload":
            await c.call("Reload")
        elif cmd == "monitor":
            await monitor(c, args.json, args.count)
    return 0


async def monitor(c: Client, as_json: bool, count: int) -> None:
    """Print each Event signal as it comes: the RFC's fsmsg listener."""
    assert c.bus is not None
    await c.call("GetStatus")  # says "not running" now rather than waiting forever
    queue: asyncio.Queue[list[Any]] = asyncio.Queue()

    def handler(msg: Message) -> None:
        if (msg.message_type is MessageType.SIGNAL and msg.path == ROOT
                and msg.interface == MANAGER and msg.member == "Event"):
            queue.put_nowait([plain(b) for b in msg.body])

    c.bus.add_message_handler(handler)
    await c.call("AddMatch", "s", f"type='signal',interface='{MANAGER}',member='Event'",
                 path="/org/freedesktop/DBus", interface="org.freedesktop.DBus",
                 destination="org.freedesktop.DBus")
    seen = 0
    while count <= 0 or seen < count:
        _fs, cls, name, event = await queue.get()
        seen += 1
        if as_json:
            print(json.dumps(event), flush=True)
        else:
            details = " ".join(f"{k}={v}" for k, v in event.get("details", {}).items())
            print(f"{event.get('time', '')} {cls:4} {name:12} {event.get('mount_point', '')} "
                  f"{details}".rstrip(), flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fsmonctl", description="Ask fsmond what it sees.")
    p.add_argument("--bus", default="system", help="system (default), session or an address")
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("status", "file systems at a glance"), ("fs", "every property"),
                       ("mounts", "the mount table"), ("watches", "what is watched")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--json", action="store_true", help="data as JSON")
    mon = sub.add_parser("monitor", help="print events as they happen")
    mon.add_argument("--json", action="store_true", help="one JSON object per line")
    mon.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
    watch = sub.add_parser("watch", help="add or remove a watch (root)")
    wsub = watch.add_subparsers(dest="action", required=True)
    add = wsub.add_parser("add", help="watch a mount point")
    add.add_argument("mount")
    add.add_argument("classes", help="comma-separated: info,warn,err,thr")
    add.add_argument("lower", nargs="?", default="")
    add.add_argument("upper", nargs="?", default="")
    rm = wsub.add_parser("remove", help="stop watching a mount point")
    rm.add_argument("mount")
    sub.add_parser("reload", help="re-read the configuration (root)")
    cc = sub.add_parser("check-config", help="validate a configuration file")
    cc.add_argument("file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "check-config":
        from fsmond.cli import check_config

        return check_config(args.file)
    try:
        return asyncio.run(run(args))
    except CtlError as e:
        print(f"fsmonctl: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `fsmonctl mounts | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
