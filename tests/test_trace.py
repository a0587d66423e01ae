"""Traces round-trip every observation type, and replay gives the same events."""

from __future__ import annotations

from fsmond.events import (
    DeviceChange,
    ErrorHistory,
    KernelReport,
    Members,
    MountDelta,
    MountEntry,
    MountSnapshot,
    Responsive,
    SpaceSample,
    SuperOptions,
    Unresponsive,
    WriteFailure,
)
from fsmond.trace import decode, encode, replay
from tests.engine.test_engine import Policy

E = MountEntry(30, 1, (7, 0), "/", "/a b\tc", "rw", "ext4", "/dev/loop0", "rw")
ALL = [
    MountSnapshot((E,)), MountDelta(added=(E,), removed=(3,), changed=(E,)),
    SpaceSample((7, 0), 100, 50, 40, 10, 5, 5, 4096), Unresponsive((7, 0), 2.0),
    Responsive((7, 0)), SuperOptions((7, 0), "rw,emergency_ro"),
    KernelReport("error", "kmsg", None, "sda", errno=5, message="x"),
    KernelReport("error", "fanotify", (7, 0), errno=117, count=3),
    ErrorHistory((7, 0), 2, "f:1"), DeviceChange("added", (8, 0), "/dev/sda", "block", {"A": "b"}),
    WriteFailure(42, "dd", "write", 28, 3, (30, 31), (2,), uid=1000),
    Members((0, 40), ((7, 1), (7, 2))),
    KernelReport("error", "kmsg", (7, 5), "loop5", errno=5, read_only=True, follows=True,
                 resource="metadata", message="x"),
]


def test_every_observation_round_trips() -> None:
    for obs in ALL:
        assert decode(encode(obs, 12.5)) == (12.5, obs)


def test_replay_gives_the_events_the_engine_gave() -> None:
    trace = [encode(MountSnapshot((E,)), 0.0),
             encode(SpaceSample((7, 0), 1000, 30, 30, 10, 5, 5, 1), 1.0),
             encode(SpaceSample((7, 0), 1000, 900, 900, 10, 5, 5, 1), 2.0)]
    names = [(e.name, e.details.get("level"), e.details.get("state"))
             for e in replay(Policy(), trace)]
    assert names == [("watch-added", None, None),
                     ("threshold", "lower", "reached"), ("threshold", "upper", "reached"),
                     ("threshold", "upper", "cleared"), ("threshold", "lower", "cleared")]
