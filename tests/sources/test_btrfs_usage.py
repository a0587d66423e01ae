"""btrfs's own space estimate on figures captured from real loop-mounted btrfs.

Each sample in tests/data/btrfs holds `grep -r .` of /sys/fs/btrfs/<fsid>
after a fill, with what `btrfs filesystem usage -b` and statvfs said at the
same moment in its `#` lines (tests/data/btrfs/README.md says how they were
made). The estimate follows progs' "Free (estimated)", less what btrfs has
already promised (bytes_readonly, bytes_reserved, bytes_may_use).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsmond.errors import KernelFormatError
from fsmond.sources.btrfs_usage import estimate, parse_dump, ratio

DATA = Path(__file__).parent.parent / "data" / "btrfs"
SAMPLES = sorted(p.stem for p in DATA.glob("*.txt"))


def load(name: str) -> tuple[dict[str, str], dict[str, int]]:
    text = (DATA / f"{name}.txt").read_text()
    said = {}
    for key, value in re.findall(r"^# progs: ([^:]+):\s+(\d+)", text, re.M):
        said[key] = int(value)
    m = re.search(r"f_bavail=(\d+) f_bsize=(\d+)", text)
    assert m is not None
    said["statvfs available"] = int(m[1]) * int(m[2])
    return parse_dump(text), said


def promised(figures: dict[str, str], space: str) -> int:
    return sum(int(figures.get(f"allocation/{space}/{k}", "0"))
               for k in ("bytes_readonly", "bytes_reserved", "bytes_may_use"))


@pytest.mark.parametrize("name", SAMPLES)
def test_the_estimate_is_progs_free_estimated_less_what_is_promised(name: str) -> None:
    figures, said = load(name)
    space = estimate(figures)
    assert space.unallocated == said["Device unallocated"]
    mixed = "allocation/mixed/total_bytes" in figures
    # progs takes the mixed groups' global reserve off itself; it is in bytes_may_use.
    expected = said["Free (estimated)"] - promised(figures, "mixed" if mixed else "data")
    if mixed:
        expected += int(figures["allocation/global_rsv_reserved"])
    assert space.free == max(0, expected)
    assert space.size == said["Device size"] / said["Data ratio"]


def test_metadata_full_while_statvfs_shows_room() -> None:
    """Small files until ENOSPC: data chunks have 8 MiB, statvfs says 8 MiB
    available, but metadata cannot take one more file."""
    figures, said = load("single-metadata-full")
    space = estimate(figures)
    assert said["statvfs available"] == 8 << 20 and space.free == 8 << 20
    assert space.available == 0 and space.resource == "metadata"


def test_raid1_filled_until_enospc_has_nothing_left() -> None:
    figures, said = load("raid1-data-full")
    space = estimate(figures)
    assert said["statvfs available"] > 0  # what fsmond used to report
    assert (space.available, space.resource) == (0, "data")


def test_fresh_file_systems_have_room_and_data_is_the_resource() -> None:
    for name in ("single-fresh", "raid1-fresh", "single-half"):
        space = estimate(load(name)[0])
        assert space.available == space.free > 0 and space.resource == "data"


def test_data_in_page_cache_counts_at_once() -> None:
    """20 MiB written, not yet synced: progs and statvfs do not see it yet."""
    figures, said = load("single-dirty")
    assert said["Free (estimated)"] - estimate(figures).free == 20 << 20


def test_raid_ratios() -> None:
    assert [ratio(p, 4) for p in ("single", "dup", "raid1", "raid10", "raid1c3", "raid5",
                                  "raid6")] == [1, 2, 2, 2, 3, 4 / 3, 2]
    assert ratio("raid5", 1) == 1.0  # degraded beyond sense: never divide by zero


def test_a_figure_that_is_no_byte_count_is_an_error() -> None:
    figures = load("single-fresh")[0]
    for bad in ("-1", "12a", ""):
        with pytest.raises(KernelFormatError, match="allocation/data/bytes_used"):
            estimate({**figures, "allocation/data/bytes_used": bad})


def test_figures_without_devices_or_chunks_are_an_error() -> None:
    figures = load("single-fresh")[0]
    with pytest.raises(KernelFormatError):
        estimate({k: v for k, v in figures.items() if not k.startswith("devices/")})
    with pytest.raises(KernelFormatError):
        estimate({})


@given(st.dictionaries(st.sampled_from(sorted(load("raid1-fresh")[0])),
                       st.text(max_size=12), max_size=30))
def test_any_garbage_in_the_figures_is_an_error_or_an_estimate(bad: dict[str, str]) -> None:
    figures = {**load("raid1-fresh")[0], **bad}
    try:
        space = estimate(figures)
    except KernelFormatError:
        return
    assert 0 <= space.available <= space.free and space.size >= 0


def test_metadata_stays_full_until_it_is_out_of_the_band_at_risk() -> None:
    """What is left moves by a transaction's worth as btrfs commits: once full,
    a little more room is not yet room (no flapping no-space and levels)."""
    figures = load("single-metadata-full")[0]
    used = int(figures["allocation/metadata/bytes_used"])
    one_create = 16384 * 8 * 2 * 8 * 3  # at the sample's nodesize
    a_bit_more = {**figures, "allocation/metadata/bytes_used": str(used - one_create)}
    assert estimate(a_bit_more).metadata_full is False  # taken alone: room for one
    kept = estimate(a_bit_more, metadata_full=True)
    assert (kept.available, kept.resource, kept.metadata_full) == (0, "metadata", True)
    much_more = {**figures, "allocation/metadata/bytes_used": str(used - 5 * one_create)}
    freed = estimate(much_more, metadata_full=True)
    assert freed.metadata_full is False and freed.available == freed.free > 0
