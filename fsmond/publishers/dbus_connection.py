"""fsmond's connection to the bus: which bus, why it cannot be reached, how
its loss is told, and where the ObjectManager of the file systems answers.

How it works: the ObjectManager is at /org/fsmond/FsMon1/fs, below the
Manager, so that a client following the objects (GDBusObjectManagerClient
subscribes to every signal under the ObjectManager's path) gets none of the
Manager's mount-table traffic. dbus-fast places an ObjectManager wherever
objects are exported, and two of its habits would undo that: it sends
InterfacesAdded/Removed from the child's own path, so ObjectManagerBus
sends them from the ObjectManager's path instead; and it answers
GetManagedObjects on any path, so on the Manager's it is refused, naming
the right one (a client pointed there would follow every signal of the
Manager). A full socket would kill the connection (dbus-fast takes EAGAIN
for a fatal error), so a connection is made non-blocking at once
(dbus_transport). The bus is lost for good when it goes away: fsmond exits
non-zero, and systemd's restart exports everything again on the new bus.
"""

from __future__ import annotations

import os
from typing import NoReturn

from dbus_fast import BusType, Message, MessageType
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface

from fsmond.errors import FsmondError
from fsmond.events import OBJECTS_PATH, ROOT_PATH
from fsmond.publishers.dbus_objects import FileSystemObject
from fsmond.publishers.dbus_transport import HookedBus, make_nonblocking

OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
SYSTEM_BUS_DEFAULT = "unix:path=/run/dbus/system_bus_socket"


def bus_type_and_address(bus: str) -> tuple[BusType, str | None]:
    if bus == "system":
        return BusType.SYSTEM, None
    if bus == "session":
        return BusType.SESSION, None
    return BusType.SESSION, bus


def connect_error(bus: str, e: BaseException) -> str:
    """Why the bus cannot be reached, with what to do about it: fsmond run by
    hand where no system bus runs (a container, a build machine) wants the
    session bus or no D-Bus at all."""
    if bus == "system":
        where = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or SYSTEM_BUS_DEFAULT
        return (f"cannot connect to the system bus ({where}): {e}: is dbus-daemon running? "
                "To try fsmond without it: --bus session (under dbus-run-session) or --no-dbus")
    if bus == "session":
        session = os.environ.get("DBUS_SESSION_BUS_ADDRESS", "")
        if not session:
            return ("cannot connect to the session bus: DBUS_SESSION_BUS_ADDRESS is not set: "
                    "run fsmond under dbus-run-session, or give --bus ADDRESS or --no-dbus")
        return f"cannot connect to the session bus ({session}): {e}"
    return f"cannot connect to the bus {bus}: {e}"


class ObjectManagerBus(HookedBus):
    """The ObjectManager's signals from its path (OBJECTS_PATH), and its
    GetManagedObjects refused on the Manager's."""

    def interface_added(self, path: str, interface: ServiceInterface) -> None:
        if path == ROOT_PATH or not isinstance(interface, FileSystemObject):
            return
        body = {interface.name: interface.all_variants()}
        self.send(Message.new_signal(OBJECTS_PATH, OBJECT_MANAGER,
                                     "InterfacesAdded", "oa{sa{sv}}", [path, body]))

    def interface_removed(self, path: str, interfaces: list[str]) -> None:
        if path == ROOT_PATH:
            return
        self.send(Message.new_signal(OBJECTS_PATH, OBJECT_MANAGER,
                                     "InterfacesRemoved", "oas", [path, interfaces]))

    def refuse_managed_objects(self, msg: Message) -> bool:
        """A message handler: GetManagedObjects on the Manager's path."""
        if msg.message_type is not MessageType.METHOD_CALL or msg.path != ROOT_PATH \
                or msg.member != "GetManagedObjects" or msg.interface not in (OBJECT_MANAGER, None):
            return False
        self.send(Message.new_error(
            msg, "org.freedesktop.DBus.Error.UnknownMethod",
            f"the ObjectManager of fsmond's file systems is at {OBJECTS_PATH}"))
        return True


async def connect(bus: str) -> ObjectManagerBus:
    """A connection to `bus` ("system", "session" or an address)."""
    bus_type, address = bus_type_and_address(bus)
    connection = ObjectManagerBus(bus_address=address, bus_type=bus_type)
    try:
        await connection.connect()
    except (OSError, DBusError, ValueError) as e:
        raise FsmondError(connect_error(bus, e)) from e
    make_nonblocking(connection)
    connection.add_message_handler(connection.refuse_managed_objects)
    return connection


async def until_lost(connection: ObjectManagerBus, bus: str) -> NoReturn:
    """Wait for the bus to go away, then say so as an error."""
    reason: BaseException | str = "closed"
    try:
        await connection.wait_for_disconnect()  # type: ignore[no-untyped-call]
    except (EOFError, OSError) as e:  # how dbus-fast says the peer went away
        reason = e
    raise FsmondError(f"lost the connection to the {bus} bus ({reason!r})")
