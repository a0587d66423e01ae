"""fsmond with a bus round trip added to its D-Bus publisher's pacing, to
measure whether it helps (issue 22: "pace with the bus, for example a ping
every few hundred messages"): after every PING_EVERY batches of events
(EVENT_BATCH events, two signals each), sending waits for a Ping to the bus
(org.freedesktop.DBus.Peer.Ping) to be answered, so the bus has read and
routed everything before it. Beside that fsmond paces as it does (its
connection's queue of writes).

Run as fsmond itself (the same command line):

    sudo .venv/bin/python bench/ping_paced.py --config FILE --bus ADDRESS
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from dbus_fast import Message

from fsmond.publishers.dbus import DbusPublisher

PING_EVERY = 2  # batches: 128 events, 256 signals, about 160 KB
PING = Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
               interface="org.freedesktop.DBus.Peer", member="Ping")
_queue_paced = DbusPublisher._paced
_batches: dict[int, int] = {}


async def _paced(self: DbusPublisher) -> None:
    await _queue_paced(self)
    n = _batches[id(self)] = _batches.get(id(self), 0) + 1
    if n % PING_EVERY == 0 and self._bus is not None:
        await self._bus.call(PING)


def main() -> int:
    from fsmond.cli import fsmond_main

    DbusPublisher._paced = _paced  # type: ignore[method-assign]
    return fsmond_main()


if __name__ == "__main__":
    raise SystemExit(main())
