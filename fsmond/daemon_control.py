"""The daemon as its clients see it: the Control that publishers are given.

Publishers follow the engine through its steps; what a client asks that
steps do not say (the status, mount-table queries, the watches) and the
privileged methods (AddWatch, RemoveWatch, Reload) come here, through the
narrow protocol of fsmond.publishers.control. Arguments are checked here,
at the boundary, so the daemon and the engine only see valid ones.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fsmond import __version__
from fsmond.config import resolve_watch_args
from fsmond.engine.mounts import MountChange
from fsmond.errors import ConfigError, InvalidArgsError
from fsmond.events import DevNum, MountEntry, dev_str, fs_object_path

if TYPE_CHECKING:
    from fsmond.daemon import Daemon


class DaemonControl:
    """fsmond.publishers.control.Control over a Daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self._engine = daemon.engine

    def status(self) -> dict[str, Any]:
        """GetStatus and `fsmonctl status`: versions, backends, counts."""
        d = self._daemon
        failed = d.failed
        out: dict[str, Any] = {
            "version": __version__,
            "uptime": round(time.monotonic() - d.started_at, 3),
            "mount_backend": d.mount_source.name,
            "error_backends": [n for n, c in (("kmsg", d.kmsg), ("fanotify", d.fserror))
                               if c is not None and n not in failed],
            "device_backend": "udev" if d.config.daemon.udev and "udev" not in failed else "",
            "mounts": len(self._engine.mounts),
            "generation": self._engine.mounts.generation,
            "filesystems": len(d.states),
            "watches": len(d.states),
            "events": d.events,
            "kmsg_overruns": getattr(d.kmsg, "overruns", 0),
            "enospc_trace": self._enospc_state(),
            "enospc_failures": getattr(d.enospc, "failures", 0),
            "enospc_from_writer": getattr(d.enospc, "from_writer", 0),
            "enospc_lost": getattr(d.enospc, "lost", 0),
            "last_reload_error": d.last_reload_error,
            "unavailable": dict(failed),
        }
        for p in d.publishers:
            out[f"{p.name}_dropped"] = getattr(getattr(p, "outbox", None), "dropped",
                                               getattr(p, "dropped", 0))
        return out

    def _enospc_state(self) -> str:
        """armed | disarmed | off | unavailable (the reason is in `unavailable`)."""
        d = self._daemon
        if "enospc-trace" in d.failed:
            return "unavailable"
        return "off" if d.enospc is None else str(d.enospc.state)

    def generation(self) -> int:
        return self._engine.mounts.generation

    def mounts(self) -> Iterable[MountEntry]:
        return self._engine.mounts.mounts.values()

    def mount_at(self, path: str) -> MountEntry | None:
        return self._engine.mounts.at(path)

    def changes_since(self, generation: int) -> tuple[int, bool, list[MountChange]]:
        return self._engine.mounts.changes_since(generation)

    def mount_points(self, device: DevNum) -> list[str]:
        return self._engine.mount_points(device)

    def watches(self) -> list[dict[str, Any]]:
        return [{
            "id": fs_object_path(dev),
            "mount_point": fs.mount_points[0] if fs.mount_points else "",
            "fstype": fs.fstype, "device": dev_str(dev),
            "classes": list(fs.classes), "lower": fs.lower, "upper": fs.upper,
        } for dev, fs in self._daemon.states.items()]

    def add_watch(self, mount_point: str, classes: list[str], lower: str, upper: str) -> str:
        """AddWatch: validated like a [[watch]]; returns the file system's object path."""
        _check_path(mount_point)
        try:
            spec = resolve_watch_args(classes, lower, upper, self._daemon.config.defaults)
        except ConfigError as e:  # the caller's arguments, not the daemon's file
            raise InvalidArgsError(str(e)) from None
        self._daemon.add_watch(mount_point, spec)
        entry = self._engine.mounts.at(mount_point)
        return fs_object_path(entry.device if entry else None)

    def remove_watch(self, mount_point: str) -> None:
        _check_path(mount_point)
        self._daemon.remove_watch(mount_point)

    def reload(self) -> None:
        self._daemon.reload()


def _check_path(mount_point: str) -> None:
    if not mount_point.startswith("/") or "\0" in mount_point or len(mount_point) > 4096:
        raise InvalidArgsError(
            f"mount point {mount_point[:100]!r} must be an absolute path of at most 4096 bytes")
