"""What subscribers receive (SPEC section 5): a real GLib app that follows the
file-system objects as GNOME apps do (GDBusObjectManagerClient, default
flags, bench/glib_objects.py under the distribution's python3) gets
file-system-level traffic only, whatever the mount table does; the Manager
still has every event, and a match on the class keeps to some."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.clients import Client
from tests.publishers.buses import busctl, dbus_daemon
from tests.running import bind_mounts, daemon_config, dev_of, fsmond, tmpfs, wait_until
from tests.test_reliability import fuse_server

pytestmark = [pytest.mark.root]
REPO = Path(__file__).resolve().parent.parent
NAME, ROOT = "org.fsmond.FsMon1", "/org/fsmond/FsMon1"
FS = "org.fsmond.FsMon1.FileSystem"
STORM = 1000


@contextmanager
def glib_objects(bus: str) -> Iterator[Client]:
    if subprocess.run(["/usr/bin/python3", "-c", "import gi"],
                      capture_output=True).returncode != 0:
        pytest.fail("python3-gi is missing: scripts/setup installs it")
    c = Client(["/usr/bin/python3", "-u", str(REPO / "bench" / "glib_objects.py")], bus)
    try:
        c.expect(lambda s: s.startswith("ready "))
        yield c
    finally:
        c.close()


def fs_path(path: Path) -> str:
    return f"{ROOT}/fs/{dev_of(path).replace(':', '_')}"


def mount_count(bus: str, obj: str) -> int:
    r = busctl(bus, "get-property", NAME, obj, FS, "MountCount")
    return int(json.loads(r.stdout)["data"])


def test_an_object_manager_client_gets_nothing_per_mount_in_a_storm(
        served: tuple[str, Path], tmp_path: Path) -> None:
    bus, t = served
    obj = fs_path(t)
    with glib_objects(bus) as app:
        with bind_mounts(t, [tmp_path / "storm" / f"m{i}" for i in range(STORM)]):
            wait_until(lambda: mount_count(bus, obj) == STORM + 1,
                       "MountCount after the mounts", 60)
        wait_until(lambda: mount_count(bus, obj) == 1, "MountCount after the unmounts", 60)
        # The storm's file system still tells its thresholds to the app.
        (t / "a").write_bytes(b"x" * (6 << 20))  # 40% left: the 50% level is reached
        app.expect(lambda s: s == f"event {obj} thr threshold")
        # And a file system mounted late is added, with its first events.
        with tmpfs(tmp_path / "w" / "late", "size=10m") as late:
            late_obj = fs_path(late)
            app.expect(lambda s: s.startswith(f"added {late_obj} "))
            app.expect(lambda s: s == f"event {late_obj} info mounted")
            (late / "a").write_bytes(b"x" * (6 << 20))
            app.expect(lambda s: s == f"event {late_obj} thr threshold")
        # Its last unmount is its own event too.
        app.expect(lambda s: s == f"event {late_obj} info unmounted")
        got = app.report()
    # Every object appeared with its first sample, never with invented zeros.
    added = [line.split() for line in app.seen if line.startswith("added ")]
    assert [a[1] for a in added] == [obj, late_obj], added
    assert all(int(a[2]) > 0 and a[3] == "True" and a[4] == "True" for a in added), added
    members = got["members"]
    # Nothing per mount: neither the mount table's signal nor each bind
    # mount's mounted/unmounted (2,000 Events), nor 1,001 mount points.
    assert "MountsChanged" not in members, members
    assert [s for s in app.seen if " mounted" in s or " unmounted" in s] == [
        f"event {late_obj} info mounted", f"event {late_obj} info unmounted"], app.seen
    assert got["most_mount_points"] <= 16
    # What it did get (coalesced MountCount changes, the events above, the
    # late object) is a small fraction of the storm's 2,000 changes.
    assert sum(members.values()) < STORM // 5, members


def test_every_event_from_one_match_rule_and_the_class_argument_keeps_to_some(
        served: tuple[str, Path], tmp_path: Path) -> None:
    """The Manager's Event has each bind mount's events; a match on arg1
    (the class) delivers thresholds only."""
    bus, t = served
    rule = f"type='signal',sender='{NAME}',path='{ROOT}',member='Event'"

    def monitor(match: str) -> Client:
        return Client(["busctl", f"--address={bus}", "--json=short", "monitor",
                       "--match", match], bus)

    every, thr = monitor(rule), monitor(rule + ",arg1='thr'")
    try:
        time.sleep(1)  # busctl monitor has no "ready"; its match is in place by then
        with bind_mounts(t, [tmp_path / "b" / f"m{i}" for i in range(3)]):
            for i in range(3):
                every.expect(lambda s, i=i: f'"{tmp_path}/b/m{i}"' in s and '"mounted"' in s)
            (t / "a").write_bytes(b"x" * (6 << 20))
            line = thr.expect(lambda s: '"threshold"' in s)
            assert '"thr"' in line
            every.expect(lambda s: '"threshold"' in s)
    finally:
        every.close()
        thr.close()
    assert not [s for s in thr.seen if '"mounted"' in s]


def test_an_idle_file_system_says_nothing_and_a_burst_says_little(
        served: tuple[str, Path]) -> None:
    """Properties change only when their value means something new: an idle
    file system sends no PropertiesChanged at all; after one write burst the
    fill-rate estimate does not go out on every poll (100 ms here)."""
    bus, t = served

    def changes(app: Client) -> int:
        return int(app.report()["members"].get("PropertiesChanged", 0))

    with glib_objects(bus) as app:
        time.sleep(1)  # what start-up had to say has been said
        before = changes(app)
        time.sleep(10)
        assert changes(app) == before
        with (t / "a").open("wb") as f:
            for _ in range(6):
                f.write(b"x" * (1 << 20))
                f.flush()
                time.sleep(0.2)
        before = changes(app)
        time.sleep(5)
        assert changes(app) - before <= 3


def test_a_file_system_that_does_not_answer_appears_unresponsive(tmp_path: Path) -> None:
    """fsmond is there (its bus name) once every file system has answered or
    was found unresponsive: a client's first look finds the hung one's object
    with Responsive false (and Sampled false: its figures are unknown, not
    zero) beside the sampled one."""
    base = tmp_path / "w"
    with fuse_server(base / "fuse") as server:
        server.send_signal(signal.SIGSTOP)  # every statvfs of it now hangs
        cfg = daemon_config(tmp_path / "f.toml", f"{base}/*", statvfs_timeout='"2s"')
        with dbus_daemon() as bus, tmpfs(base / "t", "size=10m") as t, \
                fsmond(cfg, bus=bus) as p, glib_objects(bus) as app:
            hung = p.wait_for(lambda e: e["name"] == "unresponsive")["fs"]
            added = {a[1]: a[2:] for s in app.seen if s.startswith("added ")
                     for a in [s.split()]}
            assert sorted(added) == sorted([fs_path(t), hung]), added
            assert added[hung][1:] == ["False", "False"], added  # Sampled, Responsive
            assert int(added[fs_path(t)][0]) > 0 and added[fs_path(t)][1:] == ["True", "True"]


def test_space_figures_go_when_they_move_visibly(tmp_path: Path) -> None:
    """A 100 GiB tmpfs: 1 MiB written moves Available by 0.001% (the fill's
    start goes out, not the figure); 30 MiB more by 0.03%, which goes."""
    cfg = daemon_config(tmp_path / "f.toml", f"{tmp_path}/w/*")
    with dbus_daemon() as bus, tmpfs(tmp_path / "w" / "big", "size=100g") as big, \
            fsmond(cfg, bus=bus), glib_objects(bus) as app:
        obj = fs_path(big)
        (big / "a").write_bytes(b"x" * (1 << 20))
        line = app.expect(lambda s: s.startswith(f"changed {obj} ") and "FillRate" in s)
        assert "Available" not in line.split(), line
        (big / "b").write_bytes(b"x" * (30 << 20))
        line = app.expect(lambda s: s.startswith(f"changed {obj} ") and "Available" in s)
        assert "PercentAvailable" in line.split() and "Free" in line.split(), line
