"""fsmond's own signals, marshalled by hand (D-Bus specification, little-endian).

Why: the spec wants one `Event` per event, sent from the Manager and again
from the file system's object, so a 15,000-mount storm is 60,000 signals.
Through dbus-fast each costs a Variant per value (their signatures parsed
and checked) and a generic marshalling pass, the largest part of what fsmond
spent on a storm (BENCHMARKS.md). Here a value is a plain
(signature, value) pair, an event's a{sv} is marshalled once for both
signals, headers are cached per (path, interface, member, signature), and
many signals leave in one write. Only the types fsmond sends are covered;
tests check the bytes against dbus-fast's marshaller.

Values: `Fields` (a dict of name -> (signature, value)), or what `entries`
made of one, for a{sv}; a list of (signature, value) for av; str for s/o/g;
bytes for ay; a list of str for as. Strings must be valid UTF-8 without NUL
(the kernel escapes NUL in its text; dbus_convert.text mends the UTF-8).
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Any

Fields = dict[str, tuple[str, Any]]

_U32 = struct.Struct("<I")
_FIXED = {"b": (4, struct.Struct("<I")), "u": (4, _U32), "i": (4, struct.Struct("<i")),
          "x": (8, struct.Struct("<q")),
          "t": (8, struct.Struct("<Q")), "d": (8, struct.Struct("<d")),
          "y": (1, struct.Struct("<B"))}
_ALIGN = {"s": 4, "o": 4, "g": 1, "v": 1, "a": 4, "{": 8, "(": 8,
          **{code: size for code, (size, _) in _FIXED.items()}}
SIGNAL = 4  # message type
_ZEROS = [bytes(n) for n in range(8)]


def _align(buf: bytearray, n: int) -> None:
    buf += _ZEROS[-len(buf) % n]


def put(buf: bytearray, sig: str, value: Any) -> None:
    """Append one value of the single complete type `sig`. Alignment is
    relative to the start of `buf`, which must start 8-aligned in the message."""
    code = sig[0]
    if code in "so":  # alignment inlined here and below: these run for every value
        buf += _ZEROS[-len(buf) % 4]
        buf += _string(value)
    elif code in _FIXED:
        size, packer = _FIXED[code]
        buf += _ZEROS[-len(buf) % size]
        buf += packer.pack(value)
    elif code == "g":
        buf.append(len(value))
        buf += value.encode()
        buf.append(0)
    elif code == "v":
        put(buf, "g", value[0])
        put(buf, value[0], value[1])
    elif sig == "a{sv}":
        if isinstance(value, bytes | bytearray):  # from entries()
            put_entries(buf, value)
        else:
            put_fields(buf, value)
    elif sig == "as":
        _put_strings(buf, value)
    elif sig == "aa{sv}":
        _put_dicts(buf, value)
    elif sig == "ay":
        _align(buf, 4)
        buf += _U32.pack(len(value))
        buf += value
    elif code == "a":
        element = sig[1:]
        _align(buf, 4)
        at = len(buf)
        buf += bytes(4)
        _align(buf, _ALIGN[element[0]])
        start = len(buf)
        for item in value:
            put(buf, element, item)
        _U32.pack_into(buf, at, len(buf) - start)
    else:
        raise ValueError(f"fsmond does not marshal D-Bus type {sig!r}")


# After a string of length % 4 == i: its NUL, then the padding to the next 4.
_NUL_PAD = (b"\0\0\0\0", b"\0\0\0", b"\0\0", b"\0")


def _put_strings(buf: bytearray, value: list[str]) -> None:
    """An `as` in one join: a file system's MountPoints is 15,000 names in
    a storm, and element by element through `put` costs far more."""
    _align(buf, 4)
    pack, nul_pad = _U32.pack, _NUL_PAD
    raws = [v.encode() for v in value]
    data = b"".join([pack(len(raw)) + raw + nul_pad[len(raw) % 4] for raw in raws])
    if raws:  # no padding after the last element: what follows aligns itself
        data = data[:len(data) + 1 - len(nul_pad[len(raws[-1]) % 4])]
    buf += pack(len(data))
    buf += data


def _put_dicts(buf: bytearray, value: list[Any]) -> None:
    """An `aa{sv}` in one loop: MountsChanged carries up to 2,048 marshalled
    entries a signal. Each is put as `put_entries` puts one, inlined: calling
    it per element, or through `put`, costs more."""
    _align(buf, 4)
    at = len(buf)
    buf += bytes(4)
    start = len(buf)
    zeros, pack = _ZEROS, _U32.pack
    for item in value:
        if not isinstance(item, bytes | bytearray):
            put_fields(buf, item)
            continue
        buf += zeros[-len(buf) % 4]
        buf += pack(len(item))
        buf += zeros[-len(buf) % 8]
        buf += item
    _U32.pack_into(buf, at, len(buf) - start)


def put_fields(buf: bytearray, fields: Fields) -> None:
    put_entries(buf, entries(fields))


def put_entry(buf: bytearray, key: str, sig: str, value: Any) -> None:
    """One dict entry of an a{sv} being built as `entries` builds them."""
    buf += _ZEROS[-len(buf) % 8]
    buf += entry_head(key, sig)
    put(buf, sig, value)


def entries(fields: Fields) -> bytearray:
    """An a{sv}'s entries, marshalled to go at an 8-aligned offset: so one
    event's dictionary serves the Manager's and the object's signal."""
    buf = bytearray()
    heads, pack = _HEADS, _U32.pack
    for key, (sig, value) in fields.items():
        buf += _ZEROS[-len(buf) % 8]
        buf += heads.get((key, sig)) or entry_head(key, sig)
        if sig == "s":  # most values: inlined, as this runs for every event
            raw = value.encode()
            buf += pack(len(raw)) + raw + b"\0"
        else:
            put(buf, sig, value)
    return buf


def event_bodies(fs: str, cls: str, name: str, details: bytes | bytearray
                 ) -> tuple[bytes, bytes]:
    """The bodies of the Manager's Event (ossa{sv}) and the object's (ssa{sv}),
    `details` from `entries`: after the path, the rest differs only in padding."""
    size = _U32.pack(len(details))
    manager, manager_pad = _event_prefix(fs, cls, name)
    obj, obj_pad = _event_prefix("", cls, name)
    return (b"".join((manager, size, manager_pad, details)),
            b"".join((obj, size, obj_pad, details)))


@lru_cache(maxsize=1024)
def _event_prefix(fs: str, cls: str, name: str) -> tuple[bytes, bytes]:
    """What comes before an Event's a{sv} (`fs` "" for the object's signal),
    up to its length, and the padding after the length: the same for a
    storm's every event."""
    buf = bytearray(_string(fs) if fs else b"")
    _align(buf, 4)
    buf += _string(cls)
    _align(buf, 4)
    buf += _string(name)
    _align(buf, 4)
    return bytes(buf), _ZEROS[-(len(buf) + 4) % 8]


def _string(value: str) -> bytes:
    """An s or o at a 4-aligned offset."""
    raw = value.encode()
    return _U32.pack(len(raw)) + raw + b"\0"


def put_entries(buf: bytearray, marshalled: bytes | bytearray) -> None:
    """An a{sv} from its marshalled `entries`."""
    _align(buf, 4)
    buf += _U32.pack(len(marshalled))
    _align(buf, 8)
    buf += marshalled


_HEADS: dict[tuple[str, str], bytes] = {}  # a plain dict: lru_cache costs more per call


def entry_head(key: str, sig: str) -> bytes:
    """A dict entry's key, its variant's signature and the padding before the
    value: the same for every event, as an entry starts 8-aligned."""
    if (head := _HEADS.get((key, sig))) is not None:
        return head
    buf = bytearray()
    put(buf, "s", key)
    put(buf, "g", sig)
    _align(buf, _ALIGN[sig[0]])
    if len(_HEADS) < 4096:  # the keys are fsmond's own; bounded all the same
        _HEADS[key, sig] = bytes(buf)
    return bytes(buf)


def body(signature: str, values: list[Any]) -> bytearray:
    buf = bytearray()
    for sig, value in zip(complete_types(signature), values, strict=True):
        put(buf, sig, value)
    return buf


@lru_cache(maxsize=256)
def complete_types(signature: str) -> tuple[str, ...]:
    """'ossa{sv}' -> ('o', 's', 's', 'a{sv}')."""
    out, depth, start = [], 0, 0
    for i, c in enumerate(signature):
        if c in "({":
            depth += 1
        elif c in ")}":
            depth -= 1
        if depth == 0 and c != "a":
            out.append(signature[start:i + 1])
            start = i + 1
    return tuple(out)


@lru_cache(maxsize=4096)
def _header_fields(path: str, interface: str, member: str, signature: str) -> tuple[int, bytes]:
    """The header's field array: its length, and its bytes padded for the body."""
    # The array starts at message offset 16, so 8-aligned like `buf`.
    buf = bytearray()
    for code, sig, value in ((1, "o", path), (2, "s", interface), (3, "s", member),
                             (8, "g", signature)):
        _align(buf, 8)
        buf.append(code)
        put(buf, "v", (sig, value))
    size = len(buf)
    _align(buf, 8)
    return size, bytes(buf)


_START = bytes((ord("l"), SIGNAL, 0, 1))  # little-endian, a signal, no flags, version 1
_III = struct.Struct("<III")


def signal(serial: int, path: str, interface: str, member: str, signature: str,
           body: bytes | bytearray) -> bytes:
    """A whole signal message, ready for the socket."""
    size, fields = _header_fields(path, interface, member, signature)
    return b"".join((_START, _III.pack(len(body), serial, size), fields, body))
