"""btrfs as btrfs sees itself, and the fill rate, with the real daemon on real
loop-mounted btrfs (single, and raid1 over two loop devices)."""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fsmond.sources.mountinfo import parse_mountinfo
from tests.kernel import require_filesystem
from tests.loopfs import loop_btrfs
from tests.publishers.buses import dbus_daemon
from tests.publishers.signals import Signal, SignalRecorder
from tests.running import FsmondProcess, daemon_config, fsmond

pytestmark = [pytest.mark.root]
FS = "org.fsmond.FsMon1.FileSystem"
MIB = 1 << 20


@pytest.fixture(autouse=True)
def _btrfs() -> None:
    require_filesystem("btrfs")


def fill_until_enospc(write: Any) -> int:
    """Calls write(i) until it fails with ENOSPC; how many succeeded."""
    i = 0
    while True:
        try:
            write(i)
        except OSError as e:
            assert e.errno == 28, e
            return i
        i += 1


def superblock_of(mnt: Path) -> str:
    """The device number mountinfo gives the mount (stat gives the subvolume's,
    another anonymous device number, on btrfs)."""
    table = parse_mountinfo(Path("/proc/self/mountinfo").read_bytes())
    d = [e.device for e in table if e.mount_point == str(mnt)][-1]
    return f"{d[0]}:{d[1]}"


def on_its_object(p: FsmondProcess, e: dict[str, Any], mnt: Path) -> None:
    dev = superblock_of(mnt)
    assert dev.startswith("0:")  # the btrfs superblock, never a member device
    assert e["device"] == dev and e["fs"] == "/org/fsmond/FsMon1/fs/" + dev.replace(":", "_")
    assert e["mount_point"] == str(mnt) and e["fstype"] == "btrfs"


@pytest.mark.timeout(300)  # btrfs flushes and commits hard near ENOSPC: about 40 s here
def test_metadata_full_is_no_space_while_statvfs_shows_room(tmp_path: Path) -> None:
    with loop_btrfs(tmp_path, tmp_path / "m", size_mb=128) as (mnt, _), \
            fsmond(daemon_config(tmp_path / "fsmond.toml", str(mnt))) as p:
        p.wait_for(p.named("watch-added"))

        def small_file(i: int) -> None:  # stored inline, in metadata
            (mnt / f"f{i:06d}").write_bytes(b"x" * 2000)

        assert fill_until_enospc(small_file) > 0
        st = os.statvfs(mnt)
        assert st.f_bavail * st.f_frsize >= MIB  # what fsmond used to go by
        e = p.wait_for(p.named("no-space", resource="metadata"))
        assert e["details"]["source"] == "btrfs" and e["details"]["available"] == 0
        on_its_object(p, e, mnt)
        # btrfs keeps committing and what is left in metadata moves: still full,
        # said once (it said it twice before metadata full stayed full).
        for i in range(10):
            with contextlib.suppress(OSError):
                small_file(100_000 + i)
        os.sync()
        time.sleep(2)  # some 20 more samples
        assert len([x for x in p.events if x["name"] == "no-space" and x["fs"] == e["fs"]]) == 1


def test_raid1_filled_until_enospc_has_nothing_available(tmp_path: Path) -> None:
    with loop_btrfs(tmp_path, tmp_path / "m", devices=2, size_mb=128) as (mnt, loops), \
            fsmond(daemon_config(tmp_path / "fsmond.toml", str(mnt))) as p:
        assert len(loops) == 2
        p.wait_for(p.named("watch-added"))
        with open(mnt / "big", "wb") as f:
            fill_until_enospc(lambda _: f.write(b"y" * MIB))
            try:
                os.fsync(f.fileno())
            except OSError as e:  # what did not fit, reported late
                assert e.errno == 28, e
        e = p.wait_for(p.named("no-space", resource="data"))
        assert e["details"]["source"] == "btrfs" and e["details"]["available"] == 0
        on_its_object(p, e, mnt)
        os.sync()
        time.sleep(2)  # some 20 more samples: still full, said once
        assert len([x for x in p.events if x["name"] == "no-space" and x["fs"] == e["fs"]]) == 1
        upper = p.wait_for(p.named("threshold", level="upper", state="reached"))
        # On raid1 the size is half the devices', as df has it.
        assert upper["details"]["size"] == 128 * MIB


@pytest.fixture
def bus() -> Iterator[str]:
    with dbus_daemon() as address:
        yield address


def changed(signals: list[Signal], obj: str, name: str) -> list[float]:
    return [s.body[1][name].value for s in signals
            if s.path == obj and s.member == "PropertiesChanged" and s.body[0] == FS
            and name in s.body[1]]


def test_steady_writes_show_their_rate_and_flat_is_not_filling(tmp_path: Path,
                                                                bus: str) -> None:
    """4 MiB/s for 12 s: once the estimate's window (5 s) holds only the steady
    writes, the FillRate published is within a factor of 2 of the truth (and
    a steady estimate is not sent again on every poll), and SecondsToFull
    goes down; once the writes stop, SecondsToFull is -1."""
    rate = 4 * MIB
    chunk = 64 << 10
    with loop_btrfs(tmp_path, tmp_path / "m", size_mb=256) as (mnt, _):
        obj = "/org/fsmond/FsMon1/fs/" + superblock_of(mnt).replace(":", "_")
        rec = SignalRecorder(bus)
        try:
            with fsmond(daemon_config(tmp_path / "fsmond.toml", str(mnt)), bus=bus) as p:
                p.wait_for(p.named("watch-added"))
                marks: dict[str, int] = {}

                def writer() -> None:
                    start = time.monotonic()
                    with open(mnt / "w", "wb") as f:
                        for n in range(int(12 * rate / chunk)):
                            if n == int(6.5 * rate / chunk):
                                marks["steady"] = len(rec.signals)
                            f.write(b"z" * chunk)
                            time.sleep(max(0.0, start + (n + 1) * chunk / rate
                                           - time.monotonic()))
                    marks["end"] = len(rec.signals)

                t = threading.Thread(target=writer)
                t.start()
                t.join()
                steady = rec.signals[marks["steady"]:marks["end"]]
                rates = changed(steady, obj, "FillRate")
                assert all(rate / 2 <= r <= 2 * rate for r in rates), rates
                sent = changed(rec.signals[:marks["end"]], obj, "FillRate")
                assert sent and rate / 2 <= sent[-1] <= 2 * rate, sent
                assert len(rates) <= 3, rates  # 5.5 s of a steady estimate
                left = changed(steady, obj, "SecondsToFull")
                assert all(s > 0 for s in left), left
                known = changed(rec.signals[:marks["end"]], obj, "SecondsToFull")
                assert known[-1] > 0 and known[-1] < max(known), known
                assert all(b <= 1.1 * a for a, b in itertools.pairwise(left)), left
                rec.wait_for(lambda s: s.path == obj and s.member == "PropertiesChanged"
                             and s.body[0] == FS and "SecondsToFull" in s.body[1]
                             and s.body[1]["SecondsToFull"].value == -1.0, timeout=20)
        finally:
            rec.close()
