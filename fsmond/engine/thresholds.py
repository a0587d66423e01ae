"""The upper/lower hysteresis state machine (SPEC section 4), pure.

How it works: per file system and resource (space, inodes) the state is one
of `ok`, `lower` (the lower level is reached) or `upper` (both are reached).
Levels are on *available* bytes (or inodes): `lower` leaves more room than
`upper`. A level is reached when available <= level and cleared only when
available > level + hysteresis, so a value wobbling around a level fires
once. The transitions are a table: for the current state, the first row
whose condition holds gives the crossings to report, in order, and the next
state. One sample that jumps past both levels therefore reports both,
falling lower-then-upper and rising upper-then-lower, and nothing is ever
skipped or repeated. The first sample starts from `ok`, so a file system
that starts below a level reports `reached` once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fsmond.errors import TransitionError

OK, LOWER, UPPER = "ok", "lower", "upper"
STATES = (OK, LOWER, UPPER)


@dataclass(frozen=True, slots=True)
class Levels:
    """Resolved levels in the resource's unit (bytes or inodes)."""

    lower: int
    upper: int
    hysteresis: int

    def __post_init__(self) -> None:
        # The RFC's rule: the first warning must leave more room than the critical
        # one. Equal is allowed here: on a tiny file system two percentages can
        # round to the same count, and the table still orders the two crossings.
        if self.lower < self.upper:
            raise TransitionError(
                f"lower level ({self.lower}) must leave more room than upper ({self.upper})"
            )
        if self.upper < 0 or self.hysteresis < 0:
            raise TransitionError(f"levels must not be negative: {self}")


@dataclass(frozen=True, slots=True)
class Crossing:
    """One level crossed by one sample."""

    level: str  # "lower" | "upper"
    state: str  # "reached" | "cleared"


Condition = Callable[[int, Levels], bool]


def _at_or_below_upper(a: int, lv: Levels) -> bool:
    return a <= lv.upper


def _at_or_below_lower(a: int, lv: Levels) -> bool:
    return a <= lv.lower


def _clear_of_lower(a: int, lv: Levels) -> bool:
    return a > lv.lower + lv.hysteresis


def _clear_of_upper(a: int, lv: Levels) -> bool:
    return a > lv.upper + lv.hysteresis


_REACH_LOWER = Crossing(LOWER, "reached")
_REACH_UPPER = Crossing(UPPER, "reached")
_CLEAR_LOWER = Crossing(LOWER, "cleared")
_CLEAR_UPPER = Crossing(UPPER, "cleared")

# state -> rows of (condition, crossings in order, next state); first match wins,
# no match means no change.
TRANSITIONS: dict[str, tuple[tuple[Condition, tuple[Crossing, ...], str], ...]] = {
    OK: (
        (_at_or_below_upper, (_REACH_LOWER, _REACH_UPPER), UPPER),
        (_at_or_below_lower, (_REACH_LOWER,), LOWER),
    ),
    LOWER: (
        (_at_or_below_upper, (_REACH_UPPER,), UPPER),
        (_clear_of_lower, (_CLEAR_LOWER,), OK),
    ),
    UPPER: (
        (_clear_of_lower, (_CLEAR_UPPER, _CLEAR_LOWER), OK),
        (_clear_of_upper, (_CLEAR_UPPER,), LOWER),
    ),
}


def step(state: str, available: int, levels: Levels) -> tuple[str, tuple[Crossing, ...]]:
    """The next state and the crossings one sample of `available` causes."""
    rows = TRANSITIONS.get(state)
    if rows is None:
        raise TransitionError(f"unknown threshold state {state!r}")
    for condition, crossings, next_state in rows:
        if condition(available, levels):
            return next_state, crossings
    return state, ()


class Threshold:
    """One resource's state: feed it samples, it answers the crossings."""

    __slots__ = ("levels", "state")

    def __init__(self, levels: Levels, state: str = OK) -> None:
        if state not in STATES:
            raise TransitionError(f"unknown threshold state {state!r}")
        self.levels = levels
        self.state = state

    def sample(self, available: int) -> tuple[Crossing, ...]:
        self.state, crossings = step(self.state, available, self.levels)
        return crossings

    def next_level_below(self, available: int) -> int | None:
        """The next level that falling space would reach, for the adaptive sampler."""
        if self.state == OK:
            return self.levels.lower
        if self.state == LOWER:
            return self.levels.upper
        return None
