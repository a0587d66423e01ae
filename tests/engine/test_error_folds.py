"""Kernel error folding on its own, fed kmsg records captured from a real
kernel at their kernel times and fanotify's textless view of the same
errors. Pure: no kernel, no clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fsmond.engine.error_folds import FOLD_WINDOW, MERGE_WAIT, ErrorFolds, FoldedError
from fsmond.events import KernelReport
from fsmond.sources.kmsg_parse import classify, parse_kmsg
from tests.sources.test_kmsg_parse import records

DEV = (7, 1)


def captured(name: str) -> list[tuple[float, KernelReport]]:
    """The file's error records as the kmsg source reports them, at their times."""
    out = []
    for record in records(name):
        rec = parse_kmsg(record)
        c = classify(rec)
        if c is not None and c.kind == "error":
            out.append((rec.usec / 1e6, KernelReport(
                "error", "kmsg", DEV, c.devname, errno=c.errno, function=c.function,
                message=c.message, comm=c.comm, read_only=c.read_only, follows=c.follows)))
    return out


def fold(timed: list[tuple[float, KernelReport]],
         merge_wait: float = 0.0) -> list[tuple[float, FoldedError]]:
    """What is published and when, flushing at each deadline as the engine's tick does."""
    folds, out = ErrorFolds(), []

    def flush_until(t: float) -> None:
        while (due := folds.deadline()) is not None and due <= t:
            out.extend((due, f) for f in folds.flush(due))

    for t, r in timed:
        flush_until(t)
        if (f := folds.add(r, t, merge_wait)) is not None:
            out.append((t, f))
    flush_until(float("inf"))
    return out


def test_a_captured_xfs_corruption_is_published_at_once_then_the_rest_of_its_second() -> None:
    timed = captured("xfs-corrupt-shutdown.captured")
    (t, crc), (_, again), (_, io), (later, shutdown) = timed
    assert io.follows and shutdown.read_only and later > t + FOLD_WINDOW
    assert [(at, f.count, f.report) for at, f in fold(timed)] == [
        (t, 1, crc),
        (t + FOLD_WINDOW, 1, again),  # the I/O error that follows it adds nothing
        (later, 1, shutdown),  # seconds on: at once again
    ]


def test_kmsg_and_fanotify_count_the_same_errors_once() -> None:
    [(t, line), _abort] = captured("ext4-remount-ro.captured")
    fan = KernelReport("error", "fanotify", DEV, errno=117, count=3)  # the kernel merged three
    events = fold([(t, fan), (t + 0.001, line), (t + 0.002, line), (t + 0.003, line)],
                  merge_wait=MERGE_WAIT)
    assert [f.count for _, f in events] == [3]
    [(at, merged)] = events
    assert at == t + 0.001 and merged.sources == ("fanotify", "kmsg")
    r = merged.report  # kmsg's line, with the errno only fanotify knows
    assert (r.message, r.function, r.comm, r.errno) == (
        line.message, "trigger_test_error", "bash", 117)


@given(st.lists(st.floats(0.0, 10.0), min_size=1, max_size=200))
def test_a_storm_loses_nothing_and_its_first_error_is_never_held(times: list[float]) -> None:
    [(_, line), _abort] = captured("ext4-remount-ro.captured")
    events = fold([(t, line) for t in sorted(times)])
    assert sum(f.count for _, f in events) == len(times)
    assert events[0][0] == min(times)


def test_what_a_window_owes_at_its_end_names_every_source_that_counted() -> None:
    """`sources` is every source that reported the folded errors (docs/dbus.md),
    also in the event that closes a window."""
    [(t, line), _abort] = captured("ext4-remount-ro.captured")
    fan = KernelReport("error", "fanotify", DEV, errno=117, count=5)
    events = fold([(t, line), (t + 0.1, line), (t + 0.2, fan)])
    assert [(f.count, f.sources) for _, f in events] == [
        (1, ("kmsg",)), (4, ("fanotify", "kmsg"))]
