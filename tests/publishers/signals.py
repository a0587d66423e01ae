"""A second D-Bus connection that records every signal fsmond sends."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from tests.running import first_match


@dataclass
class Signal:
    path: str
    interface: str
    member: str
    body: list[Any]


class SignalRecorder:
    def __init__(self, address: str) -> None:
        self.address = address
        self.signals: list[Signal] = []
        self._new: queue.Queue[Signal] = queue.Queue()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "could not subscribe"

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        bus = await MessageBus(bus_address=self.address).connect()
        self._stop = asyncio.Event()

        def handler(msg: Message) -> None:
            if msg.message_type is MessageType.SIGNAL and msg.sender != "org.freedesktop.DBus":
                s = Signal(msg.path or "", msg.interface or "", msg.member or "", msg.body)
                self.signals.append(s)
                self._new.put(s)

        bus.add_message_handler(handler)
        await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                               interface="org.freedesktop.DBus", member="AddMatch",
                               signature="s", body=["type='signal'"]))
        self._ready.set()
        await self._stop.wait()
        bus.disconnect()

    def wait_for(self, pred: Callable[[Signal], bool], timeout: float = 15) -> Signal:
        found = first_match(self.signals, self._new, pred, timeout)
        if found is not None:
            return found
        raise AssertionError("no such signal; got: " + "\n".join(
            f"{x.path} {x.interface}.{x.member}" for x in self.signals[-20:]))

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
