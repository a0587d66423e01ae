"""A real systemd in a container: boot Debian 12 with systemd-nspawn, install
fsmond in it as a user would, and run commands inside.

    with Container(fsmond_tree()) as c:         # a throw-away root, fsmond installed
        c.systemctl("start", "fsmond")
        c.run("mount", "-t", "tmpfs", "x", "/mnt")
        c.busctl("call", "org.fsmond.FsMon1", ...)

The pieces (times measured on a 2-core VM with a near mirror):

- `debian_tree()`, `build_wheels()` (tests/debian_tree.py): the cached Debian
  bookworm root and fsmond's wheels.
- `fsmond_tree()`: the tree plus a cached layer with fsmond installed the
  way a user would (`Container.install_fsmond()` in a booted container: venv
  /opt/fsmond, pip install, `fsmond install-system-files`, daemon-reload),
  rebuilt whenever the wheels' contents change. 6 s to build (3 s of it
  `python3 -m venv`), 30 MB; then nothing.
- `Container`: one boot. Its root is an overlayfs over the cached tree with a
  per-boot upper directory: nothing is copied, so a boot costs the same however
  big the tree is, and the tree stays pristine (`systemd-nspawn --ephemeral`
  needs btrfs to be cheap; on ext4 it copies the whole tree, like `cp -a`: 1 s
  and 250 MB of writes per boot even with a warm page cache). The overlay
  is mounted in a mount namespace of nspawn's own, so it vanishes with nspawn
  even if the test session is killed.
  Boot to `systemctl is-system-running` = running: 0.2 s; power-off 0.2 s.
- `probe()`: why this machine cannot boot a container, or None.

Everything inside runs through `nsenter -t <container init> -a`: this
machine's PID 1 is not systemd, so there is no machined, no `machinectl
shell`, no `systemd-run -M`.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

from tests.debian_tree import (
    ENV_INSIDE,
    Unavailable,
    build_wheels,
    cache_dir,
    debian_tree,
    locked,
    remove_tree,
    tail,
    wheels_digest,
    which,
)

TOOLS = ["systemd-nspawn", "debootstrap", "nsenter", "unshare", "setpriv", "mount"]
# scripts/setup installs these when missing.
SETUP_PACKAGES = {"systemd-nspawn": "systemd-container", "debootstrap": "debootstrap",
                  "nsenter": "util-linux", "unshare": "util-linux", "setpriv": "util-linux"}
# What this machine needs (found by trying): its PID 1 is not systemd, so no
# registration with machined and no scope of our own (--register=no
# --keep-unit); a unified cgroup hierarchy in the container, or DeviceAllow=
# and IPAccounting= are not enforced; nspawn's own seccomp filter off, since it
# blocks fanotify_init and listmount (the unit's SystemCallFilter= still
# applies inside); the host's /dev/kmsg, read-only.
NSPAWN_ENV = {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1", "SYSTEMD_SECCOMP": "0"}
NSPAWN_ARGS = ["--quiet", "--boot", "--register=no", "--keep-unit", "--capability=all",
               "--bind-ro=/dev/kmsg", "--console=read-only", "--link-journal=no"]


def missing_tools() -> list[str]:
    return [t for t in TOOLS if which(t) is None]


# --- fsmond installed: a cached layer over the tree ------------------------------------

# What a boot leaves in its upper directory besides the installation.
BOOT_LEFTOVERS = ["etc/machine-id", "etc/resolv.conf", "etc/.pwd.lock", "tmp", "var/tmp",
                  "var/log", "var/lib/systemd", "root/.cache"]
LAYER_MAX_AGE = 24 * 3600  # unused layers older than this are removed


def fsmond_tree(wheels: Path | None = None) -> list[Path]:
    """Overlay lower directories, top first, for a Container with fsmond
    installed: a layer holding what `Container.install_fsmond()` wrote in a
    booted container (venv, unit, bus policy, config), over `debian_tree()`.

    Installing takes about 3 s (mostly `python3 -m venv`), booting 0.2 s:
    the layer is built once per set of wheels (keyed by their contents and
    the tree's build) and kept, so a boot with fsmond costs what any boot does."""
    base = debian_tree()
    wheels = wheels or build_wheels()
    key = hashlib.sha256(f"{wheels_digest(wheels)}\0".encode()
                         + (base / "etc/fsmond-test-tree").read_bytes()).hexdigest()[:16]
    layers = cache_dir() / "layers"
    layer = layers / key
    if not (layer / "done").is_file():
        with locked(cache_dir() / "layers.lock"):
            if not (layer / "done").is_file():
                layers.mkdir(exist_ok=True)
                for stale in [*layers.glob("*.partial-*"), layer]:
                    remove_tree(stale)
                _build_layer(base, wheels, layer)
    (layer / "lock").touch()
    _prune_layers(keep=layer)
    return [layer / "tree", base]


def _build_layer(base: Path, wheels: Path, layer: Path) -> None:
    partial = Path(tempfile.mkdtemp(prefix=f"{layer.name}.partial-", dir=layer.parent))
    try:
        c = Container(base)
        c.start()
        try:
            c.install_fsmond(wheels)
        except BaseException:
            c.stop()
            raise
        c.stop(keep_upper=partial / "tree")
        for rel in BOOT_LEFTOVERS:
            remove_tree(partial / "tree" / rel)
        (partial / "lock").touch()
        (partial / "done").write_text(f"wheels {wheels_digest(wheels)}\n")
        partial.rename(layer)
    except BaseException:
        remove_tree(partial)
        raise


def _prune_layers(keep: Path) -> None:
    """Layers of older wheels that no container uses (they hold their lock
    shared) and nobody asked for in a day."""
    for layer in keep.parent.glob("*"):
        if layer == keep or not layer.is_dir():
            continue
        if ".partial-" in layer.name:  # a build that died (builds hold layers.lock)
            continue
        try:
            with open(layer / "lock", "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if time.time() - os.fstat(f.fileno()).st_mtime > LAYER_MAX_AGE:
                    remove_tree(layer)
        except OSError:
            continue


# --- containers -------------------------------------------------------------------------

_serial = itertools.count()


def _cgroup_parents(name: str) -> list[Path]:
    """A cgroup of the container's own, in each hierarchy nspawn uses, below
    ours: with --keep-unit nspawn puts its payload and supervisor cgroups below
    its own cgroup, so two containers started from one cgroup would share them."""
    mounts: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _, options = right.split()[:3]
        point = Path(left.split()[4])
        if fstype == "cgroup2":
            mounts.setdefault("", point)
        elif fstype == "cgroup" and "name=systemd" in options.split(","):
            mounts.setdefault("name=systemd", point)
    parents = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers in mounts:
            parents.append(mounts[controllers] / path.lstrip("/") / name)
    return parents


def _remove_cgroup(path: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while path.exists():
        dirs = sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*dirs, path]:
            with contextlib.suppress(OSError):
                d.rmdir()
        if not path.exists() or time.monotonic() > deadline:
            return
        time.sleep(0.1)


class Container:
    """One boot of a Debian tree under a real systemd (PID 1 in the container).

    `tree`: the root's overlay lower directories, top first (`fsmond_tree()`),
    or one directory; default `debian_tree()`.
    `devices`: host device nodes (e.g. "/dev/loop3") bound into the container
    at boot (`--bind=`); `add_device()` adds one to a running container.
    `nspawn_args`: more systemd-nspawn arguments (e.g. "--bind-ro=/srv:/srv").
    Everything written inside goes to a per-boot overlay upper directory,
    removed by `stop()`."""

    def __init__(self, tree: Path | Sequence[Path] | None = None, *,
                 devices: Sequence[str | Path] = (),
                 nspawn_args: Sequence[str] = (), name: str | None = None,
                 boot_timeout: float = 120.0) -> None:
        self.tree = tree
        self.devices = [str(d) for d in devices]
        self.nspawn_args = list(nspawn_args)
        self.machine = name or f"fsmond-test-{os.getpid()}-{next(_serial)}"
        self.boot_timeout = boot_timeout
        self.dir = cache_dir() / "boots" / self.machine
        self.console_log = self.dir / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.boot_state = ""  # "running" or "degraded" once booted
        self.boot_seconds = 0.0
        self._pid: int | None = None
        self._locks: list[IO[str]] = []
        self._cgroups: list[Path] = []

    # -- life cycle --

    def __enter__(self) -> Container:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Container:
        """Boot and wait until systemd says running or degraded."""
        lowers = ([self.tree] if isinstance(self.tree, Path) else list(self.tree)
                  if self.tree else [debian_tree()])
        _remove_stale_boots()
        started = time.monotonic()
        try:
            self._spawn(lowers)
            self._wait_booted(started + self.boot_timeout)
        except BaseException:
            self.stop()
            raise
        self.boot_seconds = time.monotonic() - started
        return self

    def _spawn(self, lowers: list[Path]) -> None:
        self.dir.mkdir(parents=True)
        # Held by nspawn too (it keeps inherited descriptors): while this boot's
        # lock is held, no other session takes its folder for stale, and while a
        # layer's is held shared, no session prunes the layer.
        self._hold(self.dir / "lock", fcntl.LOCK_EX)
        for lower in lowers:
            if (lower.parent / "lock").is_file() and lower.name == "tree":
                self._hold(lower.parent / "lock", fcntl.LOCK_SH)
        for sub in ("upper", "upper/etc", "work", "root"):
            (self.dir / sub).mkdir()
            # The upper root and etc/ are what / and /etc look like inside,
            # whatever the umask.
            (self.dir / sub).chmod(0o755)
        # A machine id of its own: journald's folder, D-Bus, no "first boot".
        (self.dir / "upper/etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        self._cgroups = _cgroup_parents(self.machine)
        for cg in self._cgroups:
            cg.mkdir()
        root = self.dir / "root"
        overlay = (f"lowerdir={':'.join(map(str, lowers))},upperdir={self.dir / 'upper'},"
                   f"workdir={self.dir / 'work'}")
        # In nspawn's own process, before exec: into the cgroups, then the
        # overlay in the private mount namespace unshare made.
        script = ('set -e; for cg in "$@"; do echo $$ > "$cg/cgroup.procs"; done; '
                  f"mount -t overlay fsmond-test -o {_quote(overlay)} {_quote(str(root))}; "
                  'exec "$NSPAWN" '
                  + " ".join(_quote(a) for a in self._nspawn_argv(root)))
        argv = ["setpriv", "--pdeathsig", "TERM",  # the session dies: power off
                "unshare", "--mount", "--propagation", "private",
                "sh", "-c", script, "sh", *map(str, self._cgroups)]
        env = {**os.environ, **NSPAWN_ENV, "NSPAWN": which("systemd-nspawn") or "false"}
        with open(self.console_log, "wb") as console:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console,
                                         stderr=subprocess.STDOUT, env=env,
                                         pass_fds=[f.fileno() for f in self._locks])

    def _hold(self, path: Path, how: int) -> None:
        f = open(path, "a")  # noqa: SIM115 (held until stop())
        self._locks.append(f)
        fcntl.flock(f, how)

    def _nspawn_argv(self, root: Path) -> list[str]:
        return [*NSPAWN_ARGS, f"--directory={root}", f"--machine={self.machine}",
                *(f"--bind={d}" for d in self.devices), *self.nspawn_args]

    def nspawn_command(self) -> str:
        """The nspawn command line and environment, for reports and by hand."""
        env = " ".join(f"{k}={v}" for k, v in NSPAWN_ENV.items())
        return f"{env} systemd-nspawn " + " ".join(
            _quote(a) for a in self._nspawn_argv(self.dir / "root"))

    def _find_init(self) -> int | None:
        """nspawn's child that is PID 1 in its own PID namespace."""
        assert self.proc is not None
        children: list[str] = []
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                children += (task / "children").read_text().split()
        for child in children:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{child}/status").read_text().splitlines():
                    if line.startswith("NSpid:") and line.split()[1:] == [child, "1"]:
                        return int(child)
        return None

    def _wait_booted(self, deadline: float) -> None:
        assert self.proc is not None
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"systemd-nspawn exited with status {self.proc.returncode} "
                                  f"while booting:\n{self.console_tail()}")
            if self._pid is None:
                self._pid = self._find_init()
            if self._pid is not None:
                left = max(1.0, deadline - time.monotonic())
                with contextlib.suppress(subprocess.TimeoutExpired):
                    r = self.run("systemctl", "is-system-running", "--wait", check=False,
                                 timeout=left)
                    last = (r.stdout + r.stderr).strip()
                    if r.stdout.strip() in ("running", "degraded"):
                        self.boot_state = r.stdout.strip()
                        return
            time.sleep(0.1)
        raise Unavailable(f"the container did not finish booting in {self.boot_timeout:.0f} s "
                          f"(systemctl is-system-running: {last!r}):\n{self.console_tail()}")

    def stop(self, timeout: float = 60.0, *, keep_upper: Path | None = None) -> None:
        """Power off cleanly (kill on timeout) and remove the throw-away root.
        Idempotent. `keep_upper`: move what the boot wrote (the overlay's upper
        directory) there first."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None and self._pid is not None:
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    self._nsenter(["systemctl", "poweroff"], timeout=15)
            if proc.poll() is None and self._pid is None:
                proc.send_signal(signal.SIGTERM)  # nspawn: an orderly shutdown
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                if self._pid is not None:  # the whole PID namespace goes with it
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self._pid, signal.SIGKILL)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._pid = None
        for cg in self._cgroups:
            _remove_cgroup(cg)
        self._cgroups = []
        if keep_upper is not None and (self.dir / "upper").is_dir():
            (self.dir / "upper").rename(keep_upper)
        for f in self._locks:
            f.close()
        self._locks = []
        remove_tree(self.dir)

    # -- inside --

    @property
    def pid(self) -> int:
        """The container's PID 1, as the host sees it."""
        if self._pid is None:
            raise RuntimeError("the container is not running")
        return self._pid

    def _nsenter(self, argv: Sequence[str], *, input: bytes | None = None,
                 env: Mapping[str, str] | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["nsenter", "-t", str(self.pid), "-a", "--", *argv],
                              input=input, capture_output=True, timeout=timeout, check=False,
                              env={**ENV_INSIDE, **(env or {})})

    def run(self, *argv: str, check: bool = True, timeout: float = 60,
            input: str | None = None,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """`argv` inside the container (all its namespaces and its root, a clean
        environment plus `env`), output captured as text. With `check`, a
        non-zero exit raises AssertionError with the output."""
        r = self._nsenter(argv, input=None if input is None else input.encode(), env=env,
                          timeout=timeout)
        out = subprocess.CompletedProcess(
            r.args, r.returncode, r.stdout.decode(errors="replace"),
            r.stderr.decode(errors="replace"))
        if check and out.returncode != 0:
            raise AssertionError(f"in {self.machine}: {' '.join(argv)} exited with "
                                 f"{out.returncode}\nstdout: {out.stdout[-2000:]}\n"
                                 f"stderr: {out.stderr[-2000:]}")
        return out

    def sh(self, script: str, *, check: bool = True,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-euc", script, check=check, timeout=timeout)

    def systemctl(self, *args: str, check: bool = True,
                  timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check, timeout=timeout)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """`systemctl show` properties of `unit`, e.g. show("fsmond", "MainPID")."""
        out = self.systemctl("show", unit, *(f"--property={p}" for p in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *args: str) -> str:
        """`journalctl --no-pager ARGS`, e.g. journal("-u", "fsmond", "-p", "warning")."""
        return self.run("journalctl", "--no-pager", "--quiet", *args).stdout

    def busctl(self, *args: str, check: bool = True) -> Any:
        """`busctl --system --json=short ARGS` inside, its JSON decoded (None if
        it printed nothing)."""
        out = self.run("busctl", "--system", "--json=short", *args, check=check).stdout
        return json.loads(out) if out.strip() else None

    def write_file(self, path: str, data: str | bytes, mode: int = 0o644) -> None:
        """Write a file inside (parents created), as the container sees paths."""
        blob = data.encode() if isinstance(data, str) else data
        r = self._nsenter(["sh", "-euc", 'mkdir -p "$(dirname "$1")"; cat > "$1"; '
                           'chmod "$2" "$1"', "sh", path, f"{mode:o}"], input=blob)
        if r.returncode != 0:
            raise AssertionError(f"writing {path} in {self.machine}: {r.stderr.decode()}")

    def add_device(self, host_path: str | Path) -> str:
        """Make the host's device node (e.g. a loop device attached after boot)
        exist at the same path inside; returns that path. A node left there by
        an earlier test (the loop device was freed and taken again) is replaced."""
        st = os.stat(host_path)
        kind = "b" if (st.st_mode & 0o170000) == 0o060000 else "c"
        self.run("rm", "-f", str(host_path))
        self.run("mknod", "-m", "660", str(host_path), kind, str(os.major(st.st_rdev)),
                 str(os.minor(st.st_rdev)))
        return str(host_path)

    def console_tail(self, lines: int = 40) -> str:
        return tail(self.console_log, lines)

    def install_fsmond(self, wheels: Path | None = None, venv: str = "/opt/fsmond") -> None:
        """Install fsmond as a user would: a venv, pip install of the wheels
        (no index), `fsmond install-system-files`, `systemctl daemon-reload`."""
        wheels = wheels or build_wheels()
        for whl in sorted(wheels.glob("*.whl")):
            self.write_file(f"/run/fsmond-wheels/{whl.name}", whl.read_bytes())
        self.run("python3", "-m", "venv", venv, timeout=180)
        self.run(f"{venv}/bin/pip", "install", "--quiet", "--no-index", "--find-links",
                 "/run/fsmond-wheels", "fsmond", timeout=180)
        self.run(f"{venv}/bin/fsmond", "install-system-files", "--prefix", "/usr",
                 "--bindir", f"{venv}/bin")
        self.systemctl("daemon-reload")
        self.run("rm", "-rf", "/run/fsmond-wheels")


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def _remove_stale_boots() -> None:
    """Boot folders whose lock nobody holds: sessions that died without stop()."""
    boots = cache_dir() / "boots"
    for d in boots.glob("*") if boots.is_dir() else []:
        try:
            with open(d / "lock") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                remove_tree(d)
                for cg in _cgroup_parents(d.name):
                    _remove_cgroup(cg, timeout=0)
        except BlockingIOError:
            continue  # in use
        except FileNotFoundError:
            # no lock yet: being made this instant, or a very short-lived failure
            with contextlib.suppress(OSError):
                if time.time() - d.stat().st_mtime > 600:
                    remove_tree(d)


# --- can this machine do it? ------------------------------------------------------------

@functools.cache
def probe() -> str | None:
    """Why this machine cannot boot a container, or None. Builds the tree when
    missing and boots it once (a few seconds); the answer is cached."""
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn, overlay mounts)"
    if missing := missing_tools():
        pkgs = sorted({SETUP_PACKAGES.get(t, t) for t in missing})
        return f"missing {', '.join(missing)}: run scripts/setup as root (apt: {' '.join(pkgs)})"
    try:
        with Container(boot_timeout=60):
            pass
    except Unavailable as e:
        return f"cannot boot a container: {e}"
    return None


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the calling test or fixture, or fail it under FSMOND_REQUIRE_ROOT=1
    (CI): there scripts/setup has installed the tools and built the tree, so
    a container that cannot boot is a failure, never a silent skip. (Not being
    root is conftest.py's business: it skips `root`-marked tests first.)"""
    import pytest

    if os.geteuid() == 0 and os.environ.get("FSMOND_REQUIRE_ROOT") == "1":
        pytest.fail(f"FSMOND_REQUIRE_ROOT=1: {reason}", pytrace=False)
    pytest.skip(reason)


def require() -> None:
    """`skip_or_fail()` unless a container boots here (`probe()`)."""
    if (reason := probe()) is not None:
        skip_or_fail(reason)


def main(argv: Sequence[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tests.nspawn", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build the cached Debian tree if missing (scripts/setup)")
    sub.add_parser("probe", help="say whether this machine can boot a container")
    sub.add_parser("shell", help="boot with fsmond installed, open a shell inside; "
                   "power off after")
    args = ap.parse_args(argv)
    if args.cmd == "build":
        if missing := missing_tools():
            print(f"nspawn: missing {', '.join(missing)}", file=sys.stderr)
            return 1
        try:
            print(debian_tree(log=sys.stderr))
        except Unavailable as e:
            print(f"nspawn: {e}", file=sys.stderr)
            return 1
        return 0
    if args.cmd == "probe":
        reason = probe()
        print(reason or "ok")
        return 0 if reason is None else 1
    with Container(fsmond_tree()) as c:
        print(f"booted {c.machine} in {c.boot_seconds:.1f} s ({c.boot_state}), fsmond "
              "installed", file=sys.stderr)
        return subprocess.run(["nsenter", "-t", str(c.pid), "-a", "--", "bash", "-l"],
                              env=ENV_INSIDE | {"TERM": os.environ.get("TERM", "dumb")},
                              check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
