"""Events and mount changes marshalled straight to a{sv} entries (dbus_wire).

Why: every event becomes two `Event` signals and every mount change an entry
of `MountsChanged`, so a storm of 15,000 unmounts marshals 15,000 of each,
and an error's event is marshalled cold on its way out. Building `Fields`
first and marshalling them walks every value twice. Here the
values come straight from the Event or the change, and the runs of entries
that repeat (an event's class to comm, a mount's fstype to fs, its root to
super_options: the same for a whole storm) are marshalled once and cached.

A run is cached as marshalled from an 8-aligned offset and always appended
at one (every dict entry starts 8-aligned), so its padding stays right. The
key lists here must stay those of dbus_convert's `change_fields` and the
SPEC's event; tests compare the bytes with `wire.entries` of those.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from fsmond.engine.mounts import ADDED, CHANGED, REMOVED, MountChange
from fsmond.events import Event, dev_str, format_time
from fsmond.publishers import dbus_wire as wire
from fsmond.publishers.dbus_convert import fit, int_field, text

_HEAD = {key: wire.entry_head(key, sig) for key, sig in (
    ("seq", "t"), ("time", "s"), ("class", "s"), ("name", "s"), ("fs", "o"), ("fstype", "s"),
    ("device", "s"), ("pid", "u"), ("comm", "s"), ("details", "a{sv}"), ("mount_point", "s"),
    ("source", "s"), ("mount_id", "u"), ("parent_id", "u"), ("options", "s"), ("root", "s"),
    ("super_options", "s"), ("generation", "t"), ("change", "s"), ("old_options", "s"),
    ("old_super_options", "s"))}
_U32, _U64, _I64 = (struct.Struct(f).pack for f in ("<I", "<Q", "<q"))
_PACK = {"u": _U32, "t": _U64, "x": _I64, "i": struct.Struct("<i").pack}
_ZEROS = [bytes(n) for n in range(8)]
CACHED_RUNS = 4096  # per kind of run; a full cache starts again

_event_runs: dict[tuple[str, str, str, str, str, int, str], bytes] = {}
_mount_runs: dict[tuple[str, str, str, str], bytes] = {}
_origin_runs: dict[tuple[str, str, str], bytes] = {}
_source_runs: dict[str, bytes] = {}
_text_runs: dict[tuple[str, str], bytes] = {}
_list_runs: dict[tuple[str, ...], bytes] = {}  # (key, *items)


def event_entries(e: Event) -> bytearray:
    """An event's a{sv}: seq, time, class, name, fs, fstype, device, pid,
    comm, details, mount_point (and mount_point_bytes), source (and
    source_bytes)."""
    buf = bytearray(_HEAD["seq"])  # an entry's head leaves its value aligned
    buf += _U64(e.seq)
    buf += _HEAD["time"]  # 8-aligned here, after the u64; the time is ASCII
    time = format_time(e.time).encode()
    buf += _U32(len(time)) + time + b"\0"
    buf += _ZEROS[-len(buf) % 8]
    run = (e.cls, e.name, e.fs, e.fstype, e.device, e.pid, e.comm)
    buf += _event_runs.get(run) or _event_run(run)
    buf += _ZEROS[-len(buf) % 8]
    buf += _HEAD["details"]
    wire.put_entries(buf, map_entries(e.details))
    _string_entry(buf, "mount_point", e.mount_point, exact=True)
    buf += _ZEROS[-len(buf) % 8]
    buf += _source_runs.get(e.source) or _source_run(e.source)
    return buf


def change_entries(c: MountChange, fs_path: str) -> bytearray:
    """A mount change's a{sv}, as `wire.entries(change_fields(c, fs_path))`."""
    m = c.entry
    buf = bytearray(_HEAD["mount_id"])
    buf += _U32(m.mount_id)
    buf += _ZEROS[-len(buf) % 8]
    buf += _HEAD["parent_id"]
    buf += _U32(m.parent_id)
    buf += _ZEROS[-len(buf) % 8]
    run = (m.fstype, dev_str(m.device), m.options, fs_path)
    buf += _mount_runs.get(run) or _mount_run(run)
    _string_entry(buf, "mount_point", m.mount_point, exact=True)
    buf += _ZEROS[-len(buf) % 8]
    origin = (m.root, m.source, m.super_options)
    buf += _origin_runs.get(origin) or _origin_run(origin)
    buf += _ZEROS[-len(buf) % 8]
    buf += _HEAD["generation"]
    buf += _U64(c.generation)
    buf += _KINDS.get(c.kind) or _kind_entry(c.kind)  # 8-aligned after the u64
    if c.old is not None:
        _string_entry(buf, "old_options", c.old.options)
        _string_entry(buf, "old_super_options", c.old.super_options, exact=True)
    return buf


def map_entries(values: Mapping[str, Any]) -> bytearray:
    """wire.entries(fields(values)), without building the Fields on the way.
    A text entry, and a list of text, is cached as a whole (a storm's options
    are all alike, an error's sources too); int and bool are put here, and
    anything else takes `fit`. This runs cold for every error."""
    buf = bytearray()
    for key, value in values.items():
        buf += _ZEROS[-len(buf) % 8]
        kind = type(value)
        if kind is str and value.isascii():
            buf += _text_runs.get((key, value)) or _text_run(key, value)
        elif type(key) is not str or not key.isascii():
            wire.put_entry(buf, text(str(key))[0], *fit(value))
        elif kind is int:
            sig, value = int_field(key, value)
            buf += wire.entry_head(key, sig)
            buf += _PACK[sig](value)
        elif kind is bool:
            buf += wire.entry_head(key, "b")
            buf += _U32(value)
        elif kind is list and all(type(v) is str for v in value):
            # an error's sources: ["fanotify", "kmsg"] every time
            buf += _list_runs.get((key, *value)) or _list_run(key, value)
        else:
            wire.put_entry(buf, key, *fit(value))
    return buf


def _list_run(key: str, value: list[str]) -> bytes:
    buf = bytearray()
    wire.put_entry(buf, key, *fit(value))
    return _keep(_list_runs, (key, *value), buf)


def _text_run(key: Any, value: str) -> bytes:
    raw = value.encode()
    return _keep(_text_runs, (key, value), wire.entry_head(text(str(key))[0], "s")
                 + _U32(len(raw)) + raw + b"\0")


def _event_run(run: tuple[str, str, str, str, str, int, str]) -> bytes:
    cls, name, fs, fstype, device, pid, comm = run
    buf = bytearray()
    for key, value in (("class", cls), ("name", name), ("fs", fs), ("fstype", fstype),
                       ("device", device)):
        _string_entry(buf, key, value)
    buf += _ZEROS[-len(buf) % 8]
    buf += _HEAD["pid"]
    buf += _U32(max(0, pid))
    _string_entry(buf, "comm", comm)
    return _keep(_event_runs, run, buf)


def _mount_run(run: tuple[str, str, str, str]) -> bytes:
    buf = bytearray()
    for key, value in zip(("fstype", "device", "options", "fs"), run, strict=True):
        _string_entry(buf, key, value)
    return _keep(_mount_runs, run, buf)


def _origin_run(run: tuple[str, str, str]) -> bytes:
    buf = bytearray()
    for key, value in zip(("root", "source", "super_options"), run, strict=True):
        _string_entry(buf, key, value, exact=True)
    return _keep(_origin_runs, run, buf)


def _source_run(source: str) -> bytes:
    buf = bytearray()
    _string_entry(buf, "source", source, exact=True)
    return _keep(_source_runs, source, buf)


def _keep(cache: dict[Any, bytes], run: Any, buf: bytes | bytearray) -> bytes:
    if len(cache) >= CACHED_RUNS:
        cache.clear()
    cache[run] = out = bytes(buf)
    return out


def _string_entry(buf: bytearray, key: str, value: str, exact: bool = False) -> None:
    """An s (or o) entry; text that is not UTF-8 is mended (see `text`), and
    with `exact` its bytes follow under <key>_bytes."""
    raw = None
    if not value.isascii():
        value, raw = text(value)
    buf += _ZEROS[-len(buf) % 8]
    buf += _HEAD[key]
    encoded = value.encode()
    buf += _U32(len(encoded)) + encoded + b"\0"
    if raw is not None and exact:
        wire.put_entry(buf, key + "_bytes", "ay", raw)


def _kind_entry(kind: str) -> bytes:
    buf = bytearray()
    _string_entry(buf, "change", kind)
    return bytes(buf)


_KINDS = {kind: _kind_entry(kind) for kind in (ADDED, REMOVED, CHANGED)}
