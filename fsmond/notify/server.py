"""The session's notification server (Desktop Notifications 1.2). I/O only.

The agent's side of org.freedesktop.Notifications: Notify with replaces_id
(one notification per file system), CloseNotification, and the server's
ActionInvoked and NotificationClosed signals, turned back into file-system
paths. The session bus is reconnected with back-off when it goes away;
a new connection, or another server taking the name, means the old
notifications are gone: `on_reset` lets the policy show again what is
still true. Capabilities are asked for each new server: the Open and Ignore
buttons only where it has `actions`, markup escaped where it reads markup.

One agent per session: the agent owns NOTIFY_NAME on the session bus, and
a second one (an XDG autostart entry beside the enabled systemd unit) exits.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Callable, Coroutine
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.constants import NameFlag, RequestNameReply
from dbus_fast.errors import DBusError

from fsmond.notify.follow import DBUS, Backoff, call
from fsmond.notify.policy import Action, Close, Show
from fsmond.notify.wording import markup_escaped

log = logging.getLogger(__name__)

SERVER = ("org.freedesktop.Notifications", "/org/freedesktop/Notifications",
          "org.freedesktop.Notifications")
FILE_MANAGER = ("org.freedesktop.FileManager1", "/org/freedesktop/FileManager1",
                "org.freedesktop.FileManager1")
NOTIFY_NAME = "org.fsmond.FsMon1.Notify"
APP_NAME = "fsmond"
MATCHES = (
    f"type='signal',sender='{SERVER[0]}',path='{SERVER[1]}',interface='{SERVER[2]}'",
    f"type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='{SERVER[0]}'",
)
CLOSED_BY_CALL = 3  # NotificationClosed's reason when CloseNotification closed it


class AlreadyRunning(Exception):
    """Another fsmond-notify serves this session."""


class Notifier:
    def __init__(self, address: str, on_action: Callable[[str, str], None],
                 on_closed: Callable[[str], None], on_reset: Callable[[], None]) -> None:
        self.address = address
        self.on_action, self.on_closed, self.on_reset = on_action, on_closed, on_reset
        self.actions: asyncio.Queue[Action] = asyncio.Queue()
        self.capabilities: frozenset[str] = frozenset()
        self.ids: dict[str, int] = {}  # file-system path -> notification id
        self.paths: dict[int, str] = {}
        # Actions on an id whose Notify reply has not been handled yet: dbus-fast
        # runs signal handlers as messages arrive, and the awaiting Notify call
        # only on a later turn, so a quick click can come first.
        self._early: dict[int, list[str]] = {}
        self._showing = 0  # Notify calls awaiting their reply
        self.mount_points: dict[str, str] = {}  # file-system path -> its mount point, for Open
        self.server = ""  # the server's unique name, "" while unknown
        self.pending: dict[str, Show] = {}  # refused while no server ran: sent when one comes
        self.bus: MessageBus | None = None
        self.connected = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, actions: list[Action]) -> None:
        for a in actions:
            self.actions.put_nowait(a)

    async def run(self) -> None:
        backoff = Backoff()
        first = True
        while True:
            try:
                bus = await MessageBus(bus_address=self.address).connect()
            except (OSError, ValueError, DBusError, EOFError) as e:
                log.warning("cannot reach the session bus %s (%s); retrying", self.address, e)
                await backoff.wait()
                continue
            backoff.reset()
            if not first:
                self._forget()
                self.on_reset()
            first = False
            try:
                await self._serve(bus)
            except (OSError, DBusError, EOFError) as e:
                log.warning("lost the session bus (%s); reconnecting", e)
            finally:
                self.bus = None
                self.connected.clear()
                if bus.connected:
                    bus.disconnect()
            log.info("the session bus went away; reconnecting")
            await backoff.wait()

    async def _serve(self, bus: MessageBus) -> None:
        reply = await bus.request_name(NOTIFY_NAME, NameFlag.DO_NOT_QUEUE)
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            raise AlreadyRunning(f"{NOTIFY_NAME} is owned: another fsmond-notify runs "
                                 "in this session")
        bus.add_message_handler(self._on_message)
        for rule in MATCHES:
            await call(bus, *DBUS, "AddMatch", "s", [rule])
        self.bus = bus
        await self._new_server(bus)
        self.connected.set()
        sender = asyncio.get_running_loop().create_task(self._send_actions(bus))
        try:
            await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
        finally:
            sender.cancel()

    async def _new_server(self, bus: MessageBus) -> None:
        """Ask the (new) server what it can do; this also starts one the bus
        can activate."""
        try:
            (caps,) = await call(bus, *SERVER, "GetCapabilities")
            (owner,) = await call(bus, *DBUS, "GetNameOwner", "s", [SERVER[0]])
        except DBusError as e:
            log.info("no notification server yet (%s); waiting for one", e)
            self.capabilities, self.server = frozenset(), ""
            return
        self.capabilities, self.server = frozenset(caps), owner
        log.info("notification server %s: %s", owner, ", ".join(sorted(caps)))

    async def _send_actions(self, bus: MessageBus) -> None:
        while True:
            action = await self.actions.get()
            try:
                if isinstance(action, Show):
                    self.pending.pop(action.path, None)
                    await self._show(bus, action)
                else:
                    self.pending.pop(action.path, None)
                    await self._close(bus, action)
            except DBusError as e:
                log.warning("no notification shown (%s); again when a server comes", e)
                if isinstance(action, Show):
                    self.pending[action.path] = action

    async def _show(self, bus: MessageBus, s: Show) -> None:
        markup = "body-markup" in self.capabilities
        buttons = ["default", "Open", "open", "Open", "ignore", "Ignore"] \
            if "actions" in self.capabilities else []
        hints = {"urgency": Variant("y", s.urgency),
                 "category": Variant("s", "device.error" if s.condition.kind in
                                     ("error", "read-only") else "device"),
                 "desktop-entry": Variant("s", "fsmond-notify")}
        body = markup_escaped(s.wording.body) if markup else s.wording.body
        self._showing += 1
        try:
            (nid,) = await call(bus, *SERVER, "Notify", "susssasa{sv}i",
                                [APP_NAME, self.ids.get(s.path, 0), "drive-harddisk",
                                 s.wording.summary, body, buttons, hints, -1])
        finally:
            self._showing -= 1
        early = self._early.pop(nid, [])
        if not self._showing:
            self._early.clear()  # other applications' notifications
        old = self.ids.get(s.path)
        if old is not None and old != nid:
            self.paths.pop(old, None)
        self.ids[s.path], self.paths[nid] = nid, s.path
        self.mount_points[s.path] = s.mount_point
        log.info("notified #%d: %s", nid, s.wording.summary)
        for key in early:
            self._action(nid, key)

    async def _close(self, bus: MessageBus, c: Close) -> None:
        nid = self.ids.pop(c.path, None)
        self.mount_points.pop(c.path, None)
        if nid is None:
            return
        self.paths.pop(nid, None)
        try:
            await call(bus, *SERVER, "CloseNotification", "u", [nid])
        except DBusError as e:  # already closed by the user or the server
            log.debug("CloseNotification %d: %s", nid, e)

    def _forget(self) -> None:
        """The server's notifications are gone, and so is the point of what
        waits to be sent: on_reset derives it all again from the policy."""
        self.ids.clear()
        self.paths.clear()
        self.pending.clear()
        while not self.actions.empty():
            self.actions.get_nowait()

    def _on_message(self, msg: Message) -> None:
        if msg.message_type is not MessageType.SIGNAL:
            return
        if msg.member == "NameOwnerChanged" and msg.sender == "org.freedesktop.DBus":
            name, _old, new = msg.body
            if name == SERVER[0] and new and new != self.server and self.bus is not None:
                self._spawn(self._server_replaced(self.bus))
            return
        if msg.interface != SERVER[2] or (self.server and msg.sender != self.server):
            return
        if msg.member == "ActionInvoked":
            nid, key = msg.body
            if nid in self.paths:
                self._action(nid, key)
            elif self._showing:
                self._early.setdefault(nid, []).append(key)
        elif msg.member == "NotificationClosed":
            nid, reason = msg.body
            path = self.paths.pop(nid, None)
            if path is not None and reason != CLOSED_BY_CALL:
                self.ids.pop(path, None)
                self.on_closed(path)

    def _action(self, nid: int, key: str) -> None:
        path = self.paths[nid]
        if key in ("open", "default"):
            self._spawn(self._open(self.mount_points.get(path, "")))
        self.on_action(path, key)

    async def _server_replaced(self, bus: MessageBus) -> None:
        """Another server took the name: what the old one showed is gone, so the
        policy shows again what is still true. A first server (none ran, or
        one was activated by our own call) gets what was refused meanwhile."""
        before = self.server
        await self._new_server(bus)
        if before and self.server != before:
            self._forget()
            self.on_reset()
        elif not before and self.server:
            self.send(list(self.pending.values()))
            self.pending.clear()

    async def _open(self, mount_point: str) -> None:
        """The mount point in the file manager: FileManager1 where the session
        has one, else xdg-open."""
        if not mount_point or self.bus is None:
            return
        uri = "file://" + urllib.parse.quote(mount_point)
        try:
            (has,) = await call(self.bus, *DBUS, "NameHasOwner", "s", [FILE_MANAGER[0]])
            (activatable,) = await call(self.bus, *DBUS, "ListActivatableNames")
            if has or FILE_MANAGER[0] in activatable:
                await call(self.bus, *FILE_MANAGER, "ShowFolders", "ass", [[uri], ""])
                return
        except DBusError as e:
            log.info("FileManager1 could not show %s (%s); trying xdg-open", uri, e)
        try:
            proc = await asyncio.create_subprocess_exec(
                "xdg-open", mount_point, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        except OSError as e:
            log.warning("cannot open %s: %s", mount_point, e)
            return
        await proc.wait()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
