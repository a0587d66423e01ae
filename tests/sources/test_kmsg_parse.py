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
        ("error", "nvme0n1p2", 117, ""),
        ("error", "nvme0n1p2", 117, "xfs_dinode_verify"),
        ("error", "sdd1", 5, "xfs_imap_to_bp"),
        ("error", "sdd1", 5, ""),  # shutdowns: an error that made it read-only
        ("error", "sdd1", 117, "xfs_trans_cancel"),
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


def flags(name: str) -> list[tuple[bool, bool, str] | None]:
    out = []
    for r in records(name):
        c = classify(parse_kmsg(r))
        out.append(None if c is None else (c.read_only, c.follows, c.resource))
    return out


def test_captured_ext4_journal_abort_follows_the_error_it_belongs_to() -> None:
    assert flags("ext4-remount-ro.captured")[:2] == [(False, False, ""), (False, True, "")]


def test_captured_btrfs_extent_tree_corruption_to_forced_read_only() -> None:
    """Both copies of an extent-tree leaf corrupted on disk, then a delete:
    the checksum warnings (a mirror could still have repaired them) are not
    errors; "Transaction aborted" only announces the line that names the
    function; what comes in state E (the file system already failed) follows
    that error; "forced readonly" is the read-only."""
    got = [(k, f) for k, f in zip(kinds("btrfs-forced-ro.captured"),
                                  flags("btrfs-forced-ro.captured"), strict=True)
           if k is not None]
    assert got == [
        (("error", "loop1", 5, "__btrfs_free_extent"), (False, False, "")),
        (("read-only", "loop1", 0, ""), (False, True, "")),
        (("error", "loop1", 5, ""), (False, True, "")),  # failed to run delayed ref ...: -5
        (("error", "loop1", 5, "btrfs_run_delayed_refs"), (False, True, "")),
    ]
    texts = [parse_kmsg(r).text for r in records("btrfs-forced-ro.captured")]
    assert any("checksum verify failed" in t for t in texts)
    assert any("Transaction aborted (error -5)" in t for t in texts)


def test_captured_btrfs_metadata_full_names_the_resource() -> None:
    assert kinds("btrfs-enospc.captured") == [("no-space", "loop2", 28, ""), None]
    assert flags("btrfs-enospc.captured")[0] == (False, False, "metadata")


def test_captured_btrfs_raid1_scrub_repairing_one_mirror() -> None:
    """A data block overwritten on the second device of a raid1, then scrub:
    the error names the file system by its first device, the bad one in the
    text; the device's error counters printed after it follow it."""
    got = [(k, f) for k, f in zip(kinds("btrfs-raid1-scrub.captured"),
                                  flags("btrfs-raid1-scrub.captured"), strict=True)
           if k is not None]
    assert got == [(("error", "loop0", 0, ""), (False, False, "")),
                   (("error", "loop0", 0, ""), (False, True, ""))]


def test_captured_xfs_crc_error_metadata_io_error_and_shutdown() -> None:
    """A directory block corrupted on disk, read; then `xfs_io -x -c shutdown`.
    The hex dump of the bad buffer and "Unmount and run xfs_repair" are not
    reports of their own."""
    got = [k for k in kinds("xfs-corrupt-shutdown.captured") if k is not None]
    assert got == [
        ("error", "loop1", 74, "xfs_dir3_block_read_verify"),  # EFSBADCRC is EBADMSG
        ("error", "loop1", 74, "xfs_dir3_block_read_verify"),
        ("error", "loop1", 74, "xfs_da_read_buf"),
        ("error", "loop1", 5, "xfs_fs_goingdown"),
    ]
    got_flags = [f for f in flags("xfs-corrupt-shutdown.captured") if f is not None]
    # the failed read's I/O error is the verifier's report's aftermath
    assert got_flags == [(False, False, ""), (False, False, ""), (False, True, ""),
                         (True, False, "")]
    disk = parse_kmsg(b'1,1,1,-;XFS (sdd1): metadata I/O error in "xfs_imap_to_bp+0x5e/0xa0" '
                      b"at daddr 0x40 len 32 error 5\n")
    assert (c := classify(disk)) is not None and not c.follows  # the disk failed: its own


def test_captured_xfs_wrong_magic_with_a_right_checksum() -> None:
    """A directory block's magic changed by xfs_db (its checksum made to
    match), then listed: readahead's verifier finds the structure wrong."""
    got = [(k, f) for k, f in zip(kinds("xfs-bad-magic.captured"),
                                  flags("xfs-bad-magic.captured"), strict=True)
           if k is not None]
    assert got == [
        (("error", "loop1", 117, "xfs_dir3_data_reada_verify"), (False, False, "")),
        (("error", "loop1", 74, "xfs_dir3_block_read_verify"), (False, False, "")),
        (("error", "loop1", 74, "xfs_da_read_buf"), (False, True, "")),
    ]


def test_a_rule_is_tried_on_every_text_its_pattern_matches() -> None:
    """Each rule names the starts it can match, so that a text is only tried
    against the rules it could fit: a wrong start would hide a kind."""
    texts = [parse_kmsg(r).text for name in ("ext4-remount-ro.captured",
                                              "block-nospc.captured", "transcribed.txt",
                                              "btrfs-forced-ro.captured",
                                              "btrfs-enospc.captured",
                                              "btrfs-raid1-scrub.captured",
                                              "xfs-corrupt-shutdown.captured",
                                              "xfs-bad-magic.captured")
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
