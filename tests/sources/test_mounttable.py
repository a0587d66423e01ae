"""The mountinfo backend: reads paced by their cost, a storm coalesced, nothing lost."""

from __future__ import annotations

import asyncio
import ctypes
import time
from pathlib import Path

import pytest

from fsmond.engine.mounts import MountTable
from fsmond.sources.mountinfo import parse_mountinfo
from fsmond.sources.mounttable import COST_FACTOR, MAX_GAP, MIN_GAP, MountinfoSource, ReadPacer
from tests.running import tmpfs
from tests.sources.follow import follow

libc = ctypes.CDLL(None, use_errno=True)


def test_a_change_after_a_quiet_spell_is_read_at_once() -> None:
    p = ReadPacer()
    assert p.delay(100.0) == 0.0  # never read yet
    p.read(start=100.0, cost=0.004)
    assert p.gap == pytest.approx(COST_FACTOR * 0.004)
    assert p.delay(100.01) == pytest.approx(0.03)  # in a storm: wait for more changes
    assert p.delay(100.5) == 0.0  # quiet since: at once


def test_the_gap_follows_the_cost_within_bounds() -> None:
    p = ReadPacer()
    p.read(start=0.0, cost=0.0)
    assert p.gap == MIN_GAP  # a tiny table still coalesces a storm
    p.read(start=1.0, cost=60.0)
    assert p.gap == MAX_GAP  # a huge one never holds news back for long
    assert p.delay(1.5) == pytest.approx(0.5)


@pytest.mark.root
def test_a_storm_is_read_a_few_times_and_ends_exact(tmp_path: Path) -> None:
    n = 500
    with tmpfs(tmp_path / "s") as base:
        (base / "src").mkdir()
        for i in range(n):
            (base / f"m{i}").mkdir()
        table = MountTable()

        def storm() -> None:  # in bursts, so that the source wakes up many times
            src = str(base / "src").encode()
            for i in range(n):
                assert libc.mount(src, str(base / f"m{i}").encode(), None, 0x1000, None) == 0
                if i % 25 == 0:
                    time.sleep(0.005)

        def all_there(_: MountinfoSource) -> bool:
            return sum(m.mount_point.startswith(f"{base}/m") for m in table.mounts.values()) == n

        src = asyncio.run(follow(table, storm, all_there, MountinfoSource))
        # Without pacing every wake-up would be a read: hundreds for this storm.
        assert 1 <= src.reads - 1 <= n // 10  # the first read was at the start
        # And the source does not listen while a read is due: one wake-up a read.
        assert src.wakeups <= src.reads
        kernel = {e.mount_id: e for e in parse_mountinfo(Path("/proc/self/mountinfo").read_bytes())}
        assert table.mounts == kernel
