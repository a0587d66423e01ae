"""Real parts for end-to-end tests: the fsmond process, tmpfs, loop-mounted ext4 and btrfs.

`FsmondProcess` runs the real `fsmond --print-events` and collects its JSON
lines on a thread, so a test waits for an event with a timeout instead of
sleeping and hoping. Mount helpers expect the private mount namespace that
tests/conftest.py enters for root sessions.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fsmond.sources.mountinfo import parse_mountinfo

if TYPE_CHECKING:
    from fsmond.daemon import Daemon

FSMOND = [sys.executable, "-m", "fsmond"]
T = TypeVar("T")


def first_match(seen: list[T], new: queue.Queue[T], pred: Callable[[T], bool],
                timeout: float) -> T | None:
    """The first item, already seen or arriving within `timeout`, matching `pred`.
    Items are appended to `seen` and put on `new` by a reader thread."""
    for item in list(seen):
        if pred(item):
            return item
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            item = new.get(timeout=left)
        except queue.Empty:
            break
        if pred(item):
            return item
    return None

Event = dict[str, Any]


def wait_until(check: Callable[[], T], what: str, timeout: float = 15.0) -> T:
    """The first truthy result of `check`, asked every 0.1 s for `timeout`
    seconds at most; an AssertionError naming `what` after that."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.1)
    return result


class FsmondProcess:
    def __init__(self, config: Path, *extra: str, bus: str | None = None,
                 launcher: list[str] | None = None) -> None:
        """`launcher` runs fsmond through another command (a sandbox); it gets
        fsmond's arguments after its own."""
        self.events: list[Event] = []
        self.stderr: list[str] = []
        self.torn = ""  # a last stdout line cut short: fsmond died in the middle of it
        self._new: queue.Queue[Event] = queue.Queue()
        self._ready = threading.Event()
        args = ["--config", str(config), "--print-events", "--log-level", "debug",
                *(["--bus", bus] if bus else ["--no-dbus"]), *extra]
        self.proc = subprocess.Popen(
            [*launcher, *args] if launcher else [*FSMOND, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            errors="surrogateescape",
        )
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self._readers:
            t.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.endswith("\n"):
                self.torn = line
                return
            event = json.loads(line)
            self.events.append(event)
            self._new.put(event)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            if " ready: " in line:
                self._ready.set()

    def wait_ready(self, timeout: float = 20.0) -> None:
        if not self._ready.wait(timeout):
            raise AssertionError("fsmond did not become ready:\n" + "".join(self.stderr[-30:]))

    def wait_for(self, pred: Callable[[Event], bool], timeout: float = 15.0) -> Event:
        """The first event (already seen or still to come) matching `pred`."""
        found = first_match(self.events, self._new, pred, timeout)
        if found is not None:
            return found
        raise AssertionError(
            "no matching event; got:\n" + "\n".join(json.dumps(e) for e in self.events[-20:])
            + "\nstderr:\n" + "".join(self.stderr[-20:])
        )

    def named(self, name: str, **details: Any) -> Callable[[Event], bool]:
        return lambda e: e["name"] == name and all(
            e["details"].get(k) == v for k, v in details.items())

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self._readers:
            t.join(10)  # they end at EOF, once the process is gone
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode


def run_daemon(d: Daemon, timeout: float = 30.0) -> None:
    """An in-process daemon, run until its shutdown trigger fires; then the
    test process gets its cyclic GC back (the daemon freezes it at ready)."""
    try:
        asyncio.run(asyncio.wait_for(d.run(), timeout))
    finally:
        gc.unfreeze()


@contextmanager
def fsmond(config: Path, *extra: str, bus: str | None = None,
           launcher: list[str] | None = None) -> Iterator[FsmondProcess]:
    p = FsmondProcess(config, *extra, bus=bus, launcher=launcher)
    try:
        p.wait_ready()
        yield p
    finally:
        rc = p.stop()
    # After the test's own checks: a daemon that did not stop cleanly is a failure too.
    if rc != 0 or p.torn:
        raise AssertionError(f"fsmond did not stop cleanly (exit status {rc}, last stdout "
                             f"line {p.torn[:200]!r}):\n" + "".join(p.stderr[-30:]))


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


@contextmanager
def tmpfs(path: Path, options: str = "size=4m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    run("mount", "-t", "tmpfs", "-o", options, "fsmond-test", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextmanager
def bind_mounts(source: Path, targets: list[Path]) -> Iterator[None]:
    """`source` bind-mounted on each target as fast as the kernel takes them
    (mount(2) itself: a mount command each would take minutes); all undone
    after, lazily."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    try:
        for d in targets:
            d.mkdir(parents=True, exist_ok=True)
            assert libc.mount(str(source).encode(), str(d).encode(), None, 0x1000,  # MS_BIND
                              None) == 0, os.strerror(ctypes.get_errno())
        yield
    finally:
        for d in targets:
            libc.umount2(str(d).encode(), 2)  # MNT_DETACH


@contextmanager
def loop_ext4(image: Path, mount_point: Path, options: str = "errors=continue",
              size_mb: int = 32, mkfs: tuple[str, ...] = ()) -> Iterator[tuple[Path, str]]:
    """A real ext4 on a loop device: yields (mount point, loop name like 'loop3');
    `mkfs` adds mkfs.ext4 options (-m 20: 20% reserved blocks)."""
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    run("mkfs.ext4", "-q", "-F", *mkfs, str(image))
    dev = run("losetup", "-f", "--show", str(image)).strip()
    try:
        mount_point.mkdir(parents=True, exist_ok=True)
        run("mount", "-o", options, dev, str(mount_point))
        try:
            yield mount_point, os.path.basename(dev)
        finally:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def dev_of(path: Path) -> str:
    st = os.stat(path)
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"


def mount_id_of(path: Path) -> int:
    """The mountinfo id of the mount visible at `path` (the last one mounted there)."""
    table = parse_mountinfo(Path("/proc/self/mountinfo").read_bytes())
    return [e.mount_id for e in table if e.mount_point == str(path)][-1]


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def daemon_config(path: Path, watch: str, *, tables: str = "", **daemon: str) -> Path:
    """A test configuration: fast polls, no udev, levels at 50% and 20% (5%
    hysteresis), one [[watch]]. Keyword arguments set [daemon] keys (TOML
    values); `tables` adds whole tables such as [mqtt]."""
    keys = {"poll_interval": '"100ms"', "min_poll_interval": '"50ms"', "udev": "false",
            **daemon}
    lines = "\n".join(f"{k} = {v}" for k, v in keys.items())
    return write_config(path, f"""[daemon]
{lines}
{tables}
[defaults]
lower = "50%"
upper = "20%"
hysteresis = "5%"

[[watch]]
path = "{watch}"
""")

