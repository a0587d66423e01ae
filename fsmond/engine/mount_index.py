"""The mount table as the engine reads it: per device, its mounts and its watch. Pure.

How it works: MountTable (engine/mounts.py) keeps mounts by id, their
generations and the change log clients read. This index keeps beside it,
per device, the sort keys of its mounts (engine/mount_keys.py), kept sorted
as they change: a storm of bind mounts of one file system must not re-sort
thousands of mounts per batch. From them come a file system's mount points
(best name first), the mount it is looked at through, and its watch
(engine/watches.py). For each batch `apply` also says which mount events are
the file system's own (its first mount, its last unmount: clients that
follow file systems want those, not each bind mount's).

Invariant between batches: `keys` has the sorted keys of the mounts of every
device with a mount, and no entry for a device with none (after `watch_of`
has seen it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fsmond.engine.filesystems import WatchSpec
from fsmond.engine.mount_keys import MountKey, MountPoints, discard, insert, mount_key
from fsmond.engine.mounts import ADDED, CHANGED, REMOVED, MountChange, MountTable
from fsmond.engine.watches import Policy, Watches
from fsmond.events import DevNum, MountDelta, MountEntry, MountSnapshot


@dataclass
class Batch:
    """What one mount observation changed, as the engine needs it."""

    changes: list[MountChange]
    devices: list[DevNum]  # of the changed mounts, in their order
    removed: list[MountChange]  # the changes that are unmounts, in their order
    others: list[MountChange]  # the rest (mounts and changed mounts)
    own: set[int] = field(default_factory=set)  # id() of the changes that are a device's own
    # A device's first mount point when this batch unmounted it: what its
    # watch-removed names once its mount points are gone.
    gone_first: dict[DevNum, str] = field(default_factory=dict)


class MountIndex:
    def __init__(self, policy: Policy, log_size: int = 4096) -> None:
        self.table = MountTable(log_size)
        self.watches = Watches(policy)
        self.keys: dict[DevNum, list[MountKey]] = {}

    def apply(self, obs: MountSnapshot | MountDelta) -> Batch:
        if isinstance(obs, MountSnapshot):
            changes = self.table.apply_snapshot(obs)
        else:
            changes = self.table.apply_delta(obs)
        batch = Batch(changes, list(dict.fromkeys(c.entry.device for c in changes)),
                      [c for c in changes if c.kind == REMOVED],
                      [c for c in changes if c.kind != REMOVED])
        gone: dict[DevNum, list[MountKey]] = {}  # removed, until the device's next insertion
        for c in changes:
            dev = c.entry.device
            keys = self.keys.setdefault(dev, [])
            if c.kind != ADDED:
                old = mount_key(c.old if c.old is not None else c.entry)
                if keys and keys[0] == old:
                    batch.gone_first.setdefault(dev, old[2])
                gone.setdefault(dev, []).append(old)
                self.watches.mount_gone(dev, old)
            if c.kind != REMOVED:
                if dev in gone:
                    discard(keys, gone.pop(dev))
                new = mount_key(c.entry)
                insert(keys, new)
                self.watches.mount_added(dev, new)
        for dev, old_keys in gone.items():
            discard(self.keys[dev], old_keys)
        self._find_own(batch)
        return batch

    def _find_own(self, batch: Batch) -> None:
        """The file system's own mount events: the first mount of a device that
        had none before this batch, the last unmount of one left with none."""
        net: dict[DevNum, int] = {}
        for c in batch.changes:
            if c.kind != CHANGED:
                dev = c.entry.device
                net[dev] = net.get(dev, 0) + (1 if c.kind == ADDED else -1)
        for c in reversed(batch.removed):
            dev = c.entry.device
            if not self.keys.get(dev) and dev in net:
                batch.own.add(id(c))
                del net[dev]
        seen: set[DevNum] = set()
        for c in batch.others:
            dev = c.entry.device
            if c.kind == ADDED and dev not in seen:
                seen.add(dev)
                if len(self.keys.get(dev, ())) == max(0, net.get(dev, 0)):
                    batch.own.add(id(c))

    def devices(self) -> list[DevNum]:
        """Every device with a mount."""
        return list(self.keys)

    def watch_of(self, device: DevNum) -> tuple[MountEntry, WatchSpec] | None:
        """A device's best-named mount and its watch; None when it has no
        mount, an ignored type or no watch."""
        keys = self.keys.get(device)
        if not keys:
            self.keys.pop(device, None)
            self.watches.device_gone(device)
            return None
        top = self.table.mounts[keys[0][3]]
        spec = self.watches.resolve(device, keys, top.fstype)
        return (top, spec) if spec is not None else None

    def mount_points(self, device: DevNum) -> MountPoints:
        """A live view, best name first."""
        return MountPoints(self.keys.get(device, []))

    def visible_mount(self, device: DevNum) -> MountEntry | None:
        """The mount a file system is best looked at through: its first mount
        point that shows it, not one another mount covers (statvfs there would
        measure the other one). Never an autofs trigger: autofs is always
        ignored, so it never becomes a FileSystem."""
        for key in self.keys.get(device, ()):  # nearly always the first
            top = self.table.at(key[2])
            if top is not None and top.device == device:
                return top
        return None
