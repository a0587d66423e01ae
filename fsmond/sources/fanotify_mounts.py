"""The `fanotify` mount-table backend: the kernel says which mount changed.

How it works: a fanotify group marks the mount namespace for FAN_MNT_ATTACH
and FAN_MNT_DETACH. Each wake-up reads every queued event and turns the
batch into one MountDelta: attached ids are statmount'ed (in a thread, so a
storm of thousands never blocks the loop), detached ids are mapped back to
their mountinfo id, and an attach and a detach of the same id in one batch
cancel out. In a storm a batch first gathers for GATHER, so the per-batch
costs are shared by many mounts. If the queue overflowed (FAN_Q_OVERFLOW:
more than 16,384 events unread), one full listmount + statmount resync
follows as a MountSnapshot; the engine diffs it by mount id, so nothing is
lost or duplicated.

fanotify says nothing of remounts. /proc/<pid>/mountinfo raises POLLPRI on
every change of the namespace, remounts included, so a wake-up triggers a
sweep: mountinfo is read again and compared with the last sweep's read
line by line; a new line is parsed, and only the mounts whose line shows
something else than what is known are statmount'ed (one read of the file
instead of a statmount of every mount per change; after a storm, when every
line is new, a parse each instead of a statmount each). During
an attach/detach storm the sweep waits until the storm is over (one sweep
per storm), or SWEEP_MAX_WAIT at most, so that churn that never pauses
cannot hide a remount.

Outside a storm the sweep runs at once. A mount's options can only be read
while it is attached: once its detach is read, statmount and mountinfo no
longer know it, and a remount made just before the unmount is lost unless
the sweep got there first. So a lone attach or detach does not delay the
sweep (it used to wait STORM_QUIET after any of them, and `mount; mount -o
remount,ro; umount` within half a second reported no remount); only a storm
does: STORM_EVENTS attaches and detaches or more, none STORM_QUIET after the
one before. That is for tables of up to EARLY_READ_MAX mounts: a larger
one's sweep still waits for STORM_QUIET after any attach or detach.
With a small table, mountinfo is even read in the POLLPRI callback itself
(no thread hop: `umount` run right after `mount -o remount` follows within
a few milliseconds), and a suspect that statmount no longer finds is taken
as its line shows it. A large table's sweep also waits SWEEP_DELAY first,
as it always did: a read of it costs tens of milliseconds (it cannot win
that race anyway), and the wait lets a storm's first batches show. If the
unmount comes before mountinfo is read, the remount is lost still: the
kernel keeps nothing of a detached mount to ask.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import time
from collections.abc import Callable

from fsmond.errors import KernelFormatError
from fsmond.events import MountDelta, MountEntry, MountSnapshot, Observation
from fsmond.sources import mountapi
from fsmond.sources.mountinfo import mountinfo_path, parse_line

log = logging.getLogger(__name__)

SWEEP_DELAY = 0.05  # before a sweep of a large table, for a storm to show itself
STORM_QUIET = 0.5  # no attach/detach for this long: the storm is over
SWEEP_MAX_WAIT = 5.0  # but a sweep waits no longer than this for the storm's end
STORM_GAP = 0.05  # a change this soon after the last batch: in a storm
STORM_EVENTS = 64  # this many attaches/detaches without a quiet spell: a storm
# (a script's few mount commands are not one)
# In a storm, a batch gathers this long before it is read: bigger batches
# cost less CPU per mount, and the lag after the storm did not move
# (BENCHMARKS.md, the gather window).
GATHER = 0.05
# Up to this many mounts, a POLLPRI reads mountinfo at once, on the loop: a
# small read, and the only way to see a remount its unmount follows closely.
EARLY_READ_MAX = 1000


class FanotifyMountSource:
    name = "fanotify"

    def __init__(self, emit: Callable[[Observation], None],
                 ns_path: str = "/proc/self/ns/mnt") -> None:
        self._emit = emit
        self.ns_path = ns_path
        own = mountapi.is_own_namespace(ns_path)
        self._ns_id = 0 if own else mountapi.mnt_ns_id_of(ns_path)
        self._mountinfo = mountinfo_path("" if own else ns_path)
        # Another namespace is listed from its process's root (see root_mount_of).
        self._root = None if own else mountapi.root_mount_of(ns_path)
        self._known: dict[int, MountEntry] = {}  # unique id -> entry
        self._lines: set[bytes] = set()  # mountinfo as the last sweep saw it
        self._early: bytes | None = None  # mountinfo as read when POLLPRI came
        self._mi = -1
        self.overflows = 0
        self.sweeps = 0
        self.swept = 0  # mounts statmount'ed by sweeps
        self.batches = 0
        self._last_event = 0.0
        self._recent = 0  # attaches/detaches since the last quiet spell (STORM_QUIET)
        self._sweep_wanted = asyncio.Event()
        self._watch_pollpri: Callable[[], None] = lambda: None
        self._unwatch_pollpri: Callable[[], object] = lambda: None

    # ----------------------------------------------------------- kernel calls

    def _stat_all(self, ids: list[int]) -> dict[int, MountEntry]:
        out = {}
        for uid in ids:
            found = mountapi.statmount(uid, self._ns_id)
            if found is not None:
                out[uid] = found.entry
        return out

    def _stat_reachable(self, ids: list[int]) -> dict[int, MountEntry]:
        """The attached mounts that hang, through their parents, from a mount
        we know. fanotify reports every attach in the namespace, also those
        no path reaches: a systemd unit's namespace keeps the old root under
        the new one, and a host mount propagates into both copies, of which
        only the one under our root is in listmount and mountinfo."""
        found = {}
        for uid in ids:
            if (sm := mountapi.statmount(uid, self._ns_id)) is not None:
                found[uid] = sm
        out: dict[int, MountEntry] = {}
        grew = True
        while grew:  # a new tree's mounts may come in any order
            grew = False
            for uid, sm in list(found.items()):
                if sm.parent_unique_id in self._known or sm.parent_unique_id in out:
                    out[uid] = found.pop(uid).entry
                    grew = True
        return out  # what is left in `found` no path reaches

    def _full_table(self) -> dict[int, MountEntry]:
        if self._root is None:
            return self._stat_all(mountapi.listmount_all(self._ns_id))
        return self._stat_all([self._root, *mountapi.listmount_all(self._ns_id, self._root)])

    # --------------------------------------------------------------- the loop

    async def run(self, started: Callable[[], None]) -> None:
        fd = mountapi.open_mount_fanotify(self.ns_path)
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        mi = self._mi = os.open(self._mountinfo, os.O_RDONLY | os.O_CLOEXEC)
        ep = select.epoll()
        try:
            ep.register(mi, select.EPOLLPRI | select.EPOLLERR)
            ep.poll(0)
            await asyncio.to_thread(self._new_lines)  # what the first sweep compares with
            def on_readable() -> None:
                # Level-triggered: until the batch is read (statmount runs in a
                # thread meanwhile) the fd stays readable and would spin the loop.
                loop.remove_reader(fd)
                readable.set()

            loop.add_reader(fd, on_readable)
            self._watch_pollpri = lambda: loop.add_reader(ep.fileno(), self._on_pollpri, ep)
            self._unwatch_pollpri = lambda: loop.remove_reader(ep.fileno())
            self._watch_pollpri()
            self._known = await asyncio.to_thread(self._full_table)
            self._emit(MountSnapshot(tuple(self._known.values())))
            started()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._sweeper())
                while True:
                    await readable.wait()
                    readable.clear()
                    if time.monotonic() - self._last_event < STORM_GAP:
                        # A storm: let a batch gather, so that one statmount
                        # pass, engine pass and D-Bus write serve many mounts
                        # (one each costs Python per mount). A lone
                        # change is read at once.
                        await asyncio.sleep(GATHER)
                    await self._read_batch(fd)
                    loop.add_reader(fd, on_readable)
        finally:
            loop.remove_reader(fd)
            loop.remove_reader(ep.fileno())
            ep.close()
            os.close(mi)
            self._mi = -1
            os.close(fd)

    def _on_pollpri(self, ep: select.epoll) -> None:
        ep.poll(0)  # the loop's epoll already consumed POLLPRI; being called is the news
        if not self._storm() and len(self._known) <= EARLY_READ_MAX:
            self._early = mountapi.read_all(self._mi)
        # Stop listening until the sweep is done: in a storm every change would
        # wake us, and the sweep sees them all anyway. Changes made meanwhile
        # still show as POLLPRI when we listen again.
        self._unwatch_pollpri()
        self._sweep_wanted.set()

    def _storm(self) -> bool:
        """Attaches/detaches keep coming: a sweep now would be followed by
        more. With a large table any of them counts (as before: its sweep
        costs tens of milliseconds and cannot win the race with an unmount);
        with a small one, only many of them."""
        if time.monotonic() - self._last_event >= STORM_QUIET:
            return False
        return self._recent >= STORM_EVENTS or len(self._known) > EARLY_READ_MAX

    async def _read_batch(self, fd: int) -> None:
        events = mountapi.read_mount_events(fd)
        if not events:
            return
        now = time.monotonic()
        if now - self._last_event >= STORM_QUIET:
            self._recent = 0
        self._recent += len(events)
        self._last_event = now
        self.batches += 1
        if any(kind == "overflow" for kind, _ in events):
            self.overflows += 1
            log.warning("fanotify mount queue overflowed: resyncing the whole table")
            self._known = await asyncio.to_thread(self._full_table)
            self._emit(MountSnapshot(tuple(self._known.values())))
            return
        # The net effect of the batch per id, in order: attach then detach is nothing.
        net: dict[int, str] = {}
        for kind, uid in events:
            if kind == "detach" and net.get(uid) == "attach":
                del net[uid]
            else:
                net[uid] = kind
        attached = [uid for uid, kind in net.items() if kind == "attach"]
        removed = [self._known.pop(uid).mount_id for uid, kind in net.items()
                   if kind == "detach" and uid in self._known]
        fresh = await asyncio.to_thread(self._stat_reachable, attached) if attached else {}
        self._known.update(fresh)
        if fresh or removed:
            self._emit(MountDelta(added=tuple(fresh.values()), removed=tuple(removed)))

    async def _sweeper(self) -> None:
        due = 0.0  # when the wanted sweep waits no longer
        while True:
            await self._sweep_wanted.wait()
            due = due or time.monotonic() + SWEEP_MAX_WAIT
            if len(self._known) > EARLY_READ_MAX:
                await asyncio.sleep(SWEEP_DELAY)
            # Wait out an attach/detach storm: its POLLPRIs are explained by the
            # events; a remount inside it is caught by the one sweep after it.
            # But not for ever: under churn that never pauses, a remount would
            # never be seen.
            quiet = time.monotonic() - self._last_event
            if self._storm() and time.monotonic() < due:
                await asyncio.sleep(min(STORM_QUIET - quiet, due - time.monotonic()))
                continue
            due = 0.0
            self._sweep_wanted.clear()
            self._watch_pollpri()  # before the sweep: a change during it wakes us again
            await self._sweep()

    def _new_lines(self, text: bytes | None = None) -> set[bytes]:
        """The lines of mountinfo (read now, unless `text` was read already)
        that are new since the last read. Only the lines are kept (a quarter of
        the memory parsed entries took, BENCHMARKS.md)."""
        if text is None:
            text = mountapi.read_all(self._mi)
        lines = set(text.split(b"\n"))
        new, self._lines = lines - self._lines, lines
        return new

    def _seen_in_new_lines(self, text: bytes | None) -> list[tuple[int, MountEntry | None]]:
        """(mountinfo id, the entry as its line shows it) of each new line; None
        for a line this parser does not follow (statmount will tell)."""
        out: list[tuple[int, MountEntry | None]] = []
        for line in self._new_lines(text):
            try:
                entry = parse_line(line)
            except KernelFormatError:  # the empty line after the last, or one we misread
                if (head := line.split(b" ", 1)[0]).isdigit():
                    out.append((int(head), None))
                continue
            out.append((entry.mount_id, entry))
        return out

    async def _sweep(self) -> None:
        self.sweeps += 1
        early, self._early = self._early, None
        if early is not None:
            # The table as the change left it; then as it is now: listening
            # again (before this sweep) polls away the POLLPRI of a change
            # made since the early read, so only a read now shows that one.
            await self._sweep_text(early)
        await self._sweep_text(None)

    async def _sweep_text(self, text: bytes | None) -> None:
        """Compare mountinfo (`text`, or read now) with what is known."""
        seen = await asyncio.to_thread(self._seen_in_new_lines, text)
        # A line is new when its mount is new or changed: after a storm that is
        # every line, and all but the changed ones show what the attach's
        # statmount found. Known ones only, as known after the read: a mount
        # whose attach is not read yet will be statmount'ed then, remount or not.
        by_id = {e.mount_id: uid for uid, e in self._known.items()}
        lines = {uid: entry for mount_id, entry in seen
                 if (uid := by_id.get(mount_id)) is not None and self._known[uid] != entry}
        suspects = list(lines)
        self.swept += len(suspects)
        known = {uid: self._known[uid] for uid in suspects}
        now = await asyncio.to_thread(self._stat_all, suspects)
        for uid in suspects:
            if uid not in now and (line := lines[uid]) is not None:
                # Unmounted since its line was read: statmount no longer knows
                # it, but the line shows what it was (a remount just before the
                # unmount), rendered as statmount would.
                now[uid] = line
        changed = []
        for uid, entry in now.items():
            if self._known.get(uid) == known[uid] and entry != known[uid]:
                self._known[uid] = entry
                changed.append(entry)
        if changed:
            self._emit(MountDelta(changed=tuple(changed)))
