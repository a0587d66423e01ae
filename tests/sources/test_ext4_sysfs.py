"""Errors recorded by ext4 before start, read from sysfs after a real error."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fsmond.sources.ext4_sysfs import error_history_for, format_last_error
from tests.running import loop_ext4


def test_format() -> None:
    assert format_last_error(0, "", 0, "0") == ""
    assert format_last_error(0, "ext4_lookup", 12, "EUCLEAN") == (
        "ext4_lookup:12 at 1970-01-01T00:00:00Z (EUCLEAN)")


@pytest.mark.root
def test_history_after_a_real_error(tmp_path: Path) -> None:
    with loop_ext4(tmp_path / "img", tmp_path / "m") as (m, loop):
        st = os.stat(m)
        dev = (os.major(st.st_dev), os.minor(st.st_dev))
        before = error_history_for(dev)
        assert before is not None and before.count == 0
        Path(f"/sys/fs/ext4/{loop}/trigger_fs_error").write_text("history\n")
        # ext4 records the error in its superblock from a work item: wait for it.
        deadline = time.monotonic() + 10
        while (after := error_history_for(dev)) is not None and after.count == 0:
            assert time.monotonic() < deadline, "errors_count never moved"
            time.sleep(0.01)
    assert after is not None and after.count == 1
    assert after.last_error.startswith("trigger_test_error:")
    assert error_history_for((7, 250)) is None
