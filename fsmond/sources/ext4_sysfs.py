"""Errors an ext4 file system recorded before fsmond started (/sys/fs/ext4/<dev>/).

ext4 keeps errors_count and first/last_error_* in its superblock and shows
them in sysfs. They seed a file system's ErrorCount and LastError at start:
state, not an event, since they may be old news. `format_last_error` is pure.
"""

from __future__ import annotations

import datetime as dt
import os

from fsmond.events import DevNum, ErrorHistory

SYS_EXT4 = "/sys/fs/ext4"


def format_last_error(time: int, func: str, line: int, errcode: str) -> str:
    """'ext4_lookup:1855 at 2026-11-24T14:02:20Z (EUCLEAN)', or '' when none."""
    if not time and not func:
        return ""
    when = dt.datetime.fromtimestamp(time, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = f"{func}:{line} at {when}" if func else f"error at {when}"
    return f"{text} ({errcode})" if errcode and errcode != "0" else text


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def block_name(device: DevNum) -> str | None:
    """The kernel's name of a block device ('loop0', 'sda1') from its number."""
    try:
        return os.path.basename(os.readlink(f"/sys/dev/block/{device[0]}:{device[1]}"))
    except OSError:
        return None


def error_history_for(device: DevNum, root: str = SYS_EXT4) -> ErrorHistory | None:
    name = block_name(device)
    if name is None:
        return None
    base = os.path.join(root, name)
    try:
        count = int(_read(os.path.join(base, "errors_count")))
        if count == 0:
            return ErrorHistory(device, 0, "")
        last = format_last_error(
            int(_read(os.path.join(base, "last_error_time")) or 0),
            _read(os.path.join(base, "last_error_func")),
            int(_read(os.path.join(base, "last_error_line")) or 0),
            _read(os.path.join(base, "last_error_errcode")),
        )
    except (OSError, ValueError):
        return None
    return ErrorHistory(device, count, last)
