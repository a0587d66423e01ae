"""The D-Bus publisher: it follows the engine's steps, exports and removes
the file systems' objects, and sends the signals (SPEC section 5).

How it works: a Manager object at /org/fsmond/FsMon1 and one FileSystem
object per watched file system under the ObjectManager's path
(dbus_connection says why there). MountsChanged and every event go out from
the Manager; a file system's object sends its own events only, not each
bind mount's `mounted`/`unmounted` (Event.per_mount). An object's
properties are its latest FsState (fsmond.engine.step), and queries and the
privileged methods (dbus_privileged) go through the daemon's `Control`.
Events come through a bounded outbox. State changes are coalesced: a
flusher runs at most every FLUSH_INTERVAL and sends one MountsChanged with
what the mount table did since, one PropertiesChanged per object with only
the values that are news (dbus_news), so a 15,000-mount storm becomes a few
signals, sent once the storm's events have gone out (events first, on a
slow bus). These signals of fsmond's own are marshalled by dbus_wire, many
to a write, written at once when nothing waits before them (an error's way
out). A full socket must not kill the connection: writes that would block
wait for the socket (dbus_transport), and sending pauses while too much is
queued.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dbus_fast import NameFlag, RequestNameReply

from fsmond.engine.mounts import MountChange
from fsmond.engine.step import FsState, Step
from fsmond.errors import FsmondError
from fsmond.events import ROOT_PATH, DevNum, Event, fs_object_path
from fsmond.publishers import dbus_wire as wire
from fsmond.publishers.dbus_connection import ObjectManagerBus, connect, until_lost
from fsmond.publishers.dbus_convert import mounts_changed_bodies
from fsmond.publishers.dbus_entries import change_entries, event_entries
from fsmond.publishers.dbus_news import PropertyNews
from fsmond.publishers.dbus_objects import (
    BUS_NAME,
    FILESYSTEM_IFACE,
    MANAGER_IFACE,
    FileSystemObject,
    ManagerObject,
)
from fsmond.publishers.dbus_privileged import PrivilegedCalls
from fsmond.publishers.dbus_transport import backlog, send_bytes
from fsmond.publishers.outbox import Outbox

if TYPE_CHECKING:
    from fsmond.publishers.control import Control

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.1  # seconds: coalescing of MountsChanged and PropertiesChanged
# At least this many times a flush's own duration between flushes: in a storm
# flushing takes 1/(1 + FLUSH_SPACING) of the time, however cheap a flush is.
FLUSH_SPACING = 40
FLUSH_MAX = 1.0  # seconds: but never further apart than this
# Events are what subscribers wait for, and the bus checks every entry of a
# MountsChanged or PropertiesChanged as it does an Event's: while events are
# still going out (a storm), the coalesced state waits behind them, this long
# at most (a bus that never catches up still gets the state).
EVENTS_FIRST_MAX = 5.0  # seconds
PACED_MAX = 500.0  # seconds: how long sending waits for a bus that does not read
HIGH_WATER = 32  # writes queued in the connection before sending pauses
EVENT_BATCH = 64  # events per write: 128 signals, about 80 KB
# A storm's MountsChanged is split: a system bus refuses messages over 32 MiB
# (and drops the sender), and 2,048 changes are about 1 MB.
CHANGES_PER_SIGNAL = 2048


async def _wait_while(busy: Callable[[], bool], limit: float) -> None:
    """Poll: dbus-fast tells nobody when its queue drains."""
    for _ in range(int(limit / 0.005)):
        if not busy():
            return
        await asyncio.sleep(0.005)


class DbusPublisher:
    name = "dbus"

    def __init__(self, control: Control, bus: str = "system", queue_size: int = 100_000) -> None:
        self.control = control
        self.bus_name = bus
        self.outbox: Outbox[Event] = Outbox("dbus", queue_size)
        # Indexes, by device: `states` has every watched file system (its
        # latest FsState); `objects` those exported, `_unborn` those waiting
        # for their first sample (disjoint, both within `states`); `_news`
        # only exported ones; `_dirty` within `objects` after each step (a
        # removed one leaves all of them).
        self.states: dict[DevNum, FsState] = {}
        self.manager = ManagerObject(control, self.states)
        self.objects: dict[DevNum, FileSystemObject] = {}
        self._by_path: dict[str, FileSystemObject] = {}
        # File systems whose object waits for their first sample (or a
        # statvfs_timeout), with the object's own events meanwhile.
        self._unborn: dict[DevNum, list[Event]] = {}
        self._unborn_paths: dict[str, DevNum] = {}
        self._bus: ObjectManagerBus | None = None
        self._dirty: set[DevNum] = set()
        self._news = PropertyNews()
        # What the next MountsChanged says, marshalled then: after a storm's events.
        self._mount_changes: list[tuple[MountChange, str]] = []  # (change, fs object path)
        self._generation_sent = -1
        self._wake = asyncio.Event()

    # ----------------------------------------------------- from the daemon

    def publish(self, step: Step) -> None:
        # A new file system's object is exported first (InterfacesAdded), or
        # once sampled, its events held till then (_add_object), so that its
        # first events (watch-added, mounted) come from it as well; a removed
        # one goes after its last events.
        for s in step.states:
            self.states[s.device] = s
            if s.device not in self.objects:
                self._add_object(s.device)
        events = step.events
        if not events:
            pass
        elif (not self.outbox and self._bus is not None and len(events) <= EVENT_BATCH
                and self._backlog() <= HIGH_WATER):
            # Nothing queued before them: send now, in one write, rather than
            # a loop turn later.
            self._send(events)
        else:
            self.outbox.put_all(events)
        if step.refreshes():
            self._refresh(step)

    def _refresh(self, step: Step) -> None:
        for dev in step.removed:
            self.states.pop(dev, None)
            self._remove_object(dev)
        self._dirty |= step.changed & self.objects.keys()
        states = self.states
        for c in step.mount_changes:
            dev = c.entry.device
            self._mount_changes.append((c, fs_object_path(dev) if dev in states else "/"))
        self._wake.set()

    def _add_object(self, dev: DevNum) -> None:
        """Export the object once its figures are known: its first sample, or
        statvfs_timeout without one (Responsive false), or at once when no
        mount point shows it (it cannot be sampled: Sampled false)."""
        if dev in self.objects or self._bus is None:
            return
        fs = self.states.get(dev)
        if fs is None:
            return
        path = fs_object_path(dev)
        if not (fs.sampled or not fs.responsive or not fs.visible):
            self._unborn.setdefault(dev, [])
            self._unborn_paths[path] = dev
            return
        obj = FileSystemObject(self.states.get, dev)
        self.objects[dev] = obj
        self._by_path[path] = obj
        self._news.exported(dev, obj.values())
        self._bus.export(path, obj)
        self._unborn_paths.pop(path, None)
        held = self._unborn.pop(dev, [])
        if held:  # after InterfacesAdded, which dbus-fast has queued
            self._send_raw(b"".join(self._object_event(e) for e in held))

    def _remove_object(self, dev: DevNum) -> None:
        self._unborn.pop(dev, None)
        self._unborn_paths.pop(fs_object_path(dev), None)
        obj = self.objects.pop(dev, None)
        self._by_path.pop(fs_object_path(dev), None)
        self._news.removed(dev)
        self._dirty.discard(dev)
        if obj is not None and self._bus is not None:
            self._bus.unexport(fs_object_path(dev), obj)

    # ------------------------------------------------------------ lifecycle

    async def run(self, started: Callable[[], None]) -> None:
        bus = await connect(self.bus_name)
        self._bus = bus
        bus.add_message_handler(PrivilegedCalls(bus, self.control))
        bus.export(ROOT_PATH, self.manager)
        for dev in self.states:
            self._add_object(dev)
        started()  # the name comes in announce(), once the sources have started
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._send_events())
                tg.create_task(self._flush_state())
                await until_lost(bus, self.bus_name)
        finally:
            if bus.connected:
                bus.disconnect()

    async def announce(self) -> None:
        bus = self._bus
        assert bus is not None
        reply = await bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            raise FsmondError(f"{BUS_NAME} is already owned on the {self.bus_name} bus")
        where = os.environ.get("DBUS_SESSION_BUS_ADDRESS", "") if self.bus_name == "session" \
            else ""
        log.info("D-Bus: %s on the %s bus %s", BUS_NAME, self.bus_name, where)

    def _backlog(self) -> int:
        return backlog(self._bus)

    async def _paced(self) -> None:
        """Wait while the connection has much unsent: bounded memory, no EAGAIN death."""
        await _wait_while(lambda: self._backlog() > HIGH_WATER, PACED_MAX)

    async def _send_events(self) -> None:
        while True:
            self._send(await self.outbox.get_batch(EVENT_BATCH))
            await self._paced()

    def _send(self, events: Sequence[Event]) -> None:
        self._send_raw(b"".join(m for e in events for m in self._event_messages(e)))

    def _event_messages(self, e: Event) -> list[bytes]:
        """The Manager's Event and the file system object's, one a{sv} for both."""
        manager, obj = wire.event_bodies(e.fs, e.cls, e.name, event_entries(e))
        out = [self._signal(ROOT_PATH, MANAGER_IFACE, "Event", "ossa{sv}", manager)]
        if e.per_mount:
            return out
        if e.fs in self._by_path:
            out.append(self._signal(e.fs, FILESYSTEM_IFACE, "Event", "ssa{sv}", obj))
        elif (dev := self._unborn_paths.get(e.fs)) is not None:
            self._unborn[dev].append(e)  # its object comes with its first sample
        return out

    def _object_event(self, e: Event) -> bytes:
        _manager, obj = wire.event_bodies(e.fs, e.cls, e.name, event_entries(e))
        return self._signal(e.fs, FILESYSTEM_IFACE, "Event", "ssa{sv}", obj)

    async def _flush_state(self) -> None:
        while True:
            await self._wake.wait()
            await _wait_while(lambda: bool(self.outbox) or self._backlog() > 0,
                              EVENTS_FIRST_MAX)
            self._wake.clear()
            took = time.perf_counter()
            self._flush_once()
            took = time.perf_counter() - took
            await self._paced()
            # A flush costs more as the table grows (MountsChanged of 15,000 mounts
            # in a storm): space them out so flushing stays a small share of CPU.
            await asyncio.sleep(min(FLUSH_MAX, max(FLUSH_INTERVAL, FLUSH_SPACING * took)))

    def _flush_once(self) -> None:
        changes, self._mount_changes = self._mount_changes, []
        for body in mounts_changed_bodies(
                [(c.generation, change_entries(c, path)) for c, path in changes],
                CHANGES_PER_SIGNAL):
            self._send_raw(self._message(ROOT_PATH, MANAGER_IFACE, "MountsChanged", "taa{sv}",
                                         body))
        generation = self.control.generation()
        if generation != self._generation_sent:
            self._generation_sent = generation
            self._properties_changed(ROOT_PATH, MANAGER_IFACE,
                                     {"Generation": ("t", self._generation_sent)})
        for dev in list(self._dirty):
            obj = self.objects.get(dev)
            if obj is None:
                continue
            changed = self._news.changed(dev, obj.values())
            if changed:
                self._properties_changed(fs_object_path(dev), FILESYSTEM_IFACE, changed)
        self._dirty.clear()

    def _message(self, path: str, interface: str, member: str, sig: str,
                 body: list[Any]) -> bytes:
        return self._signal(path, interface, member, sig, wire.body(sig, body))

    def _signal(self, path: str, interface: str, member: str, sig: str,
                body: bytes | bytearray) -> bytes:
        """A signal with its body marshalled already, with the bus's next serial."""
        assert self._bus is not None
        return wire.signal(self._bus.next_serial(), path, interface, member, sig, body)

    def _send_raw(self, data: bytes) -> None:
        bus = self._bus
        if bus is None or not bus.connected or not data:
            return
        send_bytes(bus, data)

    def _properties_changed(self, path: str, interface: str, values: wire.Fields) -> None:
        self._send_raw(self._message(path, "org.freedesktop.DBus.Properties",
                                     "PropertiesChanged", "sa{sv}as", [interface, values, []]))
