"""What a notification says: summary and body, in the units people know. Pure.

Sizes are df's (`df -h`: powers of 1024, one decimal below 10, rounded up,
as coreutils does, so the notification and df agree); the mount point is
the one people know: the shortest of a file system's mount points, with
$HOME written `~`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fsmond.notify.policy import FsView

_UNITS = "KMGTPEZY"


@dataclass(frozen=True, slots=True)
class Wording:
    summary: str
    body: str


def df_size(n: int) -> str:
    """Bytes as `df -h` shows them: 0, 512, 4.0K, 9.9M, 10M, 1.5G."""
    if n < 1024:
        return str(n)
    value, unit = float(n), -1
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if value < 10:
        tenth = math.ceil(value * 10 - 1e-9) / 10
        if tenth < 10:
            return f"{tenth:.1f}{_UNITS[unit]}"
        value = tenth
    whole = math.ceil(value - 1e-9)
    if whole >= 1024 and unit < len(_UNITS) - 1:
        return f"1.0{_UNITS[unit + 1]}"
    return f"{whole}{_UNITS[unit]}"


def duration(seconds: float) -> str:
    """A time to full, as a person says it."""
    minutes = seconds / 60
    if minutes < 1:
        return "less than a minute"
    if minutes < 90:
        n = round(minutes)
        return f"about {n} minute{'s' * (n != 1)}"
    hours = minutes / 60
    if hours < 36:
        n = round(hours)
        return f"about {n} hours"
    n = round(hours / 24)
    return f"about {n} days"


def known_mount_point(points: tuple[str, ...] | list[str]) -> str:
    """The shortest mount point (bind mounts and containers add longer ones);
    the first in sort order among equals. Two passes in C: a storm's file
    system has 15,000."""
    if not points:
        return ""
    shortest = min(map(len, points))
    return min(p for p in points if len(p) == shortest)


def home_relative(path: str, home: str) -> str:
    home = home.rstrip("/")
    if not home:
        return path
    if path == home:
        return "~"
    if path.startswith(home + "/"):
        return "~" + path[len(home):]
    return path


def words(kind: str, view: FsView, home: str, message: str = "") -> Wording:
    mp = home_relative(known_mount_point(view.mount_points) or view.path, home)
    summary = {
        "lower": f"Low disk space on {mp}",
        "upper": f"Very low disk space on {mp}",
        "no-space": f"{mp} is full",
        "inodes-lower": f"Few inodes left on {mp}",
        "inodes-upper": f"Very few inodes left on {mp}",
        "no-inodes": f"No inodes left on {mp}",
        "error": f"{mp} reported an error",
        "read-only": f"{mp} was made read-only after an error",
    }[kind]
    space = f"{df_size(view.available)} free of {df_size(view.size)}"
    if view.size:
        space += f" ({math.floor(view.percent_available)}% free)"
    if kind in ("inodes-lower", "inodes-upper", "no-inodes"):
        body = f"{view.files_available} of {view.files} inodes free; {space}."
    elif kind in ("error", "read-only"):
        said = f"The kernel said: {message}" if message else "The kernel reported an error."
        body = said if kind == "error" else f"{said}\nNothing can be written to it now."
    else:
        body = space + "."
        if view.seconds_to_full > 0:
            body += f" Full in {duration(view.seconds_to_full)} at this rate."
    return Wording(summary, body)


def markup_escaped(text: str) -> str:
    """For servers with the `body-markup` capability, which read the body as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
