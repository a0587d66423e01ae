"""What every benchmark here sets up: a private mount namespace, a tmpfs with
mount-point directories, a private D-Bus, the real fsmond, and CPU accounting."""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MNT_DETACH = 2
TICK = os.sysconf("SC_CLK_TCK")
libc = ctypes.CDLL(None, use_errno=True)


def cpu_seconds(pid: int) -> float:
    """Of the whole process, all its threads."""
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def user_system_seconds(pid: int) -> tuple[float, float]:
    """Of the whole process: CPU seconds in user space and in the kernel."""
    return _stat_times(Path(f"/proc/{pid}/stat"))


def _stat_times(stat: Path) -> tuple[float, float]:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK  # utime, stime


def _stat_cpu(stat: Path) -> float:
    return sum(_stat_times(stat))


def thread_cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds of the main thread and of all other threads (Python does
    not name its threads to the kernel, so the main one is told by its id)."""
    main = other = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            # task/<tid>/stat: /proc/<pid>/stat would count every thread
            seconds = _stat_cpu(task / "stat")
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
        if int(task.name) == pid:
            main += seconds
        else:
            other += seconds
    return main, other


_in_private_namespace = False


def private_namespace() -> None:
    global _in_private_namespace
    if libc.unshare(CLONE_NEWNS) != 0:
        sys.exit("unshare(CLONE_NEWNS) failed: run as root")
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    _in_private_namespace = True


def work_dir(prefix: str) -> Path:
    """A directory in /tmp, removed at exit with whatever is mounted below it
    (the namespace is the benchmark's own, so are those mounts)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(_remove, work)
    return work


def _remove(work: Path) -> None:
    with open("/proc/self/mountinfo") as f:  # mkdtemp's names need no unescaping
        points = {line.split()[4] for line in f}
    # Outermost first: detaching one detaches all below it (an autofs map's
    # mount points are never walked into, so nothing is triggered).
    for point in sorted((p for p in points if p == str(work) or p.startswith(f"{work}/")),
                        key=len):
        libc.umount2(point.encode(), MNT_DETACH)
    shutil.rmtree(work, ignore_errors=True)


def storm_dir(prefix: str, mounts: int) -> Path:
    """A tmpfs holding `src` and the directories m0..m<mounts-1> to bind onto."""
    work = work_dir(prefix)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "bench", str(work)], check=True)
    (work / "src").mkdir()
    for i in range(mounts):
        (work / f"m{i}").mkdir()
    return work


def one(target: Path, mount: bool) -> float:
    """Bind the `src` beside `target` onto it (or unmount it); the call's time."""
    t0 = time.monotonic()
    rc = libc.mount(str(target.parent / "src").encode(), str(target).encode(), None, MS_BIND,
                    None) if mount else libc.umount2(str(target).encode(), MNT_DETACH)
    if rc != 0:
        sys.exit(f"mount/umount {target}: {os.strerror(ctypes.get_errno())}")
    return time.monotonic() - t0


def storm(base: Path, n: int, mount: bool) -> float:
    """Bind src onto m0..m<n-1> (or unmount them) as fast as the kernel goes."""
    t0 = time.monotonic()
    for i in range(n):
        one(base / f"m{i}", mount)
    return time.monotonic() - t0


def ratio(a: float, b: float) -> str:
    """a/b as "12.3x". CPU time comes in 10 ms ticks: a short run may have
    none to divide by."""
    return f"{a / b:.1f}x" if b else "(too short to say how many times)"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# bench/mount_floor.py: fsmond's kernel calls for mount events and nothing else
FLOOR_COMMAND = (sys.executable, str(Path(__file__).parent / "mount_floor.py"))
BROKERS = ("dbus-daemon", "dbus-broker")


# A bus of the session's kind with dbus-daemon's own limits, which are the
# system bus's (system.conf keeps them; session.conf raises them to 1 GB):
# 127 MB queued from or for one connection.
SYSTEM_LIMITS = """<busconfig><type>session</type><listen>unix:tmpdir=/tmp</listen>
<auth>EXTERNAL</auth><policy context="default"><allow user="*"/><allow own="*"/>
<allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/></policy></busconfig>"""


def private_bus(broker: str = "dbus-daemon", system_limits: bool = False
                ) -> tuple[subprocess.Popen[str], str]:
    """A session bus of the benchmark's own: the reference dbus-daemon (the
    system bus of Debian and Ubuntu), or dbus-broker (Fedora's, Arch's).
    `system_limits`: dbus-daemon with the system bus's limits on what it
    queues. Stopping the returned process stops the bus."""
    if broker == "dbus-broker":
        return _dbus_broker()
    config = ["--session"]
    if system_limits:
        conf = Path(tempfile.mkstemp(prefix="fsmond-bus-", suffix=".conf")[1])
        conf.write_text(SYSTEM_LIMITS)
        atexit.register(conf.unlink, True)
        config = [f"--config-file={conf}"]
    bus = subprocess.Popen(["dbus-daemon", *config, "--nofork", "--print-address"],
                           stdout=subprocess.PIPE, text=True)
    assert bus.stdout is not None
    return bus, bus.stdout.readline().strip()


def router_pid(bus: subprocess.Popen[str]) -> int:
    """The process that passes the messages: dbus-broker-launch leaves that
    to the dbus-broker it starts, a child of its own."""
    if Path(str(bus.args[0])).name != "dbus-broker-launch":
        return bus.pid
    children = Path(f"/proc/{bus.pid}/task/{bus.pid}/children")
    while not (kids := children.read_text().split()):
        if bus.poll() is not None:
            sys.exit("dbus-broker-launch ended without starting dbus-broker")
        time.sleep(0.01)
    return int(kids[0])


def _dbus_broker() -> tuple[subprocess.Popen[str], str]:
    """dbus-broker-launch outside systemd: it wants its listening socket
    passed as systemd would (LISTEN_FDS) and journald's socket to log to.
    The stand-in journal is a tmpfs over /run/systemd in this private mount
    namespace, so the host's is untouched; what is logged is thrown away."""
    if shutil.which("dbus-broker-launch") is None:
        sys.exit("--broker dbus-broker needs dbus-broker: apt-get install --no-install-recommends "
                 "dbus-broker (Debian's package makes it the system bus at the next boot; "
                 "`systemctl disable dbus-broker` undoes that)")
    if not _in_private_namespace:
        sys.exit("dbus-broker: call private_namespace() first (its journal stand-in)")
    if not Path("/run/systemd/journal/socket").exists():  # once for all buses of a run
        subprocess.run(["mount", "-t", "tmpfs", "fsmond-bench-journal", "/run/systemd"],
                       check=True)
        Path("/run/systemd/journal").mkdir()
        journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        journal.bind("/run/systemd/journal/socket")
        threading.Thread(target=_drain, args=(journal,), daemon=True).start()
    path = Path(tempfile.mkdtemp(prefix="fsmond-broker-")) / "bus"
    atexit.register(shutil.rmtree, path.parent, True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(128)
    address = f"unix:path={path}"
    fd = listener.fileno()

    def as_systemd_would() -> None:
        # In the child, as LISTEN_PID must name the launcher; without env=,
        # the exec takes this environment.
        os.dup2(fd, 3)
        os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()),
                          DBUS_SESSION_BUS_ADDRESS=address, XDG_RUNTIME_DIR=str(path.parent))
    bus = subprocess.Popen(["dbus-broker-launch", "--scope", "user", "--config-file",
                            "/usr/share/dbus-1/session.conf"], preexec_fn=as_systemd_would,
                           pass_fds=(3,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           text=True)
    listener.close()
    while subprocess.run(["busctl", f"--address={address}", "status"],
                         capture_output=True).returncode != 0:
        if bus.poll() is not None:
            sys.exit("dbus-broker-launch did not start")
        time.sleep(0.05)
    return bus, address


def _drain(journal: socket.socket) -> None:
    while True:
        journal.recv(65536)


def start_fsmond(work: Path, config: str, *args: str,
                 launcher: tuple[str, ...] = ("-m", "fsmond")) -> subprocess.Popen[bytes]:
    """The real daemon, logging to a file (a pipe nobody reads would stall it),
    returned once it says it is ready. `launcher`: how Python is told to run it."""
    cfg = work / "fsmond.toml"
    cfg.write_text(config)
    log = work / "fsmond.log"
    with open(log, "w") as err:
        p = subprocess.Popen([sys.executable, *launcher, "--config", str(cfg), *args],
                             stderr=err)
    while " ready: " not in log.read_text():
        if p.poll() is not None:
            sys.exit("fsmond did not start:\n" + log.read_text())
        time.sleep(0.05)
    return p
