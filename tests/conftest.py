"""Shared test set-up.

Root-only tests carry `@pytest.mark.root`: they skip with a reason when not
root, and fail instead under FSMOND_REQUIRE_ROOT=1 (CI), so they can never
skip silently there.

As root, the whole test session moves into a private mount namespace at
start, so every mount a test makes (tmpfs, loop ext4, storms) is invisible
to the host and vanishes with the session even if a test dies.

`served` is the daemon as a D-Bus client meets it: fsmond on a private bus,
watching a tmpfs.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.publishers.buses import dbus_daemon
from tests.running import daemon_config, fsmond, tmpfs

IS_ROOT = os.geteuid() == 0
REQUIRE_ROOT = os.environ.get("FSMOND_REQUIRE_ROOT") == "1"
CLONE_NEWNS = 0x00020000


def _enter_private_mount_namespace() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "unshare(CLONE_NEWNS): " + os.strerror(err))
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)


def pytest_configure(config: pytest.Config) -> None:
    if IS_ROOT and not os.environ.get("FSMOND_TEST_NO_UNSHARE"):
        _enter_private_mount_namespace()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if IS_ROOT or item.get_closest_marker("root") is None:
        return
    if REQUIRE_ROOT:
        pytest.fail("FSMOND_REQUIRE_ROOT=1 but this root-only test runs without root")
    pytest.skip("needs root (mounts, loop devices, /dev/kmsg)")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """fsmond watching `tmp_path`/w/* on a private bus, and a 10 MiB tmpfs
    at `tmp_path`/w/t: (the bus's address, the tmpfs)."""
    cfg = daemon_config(tmp_path / "f.toml", f"{tmp_path}/w/*")
    with dbus_daemon() as bus, tmpfs(tmp_path / "w" / "t", "size=10m") as t, \
            fsmond(cfg, bus=bus):
        yield bus, t
