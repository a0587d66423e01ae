"""btrfs space as btrfs sees itself, from its sysfs figures. Pure: no I/O.

Why: statvfs on btrfs is an approximation of an approximation. It counts
data in page cache only once writeback allocates it (so it moves in steps,
seconds apart), it does not see metadata running out (every new file then
fails with ENOSPC while df still shows room), and on RAID profiles its
f_bavail can stay above 0 after the last chunk is full.

How it works: the figures are the files below /sys/fs/btrfs/<fsid>/, keyed
by their path there ("allocation/data/bytes_used", "allocation/data/raid1/
total_bytes", "devices/loop0/size", "nodesize"), as text. `parse_dump`
reads the same keys from `grep -r . allocation devices/*/size nodesize` run
in that folder, which is how the samples in tests/data/btrfs were captured
and how a user can send one.

`estimate` follows `btrfs filesystem usage` (btrfs-progs,
cmds/filesystem-usage.c, print_filesystem_usage_overall):
- raw sizes: each profile's logical chunk total times its copies (single 1,
  dup/raid1/raid10 2, raid1c3 3, raid1c4 4; raid5/6 n/(n-1) and n/(n-2) of
  n devices, where progs reads each chunk's stripe count, which needs root);
- unallocated = the devices' sizes - the raw chunk totals;
- data ratio = raw / logical data chunk totals;
- "Free (estimated)" = free space in data chunks + unallocated / data ratio,
  where unallocated below MIN_UNALLOCATED is not counted (progs' "chop
  unallocatable space").
Two departures from progs, both because the figure drives alarms: free space
in data chunks also excludes bytes_readonly (superblock copies inside
chunks, never writable), bytes_reserved and bytes_may_use (data written to
page cache, not yet allocated: counting it at write time is what makes the
figure move with the writes instead of with writeback).

Metadata runs out on its own: when there is no unallocated space for a new
metadata chunk, a file creation needs its whole reservation from what is
left in the metadata chunks beyond the global reserve. That reservation is
the kernel's btrfs_calc_insert_metadata_size (nodesize * BTRFS_MAX_LEVEL * 2
per item) for the handful of items a creation touches, counted again for
the delayed references the free-space tree doubles. When what is left is
less than that, btrfs fails with ENOSPC however much data space there is:
`available` is then 0 and the resource is "metadata". A few creations
earlier (or within the last tenth of the metadata chunks) the resource is
already "metadata": that is the one at risk. What is left moves by a
transaction's worth as btrfs commits, so once metadata is full it stays full
(`metadata_full` given back to the next estimate) until it is out of that
at-risk band again: otherwise available would flap between 0 and the data
space, and no-space and the levels with it.
"""

from __future__ import annotations

from collections.abc import Mapping

from fsmond.errors import KernelFormatError
from fsmond.events import record

MIN_UNALLOCATED = 16 << 20  # progs' MIN_UNALOCATED_THRESH
BTRFS_MAX_LEVEL = 8
CREATE_ITEMS = 8  # items a file creation reserves (inode, ref, dir item and index, xattrs, ...)
DELAYED_REFS_FACTOR = 3  # the transaction's items, plus delayed refs counted twice
DEFAULT_NODESIZE = 16384  # mkfs.btrfs's default, when the figure is missing
AT_RISK_CREATES = 4  # metadata that cannot grow is at risk this many creations from the end

SPACES = ("data", "metadata", "system", "mixed")  # the space_info folders
_COPIES = {"single": 1, "dup": 2, "raid0": 1, "raid1": 2, "raid10": 2, "raid1c3": 3,
           "raid1c4": 4}
_PARITY = {"raid5": 1, "raid6": 2}
PROFILES = (*_COPIES, *_PARITY)


@record
class BtrfsSpace:
    """What statvfs would say if it knew (bytes), and which resource limits it."""

    size: int  # the devices' size divided by the data ratio, as df shows it
    free: int  # progs' "Free (estimated)", less what is already promised
    available: int  # free, or 0 when metadata cannot take one more file
    resource: str  # "metadata" when metadata cannot grow and is nearly full, else "data"
    unallocated: int  # raw bytes on the devices in no chunk
    metadata_left: int  # logical metadata bytes beyond the global reserve
    metadata_full: bool  # metadata cannot take one more file: available is 0


def parse_dump(text: str) -> dict[str, str]:
    """`grep -r .` output (path:value lines) as figures; later lines of a
    multi-line file (size_classes) are ignored."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if sep and key not in out:
            out[key] = value.strip()
    return out


def _int(figures: Mapping[str, str], key: str) -> int:
    """A byte count; 0 when the kernel has no such file."""
    text = figures.get(key)
    if text is None:
        return 0
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise KernelFormatError(f"btrfs sysfs {key}: {text[:40]!r} is not a byte count")
    return value


def ratio(profile: str, devices: int) -> float:
    """Raw bytes per logical byte of a profile."""
    if profile in _PARITY:
        data_stripes = devices - _PARITY[profile]
        return devices / data_stripes if data_stripes > 0 else 1.0
    return float(_COPIES.get(profile, 1))


def _profiles(figures: Mapping[str, str], space: str) -> list[str]:
    prefix = f"allocation/{space}/"
    return [p for p in PROFILES if prefix + p + "/total_bytes" in figures]


def estimate(figures: Mapping[str, str], metadata_full: bool = False) -> BtrfsSpace:
    """The estimate; KernelFormatError when the figures lack devices or chunks.
    `metadata_full`: what the previous estimate of this file system said."""
    devices = [k for k in figures if k.startswith("devices/") and k.endswith("/size")]
    raw_size = sum(_int(figures, k) for k in devices) * 512  # sectors
    raw_chunks = 0.0
    data_raw = data_logical = 0.0
    data_profile_ratio = 1.0
    for space in SPACES:
        for p in _profiles(figures, space):
            total = _int(figures, f"allocation/{space}/{p}/total_bytes")
            r = ratio(p, len(devices))
            raw_chunks += total * r
            if space in ("data", "mixed"):
                data_raw += total * r
                data_logical += total
                data_profile_ratio = max(data_profile_ratio, r)
    if not devices or raw_chunks == 0:
        raise KernelFormatError("btrfs sysfs figures without devices or chunks")
    data_ratio = data_raw / data_logical if data_logical else data_profile_ratio
    unallocated = max(0, raw_size - int(raw_chunks))

    data = "mixed" if "allocation/mixed/total_bytes" in figures else "data"

    def fig(name: str, space: str = data) -> int:
        return _int(figures, f"allocation/{space}/{name}")

    # In mixed groups the global reserve is part of bytes_may_use already.
    in_chunks = (fig("total_bytes") - fig("bytes_used") - fig("bytes_reserved")
                 - fig("bytes_readonly") - fig("bytes_may_use"))
    free = max(0, in_chunks)
    if unallocated >= MIN_UNALLOCATED:
        free += int(unallocated / data_ratio)

    metadata_left = free
    resource = "data"
    available = free
    full = False
    if data != "mixed":
        m = "metadata"
        metadata_left = (fig("total_bytes", m) - fig("bytes_used", m) - fig("bytes_reserved", m)
                         - fig("bytes_readonly", m) - _int(figures, "allocation/global_rsv_size"))
        if unallocated < MIN_UNALLOCATED:
            nodesize = _int(figures, "nodesize") or DEFAULT_NODESIZE
            one_create = nodesize * BTRFS_MAX_LEVEL * 2 * CREATE_ITEMS * DELAYED_REFS_FACTOR
            if metadata_left < max(AT_RISK_CREATES * one_create, fig("total_bytes", m) // 10):
                resource = "metadata"
            full = metadata_left < one_create or (metadata_full and resource == "metadata")
            if full:
                available = 0
    size = int(raw_size / data_ratio)
    return BtrfsSpace(size=size, free=free, available=available, resource=resource,
                      unallocated=unallocated, metadata_left=metadata_left,
                      metadata_full=full)
