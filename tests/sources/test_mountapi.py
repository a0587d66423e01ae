"""listmount/statmount render mounts exactly as /proc/self/mountinfo does."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsmond.sources import mountapi
from fsmond.sources.mountinfo import parse_mountinfo
from tests.kernel import require_mount_api
from tests.running import mount_id_of, run, tmpfs

pytestmark = [pytest.mark.root]


@pytest.fixture(autouse=True)
def _kernel_has_it() -> None:
    require_mount_api(fanotify=False)


def statmount_table() -> dict[int, object]:
    out = {}
    for uid in mountapi.listmount_all():
        found = mountapi.statmount(uid)
        assert found is not None
        out[found.entry.mount_id] = found.entry
    return out


def test_every_mount_equals_its_mountinfo_line_with_odd_names(tmp_path: Path) -> None:
    odd = tmp_path / "a b\tc\nd\\e"
    with tmpfs(odd, "size=1m,mode=700,nosuid,nodev,noexec"):
        run("mount", "--bind", "-o", "ro", str(odd), str(tmp_path))
        try:
            run("mount", "-o", "remount,bind,ro,noatime", str(tmp_path))
            mountinfo = {e.mount_id: e for e in parse_mountinfo(
                Path("/proc/self/mountinfo").read_bytes())}
            assert statmount_table() == mountinfo
            assert any(e.mount_point == str(odd) for e in mountinfo.values())
        finally:
            run("umount", str(tmp_path))


def test_gone_mounts_and_what_a_path_shows(tmp_path: Path) -> None:
    assert mountapi.statmount(0xFFFF_FFFF_0000) is None
    with tmpfs(tmp_path / "t", "size=1m") as t:
        st = os.stat(t)
        assert mountapi.file_system_at(str(t)) == ((os.major(st.st_dev), os.minor(st.st_dev)),
                                                   "rw,size=1024k")
        assert mountapi.mount_id_at(str(t)) == mount_id_of(t)
        assert mountapi.mount_id_at(str(t / "nonexistent")) is None
        assert mountapi.shows_mount(str(t), (0, 0), mount_id_of(t)) == (True, None)
        assert mountapi.shows_mount(str(t), (0, 0), mount_id_of(t) + 1) == (False, None)
    assert mountapi.statmount_missing() is None and mountapi.fanotify_mounts_missing() is None


def mnt_event(mask: int, mnt_id: int) -> bytes:
    info = struct.pack("=BBHIQ", mountapi.FAN_EVENT_INFO_TYPE_MNT, 0, 16, 0, mnt_id)
    return struct.pack("=IBBHQii", 24 + len(info), 3, 0, 24, mask, -1, 0) + info


def test_without_statx_in_the_c_library_no_mount_id_is_known(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An old glibc or musl has no statx(): the checks then let samples through
    rather than fail (or kill the sampler's thread with an AttributeError)."""
    monkeypatch.setattr(mountapi, "_statx", None)
    assert mountapi.mount_id_at(str(tmp_path)) is None
    assert mountapi.shows_mount(str(tmp_path), (0, 0), 1) == (True, None)
    assert mountapi.shows_device(str(tmp_path), (0, 0), 1) == (True, None)


@pytest.mark.parametrize("n", [1, 3])
def test_event_parser(n: int) -> None:
    buf = (mnt_event(mountapi.FAN_MNT_ATTACH, 7) + mnt_event(mountapi.FAN_MNT_DETACH, 9)) * n
    assert mountapi.parse_mount_events(buf) == [("attach", 7), ("detach", 9)] * n
    assert mountapi.parse_mount_events(mnt_event(mountapi.FAN_Q_OVERFLOW, 0))[0][0] == "overflow"


@given(st.binary(max_size=120))
def test_event_parser_never_crashes(data: bytes) -> None:
    mountapi.parse_mount_events(data)
    mountapi.parse_mount_events(mnt_event(mountapi.FAN_MNT_ATTACH, 1)[: len(data) % 40] + data)


@given(st.lists(st.tuples(st.sampled_from([mountapi.FAN_MNT_ATTACH, mountapi.FAN_MNT_DETACH,
                                           mountapi.FAN_MNT_ATTACH | mountapi.FAN_MNT_DETACH,
                                           mountapi.FAN_Q_OVERFLOW, 0]),
                          st.integers(0, (1 << 64) - 1), st.sampled_from([7, 7, 7, 6]),
                          st.sampled_from([16, 16, 16, 12, 20])), max_size=6))
def test_the_one_pass_parse_is_the_general_one(
        records: list[tuple[int, int, int, int]]) -> None:
    buf = b""
    for mask, mnt_id, itype, ilen in records:
        info = struct.pack("=BBHIQ", itype, 0, ilen, 0, mnt_id)
        buf += struct.pack("=IBBHQii", 24 + len(info), 3, 0, 24, mask, -1, 0) + info
    assert mountapi.parse_mount_events(buf) == mountapi._parse_each(buf)
