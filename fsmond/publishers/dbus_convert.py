"""Pure conversions from fsmond's values to D-Bus values: `Fields` for the
signals fsmond marshals itself (dbus_wire), Variants for dbus-fast.

D-Bus strings must be valid UTF-8, but mount points are bytes in the kernel:
a name that is not UTF-8 (decoded with surrogateescape) is sent with the
bad bytes replaced, plus the exact bytes under an extra `<key>_bytes` (ay),
so nothing is lost and nothing invalid goes on the wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dbus_fast import Variant

from fsmond.engine.mounts import MountChange
from fsmond.engine.step import MOUNT_POINTS_SHOWN, FsState
from fsmond.events import MountEntry, dev_str
from fsmond.publishers.dbus_wire import Fields

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

# One D-Bus type per key wherever the key appears (an event's details,
# GetStatus, the mount table, the properties), so a client can rely on it:
# byte and inode counts are t as the properties are, mount ids u as in the
# mount table. An integer under any other key is x. docs/dbus.md lists them.
INT_TYPES: dict[str, str] = {
    "mount_id": "u", "parent_id": "u", "pid": "u", "count": "u", "errno": "i",
    "seq": "t", "generation": "t", "available": "t", "size": "t",
    "files": "t", "files_available": "t", "level_value": "t",
    "mounts": "u", "filesystems": "u", "watches": "u", "events": "t", "kmsg_overruns": "t",
    "console_dropped": "t", "dbus_dropped": "t", "mqtt_dropped": "t", "uid": "u",
    "enospc_failures": "t", "enospc_from_writer": "t", "enospc_lost": "t",
}
_INT_RANGE = {"u": (0, (1 << 32) - 1), "i": (-(1 << 31), (1 << 31) - 1),
              "t": (0, (1 << 64) - 1), "x": (INT64_MIN, INT64_MAX)}


def int_field(key: str, value: int) -> tuple[str, int]:
    """An integer under `key`: its one type, the value clamped into it."""
    sig = INT_TYPES.get(key, "x")
    low, high = _INT_RANGE[sig]
    return sig, max(low, min(high, value))


def text(value: str) -> tuple[str, bytes | None]:
    """A D-Bus-safe string, and the exact bytes when it had to be changed."""
    if value.isascii():  # nearly always, and much cheaper than trying to encode
        return value, None
    try:
        value.encode("utf-8")
        return value, None
    except UnicodeEncodeError:
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate that no kernel byte makes
            raw = value.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "replace"), raw


def put_text(out: Fields, key: str, value: str) -> None:
    safe, raw = text(value)
    out[key] = ("s", safe)
    if raw is not None:
        out[key + "_bytes"] = ("ay", raw)


def fit(value: Any) -> tuple[str, Any]:
    """The best-fitting D-Bus type for a details value (recursively for maps and lists)."""
    if isinstance(value, str):  # first: most details are text
        return "s", value if value.isascii() else text(value)[0]
    if isinstance(value, Variant):  # a scalar type no Python type tells, as "o"
        return value.signature, value.value
    if isinstance(value, bool):
        return "b", value
    if isinstance(value, int):
        return "x", max(INT64_MIN, min(INT64_MAX, value))
    if isinstance(value, float):
        return "d", value
    if isinstance(value, Mapping):
        return "a{sv}", fields(value)
    if isinstance(value, list | tuple):
        if all(isinstance(v, str) for v in value):
            return "as", [text(v)[0] for v in value]
        return "av", [fit(v) for v in value]
    return "s", text(str(value))[0]


def fields(values: Mapping[str, Any]) -> Fields:
    return {text(str(k))[0]: int_field(k, v) if type(v) is int and k in INT_TYPES else fit(v)
            for k, v in values.items()}


def variants(values: Fields) -> dict[str, Variant]:
    """For dbus-fast (method replies and its own signals)."""
    return {k: _variant(sig, v) for k, (sig, v) in values.items()}


def _variant(sig: str, value: Any) -> Variant:
    if sig == "a{sv}":
        return Variant(sig, variants(value))
    if sig == "av":
        return Variant(sig, [_variant(s, v) for s, v in value])
    return Variant(sig, value)


def vardict(values: Mapping[str, Any]) -> dict[str, Variant]:
    return variants(fields(values))


def mount_fields(m: MountEntry, fs_path: str) -> Fields:
    out: Fields = {
        "mount_id": ("u", m.mount_id),
        "parent_id": ("u", m.parent_id),
        "fstype": ("s", text(m.fstype)[0]),
        "device": ("s", dev_str(m.device)),
        "options": ("s", text(m.options)[0]),
        "fs": ("o", fs_path),
    }
    put_text(out, "mount_point", m.mount_point)
    put_text(out, "root", m.root)
    put_text(out, "source", m.source)
    put_text(out, "super_options", m.super_options)
    return out


def change_fields(c: MountChange, fs_path: str) -> Fields:
    out = mount_fields(c.entry, fs_path)
    out["generation"] = ("t", c.generation)
    out["change"] = ("s", c.kind)
    if c.old is not None:
        out["old_options"] = ("s", text(c.old.options)[0])
        put_text(out, "old_super_options", c.old.super_options)
    return out


def mounts_changed_bodies(changes: list[tuple[int, bytearray]], limit: int) -> list[list[Any]]:
    """MountsChanged (t generation, aa{sv} changes) bodies of at most `limit`
    changes each (generation, `change_entries`), each with the generation its
    last change made."""
    return [[chunk[-1][0], [entries for _, entries in chunk]]
            for chunk in (changes[i:i + limit] for i in range(0, len(changes), limit))]


# MountPoints shows the first few (MOUNT_POINTS_SHOWN, all an FsState has):
# every subscriber of the objects receives each change of it, and a storm of
# bind mounts would make it O(mounts) per change. MountCount says how many
# there are; ListMounts has them all.
# name -> (signature, getter); the FileSystem object's properties (SPEC section 5).
FS_PROPERTIES: dict[str, tuple[str, Any]] = {
    "Device": ("s", lambda fs: dev_str(fs.device)),
    "FsType": ("s", lambda fs: text(fs.fstype)[0]),
    "Source": ("s", lambda fs: text(fs.source)[0]),
    "MountPoints": ("as", lambda fs: [text(p)[0]
                                      for p in fs.mount_points[:MOUNT_POINTS_SHOWN]]),
    "MountCount": ("u", lambda fs: fs.mount_count),
    "Sampled": ("b", lambda fs: fs.sampled),
    "Size": ("t", lambda fs: fs.size),
    "Available": ("t", lambda fs: fs.available),
    "Free": ("t", lambda fs: fs.free),
    "Files": ("t", lambda fs: fs.files),
    "FilesAvailable": ("t", lambda fs: fs.files_available),
    "PercentAvailable": ("d", lambda fs: round(fs.percent_available, 3)),
    "Level": ("s", lambda fs: fs.level),
    "InodeLevel": ("s", lambda fs: fs.inode_level),
    "ReadOnly": ("b", lambda fs: fs.read_only),
    "Responsive": ("b", lambda fs: fs.responsive),
    "ErrorCount": ("u", lambda fs: min(fs.error_count, 0xFFFFFFFF)),
    "LastError": ("s", lambda fs: text(fs.last_error)[0]),
    "FillRate": ("d", lambda fs: round(fs.fill_rate, 3)),
    "SecondsToFull": ("d", lambda fs: round(fs.seconds_to_full, 3)),
    "Classes": ("as", lambda fs: list(fs.classes)),
    "Lower": ("s", lambda fs: fs.lower),
    "Upper": ("s", lambda fs: fs.upper),
}
# Never change while the object exists: no PropertiesChanged for them.
CONST_PROPERTIES = frozenset({"Device", "FsType", "Source"})


def fs_values(fs: FsState) -> dict[str, Any]:
    return {name: get(fs) for name, (_sig, get) in FS_PROPERTIES.items()}
