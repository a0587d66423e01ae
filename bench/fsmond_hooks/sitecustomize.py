"""Measuring hooks inside the fsmond process, for a `python -m fsmond`
started with this directory on PYTHONPATH (other Python processes, the
bench's own, are left alone). Each is switched on by its variable:

STEP_COUNT_OUT=FILE: Python steps (bytecode instructions run) per function,
every thread, written to FILE as `steps<TAB>file<TAB>function` lines when
fsmond exits (cleanly on SIGTERM, as the benches stop it). The tracer makes
fsmond many times slower: only the counts mean anything. Two storms'
difference is one mount and its unmount along the daemon's whole path:

    STEP_COUNT_OUT=/tmp/steps-1000.tsv PYTHONPATH=$PWD/bench/fsmond_hooks \\
        .venv/bin/python bench/mount_storm.py --mounts 1000 --without-findmnt
    (again with 3000 and /tmp/steps-3000.tsv, then)
    .venv/bin/python bench/step_count.py /tmp/steps-1000.tsv 1000 /tmp/steps-3000.tsv 3000

FREE_ENTRIES=1: a what-if, never a result about fsmond: every event's a{sv}
and every MountsChanged entry is the one first marshalled for its event
name or change kind, so marshalling them costs nothing (subscribers get
valid, repeated entries). How much of a storm's CPU and lag the entries
are, as an upper bound on what a faster encoder could give:

    FREE_ENTRIES=1 PYTHONPATH=$PWD/bench/fsmond_hooks \\
        .venv/bin/python bench/mount_storm.py --mounts 15000
"""

import os


def _is_fsmond() -> bool:
    with open("/proc/self/cmdline", "rb") as f:  # sys.argv is not set yet here
        args = f.read().split(b"\0")
    return b"-m" in args and b"fsmond" in args


def _count_steps(out: str) -> None:
    import atexit
    import collections
    import sys
    import threading

    counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def tracer(frame, event, arg):  # type: ignore[no-untyped-def]
        frame.f_trace_opcodes = True
        if event == "opcode":
            counts[frame.f_code.co_filename, frame.f_code.co_qualname] += 1
        return tracer

    def write() -> None:
        sys.settrace(None)
        with open(out, "w") as f:
            for (filename, function), n in counts.most_common():
                f.write(f"{n}\t{filename}\t{function}\n")

    sys.settrace(tracer)
    threading.settrace(tracer)
    atexit.register(write)


def _free_entries() -> None:
    # Patched before fsmond's D-Bus publisher imports the two functions.
    from fsmond.publishers import dbus_entries

    events: dict[str, bytearray] = {}  # by event name
    changes: dict[str, bytearray] = {}  # by change kind
    real_event, real_change = dbus_entries.event_entries, dbus_entries.change_entries

    def event_entries(e):  # type: ignore[no-untyped-def]
        return events.get(e.name) or events.setdefault(e.name, real_event(e))

    def change_entries(c, fs_path):  # type: ignore[no-untyped-def]
        return changes.get(c.kind) or changes.setdefault(c.kind, real_change(c, fs_path))

    dbus_entries.event_entries = event_entries
    dbus_entries.change_entries = change_entries


if _is_fsmond():
    if os.environ.get("STEP_COUNT_OUT"):
        _count_steps(os.environ["STEP_COUNT_OUT"])
    if os.environ.get("FREE_ENTRIES"):
        _free_entries()
