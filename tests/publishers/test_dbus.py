"""The D-Bus service end to end: the real daemon on a private bus, asserted from
a second connection (busctl and a dbus-fast signal recorder)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fsmond.sources.mountinfo import parse_mountinfo
from tests.publishers.buses import PIDS, SYSTEM, busctl, dbus_daemon
from tests.publishers.signals import SignalRecorder
from tests.running import (
    FsmondProcess,
    bind_mounts,
    daemon_config,
    dev_of,
    fsmond,
    loop_ext4,
    run,
    tmpfs,
)

pytestmark = [pytest.mark.root]
NAME, ROOT = "org.fsmond.FsMon1", "/org/fsmond/FsMon1"
OBJECTS = ROOT + "/fs"
MANAGER, FS = "org.fsmond.FsMon1.Manager", "org.fsmond.FsMon1.FileSystem"
NOBODY = 65534


def config(tmp_path: Path, watch: str) -> Path:
    return daemon_config(tmp_path / "fsmond.toml", watch)


def call(address: str, member: str, sig: str = "", *args: str, **kw: Any) -> Any:
    r = busctl(address, "call", NAME, ROOT, MANAGER, member, *([sig, *args] if sig else []),
               **kw)
    return json.loads(r.stdout)["data"] if r.stdout.strip() else []


def fs_path(path: Path) -> str:
    return f"{ROOT}/fs/{dev_of(path).replace(':', '_')}"


def prop(address: str, obj: str, name: str) -> Any:
    r = busctl(address, "get-property", NAME, obj, FS, name)
    return json.loads(r.stdout)["data"]


@pytest.fixture
def bus() -> Iterator[str]:
    with dbus_daemon() as address:
        yield address


@contextmanager
def storm_while_the_bus_stops(bus: str, source: Path, targets: list[Path]) -> Iterator[None]:
    """dbus-daemon stopped while `targets` are bind-mounted: fsmond's socket
    fills and the rest of its signals queue; the bus reads again before the
    body runs, the mounts still there."""
    os.kill(PIDS[bus], signal.SIGSTOP)
    try:
        with bind_mounts(source, targets):
            time.sleep(2)  # fsmond has read the storm, written what the socket takes
            os.kill(PIDS[bus], signal.SIGCONT)
            yield
    finally:
        os.kill(PIDS[bus], signal.SIGCONT)


@pytest.fixture
def served(tmp_path: Path, bus: str) -> Iterator[tuple[str, Path, FsmondProcess, SignalRecorder]]:
    base = tmp_path / "w"
    base.mkdir()
    with tmpfs(base / "t", "size=10m") as t:
        rec = SignalRecorder(bus)
        try:
            with fsmond(config(tmp_path, f"{base}/*"), bus=bus) as p:
                yield bus, t, p, rec
        finally:
            rec.close()


def test_introspection_has_every_member_and_annotations(served: Any) -> None:
    bus, t, _, _ = served
    xml = json.loads(busctl(bus, "call", NAME, ROOT, "org.freedesktop.DBus.Introspectable",
                            "Introspect").stdout)["data"][0]
    for member in ("GetStatus", "ListMounts", "GetMount", "GetChangesSince", "ListWatches",
                   "AddWatch", "RemoveWatch", "Reload", "MountsChanged", "Generation"):
        assert f'name="{member}"' in xml
    om = json.loads(busctl(bus, "call", NAME, OBJECTS, "org.freedesktop.DBus.Introspectable",
                           "Introspect").stdout)["data"][0]
    assert f'node name="{fs_path(t).rsplit("/", 1)[1]}"' in om
    # documented, every argument named (docs/dbus.md is checked against the same XML)
    assert '<annotation name="org.gtk.GDBus.DocString"' in xml
    assert '<arg name="status" direction="out" type="a{sv}"' in xml
    assert '<arg name="generation" direction="out" type="t"' in xml
    fsxml = json.loads(busctl(bus, "call", NAME, fs_path(t), "org.freedesktop.DBus."
                              "Introspectable", "Introspect").stdout)["data"][0]
    for p in ("Size", "Available", "PercentAvailable", "Level", "ReadOnly", "SecondsToFull",
              "ErrorCount", "MountPoints", "MountCount", "Classes", "Lower", "Upper"):
        assert f'<property name="{p}"' in fsxml
    assert 'name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="true"' in fsxml
    assert 'name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"' in fsxml


def test_managed_objects_and_properties_match_statvfs(served: Any) -> None:
    bus, t, _p, _ = served
    objects = json.loads(busctl(
        bus, "call", NAME, OBJECTS, "org.freedesktop.DBus.ObjectManager",
        "GetManagedObjects").stdout)["data"][0]
    assert list(objects) == [fs_path(t)]
    # Not on the Manager's path: a client following that would get all its signals.
    wrong = busctl(bus, "call", NAME, ROOT, "org.freedesktop.DBus.ObjectManager",
                   "GetManagedObjects", check=False)
    assert wrong.returncode != 0 and OBJECTS in wrong.stderr
    st = os.statvfs(t)
    props = objects[fs_path(t)][FS]
    assert props["Size"]["data"] == st.f_blocks * st.f_frsize
    assert props["Files"]["data"] == st.f_files
    assert props["MountPoints"]["data"] == [str(t)] and props["MountCount"]["data"] == 1
    assert props["Device"]["data"] == dev_of(t) and props["FsType"]["data"] == "tmpfs"
    assert prop(bus, fs_path(t), "Available") == st.f_bavail * st.f_frsize
    status = call(bus, "GetStatus")[0]
    assert status["mount_backend"]["data"] in ("fanotify", "mountinfo")
    assert status["filesystems"]["data"] == 1


def test_threshold_crossing_signals_from_manager_and_object(served: Any) -> None:
    bus, t, _, rec = served
    (t / "a").write_bytes(b"x" * (6 << 20))
    on_manager = rec.wait_for(lambda s: s.path == ROOT and s.member == "Event"
                              and s.body[2] == "threshold")
    assert on_manager.body[0] == fs_path(t) and on_manager.body[1] == "thr"
    details = on_manager.body[3]["details"].value
    assert details["level"].value == "lower" and details["state"].value == "reached"
    on_object = rec.wait_for(lambda s: s.path == fs_path(t) and s.member == "Event"
                             and s.body[1] == "threshold")
    assert on_object.body[:2] == ["thr", "threshold"]
    changed = rec.wait_for(lambda s: s.path == fs_path(t) and s.member == "PropertiesChanged"
                           and "Level" in s.body[1])
    assert changed.body[1]["Level"].value == "lower"
    assert prop(bus, fs_path(t), "Level") == "lower"


def test_object_manager_signals_come_from_the_objects_path(served: Any, tmp_path: Path) -> None:
    _bus, _, _, rec = served
    with tmpfs(tmp_path / "w" / "late", "size=1m") as late:
        added = rec.wait_for(lambda s: s.member == "InterfacesAdded"
                             and s.body[0] == fs_path(late))
        assert added.path == OBJECTS
        assert FS in added.body[1]
        path = fs_path(late)
        # The new object exists before its first events, so they come from it too.
        own = rec.wait_for(lambda s: s.path == path and s.member == "Event"
                           and s.body[1] == "mounted")
        assert rec.signals.index(added) < rec.signals.index(own)
    removed = rec.wait_for(lambda s: s.member == "InterfacesRemoved" and s.body[0] == path)
    assert removed.path == OBJECTS and removed.body == [path, [FS]]
    last = rec.wait_for(lambda s: s.path == path and s.member == "Event"
                        and s.body[1] == "watch-removed")  # and its last events before it goes
    assert rec.signals.index(last) < rec.signals.index(removed)
    mounts = rec.wait_for(lambda s: s.member == "MountsChanged" and any(
        c["change"].value == "added" and c["mount_point"].value == str(late)
        for c in s.body[1]))
    assert mounts.path == ROOT


def test_get_changes_since_after_a_storm_gives_the_kernel_table(served: Any,
                                                                 tmp_path: Path) -> None:
    bus, t, _, _ = served
    gen, mounts = call(bus, "ListMounts")
    client = {m["mount_id"]["data"]: m["mount_point"]["data"] for m in mounts}
    targets = []
    for i in range(300):
        d = tmp_path / "storm" / f"m{i}"
        d.mkdir(parents=True)
        run("mount", "--bind", str(t), str(d))
        targets.append(d)
    for d in targets[::3]:
        run("umount", str(d))
    truth = {e.mount_id: e.mount_point for e in parse_mountinfo(
        Path("/proc/self/mountinfo").read_bytes())}
    for _ in range(100):  # until the daemon has caught up with the kernel
        new_gen, complete, changes = call(bus, "GetChangesSince", "t", str(gen))
        assert complete
        for c in changes:
            mid = c["mount_id"]["data"]
            if c["change"]["data"] == "removed":
                client.pop(mid)
            else:
                client[mid] = c["mount_point"]["data"]
        gen = new_gen
        if client == truth:
            break
    assert client == truth
    for d in targets:
        run("umount", "-l", str(d)) if os.path.ismount(d) else None


def test_bad_arguments_and_non_root_callers_are_refused(served: Any) -> None:
    bus, t, _, _ = served
    r = busctl(bus, "call", NAME, ROOT, MANAGER, "AddWatch", "sasss", "relative", "0", "", "",
               check=False)
    assert r.returncode != 0 and "absolute" in r.stderr
    r = busctl(bus, "call", NAME, ROOT, MANAGER, "AddWatch", "sasss", str(t), "1", "nope",
               "", "", check=False)
    assert r.returncode != 0 and "classes" in r.stderr
    r = busctl(bus, "call", NAME, ROOT, MANAGER, "GetMount", "s", "/no/such/mount", check=False)
    assert r.returncode != 0 and "nothing is mounted" in r.stderr
    for args in (["Reload"], ["RemoveWatch", "s", str(t)],
                 ["AddWatch", "sasss", str(t), "0", "", ""]):
        r = busctl(bus, "call", NAME, ROOT, MANAGER, *args, uid=NOBODY, check=False)
        assert r.returncode != 0 and "root only" in r.stderr, r.stderr
    assert call(bus, "GetStatus", uid=NOBODY)[0]["version"]["data"]
    # root may: a new watch with its own levels, seen as a property change
    path = call(bus, "AddWatch", "sasss", str(t), "2", "err", "thr", "90%", "80%")[0]
    assert path == fs_path(t) and prop(bus, path, "Lower") == "90%"
    assert prop(bus, path, "Classes") == ["err", "thr"]


def test_add_watch_is_checked_as_the_file_is_and_says_when_it_takes_effect(
        served: Any) -> None:
    """Refused at the call, with the configuration file's message and
    InvalidArgs: an ignored file system, a bare number (blocks) leaving less
    room than upper, an unknown class. Accepted: a glob, as a [[watch]] path,
    and a changed watch, each with a watch-added event."""
    bus, t, p, _ = served

    def refused(*args: str) -> str:
        r = busctl(bus, "call", NAME, ROOT, MANAGER, "AddWatch", "sasss", *args, check=False)
        assert r.returncode != 0, args
        return r.stderr

    assert "proc file system, which fsmond ignores" in refused("/proc", "0", "", "")
    err = refused(str(t), "0", "15", "")  # 15 blocks of 4 KiB: less room than upper = 20%
    assert 'watch.lower = "15"' in err and "blocks of 4096 bytes" in err
    assert 'watch.classes = ["nope"]' in refused(str(t), "1", "nope", "", "")
    named = subprocess.run(  # the error's name, which busctl does not print
        ["dbus-send", f"--bus={bus}", "--print-reply", f"--dest={NAME}", ROOT,
         f"{MANAGER}.AddWatch", "string:/proc", "array:string:", "string:", "string:"],
        capture_output=True, text=True, timeout=30)
    assert "org.fsmond.FsMon1.Error.InvalidArgs" in named.stderr
    assert "not a level" in refused(str(t), "0", "lots", "")
    assert prop(bus, fs_path(t), "Lower") == "50%"  # nothing changed
    # a changed watch says so; '' keeps the default upper (20% in this configuration)
    call(bus, "AddWatch", "sasss", str(t), "2", "info", "thr", "90%", "")
    added = p.wait_for(lambda e: e["name"] == "watch-added" and e["details"]["lower"] == "90%")
    assert added["mount_point"] == str(t) and added["details"]["upper"] == "20%"
    # a glob: "/" comes back, and what it matches, now and later, is watched with it
    base = t.parent
    assert call(bus, "AddWatch", "sasss", f"{base}/u*", "2", "info", "err", "30%", "10%") \
        == ["/"]
    with tmpfs(base / "u1", "size=4m") as u:
        e = p.wait_for(lambda e: e["name"] == "watch-added" and e["mount_point"] == str(u))
        assert e["details"] == {"classes": ["info", "err"], "lower": "30%", "upper": "10%"}
        assert prop(bus, fs_path(u), "Lower") == "30%"
        call(bus, "RemoveWatch", "s", f"{base}/u*")  # back to the file's [[watch]]
        p.wait_for(lambda e: e["name"] == "watch-added" and e["mount_point"] == str(u)
                   and e["details"]["lower"] == "50%")


def test_ext4_error_signal(tmp_path: Path, bus: str) -> None:
    rec = SignalRecorder(bus)
    try:
        with loop_ext4(tmp_path / "img", tmp_path / "e") as (m, loop), \
                fsmond(config(tmp_path, str(m)), bus=bus):
            Path(f"/sys/fs/ext4/{loop}/trigger_fs_error").write_text("dbus test\n")
            s = rec.wait_for(lambda s: s.member == "Event" and s.body[-2] == "error"
                             and s.path == fs_path(m))
            assert s.body[0] == "err"
            assert prop(bus, fs_path(m), "ErrorCount") >= 1
    finally:
        rec.close()


def test_system_bus_policy_root_and_nobody(tmp_path: Path) -> None:
    with dbus_daemon(SYSTEM) as bus, tmpfs(tmp_path / "t") as t, \
            fsmond(config(tmp_path, str(t)), bus=bus):
        assert call(bus, "GetStatus", uid=NOBODY)[0]["version"]["data"]
        assert prop(bus, fs_path(t), "Size") > 0
        r = busctl(bus, "call", NAME, ROOT, MANAGER, "Reload", uid=NOBODY, check=False)
        assert r.returncode != 0 and "denied" in r.stderr.lower()
        assert call(bus, "Reload") == []
        # nobody may not own the name either
        r = busctl(bus, "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                   "org.freedesktop.DBus", "RequestName", "su", NAME, "4", uid=NOBODY,
                   check=False)
        assert r.returncode != 0


def test_a_mount_storm_becomes_a_handful_of_signals(served: Any, tmp_path: Path) -> None:
    """1,000 bind mounts made as fast as the kernel takes them: MountsChanged and
    the Generation PropertiesChanged are coalesced, not sent per mount."""
    _, t, _, rec = served
    before = len(rec.signals)
    with bind_mounts(t, [tmp_path / "storm" / f"m{i}" for i in range(1000)]):
        # The daemon may still be reading the storm: wait for all of it, not
        # for whatever generation a call made now happens to return.
        def changes() -> int:
            return sum(len(s.body[1]) for s in rec.signals[before:] if s.member == "MountsChanged")
        deadline = time.monotonic() + 30
        while changes() < 1000 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # a late extra batch would show here
        assert changes() == 1000
        storm_signals = rec.signals[before:]
        batches = [s for s in storm_signals if s.member == "MountsChanged"]
        generation = [s for s in storm_signals if s.member == "PropertiesChanged"
                      and s.path == ROOT]
        assert len(batches) <= 20 and len(generation) <= 20, (len(batches), len(generation))


def test_reload_errors_show_in_get_status(served: Any, tmp_path: Path) -> None:
    bus, _, p, _ = served
    cfg = tmp_path / "fsmond.toml"
    good = cfg.read_text()
    cfg.write_text("[daemon]\nbogus = 1\n")
    r = busctl(bus, "call", NAME, ROOT, MANAGER, "Reload", check=False)
    assert r.returncode != 0 and "daemon.bogus" in r.stderr
    assert "daemon.bogus" in call(bus, "GetStatus")[0]["last_reload_error"]["data"]
    p.wait_for(lambda e: e["name"] == "config" and "daemon.bogus" in e["details"]["message"])
    cfg.write_text(good)
    call(bus, "Reload")
    assert call(bus, "GetStatus")[0]["last_reload_error"]["data"] == ""


def test_long_paths_are_clear_errors(served: Any) -> None:
    bus, _, p, _ = served
    for path in ("/" + "x" * 4095, "/" + "y" * 5000):
        r = busctl(bus, "call", NAME, ROOT, MANAGER, "GetMount", "s", path, check=False)
        assert r.returncode != 0 and "nothing is mounted" in r.stderr
        r = busctl(bus, "call", NAME, ROOT, MANAGER, "AddWatch", "sasss", path, "0", "", "",
                   check=False)
        assert r.returncode != 0 and ("4096" in r.stderr or "nothing is mounted" in r.stderr)
    assert p.proc.poll() is None


def test_a_mount_point_that_is_not_utf8_goes_out_mended_with_its_bytes(served: Any,
                                                                      tmp_path: Path) -> None:
    """The kernel's names are bytes; D-Bus strings must be UTF-8, and a bus
    drops a sender whose message is not valid. Every signal about such a
    mount (the Events, MountsChanged, the new object's properties) carries
    the name mended, plus the exact bytes, and fsmond stays on the bus."""
    import subprocess

    bus, _, _, rec = served
    raw = os.fsencode(tmp_path / "w") + b"/odd-\xff\xfe"
    os.mkdir(raw)
    subprocess.run([b"mount", b"-t", b"tmpfs", b"-o", b"size=1m", b"odd", raw], check=True)
    try:
        mended = raw.decode("utf-8", "replace")
        for path in (ROOT, None):  # the Manager's Event, then the object's own
            ev = rec.wait_for(lambda s, path=path: s.member == "Event" and s.body[-2] == "mounted"
                              and (s.path == ROOT) == (path == ROOT)
                              and "mount_point_bytes" in s.body[-1])
            assert ev.body[-1]["mount_point"].value == mended
            assert bytes(ev.body[-1]["mount_point_bytes"].value) == raw
        changed = rec.wait_for(lambda s: s.member == "MountsChanged" and any(
            "mount_point_bytes" in c for c in s.body[1]))
        entry = next(c for c in changed.body[1] if "mount_point_bytes" in c)
        assert entry["mount_point"].value == mended and entry["change"].value == "added"
        added = rec.wait_for(lambda s: s.member == "InterfacesAdded"
                             and s.body[1][FS]["Source"].value == "odd")
        assert added.body[1][FS]["MountPoints"].value == [mended]
        assert call(bus, "GetStatus")[0]["version"]["data"]  # still connected
    finally:
        subprocess.run([b"umount", raw], check=False)


def test_signals_wait_whole_and_in_order_while_the_bus_stops_reading(served: Any,
                                                                     tmp_path: Path) -> None:
    """dbus-daemon stopped under a storm: fsmond's socket fills, writes come
    up short and the rest waits. Every Event arrives once the bus reads again,
    in order and unbroken (a cut message would make dbus-daemon drop fsmond)."""
    bus, t, p, rec = served
    targets = [tmp_path / "storm" / f"m{i}" for i in range(1500)]  # about 2 MB of signals
    before = len(rec.signals)
    with storm_while_the_bus_stops(bus, t, targets):
        def mounted() -> list[Any]:
            return [s.body[3] for s in rec.signals[before:] if s.member == "Event"
                    and s.path == ROOT and s.body[2] == "mounted"]
        deadline = time.monotonic() + 60
        while len(mounted()) < len(targets) and time.monotonic() < deadline:
            time.sleep(0.1)
        events = mounted()
        assert sorted(e["mount_point"].value for e in events) == sorted(map(str, targets))
        seqs = [e["seq"].value for e in events]
        assert seqs == sorted(set(seqs))  # in order, none twice
        assert call(bus, "GetStatus")[0]["mounts"]["data"] >= len(targets)  # connected
        assert p.proc.poll() is None


def test_a_storms_coalesced_state_waits_behind_its_events(served: Any, tmp_path: Path) -> None:
    """Events first: while a storm's events wait for a slow bus, MountsChanged
    (whose every entry the bus checks as it does an Event's) waits behind
    them instead of taking the bus's time between them. dbus-daemon is stopped
    through a storm of 1,500 mounts, so the socket fills and the events queue;
    once it reads again, the storm's changes must come after its last Event,
    but for those flushed before the socket filled (at the default 208 KiB
    socket buffer, about 150 events' signals). Before, a flush every 0.1 s
    put 770 - 1,390 of the 1,500 among the events (thirteen runs)."""
    bus, t, _, rec = served
    targets = [tmp_path / "storm" / f"m{i}" for i in range(1500)]
    before = len(rec.signals)
    with storm_while_the_bus_stops(bus, t, targets):
        def changes(signals: list[Any]) -> int:
            return sum(len(s.body[1]) for s in signals if s.member == "MountsChanged")
        deadline = time.monotonic() + 60
        while changes(rec.signals[before:]) < len(targets) and time.monotonic() < deadline:
            time.sleep(0.1)
        storm = rec.signals[before:]
        last_event = max(i for i, s in enumerate(storm) if s.member == "Event")
        among = changes(storm[:last_event])
        assert changes(storm) == len(targets)
        assert among <= 300, f"{among} of {len(targets)} changes came among the storm's events"


def test_the_call_that_activates_fsmond_gets_the_whole_mount_table(tmp_path: Path) -> None:
    """D-Bus activation queues the call until the name is owned: the name must
    come only once the mount table is loaded and every source has started."""
    cfg = config(tmp_path, "/nonexistent")
    fsmond_cmd = f"{sys.executable} -m fsmond --config {cfg}"
    command = f"/bin/sh -c 'exec {fsmond_cmd} --bus \"$DBUS_STARTER_ADDRESS\"'"
    with dbus_daemon(activates={NAME: command}) as address:
        try:
            generation, mounts = call(address, "ListMounts")
            status = call(address, "GetStatus")[0]
        finally:
            r = busctl(address, "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                       "org.freedesktop.DBus", "GetConnectionUnixProcessID", "s", NAME)
            os.kill(json.loads(r.stdout)["data"][0], signal.SIGTERM)
    table = parse_mountinfo(Path("/proc/self/mountinfo").read_bytes())
    assert generation > 0 and len(mounts) == len(table)
    assert status["mounts"]["data"] == len(table)
    assert "kmsg" in status["error_backends"]["data"]  # every source had started
