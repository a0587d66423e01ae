"""Fill rate: how fast available space goes, estimated over a window. Pure.

Why a window: the rate between two samples is noise. Some file systems move
their free-space figures in steps (statvfs on btrfs moves when writeback
allocates, seconds apart; NFS when attributes are refreshed), so at a fast
poll most intervals show nothing and one shows a jump: an average that
weighs the newest interval swings by orders of magnitude under a steady
write, and a decaying average after one burst halves on every poll.

How it works: the samples of the last `window` seconds (at least two, so
that a poll interval longer than the window still gives a rate) are fitted
with a least-squares line; the rate is minus its slope. Steps shorter than
the window average out: a staircase is a line plus a bounded sawtooth, and
the sawtooth moves the slope by at most a few step heights over the window.
A fitted change over the window of two blocks or less is no change at all
(a file system whose figure wobbles within a block is not filling, and a
least-squares line through a wobble can tilt by twice its amplitude), and a
change of size (a grown or shrunk file system) starts the window afresh.

What is published is the windowed rate; when to sample next is asked of
`urgent`, the larger of it and the newest interval's rate: a fill that has
just begun takes a window to show fully in the fit, and sampling sooner than
needed costs one statvfs, where sampling late lets a level pass unseen.
"""

from __future__ import annotations

from collections import deque

RATE_WINDOW = 5.0  # seconds of samples in the estimate
MAX_SAMPLES = 256  # bound per file system, whatever the poll interval


class FillRate:
    def __init__(self, window: float = RATE_WINDOW, max_samples: int = MAX_SAMPLES) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque(maxlen=max_samples)
        self._size = -1
        self.rate = 0.0  # bytes per second; negative while space is being freed
        self.newest = 0.0  # the rate of the newest interval alone

    def add(self, now: float, available: int, size: int, block_size: int) -> float:
        """One sample; returns the new rate."""
        s = self._samples
        if size != self._size:
            s.clear()
            self._size = size
            self.newest = 0.0
        if s and now <= s[-1][0]:
            return self.rate  # no time has passed: nothing to learn
        if s:
            t, a = s[-1]
            moved = a - available
            self.newest = moved / (now - t) if abs(moved) > 2 * block_size else 0.0
        s.append((now, available))
        # Keep the shortest run of newest samples that spans the window.
        while len(s) > 2 and s[1][0] <= now - self.window:
            s.popleft()
        self.rate = _rate(s, max(1, block_size))
        return self.rate


    @property
    def urgent(self) -> float:
        """The rate to plan the next sample by."""
        return max(self.rate, self.newest)


def _rate(samples: deque[tuple[float, int]], block_size: int) -> float:
    n = len(samples)
    if n < 2:
        return 0.0
    t0, a0 = samples[0]
    mean_t = sum(t - t0 for t, _ in samples) / n
    mean_a = sum(a - a0 for _, a in samples) / n
    sxx = sxy = 0.0
    for t, a in samples:
        dt = t - t0 - mean_t
        sxx += dt * dt
        sxy += dt * (a - a0 - mean_a)
    if sxx <= 0:
        return 0.0
    slope = sxy / sxx
    span = samples[-1][0] - t0
    if abs(slope) * span <= 2 * block_size:
        return 0.0
    return -slope


def seconds_to_full(available: int, size: int, rate: float) -> float:
    """0 once full; -1 when not filling (flat or freeing)."""
    if available <= 0 and size > 0:
        return 0.0
    return available / rate if rate > 0 else -1.0
