"""Log lines for journald: sd-daemon(3) priority prefixes on the journal's own stream."""

from __future__ import annotations

import logging
import os
import sys

from fsmond.publishers.console import JournalFormatter, to_the_journal


def test_only_the_stream_journal_stream_names_is_the_journal() -> None:
    r, w = os.pipe()
    try:
        with os.fdopen(w, "w") as stream:
            st = os.fstat(w)
            assert to_the_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
            assert not to_the_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
            assert not to_the_journal(stream, {})
    finally:
        os.close(r)


def record(level: int, msg: str, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            info = sys.exc_info()
    return logging.LogRecord("fsmond.daemon", level, __file__, 1, msg, None, info)


def test_every_line_carries_its_records_priority() -> None:
    f = JournalFormatter("%(name)s: %(message)s")
    assert f.format(record(logging.DEBUG, "d")) == "<7>fsmond.daemon: d"
    assert f.format(record(logging.INFO, "i")) == "<6>fsmond.daemon: i"
    assert f.format(record(logging.WARNING, "w")) == "<4>fsmond.daemon: w"
    assert f.format(record(logging.ERROR, "e")) == "<3>fsmond.daemon: e"
    assert f.format(record(logging.CRITICAL, "c")) == "<2>fsmond.daemon: c"
    lines = f.format(record(logging.ERROR, "two\nlines", exc=True)).split("\n")
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ValueError: boom"
