"""What a publisher may ask of the daemon: the narrow way back.

Publishers follow the engine through its steps (fsmond.engine.step) and
never hold the daemon or read the engine's live objects; what they cannot
learn from steps (queries a client makes, the privileged methods) goes
through this protocol, as hypercorn's protocols talk out through a `send`
callable and never hold the server.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from fsmond.engine.mounts import MountChange
from fsmond.events import DevNum, MountEntry


class Control(Protocol):
    def status(self) -> dict[str, Any]:
        """GetStatus: versions, backends, counts."""

    def generation(self) -> int:
        """The mount table's generation."""

    def mounts(self) -> Iterable[MountEntry]:
        """Every mount of the table."""

    def mount_at(self, path: str) -> MountEntry | None: ...

    def changes_since(self, generation: int) -> tuple[int, bool, list[MountChange]]:
        """(generation, complete, changes): raises InvalidArgsError for a future one."""

    def mount_points(self, device: DevNum) -> list[str]:
        """All mount points of a watched file system, best name first."""

    def watches(self) -> list[dict[str, Any]]:
        """ListWatches: id, mount_point, fstype, device, classes, lower, upper."""

    def add_watch(self, mount_point: str, classes: list[str], lower: str, upper: str) -> str:
        """AddWatch; returns the file system's object path."""

    def remove_watch(self, mount_point: str) -> None: ...

    def reload(self) -> None: ...
