"""Real btrfs and xfs on loop devices, and real on-disk corruption of them.

btrfs has no error-injection file, so its errors are made the way a failing
disk makes them: both copies of an extent-tree leaf of an unmounted image are
overwritten (the leaf found with `btrfs inspect-internal dump-tree`, its
copies with `btrfs-map-logical`), caches are dropped, and the file system is
mounted and touched. xfs: a directory block is overwritten the same way.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.running import run


@contextmanager
def loop_devices(images: list[Path], size_mb: int) -> Iterator[list[str]]:
    """Sparse image files on loop devices: yields ['/dev/loopN', ...]."""
    devs: list[str] = []
    try:
        for image in images:
            with open(image, "wb") as f:
                f.truncate(size_mb << 20)
            devs.append(run("losetup", "-f", "--show", str(image)).strip())
        yield devs
    finally:
        for dev in devs:
            subprocess.run(["losetup", "-d", dev], check=False)


@contextmanager
def mounted(dev: str, mount_point: Path, options: str = "") -> Iterator[Path]:
    mount_point.mkdir(parents=True, exist_ok=True)
    run("mount", *(["-o", options] if options else []), dev, str(mount_point))
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def mkfs_btrfs(devs: list[str], *args: str) -> None:
    raid = ["-m", "raid1", "-d", "raid1"] if len(devs) > 1 else []
    run("mkfs.btrfs", "-q", "-f", *raid, *args, *devs)
    if len(devs) > 1:
        run("btrfs", "device", "scan", *devs)


@contextmanager
def loop_btrfs(tmp_path: Path, mount_point: Path, devices: int = 1,
               size_mb: int = 256) -> Iterator[tuple[Path, list[str]]]:
    """A btrfs on `devices` loop devices (raid1 for two): yields (mount point, devices)."""
    with loop_devices([tmp_path / f"btrfs{i}.img" for i in range(devices)], size_mb) as devs:
        mkfs_btrfs(devs)
        with mounted(devs[0], mount_point) as m:
            yield m, devs


@contextmanager
def loop_xfs(tmp_path: Path, mount_point: Path) -> Iterator[tuple[Path, str]]:
    with loop_devices([tmp_path / "xfs.img"], 320) as (dev,):  # mkfs.xfs wants 300 MiB
        run("mkfs.xfs", "-q", "-f", dev)
        with mounted(dev, mount_point) as m:
            yield m, dev


def drop_caches() -> None:
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def overwrite(dev: str, offset: int, length: int = 64) -> None:
    """Garbage into a block device at a byte offset, past any cache."""
    fd = os.open(dev, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes((i * 37 + 11) & 0xFF for i in range(length)), offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def extent_leaves(dev: str) -> list[int]:
    """Logical addresses of the extent tree's leaves that hold only extent
    items: corrupting one breaks writes that free or add extents there, not
    the mount (block groups are read at mount, from other leaves)."""
    dump = run("btrfs", "inspect-internal", "dump-tree", "-t", "extent", dev)
    out = []
    for block in re.split(r"\n(?=leaf \d+ items)", dump):
        m = re.match(r"leaf (\d+) items (\d+)", block)
        if m is None or int(m.group(2)) < 10:
            continue
        kinds = set(re.findall(r"key \(\d+ (\w+) \d+\)", block))
        if kinds and kinds <= {"EXTENT_ITEM", "METADATA_ITEM"}:
            out.append(int(m.group(1)))
    return out


def physical_copies(dev: str, logical: int) -> list[tuple[str, int]]:
    """(device, byte offset) of each copy of a tree block."""
    text = run("btrfs-map-logical", "-l", str(logical), "-b", "4096", dev)
    return [(m.group(2), int(m.group(1)))
            for m in re.finditer(r"mirror \d+ logical \d+ physical (\d+) device (\S+)", text)]


@contextmanager
def broken_btrfs(tmp_path: Path, mount_point: Path) -> Iterator[str]:
    """An unmounted btrfs (files `f*` in it) whose extent tree has a leaf broken
    in both copies: once mounted, the next delete that reaches the leaf aborts
    the transaction (forced read-only). Yields its loop device; `mount_point`
    is used while it is made."""
    with loop_devices([tmp_path / "broken.img"], 256) as (dev,):
        mkfs_btrfs([dev], "-n", "4096")  # small leaves: many of them
        with mounted(dev, mount_point) as m:
            for i in range(400):  # not inline (over 2 KiB): each one an extent item
                (m / f"f{i}").write_bytes(os.urandom(8192))
            os.sync()
        leaves = extent_leaves(dev)
        assert leaves, "no extent-tree leaf of extent items alone"
        copies = physical_copies(dev, leaves[len(leaves) // 2])
        assert len(copies) == 2, copies  # DUP metadata on one device
        for where, offset in copies:
            overwrite(where, offset + 200)
        drop_caches()
        yield dev


@contextmanager
def corrupted_btrfs(tmp_path: Path, mount_point: Path) -> Iterator[tuple[Path, str]]:
    """broken_btrfs, mounted: yields (mount point, loop device)."""
    with broken_btrfs(tmp_path, mount_point) as dev, mounted(dev, mount_point) as m:
        yield m, dev


def break_btrfs(mount_point: Path) -> None:
    """Delete every file: freeing their extents reaches the broken leaf."""
    for f in mount_point.glob("f*"):
        try:
            f.unlink()
        except OSError:
            break  # read-only already
    os.sync()


@contextmanager
def corrupted_xfs_dir(tmp_path: Path, mount_point: Path,
                      how: str = "crc") -> Iterator[tuple[Path, str]]:
    """A mounted xfs whose directory `d` has its (single) block broken on
    disk: overwritten ("crc": its checksum no longer matches), or given a
    wrong magic number with a checksum that matches ("magic", by xfs_db,
    past its verifier: a structure error, not a checksum one)."""
    with ExitStack() as stack:
        (dev,) = stack.enter_context(loop_devices([tmp_path / "xfs.img"], 320))
        run("mkfs.xfs", "-q", "-f", dev)
        with mounted(dev, mount_point) as m:
            (m / "d").mkdir()
            for i in range(40):  # past short form: a directory block of its own
                (m / "d" / f"file_with_a_longish_name_{i}").touch()
            ino = os.stat(m / "d").st_ino
        if how == "magic":
            run("xfs_db", "-x", "-c", f"inode {ino}", "-c", "dblock 0",
                "-c", "write -d bhdr.hdr.magic 0x12345678", dev)
            drop_caches()
            yield stack.enter_context(mounted(dev, mount_point)), dev
            return
        bmap = run("xfs_db", "-r", "-c", f"inode {ino}", "-c", "bmap", dev)
        block = re.search(r"startblock (\d+)", bmap).group(1)  # type: ignore[union-attr]
        # A file-system block number encodes the allocation group: xfs_db converts.
        where = run("xfs_db", "-r", "-c", f"convert fsb {block} byte", dev)
        overwrite(dev, int(where.split()[0], 0) + 300)
        drop_caches()
        yield stack.enter_context(mounted(dev, mount_point)), dev


@contextmanager
def raid1_with_a_bad_mirror(tmp_path: Path, mount_point: Path) -> Iterator[tuple[Path, list[str]]]:
    """A two-device raid1 btrfs, file `data` overwritten in its second
    device's copy only (a scrub finds and repairs it). Yields (mount point,
    devices); mounted through the second device."""
    with ExitStack() as stack:
        devs = stack.enter_context(loop_devices([tmp_path / "r0.img", tmp_path / "r1.img"], 256))
        mkfs_btrfs(devs)
        with mounted(devs[0], mount_point) as m:
            (m / "data").write_bytes(os.urandom(65536))
            os.sync()
            first = run("filefrag", "-v", str(m / "data")).splitlines()
        # filefrag's physical offset on btrfs is the logical address, in blocks
        block = next(int(line.split()[3].rstrip(".")) for line in first
                     if line.strip().startswith("0:"))
        copies = physical_copies(devs[0], block * 4096)
        bad = [(d, off) for d, off in copies if d == devs[1]]
        assert len(copies) == 2 and len(bad) == 1, copies
        overwrite(*bad[0])
        drop_caches()
        yield stack.enter_context(mounted(devs[1], mount_point)), devs


def superblock_device(mount_point: Path) -> str:
    """The file system's own device number, as mountinfo shows it ("0:45" for
    btrfs, whose files stat to their subvolume's number instead)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        f = line.split()
        if f[4] == str(mount_point):
            dev = f[2]
    return dev
