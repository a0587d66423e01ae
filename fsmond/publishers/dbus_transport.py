"""Every use of dbus-fast's private parts, in one place (issue 22).

dbus-fast has no public way to do what fsmond needs, so this module reaches
into it, and nothing else does:

- its writer (`MessageBus._writer`: `.sock`, `.buf`, `.messages`): a full
  socket's EAGAIN is taken by dbus-fast for a dead connection (dbus-next
  #153, open in dbus-fast too), so the socket is wrapped to report "nothing
  written" instead, and the writer then waits for the socket to be
  writable; its queue's length paces sending (bounded memory); and signals
  marshalled by dbus_wire are written at once when nothing waits before
  them, or queued whole (`Marshalled`, in the shape `send` takes).
- its hooks `_emit_interface_added` / `_emit_interface_removed` (and the
  `_disconnected` flag they read): dbus-fast sends InterfacesAdded/Removed
  from the child's own path; `HookedBus` hands them to `interface_added` /
  `interface_removed` for the caller to send where they belong.

PRIVATE_NAMES lists each; tests/publishers/test_dbus_transport.py checks
them by name against the dbus-fast installed, so an upgrade that renames one
fails there, naming it, rather than somewhere in a storm. pyproject.toml
pins dbus-fast to the versions that test passes with.
"""

from __future__ import annotations

import socket
from typing import Any

from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface

# (owner, name): what this module relies on; the test checks each.
PRIVATE_NAMES = (
    ("MessageBus", "_emit_interface_added"),
    ("MessageBus", "_emit_interface_removed"),
    ("MessageBus", "_disconnected"),
    ("MessageBus", "_writer"),
    ("_MessageWriter", "sock"),
    ("_MessageWriter", "buf"),
    ("_MessageWriter", "messages"),
    ("_MessageWriter", "write_callback"),
    ("Message", "_marshall"),
)


class NonBlockingSocket:
    """dbus-fast treats EAGAIN from send() as a dead connection; report 'nothing
    written' instead, so it waits for the socket to become writable."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def send(self, data: Any) -> int:
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0

    def sendmsg(self, *args: Any) -> int:
        try:
            return self._sock.sendmsg(*args)
        except BlockingIOError:
            return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class Marshalled:
    """Signals marshalled by dbus_wire, in the shape dbus-fast's send() takes
    (a serial, no fds, `_marshall`), so that many leave in one write."""

    __slots__ = ("data",)
    serial = 1  # set: each message inside has its own
    unix_fds = None

    def __init__(self, data: bytes) -> None:
        self.data = data

    def _marshall(self, negotiate_unix_fd: bool) -> bytes:
        return self.data


class HookedBus(MessageBus):
    """A MessageBus whose InterfacesAdded/Removed go to `interface_added` and
    `interface_removed` (nothing is sent unless they send it)."""

    def interface_added(self, path: str, interface: ServiceInterface) -> None:
        pass

    def interface_removed(self, path: str, interfaces: list[str]) -> None:
        pass

    def _emit_interface_added(self, path: str, interface: ServiceInterface) -> None:
        if not self._disconnected:
            self.interface_added(path, interface)

    def _emit_interface_removed(self, path: str, removed_interfaces: list[str]) -> None:
        if not self._disconnected:
            self.interface_removed(path, removed_interfaces)


def make_nonblocking(bus: MessageBus) -> None:
    """Once connected: EAGAIN means 'wait', not 'dead'."""
    writer = bus._writer
    assert writer is not None and writer.sock is not None
    writer.sock = NonBlockingSocket(writer.sock)  # type: ignore[assignment]


def backlog(bus: MessageBus | None) -> int:
    """Writes queued in the connection, not yet on the socket."""
    writer = bus._writer if bus is not None else None
    return len(writer.messages) if writer is not None else 0


def send_bytes(bus: MessageBus, data: bytes) -> None:
    """Marshalled messages: written now when nothing is queued before them
    (without dbus-fast's queue and future: an error's way out, run cold);
    what the socket does not take, or an error, goes the usual way, which
    handles both."""
    writer = bus._writer
    if writer is not None and writer.sock is not None and writer.buf is None \
            and not writer.messages:
        try:
            sent = writer.sock.send(data)  # the NonBlockingSocket: 0 for EAGAIN
        except OSError:
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    bus.send(Marshalled(data))  # type: ignore[arg-type]
