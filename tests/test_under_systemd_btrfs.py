"""btrfs's own space figures under the installed unit's sandbox (a real systemd
in a container, tests/nspawn.py): ProtectKernelTunables= leaves /sys
readable, and BTRFS_IOC_FS_INFO needs no capability the unit lacks."""

from __future__ import annotations

import glob
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsmond.sources.btrfs import read_figures
from fsmond.sources.btrfs_usage import estimate
from tests.kernel import require_filesystem
from tests.nspawn import Container
from tests.test_under_systemd import CONFIG, ROOT, booted, container, prop, wait_until

pytestmark = [pytest.mark.root, pytest.mark.timeout(120, func_only=True)]
__all__ = ["booted", "container"]  # the fixtures, shared with test_under_systemd


@pytest.fixture
def loop_btrfs_image(tmp_path: Path) -> Iterator[str]:
    require_filesystem("btrfs")
    image = tmp_path / "bt.img"
    with open(image, "wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.btrfs", "-q", "-f", str(image)], check=True, capture_output=True)
    dev = subprocess.run(["losetup", "-f", "--show", str(image)], check=True,
                         capture_output=True, text=True).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def test_btrfs_space_comes_from_btrfs_under_the_unit(container: Container,
                                                      loop_btrfs_image: str) -> None:
    c, dev = container, loop_btrfs_image
    c.write_file(CONFIG, '[daemon]\npoll_interval = "1s"\n')
    c.add_device(dev)
    c.run("mkdir", "-p", "/mnt/bt")
    c.run("mount", dev, "/mnt/bt")
    try:
        c.systemctl("start", "fsmond")
        majmin = c.run("findmnt", "-no", "MAJ:MIN", "/mnt/bt").stdout.strip()
        obj = f"{ROOT}/fs/{majmin.replace(':', '_')}"
        (folder,) = {os.path.dirname(os.path.dirname(p))
                     for p in glob.glob(f"/sys/fs/btrfs/*/devices/{os.path.basename(dev)}")}
        expected = estimate(read_figures(folder))  # an idle, fresh btrfs: it stays put
        avail, bsize = c.run("stat", "-f", "-c", "%a %S", "/mnt/bt").stdout.split()
        assert int(avail) * int(bsize) != expected.available  # so the two can be told apart
        wait_until(lambda: prop(c, obj, "Available") == expected.available, 15,
                   "btrfs's own available space")
        assert prop(c, obj, "Size") == expected.size
        assert "cannot be read" not in c.journal("-u", "fsmond", "-p", "warning")
    finally:
        c.systemctl("stop", "fsmond", check=False)
        c.run("umount", "/mnt/bt", check=False)
