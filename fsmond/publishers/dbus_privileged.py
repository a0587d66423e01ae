"""The Manager's privileged methods: AddWatch, RemoveWatch, Reload (root only).

How it works: a dbus-fast method cannot see its caller, so these three are
taken by a message handler before dbus-fast dispatches them (the Manager
declares them only for introspection). It asks the bus for the caller's
uid first, on any bus: the shipped policy refuses non-root callers on the
system bus, but a session bus or one given by address has no such policy.
Taken before dispatch, the arguments are checked here too, against the
signature each method declares. The answer needs a round trip to the bus,
so each call is answered by a task of its own; the daemon's `Control`
does the work, its errors translated in the one place (dbus_objects).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from fsmond.events import ROOT_PATH
from fsmond.publishers.dbus_objects import BUS_NAME, MANAGER_IFACE, translate

if TYPE_CHECKING:
    from fsmond.publishers.control import Control

PRIVILEGED = {"AddWatch": "sasss", "RemoveWatch": "s", "Reload": ""}  # member -> signature


class PrivilegedCalls:
    """A message handler for the bus: `bus.add_message_handler(calls)`."""

    def __init__(self, bus: MessageBus, control: Control) -> None:
        self.bus = bus
        self.control = control
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, msg: Message) -> bool:
        """Take AddWatch/RemoveWatch/Reload, to check the caller's uid before anything."""
        if msg.message_type is not MessageType.METHOD_CALL or msg.path != ROOT_PATH \
                or msg.interface not in (MANAGER_IFACE, None) or msg.member not in PRIVILEGED:
            return False
        self._spawn(self._answer(msg))
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Message) -> None:
        bus = self.bus
        try:
            reply = await bus.call(Message(
                destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus", member="GetConnectionUnixUser",
                signature="s", body=[msg.sender]))
            if reply is None or reply.message_type is not MessageType.METHOD_RETURN:
                raise DBusError(f"{BUS_NAME}.Error.AccessDenied", "cannot tell who the caller is")
            if reply.body[0] != 0:
                raise DBusError(f"{BUS_NAME}.Error.AccessDenied",
                                f"{msg.member} is for root only (caller uid {reply.body[0]})")
            member = msg.member or ""
            if msg.signature != PRIVILEGED[member]:
                raise DBusError(f"{BUS_NAME}.Error.InvalidArgs",
                                f"{member} takes ({PRIVILEGED[member]}), not ({msg.signature})")
            with translate():
                if msg.member == "AddWatch":
                    path = self.control.add_watch(*msg.body)
                    bus.send(Message.new_method_return(msg, "o", [path]))
                    return
                if msg.member == "RemoveWatch":
                    self.control.remove_watch(msg.body[0])
                else:
                    self.control.reload()
            bus.send(Message.new_method_return(msg))
        except DBusError as e:
            bus.send(Message.new_error(msg, e.type, e.text))
