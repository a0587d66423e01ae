"""Traced ENOSPC/EDQUOT failures in the engine: which file system, folding,
and how they relate to statvfs's no-space. Pure: no kernel, no clock."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from fsmond.engine.core import Engine
from fsmond.engine.enospc import FOLD_WINDOW
from fsmond.events import Event, MountEntry, MountSnapshot, SpaceSample, WriteFailure
from tests.engine.test_engine import GIB, PROC, Policy

DATA = MountEntry(30, 1, (7, 0), "/", "/data", "rw,relatime", "ext4", "/dev/loop0", "rw")
HOME = MountEntry(31, 1, (7, 1), "/", "/home", "rw,relatime", "ext4", "/dev/loop1",
                  "rw,usrquota")
SRV = MountEntry(32, 1, (7, 2), "/", "/srv", "rw,relatime", "ext4", "/dev/loop2", "rw")


def engine(*paths: str) -> Engine:
    e = Engine(Policy(paths=paths or None))
    e.process(MountSnapshot((PROC, DATA, HOME, SRV)), 0.0)
    return e


def sample(e: Engine, dev: tuple[int, int], avail_pct: float, files_avail: int = 1000,
           t: float = 0.5) -> list[Event]:
    avail = int(GIB * avail_pct / 100)
    return e.process(SpaceSample(dev, GIB, avail, avail, 1000, files_avail, files_avail, 4096),
                     t).events


def fail(syscall: str = "write", writable: tuple[int, ...] = (), other: tuple[int, ...] = (),
         errno: int = 28, pid: int = 42, comm: str = "dd", count: int = 1) -> WriteFailure:
    return WriteFailure(pid, comm, syscall, errno, count, writable, other, uid=1000)


def no_space(events: list[Event]) -> list[Event]:
    return [e for e in events if e.name in ("no-space", "quota-exceeded")]


def test_a_write_is_on_the_one_file_system_the_writer_has_open_for_writing() -> None:
    e = engine()
    [ev] = e.process(fail(writable=(30, 2)), 1.0).events  # 2 is /proc: cannot run out of space
    assert (ev.fs, ev.mount_point, ev.pid, ev.comm) == ("/org/fsmond/FsMon1/fs/7_0", "/data",
                                                        42, "dd")
    assert ev.cls == "warn" and ev.name == "no-space"
    assert {k: ev.details[k] for k in ("source", "errno", "syscall", "count", "attribution",
                                       "resource")} == {
        "source": "trace", "errno": 28, "syscall": "write", "count": 1,
        "attribution": "writer", "resource": "data"}


def test_a_writer_on_an_unwatched_file_system_is_not_reported() -> None:
    e = engine("/data")
    assert e.process(fail(writable=(32,)), 1.0).events == ()


def test_several_open_file_systems_are_narrowed_to_the_one_at_risk() -> None:
    e = engine()
    sample(e, (7, 1), 50)
    sample(e, (7, 2), 3)  # below both levels
    [ev] = no_space(e.process(fail(writable=(31, 32)), 1.0).events)
    assert ev.mount_point == "/srv" and ev.details["attribution"] == "writer+risk"


def test_a_path_call_looks_at_every_open_file_and_the_cwd_then_at_risk() -> None:
    e = engine()
    sample(e, (7, 2), 3)
    # cwd /data, a dir on /srv
    [ev] = no_space(e.process(fail("mkdir", other=(30, 32)), 1.0).events)
    assert ev.mount_point == "/srv" and ev.details["attribution"] == "writer+risk"
    # An absolute path elsewhere: nothing it had open is at risk; the one that is.
    [ev] = no_space(e.process(fail("openat", other=(30,), pid=43), 3.0).events)
    assert ev.mount_point == "/srv" and ev.details["attribution"] == "at-risk"


def test_a_gone_writer_is_put_on_the_only_file_system_at_risk_or_the_fullest() -> None:
    e = engine()
    sample(e, (7, 0), 8)
    [ev] = no_space(e.process(fail(), 1.0).events)
    assert ev.mount_point == "/data" and ev.details["attribution"] == "at-risk"
    sample(e, (7, 2), 2, t=1.5)
    [ev] = no_space(e.process(fail(), 3.0).events)
    assert ev.mount_point == "/srv" and ev.details["attribution"] == "fullest"


def test_a_failure_no_file_system_can_own_is_an_event_of_none() -> None:
    e = engine()
    [ev] = e.process(fail(comm="cp"), 1.0).events
    assert (ev.fs, ev.name, ev.comm, ev.details["attribution"]) == ("/", "no-space", "cp", "none")


def test_edquot_is_a_quota_event_on_a_file_system_with_quota() -> None:
    e = engine()
    [ev] = e.process(fail(errno=122), 1.0).events  # nothing at risk: quota does not show in statvfs
    assert (ev.cls, ev.name, ev.mount_point) == ("warn", "quota-exceeded", "/home")
    assert ev.details["errno"] == 122 and ev.details["uid"] == 1000
    # Quota says nothing about space: statvfs's no-space still comes.
    assert [x.name for x in sample(e, (7, 1), 0, t=1.5)][-1] == "no-space"


def test_out_of_inodes_a_name_that_cannot_be_made_is_metadata() -> None:
    e = engine()
    sample(e, (7, 0), 50, files_avail=0)
    [ev] = no_space(e.process(fail("openat", other=(30,)), 1.0).events)
    assert ev.details["resource"] == "metadata"


def test_statvfs_does_not_repeat_a_no_space_the_trace_said_first() -> None:
    e = engine()
    sample(e, (7, 0), 8)
    assert no_space(e.process(fail(writable=(30,)), 1.0).events)
    assert no_space(sample(e, (7, 0), 0, t=1.2)) == []
    # Room again ends the condition; running out again is news.
    sample(e, (7, 0), 8, t=2.0)
    [ev] = no_space(sample(e, (7, 0), 0, t=3.0))
    assert ev.details["source"] == "statvfs"


def test_while_statvfs_says_no_space_the_trace_still_names_writers() -> None:
    e = engine()
    assert no_space(sample(e, (7, 0), 0))
    [ev] = no_space(e.process(fail(writable=(30,), comm="rsync"), 1.0).events)
    assert ev.comm == "rsync"


def storm(e: Engine, times: list[float]) -> list[Event]:
    out: list[Event] = []
    for i, t in enumerate(sorted(times)):
        out += e.tick(t).events
        out += e.process(fail(writable=(30,), pid=100 + i % 3), t).events
    deadline = e.next_deadline()
    while deadline is not None:
        out += e.tick(deadline).events
        deadline = e.next_deadline()
    return no_space(out)


def test_a_storm_is_one_event_per_second_with_the_count() -> None:
    e = engine()
    times = [1.0 + i * 0.01 for i in range(250)]  # 2.5 s of failures
    events = storm(e, times)
    assert [ev.details["count"] for ev in events] == [1, 99, 100, 50]
    assert events[1].details["writers"] == ["dd[101]", "dd[102]", "dd[100]"]
    assert [ev.time for ev in events] == [1.0, 2.0, 3.0, 4.0]


@given(st.lists(st.floats(0.0, 10.0), min_size=1, max_size=200))
def test_a_storm_loses_nothing_and_never_sends_two_events_in_a_window(times: list[float]) -> None:
    e = engine()
    events = storm(e, times)
    assert sum(ev.details["count"] for ev in events) == len(times)
    gaps = [b.time - a.time for a, b in pairwise(events)]
    assert all(g >= FOLD_WINDOW - 1e-9 for g in gaps)
    assert events[0].time == min(times)  # the first is never held back


def test_at_risk_follows_the_levels() -> None:
    e = engine()
    assert not e.at_risk()
    sample(e, (7, 0), 50)
    assert not e.at_risk()
    sample(e, (7, 0), 9, t=1.0)  # the lower level (10%)
    assert e.at_risk()
    sample(e, (7, 0), 50, t=2.0)
    assert not e.at_risk()
