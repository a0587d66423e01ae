"""Which watch a file system has: the configuration's plus run-time ones. Pure.

How it works: a file system is watched with the watch of its first mount
point (in mount-key order, engine/mount_keys.py) that has one. A mount
point's watch is a run-time watch on that very path (AddWatch; None once
RemoveWatch took it away), else the latest run-time glob that matches it,
else the configuration's (`Policy`). A storm re-resolves one file system
with thousands of mount points per batch, so resolving is cached twice:
each mount point's watch, and per device the key that named its watch;
then only the mounts added since (`mount_added`) need a look, unless the
naming one went (`mount_gone`). Both caches are emptied when the watches
change.
"""

from __future__ import annotations

from typing import Protocol

from fsmond.engine.filesystems import WatchSpec
from fsmond.engine.globs import is_glob, path_matches
from fsmond.engine.mount_keys import MountKey, contains
from fsmond.events import DevNum

# Mount points whose resolved watch is cached, at most: they come and go.
CACHED_POINTS = 100_000


class Policy(Protocol):
    """What the engine asks of the configuration."""

    def watch_for(self, mount_point: str) -> WatchSpec | None: ...
    def ignored_fstype(self, fstype: str) -> bool: ...


class Watches:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.runtime: dict[str, WatchSpec | None] = {}  # None: removed at run time
        self.globs: dict[str, WatchSpec] = {}  # AddWatch with a glob, in call order
        self._specs: dict[str, WatchSpec | None] = {}  # mount point -> its watch
        self._found: dict[DevNum, MountKey | None] = {}  # the key that named a device's watch
        self._added: dict[DevNum, list[MountKey]] = {}  # keys added since the last resolve

    # ------------------------------------------------------------ changes

    def set_policy(self, policy: Policy) -> None:
        self.policy = policy
        self._forget()

    def add(self, mount_point: str, spec: WatchSpec) -> None:
        """A run-time watch on a path, or on what a glob matches (now and later)."""
        if is_glob(mount_point):
            self.globs.pop(mount_point, None)  # the latest goes last
            self.globs[mount_point] = spec
        else:
            self.runtime[mount_point] = spec
        self._forget()

    def remove_glob(self, pattern: str) -> bool:
        """Whether there was such a run-time glob (now removed)."""
        if self.globs.pop(pattern, None) is None:
            return False
        self._forget()
        return True

    def remove(self, mount_points: list[str]) -> None:
        """No watch on these paths any more, whatever the configuration says."""
        for point in mount_points:
            self.runtime[point] = None
        self._forget()

    def _forget(self) -> None:
        self._specs.clear()
        self._found.clear()

    # ------------------------------------------------------------ mounts

    def mount_added(self, device: DevNum, key: MountKey) -> None:
        self._added.setdefault(device, []).append(key)

    def mount_gone(self, device: DevNum, key: MountKey) -> None:
        if self._found.get(device) == key:
            del self._found[device]  # what named the watch is gone: search again

    def device_gone(self, device: DevNum) -> None:
        """A device with no mount left."""
        self._found.pop(device, None)
        self._added.pop(device, None)

    # ------------------------------------------------------------ queries

    def resolve(self, device: DevNum, keys: list[MountKey], fstype: str) -> WatchSpec | None:
        """The watch of a file system with these mounts (sorted keys), if any."""
        added = self._added.pop(device, [])
        if not keys or self.policy.ignored_fstype(fstype):
            return None
        if device in self._found:
            found = self._found[device]
            for k in sorted(k for k in added if found is None or k < found):
                if contains(keys, k) and (spec := self.for_point(k[2])) is not None:
                    self._found[device] = k
                    return spec
            return self.for_point(found[2]) if found is not None else None
        for k in keys:
            if (spec := self.for_point(k[2])) is not None:
                self._found[device] = k
                return spec
        self._found[device] = None
        return None

    def for_point(self, mount_point: str) -> WatchSpec | None:
        try:
            return self._specs[mount_point]
        except KeyError:
            pass
        if mount_point in self.runtime:
            spec = self.runtime[mount_point]
        else:
            spec = next((s for pattern, s in reversed(self.globs.items())
                         if path_matches(mount_point, pattern)), None)
            if spec is None:
                spec = self.policy.watch_for(mount_point)
        if len(self._specs) > CACHED_POINTS:
            self._specs.clear()
        self._specs[mount_point] = spec
        return spec
