"""Reliability and hostile input with real parts: nothing lost, nothing hangs,
nobody gets in (see RELIABILITY.md for the table of faults)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsmond.config import parse_config
from fsmond.engine.error_folds import MERGE_WAIT
from fsmond.events import Observation
from fsmond.sources.kmsg import KmsgSource
from fsmond.trace import replay
from tests.kernel import require_filesystem
from tests.publishers.buses import busctl, dbus_daemon
from tests.running import FsmondProcess, daemon_config, fsmond, tmpfs

pytestmark = [pytest.mark.root]
NAME, ROOT, MANAGER = "org.fsmond.FsMon1", "/org/fsmond/FsMon1", "org.fsmond.FsMon1.Manager"
FS = "org.fsmond.FsMon1.FileSystem"


def config(tmp_path: Path, watch: str) -> Path:
    return daemon_config(tmp_path / "f.toml", watch)


def test_an_autofs_trigger_is_never_touched(tmp_path: Path) -> None:
    """A direct autofs mount whose 'daemon' is a pipe we hold: any lookup the
    kernel wants answered would arrive on the pipe as a request packet."""
    require_filesystem("autofs")
    trigger = tmp_path / "auto"
    trigger.mkdir()
    r, w = os.pipe()
    os.set_blocking(r, False)
    subprocess.run(["mount", "-t", "autofs", "-o",
                    f"fd={w},pgrp={os.getpgrp()},minproto=5,maxproto=5,direct",
                    "fsmond-test", str(trigger)], check=True, pass_fds=(w,))
    try:
        cfg = config(tmp_path, f"{tmp_path}/*")  # the trigger matches, polled often
        with tmpfs(tmp_path / "other"), fsmond(cfg) as p:
            time.sleep(2)  # about twenty full sampling cycles
            p.wait_for(lambda e: e["name"] == "watch-added")
        with pytest.raises(BlockingIOError):
            os.read(r, 4096)  # no request ever arrived
        assert not any(e["mount_point"] == str(trigger) for e in p.events)
    finally:
        subprocess.run(["umount", "-l", str(trigger)], check=False)
        os.close(r)
        os.close(w)


def test_kmsg_overrun_is_counted_and_reading_goes_on() -> None:
    """Open at the oldest record, then flood the ring before reading: the first
    read gets EPIPE (records lost), which is counted, and reading continues."""
    old = Path("/proc/sys/kernel/printk_devkmsg").read_text().strip()
    Path("/proc/sys/kernel/printk_devkmsg").write_text("on\n")  # no ratelimit for the flood
    got: list[Observation] = []
    src = KmsgSource(got.append, replay=True)

    def flood() -> None:
        with open("/dev/kmsg", "w") as k:
            for i in range(40000):  # far more than the ring holds
                k.write(f"fsmond overrun test line {i:06d} {'x' * 60}\n")
                k.flush()

    async def main() -> None:
        task = asyncio.create_task(src.run(flood))  # floods before the first read
        for _ in range(500):
            await asyncio.sleep(0.01)
            if src.overruns and src.records > 1000:
                break
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
    finally:
        Path("/proc/sys/kernel/printk_devkmsg").write_text(old + "\n")
    assert src.overruns >= 1 and src.records > 1000
    assert got == []  # a process's lines, however many, never become reports


def test_losing_the_bus_exits_non_zero_for_systemd_to_restart(tmp_path: Path) -> None:
    with dbus_daemon() as bus:
        p = FsmondProcess(config(tmp_path, "/nonexistent"), bus=bus)
        p.wait_ready()
    # the bus is gone now
    try:
        assert p.proc.wait(20) != 0
    finally:
        p.stop()
    assert any("lost the connection" in line for line in p.stderr), "".join(p.stderr[-10:])


def test_signal_storm_with_a_subscriber_that_never_reads(tmp_path: Path) -> None:
    """20,000 events while a subscriber's socket is never read: the bus may
    drop that subscriber, but fsmond's own connection survives and answers."""
    base = tmp_path / "s"
    base.mkdir()
    with dbus_daemon() as bus, tmpfs(base / "t", "size=4m") as t:
        stuck = subprocess.Popen(  # subscribes to everything, then sleeps, never reading
            ["python3", "-c", "import socket,time,sys\n"
             "s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
             "s.sendall(b'\\0AUTH EXTERNAL 30\\r\\n'); s.recv(100); s.sendall(b'BEGIN\\r\\n')\n"
             "time.sleep(600)", bus.split("path=")[1].split(",")[0]])
        try:
            with fsmond(config(tmp_path, f"{base}/*"), bus=bus) as p:
                for i in range(5000):  # 5,000 mounts and unmounts: 20,000 signals and more
                    d = base / f"m{i}"
                    d.mkdir()
                    subprocess.run(["mount", "--bind", str(t), str(d)], check=True)
                subprocess.run(f"umount {base}/m*", shell=True, check=True)
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    status = json.loads(busctl(bus, "call", NAME, ROOT, MANAGER,
                                               "GetStatus").stdout)["data"][0]
                    if status["events"]["data"] >= 10001:
                        break
                    time.sleep(0.5)
                assert status["events"]["data"] >= 10001
                assert status["dbus_dropped"]["data"] == 0
                assert p.proc.poll() is None
        finally:
            stuck.kill()
            stuck.wait()


def test_dbus_methods_fuzzed(tmp_path: Path) -> None:
    with dbus_daemon() as bus, tmpfs(tmp_path / "t") as t, \
            fsmond(config(tmp_path, str(t)), bus=bus) as p:

        @settings(max_examples=60, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(st.text(min_size=0, max_size=300), st.integers(0, 2**64 - 1),
               st.lists(st.text(max_size=8), max_size=4))
        def probe(path: str, gen: int, classes: list[str]) -> None:
            path = path.replace("\0", "")  # a process argument cannot hold NUL
            classes = [c.replace("\0", "") for c in classes]
            for args in (["GetMount", "s", path], ["GetChangesSince", "t", str(gen)],
                         ["AddWatch", "sasss", path or "/", str(len(classes)), *classes,
                          path[:5], path[5:10]], ["RemoveWatch", "s", path]):
                r = busctl(bus, "call", NAME, ROOT, MANAGER, *args, check=False)
                if r.returncode != 0:  # a clear error, never a crash
                    assert "org.fsmond" in r.stderr or "Invalid" in r.stderr \
                        or "nothing is mounted" in r.stderr or "not between" in r.stderr \
                        or r.stderr.strip(), r.stderr
            assert p.proc.poll() is None

        probe()
        r = busctl(bus, "call", NAME, ROOT, MANAGER, "GetStatus")
        assert r.returncode == 0


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def fuse_server(mount_point: Path) -> Iterator[subprocess.Popen[str]]:
    """tests/fuse_server.py mounted at `mount_point`; SIGSTOP it to hang it."""
    mount_point.mkdir(parents=True)
    server = subprocess.Popen([sys.executable, str(Path(__file__).parent / "fuse_server.py"),
                               str(mount_point)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "mounted"
        yield server
    finally:
        server.send_signal(signal.SIGCONT)
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()


def test_a_hung_fuse_server_is_unresponsive_and_never_delays_the_others(tmp_path: Path) -> None:
    base = tmp_path / "w"
    with fuse_server(base / "fuse") as server:
        cfg = daemon_config(tmp_path / "f.toml", f"{base}/*", statvfs_timeout='"300ms"')
        with dbus_daemon() as bus, tmpfs(base / "t", "size=10m") as t, \
                fsmond(cfg, bus=bus) as p:
            fuse_dev = p.wait_for(lambda e: e["name"] == "watch-added"
                                  and e["fstype"] == "fuse.fsmondtest")["device"]
            p.wait_for(lambda e: e["name"] == "watch-added" and e["mount_point"] == str(t))
            server.send_signal(signal.SIGSTOP)  # every statvfs of it now hangs
            e = p.wait_for(lambda e: e["name"] == "unresponsive")
            assert e["device"] == fuse_dev and e["class"] == "warn"
            (t / "a").write_bytes(b"x" * (6 << 20))  # the others are still sampled
            p.wait_for(lambda e: e["name"] == "threshold" and e["mount_point"] == str(t))
            time.sleep(2)  # twenty poll intervals: no pile of threads
            assert threads_of(p.proc.pid) <= 8
            status = json.loads(busctl(bus, "call", NAME, ROOT, MANAGER, "GetStatus",
                                       timeout=5).stdout)  # D-Bus answers meanwhile
            assert status["data"][0]["filesystems"]["data"] == 2
            server.send_signal(signal.SIGCONT)
            e = p.wait_for(lambda e: e["name"] == "responsive")
            assert e["device"] == fuse_dev
            assert len([x for x in p.events if x["name"] == "unresponsive"]) == 1


def test_a_fuse_server_hung_before_start_never_stops_the_daemon(tmp_path: Path) -> None:
    """Every new file system gets a FAN_FS_ERROR mark, and marking calls the
    file system's statfs: a FUSE server that is already stopped must not hang
    the event loop there (FUSE never reports such errors anyway)."""
    base = tmp_path / "w"
    with fuse_server(base / "fuse") as server:
        server.send_signal(signal.SIGSTOP)
        cfg = daemon_config(tmp_path / "f.toml", f"{base}/*", statvfs_timeout='"300ms"')
        with tmpfs(base / "t", "size=10m") as t, fsmond(cfg) as p:
            e = p.wait_for(lambda e: e["name"] == "unresponsive")
            assert e["fstype"] == "fuse.fsmondtest"
            (t / "a").write_bytes(b"x" * (6 << 20))  # the others are still sampled
            p.wait_for(lambda e: e["name"] == "threshold" and e["mount_point"] == str(t))
            server.send_signal(signal.SIGCONT)
            p.wait_for(lambda e: e["name"] == "responsive")


def test_the_call_that_activates_fsmond_finds_a_file_system_still_in_its_first_statvfs(
        tmp_path: Path) -> None:
    """An object appears with its first sample, so fsmond takes its bus name
    only once every file system has answered once (or was found unresponsive):
    the call that activates it must find every object, here also a FUSE file
    system whose first statfs takes two seconds."""
    base = tmp_path / "w"
    with fuse_server(base / "fuse") as server, tmpfs(base / "t", "size=10m"):
        server.send_signal(signal.SIGSTOP)
        resume = threading.Timer(2.0, server.send_signal, (signal.SIGCONT,))
        resume.start()
        cfg = daemon_config(tmp_path / "f.toml", f"{base}/*", statvfs_timeout='"8s"')
        command = (f"/bin/sh -c 'exec {sys.executable} -m fsmond --config {cfg} "
                   '--bus "$DBUS_STARTER_ADDRESS"\'')
        with dbus_daemon(activates={NAME: command}) as address:
            try:
                r = busctl(address, "call", NAME, ROOT + "/fs",
                           "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", timeout=30)
            finally:
                resume.cancel()
                pid = busctl(address, "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                             "org.freedesktop.DBus", "GetConnectionUnixProcessID", "s", NAME)
                os.kill(json.loads(pid.stdout)["data"][0], signal.SIGTERM)
    objects = json.loads(r.stdout)["data"][0].values()
    shown = {o[FS]["FsType"]["data"]: o[FS]["Sampled"]["data"] for o in objects}
    assert shown == {"fuse.fsmondtest": True, "tmpfs": True}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_bounded_soak_of_mounts_space_and_errors(tmp_path: Path) -> None:
    """Thirty seconds of mount churn, space churn and ext4 errors together: the
    daemon stays up, memory stays flat, seq has no gap, and per level the
    threshold events alternate reached/cleared as the pure engine demands."""
    from tests.running import loop_ext4

    base = tmp_path / "w"
    base.mkdir()
    cfg = daemon_config(tmp_path / "f.toml", f"{base}/*")
    trace = tmp_path / "trace.jsonl"
    with loop_ext4(tmp_path / "img", base / "e") as (_, loop), \
            tmpfs(base / "t", "size=10m") as t, fsmond(cfg, "--trace", str(trace)) as p:
        p.wait_for(lambda e: e["name"] == "watch-added" and e["mount_point"] == str(t))
        trigger = Path(f"/sys/fs/ext4/{loop}/trigger_fs_error")
        start = time.monotonic()
        rss_early = 0
        i = 0
        while time.monotonic() - start < 30:
            d = base / f"churn{i % 5}"
            d.mkdir(exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "churn", str(d)],
                           check=True)
            (t / "fill").write_bytes(b"x" * ((9 if i % 2 else 2) << 20))
            if i % 10 == 0:
                trigger.write_text(f"soak {i}\n")
            time.sleep(0.15)
            subprocess.run(["umount", str(d)], check=True)
            i += 1
            if rss_early == 0 and time.monotonic() - start > 10:
                rss_early = rss_kb(p.proc.pid)
        rss_late = rss_kb(p.proc.pid)
        p.wait_for(lambda e: e["name"] == "unmounted"
                   and e["mount_point"].endswith(f"churn{(i - 1) % 5}"))
        assert p.proc.poll() is None
    seqs = [e["seq"] for e in p.events]
    assert seqs == list(range(1, len(seqs) + 1))  # nothing lost, nothing duplicated
    state: dict[tuple[str, str, str], str] = {}
    for e in p.events:
        if e["name"] == "threshold":
            key = (e["device"], e["details"]["resource"], e["details"]["level"])
            assert state.get(key, "cleared") != e["details"]["state"], e
            state[key] = e["details"]["state"]
    assert sum(e["name"] == "mounted" for e in p.events) >= 50
    assert any(e["name"] == "error" for e in p.events)
    assert rss_late - rss_early < 8 * 1024, (rss_early, rss_late)  # flat, within 8 MB
    # The daemon's threshold events are exactly the pure engine's answer to the
    # observations it was given (replayed from its own trace).
    replayed = replay(parse_config(cfg.read_text()), trace.read_text().splitlines(),
                      merge_wait=MERGE_WAIT)

    def thresholds(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(e["device"], *(e["details"][k] for k in ("resource", "level", "state",
                                                           "available")))
                for e in events if e["name"] == "threshold"]

    ran = thresholds(p.events)
    assert len(ran) >= 4
    assert ran == thresholds([e.to_dict() for e in replayed])
