"""Pure parsers for the ENOSPC trace: trace_pipe lines and /proc fdinfo text.

How it works: the tracefs instance prints each filtered `sys_exit_*` record
as one text line, the task's comm and pid first (with `(tgid)` when the
instance records tgids), then the CPU, flags, timestamp and the event:

    dd-28620   (  28620) [000] .....  1422.556267: sys_write -> 0xffffffffffffffe4

A comm is whatever a process set (spaces, dashes, brackets), so a line is
matched from its end, where the kernel's own fields are; the comm is what is
left before the last `-pid`. The comm comes from the kernel's cache of
command names, which prints `<...>` when the task was not cached: that is
"unknown" here, not a name. The return value is printed in hex, two's
complement of 64 bits. A full ring buffer prints `CPU:N [LOST M EVENTS]`,
which is counted. Anything else is skipped: a parser of kernel text must not
fail on a line it does not know.
"""

from __future__ import annotations

import re

from fsmond.errors import KernelFormatError
from fsmond.events import record

ENOSPC, EDQUOT = 28, 122
ERRNO_NAMES = {ENOSPC: "ENOSPC", EDQUOT: "EDQUOT"}

_LINE = re.compile(
    r"(?P<comm>.*)-(?P<pid>\d+)\s+(?:\(\s*(?P<tgid>\d+|-+)\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?P<flags>\S+)\s+(?P<ts>\d+\.\d+):\s+sys_(?P<call>\w+)\s+->\s+0x(?P<ret>[0-9a-fA-F]+)\s*")
_LOST = re.compile(r"CPU:\s*\d+\s+\[LOST\s+(?P<n>\d+)\s+EVENTS\]\s*")
O_ACCMODE, O_WRONLY, O_RDWR = 0o3, 0o1, 0o2


@record
class TraceFailure:
    """One failed system call, as the trace printed it."""

    pid: int  # the process (tgid) where the trace knew it, else the thread
    tid: int
    comm: str  # "" when the kernel's cache had no name for it
    syscall: str  # without "sys_": "write", "openat", ...
    errno: int  # positive: 28, 122, ...


@record
class Lost:
    """The ring buffer dropped records before they were read."""

    count: int


def parse_trace_line(line: str) -> TraceFailure | Lost | None:
    """One trace_pipe line; None for anything that is not a failed syscall."""
    m = _LINE.fullmatch(line)
    if m is None:
        lost = _LOST.fullmatch(line)
        return Lost(int(lost.group("n"))) if lost else None
    ret = int(m.group("ret"), 16)
    if ret >= 1 << 63:
        ret -= 1 << 64
    if ret >= 0 or ret < -4095:  # not an errno: the filter lets nothing else through
        return None
    tid = int(m.group("pid"))
    tgid = m.group("tgid")
    comm = m.group("comm").strip()
    return TraceFailure(pid=int(tgid) if tgid and tgid.isdigit() and tgid != "0" else tid,
                        tid=tid, comm="" if comm == "<...>" else comm,
                        syscall=m.group("call"), errno=-ret)


def parse_trace(text: str) -> tuple[list[TraceFailure], int]:
    """Complete lines of a read: the failures, and how many records were lost."""
    failures: list[TraceFailure] = []
    lost = 0
    for line in text.splitlines():
        found = parse_trace_line(line)
        if isinstance(found, TraceFailure):
            failures.append(found)
        elif isinstance(found, Lost):
            lost += found.count
    return failures, lost


def parse_saved_cmdlines(text: str) -> dict[int, str]:
    """tracefs' `saved_cmdlines`: "pid comm" a line (a comm may hold spaces)."""
    out: dict[int, str] = {}
    for line in text.splitlines():
        pid, _, comm = line.partition(" ")
        if pid.isdigit() and comm and comm != "<...>":
            out[int(pid)] = comm
    return out


@record
class FdInfo:
    """What /proc/PID/fdinfo/N says about one open file."""

    flags: int
    mnt_id: int

    @property
    def writable(self) -> bool:
        return self.flags & O_ACCMODE in (O_WRONLY, O_RDWR)


def parse_fdinfo(text: bytes) -> FdInfo:
    """`pos:\\t0\\nflags:\\t0100001\\nmnt_id:\\t52\\n...` (flags in octal)."""
    flags = mnt_id = None
    for line in text.split(b"\n"):
        key, _, value = line.partition(b":")
        try:
            if key == b"flags":
                flags = int(value.strip(), 8)
            elif key == b"mnt_id":
                mnt_id = int(value.strip())
        except ValueError:
            break
        if flags is not None and mnt_id is not None:
            return FdInfo(flags, mnt_id)
    raise KernelFormatError(f"fdinfo without flags and mnt_id: {text[:200]!r}")
