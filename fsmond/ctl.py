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

from fsmond.publishers.dbus_connection import bus_type_and_address

NAME, ROOT = "org.fsmond.FsMon1", "/org/fsmond/FsMon1"
OBJECTS = ROOT + "/fs"  # the file systems' ObjectManager
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
        objects = (await self.call("GetManagedObjects", path=OBJECTS,
                                   interface="org.freedesktop.DBus.ObjectManager"))[0]
        return {path: with_df(ifaces[FS]) for path, ifaces in sorted(objects.items())
                if FS in ifaces}


# Unknown until the file system's first sample: null in JSON, "-" in tables.
SAMPLED_ONLY = ("Size", "Available", "Free", "Files", "FilesAvailable", "PercentAvailable",
                "FillRate", "SecondsToFull")


def with_df(props: dict[str, Any]) -> dict[str, Any]:
    """A file system's properties plus df's figures: Used = Size - Free, and
    PercentUsed = Used / (Used + Available), so reserved blocks count neither
    as used nor as available. What is not sampled yet is None, never 0."""
    out = dict(props)
    if not out.get("Sampled", True):
        out.update(dict.fromkeys(SAMPLED_ONLY), Used=None, PercentUsed=None)
        return out
    used = max(0, out["Size"] - out["Free"])
    room = used + out["Available"]
    out["Used"] = used
    out["PercentUsed"] = round(100.0 * used / room, 3) if room else 0.0
    return out


def status_rows(fss: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for p in fss.values():
        known = p["Size"] is not None
        rows.append([p["Device"], (p["MountPoints"] or ["-"])[0],
                     human_bytes(p["Size"]) if known else "-",
                     human_bytes(p["Used"]) if known else "-",
                     human_bytes(p["Available"]) if known else "-",
                     f"{p['PercentUsed']:.1f}%" if known else "-",
                     p["Level"] if known else "-", "yes" if p["ReadOnly"] else "no",
                     str(p["ErrorCount"]),
                     human_seconds(p["SecondsToFull"]) if known else "-"])
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
            print(table(status_rows(fss), ["DEVICE", "MOUNT", "SIZE", "USED", "AVAIL", "USE%",
                                           "LEVEL", "RO", "ERRORS", "FULL IN"]), file=out)
        elif cmd == "fs":
            fss = await c.filesystems()
            if args.path is not None:
                fss = one_filesystem(fss, args.path)
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
        elif cmd == "watches" or (cmd == "watch" and args.action == "list"):
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
            print("fsmond reloaded its configuration", file=out)
        elif cmd == "monitor":
            await monitor(c, args)
    return 0


def one_filesystem(fss: dict[str, dict[str, Any]], path: str) -> dict[str, dict[str, Any]]:
    """The file system mounted at `path`, else the one `path` lies on."""
    for obj, p in fss.items():
        if path in p["MountPoints"]:
            return {obj: p}
    try:
        st = os.stat(path)
    except OSError as e:
        raise CtlError(f"{path}: {e.strerror}", EXIT_REFUSED) from None
    device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    found = {obj: p for obj, p in fss.items() if p["Device"] == device}
    if not found:
        raise CtlError(f"{path}: on {device}, which fsmond does not watch", EXIT_REFUSED)
    return found


def show_value(value: Any) -> str:
    """A details value as a person reads it: lists joined by commas, maps as
    key=value, text with spaces quoted."""
    if isinstance(value, list):
        return ",".join(show_value(v) for v in value)
    if isinstance(value, dict):
        return "{" + " ".join(f"{k}={show_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    return json.dumps(text) if not text or any(c.isspace() or c in "\"=" for c in text) \
        else text


def event_line(cls: str, name: str, event: dict[str, Any]) -> str:
    details = " ".join(f"{k}={show_value(v)}" for k, v in event.get("details", {}).items())
    where = event.get("mount_point") or event.get("source") or "-"
    return f"{event.get('time', '')} {cls:5} {name:13} {where} {details}".rstrip()


def wanted(args: argparse.Namespace, cls: str, event: dict[str, Any]) -> bool:
    from fsmond.engine.globs import path_matches

    if args.classes and cls not in args.classes:
        return False
    return not args.mounts or any(path_matches(event.get("mount_point", ""), m.rstrip("/") or "/")
                                  for m in args.mounts)


async def monitor(c: Client, args: argparse.Namespace) -> None:
    """Print each Event signal as it comes: the RFC's fsmsg listener. Says when
    fsmond stops and starts again (on stderr with --json, so stdout stays
    JSON lines), and ends with exit status 3 when the bus goes away."""
    assert c.bus is not None
    await c.call("GetStatus")  # says "not running" now rather than waiting forever
    queue: asyncio.Queue[tuple[str, list[Any]]] = asyncio.Queue()

    def handler(msg: Message) -> None:
        if msg.message_type is not MessageType.SIGNAL:
            return
        if msg.path == ROOT and msg.interface == MANAGER and msg.member == "Event":
            queue.put_nowait(("event", [plain(b) for b in msg.body]))
        elif msg.member == "NameOwnerChanged" and msg.body and msg.body[0] == NAME:
            queue.put_nowait(("owner", list(msg.body)))

    c.bus.add_message_handler(handler)
    # The Manager's Event has them all; the bus keeps to the classes asked for.
    events = f"type='signal',path='{ROOT}',interface='{MANAGER}',member='Event'"
    for rule in (*([f"{events},arg1='{cls}'" for cls in dict.fromkeys(args.classes)] or [events]),
                 "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
                 f"member='NameOwnerChanged',arg0='{NAME}'"):
        await c.call("AddMatch", "s", rule, path="/org/freedesktop/DBus",
                     interface="org.freedesktop.DBus", destination="org.freedesktop.DBus")
    note = sys.stderr if args.json else sys.stdout
    gone = asyncio.ensure_future(c.bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
    seen = 0
    try:
        while args.count <= 0 or seen < args.count:
            item = asyncio.ensure_future(queue.get())
            await asyncio.wait({item, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not item.done():
                item.cancel()
                if not gone.cancelled():
                    gone.exception()  # retrieved: how the bus went is not news here
                raise CtlError(f"lost the connection to the {c.bus_name} bus", EXIT_NOT_RUNNING)
            kind, body = item.result()
            if kind == "owner":
                print("fsmond started" if body[2] else "fsmond stopped", file=note, flush=True)
                continue
            _fs, cls, name, event = body
            if not wanted(args, cls, event):
                continue
            seen += 1
            if args.json:
                print(json.dumps(event), flush=True)
            else:
                print(event_line(cls, name, event), flush=True)
    finally:
        gone.cancel()


def parser() -> argparse.ArgumentParser:
    from fsmond import __version__

    p = argparse.ArgumentParser(prog="fsmonctl", description="Ask fsmond what it sees.")
    p.add_argument("--version", action="version", version=f"fsmonctl {__version__}")
    p.add_argument("--bus", default="system", help="system (default), session or an address")
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("status", "file systems at a glance"), ("fs", "every property"),
                       ("mounts", "the mount table"), ("watches", "what is watched")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--json", action="store_true", help="data as JSON")
        if name == "fs":
            sp.add_argument("path", metavar="PATH", nargs="?",
                            help="only the file system mounted at PATH, or that PATH lies on")
    mon = sub.add_parser("monitor", help="print events as they happen, and when fsmond stops "
                         "and starts again (on stderr with --json); ends with exit status 3 "
                         "when the bus goes away")
    mon.add_argument("--json", action="store_true", help="one JSON object per line")
    mon.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
    mon.add_argument("--class", dest="classes", metavar="CLASS", action="append", default=[],
                     choices=("info", "warn", "err", "thr", "device"),
                     help="only events of this class (again for more)")
    mon.add_argument("--mount", dest="mounts", action="append", default=[], metavar="PATH",
                     help="only events at this mount point or glob (again for more)")
    watch = sub.add_parser("watch", help="add, remove or list watches (add, remove: root)")
    wsub = watch.add_subparsers(dest="action", required=True)
    wl = wsub.add_parser("list", help="what is watched (as watches)")
    wl.add_argument("--json", action="store_true", help="data as JSON")
    add = wsub.add_parser("add", help="watch a mount point or glob with these classes and "
                          "levels, checked as the configuration file is (root); prints the "
                          "file system's object, / for a glob")
    add.add_argument("mount", metavar="MOUNT",
                     help="a mount point, or a glob as a [[watch]] path ('/srv/*')")
    add.add_argument("classes", metavar="CLASSES",
                     help="comma-separated, from info,warn,err,thr; '' keeps the default")
    add.add_argument("lower", metavar="LOWER", nargs="?", default="",
                     help="first warning level: '10%%', '5GiB' or a number of blocks; '' or "
                     "none keeps the default")
    add.add_argument("upper", metavar="UPPER", nargs="?", default="",
                     help="critical level, less room than lower; '' or none keeps the default")
    rm = wsub.add_parser("remove", help="stop watching a mount point, or drop a glob "
                         "added with watch add (root)")
    rm.add_argument("mount", metavar="MOUNT", help="a mount point or an added glob")
    sub.add_parser("reload", help="re-read the configuration (root); a broken file is "
                   "refused and the old one stays")
    cc = sub.add_parser("check-config", help="validate a configuration file, without fsmond")
    cc.add_argument("file", metavar="FILE", help="the configuration file")
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
