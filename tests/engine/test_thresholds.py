"""The hysteresis state machine: examples from SPEC section 4, then properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsmond.engine.thresholds import Crossing, Levels, Threshold, step
from fsmond.errors import TransitionError

LV = Levels(lower=100, upper=50, hysteresis=10)


def run(samples: list[int], levels: Levels = LV) -> list[tuple[str, str]]:
    t = Threshold(levels)
    out: list[tuple[str, str]] = []
    for a in samples:
        out += [(c.level, c.state) for c in t.sample(a)]
    return out


def test_falling_then_rising_one_level_at_a_time() -> None:
    assert run([200, 100, 80, 50, 40, 60, 61, 100, 111]) == [
        ("lower", "reached"),
        ("upper", "reached"),
        ("upper", "cleared"),
        ("lower", "cleared"),
    ]


def test_reached_at_exactly_the_level_cleared_only_past_hysteresis() -> None:
    assert run([101, 100]) == [("lower", "reached")]
    assert run([100, 110]) == [("lower", "reached")]
    assert run([100, 111]) == [("lower", "reached"), ("lower", "cleared")]


def test_wobbling_around_a_level_fires_once() -> None:
    assert run([101, 99, 105, 98, 110, 95, 100]) == [("lower", "reached")]


def test_one_jump_past_both_levels_reports_both_in_order() -> None:
    assert run([1000, 0, 1000]) == [
        ("lower", "reached"),
        ("upper", "reached"),
        ("upper", "cleared"),
        ("lower", "cleared"),
    ]


def test_start_below_a_level_reports_reached_once() -> None:
    assert run([30, 30, 30]) == [("lower", "reached"), ("upper", "reached")]
    assert run([70, 70]) == [("lower", "reached")]
    assert run([500]) == []


def test_changing_levels_reevaluates_from_the_current_state() -> None:
    t = Threshold(LV)
    assert t.sample(90) == (Crossing("lower", "reached"),)
    t.levels = Levels(lower=50, upper=20, hysteresis=5)
    assert t.sample(90) == (Crossing("lower", "cleared"),)


def test_bad_levels_and_states_raise() -> None:
    with pytest.raises(TransitionError):
        Levels(lower=40, upper=50, hysteresis=1)
    with pytest.raises(TransitionError):
        Levels(lower=10, upper=-1, hysteresis=1)
    with pytest.raises(TransitionError):
        step("bogus", 1, LV)
    with pytest.raises(TransitionError):
        Threshold(LV, state="bogus")


levels_st = st.builds(
    lambda upper, gap, hyst: Levels(lower=upper + gap, upper=upper, hysteresis=hyst),
    st.integers(0, 1000),
    st.integers(0, 1000),
    st.integers(0, 300),
)


@given(levels_st, st.lists(st.integers(0, 3000), max_size=60))
def test_no_crossing_is_ever_skipped_or_repeated(levels: Levels, samples: list[int]) -> None:
    """Per level: reached/cleared alternate starting with reached; each fires only
    when its condition holds; after every sample a level at or below which the
    value sits is reached, and one the value is clear of (past hysteresis) is
    cleared. Together: nothing skipped, nothing repeated."""
    t = Threshold(levels)
    reached = {"lower": False, "upper": False}
    value = {"lower": levels.lower, "upper": levels.upper}
    for a in samples:
        crossings = t.sample(a)
        for c in crossings:
            if c.state == "reached":
                assert not reached[c.level], "reached repeated"
                assert a <= value[c.level]
                reached[c.level] = True
            else:
                assert reached[c.level], "cleared before reached"
                assert a > value[c.level] + levels.hysteresis
                reached[c.level] = False
        for level in ("lower", "upper"):
            if a <= value[level]:
                assert reached[level], f"{level} skipped at {a}"
            if a > value[level] + levels.hysteresis:
                assert not reached[level], f"{level} clear skipped at {a}"
        # upper reached implies lower reached; the state names the deepest reached level
        assert not reached["upper"] or reached["lower"]
        expected = "upper" if reached["upper"] else "lower" if reached["lower"] else "ok"
        assert t.state == expected


@given(levels_st, st.lists(st.integers(0, 3000), max_size=40))
def test_order_within_one_sample(levels: Levels, samples: list[int]) -> None:
    t = Threshold(levels)
    for a in samples:
        crossings = t.sample(a)
        if len(crossings) == 2:
            if crossings[0].state == "reached":
                assert [c.level for c in crossings] == ["lower", "upper"]
            else:
                assert [c.level for c in crossings] == ["upper", "lower"]
            assert crossings[0].state == crossings[1].state
