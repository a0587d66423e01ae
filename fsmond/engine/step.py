"""The engine's output: one `Step` per input, the whole contract with publishers.

How it works: every input the engine takes (an observation, a tick, a
watch added or removed, a new policy) returns a Step: the events it made, in
order, a frozen `FsState` of each file system it added or changed (as it
stands after the input), the devices it removed, and the mount-table
changes. A publisher follows the engine from steps alone, applying each in
this order: `states` (a new file system exists before its first event),
`events`, `removed` (a file system goes after its last event), then
`mount_changes`. It never reads the engine's live objects.

Invariants (the parallel indexes): `states` has one FsState per device, for
every device in `added` and for changed ones; `added` and `removed` are
disjoint, and no device in `removed` has a state. A state is cheap: it holds
a file system's first MOUNT_POINTS_SHOWN mount points and their count, not
all of them, since a storm of bind mounts changes one file system per batch
and copying thousands of names each time cost fsmond much of a storm's CPU.
"""

from __future__ import annotations

from typing import NamedTuple

from fsmond.engine.filesystems import FileSystem
from fsmond.engine.mounts import MountChange
from fsmond.events import DevNum, Event, MountEntry

# How many mount points a state carries (best name first): what the D-Bus
# MountPoints property shows; the mount table has them all.
MOUNT_POINTS_SHOWN = 16


class FsState(NamedTuple):
    """A watched file system as publishers show it, at the end of a step.
    A named tuple: immutable and built in one call (a frozen dataclass sets
    each field through object.__setattr__), as it is on an error's cold way
    out, where every step counts."""

    device: DevNum
    fstype: str
    source: str
    mount_points: tuple[str, ...]  # the first MOUNT_POINTS_SHOWN
    mount_count: int
    # Where it is looked at (MountIndex.visible_mount): the first mount point that
    # shows it, and that mount's id; "" and 0 while every mount point is covered.
    sample_path: str
    mount_id: int
    sampled: bool  # space and inode figures are known
    size: int
    available: int
    free: int
    files: int
    files_available: int
    percent_available: float
    level: str
    inode_level: str
    read_only: bool
    responsive: bool
    error_count: int
    last_error: str
    fill_rate: float
    seconds_to_full: float
    classes: tuple[str, ...]
    lower: str
    upper: str
    at_risk: bool  # near enough to full for the ENOSPC trace to be armed
    # When the fill rate predicts the next level is reached (seconds; inf: not
    # filling): the sampler looks sooner as it nears.
    seconds_to_level: float

    @property
    def visible(self) -> bool:
        """A mount point shows it: statvfs can sample it there."""
        return bool(self.sample_path)


def snapshot(fs: FileSystem, top: MountEntry | None) -> FsState:
    """A file system as publishers show it, frozen; `top`: the mount it is looked at through."""
    w = fs.watch
    return FsState(
        fs.device, fs.fstype, fs.source, tuple(fs.mount_points[:MOUNT_POINTS_SHOWN]),
        len(fs.mount_points), top.mount_point if top is not None else "",
        top.mount_id if top is not None else 0, fs.sampled,
        fs.size, fs.available, fs.free, fs.files, fs.files_available,
        fs.percent_available, fs.level, fs.inode_level, fs.read_only, fs.responsive,
        fs.error_count, fs.last_error, fs.fill_rate, fs.seconds_to_full,
        tuple(w.classes), str(w.lower), str(w.upper), fs.at_risk, fs.seconds_to_level)


class Step(NamedTuple):
    """What one input did (see the module's header for the order to apply it).
    A named tuple, as FsState; true when it holds anything at all."""

    events: tuple[Event, ...] = ()
    states: tuple[FsState, ...] = ()
    added: frozenset[DevNum] = frozenset()
    removed: frozenset[DevNum] = frozenset()
    mount_changes: tuple[MountChange, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.events or self.refreshes())

    def refreshes(self) -> bool:
        """Whether publishers have state to refresh (not only events)."""
        return bool(self.states or self.added or self.removed or self.mount_changes)

    @property
    def changed(self) -> frozenset[DevNum]:
        """Devices with a new state (added ones included)."""
        return frozenset(s.device for s in self.states)

    def then(self, later: Step) -> Step:
        """This step and a later one as one: what a publisher would show after both."""
        if not self.refreshes():
            return Step(self.events + later.events, later.states, later.added, later.removed,
                        later.mount_changes)
        states = {s.device: s for s in self.states if s.device not in later.removed}
        states.update((s.device, s) for s in later.states)
        return Step(self.events + later.events, tuple(states.values()),
                    (self.added - later.removed) | later.added,
                    (self.removed - later.added) | later.removed,
                    self.mount_changes + later.mount_changes)
