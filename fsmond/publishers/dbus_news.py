"""Which property changes are news: what each object's PropertiesChanged says.

How it works: every subscriber of the objects receives each change of a
property, and a file system's figures move on every sample while anything
writes to it; a change goes out only when it means something new. The
estimates (FillRate, SecondsToFull) go when a fill starts, stops or
reverses (at once), or when the estimate moved by more than ESTIMATE_CHANGE,
at most every ESTIMATE_SPACING seconds. The space and inode figures go with
a sample that moved one of them by a visible amount: more than VISIBLE of
the whole (df -h shows three digits), or to or from 0. A change held back
is not forgotten: what was last sent stays the reference, so a later sample
sends it once it is news.
"""

from __future__ import annotations

import time
from typing import Any

from fsmond.events import DevNum
from fsmond.publishers.dbus_convert import CONST_PROPERTIES, FS_PROPERTIES
from fsmond.publishers.dbus_wire import Fields

ESTIMATES = ("FillRate", "SecondsToFull")
ESTIMATE_CHANGE = 0.2
ESTIMATE_SPACING = 3.0  # seconds
FIGURES = (("Available", "Free", "PercentAvailable"), ("Files", "FilesAvailable"))
VISIBLE = 1e-4


class PropertyNews:
    """What was last sent of each exported object, and when its estimates last went."""

    def __init__(self) -> None:
        self._sent: dict[DevNum, dict[str, Any]] = {}
        self._estimated_at: dict[DevNum, float] = {}

    def exported(self, dev: DevNum, values: dict[str, Any]) -> None:
        """The object appeared with these values (InterfacesAdded has them)."""
        self._sent[dev] = values

    def removed(self, dev: DevNum) -> None:
        self._sent.pop(dev, None)
        self._estimated_at.pop(dev, None)

    def changed(self, dev: DevNum, now: dict[str, Any]) -> Fields:
        """The object's properties now: what PropertiesChanged says of them."""
        before = self._sent.get(dev, {})
        changed = {k: v for k, v in now.items()
                   if before.get(k) != v and k not in CONST_PROPERTIES}
        self._hold_estimates(dev, before, now, changed)
        _hold_figures(before, now, changed)
        self._sent[dev] = now
        return {k: (FS_PROPERTIES[k][0], v) for k, v in changed.items()}

    def _hold_estimates(self, dev: DevNum, before: dict[str, Any], now: dict[str, Any],
                        changed: dict[str, Any]) -> None:
        """Hold back the estimates whose change is no news yet."""
        moved = [k for k in ESTIMATES if k in changed]
        if not moved:
            return
        t = time.monotonic()
        if any(_turned(k, before.get(k), now[k]) for k in moved) or (
                t - self._estimated_at.get(dev, -ESTIMATE_SPACING) >= ESTIMATE_SPACING
                and any(_moved_much(before.get(k), now[k]) for k in moved)):
            self._estimated_at[dev] = t
            return
        _hold(moved, before, now, changed)


def _hold_figures(before: dict[str, Any], now: dict[str, Any],
                  changed: dict[str, Any]) -> None:
    """Hold back each group of figures none of which moved visibly."""
    if "Size" in changed or "Sampled" in changed:
        return
    for group, whole in zip(FIGURES, (now["Size"], now["Files"]), strict=True):
        moved = [k for k in group if k in changed]
        if not moved:
            continue
        if any(_visible(before.get(k), now[k], whole) for k in moved
               if k != "PercentAvailable"):
            continue
        _hold(moved, before, now, changed)


def _hold(keys: list[str], before: dict[str, Any], now: dict[str, Any],
          changed: dict[str, Any]) -> None:
    """Take `keys` out of `changed`, and put back in `now` what was sent of
    them: `now` becomes what was sent, the reference for the next sample."""
    for k in keys:
        del changed[k]
        now[k] = before[k]


def _visible(old: int | None, new: int, whole: int) -> bool:
    return old is None or (old == 0) != (new == 0) or abs(new - old) > VISIBLE * whole


def _turned(name: str, old: float | None, new: float) -> bool:
    """A fill started, stopped or reversed; the file system became full."""
    if old is None:
        return True
    if name == "FillRate":
        return (old > 0) != (new > 0) or (old < 0) != (new < 0)
    return (old < 0) != (new < 0) or (old == 0) != (new == 0)


def _moved_much(old: float | None, new: float) -> bool:
    if old is None:
        return True
    return abs(new - old) > ESTIMATE_CHANGE * max(abs(old), abs(new))
