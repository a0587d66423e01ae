"""fsmonctl against the real daemon on a private bus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clients import Client
from tests.publishers.buses import dbus_daemon
from tests.running import daemon_config, fsmond, loop_ext4, run, tmpfs, write_config

pytestmark = [pytest.mark.root]


def ctl(bus: str, *args: str, uid: int | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "from fsmond.cli import fsmonctl_main as m; raise SystemExit(m())",
           "--bus", bus, *args]
    if uid is not None:
        cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parent.parent)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cfg = daemon_config(tmp_path / "f.toml", f"{tmp_path}/t")
    with dbus_daemon() as bus, tmpfs(tmp_path / "t", "size=10m") as t, fsmond(cfg, bus=bus):
        yield bus, t


def test_tables_and_json(running: tuple[str, Path]) -> None:
    bus, t = running
    r = ctl(bus, "status")
    assert r.returncode == 0, r.stderr
    assert "DEVICE" in r.stdout and str(t) in r.stdout and "10.0M" in r.stdout
    data = json.loads(ctl(bus, "status", "--json").stdout)
    assert data["status"]["filesystems"] == 1
    (fs,) = data["filesystems"].values()
    assert fs["MountPoints"] == [str(t)] and fs["Level"] == "ok"
    mounts = json.loads(ctl(bus, "mounts", "--json").stdout)
    assert any(m["mount_point"] == str(t) for m in mounts["mounts"])
    assert str(t) in ctl(bus, "watches").stdout
    assert "PercentAvailable" in ctl(bus, "fs").stdout


def test_monitor_prints_events_as_they_happen(running: tuple[str, Path]) -> None:
    bus, t = running
    cmd = [sys.executable, "-c", "from fsmond.cli import fsmonctl_main as m; raise SystemExit(m())",
           "--bus", bus, "monitor", "--json", "--count", "1"]
    mon = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           cwd=Path(__file__).parent.parent)
    try:
        time.sleep(1.0)  # let it subscribe before the event happens
        (t / "a").write_bytes(b"x" * (6 << 20))
        out, err = mon.communicate(timeout=30)
    finally:
        mon.kill()
    assert mon.returncode == 0, err
    event = json.loads(out)
    assert event["name"] == "threshold" and event["mount_point"] == str(t)


def test_privileged_commands_and_exit_statuses(running: tuple[str, Path], tmp_path: Path) -> None:
    bus, t = running
    r = ctl(bus, "watch", "add", str(t), "err,thr", "90%", "80%")
    assert r.returncode == 0 and r.stdout.startswith("/org/fsmond/FsMon1/fs/")
    assert "90%" in ctl(bus, "watches").stdout
    r = ctl(bus, "watch", "add", str(t), "err", uid=65534)
    assert r.returncode == 1 and "root only" in r.stderr
    assert ctl(bus, "reload").returncode == 0
    assert ctl(bus, "watch", "remove", str(t)).returncode == 0
    bad = write_config(tmp_path / "bad.toml", "[daemon]\nkmsg = 3\n")
    r = ctl(bus, "check-config", str(bad))
    assert r.returncode == 78 and "daemon.kmsg" in r.stderr


def test_not_running_is_exit_3() -> None:
    with dbus_daemon() as bus:
        r = ctl(bus, "status")
    assert r.returncode == 3 and "not running" in r.stderr


def wait_sampled(bus: str, mount_point: Path) -> dict[str, object]:
    """The file system at mount_point, once fsmond has sampled it (no time bound
    but the test's own)."""
    while True:
        fss = json.loads(ctl(bus, "status", "--json").stdout)["filesystems"].values()
        for fs in fss:
            if str(mount_point) in fs["MountPoints"] and fs["Sampled"]:
                return dict(fs)
        time.sleep(0.1)


def test_status_shows_space_as_df_does_and_unsampled_as_unknown(tmp_path: Path) -> None:
    """ext4 with 20% reserved blocks: used is size - free, used % is
    used / (used + available), as df says; a file system whose only mount
    point is covered is not sampled and shows '-' and null, never 0."""
    base = tmp_path / "w"
    cfg = daemon_config(tmp_path / "f.toml", f"{base}/*")
    with dbus_daemon() as bus, \
            loop_ext4(tmp_path / "img", base / "e", mkfs=("-m", "20")) as (e, _), \
            tmpfs(base / "hidden", "size=8m") as hidden, tmpfs(hidden, "size=4m") as top:
        (e / "data").write_bytes(b"x" * (8 << 20))
        os.sync()
        with fsmond(cfg, bus=bus):
            fs = wait_sampled(bus, e)
            size, used, avail, pcent = run(
                "df", "-B1", "--output=size,used,avail,pcent", str(e)).split()[4:8]
            assert (fs["Size"], fs["Used"], fs["Available"]) == (int(size), int(used),
                                                                   int(avail))
            assert int(pcent.rstrip("%")) - 1 < fs["PercentUsed"] <= int(pcent.rstrip("%"))
            wait_sampled(bus, top)
            fss = json.loads(ctl(bus, "status", "--json").stdout)["filesystems"]
            (unsampled,) = [f for f in fss.values() if not f["Sampled"]]
            assert unsampled["FsType"] == "tmpfs" and unsampled["MountPoints"] == [str(hidden)]
            for key in ("Size", "Used", "Available", "PercentUsed", "PercentAvailable"):
                assert unsampled[key] is None, key
            table = ctl(bus, "status").stdout.splitlines()
            (row,) = [line.split() for line in table if line.startswith(unsampled["Device"])]
            assert row[2:8] == ["-", "-", "-", "-", "-", "no"], row
            (row,) = [line.split() for line in table if f" {e} " in f" {line} "]
            assert row[5] == f"{fs['PercentUsed']:.1f}%"


def test_version_fs_path_watch_list_and_reload_say_what_they_did(
        running: tuple[str, Path]) -> None:
    from fsmond import __version__

    bus, t = running
    r = ctl(bus, "--version")
    assert r.returncode == 0 and r.stdout.strip() == f"fsmonctl {__version__}"
    one = json.loads(ctl(bus, "fs", str(t), "--json").stdout)
    assert [p["MountPoints"] for p in one.values()] == [[str(t)]]
    (t / "sub").mkdir()
    assert json.loads(ctl(bus, "fs", str(t / "sub"), "--json").stdout).keys() == one.keys()
    r = ctl(bus, "fs", "/proc")
    assert r.returncode == 1 and "does not watch" in r.stderr
    assert ctl(bus, "watch", "list").stdout == ctl(bus, "watches").stdout
    assert str(t) in ctl(bus, "watch", "list").stdout
    r = ctl(bus, "reload")
    assert r.returncode == 0 and "reloaded" in r.stdout


def monitor(bus: str, *args: str) -> Client:
    """`fsmonctl monitor` running, its lines read as they come."""
    return Client([sys.executable, "-c",
                   "from fsmond.cli import fsmonctl_main as m; raise SystemExit(m())",
                   "--bus", bus, "monitor", *args], bus, cwd=Path(__file__).parent.parent)


def test_monitor_says_when_fsmond_stops_and_starts_and_ends_with_the_bus(
        tmp_path: Path) -> None:
    """Readable lines (no Python reprs), filtered by class and mount point;
    "fsmond stopped" / "fsmond started" as the daemon goes and comes; exit
    status 3 when the bus itself goes away."""
    cfg = daemon_config(tmp_path / "f.toml", f"{tmp_path}/w/*")
    mon: Client | None = None
    try:
        with dbus_daemon() as bus, tmpfs(tmp_path / "w" / "t", "size=10m"):
            with fsmond(cfg, bus=bus):
                mon = monitor(bus, "--class", "info", "--mount", f"{tmp_path}/w/*")
                time.sleep(1.0)  # let it subscribe before the events happen
                with tmpfs(tmp_path / "elsewhere"), tmpfs(tmp_path / "w" / "u") as u:
                    watch = mon.expect(lambda s: " watch-added " in s)
                    assert f" {u} " in watch
                    assert "classes=info,warn,err,thr lower=50% upper=20%" in watch
                    line = mon.expect(lambda s: " mounted " in s)
                    assert f" {u} " in line and "mount_id=" in line and "'" not in line
            mon.expect(lambda s: s == "fsmond stopped")
            with fsmond(cfg, bus=bus):
                mon.expect(lambda s: s == "fsmond started")
                assert mon.proc.poll() is None
        assert mon.proc.wait(timeout=30) == 3  # the dbus-daemon is gone
        assert mon.proc.stderr is not None and "lost the connection" in mon.proc.stderr.read()
        assert not any("elsewhere" in line or " thr " in line for line in mon.lines.queue)
    finally:
        if mon is not None:
            mon.close()
