"""Real parts for fsmond-notify's tests: a session of its own (X display on
Xvfb, a private session bus, the dunst notification server), a monitor that
records what the notification server was asked, a small spec-faithful
server for what dunst cannot be made to do (invoke an action other than the
default, or have no `actions`), and the agent itself."""

from __future__ import annotations

import asyncio
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from tests.notify.spec_server import FileManager1, Notifications
from tests.running import first_match, wait_until

NOTIFICATIONS = "org.freedesktop.Notifications"
DUNSTRC = Path(__file__).parent / "dunstrc"


def has_owner(address: str, name: str) -> bool:
    r = subprocess.run(["busctl", f"--address={address}", "status", name],
                       capture_output=True, text=True)
    return r.returncode == 0


@contextmanager
def xvfb(size: str = "900x260x24") -> Iterator[str]:
    """A virtual X display of its own; yields its DISPLAY (":N")."""
    read, write = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", size,
                             "-nolisten", "tcp"], pass_fds=(write,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    try:
        with os.fdopen(read) as f:
            number = f.readline().strip()
        assert number.isdigit(), "Xvfb did not start"
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def dunst(address: str, display: str) -> Iterator[subprocess.Popen[str]]:
    """The real notification server on `address`, drawing on `display`."""
    env = {**os.environ, "DISPLAY": display, "DBUS_SESSION_BUS_ADDRESS": address}
    proc = subprocess.Popen(["dunst", "-config", str(DUNSTRC)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: has_owner(address, NOTIFICATIONS) or proc.poll() is not None,
                   "dunst owning org.freedesktop.Notifications", 20)
        assert proc.poll() is None, f"dunst ended: {proc.stderr.read() if proc.stderr else ''}"
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


@dataclass
class Call:
    member: str
    body: list[Any]
    reply: list[Any] | None = None  # Notify's id, once the server answered


class _Thread:
    """An asyncio loop on a thread of its own, for a dbus-fast connection."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), f"could not start: {self.error!r}"

    def _run(self) -> None:
        self.loop.run_until_complete(self._guarded())
        self.loop.close()

    async def _guarded(self) -> None:
        self._stop = asyncio.Event()
        try:
            await self.main(self._ready.set, self._stop)
        except BaseException as e:  # say so in the test rather than hang it
            self.error = e
            self._ready.set()

    async def main(self, ready: Callable[[], None], stop: asyncio.Event) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


class NotificationsMonitor(_Thread):
    """Every call made to the notification server, with the id Notify
    returned: a monitor connection (org.freedesktop.DBus.Monitoring), as
    dbus-monitor is, on the session bus."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.calls: list[Call] = []
        self._new: queue.Queue[Call] = queue.Queue()
        super().__init__()

    async def main(self, ready: Callable[[], None], stop: asyncio.Event) -> None:
        bus = await MessageBus(bus_address=self.address).connect()
        waiting: dict[tuple[str, int], Call] = {}

        def handler(msg: Message) -> bool:
            if msg.message_type is MessageType.METHOD_CALL and msg.interface == NOTIFICATIONS:
                call = Call(msg.member or "", list(msg.body))
                waiting[(msg.sender or "", msg.serial)] = call
                if call.member != "Notify":
                    self._publish(call)
            elif msg.message_type is MessageType.METHOD_RETURN:
                call = waiting.pop((msg.destination or "", msg.reply_serial), None)
                if call is not None and call.member == "Notify":
                    call.reply = list(msg.body)
                    self._publish(call)
            return True  # a monitor never answers

        reply = await bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus.Monitoring", member="BecomeMonitor",
            signature="asu", body=[[f"type='method_call',interface='{NOTIFICATIONS}'",
                                    "type='method_return'"], 0]))
        assert reply is not None and reply.message_type is MessageType.METHOD_RETURN, reply
        bus.add_message_handler(handler)
        ready()
        await stop.wait()
        bus.disconnect()

    def _publish(self, call: Call) -> None:
        self.calls.append(call)
        self._new.put(call)

    def wait_for(self, pred: Callable[[Call], bool], timeout: float = 20) -> Call:
        found = first_match(self.calls, self._new, pred, timeout)
        if found is None:
            raise AssertionError("no such call; got:\n" + "\n".join(
                f"{c.member} {c.body} -> {c.reply}" for c in self.calls))
        return found

    def notifies(self) -> list[Call]:
        return [c for c in self.calls if c.member == "Notify"]

    def after(self, call: Call) -> list[Call]:
        return self.calls[self.calls.index(call) + 1:]


def summary(call: Call) -> str:
    return str(call.body[3])


def urgency(call: Call) -> int:
    hint = call.body[6].get("urgency")
    return int(hint.value) if isinstance(hint, Variant) else -1


class SpecServer(_Thread):
    """A notification server as the specification describes one: ids,
    replaces_id, CloseNotification, and, on `invoke`, ActionInvoked followed by
    NotificationClosed (dismissed), as dunst does after an action."""

    def __init__(self, address: str, capabilities: list[str]) -> None:
        self.address = address
        self.iface = Notifications(capabilities)
        super().__init__()

    async def main(self, ready: Callable[[], None], stop: asyncio.Event) -> None:
        bus = await MessageBus(bus_address=self.address).connect()
        bus.export("/org/freedesktop/Notifications", self.iface)
        await bus.request_name(NOTIFICATIONS)
        ready()
        await stop.wait()
        bus.disconnect()

    def invoke(self, nid: int, key: str) -> None:
        def both() -> None:
            self.iface.ActionInvoked(nid, key)
            if self.iface.shown.pop(nid, None) is not None:
                self.iface.NotificationClosed(nid, 2)
        self.loop.call_soon_threadsafe(both)


class FileManager(_Thread):
    """A file manager owning org.freedesktop.FileManager1; `shown` gets the
    uris of each ShowFolders."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.shown: queue.Queue[list[str]] = queue.Queue()
        super().__init__()

    async def main(self, ready: Callable[[], None], stop: asyncio.Event) -> None:
        bus = await MessageBus(bus_address=self.address).connect()
        bus.export("/org/freedesktop/FileManager1", FileManager1(self.shown))
        await bus.request_name("org.freedesktop.FileManager1")
        ready()
        await stop.wait()
        bus.disconnect()


@dataclass
class AgentProcess:
    fsmond_bus: str
    session_bus: str
    home: Path
    extra: tuple[str, ...] = ()
    uid: int | None = None  # run as this user (setpriv), not root
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        env = {**os.environ, "HOME": str(self.home),
               "XDG_CONFIG_HOME": str(self.home / ".config"),
               "XDG_STATE_HOME": str(self.home / ".local/state")}
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        self._new: queue.Queue[str] = queue.Queue()
        as_user = [] if self.uid is None else [
            "setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups"]
        self.proc = subprocess.Popen(
            [*as_user, sys.executable, "-m", "fsmond.notify", "--bus", self.fsmond_bus,
             "--session-bus", self.session_bus, "--log-level", "debug", *self.extra],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            self._new.put(line)

    def wait_log(self, text: str, timeout: float = 20) -> str:
        found = first_match(self.log, self._new, lambda line: text in line, timeout)
        if found is None:
            raise AssertionError(f"the agent never logged {text!r}:\n" + "".join(self.log[-30:]))
        return found

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return self.proc.returncode


@contextmanager
def agent(fsmond_bus: str, session_bus: str, home: Path, *extra: str,
          uid: int | None = None) -> Iterator[AgentProcess]:
    a = AgentProcess(fsmond_bus, session_bus, home, extra, uid)
    try:
        yield a
    finally:
        a.stop()
    problems = [line for line in a.log if "Traceback" in line or " ERROR " in line]
    assert not problems, "the agent said:\n" + "".join(a.log[-40:])
