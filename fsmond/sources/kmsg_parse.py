"""Pure parser and classifier of /dev/kmsg records. No I/O.

How it works: a record is `pri,seq,ts_usec,flags[,...];text` and then
` KEY=value` continuation lines (SUBSYSTEM=block, DEVICE=b8:17). The
facility is `pri >> 3`: only facility 0 is the kernel; whatever a process
writes into /dev/kmsg gets another facility (the kernel forces at least
LOG_USER), so such a record never classifies, whatever its text says.
Classification is a table of regular expressions tried in order; the first
match names the kind (error, read-only, no-space) and where the device name,
errno, function and comm are in the text. Each rule also names the literal
starts its pattern can match, so that a record is only matched against the
rules it could fit: most kernel records fit none, and an error's record is
handled on fsmond's latency path, cold. A device number from DEVICE=bM:m
wins over a name, which the reader resolves through sysfs.
"""

from __future__ import annotations

import re
from dataclasses import field

from fsmond.errors import KernelFormatError
from fsmond.events import record

_HEADER = re.compile(rb"(\d+),(\d+),(\d+),([^;,]*)[^;]*;")
_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")
_DEVICE = re.compile(r"b(\d+):(\d+)")
_ERRNO = {"EIO": 5, "ENOSPC": 28, "EROFS": 30, "EUCLEAN": 117, "EFSCORRUPTED": 117}


@record
class KmsgRecord:
    facility: int
    level: int
    seq: int
    usec: int
    continued: bool  # flags "c": part of a longer line
    text: str
    props: dict[str, str] = field(default_factory=dict)


@record
class Classified:
    kind: str  # error | read-only | no-space
    devname: str
    device: tuple[int, int] | None = None
    errno: int = 0
    function: str = ""
    comm: str = ""
    message: str = ""
    read_only: bool = False  # the same report says the file system went read-only
    follows: bool = False  # a consequence of the error just before it (see RULES)
    resource: str = ""  # what ran out: data, metadata, system (btrfs)


def _unescape(raw: bytes) -> str:
    # /dev/kmsg writes non-printable bytes as \xNN.
    if b"\\" not in raw:
        return raw.decode("utf-8", "replace")
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw).decode("utf-8", "replace")


def parse_kmsg(record: bytes) -> KmsgRecord:
    """One record as one read() of /dev/kmsg returns it."""
    m = _HEADER.match(record)
    if m is None:
        raise KernelFormatError(f"not a /dev/kmsg record: {record[:80]!r}")
    pri, seq, usec = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if pri > 1023:
        raise KernelFormatError(f"priority out of range in {record[:80]!r}")
    body = record[m.end():].rstrip(b"\n").split(b"\n")
    props = {}
    for line in body[1:]:
        key, sep, value = line.strip().partition(b"=")
        if sep and key:
            props[_unescape(key)] = _unescape(value)
    return KmsgRecord(
        facility=pri >> 3, level=pri & 7, seq=seq, usec=usec,
        continued=b"c" in m.group(4),
        text=_unescape(body[0]), props=props,
    )


_DEV = r"(?P<dev>[\w.:+-]+?)"
_EXT = ("EXT2-fs", "EXT3-fs", "EXT4-fs")
_BLOCK = ("blk_update_request: ", "I/O error", "critical ")
_BTRFS_DEV = rf"\(device {_DEV}(?: state (?P<state>\w+))?\)"
# Rule kinds beyond the three a report has: "shutdown" is an error that also
# made the file system read-only (one XFS line says both); "abort" is an
# error that follows another of the same file system (jbd2 aborts the journal
# right after the ext4 error that caused it), so it adds nothing to a count
# that is still open, yet counts when it comes alone. btrfs says it in its
# lines: "state E..." means the file system already had an error (what is
# printed then is that error's aftermath), and "bdev ... errs: ..." is the
# device's error counters printed after each error. Its "Transaction aborted
# (error -N)" only announces the "error ... in <function>" line that always
# follows it: "skip" rules match to say a line is nothing of its own. XFS
# reports a metadata buffer that failed its verifier ("Metadata CRC error
# detected", "Metadata corruption detected") and then, as the read fails,
# "metadata I/O error ... error 74" (or 117) for the same buffer: that
# follows too; with another errno (5: the disk failed) it is an error of its own.
# (kind, the literal starts its pattern can match, pattern); the first rule
# that matches wins, so the specific come first.
RULES: tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...] = tuple(
    (k, starts, re.compile(p)) for k, starts, p in (
        ("read-only", _EXT, rf"EXT[234]-fs \({_DEV}\): Remounting file ?system read-only"),
        ("no-space", ("EXT4-fs (",),
         rf"EXT4-fs \({_DEV}\): Delayed block allocation failed .* error (?P<errno>\d+)"),
        ("error", _EXT, rf"EXT[234]-fs error \(device {_DEV}\): (?P<func>\w+)(?::\d+)?:"
                        r"(?:.*? comm (?P<comm>[^:]+):)?"),
        ("error", ("EXT2-fs (",), rf"EXT2-fs \({_DEV}\): error: (?P<func>\w+)"),
        ("abort", ("Aborting journal",), rf"Aborting journal on device {_DEV}(?:-\d+)?\.?$"),
        # xfs_do_force_shutdown: "<why> (0x<flags>) detected at <caller> (<file>:<line>).
        # Shutting down filesystem." The why is the reason; the caller the function.
        ("shutdown", ("XFS (",),
         rf"XFS \({_DEV}\): (?P<why>[^(]*?) \(0x[0-9a-f]+\) detected at (?P<func>\w+)"
         r".*Shutting down filesystem"),
        ("shutdown", ("XFS (",),
         rf"XFS \({_DEV}\): .*(?:Shutting down filesystem|has been shut down)"),
        ("error", ("XFS (",),
         rf"XFS \({_DEV}\): Metadata (?P<why>CRC error) detected at (?P<func>\w+)"),
        ("error", ("XFS (",),
         rf"XFS \({_DEV}\): (?:Metadata )?(?P<why>[Cc]orruption) (?:of in-memory data )?detected"
         r"(?: at (?P<func>\w+))?"),
        ("error", ("XFS (",), rf"XFS \({_DEV}\): metadata I/O error in \"(?P<func>\w+)[^\"]*\".* "
                              r"error (?P<errno>\d+)"),
        ("read-only", ("BTRFS",), rf"BTRFS(?: \w+)? {_BTRFS_DEV}: forced readonly"),
        ("skip", ("BTRFS",), rf"BTRFS(?: error)? {_BTRFS_DEV}: Transaction aborted \(error"),
        ("no-space", ("BTRFS warning",), rf"BTRFS warning {_BTRFS_DEV}: ENOSPC"),
        # Printed with the enospc_debug mount option when a reservation fails.
        ("no-space", ("BTRFS info",),
         rf"BTRFS info {_BTRFS_DEV}: space_info (?P<res>[A-Z]+)(?: \(sub-group id \d+\))? "
         r"has -?\d+ free, is full"),
        ("error", ("BTRFS",), rf"BTRFS(?: error| critical|: error) {_BTRFS_DEV}"
                              r"(?: in (?P<func>\w+))?(?:.*(?:errno=|error |: )-(?P<errno>\d+))?"),
        ("error", _BLOCK, rf"(?:blk_update_request: )?(?:I/O|critical \w+(?: \w+)*) error, "
                          rf"dev {_DEV}, sector"),
        ("error", ("Buffer I/O error",), rf"Buffer I/O error on dev {_DEV}, logical block"),
    ))
# errno of an XFS report that names none: what the kernel returns for it
# (xfs's EFSBADCRC is EBADMSG, EFSCORRUPTED is EUCLEAN).
_WHY_ERRNO = {"CRC": 74, "corruption": 117, "Corruption": 117}
_VERIFIER_ERRNOS = (74, 117)


def classify(rec: KmsgRecord) -> Classified | None:
    """What a kernel record says about a file system or device, or None."""
    if rec.facility != 0:
        return None  # written by a process: never trusted
    text = rec.text
    for kind, starts, rule in RULES:
        if not text.startswith(starts) or (m := rule.match(text)) is None:
            continue
        if kind == "skip":
            return None
        groups = m.groupdict()
        errno = int(groups["errno"]) if groups.get("errno") else 0
        why = groups.get("why") or ""
        if not errno and why:
            errno = _WHY_ERRNO.get(why.split()[0], 0) or _ERRNO["EIO"]
        if not errno and kind == "shutdown":
            errno = _ERRNO["EIO"]
        if not errno and kind == "no-space":
            errno = 28
        if not errno and "space allocation" in rec.text:
            errno = 28
        elif not errno and ("I/O error" in rec.text or "journal" in rec.text):
            errno = _ERRNO["EIO"]
        return Classified(
            kind="error" if kind in ("shutdown", "abort") else kind,
            devname=groups["dev"], device=_device_prop(rec.props),
            errno=errno, function=groups.get("func") or "",
            comm=(groups.get("comm") or "").strip(), message=rec.text,
            read_only=kind == "shutdown",
            follows=kind == "abort" or "E" in (groups.get("state") or "")
            or (text.startswith("BTRFS") and ": bdev " in text and " errs: " in text)
            or (text.startswith("XFS") and "metadata I/O error" in text
                and errno in _VERIFIER_ERRNOS),
            resource=(groups.get("res") or "").lower(),
        )
    return None


def _device_prop(props: dict[str, str]) -> tuple[int, int] | None:
    m = _DEVICE.fullmatch(props.get("DEVICE", ""))
    return (int(m.group(1)), int(m.group(2))) if m else None
