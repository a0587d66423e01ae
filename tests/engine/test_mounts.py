"""The mount table model: diffing, generations and the bounded change log."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsmond.engine.mounts import MountTable
from fsmond.errors import InvalidArgsError
from fsmond.events import MountDelta, MountEntry, MountSnapshot
from fsmond.sources.mountinfo import parse_mountinfo

DATA = Path(__file__).parent.parent / "data"


def entry(mid: int, point: str = "/m", opts: str = "rw") -> MountEntry:
    return MountEntry(mid, 1, (0, mid), "/", point, opts, "tmpfs", "tmpfs", "rw")


def test_snapshot_diff_gives_added_removed_changed_with_generations() -> None:
    t = MountTable()
    first = t.apply_snapshot(MountSnapshot((entry(1, "/a"), entry(2, "/b"))))
    assert [(c.kind, c.generation) for c in first] == [("added", 1), ("added", 2)]
    second = t.apply_snapshot(MountSnapshot((entry(1, "/a", "ro"), entry(3, "/c"))))
    assert sorted((c.kind, c.entry.mount_id) for c in second) == [
        ("added", 3), ("changed", 1), ("removed", 2)
    ]
    changed = next(c for c in second if c.kind == "changed")
    assert changed.old is not None and changed.old.options == "rw"
    assert t.generation == 5 and sorted(t.mounts) == [1, 3]
    assert t.apply_snapshot(MountSnapshot((entry(1, "/a", "ro"), entry(3, "/c")))) == []


def test_delta_ignores_unknown_removals_and_repeats() -> None:
    t = MountTable()
    t.apply_delta(MountDelta(added=(entry(1),)))
    assert t.apply_delta(MountDelta(added=(entry(1),), removed=(99,))) == []
    assert t.generation == 1


def test_changes_since_and_a_log_that_no_longer_reaches_back() -> None:
    t = MountTable(log_size=3)
    for i in range(1, 6):
        t.apply_delta(MountDelta(added=(entry(i, f"/m{i}"),)))
    gen, complete, changes = t.changes_since(3)
    assert (gen, complete, [c.entry.mount_id for c in changes]) == (5, True, [4, 5])
    assert t.changes_since(2)[1] is True and len(t.changes_since(2)[2]) == 3
    assert t.changes_since(1)[:2] == (5, False)
    assert t.changes_since(5) == (5, True, [])
    with pytest.raises(InvalidArgsError):
        t.changes_since(6)
    with pytest.raises(InvalidArgsError):
        t.changes_since(-1)


def test_at_returns_the_top_mount_of_a_stack() -> None:
    t = MountTable()
    t.apply_delta(MountDelta(added=(entry(1, "/s"), entry(2, "/s"))))
    assert t.at("/s") == entry(2, "/s")
    t.apply_delta(MountDelta(removed=(2,)))
    assert t.at("/s") == entry(1, "/s")
    t.apply_delta(MountDelta(removed=(1,)))
    assert t.at("/s") is None


ops = st.lists(
    st.tuples(st.sampled_from(["add", "del", "chg", "snap"]), st.integers(1, 12)), max_size=50
)


@given(ops)
def test_snapshot_follow_equals_the_table(script: list[tuple[str, int]]) -> None:
    """A client that lists once, then applies changes_since, ends with the table."""
    t = MountTable(log_size=1000)
    truth: dict[int, MountEntry] = {}
    client: dict[int, MountEntry] = {}
    seen = 0
    for i, (op, mid) in enumerate(script):
        if op == "add":
            truth[mid] = entry(mid, f"/m{mid}")
            t.apply_delta(MountDelta(added=(truth[mid],)))
        elif op == "del":
            truth.pop(mid, None)
            t.apply_delta(MountDelta(removed=(mid,)))
        elif op == "chg" and mid in truth:
            truth[mid] = dataclasses.replace(truth[mid], options=f"rw,x{i}")
            t.apply_delta(MountDelta(changed=(truth[mid],)))
        else:
            t.apply_snapshot(MountSnapshot(tuple(truth.values())))
        if i % 3 == 0:
            seen, complete, changes = t.changes_since(seen)
            assert complete
            for c in changes:
                if c.kind == "removed":
                    client.pop(c.entry.mount_id)
                else:
                    client[c.entry.mount_id] = c.entry
    seen, _, changes = t.changes_since(seen)
    for c in changes:
        if c.kind == "removed":
            client.pop(c.entry.mount_id)
        else:
            client[c.entry.mount_id] = c.entry
    assert client == truth == t.mounts


def test_real_table_with_odd_names() -> None:
    t = MountTable()
    entries = parse_mountinfo((DATA / "mountinfo-odd-names.txt").read_bytes())
    t.apply_snapshot(MountSnapshot(entries))
    points = {e.mount_point for e in t.mounts.values()}
    assert any(p.endswith("/a b") for p in points)
    assert any(p.endswith("/new\nline") for p in points)
