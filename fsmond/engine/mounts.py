"""The mount table model: current mounts, a generation counter and a change log.

How it works: a backend hands in either the whole table (`apply_snapshot`, at
start, after a fanotify overflow, or a mountinfo re-read) or what changed
(`apply_delta`, from fanotify + statmount). Both are reduced to the same list
of `MountChange`s by diffing on mount id, so a resync after an overflow never
loses or duplicates a mount. Every change gets the next generation number
and goes into a bounded log; `changes_since(g)` answers from the log, or says
the log no longer reaches back (complete=False) so the caller re-lists.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from fsmond.errors import InvalidArgsError
from fsmond.events import DevNum, MountDelta, MountEntry, MountSnapshot, record

ADDED, REMOVED, CHANGED = "added", "removed", "changed"


@record
class MountChange:
    generation: int
    kind: str  # added | removed | changed
    entry: MountEntry  # the new entry; for removed, the last one known
    old: MountEntry | None = None  # for changed


class MountTable:
    def __init__(self, log_size: int = 4096) -> None:
        self.mounts: dict[int, MountEntry] = {}
        self.generation = 0
        self._log: deque[MountChange] = deque(maxlen=max(1, log_size))
        self._by_point: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self.mounts)

    def apply_snapshot(self, snap: MountSnapshot) -> list[MountChange]:
        new = {e.mount_id: e for e in snap.entries}
        removed = [mid for mid in self.mounts if mid not in new]
        known = self.mounts.get
        # The mountinfo parser hands unchanged lines back as the same objects:
        # `is` settles most of a 15,000-mount table without comparing fields.
        upserts = [e for mid, e in new.items() if (old := known(mid)) is not e and old != e]
        return self._apply(upserts, removed)

    def apply_delta(self, delta: MountDelta) -> list[MountChange]:
        return self._apply([*delta.added, *delta.changed], list(delta.removed))

    def _apply(self, upserts: Iterable[MountEntry], removed: Iterable[int]) -> list[MountChange]:
        changes: list[MountChange] = []
        for mid in removed:
            old = self.mounts.pop(mid, None)
            if old is not None:
                self._unindex(old)
                changes.append(self._record(REMOVED, old))
        for entry in upserts:
            old = self.mounts.get(entry.mount_id)
            if old == entry:
                continue
            self.mounts[entry.mount_id] = entry
            if old is None:
                self._index(entry)
                changes.append(self._record(ADDED, entry))
            else:
                if old.mount_point != entry.mount_point:
                    self._unindex(old)
                    self._index(entry)
                changes.append(self._record(CHANGED, entry, old))
        return changes

    def _record(self, kind: str, entry: MountEntry, old: MountEntry | None = None) -> MountChange:
        self.generation += 1
        change = MountChange(self.generation, kind, entry, old)
        self._log.append(change)
        return change

    def _index(self, e: MountEntry) -> None:
        self._by_point.setdefault(e.mount_point, []).append(e.mount_id)

    def _unindex(self, e: MountEntry) -> None:
        ids = self._by_point.get(e.mount_point, [])
        if e.mount_id in ids:
            ids.remove(e.mount_id)
        if not ids:
            self._by_point.pop(e.mount_point, None)

    def covered(self, changes: list[MountChange]) -> list[DevNum]:
        """Devices with a mount stacked at a changed mount point: a mount on top
        of another one's mount point covers it, and its unmount uncovers it,
        so the one below may now be looked at through another mount point (or
        none). A storm's mounts each have a mount point of their own, which
        costs it a lookup per change."""
        out: list[DevNum] = []
        mounts, stack_at = self.mounts, self._by_point.get
        for c in changes:
            ids = stack_at(c.entry.mount_point)
            if ids and (len(ids) > 1 or c.kind != ADDED):
                out += [mounts[mid].device for mid in ids]
            if c.old is not None and c.old.mount_point != c.entry.mount_point:  # moved
                out += [mounts[mid].device for mid in stack_at(c.old.mount_point, ())]
        return out

    def at(self, mount_point: str) -> MountEntry | None:
        """The mount visible at a path: the last one mounted there (it covers the others)."""
        ids = self._by_point.get(mount_point)
        return self.mounts[ids[-1]] if ids else None

    def changes_since(self, generation: int) -> tuple[int, bool, list[MountChange]]:
        """(current generation, complete, changes after `generation`)."""
        if generation < 0 or generation > self.generation:
            raise InvalidArgsError(
                f"generation {generation} is not between 0 and the current {self.generation}"
            )
        if generation == self.generation:
            return self.generation, True, []
        if not self._log or self._log[0].generation > generation + 1:
            return self.generation, False, []
        first = generation + 1 - self._log[0].generation
        return self.generation, True, list(self._log)[first:]
