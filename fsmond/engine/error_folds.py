"""Kernel error reports of one file system, folded into `error` events. Pure.

How it works. A failing disk or a corrupt tree read in a loop reports an
error for every access: one event each would flood every subscriber, yet
the first error must not wait, as it is the news. So the first report of a
window is published at once; later ones within FOLD_WINDOW only add to a
count that `flush` publishes when the window ends.

kmsg and fanotify usually both report one ext4 error: a window counts per
source and owes the larger of the counts, so one error is one event, not
two. A report that `follows` another (jbd2 aborting the journal because of
the ext4 error just reported) is that error again, so it adds nothing while
that error's window is open.

What an event says (text, errno, function) is one kernel report's, as fields
of different errors side by side would describe none of them: a later line
replaces an earlier one whole; only a textless report (fanotify's errno and
count of the same errors) fills in what a line lacks. fanotify's report of
an error is read just before kmsg's (the daemon reads kmsg after each
fanotify batch), so a textless first report is held up to `merge_wait` for
the text, to make one event of the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fsmond.events import KernelReport, record

FOLD_WINDOW = 1.0  # seconds: a kernel error storm becomes one event per this
MERGE_WAIT = 0.05  # seconds a fanotify error waits for kmsg's text of the same error


@record
class FoldedError:
    """What one `error` event says: one report's fields and the errors it counts."""

    report: KernelReport
    count: int
    sources: tuple[str, ...]

    def details(self) -> dict[str, Any]:
        r = self.report
        return {"errno": r.errno, "count": self.count, "function": r.function,
                "message": r.message, "source": r.source, "replayed": r.replayed,
                "sources": list(self.sources)}


@dataclass(slots=True)
class _Window:
    start: float
    by_source: dict[str, int]
    last: KernelReport
    emitted: int = 0  # errors already published from this window
    hold_until: float | None = None  # a report without text, waiting for kmsg's
    textless: KernelReport | None = None  # fanotify's view of this window's errors

    @property
    def total(self) -> int:
        return max(self.by_source.values())

    def take(self) -> FoldedError:
        count, self.emitted = self.total - self.emitted, self.total
        return FoldedError(self.last, count, tuple(sorted(self.by_source)))


class ErrorFolds:
    """The error window of one file system, open while errors keep coming."""

    __slots__ = ("_window",)

    def __init__(self) -> None:
        self._window: _Window | None = None

    def add(self, r: KernelReport, now: float, merge_wait: float) -> FoldedError | None:
        """Call `flush` first. The error to publish now, or None: counted or held."""
        w = self._window
        if w is None:
            w = self._window = _Window(now, {r.source: r.count}, r,
                                       textless=None if r.message else r)
            if not r.message and merge_wait > 0:
                w.hold_until = now + merge_wait  # for kmsg's text (header)
                return None
            return w.take()
        if r.follows:
            return None  # the error it follows is already counted
        w.by_source[r.source] = w.by_source.get(r.source, 0) + r.count
        if not r.message:
            w.textless = r
            w.last = _merge(w.last, r)
        else:  # a line of its own: its text, errno and function go together
            w.last = _merge(r, w.textless) if w.textless is not None else r
        if w.hold_until is not None and w.last.message:
            w.hold_until = None
            return w.take()
        return None

    def flush(self, now: float) -> list[FoldedError]:
        """A held error whose text did not come, or what a finished window owes."""
        w = self._window
        if w is None:
            return []
        if w.hold_until is not None and now >= w.hold_until:
            w.hold_until = None
            return [w.take()]
        if now < w.start + FOLD_WINDOW:
            return []
        self._window = None
        if w.total == w.emitted:
            return []
        return [w.take()]

    def deadline(self) -> float | None:
        w = self._window
        if w is None:
            return None
        return w.hold_until if w.hold_until is not None else w.start + FOLD_WINDOW


def _merge(primary: KernelReport, other: KernelReport) -> KernelReport:
    """One error seen by two sources: keep the text of one and fill gaps from the other."""
    return KernelReport(
        kind=primary.kind, source=primary.source, device=primary.device,
        devname=primary.devname or other.devname, errno=primary.errno or other.errno,
        count=primary.count, function=primary.function or other.function,
        message=primary.message or other.message, pid=primary.pid or other.pid,
        comm=primary.comm or other.comm, replayed=primary.replayed,
    )
