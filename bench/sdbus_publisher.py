"""A prototype of fsmond's D-Bus publisher on python-sdbus, for the side-by-side
measurement of issue 22 (item 4): not part of fsmond.

It sends the signals fsmond/publishers/dbus.py sends for the same engine
steps, built from fsmond's own conversions (dbus_convert), so the payloads
are the same values: the Manager's `Event` (ossa{sv}) for every event and
the file system object's (ssa{sv}) for those that are not per-mount;
`MountsChanged` (taa{sv}) coalesced and split as fsmond does; the objects'
PropertiesChanged; InterfacesAdded/Removed from the ObjectManager at
/org/fsmond/FsMon1/fs (sd-bus's own: sd_bus_emit_object_added, which also
answers GetManagedObjects and property reads from the exported vtables).
What it leaves out, because the benches do not reach it: the Manager's
methods (only Version and Generation are served), the privileged calls,
the hold on estimates and figures that do not move visibly (a tmpfs in a
mount storm moves neither), the refusal of GetManagedObjects on the
Manager's path.

Pacing, the one thing python-sdbus forces to differ: it has no public view
of its connection's queue (sd-bus's wqueue), so the prototype paces by
round trips: after each batch of events it waits for the Ping sent after
the batch before, so at most two batches are on their way. And sd-bus
writes only when driven: `send()` queues behind anything already queued
without writing, and python-sdbus registers the socket's POLLOUT only
inside `process()` or an async call, so the prototype calls `process()`
after each batch. With `--unpaced` in bench/unpaced_burst.py neither is
done.

Run as fsmond itself (the same command line), its D-Bus publisher replaced:

    sudo .venv/bin/python bench/sdbus_publisher.py --config FILE --bus ADDRESS
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sdbus
from sdbus import DbusInterfaceCommonAsync, DbusObjectManagerInterfaceAsync, dbus_property_async

sys.path.insert(0, str(Path(__file__).parent.parent))

from fsmond.engine.mounts import MountChange
from fsmond.engine.step import FsState, Step
from fsmond.errors import FsmondError
from fsmond.events import OBJECTS_PATH, ROOT_PATH, DevNum, Event, format_time, fs_object_path
from fsmond.publishers import dbus_wire as wire
from fsmond.publishers.control import Control
from fsmond.publishers.dbus import (
    CHANGES_PER_SIGNAL,
    EVENT_BATCH,
    EVENTS_FIRST_MAX,
    FLUSH_INTERVAL,
    FLUSH_MAX,
    FLUSH_SPACING,
)
from fsmond.publishers.dbus_convert import (
    CONST_PROPERTIES,
    FS_PROPERTIES,
    change_fields,
    fields,
    fs_values,
    put_text,
    text,
)
from fsmond.publishers.dbus_objects import BUS_NAME, FILESYSTEM_IFACE, MANAGER_IFACE
from fsmond.publishers.outbox import Outbox

BUS_DRIVER = ("org.freedesktop.DBus", "/org/freedesktop/DBus")


def event_fields(e: Event) -> wire.Fields:
    """An event's a{sv}, as fsmond's event_entries marshals it (the reference
    tests/publishers/test_dbus_wire.py holds it to)."""
    out: wire.Fields = {
        "seq": ("t", e.seq), "time": ("s", format_time(e.time)), "class": ("s", e.cls),
        "name": ("s", e.name), "fs": ("o", e.fs), "fstype": ("s", text(e.fstype)[0]),
        "device": ("s", e.device), "pid": ("u", max(0, e.pid)), "comm": ("s", text(e.comm)[0]),
        "details": ("a{sv}", fields(e.details)),
    }
    put_text(out, "mount_point", e.mount_point)
    put_text(out, "source", e.source)
    return out


def _fs_class() -> type:
    """The FileSystem interface with a property per FS_PROPERTIES entry, read
    from the latest FsState (the object's `state()`)."""
    def body(ns: dict[str, Any]) -> None:
        for name, (sig, get) in FS_PROPERTIES.items():
            def getter(self: Any, get: Callable[[FsState], Any] = get) -> Any:
                return get(self.state())
            ns[f"p_{name}"] = dbus_property_async(sig, property_name=name)(getter)
    return types.new_class("FileSystemSd", (DbusInterfaceCommonAsync,),
                           {"interface_name": FILESYSTEM_IFACE}, body)


FileSystemSd = _fs_class()


class ManagerSd(DbusInterfaceCommonAsync, interface_name=MANAGER_IFACE):  # type: ignore[misc]
    def __init__(self, control: Control) -> None:
        super().__init__()
        self.control = control

    @dbus_property_async("s", property_name="Version")
    def version(self) -> str:
        return "sdbus-prototype"

    @dbus_property_async("t", property_name="Generation")
    def generation(self) -> int:
        return self.control.generation()


def open_bus(bus: str) -> sdbus.SdBus:
    if bus == "system":
        return sdbus.sd_bus_open_system()
    if bus != "session":
        os.environ["DBUS_SESSION_BUS_ADDRESS"] = bus
    return sdbus.sd_bus_open_user()


async def ping(bus: sdbus.SdBus) -> None:
    """A round trip to the bus: answered once it has read all sent before it."""
    await bus.call_async(bus.new_method_call_message(
        *BUS_DRIVER, "org.freedesktop.DBus.Peer", "Ping"))


class SdbusPublisher:
    name = "dbus"

    def __init__(self, control: Control, bus: str = "system", queue_size: int = 100_000,
                 paced: bool = True) -> None:
        self.control = control
        self.bus_name = bus
        self.paced = paced
        self.outbox: Outbox[Event] = Outbox("dbus", queue_size)
        self.states: dict[DevNum, FsState] = {}
        self.objects: dict[DevNum, Any] = {}
        self._paths: set[str] = set()  # of the objects exported
        self._unborn: dict[DevNum, list[Event]] = {}
        self._unborn_paths: dict[str, DevNum] = {}
        self._bus: sdbus.SdBus | None = None
        self._manager_om = DbusObjectManagerInterfaceAsync()
        self._dirty: set[DevNum] = set()
        self._sent: dict[DevNum, dict[str, Any]] = {}
        self._mount_changes: list[tuple[MountChange, str]] = []
        self._generation_sent = -1
        self._wake = asyncio.Event()
        self._in_flight: asyncio.Future[Any] | None = None

    # ----------------------------------------------------- from the daemon

    def publish(self, step: Step) -> None:
        for s in step.states:
            self.states[s.device] = s
            if s.device not in self.objects:
                self._add_object(s.device)
        if step.events:
            self.outbox.put_all(step.events)
        if step.refreshes():
            for dev in step.removed:
                self.states.pop(dev, None)
                self._remove_object(dev)
            self._dirty |= step.changed & self.objects.keys()
            for c in step.mount_changes:
                dev = c.entry.device
                self._mount_changes.append(
                    (c, fs_object_path(dev) if dev in self.states else "/"))
            self._wake.set()

    def _add_object(self, dev: DevNum) -> None:
        fs = self.states.get(dev)
        if dev in self.objects or self._bus is None or fs is None:
            return
        if not (fs.sampled or not fs.responsive or not fs.visible):
            self._unborn.setdefault(dev, [])
            self._unborn_paths[fs_object_path(dev)] = dev
            return
        obj = FileSystemSd()
        obj.state = lambda dev=dev: self.states[dev]
        self._sent[dev] = fs_values(fs)
        self._paths.add(fs_object_path(dev))
        self._unborn_paths.pop(fs_object_path(dev), None)
        # The handle keeps the export: stopping it sends InterfacesRemoved.
        self.objects[dev] = self._manager_om.export_with_manager(fs_object_path(dev), obj,
                                                                 self._bus)
        for e in self._unborn.pop(dev, []):
            self._object_event(e, event_fields(e))

    def _remove_object(self, dev: DevNum) -> None:
        self._unborn.pop(dev, None)
        self._unborn_paths.pop(fs_object_path(dev), None)
        self._paths.discard(fs_object_path(dev))
        handle = self.objects.pop(dev, None)
        self._sent.pop(dev, None)
        self._dirty.discard(dev)
        if handle is not None:
            handle.stop()

    # ------------------------------------------------------------ lifecycle

    async def run(self, started: Callable[[], None]) -> None:
        bus = open_bus(self.bus_name)
        try:
            await ping(bus)  # drives sd-bus's connection (auth, Hello) until it is up
        except (OSError, sdbus.SdBusBaseError) as e:
            raise FsmondError(f"cannot connect to the bus {self.bus_name}: {e}") from e
        self._bus = bus
        # Kept: an export lasts as long as its handle and its object.
        self._manager = ManagerSd(self.control)
        self._handles = [self._manager.export_to_dbus(ROOT_PATH, bus),
                         self._manager_om.export_to_dbus(OBJECTS_PATH, bus)]
        for dev in list(self.states):
            self._add_object(dev)
        started()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._send_events())
                tg.create_task(self._flush_state())
                while True:  # python-sdbus says nothing when the bus goes away
                    await asyncio.sleep(5)
                    try:
                        await ping(bus)
                    except (OSError, sdbus.SdBusBaseError) as e:
                        raise FsmondError(f"lost the connection to the bus ({e!r})") from e
        finally:
            bus.close()

    async def announce(self) -> None:
        assert self._bus is not None
        await self._bus.request_name_async(BUS_NAME, 0)

    async def _paced(self) -> None:
        """Drive sd-bus's writes, and keep at most two batches unanswered."""
        bus = self._bus
        assert bus is not None
        if not self.paced:
            return
        bus.process()
        if self._in_flight is not None:
            try:
                await self._in_flight
            except (OSError, sdbus.SdBusBaseError) as e:
                raise FsmondError(f"lost the connection to the bus ({e!r})") from e
        self._in_flight = asyncio.ensure_future(ping(bus))

    async def _send_events(self) -> None:
        while True:
            self._send(await self.outbox.get_batch(EVENT_BATCH))
            await self._paced()

    def _send(self, events: Sequence[Event]) -> None:
        bus = self._bus
        assert bus is not None
        for e in events:
            f = event_fields(e)
            m = bus.new_signal_message(ROOT_PATH, MANAGER_IFACE, "Event")
            m.append_data("ossa{sv}", e.fs, e.cls, e.name, f)
            m.send()
            if e.per_mount:
                continue
            if e.fs in self._paths:
                self._object_event(e, f)
            elif (dev := self._unborn_paths.get(e.fs)) is not None:
                self._unborn[dev].append(e)

    def _object_event(self, e: Event, f: wire.Fields) -> None:
        assert self._bus is not None
        m = self._bus.new_signal_message(e.fs, FILESYSTEM_IFACE, "Event")
        m.append_data("ssa{sv}", e.cls, e.name, f)
        m.send()

    async def _flush_state(self) -> None:
        """As DbusPublisher's: coalesced, after a storm's events, spaced by its cost."""
        while True:
            await self._wake.wait()
            for _ in range(int(EVENTS_FIRST_MAX / 0.005)):
                if not self.outbox and (self._in_flight is None or self._in_flight.done()):
                    break
                await asyncio.sleep(0.005)
            self._wake.clear()
            took = time.perf_counter()
            self._flush_once()
            took = time.perf_counter() - took
            await self._paced()
            await asyncio.sleep(min(FLUSH_MAX, max(FLUSH_INTERVAL, FLUSH_SPACING * took)))

    def _flush_once(self) -> None:
        bus = self._bus
        assert bus is not None
        changes, self._mount_changes = self._mount_changes, []
        for i in range(0, len(changes), CHANGES_PER_SIGNAL):
            chunk = changes[i:i + CHANGES_PER_SIGNAL]
            m = bus.new_signal_message(ROOT_PATH, MANAGER_IFACE, "MountsChanged")
            m.append_data("taa{sv}", chunk[-1][0].generation,
                          [change_fields(c, path) for c, path in chunk])
            m.send()
        generation = self.control.generation()
        if generation != self._generation_sent:
            self._generation_sent = generation
            self._properties_changed(ROOT_PATH, MANAGER_IFACE, {"Generation": ("t", generation)})
        for dev in list(self._dirty):
            fs = self.states.get(dev)
            if fs is None or dev not in self.objects:
                continue
            now = fs_values(fs)
            before = self._sent.get(dev, {})
            self._sent[dev] = now
            changed = {k: (FS_PROPERTIES[k][0], v) for k, v in now.items()
                       if before.get(k) != v and k not in CONST_PROPERTIES}
            if changed:
                self._properties_changed(fs_object_path(dev), FILESYSTEM_IFACE, changed)
        self._dirty.clear()

    def _properties_changed(self, path: str, interface: str, values: wire.Fields) -> None:
        assert self._bus is not None
        m = self._bus.new_signal_message(path, "org.freedesktop.DBus.Properties",
                                         "PropertiesChanged")
        m.append_data("sa{sv}as", interface, values, [])
        m.send()


def main() -> int:
    """fsmond's own command line, its D-Bus publisher this one."""
    from fsmond.cli import fsmond_main
    from fsmond.publishers import dbus

    dbus.DbusPublisher = SdbusPublisher  # type: ignore[misc,assignment]
    return fsmond_main()


if __name__ == "__main__":
    raise SystemExit(main())
