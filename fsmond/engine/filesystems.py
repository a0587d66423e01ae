"""Per-file-system state: space, inodes, read-only, errors; dedup.

How it works: one `FileSystem` per superblock (device number) that is
watched. Each `on_*` method takes one observation and the time, updates the
state and returns `Notice`s, the events it causes before they get a sequence
number (the engine adds seq, time and the file system's identity).
Duplicate suppression lives here as plain booleans: `no-space`,
`no-inodes`, `read-only` and `unresponsive` fire when their condition starts
and are re-armed only when it ends. Kernel errors are folded per second, and
kmsg's and fanotify's views of one error merged (engine/error_folds.py);
`error_count` and `last_error` grow with what the folds publish.

The superblock turning `ro` as the sampler sees it can be a forced read-only
(the kernel does it; no mount event follows) or an admin's remount (the
mount table reports it a moment later, with the per-mount change). So it is
held for RO_GRACE: a remount reported meanwhile makes it a `remounted`,
otherwise it is a `read-only`. ext4's emergency_ro is never an admin's and
needs no wait.

No space is one condition whatever says so first: statvfs (available 0), a
kernel message or a traced ENOSPC starts it, and only a sample with room
again ends it, so statvfs does not repeat what a trace said a moment before.
Traced failures are facts about writers, not a state: each kind (ENOSPC,
EDQUOT) is folded per second (engine/enospc.py), and published while the
condition holds too, since they name who failed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fsmond.engine.enospc import EDQUOT, PATH_CALLS, Folded, Folds
from fsmond.engine.error_folds import MERGE_WAIT as MERGE_WAIT  # daemon.py takes it from here
from fsmond.engine.error_folds import ErrorFolds, FoldedError
from fsmond.engine.fillrate import FillRate, seconds_to_full
from fsmond.engine.thresholds import Levels, Threshold
from fsmond.errors import TransitionError
from fsmond.events import DevNum, KernelReport, SpaceSample, WriteFailure, record

# Longer than a mount backend may take to report a remount: at once outside
# a mount storm, but the fanotify backend's sweep waits up to 5 s for a storm
# to end. A forced read-only is known sooner from kmsg, where there is kmsg.
RO_GRACE = 6.0  # seconds a superblock's new `ro` waits for the remount that explains it


class LevelSpec(Protocol):
    def to_bytes(self, size: int, block_size: int) -> int: ...


class WatchSpec(Protocol):
    """What the engine needs of a resolved watch (fsmond.config provides it)."""

    @property
    def classes(self) -> tuple[str, ...]: ...
    @property
    def lower(self) -> LevelSpec: ...
    @property
    def upper(self) -> LevelSpec: ...
    @property
    def hysteresis(self) -> LevelSpec: ...
    @property
    def inodes_lower(self) -> LevelSpec: ...
    @property
    def inodes_upper(self) -> LevelSpec: ...


@record
class Notice:
    """An event a file system caused, before it is numbered."""

    cls: str
    name: str
    details: dict[str, Any]
    source: str = ""  # overrides the file system's source, when the event has its own
    pid: int = 0
    comm: str = ""


def _has_flag(options: str, flag: str) -> bool:
    return flag in options.split(",")


def superblock_read_only(super_options: str) -> bool:
    """ro in the superblock, or ext4's emergency_ro (statvfs and mountinfo still say rw)."""
    return _has_flag(super_options, "ro") or _has_flag(super_options, "emergency_ro")


@dataclass
class FileSystem:
    device: DevNum
    fstype: str
    source: str
    super_options: str
    watch: WatchSpec
    mount_points: Sequence[str] = field(default_factory=list)
    size: int = 0
    free: int = 0
    available: int = 0
    files: int = 0
    files_free: int = 0
    files_available: int = 0
    block_size: int = 0
    sampled_at: float | None = None
    space_source: str = "statvfs"  # "btrfs": figures from btrfs's own accounting
    resource: str = ""  # what limits `available`, where the file system says (btrfs)
    rate: FillRate = field(default_factory=FillRate)
    read_only: bool = False
    responsive: bool = True
    error_count: int = 0
    last_error: str = ""
    level_problem: str = ""
    space: Threshold | None = None
    inodes: Threshold | None = None
    _no_space: bool = False
    _out_of: str = ""  # the resource the last sample-made no-space named
    _no_inodes: bool = False
    merge_wait: float = 0.0  # seconds to hold a textless error for kmsg (0: kmsg is off)
    members: tuple[DevNum, ...] = ()  # block devices it lives on, when not its own number
    pending_ro: tuple[float, str] | None = None  # (until, super options): see RO_GRACE
    _errors: ErrorFolds = field(default_factory=ErrorFolds)
    _failures: Folds = field(default_factory=Folds)

    def __post_init__(self) -> None:
        self.read_only = superblock_read_only(self.super_options)

    # ------------------------------------------------------------ derived state

    @property
    def sampled(self) -> bool:
        """Space and inode figures are known: statvfs has answered once. A file
        system whose mount points are all covered is not sampled until one shows it."""
        return self.sampled_at is not None

    @property
    def percent_available(self) -> float:
        return 100.0 * self.available / self.size if self.size else 0.0

    @property
    def fill_rate(self) -> float:
        return self.rate.rate

    @property
    def seconds_to_full(self) -> float:
        return seconds_to_full(self.available, self.size, self.rate.rate)

    @property
    def level(self) -> str:
        return self.space.state if self.space else "ok"

    @property
    def inode_level(self) -> str:
        return self.inodes.state if self.inodes else "ok"

    @property
    def at_risk(self) -> bool:
        """Near enough to full that a writer may get ENOSPC: the trace is armed."""
        return self._no_space or self.level != "ok" or self.inode_level != "ok"

    @property
    def seconds_to_level(self) -> float:
        """When the fill rate predicts the next level below (or full) is
        reached; inf when not filling."""
        rate = self.rate.urgent
        if rate <= 0 or self.space is None:
            return math.inf
        target = self.space.next_level_below(self.available)
        return (self.available - (target or 0)) / rate

    def resolved_levels(self) -> tuple[Levels, Levels | None]:
        """Levels in bytes and inodes for the current size (None: not applicable)."""
        w = self.watch
        space = Levels(
            lower=w.lower.to_bytes(self.size, self.block_size),
            upper=w.upper.to_bytes(self.size, self.block_size),
            hysteresis=w.hysteresis.to_bytes(self.size, self.block_size),
        )
        inodes = None
        if self.files > 0:
            inodes = Levels(
                lower=w.inodes_lower.to_bytes(self.files, 1),
                upper=w.inodes_upper.to_bytes(self.files, 1),
                hysteresis=max(1, self.files // 100),
            )
        return space, inodes

    # ------------------------------------------------------------ observations

    def on_sample(self, s: SpaceSample, now: float) -> list[Notice]:
        self.rate.add(now, s.available, s.size, s.block_size)
        self.sampled_at = now
        self.size, self.free, self.available = s.size, s.free, s.available
        self.space_source, self.resource = s.source, s.resource
        self.files, self.files_free, self.files_available = s.files, s.files_free, s.files_available
        self.block_size = s.block_size
        if self.read_only:
            return []  # thresholds apply only to read-write file systems
        return self._evaluate()

    def set_watch(self, watch: WatchSpec) -> list[Notice]:
        """New levels or classes: re-evaluate at once against the last sample."""
        self.watch = watch
        return self._evaluate() if self.sampled_at is not None and not self.read_only else []

    def _evaluate(self) -> list[Notice]:
        out: list[Notice] = []
        try:
            space, inodes = self.resolved_levels()
        except TransitionError as e:
            if self.level_problem != str(e):
                self.level_problem = str(e)
                out.append(Notice("err", "config", {"message": f"levels not usable: {e}"}))
            return out
        self.level_problem = ""
        out += self._cross("space", space, self.available, self.size)
        if inodes is not None:
            out += self._cross("inodes", inodes, self.files_available, self.files)
        if self.available == 0 and self.size > 0:
            # Said once; again only to name the resource when what said it
            # first (a kernel message) could not.
            if not self._no_space or (self.resource and self.resource != self._out_of):
                self._no_space = True
                self._out_of = self.resource
                details: dict[str, Any] = {
                    "available": 0, "size": self.size, "source": self.space_source}
                if self.resource:
                    details["resource"] = self.resource
                out.append(Notice("warn", "no-space", details))
        else:
            self._no_space = False
            self._out_of = ""
        if self.files > 0 and self.files_available == 0:
            if not self._no_inodes:
                self._no_inodes = True
                out.append(
                    Notice("warn", "no-inodes", {"files_available": 0, "files": self.files})
                )
        else:
            self._no_inodes = False
        return out

    def _cross(self, resource: str, levels: Levels, available: int, size: int) -> list[Notice]:
        attr = "space" if resource == "space" else "inodes"
        t: Threshold | None = getattr(self, attr)
        if t is None:
            t = Threshold(levels)
            setattr(self, attr, t)
        t.levels = levels
        pct = 100.0 * available / size if size else 0.0
        return [
            Notice("thr", "threshold", {
                "resource": resource,
                "level": c.level,
                "state": c.state,
                "available": available,
                "size": size,
                "percent_available": round(pct, 3),
                "level_value": getattr(levels, c.level),
            })
            for c in t.sample(available)
        ]

    def on_unresponsive(self, timeout: float) -> list[Notice]:
        if not self.responsive:
            return []
        self.responsive = False
        return [Notice("warn", "unresponsive", {"timeout": timeout})]

    def on_responsive(self) -> list[Notice]:
        if self.responsive:
            return []
        self.responsive = True
        return [Notice("info", "responsive", {})]

    def on_super_options(self, super_options: str, admin_remount: bool) -> list[Notice]:
        """New superblock options; read-only without an admin's remount is forced."""
        was = self.read_only
        self.super_options = super_options
        self.read_only = superblock_read_only(super_options)
        if self.read_only and not was and not admin_remount:
            return [self.read_only_notice("superblock", super_options)]
        return []

    def hold_super_read_only(self, super_options: str, now: float) -> None:
        """The sampler saw the superblock go `ro`: forced, unless a remount explains it."""
        if self.read_only:
            return
        if self.pending_ro is None:
            self.pending_ro = (now + RO_GRACE, super_options)

    def read_only_notice(self, source: str, message: str, pid: int = 0, comm: str = "") -> Notice:
        return Notice("err", "read-only", {"source": source, "message": message},
                      pid=pid, comm=comm)

    def on_report(self, r: KernelReport, now: float) -> list[Notice]:
        if r.kind == "read-only":
            if self.read_only:
                return []
            self.read_only = True
            return [self.read_only_notice(r.source, r.message, r.pid, r.comm)]
        if r.kind == "no-space":
            if self._no_space:
                return []
            self._no_space = True
            details = {"available": self.available, "size": self.size, "source": r.source,
                       "message": r.message}
            if r.resource:
                details["resource"] = r.resource
            return [Notice("warn", "no-space", details, pid=r.pid, comm=r.comm)]
        out = self._on_error(r, now)
        if r.read_only and not self.read_only:
            self.read_only = True
            out.append(self.read_only_notice(r.source, r.message, r.pid, r.comm))
        return out

    def on_write_failure(self, f: WriteFailure, attribution: str, now: float) -> list[Notice]:
        """A traced ENOSPC/EDQUOT: at once, or counted into the fold (header)."""
        out = self.flush(now)
        if f.errno != EDQUOT:
            self._no_space = True  # statvfs need not say it again (header)
        folded = self._failures.add(f, attribution, now)
        if folded is not None:
            out.append(self._failure_notice(folded))
        return out

    def _failure_notice(self, folded: Folded) -> Notice:
        f = folded.last
        details = folded.details()
        if folded.errno == EDQUOT:
            return Notice("warn", "quota-exceeded", details, pid=f.pid, comm=f.comm)
        # What the file system says limits it (btrfs), else: inodes are the
        # RFC's metadata, as a name could not be made without one.
        out_of_inodes = self.files > 0 and self.files_available == 0
        resource = self.resource or (
            "metadata" if f.syscall in PATH_CALLS and out_of_inodes else "data")
        return Notice("warn", "no-space", {
            "available": self.available, "size": self.size, "resource": resource, **details},
            pid=f.pid, comm=f.comm)

    def _on_error(self, r: KernelReport, now: float) -> list[Notice]:
        out = self.flush(now)
        folded = self._errors.add(r, now, self.merge_wait)
        if folded is not None:
            out.append(self._error_notice(folded))
        return out

    def _error_notice(self, folded: FoldedError) -> Notice:
        r = folded.report
        self.error_count += folded.count
        self.last_error = r.message or f"{r.function or 'error'} (errno {r.errno})"
        return Notice("err", "error", folded.details(), pid=r.pid, comm=r.comm)

    def flush(self, now: float) -> list[Notice]:
        """Publish what finished windows owe: a superblock `ro` no remount
        explained, a held error whose partner did not come, what a fold window
        still owes (errors, traced failures)."""
        if self.pending_ro is not None and now >= self.pending_ro[0]:
            options = self.pending_ro[1]
            self.pending_ro = None
            return self.on_super_options(options, admin_remount=False) + self.flush(now)
        return [*(self._error_notice(e) for e in self._errors.flush(now)),
                *(self._failure_notice(f) for f in self._failures.flush(now))]

    def flush_deadline(self) -> float | None:
        due = [self._errors.deadline(), self._failures.deadline(),
               self.pending_ro[0] if self.pending_ro is not None else None]
        return min((d for d in due if d is not None), default=None)

