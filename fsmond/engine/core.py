"""The engine: observations in, numbered events and state out. Pure.

How it works: `process(observation, now)` routes each observation to the
mount table or to the file system it concerns and turns what they report
into `Event`s with the next sequence number. The engine is told the time
and never reads a clock, a file or a socket, so every behaviour can be
replayed in a test. Which file systems are watched comes from a `Policy`
(the configuration) plus run-time watches (AddWatch/RemoveWatch). Every
input (process, tick, set_policy, add_watch, remove_watch) returns a `Step`
(engine/step.py): its events, frozen states of the file systems it added or
changed, those it removed, and the mount changes; publishers follow the
engine from its steps alone, and nothing outside reads its FileSystems.

Kernel reports name a block device; a file system's own device number is
usually that device, but btrfs sits on an anonymous 0:NN superblock over its
member devices. `Members` observations say which devices a file system lives
on.

The mount table, each device's mounts and watch are kept by `index`
(engine/mount_index.py). The indexes kept beside `filesystems` (device ->
FileSystem) and their invariants, between inputs:
- `_owners`: member block device -> file system; every value is a key of
  `filesystems`, and `_owners[m] == d` exactly when
  `m in filesystems[d].members`.
- `_risky`: within `filesystems`: those whose FileSystem.at_risk held after
  their last observation (at_risk() asks after every batch, and a table of
  thousands of file systems must not be walked each time).
- `_history` holds ext4 error histories of devices not (yet) watched, and
  `_updates` what the current input changed, empty between inputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fsmond.engine.enospc import EDQUOT, Folded, Folds, attribute
from fsmond.engine.filesystems import FileSystem, Notice, WatchSpec, superblock_read_only
from fsmond.engine.globs import is_glob
from fsmond.engine.mount_index import MountIndex
from fsmond.engine.mounts import ADDED, CHANGED, MountChange
from fsmond.engine.stamps import Stamps
from fsmond.engine.step import FsState, Step, snapshot
from fsmond.engine.watches import Policy
from fsmond.errors import InvalidArgsError, NotFoundError
from fsmond.events import (
    DeviceChange,
    DevNum,
    ErrorHistory,
    Event,
    KernelReport,
    Members,
    MountDelta,
    MountEntry,
    MountSnapshot,
    Observation,
    Responsive,
    SpaceSample,
    SuperOptions,
    Unresponsive,
    WriteFailure,
)


@dataclass
class _Pending:
    """What the current input has changed so far (becomes its Step)."""

    fs_added: set[DevNum] = field(default_factory=set)
    fs_removed: set[DevNum] = field(default_factory=set)
    fs_changed: set[DevNum] = field(default_factory=set)
    mount_changes: list[MountChange] = field(default_factory=list)


class Engine:
    def __init__(self, policy: Policy, log_size: int = 4096, merge_wait: float = 0.0) -> None:
        self.index = MountIndex(policy, log_size)
        self.mounts = self.index.table
        self.watches = self.index.watches
        self.merge_wait = merge_wait  # see FileSystem.merge_wait
        self.filesystems: dict[DevNum, FileSystem] = {}
        # Numbers and times events: `now` in every call is the caller's clock
        # for durations; see engine/stamps.py for the wall clock's part.
        self.stamps = Stamps()
        self.started = False
        self._history: dict[DevNum, ErrorHistory] = {}
        self._unowned = Folds()  # traced failures no watched file system owns
        # Devices whose FileSystem.at_risk holds, kept as their state changes:
        # the daemon asks after every batch, and a table of thousands of file
        # systems must not be walked each time.
        self._risky: set[DevNum] = set()
        self._owners: dict[DevNum, DevNum] = {}  # member block device -> file system
        self._updates = _Pending()

    # ------------------------------------------------------------------ input

    def process(self, obs: Observation, now: float) -> Step:
        return self._step(self._process(obs, now))

    def _process(self, obs: Observation, now: float) -> list[Event]:
        if isinstance(obs, MountSnapshot | MountDelta):
            return self._on_mounts(obs, now)
        if isinstance(obs, KernelReport | DeviceChange):
            return self._on_unowned(obs, now)
        if isinstance(obs, WriteFailure):
            return self._on_write_failure(obs, now)
        fs = self.filesystems.get(obs.device)
        if fs is None:
            if isinstance(obs, ErrorHistory):
                self._history[obs.device] = obs
            return []
        notices: list[Notice]
        if isinstance(obs, SpaceSample):
            notices = fs.on_sample(obs, now)
        elif isinstance(obs, Unresponsive):
            notices = fs.on_unresponsive(obs.timeout)
        elif isinstance(obs, Responsive):
            notices = fs.on_responsive()
        elif isinstance(obs, Members):
            self._set_members(fs, obs.members)
            return []
        elif isinstance(obs, SuperOptions):
            # Option changes come with a namespace change, and the mount backend
            # (which can tell an admin's remount) reports them. A forced
            # read-only does not: emergency_ro says so itself; a plain `ro` is
            # held until it is clear that no remount explains it.
            if not _forced(obs.super_options):
                if superblock_read_only(obs.super_options):
                    fs.hold_super_read_only(obs.super_options, now)
                else:
                    fs.pending_ro = None
                return []
            if _forced(fs.super_options):
                return []
            notices = fs.on_super_options(obs.super_options, admin_remount=False)
        else:
            fs.error_count, fs.last_error = obs.count, obs.last_error
            notices = []
        self._updates.fs_changed.add(fs.device)
        self._note_risk(fs)
        return self.stamps.of(fs, notices, now)

    def tick(self, now: float) -> Step:
        """Publish folded error and failure counts whose window has ended."""
        return self._step(self._tick(now))

    def _tick(self, now: float) -> list[Event]:
        out = [self._unowned_failure(f, now) for f in self._unowned.flush(now)]
        for fs in self.filesystems.values():
            notices = fs.flush(now)
            if notices:
                self._updates.fs_changed.add(fs.device)
                out += self.stamps.of(fs, notices, now)
        return out

    def next_deadline(self) -> float | None:
        deadlines = [d for fs in self.filesystems.values() if (d := fs.flush_deadline())]
        if (unowned := self._unowned.deadline()) is not None:
            deadlines.append(unowned)
        return min(deadlines, default=None)

    def at_risk(self) -> bool:
        """Whether a watched file system is near enough to full for the ENOSPC
        trace to be armed (FileSystem.at_risk)."""
        return bool(self._risky)

    def _note_risk(self, fs: FileSystem) -> None:
        # A change of it is a new state, whatever else the input did: the
        # ENOSPC trace follows it from the steps (FsState.at_risk).
        risky = fs.at_risk
        if risky == (fs.device in self._risky):
            return
        self._updates.fs_changed.add(fs.device)
        if risky:
            self._risky.add(fs.device)
        else:
            self._risky.discard(fs.device)

    # ---------------------------------------------------------------- watches

    def set_policy(self, policy: Policy, now: float) -> Step:
        """A reloaded configuration: re-resolve every file system's watch."""
        self.watches.set_policy(policy)
        return self._step(self._refresh(self.index.devices(), now))

    def add_watch(self, mount_point: str, spec: WatchSpec, now: float) -> Step:
        """A run-time watch on a mount point, or on a glob as a [[watch]] path
        (what it matches now and later). Refused before anything changes when
        nothing is mounted there, the file system is of an ignored type, or
        its levels do not fit the file system as last sampled."""
        if is_glob(mount_point):
            self.watches.add(mount_point, spec)
            return self._step(self._refresh(self.index.devices(), now))
        entry = self.mounts.at(mount_point)
        if entry is None:
            raise NotFoundError(f"nothing is mounted at {mount_point!r}")
        if self.watches.policy.ignored_fstype(entry.fstype):
            raise InvalidArgsError(
                f"{mount_point} is a {entry.fstype} file system, which fsmond ignores "
                "(a pseudo or read-only media file system; [defaults] include_fstypes "
                "can watch it)")
        fs = self.filesystems.get(entry.device)
        if fs is not None and fs.sampled:
            lower = spec.lower.to_bytes(fs.size, fs.block_size)
            upper = spec.upper.to_bytes(fs.size, fs.block_size)
            if lower < upper:
                raise InvalidArgsError(
                    f'AddWatch: watch.lower = "{spec.lower}": {lower} bytes on {mount_point} '
                    f"(a bare number is blocks of {fs.block_size} bytes) must leave more "
                    f'room than watch.upper = "{spec.upper}" ({upper} bytes)')
        self.watches.add(mount_point, spec)
        return self._step(self._refresh([entry.device], now))

    def remove_watch(self, mount_point: str, now: float) -> Step:
        if self.watches.remove_glob(mount_point):
            return self._step(self._refresh(self.index.devices(), now))
        entry = self.mounts.at(mount_point)
        if entry is None or entry.device not in self.filesystems:
            raise NotFoundError(f"no watch covers {mount_point!r}")
        self.watches.remove(list(self.filesystems[entry.device].mount_points))
        return self._step(self._refresh([entry.device], now))

    # ----------------------------------------------------------------- queries

    def _step(self, events: list[Event]) -> Step:
        u = self._updates
        if not (u.fs_added or u.fs_changed or u.fs_removed or u.mount_changes):
            return Step(tuple(events))
        self._updates = _Pending()
        fss = self.filesystems
        states = tuple(self.state(fss[d]) for d in dict.fromkeys((*u.fs_added, *u.fs_changed))
                       if d in fss)
        return Step(tuple(events), states, frozenset(u.fs_added), frozenset(u.fs_removed),
                    tuple(u.mount_changes))

    def state(self, fs: FileSystem) -> FsState:
        """A file system as publishers show it, frozen."""
        return snapshot(fs, self.index.visible_mount(fs.device))

    def mount_points(self, device: DevNum) -> list[str]:
        """All mount points of a watched file system (its FsState has the first few)."""
        fs = self.filesystems.get(device)
        return list(fs.mount_points) if fs is not None else []

    # ------------------------------------------------------------------ mounts

    def _on_mounts(self, obs: MountSnapshot | MountDelta, now: float) -> list[Event]:
        batch = self.index.apply(obs)
        changes = batch.changes
        self._updates.mount_changes += changes
        # Unmounts are reported while their file system still exists.
        events = self._mount_events(batch.removed, now, batch.own)
        events += self._refresh(batch.devices, now, batch.gone_first)
        events += self._mount_events(batch.others, now, batch.own)
        # Covered or uncovered: looked at elsewhere now (FsState.sample_path),
        # though nothing of their own changed.
        fss = self.filesystems
        self._updates.fs_changed.update(d for d in self.mounts.covered(changes) if d in fss)
        self.started = True
        return events

    def _mount_events(self, changes: Iterable[MountChange], now: float,
                      own: set[int]) -> list[Event]:
        out: list[Event] = []
        for c in changes:
            fs = self.filesystems.get(c.entry.device)
            if fs is None:
                continue
            e = c.entry
            if c.kind == CHANGED and c.old is not None:
                out += self._mount_changed(fs, c.old, e, now)
                continue
            if not self.started:
                continue
            if "info" not in fs.watch.classes:
                continue
            # Straight to an Event: a storm makes 15,000 of these.
            per_mount = id(c) not in own
            if c.kind == ADDED:
                out.append(self.stamps.one(fs, "info", "mounted", {
                    "options": e.options, "super_options": e.super_options,
                    "mount_id": e.mount_id}, now, e.mount_point, per_mount=per_mount))
            else:
                out.append(self.stamps.one(fs, "info", "unmounted", {"mount_id": e.mount_id},
                                           now, e.mount_point, per_mount=per_mount))
        return out

    def _mount_changed(
        self, fs: FileSystem, old: MountEntry, new: MountEntry, now: float
    ) -> list[Event]:
        forced = (
            old.options == new.options
            and superblock_read_only(new.super_options)
            and not superblock_read_only(old.super_options)
        )
        notices: list[Notice] = []
        fs.pending_ro = None  # the mount table tells now whether it was a remount
        if new.super_options != fs.super_options:
            notices += fs.on_super_options(new.super_options, admin_remount=not forced)
            self._updates.fs_changed.add(fs.device)
        if not forced and (old.options, old.super_options) != (new.options, new.super_options):
            notices.append(Notice("info", "remounted", {
                "old_options": old.options, "options": new.options,
                "old_super_options": old.super_options, "super_options": new.super_options,
                "mount_id": new.mount_id}))
        if old.mount_point != new.mount_point:
            notices.append(Notice("info", "moved", {
                "old_mount_point": old.mount_point, "mount_id": new.mount_id}))
        return self.stamps.of(fs, notices, now, new.mount_point)

    def _refresh(self, devices: Iterable[DevNum], now: float,
                 gone_first: dict[DevNum, str] | None = None) -> list[Event]:
        """Bring FileSystem objects in line with the mounts and watches of these
        devices; `gone_first`: first mount points this batch unmounted."""
        out: list[Event] = []
        for dev in devices:
            fs = self.filesystems.get(dev)
            found = self.index.watch_of(dev)
            if found is None:
                if fs is not None:
                    point = (fs.mount_points[0] if fs.mount_points
                             else (gone_first or {}).get(dev, ""))
                    out += self.stamps.of(fs, [self._watch_notice("watch-removed", fs)], now, point)
                    self._set_members(fs, ())
                    del self.filesystems[dev]
                    self._risky.discard(dev)
                    self._updates.fs_removed.add(dev)
                    self._updates.fs_added.discard(dev)
                continue
            top, spec = found
            points = self.index.mount_points(dev)
            if fs is None:
                fs = FileSystem(dev, top.fstype, top.source, top.super_options, spec,
                                merge_wait=self.merge_wait)
                self.filesystems[dev] = fs
                self._updates.fs_added.add(dev)
                self._updates.fs_removed.discard(dev)
                fs.mount_points = points
                history = self._history.pop(dev, None)
                if history is not None:
                    fs.error_count, fs.last_error = history.count, history.last_error
                notices = [self._watch_notice("watch-added", fs)]
                if fs.read_only and _forced(top.super_options):
                    notices.append(fs.read_only_notice("superblock", top.super_options))
                out += self.stamps.of(fs, notices, now)
                continue
            fs.mount_points = points
            self._updates.fs_changed.add(dev)
            if spec != fs.watch:
                # New classes or levels: said first, then what they change at once.
                notices = fs.set_watch(spec)
                out += self.stamps.of(fs, [self._watch_notice("watch-added", fs), *notices], now)
                self._note_risk(fs)
        return out

    def _watch_notice(self, name: str, fs: FileSystem) -> Notice:
        w = fs.watch
        return Notice("info", name, {
            "classes": list(w.classes), "lower": str(w.lower), "upper": str(w.upper)})

    # -------------------------------------------------------- kernel, devices

    def _fs_of(self, device: DevNum | None) -> FileSystem | None:
        if device is None:
            return None
        fs = self.filesystems.get(device)
        if fs is None and (owner := self._owners.get(device)) is not None:
            fs = self.filesystems.get(owner)
        return fs

    def owner_of(self, device: DevNum) -> DevNum | None:
        """The watched file system a block device belongs to, if any."""
        fs = self._fs_of(device)
        return fs.device if fs is not None else None

    def _set_members(self, fs: FileSystem, members: tuple[DevNum, ...]) -> None:
        for m in fs.members:
            if self._owners.get(m) == fs.device:
                del self._owners[m]
        fs.members = tuple(m for m in members if m != fs.device)
        for m in fs.members:
            self._owners[m] = fs.device

    def _on_unowned(self, obs: KernelReport | DeviceChange, now: float) -> list[Event]:
        fs = self._fs_of(obs.device)
        if isinstance(obs, DeviceChange):
            notice = Notice("device", obs.action, {
                "devnode": obs.devnode, "subsystem": obs.subsystem,
                "properties": dict(obs.properties)})
            if fs is None:
                return [self.stamps.unowned(notice, now, obs.device, obs.devnode)]
            return self.stamps.of(fs, [notice], now)
        if fs is None:
            # A device with no watched file system (a whole disk, an unmounted one):
            # still worth saying, not folded, attached to no object.
            notice = Notice("err" if obs.kind != "no-space" else "warn",
                            "error" if obs.kind == "error" else obs.kind, {
                                "errno": obs.errno, "count": obs.count,
                                "function": obs.function, "message": obs.message,
                                "source": obs.source, "devname": obs.devname},
                            pid=obs.pid, comm=obs.comm)
            return [self.stamps.unowned(notice, now, obs.device, obs.devname)]
        notices = fs.on_report(obs, now)
        self._note_risk(fs)
        if notices:  # a held error changes nothing a publisher shows yet
            self._updates.fs_changed.add(fs.device)
        return self.stamps.of(fs, notices, now)

    def _on_write_failure(self, f: WriteFailure, now: float) -> list[Event]:
        dev, how = attribute(f, self._device_of_mount, self.filesystems)
        fs = self._fs_of(dev)
        if fs is None:
            if how == "unwatched":
                return []  # on a file system the configuration leaves alone
            out = [self._unowned_failure(x, now) for x in self._unowned.flush(now)]
            folded = self._unowned.add(f, how, now)
            return out + ([self._unowned_failure(folded, now)] if folded else [])
        self._updates.fs_changed.add(fs.device)
        notices = fs.on_write_failure(f, how, now)
        self._note_risk(fs)
        return self.stamps.of(fs, notices, now)

    def _device_of_mount(self, mount_id: int) -> DevNum | None:
        """A mount's file system, or None for one that cannot run out of space."""
        entry = self.mounts.mounts.get(mount_id)
        if entry is None or self.watches.policy.ignored_fstype(entry.fstype):
            return None
        return entry.device

    def _unowned_failure(self, folded: Folded, now: float) -> Event:
        f = folded.last
        name = "quota-exceeded" if folded.errno == EDQUOT else "no-space"
        notice = Notice("warn", name, folded.details(), pid=f.pid, comm=f.comm)
        return self.stamps.unowned(notice, now, None, "trace")

    def note(self, cls: str, name: str, details: dict[str, Any], now: float) -> Event:
        """An event of the daemon itself (a config error), attached to no file system."""
        return self.stamps.unowned(Notice(cls, name, details), now, None, "fsmond")


def _forced(super_options: str) -> bool:
    return "emergency_ro" in super_options.split(",")
