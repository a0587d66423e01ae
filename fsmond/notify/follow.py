"""Following fsmond's file-system objects over D-Bus. I/O only.

One connection to fsmond's bus, kept for the agent's life (reconnected with
back-off if the bus itself goes away). It listens to what any user may
receive and calls only what any user may call: NameOwnerChanged tells when
fsmond comes and goes; when it comes, GetManagedObjects gives every file
system, and from then on the FileSystem objects' PropertiesChanged and
`read-only` Event signals and the ObjectManager's InterfacesAdded/Removed
keep the copy current. Everything comes from under the ObjectManager's path
(/org/fsmond/FsMon1/fs), where fsmond sends nothing per mount; the match
rules name fsmond as sender, that path and, for Events, the name (arg1): a
mount storm costs the agent nothing but the few coalesced MountCount
changes of a file system that is bind-mounted.

Signals that arrive while GetManagedObjects is answered are already in its
reply (fsmond sent them first), so they are dropped then; Events are not
state and are passed on at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from fsmond.ctl import FS, NAME, OBJECTS, plain
from fsmond.notify.policy import FsView

log = logging.getLogger(__name__)

FS_PATHS = OBJECTS
DBUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")
MATCHES = (
    f"type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='{NAME}'",
    f"type='signal',sender='{NAME}',path='{FS_PATHS}',"
    "interface='org.freedesktop.DBus.ObjectManager'",
    f"type='signal',sender='{NAME}',path_namespace='{FS_PATHS}',"
    "interface='org.freedesktop.DBus.Properties',member='PropertiesChanged'",
    f"type='signal',sender='{NAME}',path_namespace='{FS_PATHS}',interface='{FS}',"
    "member='Event',arg1='read-only'",
)


class Sink(Protocol):
    def resync(self, views: list[FsView]) -> None: ...
    def update(self, view: FsView) -> None: ...
    def event(self, path: str, name: str, details: Mapping[str, Any]) -> None: ...
    def remove(self, path: str) -> None: ...


class Backoff:
    """Waits between attempts: `first`, doubling up to `most`; reset on success."""

    def __init__(self, first: float = 0.2, most: float = 10.0) -> None:
        self.first, self.most, self.next = first, most, first

    async def wait(self) -> None:
        await asyncio.sleep(self.next)
        self.next = min(self.most, self.next * 2)

    def reset(self) -> None:
        self.next = self.first


async def call(bus: MessageBus, destination: str, path: str, interface: str, member: str,
               signature: str = "", body: list[Any] | None = None) -> list[Any]:
    reply = await bus.call(Message(destination=destination, path=path, interface=interface,
                                   member=member, signature=signature, body=body or []))
    if reply is None:
        return []
    if reply.message_type is MessageType.ERROR:
        raise DBusError(reply.error_name or "", str(reply.body[0]) if reply.body else "")
    return list(reply.body)


class FsmondFollower:
    def __init__(self, address: str | None, sink: Sink) -> None:
        """`address` None: the system bus."""
        self.address = address
        self.sink = sink
        self.props: dict[str, dict[str, Any]] = {}
        self.owner = ""
        self._syncing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()  # for tests and the agent's log

    async def run(self) -> None:
        backoff = Backoff()
        where = self.address or "the system bus"
        while True:
            try:
                bus = await MessageBus(bus_address=self.address, bus_type=BusType.SYSTEM).connect()
            except (OSError, ValueError, DBusError, EOFError) as e:
                log.warning("cannot reach %s (%s); retrying", where, e)
                await backoff.wait()
                continue
            backoff.reset()
            try:
                await self._follow(bus)
            except (OSError, DBusError, EOFError) as e:
                log.warning("lost %s (%s); reconnecting", where, e)
            finally:
                self.connected.clear()
                if bus.connected:
                    bus.disconnect()
            await backoff.wait()

    async def _follow(self, bus: MessageBus) -> None:
        bus.add_message_handler(lambda m: self._on_message(bus, m))
        for rule in MATCHES:
            await call(bus, *DBUS, "AddMatch", "s", [rule])
        try:
            (owner,) = await call(bus, *DBUS, "GetNameOwner", "s", [NAME])
        except DBusError:
            owner = ""
            log.info("fsmond is not running; waiting for it")
        self.connected.set()
        if owner:
            await self._sync(bus, owner)
        await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

    async def _sync(self, bus: MessageBus, owner: str) -> None:
        self.owner, self._syncing = owner, True
        try:
            (objects,) = await call(bus, NAME, FS_PATHS, "org.freedesktop.DBus.ObjectManager",
                                    "GetManagedObjects")
        except DBusError as e:  # it went again meanwhile: NameOwnerChanged follows
            log.info("fsmond did not answer (%s)", e)
            return
        finally:
            self._syncing = False
        if owner != self.owner:
            return  # another fsmond came meanwhile; its own sync follows
        self.props = {path: plain(ifaces[FS]) for path, ifaces in objects.items()
                      if FS in ifaces}
        log.info("following fsmond (%s): %d file systems", owner, len(self.props))
        self.sink.resync([FsView.from_properties(p, v) for p, v in sorted(self.props.items())])

    def _on_message(self, bus: MessageBus, msg: Message) -> None:
        if msg.message_type is not MessageType.SIGNAL:
            return
        member = msg.member
        if member == "NameOwnerChanged" and msg.sender == "org.freedesktop.DBus":
            name, _old, new = msg.body
            if name != NAME:
                return
            self.owner = new
            if new:
                task = asyncio.get_running_loop().create_task(self._sync(bus, new))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                log.info("fsmond went away; keeping what is shown until it is back")
            return
        if not self.owner or msg.sender != self.owner or not msg.path:
            return
        path = msg.path
        if member == "Event" and msg.interface == FS:
            _cls, name, event = msg.body
            self.sink.event(path, name, plain(event).get("details", {}))
        elif self._syncing:
            return
        elif member == "PropertiesChanged":
            iface, changed, _invalidated = msg.body
            props = self.props.get(path)
            if iface == FS and props is not None:
                # FileSystem's properties are scalars and `as` (MountPoints,
                # 16 strings at most): one level of Variants, no walk.
                props.update({k: v.value for k, v in changed.items()})
                self.sink.update(FsView.from_properties(path, props))
        elif member == "InterfacesAdded":
            obj, ifaces = msg.body
            if FS in ifaces:
                self.props[obj] = plain(ifaces[FS])
                self.sink.update(FsView.from_properties(obj, self.props[obj]))
        elif member == "InterfacesRemoved":
            obj, ifaces = msg.body
            if FS in ifaces and self.props.pop(obj, None) is not None:
                self.sink.remove(obj)
