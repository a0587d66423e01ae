"""A btrfs' member devices: pure parsers, and a real two-device raid1."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from fsmond.sources.members import btrfs_fsid, btrfs_members, parse_devnum, parse_fs_info_fsid
from tests.kernel import require_filesystem
from tests.loopfs import loop_btrfs
from tests.running import run, tmpfs


def test_parsers() -> None:
    assert parse_devnum(b"7:1\n") == (7, 1)
    assert parse_devnum(b"259:12") == (259, 12)
    for bad in (b"", b"7", b"a:b", b"7:1:2", b"-1:2"):
        assert parse_devnum(bad) is None
    u = uuid.uuid4()
    assert parse_fs_info_fsid(b"\0" * 16 + u.bytes + b"\0" * 992) == str(u)
    with pytest.raises(ValueError):
        parse_fs_info_fsid(b"\0" * 20)


def test_members_from_a_sysfs_tree(tmp_path: Path) -> None:
    fsid = str(uuid.uuid4())
    devices = tmp_path / fsid / "devices"
    for name, dev in (("loop3", "7:3\n"), ("nvme0n1p3", "259:3\n"), ("odd", "garbage")):
        (devices / name).mkdir(parents=True)
        (devices / name / "dev").write_text(dev)
    (devices / "nodev").mkdir()
    assert btrfs_members(fsid, str(tmp_path)) == ((7, 3), (259, 3))
    assert btrfs_members("no-such-fsid", str(tmp_path)) == ()


@pytest.mark.root
def test_a_real_raid1_names_both_of_its_loop_devices(tmp_path: Path) -> None:
    require_filesystem("btrfs")
    with loop_btrfs(tmp_path, tmp_path / "b", devices=2) as (m, devs):
        shown = run("btrfs", "filesystem", "show", str(m))
        fsid = btrfs_fsid(str(m))
        assert fsid in shown
        want = tuple(sorted((os.major(r), os.minor(r)) for r in
                            (os.stat(d).st_rdev for d in devs)))
        assert tuple(sorted(btrfs_members(fsid))) == want


@pytest.mark.root
def test_not_a_btrfs_is_an_os_error(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "t") as t, pytest.raises(OSError):
        btrfs_fsid(str(t))
