"""The ENOSPC trace's parsers, on trace_pipe text captured on this kernel
(tests/data/trace_pipe.txt: dd, a process named "my-app [1] x", a LOST line)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsmond.errors import KernelFormatError
from fsmond.sources.enospc_records import (
    FdInfo,
    Lost,
    TraceFailure,
    parse_fdinfo,
    parse_saved_cmdlines,
    parse_trace,
    parse_trace_line,
)

DATA = Path(__file__).parent.parent / "data"


def test_captured_trace_gives_each_failure_with_pid_comm_call_and_errno() -> None:
    failures, lost = parse_trace((DATA / "trace_pipe.txt").read_text())
    assert lost == 2755
    assert failures[0] == TraceFailure(31791, 31791, "dd", "write", 28)
    assert failures[1] == TraceFailure(31792, 31792, "my-app [1] x", "write", 28)
    assert [f.syscall for f in failures] == ["write", "write", "write", "mkdir", "openat", "write"]
    assert failures[-1].comm == "python3"


def test_a_thread_is_reported_as_its_process_and_without_tgid_as_itself() -> None:
    line = "  worker-7-1201    (   1200) [000] .....  10.000001: sys_pwrite64 -> 0xffffffffffffff86"
    assert parse_trace_line(line) == TraceFailure(1200, 1201, "worker-7", "pwrite64", 122)
    no_tgid = "  worker-1201    [000] .....  10.000001: sys_write -> 0xffffffffffffffe4"
    assert parse_trace_line(no_tgid) == TraceFailure(1201, 1201, "worker", "write", 28)
    unknown = "  <...>-1201    (-------) [000] .....  10.000001: sys_write -> 0xffffffffffffffe4"
    assert parse_trace_line(unknown) == TraceFailure(1201, 1201, "", "write", 28)


@pytest.mark.parametrize("line", [
    "", "# tracer: nop", "CPU:0 [LOST many EVENTS]",
    "  dd-1 [000] ..... 1.0: sys_write -> 0x10",  # a success: not an errno
    "  dd-1 [000] ..... 1.0: sys_write -> 0xzz",
    "  dd-1 [000] ..... 1.0: sched_switch: prev_comm=dd",
])
def test_lines_that_are_not_failures_are_skipped(line: str) -> None:
    assert parse_trace_line(line) is None


def test_lost_records_are_counted() -> None:
    assert parse_trace_line("CPU:1 [LOST 3 EVENTS]") == Lost(3)


@given(st.text())
def test_any_text_parses_without_an_exception(text: str) -> None:
    parse_trace(text)


def test_fdinfo_flags_are_octal_and_tell_writable_files() -> None:
    info = parse_fdinfo(b"pos:\t15\nflags:\t0100001\nmnt_id:\t27\nino:\t2302211\n")
    assert info == FdInfo(0o100001, 27) and info.writable
    assert not parse_fdinfo(b"pos:\t0\nflags:\t02000000\nmnt_id:\t3\n").writable
    assert parse_fdinfo(b"flags:\t02\nmnt_id:\t9\n").writable  # O_RDWR


@pytest.mark.parametrize("text", [b"", b"pos:\t0\n", b"flags:\t09\nmnt_id:\t1\n",
                                  b"flags:\t01\nmnt_id:\tx\n"])
def test_malformed_fdinfo_is_a_format_error(text: bytes) -> None:
    with pytest.raises(KernelFormatError):
        parse_fdinfo(text)


def test_saved_cmdlines_map_pids_to_names_with_spaces() -> None:
    text = "31791 dd\n31792 my-app [1] x\n7 <...>\nbogus\n"
    assert parse_saved_cmdlines(text) == {31791: "dd", 31792: "my-app [1] x"}
