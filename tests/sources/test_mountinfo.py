"""The mountinfo parser, on real captured tables and hostile text."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsmond.errors import KernelFormatError
from fsmond.sources.mountinfo import MountinfoParser, parse_line, parse_mountinfo, unescape

DATA = Path(__file__).parent.parent / "data"


def test_host_table() -> None:
    entries = parse_mountinfo((DATA / "mountinfo-host.txt").read_text())
    proc = next(e for e in entries if e.mount_point == "/proc")
    assert (proc.fstype, proc.source, proc.options, proc.super_options) == (
        "proc", "proc", "rw,relatime", "rw"
    )
    assert proc.device == (0, 21) and proc.mount_id == 22 and proc.parent_id == 27


def test_escaped_names_spaces_tabs_newlines_backslashes_invalid_utf8() -> None:
    entries = parse_mountinfo((DATA / "mountinfo-odd-names.txt").read_bytes())
    names = {e.mount_point.rsplit("/", 1)[1] for e in entries if "/mi." in e.mount_point}
    assert names == {"a b", "tab\tx", "new\nline", "back\\slash", "bad\udcff"}
    ro = next(e for e in entries if e.mount_point.endswith("/a b"))
    assert ro.options.startswith("ro,") and ro.super_options.startswith("ro,")
    assert ro.source.startswith("src ")
    bind = [e for e in entries if e.mount_point.endswith("/tab\tx")]
    assert len(bind) == 2 and bind[0].device != bind[1].device


def test_optional_fields_are_skipped() -> None:
    e = parse_line(b"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:2 - ext3 /dev/root rw")
    assert (e.root, e.mount_point, e.fstype, e.source, e.super_options) == (
        "/mnt1", "/mnt2", "ext3", "/dev/root", "rw"
    )


@pytest.mark.parametrize(
    "line",
    [b"", b"1 2 3", b"x 2 0:1 / /a rw - t s o", b"1 2 0:1 / /a rw t s o",
     b"1 2 0-1 / /a rw - t s o", b"1 2 0:1 / /a rw - t s", b"1 2 0:1 / /a rw - t s o extra"],
)
def test_malformed_lines_raise_a_clear_error(line: bytes) -> None:
    with pytest.raises(KernelFormatError, match="bad mountinfo line"):
        parse_line(line)


def test_incremental_parser_reuses_unchanged_lines() -> None:
    p = MountinfoParser()
    text = (DATA / "mountinfo-host.txt").read_bytes()
    first = p.parse(text)
    second = p.parse(text + b"99 27 0:99 / /new rw - tmpfs none rw\n")
    assert second[: len(first)] == first
    assert all(a is b for a, b in zip(first, second, strict=False))
    assert second[-1].mount_point == "/new"


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_kernel_format_error(data: bytes) -> None:
    with contextlib.suppress(KernelFormatError):
        parse_mountinfo(data)


@given(st.binary(max_size=100))
def test_escape_round_trip(raw: bytes) -> None:
    escaped = b"".join(b"\\%03o" % c if c in b" \t\n\\" else bytes([c]) for c in raw)
    assert unescape(escaped) == raw.decode("utf-8", "surrogateescape")
