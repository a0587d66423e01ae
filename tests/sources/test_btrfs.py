"""btrfs's own figures read from a real loop-mounted btrfs (sources/btrfs.py)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from fsmond.sources.btrfs import BtrfsReader, read_figures
from fsmond.sources.btrfs_usage import estimate
from fsmond.sources.members import btrfs_fsid
from fsmond.sources.space import sample_path
from tests.kernel import require_filesystem
from tests.loopfs import loop_btrfs
from tests.running import run

pytestmark = [pytest.mark.root]


@pytest.fixture
def btrfs(tmp_path: Path) -> tuple[Path, list[str]]:
    require_filesystem("btrfs")
    with loop_btrfs(tmp_path, tmp_path / "m", size_mb=128) as (mnt, devs):
        yield mnt, [os.path.basename(d) for d in devs]  # type: ignore[misc]


def test_the_fsid_names_the_sysfs_folder_that_holds_the_device(
        btrfs: tuple[Path, list[str]]) -> None:
    mnt, (loop,) = btrfs
    fsid = btrfs_fsid(str(mnt))
    assert os.path.exists(f"/sys/fs/btrfs/{fsid}/devices/{loop}")
    assert fsid in run("btrfs", "filesystem", "show", str(mnt))


def test_a_sample_carries_btrfs_figures_not_statvfs(btrfs: tuple[Path, list[str]]) -> None:
    mnt, _ = btrfs
    plain = sample_path((0, 99), str(mnt))
    fsid = btrfs_fsid(str(mnt))
    reader = BtrfsReader()
    s = reader.sample(plain, str(mnt))
    expected = estimate(read_figures(f"/sys/fs/btrfs/{fsid}"))
    assert (s.size, s.free, s.available) == (expected.size, expected.free, expected.available)
    assert (s.source, s.resource) == ("btrfs", "data")
    assert s.available != plain.available  # statvfs leaves unallocated metadata out
    assert (s.files, s.block_size) == (plain.files, plain.block_size)


def test_without_sysfs_the_statvfs_sample_stays_and_the_log_says_so_once(
        btrfs: tuple[Path, list[str]], caplog: pytest.LogCaptureFixture) -> None:
    mnt, _ = btrfs
    plain = sample_path((0, 99), str(mnt))
    reader = BtrfsReader(sysfs="/nonexistent")
    with caplog.at_level(logging.WARNING, logger="fsmond.sources.btrfs"):
        assert reader.sample(plain, str(mnt)) == plain
        assert reader.sample(plain, str(mnt)) == plain
    assert len(caplog.records) == 1 and "statvfs" in caplog.records[0].getMessage()


def test_not_a_btrfs_is_an_error_not_a_guess(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        btrfs_fsid(str(tmp_path))
