"""Record what the engine was told, and replay it: the engine is pure, so the
same observations at the same times give the same events.

`fsmond --trace FILE` appends one JSON line per observation (its type, the
wall-clock time it came at and the values). `replay()` feeds a trace through
a fresh Engine; tests use it to check that the running daemon's threshold
events are exactly the pure state machine's answer to the samples it saw.
Reloads and run-time watch changes are not traced.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from fsmond.engine.core import Engine
from fsmond.engine.watches import Policy
from fsmond.events import (
    DeviceChange,
    ErrorHistory,
    Event,
    KernelReport,
    Members,
    MountDelta,
    MountEntry,
    MountSnapshot,
    Observation,
    Responsive,
    SpaceSample,
    SuperOptions,
    Unresponsive,
    WriteFailure,
)

TYPES: dict[str, type[Any]] = {cls.__name__: cls for cls in (
    MountSnapshot, MountDelta, SpaceSample, Unresponsive, Responsive, SuperOptions,
    KernelReport, ErrorHistory, WriteFailure, DeviceChange, Members)}


def encode(obs: Observation, now: float) -> str:
    return json.dumps({"t": now, "type": type(obs).__name__, "data": dataclasses.asdict(obs)},
                      separators=(",", ":"))


def _entry(d: dict[str, Any]) -> MountEntry:
    return MountEntry(**{**d, "device": tuple(d["device"])})


def decode(line: str) -> tuple[float, Observation]:
    rec = json.loads(line)
    cls, data = TYPES[rec["type"]], dict(rec["data"])
    if cls is MountSnapshot:
        data["entries"] = tuple(_entry(e) for e in data["entries"])
    elif cls is MountDelta:
        data = {"added": tuple(_entry(e) for e in data["added"]),
                "removed": tuple(data["removed"]),
                "changed": tuple(_entry(e) for e in data["changed"])}
    elif cls is WriteFailure:
        data["writable"], data["other"] = tuple(data["writable"]), tuple(data["other"])
    elif data.get("device") is not None:
        data["device"] = tuple(data["device"])
    if cls is Members:
        data["members"] = tuple(tuple(m) for m in data["members"])
    return float(rec["t"]), cls(**data)


class Tracer:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, obs: Observation, now: float) -> None:
        self.stream.write(encode(obs, now) + "\n")
        self.stream.flush()


def read(lines: Iterable[str]) -> Iterator[tuple[float, Observation]]:
    for line in lines:
        if line.strip():
            yield decode(line)


def replay(policy: Policy, trace: Iterable[str], merge_wait: float = 0.0) -> list[Event]:
    engine = Engine(policy, merge_wait=merge_wait)
    events: list[Event] = []
    for now, obs in read(trace):
        events += engine.process(obs, now).events
    return events
