"""The Debian tree and the wheels that tests/nspawn.py boots and installs.

- `debian_tree()`: a minimal Debian bookworm root (debootstrap from this
  machine's apt mirror), built once per machine in the cache directory
  (FSMOND_NSPAWN_CACHE, default /var/cache/fsmond-tests) and never changed
  after. `scripts/setup` builds it as root (`python3 -m tests.nspawn build`);
  otherwise the first caller does. About 50 s, 250 MB.
- `build_wheels()`: fsmond's wheel and its dependencies', built on the host
  once per process (per test session) with the Python running the tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
PACKAGES = ["systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "util-linux",
            "e2fsprogs"]
DEFAULT_MIRROR = "http://deb.debian.org/debian"
ENV_INSIDE = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
              "LANG": "C.UTF-8", "TERM": "dumb", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0",
              "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1"}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Unavailable(Exception):
    """This machine cannot build the tree or boot a container."""


def cache_dir() -> Path:
    return Path(os.environ.get("FSMOND_NSPAWN_CACHE", "/var/cache/fsmond-tests"))


def which(tool: str) -> str | None:
    """Also in the sbin directories, which a non-root PATH may lack."""
    return shutil.which(tool) or shutil.which(tool, path="/usr/local/sbin:/usr/sbin:/sbin")



def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(ANSI.sub("", text).splitlines()[-lines:])



# --- the Debian tree --------------------------------------------------------------------

def mirror() -> str:
    """The Debian mirror this machine's apt uses for bookworm (deb822 .sources
    files, then sources.list), or deb.debian.org."""
    sources = Path("/etc/apt/sources.list.d")
    for f in sorted(sources.glob("*.sources")) if sources.is_dir() else []:
        for stanza in re.split(r"\n\s*\n", f.read_text(errors="replace")):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if ("deb" in fields.get("types", "").split()
                    and SUITE in fields.get("suites", "").split() and fields.get("uris")):
                return fields["uris"].split()[0]
    lists = [Path("/etc/apt/sources.list"), *sorted(sources.glob("*.list"))]
    for f in lists:
        if not f.is_file():
            continue
        for line in f.read_text(errors="replace").splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                return words[1]
    return DEFAULT_MIRROR


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _mounts_below(path: Path) -> list[str]:
    """Mount points at or below `path` in our mount namespace, deepest first."""
    prefix = str(path)
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """rm -rf that first unmounts whatever an interrupted debootstrap or boot left
    mounted below (its /proc, /sys) and never crosses into another file system."""
    for point in _mounts_below(path):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    if path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def _chroot(tree: Path, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chroot", str(tree), *argv], env=ENV_INSIDE, capture_output=True,
                          text=True, errors="replace", timeout=timeout, check=False)


def debian_tree(*, log: IO[str] | None = None) -> Path:
    """The cached bookworm root tree, built when missing (about a minute with a
    near mirror). Raises Unavailable when it cannot be built."""
    cache = cache_dir()
    tree = cache / SUITE
    if (tree / "etc/fsmond-test-tree").is_file():
        return tree
    if os.geteuid() != 0:
        raise Unavailable("building the Debian tree needs root")
    if which("debootstrap") is None:
        raise Unavailable("debootstrap is missing (scripts/setup installs it as root)")
    with locked(cache / f"{SUITE}.lock"):
        if (tree / "etc/fsmond-test-tree").is_file():
            return tree  # another process built it while we waited
        # Whatever is here now was left by a build that did not finish: the
        # builder holds the lock until its rename.
        for stale in [*cache.glob(f"{SUITE}.partial-*"), tree]:
            remove_tree(stale)
        partial = Path(tempfile.mkdtemp(prefix=f"{SUITE}.partial-", dir=cache))
        partial.chmod(0o755)  # it becomes the container's /
        try:
            _debootstrap(partial, log)
            partial.rename(tree)
        except BaseException:
            remove_tree(partial)
            raise
    return tree


def _debootstrap(target: Path, log: IO[str] | None) -> None:
    url = mirror()
    build_log = target.parent / f"{SUITE}.build.log"
    started = time.monotonic()
    if log:
        print(f"nspawn: debootstrap {SUITE} from {url} into {target}", file=log, flush=True)
    with open(build_log, "w") as out:
        try:
            r = subprocess.run(
                [which("debootstrap") or "debootstrap", "--variant=minbase",
                 "--include=" + ",".join(PACKAGES), SUITE, str(target), url],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=1800,
                check=False)
        except subprocess.TimeoutExpired as e:
            raise Unavailable(f"debootstrap took over {e.timeout:.0f} s") from None
    if r.returncode != 0:
        raise Unavailable(f"debootstrap {SUITE} {url} failed (exit {r.returncode}); "
                          f"{build_log}:\n{tail(build_log, 15)}")
    # No downloaded packages in the tree; a hostname of its own from nspawn
    # (--machine=) instead of the host's that debootstrap copied. The
    # machine id is per boot: Container writes a fresh one.
    _chroot(target, "apt-get", "clean")
    (target / "etc/hostname").unlink(missing_ok=True)
    checks = [("python3", "-m", "venv", "/tmp/venv-check"), ("busctl", "--version"),
              ("systemctl", "--version"), ("losetup", "--version"), ("mkfs.ext4", "-V")]
    for argv in checks:
        c = _chroot(target, *argv)
        if c.returncode != 0:
            raise Unavailable(f"the new tree fails {' '.join(argv)!r}: {c.stderr.strip()}")
    shutil.rmtree(target / "tmp/venv-check")
    (target / "etc/fsmond-test-tree").write_text(
        f"Debian {SUITE} for tests/nspawn.py\nmirror {url}\npackages {' '.join(PACKAGES)}\n"
        f"built {time.strftime('%Y-%m-%d %H:%M:%S')} in {time.monotonic() - started:.0f} s\n")
    if log:
        print(f"nspawn: tree built in {time.monotonic() - started:.0f} s", file=log, flush=True)


# --- wheels -----------------------------------------------------------------------------

_SOURCE_IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                        "__pycache__", ".*_cache", ".hypothesis")


@functools.cache
def build_wheels() -> Path:
    """A folder with fsmond's wheel and its dependencies' wheels, built once per
    process with the Python that runs the tests (3.11, like the tree's).
    Built from a copy of the working tree, so the build leaves nothing in it."""
    if sys.version_info[:2] != (3, 11):
        raise Unavailable(f"wheels built with Python {sys.version_info[0]}."
                          f"{sys.version_info[1]} may not install on {SUITE}'s Python 3.11")
    work = Path(tempfile.mkdtemp(prefix="fsmond-wheels-"))
    _cleanup_at_exit(work)
    shutil.copytree(REPO, work / "src", ignore=_SOURCE_IGNORE)
    wheels = work / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir",
                        str(wheels), str(work / "src")], capture_output=True, text=True,
                       errors="replace", timeout=600, check=False,
                       env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    if r.returncode != 0 or not list(wheels.glob("fsmond-*.whl")):
        raise Unavailable(f"pip wheel failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    shutil.rmtree(work / "src")
    return wheels


def _cleanup_at_exit(path: Path) -> None:
    import atexit

    atexit.register(shutil.rmtree, path, ignore_errors=True)


def wheels_digest(wheels: Path) -> str:
    """A digest of the wheels' contents (not their zip timestamps)."""
    import zipfile

    h = hashlib.sha256()
    for whl in sorted(wheels.glob("*.whl")):
        h.update(whl.name.encode())
        with zipfile.ZipFile(whl) as z:
            for info in sorted(z.infolist(), key=lambda i: i.filename):
                h.update(f"{info.filename}\0{info.CRC}\0{info.file_size}\0".encode())
    return h.hexdigest()[:16]
