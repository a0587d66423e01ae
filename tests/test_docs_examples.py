"""docs/dbus.md's client examples, run as printed against the real daemon on
a private bus (given to them as the system bus): the dbus-fast one and the
GLib one (python3-gi, the distribution's Python) both see a threshold event."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root]
DOC = (Path(__file__).resolve().parent.parent / "docs" / "dbus.md").read_text()


def example(heading: str) -> str:
    after = DOC[DOC.index(heading):]
    m = re.search(r"```python\n(.*?)```", after, re.S)
    assert m is not None, heading
    return m.group(1)


def lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    out: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.put(line)

    threading.Thread(target=read, daemon=True).start()
    return out


def wait_for(lines: queue.Queue[str], text: str, proc: subprocess.Popen[str]) -> str:
    seen = []
    while True:
        try:
            line = lines.get(timeout=30)
        except queue.Empty:
            proc.kill()
            raise AssertionError(f"{text!r} not seen; got {seen}; stderr: "
                                 f"{proc.stderr.read() if proc.stderr else ''}") from None
        if text in line:
            return line
        seen.append(line)


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
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus}
    env.pop("PYTHONPATH", None)
    proc = subprocess.Popen([python, "-u", str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = lines_of(proc)
        # It is following once it has listed what is there.
        wait_for(lines, "mounts at generation" if "dbus-fast" in heading else str(t), proc)
        (t / "a").write_bytes(b"x" * (6 << 20))  # 40% left: the 50% level is reached
        line = wait_for(lines, "threshold", proc)
        assert "thr" in line and "reached" in line
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
