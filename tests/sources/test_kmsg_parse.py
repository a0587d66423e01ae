"""The kmsg classifier on real captured records, transcribed formats and noise."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsmond.errors import KernelFormatError
from fsmond.sources.kmsg_parse import RULES, classify, parse_kmsg

DATA = Path(__file__).parent.parent / "data" / "kmsg"


def records(name: str) -> list[bytes]:
    return [r + b"\n" for r in (DATA / name).read_bytes().split(b"\n\n") if r.strip()]


def kinds(name: str) -> list[tuple[str, str, int, str] | None]:
    out = []
    for r in records(name):
        c = classify(parse_kmsg(r))
        out.append(None if c is None else (c.kind, c.devname, c.errno, c.function))
    return out


def test_captured_ext4_error_abort_remount_and_a_forged_line() -> None:
    assert kinds("ext4-remount-ro.captured") == [
        ("error", "loop0", 0, "trigger_test_error"),
        ("error", "loop0", 5, ""),  # jbd2 "loop0-8": the -8 is the journal inode
        ("read-only", "loop0", 0, ""),
        None,  # the same text written by a process: facility 1
    ]
    first = classify(parse_kmsg(records("ext4-remount-ro.captured")[0]))
    assert first is not None and first.comm == "bash"
    assert "fsmond capture error" in first.message
    forged = parse_kmsg(records("ext4-remount-ro.captured")[3])
    assert forged.facility == 1 and "EXT4-fs error" in forged.text


def test_captured_block_layer_enospc_and_buffer_errors() -> None:
    got = kinds("block-nospc.captured")
    assert got[:3] == [("error", "loop0", 28, "")] * 3
    assert got[3] == ("error", "loop0", 5, "")


def test_transcribed_formats() -> None:
    got = kinds("transcribed.txt")
    assert got == [
        ("no-space", "sdb1", 28, ""),
        None,
        ("error", "sda", 5, ""),
        ("error", "sdc", 5, ""),
        ("error", "dm-3", 5, ""),
        ("error", "nvme0n1p2", 0, ""),
        ("error", "nvme0n1p2", 0, ""),
        ("error", "sdd1", 5, "xfs_imap_to_bp"),
        ("read-only", "sdd1", 0, ""),
        ("read-only", "sdd1", 0, ""),
        ("error", "sde1", 0, ""),
        ("error", "sde1", 5, "btrfs_commit_transaction"),
        ("read-only", "sde1", 0, ""),
        ("no-space", "sde1", 28, ""),
        ("error", "sdf1", 0, "ext3_find_entry"),
        ("error", "sdg1", 0, "ext2_check_page"),
        ("error", "dm-0", 0, "ext4_lookup"),
        None,  # an ordinary mount message
    ]
    delalloc = classify(parse_kmsg(records("transcribed.txt")[0]))
    assert delalloc is not None and delalloc.device == (8, 17)


def test_a_rule_is_tried_on_every_text_its_pattern_matches() -> None:
    """Each rule names the starts it can match, so that a text is only tried
    against the rules it could fit: a wrong start would hide a kind."""
    texts = [parse_kmsg(r).text for name in ("ext4-remount-ro.captured",
                                              "block-nospc.captured", "transcribed.txt")
             for r in records(name)]
    for _kind, starts, rule in RULES:
        matched = [t for t in texts if rule.match(t)]
        assert matched, rule.pattern  # every rule has a sample
        assert all(t.startswith(starts) for t in matched), rule.pattern


def test_header_fields_and_escapes() -> None:
    r = parse_kmsg(b"6,7,123,c,more;caf\\xc3\\xa9 \\x0a\n SUBSYSTEM=block\n DEVICE=b7:0\n")
    assert (r.facility, r.level, r.seq, r.usec, r.continued) == (0, 6, 7, 123, True)
    assert r.text == "caf\u00e9 \n" and r.props == {"SUBSYSTEM": "block", "DEVICE": "b7:0"}


@pytest.mark.parametrize("bad", [b"", b"hello", b"1,2;x", b"a,b,c,-;x", b"99999,1,1,-;x"])
def test_malformed_records_raise_kernel_format_error(bad: bytes) -> None:
    with pytest.raises(KernelFormatError):
        parse_kmsg(bad)


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_kernel_format_error(data: bytes) -> None:
    with contextlib.suppress(KernelFormatError):
        classify(parse_kmsg(data))


@given(st.integers(1, 127), st.sampled_from([
    "EXT4-fs error (device sda1): f:1: x", "EXT4-fs (sda1): Remounting filesystem read-only",
    "I/O error, dev sda, sector 1 op 0x0:(READ)", "BTRFS info (device sda): forced readonly"]))
def test_a_process_facility_never_classifies(facility: int, text: str) -> None:
    pri = facility << 3 | 3
    assert classify(parse_kmsg(f"{pri},1,1,-;{text}\n".encode())) is None
    assert classify(parse_kmsg(f"3,1,1,-;{text}\n".encode())) is not None
