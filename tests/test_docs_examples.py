"""docs/dbus.md's client examples, run as printed against the real daemon on
a private bus (given to them as the system bus): the dbus-fast one and the
GLib one (python3-gi, the distribution's Python) both see a threshold event."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clients import Client

pytestmark = [pytest.mark.root]
DOC = (Path(__file__).resolve().parent.parent / "docs" / "dbus.md").read_text()


def example(heading: str) -> str:
    after = DOC[DOC.index(heading):]
    m = re.search(r"```python\n(.*?)```", after, re.S)
    assert m is not None, heading
    return m.group(1)


@pytest.mark.parametrize(("heading", "python"), [
    ("### From Python (dbus-fast)", sys.executable),
    ("### From a GLib application (python3-gi)", "/usr/bin/python3"),
])
def test_the_documented_client_sees_a_threshold_event(served: tuple[str, Path], heading: str,
                                                      python: str, tmp_path: Path) -> None:
    bus, t = served
    if python == "/usr/bin/python3" and subprocess.run(
            [python, "-c", "import gi"], capture_output=True).returncode != 0:
        pytest.fail("python3-gi is missing: scripts/setup installs it")
    script = tmp_path / "client.py"
    script.write_text(example(heading))
    client = Client([python, "-u", str(script)], bus)
    try:
        # It is following once it has listed what is there.
        listed = "mounts at generation" if "dbus-fast" in heading else str(t)
        client.expect(lambda s: listed in s)
        (t / "a").write_bytes(b"x" * (6 << 20))  # 40% left: the 50% level is reached
        line = client.expect(lambda s: "threshold" in s)
        assert "thr" in line and "reached" in line
    finally:
        client.close()
