"""A file system's sorted mount keys: order, removal in one pass, the live view."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fsmond.engine.mount_keys import MountPoints, contains, discard, insert, mount_key
from fsmond.events import MountEntry


def entry(mid: int, point: str, root: str = "/") -> MountEntry:
    return MountEntry(mid, 1, (0, 40), root, point, "rw", "tmpfs", "tmpfs", "rw")


def test_the_whole_root_and_the_shortest_path_name_the_file_system_first() -> None:
    keys: list = []
    for e in (entry(5, "/srv/data/x"), entry(3, "/srv/sub", root="/sub"), entry(4, "/srv/b"),
              entry(2, "/srv/a")):
        insert(keys, mount_key(e))
    assert list(MountPoints(keys)) == ["/srv/a", "/srv/b", "/srv/data/x", "/srv/sub"]


keys_strategy = st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.text("ab/", max_size=4),
                                   st.integers(0, 50)), unique=True)


@given(keys_strategy, st.data())
def test_discard_removes_exactly_the_given_keys_in_place(all_keys: list, data: st.DataObject
                                                          ) -> None:
    keys = sorted(all_keys)
    gone = data.draw(st.lists(st.sampled_from(keys), max_size=10) if keys else st.just([]))
    absent = (True, 9, "zz", 99)  # never drawn: asking to remove it changes nothing
    view = MountPoints(keys)
    discard(keys, [*gone, absent])
    expected = sorted(set(all_keys) - set(gone))
    assert keys == expected
    assert list(view) == [k[2] for k in expected]  # the view sees the same list
    assert all(contains(keys, k) for k in expected)
    assert not any(contains(keys, k) for k in gone)


def test_a_single_key_is_discarded_and_a_missing_one_ignored() -> None:
    keys = [mount_key(entry(1, "/a")), mount_key(entry(2, "/b"))]
    discard(keys, [mount_key(entry(3, "/c"))])
    discard(keys, [mount_key(entry(1, "/a"))])
    assert list(MountPoints(keys)) == ["/b"]
    assert MountPoints(keys) == ["/b"] and MountPoints(keys)[0:1] == ["/b"]
