"""A file system's mounts as a sorted list of keys, best name first. Pure.

Why a sorted list: the engine keeps one per device, and a storm adds or
removes thousands of a device's mounts in a batch; the list stays sorted
(bisect), `MountPoints` reads it in place, and many removals are cut out in
one pass.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from typing import overload

from fsmond.events import MountEntry

MountKey = tuple[bool, int, str, int]


def mount_key(e: MountEntry) -> MountKey:
    """Sorts the mount that best names a file system first: its whole root, the
    shortest path; the mount id keeps stacked mounts apart."""
    return (e.root != "/", len(e.mount_point), e.mount_point, e.mount_id)


class MountPoints(Sequence[str]):
    """A file system's mount points, best name first: a live view of the
    engine's sorted keys, as copying 15,000 names per batch of a storm was a
    tenth of fsmond's CPU in it."""

    __slots__ = ("_keys",)

    def __init__(self, keys: list[MountKey]) -> None:
        self._keys = keys

    def __len__(self) -> int:
        return len(self._keys)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [k[2] for k in self._keys[i]]
        return self._keys[i][2]

    def __iter__(self) -> Iterator[str]:
        return (k[2] for k in self._keys)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MountPoints({list(self)!r})"


def _index(keys: list[MountKey], key: MountKey) -> int:
    """Where `key` is in the sorted `keys`, or -1."""
    i = bisect.bisect_left(keys, key)
    return i if i < len(keys) and keys[i] == key else -1


def contains(keys: list[MountKey], key: MountKey) -> bool:
    return _index(keys, key) >= 0


def insert(keys: list[MountKey], key: MountKey) -> None:
    bisect.insort(keys, key)


def discard(keys: list[MountKey], gone: list[MountKey]) -> None:
    """Remove these keys, in place (MountPoints views share the list). Many
    at once are cut out in one pass: deleting them one by one moves the rest
    of the list each time, which made an unmount storm quadratic."""
    if len(gone) == 1:
        if (i := _index(keys, gone[0])) >= 0:
            del keys[i]
        return
    drop = sorted({i for k in gone if (i := _index(keys, k)) >= 0})
    kept: list[MountKey] = []
    start = 0
    for i in drop:
        kept += keys[start:i]
        start = i + 1
    kept += keys[start:]
    keys[:] = kept
