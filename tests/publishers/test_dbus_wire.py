"""fsmond's hand-made signals are byte for byte what dbus-fast's marshaller makes."""

from __future__ import annotations

from typing import Any

import pytest
from dbus_fast import Message
from dbus_fast._private.unmarshaller import Unmarshaller
from hypothesis import example, given
from hypothesis import strategies as st

from fsmond.engine.mounts import ADDED, CHANGED, REMOVED, MountChange
from fsmond.events import Event, MountEntry, format_time
from fsmond.publishers import dbus_wire as wire
from fsmond.publishers.dbus_convert import (
    FS_PROPERTIES,
    INT_TYPES,
    change_fields,
    fields,
    mounts_changed_bodies,
    put_text,
    text,
    variants,
)
from fsmond.publishers.dbus_entries import change_entries, event_entries

ROOT, MANAGER = "/org/fsmond/FsMon1", "org.fsmond.FsMon1.Manager"
# Kernel text decoded with surrogateescape: any str, including lone surrogates.
names = st.text(st.characters(blacklist_characters="\0"), max_size=40)
leaves = st.one_of(st.booleans(), st.integers(-(1 << 70), 1 << 70), st.floats(allow_nan=False),
                   names)
details = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(names, inner, max_size=4)), max_leaves=12)
events = st.builds(
    Event, seq=st.integers(0, (1 << 64) - 1), time=st.floats(0, 4e9), cls=st.sampled_from(
        ["info", "warn", "err", "thr"]), name=st.sampled_from(["mounted", "error"]),
    fs=st.sampled_from(["/", ROOT + "/fs/7_1"]), mount_point=names, fstype=names,
    source=names, device=st.sampled_from(["", "7:1"]), pid=st.integers(-5, 1 << 31),
    comm=names, details=st.dictionaries(st.one_of(names, st.sampled_from(sorted(INT_TYPES))),
                                        details, max_size=5))


def event_fields(e: Event) -> wire.Fields:
    """An event's a{sv} (SPEC section 3), key by key, as event_entries writes it."""
    out: wire.Fields = {
        "seq": ("t", e.seq), "time": ("s", format_time(e.time)), "class": ("s", e.cls),
        "name": ("s", e.name), "fs": ("o", e.fs), "fstype": ("s", text(e.fstype)[0]),
        "device": ("s", e.device), "pid": ("u", max(0, e.pid)), "comm": ("s", text(e.comm)[0]),
        "details": ("a{sv}", fields(e.details)),
    }
    put_text(out, "mount_point", e.mount_point)
    put_text(out, "source", e.source)
    return out


def reference(serial: int, path: str, iface: str, member: str, sig: str, body: list[Any]) -> bytes:
    m = Message.new_signal(path, iface, member, sig, body)
    m.serial = serial
    return bytes(m._marshall(False))


@given(events)
@example(Event(1, 0.0, "info", "mounted", mount_point="/m/\udcff",  # a kernel byte, escaped
               source="\ud800", details={"\udcfe": ["\ud800"]}))  # surrogates no byte makes
def test_an_event_signal_is_what_dbus_fast_would_send(e: Event) -> None:
    f = event_fields(e)
    assert event_entries(e) == wire.entries(f)
    bodies = wire.event_bodies(e.fs, e.cls, e.name, event_entries(e))
    for sig, prefix, body in (("ossa{sv}", [e.fs, e.cls, e.name], bodies[0]),
                              ("ssa{sv}", [e.cls, e.name], bodies[1])):
        ours = wire.signal(9, ROOT, MANAGER, "Event", sig, body)
        assert ours == reference(9, ROOT, MANAGER, "Event", sig, [*prefix, variants(f)])
        assert body == wire.body(sig, [*prefix, f])


mount_entries = st.builds(
    MountEntry, mount_id=st.integers(0, 1 << 31), parent_id=st.integers(0, 1 << 31),
    device=st.tuples(st.integers(0, 4095), st.integers(0, 1 << 20)), root=names,
    mount_point=names, options=st.sampled_from(["rw,relatime", "ro", "lowerdir=/\udcff"]),
    fstype=names, source=names, super_options=names)
mount_changes = st.builds(MountChange, generation=st.integers(0, (1 << 64) - 1),
                          kind=st.sampled_from([ADDED, REMOVED, CHANGED]), entry=mount_entries,
                          old=st.one_of(st.none(), mount_entries))


valid = st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]),
                max_size=9)


@given(st.lists(mount_changes, max_size=5), st.integers(0, (1 << 64) - 1),
       st.lists(valid, max_size=6))
def test_mounts_changed_and_properties_changed_too(changes: list[MountChange], gen: int,
                                                   mount_points: list[str]) -> None:
    fields_of = [change_fields(c, ROOT + "/fs/1_2") for c in changes]
    marshalled = [change_entries(c, ROOT + "/fs/1_2") for c in changes]
    assert marshalled == [wire.entries(f) for f in fields_of]
    ours = wire.signal(1 << 31, ROOT, MANAGER, "MountsChanged", "taa{sv}",
                       wire.body("taa{sv}", [gen, marshalled]))
    assert ours == reference(1 << 31, ROOT, MANAGER, "MountsChanged", "taa{sv}",
                             [gen, [variants(f) for f in fields_of]])
    assert wire.body("taa{sv}", [gen, fields_of]) == wire.body("taa{sv}", [gen, marshalled])
    props = {"Generation": ("t", gen), "MountPoints": ("as", mount_points),
             "ReadOnly": ("b", True), "PercentAvailable": ("d", 12.5)}
    body = ["org.fsmond.FsMon1.FileSystem", props, []]
    ours = wire.signal(3, ROOT, "org.freedesktop.DBus.Properties", "PropertiesChanged",
                       "sa{sv}as", wire.body("sa{sv}as", body))
    assert ours == reference(3, ROOT, "org.freedesktop.DBus.Properties", "PropertiesChanged",
                             "sa{sv}as", [body[0], variants(props), []])
    # A one-byte-aligned value right after the strings: no padding may follow them.
    assert wire.signal(4, ROOT, MANAGER, "X", "asy", wire.body("asy", [mount_points, 7])) \
        == reference(4, ROOT, MANAGER, "X", "asy", [mount_points, 7])


def test_a_write_of_many_signals_reads_back_as_each_signal() -> None:
    f = fields({"n": 1, "nested": {"list": [1, "x", 2.5], "names": ["a", "b"]}})
    data = b"".join(wire.signal(i, ROOT, MANAGER, "Event", "ossa{sv}",
                                wire.body("ossa{sv}", ["/", "info", f"e{i}", f]))
                    for i in range(1, 4))
    import io
    stream = io.BytesIO(data)
    got = []
    for _ in range(3):
        u = Unmarshaller(stream)  # type: ignore[arg-type]
        got.append(u.unmarshall())
    assert [(m.serial, m.body[2], m.body[3]["nested"].value["list"].value[1].value)
            for m in got] == [(1, "e1", "x"), (2, "e2", "x"), (3, "e3", "x")]


def test_a_type_fsmond_never_sends_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="does not marshal"):
        wire.body("h", [3])


def test_a_storm_s_mount_changes_are_split_with_their_own_generations() -> None:
    changes = [(g, bytearray(b"change %d" % g)) for g in range(11, 16)]
    bodies = mounts_changed_bodies(changes, 2)
    assert [(gen, len(chunk)) for gen, chunk in bodies] == [(12, 2), (14, 2), (15, 1)]
    assert [c for _, chunk in bodies for c in chunk] == [c for _, c in changes]
    assert mounts_changed_bodies([], 2) == []


def test_a_key_has_one_type_in_every_signal_and_property() -> None:
    """mount_id is u in the mount table and in an event's details; byte counts
    in details are t, as the FileSystem properties are."""
    entry = MountEntry(7, 1, (7, 1), "/", "/m", "rw", "ext4", "/dev/loop0", "rw")
    change = change_fields(MountChange(3, ADDED, entry), ROOT + "/fs/7_1")
    e = Event(1, 0.0, "thr", "threshold", details={
        "mount_id": 7, "available": 1 << 20, "size": 1 << 30, "files": 9,
        "files_available": 3})
    body = wire.event_bodies(e.fs, e.cls, e.name, event_entries(e))[0]
    import io
    msg = Unmarshaller(io.BytesIO(wire.signal(1, ROOT, MANAGER, "Event", "ossa{sv}", body))
                       ).unmarshall()  # type: ignore[arg-type]
    sent = {k: v.signature for k, v in msg.body[3]["details"].value.items()}
    assert sent["mount_id"] == change["mount_id"][0] == "u"
    for key, prop in (("available", "Available"), ("size", "Size"), ("files", "Files"),
                      ("files_available", "FilesAvailable")):
        assert sent[key] == FS_PROPERTIES[prop][0] == "t"
