"""The fill-rate estimate: a steady fill is seen at its rate however the file
system's figure steps, a flat one is not filling, a full one has 0 s left."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fsmond.engine.fillrate import RATE_WINDOW, FillRate, seconds_to_full

GIB = 1 << 30
PIB = 1 << 50
BLOCK = 4096


@given(rate=st.floats(64 * BLOCK, 1 << 30),
       steps_per_window=st.integers(8, 200),
       intervals=st.lists(st.floats(0.05, 1.0), min_size=20, max_size=200),
       phase=st.floats(0, 1))
def test_a_steady_fill_that_moves_in_steps_is_seen_at_its_rate(
        rate: float, steps_per_window: int, intervals: list[float], phase: float) -> None:
    """statvfs moving in steps (btrfs writeback, NFS attribute refresh): once the
    window is full, every estimate is within a quarter of the true rate."""
    step = rate * RATE_WINDOW / steps_per_window  # bytes per step
    f = FillRate()
    t = 0.0
    for dt in intervals:
        t += dt
        available = int(PIB - step * int(rate * t / step + phase))
        got = f.add(t, available, 2 * PIB, BLOCK)
        if t >= RATE_WINDOW + 1.0:
            assert abs(got - rate) <= 0.25 * rate, (t, got, rate)
            assert seconds_to_full(available, 2 * PIB, got) > 0


@given(intervals=st.lists(st.floats(0.01, 10.0), min_size=2, max_size=100),
       wobble=st.lists(st.integers(-BLOCK // 2, BLOCK // 2), min_size=100, max_size=100))
def test_a_flat_file_system_is_not_filling(intervals: list[float], wobble: list[int]) -> None:
    f = FillRate()
    t = 0.0
    for dt, w in zip(intervals, wobble, strict=False):
        t += dt
        f.add(t, GIB + w, 2 * GIB, BLOCK)
        assert f.rate == 0.0
        assert seconds_to_full(GIB + w, 2 * GIB, f.rate) == -1.0


@given(rate=st.floats(BLOCK, 1 << 30), intervals=st.lists(st.floats(0.05, 5.0), min_size=2,
                                                           max_size=50))
def test_freeing_is_a_negative_rate_and_not_filling(rate: float, intervals: list[float]) -> None:
    f = FillRate()
    t = 0.0
    for dt in intervals:
        t += dt
        f.add(t, int(GIB + rate * t), 4 * GIB, BLOCK)
        assert f.rate <= 0
        assert seconds_to_full(GIB, 4 * GIB, f.rate) == -1.0
    if rate * (t - intervals[0]) > 3 * BLOCK:  # freed more than the noise floor
        assert f.rate < 0


def test_full_is_zero_seconds_whatever_the_rate() -> None:
    assert seconds_to_full(0, GIB, 0.0) == 0.0
    assert seconds_to_full(0, GIB, -5.0) == 0.0
    assert seconds_to_full(0, 0, 0.0) == -1.0  # nothing known yet


def test_one_burst_is_forgotten_once_it_leaves_the_window() -> None:
    """A decaying average halves on every poll and never says "not filling";
    the window forgets the burst when it is older than the window."""
    f = FillRate()
    f.add(0.0, GIB, 2 * GIB, BLOCK)
    f.add(0.2, GIB - (64 << 20), 2 * GIB, BLOCK)
    assert f.rate > 0
    t = 0.2
    while t < RATE_WINDOW + 0.5:
        t += 0.2
        f.add(t, GIB - (64 << 20), 2 * GIB, BLOCK)
    assert f.rate == 0.0


def test_a_poll_slower_than_the_window_still_gives_the_rate_of_its_interval() -> None:
    f = FillRate()
    f.add(0.0, GIB, 2 * GIB, BLOCK)
    f.add(30.0, GIB - 30 * (1 << 20), 2 * GIB, BLOCK)
    assert f.rate == 1 << 20


def test_a_resized_file_system_starts_afresh() -> None:
    f = FillRate()
    f.add(0.0, GIB, 2 * GIB, BLOCK)
    f.add(1.0, GIB - (1 << 20), 2 * GIB, BLOCK)
    f.add(2.0, 3 * GIB, 4 * GIB, BLOCK)  # grown: 2 GiB more available is no freeing
    assert f.rate == 0.0


def test_time_that_does_not_move_changes_nothing() -> None:
    f = FillRate()
    f.add(1.0, GIB, 2 * GIB, BLOCK)
    f.add(2.0, GIB - (1 << 20), 2 * GIB, BLOCK)
    assert f.add(2.0, 0, 2 * GIB, BLOCK) == 1 << 20


def test_the_next_sample_is_planned_by_the_newest_interval_when_it_is_faster() -> None:
    """A fill that has just begun shows in the fit only gradually; planning the
    next sample by the fit alone would let a level pass before it."""
    f = FillRate()
    for t in range(5):
        f.add(float(t), GIB, 2 * GIB, BLOCK)
    f.add(5.0, GIB - (100 << 20), 2 * GIB, BLOCK)
    assert f.newest == 100 << 20 and f.rate < f.newest
    assert f.urgent == f.newest
    f.add(6.0, GIB - (100 << 20), 2 * GIB, BLOCK)  # stopped: the fit still remembers
    assert f.newest == 0.0 and f.urgent == f.rate > 0
