"""The sd_notify protocol against a real AF_UNIX datagram socket."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path

from fsmond.sdnotify import Notifier


def listener(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(5)
    return s


def test_ready_status_stopping_on_a_path_socket(tmp_path: Path) -> None:
    sock = listener(str(tmp_path / "notify"))
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    assert n.ready("3 file systems")
    assert sock.recv(4096) == b"READY=1\nSTATUS=3 file systems"
    assert n.status("reloading")
    assert sock.recv(4096) == b"STATUS=reloading"
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    n.close()
    sock.close()


def test_abstract_socket_and_watchdog_pings_from_the_loop() -> None:
    name = f"fsmond-test-{os.getpid()}"
    sock = listener("\0" + name)
    n = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "200000",
                  "WATCHDOG_PID": str(os.getpid())})
    assert n.watchdog_interval == 0.2

    async def main() -> None:
        task = asyncio.create_task(n.watchdog())
        await asyncio.sleep(0.35)  # pings at 0, 0.1, 0.2, 0.3
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    sock.settimeout(0)
    pings = []
    with contextlib.suppress(BlockingIOError):
        while True:
            pings.append(sock.recv(100))
    sock.close()
    n.close()
    assert len(pings) >= 2 and set(pings) == {b"WATCHDOG=1"}


def test_no_socket_no_watchdog_for_another_pid() -> None:
    n = Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert not n.enabled and n.watchdog_interval is None
    assert not n.ready("x")
