"""What notification each file system's state calls for. Pure: no I/O, no clock.

How it works: fsmond's FileSystem objects are followed as `FsView`s (their
properties) plus the `read-only` events they send. Each view has one
*condition*, the worst thing true of it now, ranked:

    lower, inodes-lower < upper, inodes-upper < no-space, no-inodes < error < read-only

(`classes` in notify.toml can leave out thr, warn or err). One notification
per file system shows its condition: a worse condition opens it (or replaces
it, same id), a better one only updates an open one, none closes it. The
numbers alone changing never sends anything; nor do mount points coming and
going (a storm of bind mounts changes only `MountPoints`).

Errors are counted from `ErrorCount`; the count at first sight is the
baseline (errors from before, seeded by fsmond from ext4's sysfs, are old
news), and a rise makes the `error` condition, which holds until the user
dismisses or ignores it: fsmond restarting (its count starts again) does not
end it. `read-only` needs fsmond's `read-only` event (a forced one): an
admin's `remount,ro` sets ReadOnly too, and is no notification. A read-only
superblock has no space levels: a read-only image is always "full".

An ignored condition is quiet until the file system gets worse (a worse
condition, more errors) or recovers below it (then the ignore is forgotten,
and falling again notifies). Ignores are keyed by the mount point people know,
since device numbers change from boot to boot; `ignores` is what the agent
persists.

Invariants: `_records` holds one Record per followed object path; `open`
is true only for a record whose notification the server shows (the agent
keeps its id); `shown` is the condition the user last saw, open or not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fsmond.notify.wording import Wording, known_mount_point, words

READ_ONLY_IMAGES = frozenset({"squashfs", "iso9660", "udf", "erofs", "cramfs", "romfs"})

RANKS = {"lower": 1, "inodes-lower": 1, "upper": 2, "inodes-upper": 2, "no-space": 3,
         "no-inodes": 3, "error": 4, "read-only": 5}
CLASS_OF = {"lower": "thr", "inodes-lower": "thr", "upper": "thr", "inodes-upper": "thr",
            "no-space": "warn", "no-inodes": "warn", "error": "err", "read-only": "err"}
NORMAL, CRITICAL = 1, 2  # the specification's urgency hint


@dataclass(frozen=True, slots=True)
class FsView:
    """A FileSystem object's properties (SPEC section 5), as the agent needs them."""

    path: str
    fstype: str = ""
    mount_points: tuple[str, ...] = ()
    size: int = 0
    available: int = 0
    files: int = 0
    files_available: int = 0
    percent_available: float = 0.0
    level: str = "ok"
    inode_level: str = "ok"
    read_only: bool = False
    responsive: bool = True
    error_count: int = 0
    last_error: str = ""
    seconds_to_full: float = -1.0

    @classmethod
    def from_properties(cls, path: str, props: Mapping[str, Any]) -> FsView:
        def get(name: str, default: Any, kind: Callable[[Any], Any]) -> Any:
            try:
                return kind(props[name]) if name in props else default
            except (TypeError, ValueError):
                return default

        return cls(
            path=path, fstype=get("FsType", "", str),
            mount_points=tuple(props.get("MountPoints") or ()),
            size=get("Size", 0, int), available=get("Available", 0, int),
            files=get("Files", 0, int), files_available=get("FilesAvailable", 0, int),
            percent_available=get("PercentAvailable", 0.0, float),
            level=get("Level", "ok", str), inode_level=get("InodeLevel", "ok", str),
            read_only=get("ReadOnly", False, bool), responsive=get("Responsive", True, bool),
            error_count=get("ErrorCount", 0, int), last_error=get("LastError", "", str),
            seconds_to_full=get("SecondsToFull", -1.0, float))


@dataclass(frozen=True, slots=True)
class Condition:
    kind: str
    errors: int = 0  # for `error`: how many the user has been told of, so more is worse

    @property
    def rank(self) -> int:
        return RANKS[self.kind]

    def worse_than(self, other: Condition) -> bool:
        if self.rank != other.rank:
            return self.rank > other.rank
        return self.kind != other.kind or self.errors > other.errors


@dataclass(frozen=True, slots=True)
class Show:
    """Notify (replacing this file system's notification if the server shows one)."""

    path: str
    mount_point: str  # absolute, for the Open action
    condition: Condition
    urgency: int
    wording: Wording


@dataclass(frozen=True, slots=True)
class Close:
    path: str


Action = Show | Close


@dataclass
class Record:
    view: FsView
    error_base: int  # ErrorCount already accounted for
    errors: int = 0  # errors seen rising since the agent started following
    errors_told: int = 0  # of those, the ones the user dismissed or ignored
    forced_ro: bool = False
    ro_message: str = ""
    shown: Condition | None = None
    open: bool = False


@dataclass(frozen=True, slots=True)
class Filter:
    """Which conditions and file systems notify (notify.toml)."""

    classes: frozenset[str] = frozenset({"thr", "warn", "err"})
    wants: Callable[[tuple[str, ...]], bool] = field(default=lambda points: True)


@dataclass
class Policy:
    filter: Filter = field(default_factory=Filter)
    home: str = ""
    ignores: dict[str, Condition] = field(default_factory=dict)
    ignores_changed: bool = False  # set when `ignores` changed; the agent saves and resets it
    _records: dict[str, Record] = field(default_factory=dict)

    # -- what fsmond says --------------------------------------------------

    def update(self, view: FsView) -> list[Action]:
        """An object appeared, or its properties changed."""
        rec = self._records.get(view.path)
        if rec is None:
            rec = self._records[view.path] = Record(view, error_base=view.error_count)
        else:
            if view.error_count > rec.error_base:
                rec.errors += view.error_count - rec.error_base
            rec.error_base = view.error_count  # a lower count: fsmond started again
            if rec.view.read_only and not view.read_only:
                rec.forced_ro = False  # writable again (remounted rw)
            rec.view = view
        return self._decide(rec)

    def event(self, path: str, name: str, details: Mapping[str, Any]) -> list[Action]:
        """A FileSystem object's Event signal; only `read-only` says more than the
        properties do (that the kernel forced it, with its message)."""
        rec = self._records.get(path)
        if rec is None or name != "read-only":
            return []
        rec.forced_ro = True
        rec.ro_message = str(details.get("message") or details.get("source") or "")
        return self._decide(rec)

    def remove(self, path: str) -> list[Action]:
        rec = self._records.pop(path, None)
        return [Close(path)] if rec is not None and rec.open else []

    def resync(self, views: list[FsView]) -> list[Action]:
        """fsmond (re)appeared: its objects now. What was already shown stays as
        it is; objects that are gone close."""
        present = {v.path for v in views}
        out: list[Action] = []
        for path in [p for p in self._records if p not in present]:
            out += self.remove(path)
        for view in views:
            out += self.update(view)
        return out

    # -- what the user and the notification server say ----------------------

    def closed(self, path: str) -> list[Action]:
        """The server closed the notification (dismissed, expired): what it
        said counts as seen; a change notifies again."""
        rec = self._records.get(path)
        if rec is not None and rec.open:
            rec.open = False
            self._acknowledge(rec)
        return []

    def ignore(self, path: str) -> list[Action]:
        rec = self._records.get(path)
        if rec is None or rec.shown is None:
            return []
        self.ignores[self._key(rec)] = rec.shown
        self.ignores_changed = True
        out: list[Action] = [Close(path)] if rec.open else []
        rec.open = False
        self._acknowledge(rec)
        return out

    def server_reset(self) -> list[Action]:
        """A new notification server (the session bus came back, or another
        server took the name): what it showed died with the old one; what is
        still true is shown again."""
        out: list[Action] = []
        for rec in self._records.values():
            if rec.open:
                rec.open = False
                rec.shown = None
                out += self._decide(rec)
        return out

    def showing(self, path: str) -> bool:
        rec = self._records.get(path)
        return rec is not None and rec.open

    # -- the decision --------------------------------------------------------

    def condition(self, rec: Record) -> Condition | None:
        v = rec.view
        if v.fstype.split(".")[0] in READ_ONLY_IMAGES or not self.filter.wants(v.mount_points):
            return None
        found: list[Condition] = []
        if rec.forced_ro and v.read_only:
            found.append(Condition("read-only"))
        if rec.errors > rec.errors_told:
            found.append(Condition("error", rec.errors))
        if not v.read_only and v.responsive and v.size:
            if v.available == 0:
                found.append(Condition("no-space"))
            if v.files and v.files_available == 0:
                found.append(Condition("no-inodes"))
            for kind, level in (("upper", v.level), ("inodes-upper", v.inode_level)):
                if level == "upper":
                    found.append(Condition(kind))
            for kind, level in (("lower", v.level), ("inodes-lower", v.inode_level)):
                if level == "lower":
                    found.append(Condition(kind))
        for c in found:  # worst first
            if CLASS_OF[c.kind] in self.filter.classes:
                return c
        return None

    def _decide(self, rec: Record) -> list[Action]:
        now = self.condition(rec)
        key = self._key(rec)
        ignored = self.ignores.get(key)
        if ignored is not None and (now is None or now.rank < ignored.rank
                                    or now.worse_than(ignored)):
            del self.ignores[key]  # recovered below it, or got worse
            self.ignores_changed = True
            ignored = None
        before, rec.shown = rec.shown, now
        if now is None or ignored is not None:
            if rec.open:
                rec.open = False
                return [Close(rec.view.path)]
            return []
        if before is None or now.worse_than(before):
            rec.open = True
            return [self._show(rec, now)]
        if now != before and rec.open:  # better: say so, quietly
            return [self._show(rec, now)]
        return []

    def _acknowledge(self, rec: Record) -> None:
        rec.errors_told = rec.errors
        rec.shown = self.condition(rec)

    def _show(self, rec: Record, c: Condition) -> Show:
        message = rec.view.last_error or rec.ro_message  # the error itself, when fsmond has it
        urgency = NORMAL if c.kind in ("lower", "inodes-lower") else CRITICAL
        return Show(rec.view.path, self._key(rec), c, urgency,
                    words(c.kind, rec.view, self.home, message))

    def _key(self, rec: Record) -> str:
        return known_mount_point(rec.view.mount_points) or rec.view.path
