"""ENOSPC traces: system calls that fail with ENOSPC or EDQUOT, with the writer.

How it works: fsmond makes a tracefs instance of its own
(`instances/fsmond-<pid namespace>-<pid>`: a ring buffer and event switches
apart from the global ones and other tracers), gives each `sys_exit_*`
event of the calls that can fail so (the write family, fallocate, open and
creat, mkdir, link, symlink, rename, mknod, fsync, fdatasync, close,
copy_file_range, sendfile) the filter `ret == -28 || ret == -122`, so the
kernel keeps only failures, and reads the instance's `trace_pipe`
non-blocking from the loop. An instance of a fsmond that died (same pid
namespace, pid gone) is removed at start; ours at stop.

Cost: an enabled syscall event, even filtered, sends every system call of
every process through the kernel's slow path (BENCHMARKS.md, trace_cost).
So in the default mode "at-risk" the events are enabled (armed) only while
the engine says a watched file system is at risk (a level reached, out of
space or inodes) and disabled when none is; "always" keeps them on (EDQUOT
does not show in statvfs, so only "always" sees every quota failure).

Which file system: a `sys_exit_*` record has the return value, the pid and
the comm, not the fd. As soon as a failure is read, the writer's
/proc/PID/fdinfo (each open file's flags and mount id) and its cwd and root
are read, while it lives; the engine then picks the file system
(engine/enospc.py). Measured (BENCHMARKS.md section 6): a writer that
lives on after its failure (a daemon, a logger, anything that retries) is
found from its own files every time; one that exits at once (`dd`) only
in a minority of runs, as fsmond is woken after it, and then goes by the
file systems at risk, which is right while one file system is at risk.
Writers of other users need CAP_SYS_PTRACE for their /proc files, which
the unit does not grant: those go by risk too. io_uring and mmap writes
make no system call that fails, so they are not seen.

The trace numbers processes as the initial pid namespace does: a fsmond in
a container (a pid namespace of its own) reports those numbers and does not
look them up in its /proc, where the same numbers are other processes.

Without tracefs (not mounted, no syscall events) or without the permission,
`run` raises before it starts: the daemon logs it once and keeps the other
sources.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Callable, Iterable

from fsmond.errors import KernelFeatureError, KernelFormatError
from fsmond.events import Observation, WriteFailure
from fsmond.sources.enospc_records import (
    TraceFailure,
    parse_fdinfo,
    parse_saved_cmdlines,
    parse_trace,
)

log = logging.getLogger(__name__)

# The unit binds tracefs to the first (ProtectKernelTunables= leaves the usual
# places read-only, and systemd lets no ReadWritePaths= undo it there).
TRACEFS_PATHS = ("/run/fsmond/tracefs", "/sys/kernel/tracing", "/sys/kernel/debug/tracing")
FILTER = "ret == -28 || ret == -122"  # ENOSPC, EDQUOT
SYSCALLS = (
    "write", "pwrite64", "writev", "pwritev", "pwritev2", "fallocate",
    "open", "openat", "openat2", "creat", "mkdir", "mkdirat", "link", "linkat",
    "symlink", "symlinkat", "rename", "renameat", "renameat2", "mknod", "mknodat",
    "fsync", "fdatasync", "close", "copy_file_range", "sendfile64", "sendfile",
)
BUFFER_KB = 64  # per CPU: only failures are kept, and a storm is folded anyway
READ_SIZE = 65536
MAX_READS = 16  # per wake-up, so a storm never starves the loop
MAX_FDS = 1024  # open files looked at per writer: /proc reads are on the loop
LOOK_AGAIN = 1.0  # seconds a writer's files are taken as read (a storm, one writer)
LOST_LOG_EVERY = 60.0  # seconds between warnings about dropped records
PREFIX = "fsmond-"
INIT_PIDNS = 0xEFFFFFFC  # the initial pid namespace's inode number, fixed (PROC_PID_INIT_INO)


def find_tracefs(paths: Iterable[str] | None = None) -> str:
    """The first tracefs where we may make an instance; else the first there
    is, so that the error says why not (EROFS, EACCES)."""
    found = [p for p in paths or TRACEFS_PATHS if os.path.isdir(f"{p}/instances")]
    for path in found:
        if os.access(f"{path}/instances", os.W_OK):
            return path
    if found:
        return found[0]
    raise KernelFeatureError(errno.ENOENT, "tracefs is not mounted at "
                             + " or ".join(paths or TRACEFS_PATHS))


def _pidns() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str, size: int = 4096) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def remove_stale(instances: str, pidns: int, own: int) -> list[str]:
    """Instances of fsmonds of this pid namespace that are gone; returns those removed."""
    removed: list[str] = []
    try:
        names = os.listdir(instances)
    except OSError:
        return removed
    for name in names:
        ns, _, pid = name.removeprefix(PREFIX).partition("-")
        if not name.startswith(PREFIX) or ns != str(pidns) or not pid.isdigit():
            continue
        if int(pid) == own or os.path.exists(f"/proc/{pid}"):
            continue
        try:
            os.rmdir(f"{instances}/{name}")
            removed.append(name)
        except OSError as e:
            log.debug("stale trace instance %s stays: %s", name, e)
    return removed


def mount_of_path(path: str) -> int | None:
    """The mount id of what `path` leads to (a /proc/PID/cwd link): opened
    O_PATH, our own fdinfo of it says."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return parse_fdinfo(_read(f"/proc/self/fdinfo/{fd}")).mnt_id
    except (OSError, KernelFormatError):
        return None
    finally:
        os.close(fd)


Files = tuple[list[int], list[int]]  # mount ids: open for writing, the rest


def writer_files(pid: int, proc: str = "/proc") -> Files | None:
    """Mount ids of the files a process has open for writing, and of the rest
    (other files, cwd, root); None when it is gone or not ours to read."""
    base = f"{proc}/{pid}"
    try:
        fds = os.listdir(f"{base}/fdinfo")
    except OSError:
        return None
    writable: list[int] = []
    other: list[int] = []
    for fd in fds[:MAX_FDS]:
        try:
            info = parse_fdinfo(_read(f"{base}/fdinfo/{fd}"))
        except (OSError, KernelFormatError):
            continue  # closed meanwhile
        (writable if info.writable else other).append(info.mnt_id)
    for link in ("cwd", "root"):
        if (mnt := mount_of_path(f"{base}/{link}")) is not None:
            other.append(mnt)
    return list(dict.fromkeys(writable)), list(dict.fromkeys(other))


def fs_uid(pid: int, proc: str = "/proc") -> int:
    """The file-system uid of a process (what quota charges), -1 unknown."""
    try:
        for line in _read(f"{proc}/{pid}/status", 8192).split(b"\n"):
            if line.startswith(b"Uid:"):
                return int(line.split()[4])
    except (OSError, ValueError, IndexError):
        pass
    return -1


def comm_of(pid: int, proc: str = "/proc") -> str:
    try:
        return _read(f"{proc}/{pid}/comm").decode("utf-8", "replace").rstrip("\n")
    except OSError:
        return ""


def make_instance(root: str) -> str:
    """Our tracefs instance (stale ones of dead fsmonds removed first)."""
    instances = f"{root}/instances"
    remove_stale(instances, _pidns(), os.getpid())
    path = f"{instances}/{PREFIX}{_pidns()}-{os.getpid()}"
    try:
        os.mkdir(path)
    except FileExistsError:
        pass  # ours, left by a run of this process that was cut short
    except OSError as e:
        raise KernelFeatureError(e.errno, f"cannot make a tracefs instance {path}: "
                                 f"{e.strerror}") from e
    return path


def configure(path: str) -> list[str]:
    """Filter the events of an instance; returns their enable switches."""
    try:
        # Poll wakes a reader only once the buffer is this % full (50 by
        # default): a lone failure must wake us.
        _write(f"{path}/buffer_percent", "0")
        _write(f"{path}/buffer_size_kb", str(BUFFER_KB))
        _write(f"{path}/options/record-tgid", "1")  # the process, not the thread
        events = []
        for call in SYSCALLS:
            event = f"{path}/events/syscalls/sys_exit_{call}"
            if os.path.isdir(event):
                _write(f"{event}/filter", FILTER)
                events.append(f"{event}/enable")
    except OSError as e:
        raise KernelFeatureError(e.errno, f"cannot set up tracefs instance {path}: "
                                 f"{e.strerror}") from e
    if not events:
        raise KernelFeatureError(errno.ENOENT, "this kernel has no syscall trace events "
                                 "(CONFIG_FTRACE_SYSCALLS)")
    return events


def set_enabled(switches: Iterable[str], on: bool) -> None:
    value = "1" if on else "0"
    for path in switches:
        _write(path, value)


class EnospcTraceSource:
    name = "enospc-trace"

    def __init__(self, emit: Callable[[Observation], None], mode: str = "at-risk",
                 tracefs: str | None = None) -> None:
        self._emit = emit
        self.mode = mode
        self._tracefs = tracefs
        self._root = ""
        self.instance = ""  # its directory, once made
        self.events: list[str] = []  # enable files of the events we use
        self.armed = False
        self._at_risk = False
        self.failures = 0
        self.from_writer = 0  # failures whose writer's files could be read
        self.lost = 0
        self.arm_changes = 0
        self._fd = -1
        self._partial = b""
        self._same_pids = _pidns() == INIT_PIDNS  # the trace's pids are ours (header)
        self._looked: dict[int, tuple[float, Files | None, str]] = {}
        self._lost_logged = -LOST_LOG_EVERY
        self._enable_failed = False

    # ------------------------------------------------------------ arming

    @property
    def state(self) -> str:
        return "armed" if self.armed else "disarmed"

    def set_at_risk(self, at_risk: bool) -> None:
        """The engine's answer to "is a watched file system at risk?"."""
        self._at_risk = at_risk
        self._apply()

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self._apply()

    def _apply(self) -> None:
        want = self.mode == "always" or (self.mode == "at-risk" and self._at_risk)
        if self.instance and want != self.armed:
            self._enable(want)

    def _enable(self, on: bool) -> None:
        try:
            set_enabled(self.events, on)
        except OSError as e:
            # Tried again with every update of the engine (a sample every few
            # seconds), and said once.
            log.log(logging.DEBUG if self._enable_failed else logging.WARNING,
                    "ENOSPC trace: cannot %s: %s", "arm" if on else "disarm", e)
            self._enable_failed = True
            if on:
                self._disable_quietly()
            return
        self.armed = on
        self.arm_changes += 1
        log.info("ENOSPC trace %s", "armed: a file system is at risk" if on and
                 self.mode == "at-risk" else self.state)

    def _disable_quietly(self) -> None:
        try:
            set_enabled(self.events, False)
        except OSError as e:
            log.debug("disabling the ENOSPC trace: %s", e)
        self.armed = False

    # --------------------------------------------------------- lifecycle

    async def run(self, started: Callable[[], None]) -> None:
        self._root = self._tracefs or find_tracefs()
        path = make_instance(self._root)
        loop = asyncio.get_running_loop()
        try:
            self.events = configure(path)
            self._fd = os.open(f"{path}/trace_pipe", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            loop.add_reader(self._fd, self._on_readable)
            self.instance = path
            started()
            self._apply()
            await asyncio.Future()  # until cancelled
        finally:
            self.instance = ""
            if self._fd >= 0:
                loop.remove_reader(self._fd)
                os.close(self._fd)
                self._fd = -1
            self._disable_quietly()
            try:
                os.rmdir(path)
            except OSError as e:
                log.warning("ENOSPC trace: cannot remove %s: %s", path, e)

    # ----------------------------------------------------------- reading

    def _on_readable(self) -> None:
        for _ in range(MAX_READS):
            try:
                chunk = os.read(self._fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            if not chunk:
                return
            data = self._partial + chunk
            complete, _, self._partial = data.rpartition(b"\n")
            if complete:
                self._handle(complete.decode("utf-8", "surrogateescape"))

    def _handle(self, text: str) -> None:
        failures, lost = parse_trace(text)
        now = time.monotonic()
        if lost:
            self.lost += lost
            if now - self._lost_logged >= LOST_LOG_EVERY:
                self._lost_logged = now
                log.warning("ENOSPC trace: the kernel dropped failure records (%d so far): "
                            "the counts of a storm are lower bounds", self.lost)
        groups: dict[tuple[int, int, str], list[TraceFailure]] = {}
        for f in failures:
            groups.setdefault((f.pid, f.errno, f.syscall), []).append(f)
        for (pid, err, call), same in groups.items():
            files, comm = self._writer(pid, now)
            self.failures += len(same)
            if files is not None:
                self.from_writer += len(same)
            # The trace's comm comes from the kernel's pid -> name cache when the
            # line is read, and that is updated lazily (when the task is next
            # switched out): `<...>`, or a name the pid had before an exec. The
            # writer's own, while it lives, wins.
            comm = comm or same[-1].comm or self._cached_comm(pid)
            self._emit(WriteFailure(
                pid=pid, comm=comm, syscall=call, errno=err, count=len(same),
                writable=tuple(files[0]) if files else (), other=tuple(files[1]) if files else (),
                uid=fs_uid(pid) if err == 122 and files is not None else -1))

    def _cached_comm(self, pid: int) -> str:
        """The kernel's cached name of a writer gone before we read its
        /proc, which the trace line lacked (`<...>`): the line is printed when
        read, and the name is cached when the writer is next switched out (at
        its exit at the latest), which can come between the two."""
        try:
            with open(f"{self._root}/saved_cmdlines", "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return parse_saved_cmdlines(text).get(pid, "")

    def _writer(self, pid: int, now: float) -> tuple[Files | None, str]:
        """The writer's files and comm, read again at most once a LOOK_AGAIN:
        a storm from one writer wakes us for every few failures."""
        seen = self._looked.get(pid)
        if seen is not None and now - seen[0] < LOOK_AGAIN:
            return seen[1], seen[2]
        if len(self._looked) > 4096:
            self._looked = {p: v for p, v in self._looked.items() if now - v[0] < LOOK_AGAIN}
        files = writer_files(pid) if self._same_pids else None
        comm = comm_of(pid) if files is not None else ""
        self._looked[pid] = (now, files, comm)
        return files, comm
