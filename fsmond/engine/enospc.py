"""Traced ENOSPC/EDQUOT failures: which file system, and folding. Pure.

How it works. A `WriteFailure` says which system call of which writer
failed, and which mounts the writer had open when the source looked; a
`sys_exit_*` record carries no fd, so the file system is inferred:

1. Candidates are the file systems the writer had open: for calls on an fd
   (the write family, fallocate, fsync, close, copy_file_range, sendfile)
   those of its files open for writing, as the failing fd must be one of
   them; for calls on a path (open, mkdir, link, rename, mknod, ...) every
   file it had open, its cwd and its root, as a path is relative to one of
   them or absolute. Mounts of ignored (pseudo) types cannot run out of
   space and are left out; mounts fsmond does not know (pipes, sockets,
   another namespace's) too.
2. One candidate for an fd call: that is the file system (`writer`, exact).
3. Several, or a path call: those of them at risk (below a level, out of
   space or inodes); one left is the answer (`writer+risk`).
4. Nothing (the writer was gone, or unreadable): the watched file systems
   at risk; the only one (`at-risk`), or the fullest of several
   (`fullest`, a guess). For EDQUOT, "at risk" means mounted with a quota
   option instead: quota is per user, statvfs does not show it.
5. Still nothing: the failure belongs to no file system (fs "/").

A file system is *at risk* while a space or inode level is reached or it is
out of space; the ENOSPC trace is armed only while one is (see the source).

Folding: the first failure of a kind (errno) on a file system is published
at once; later ones are counted, and while they keep coming one event per
FOLD_WINDOW carries the count, so a storm is at most one event per second
per file system and kind, and a lone failure is never delayed. A window
that ends with nothing counted closes the fold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fsmond.events import DevNum, WriteFailure, record

FOLD_WINDOW = 1.0  # seconds: a storm of failures becomes one event per this
MAX_WRITERS = 8  # writers named in one folded event
ENOSPC, EDQUOT = 28, 122
QUOTA_OPTIONS = frozenset({"usrquota", "grpquota", "prjquota", "quota", "usrjquota",
                           "grpjquota", "uquota", "gquota", "pquota", "uqnoenforce",
                           "gqnoenforce", "pqnoenforce"})

# System calls that name a path: the failing file is not open yet.
PATH_CALLS = frozenset({
    "open", "openat", "openat2", "creat", "mkdir", "mkdirat", "link", "linkat", "symlink",
    "symlinkat", "rename", "renameat", "renameat2", "mknod", "mknodat",
})


class Risky(Protocol):
    """What attribution asks of a file system (FileSystem provides it)."""

    @property
    def device(self) -> DevNum: ...
    @property
    def available(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def super_options(self) -> str: ...
    @property
    def at_risk(self) -> bool: ...


def has_quota(super_options: str, options: str = "") -> bool:
    return not QUOTA_OPTIONS.isdisjoint(f"{super_options},{options}".split(","))


def attribute(f: WriteFailure, device_of: Callable[[int], DevNum | None],
              watched: Mapping[DevNum, Risky]) -> tuple[DevNum | None, str]:
    """The file system a failure belongs to, and how it was found (header)."""
    mounts: Iterable[int] = f.writable if f.syscall not in PATH_CALLS else (*f.writable, *f.other)
    candidates = list(dict.fromkeys(d for m in mounts if (d := device_of(m)) is not None))
    if len(candidates) == 1 and f.syscall not in PATH_CALLS:
        return (candidates[0], "writer") if candidates[0] in watched else (None, "unwatched")

    def risky(fs: Risky) -> bool:
        return has_quota(fs.super_options) if f.errno == EDQUOT else fs.at_risk

    narrowed = [d for d in candidates if d in watched and risky(watched[d])]
    if len(narrowed) == 1:
        return narrowed[0], "writer+risk"
    pool = [watched[d] for d in narrowed] or [fs for fs in watched.values() if risky(fs)]
    if len(pool) == 1:
        return pool[0].device, "at-risk"
    if pool:
        return min(pool, key=lambda fs: fs.available / fs.size if fs.size else 0.0).device, \
            "fullest"
    return None, "none"


@record
class Folded:
    """What one event says about the failures of one kind since the last."""

    errno: int
    count: int
    last: WriteFailure
    attribution: str
    writers: tuple[str, ...]  # "comm[pid]", at most MAX_WRITERS

    def details(self) -> dict[str, Any]:
        """The event's details; errno is a number, as in `error` events."""
        d: dict[str, Any] = {
            "source": "trace", "errno": self.errno, "syscall": self.last.syscall,
            "count": self.count, "attribution": self.attribution, "writers": list(self.writers)}
        if self.errno == EDQUOT:
            d["uid"] = self.last.uid
        return d


@dataclass(slots=True)
class _Fold:
    start: float
    count: int = 0
    last: WriteFailure | None = None
    attribution: str = ""
    writers: dict[str, None] = field(default_factory=dict)

    def add(self, f: WriteFailure, attribution: str) -> None:
        self.count += f.count
        self.last, self.attribution = f, attribution
        if len(self.writers) < MAX_WRITERS:
            self.writers[f"{f.comm}[{f.pid}]"] = None

    def take(self, errno: int) -> Folded:
        assert self.last is not None
        out = Folded(errno, self.count, self.last, self.attribution, tuple(self.writers))
        self.count, self.writers = 0, {}
        return out


class Folds:
    """The open folds of one file system (or of none), by errno."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[int, _Fold] = {}

    def add(self, f: WriteFailure, attribution: str, now: float) -> Folded | None:
        """Call `flush` first. The failure to publish now, or None: counted."""
        fold = self._open.get(f.errno)
        if fold is None:
            fold = self._open[f.errno] = _Fold(now)
            fold.add(f, attribution)
            return fold.take(f.errno)
        fold.add(f, attribution)
        return None

    def flush(self, now: float) -> list[Folded]:
        out = []
        for errno, fold in list(self._open.items()):
            if now < fold.start + FOLD_WINDOW:
                continue
            if fold.count:
                out.append(fold.take(errno))
                fold.start = now  # the storm goes on: fold the next second too
            else:
                del self._open[errno]
        return out

    def deadline(self) -> float | None:
        return min((f.start + FOLD_WINDOW for f in self._open.values()), default=None)
