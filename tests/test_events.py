"""The event shapes shared by every publisher."""

from __future__ import annotations

import datetime as dt

from hypothesis import example, given
from hypothesis import strategies as st

from fsmond.events import format_time


@given(st.floats(0, 2 ** 34))
@example(1764409799.9999996)  # rounds up into the next second
@example(1764409799.0000004)
def test_format_time_is_what_datetime_says(t: float) -> None:
    want = dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
    assert format_time(t) == want
