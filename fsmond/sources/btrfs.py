"""btrfs's own space figures for a mounted btrfs: read in the sampler's threads.

How it works: /sys/fs/btrfs/<fsid>/ is named by the file system's UUID,
which neither the mount table nor statvfs gives (f_fsid is not it, and the
mount's source names one device of possibly many, by whatever name mount
was given). BTRFS_IOC_FS_INFO on the mount point does give it, without any
privilege; it is asked once per file system and asked again only when the
folder has gone (another btrfs now has that device number). The figures are
then a few dozen small sysfs reads, handed as text to the pure estimate in
btrfs_usage.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from fsmond.errors import KernelFormatError
from fsmond.events import DevNum, SpaceSample
from fsmond.sources.btrfs_usage import PROFILES, SPACES, estimate
from fsmond.sources.members import SYSFS_BTRFS, btrfs_fsid

log = logging.getLogger(__name__)

_SPACE_FILES = ("total_bytes", "bytes_used", "bytes_reserved", "bytes_readonly",
                "bytes_may_use")


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read().strip()


def read_figures(folder: str) -> dict[str, str]:
    """The files of /sys/fs/btrfs/<fsid> that the estimate uses, keyed by their path there."""
    out = {"nodesize": _read(f"{folder}/nodesize"),
           "allocation/global_rsv_size": _read(f"{folder}/allocation/global_rsv_size")}
    for space in SPACES:
        base = f"{folder}/allocation/{space}"
        try:
            entries = os.listdir(base)
        except FileNotFoundError:
            continue
        for name in _SPACE_FILES:
            out[f"allocation/{space}/{name}"] = _read(f"{base}/{name}")
        for profile in entries:
            if profile in PROFILES:
                key = f"allocation/{space}/{profile}/total_bytes"
                out[key] = _read(f"{folder}/{key}")
    for dev in os.listdir(f"{folder}/devices"):
        out[f"devices/{dev}/size"] = _read(f"{folder}/devices/{dev}/size")
    return out


class BtrfsReader:
    """Turns a statvfs sample of a btrfs into btrfs's own view of it."""

    def __init__(self, sysfs: str = SYSFS_BTRFS) -> None:
        self.sysfs = sysfs
        self._fsid: dict[DevNum, str] = {}
        self._full: dict[DevNum, bool] = {}  # metadata was full at the last sample
        self._warned = False

    def sample(self, sample: SpaceSample, path: str) -> SpaceSample:
        """`sample` with btrfs's size, free and available space; unchanged (and
        said once in the log) where btrfs's figures cannot be read."""
        dev = sample.device
        try:
            fsid = self._fsid.get(dev)
            if fsid is None or not os.path.isdir(f"{self.sysfs}/{fsid}"):
                fsid = self._fsid[dev] = btrfs_fsid(path)
            space = estimate(read_figures(f"{self.sysfs}/{fsid}"), self._full.get(dev, False))
        except (OSError, KernelFormatError) as e:
            self._fsid.pop(dev, None)
            self._full.pop(dev, None)
            if not self._warned:
                self._warned = True
                log.warning("btrfs at %s: its own space figures cannot be read (%s); "
                            "using statvfs, which misses metadata running out", path, e)
            return sample
        self._full[dev] = space.metadata_full
        return dataclasses.replace(sample, size=space.size, free=space.free,
                                   available=space.available, resource=space.resource,
                                   source="btrfs")

    def forget(self, keep: set[DevNum]) -> None:
        for dev in [d for d in self._fsid if d not in keep]:
            self._fsid.pop(dev, None)
            self._full.pop(dev, None)
