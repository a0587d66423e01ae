"""dbus-fast's private parts that fsmond relies on (fsmond/publishers/
dbus_transport.py), checked by name against the dbus-fast installed: an
upgrade that renames or drops one fails here, naming it."""

from __future__ import annotations

import asyncio
import inspect
import socket
from typing import Any

import dbus_fast
from dbus_fast.aio import MessageBus
from dbus_fast.aio import message_bus as aio_bus

from fsmond.publishers import dbus_transport
from fsmond.publishers.dbus_transport import PRIVATE_NAMES, HookedBus, NonBlockingSocket
from tests.publishers.buses import dbus_daemon


def owner(name: str) -> Any:
    return {"MessageBus": MessageBus, "_MessageWriter": getattr(aio_bus, name, None),
            "Message": dbus_fast.Message}[name]


def test_every_private_name_is_where_dbus_transport_expects_it() -> None:
    async def connected() -> list[str]:
        bus = await HookedBus(bus_address=address).connect()
        try:
            missing = []
            for cls_name, name in PRIVATE_NAMES:
                cls = owner(cls_name)
                instance = {"MessageBus": bus, "_MessageWriter": bus._writer}.get(cls_name)
                if cls is None:
                    missing.append(f"dbus_fast.aio.message_bus.{cls_name}")
                elif not (hasattr(cls, name) or (instance is not None
                                                 and hasattr(instance, name))):
                    missing.append(f"{cls_name}.{name}")
            return missing
        finally:
            bus.disconnect()

    with dbus_daemon() as address:
        assert asyncio.run(connected()) == []


def test_the_hooks_take_what_they_are_given() -> None:
    """The overridden hooks have dbus-fast's own parameters."""
    for name in ("_emit_interface_added", "_emit_interface_removed"):
        ours = list(inspect.signature(getattr(HookedBus, name)).parameters)
        theirs = list(inspect.signature(getattr(MessageBus, name)).parameters)
        assert ours == theirs, name


def test_the_writer_waits_when_the_socket_reports_nothing_written() -> None:
    """EAGAIN becomes 0 written; dbus-fast's write_callback then keeps the
    rest and waits for the socket (what the wrapper is for)."""
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        wrapped = NonBlockingSocket(a)
        while wrapped.send(b"x" * 65536):  # fill the socket
            pass
        assert wrapped.send(b"x") == 0
        source = inspect.getsource(aio_bus._MessageWriter.write_callback)
        assert "sock.send(" in source and "if self.offset < len(self.buf)" in source
    finally:
        a.close()
        b.close()
    assert dbus_transport.Marshalled(b"ab")._marshall(False) == b"ab"
