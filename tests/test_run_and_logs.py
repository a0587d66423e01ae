"""What a person running fsmond by hand sees: a missing system bus says what
to do, and `bash scripts/run`'s standard output is the event stream only."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.running import FSMOND, write_config

REPO = Path(__file__).resolve().parent.parent


def test_no_system_bus_is_one_line_that_says_to_try_bus_session(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "f.toml", "[daemon]\nudev = false\nkmsg = false\n")
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/no-bus"}
    r = subprocess.run([*FSMOND, "--config", str(cfg)], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 1
    (line,) = [line for line in r.stderr.splitlines() if "cannot connect" in line]
    assert f"system bus (unix:path={tmp_path}/no-bus)" in line
    assert "--bus session" in line and "--no-dbus" in line


@pytest.mark.root
def test_scripts_run_writes_only_events_to_stdout(tmp_path: Path) -> None:
    """What runs on the private bus besides fsmond (dbus-daemon, and any
    service it activates, here one that prints to its stdout) writes to
    stderr with fsmond's log, never into the JSON lines."""
    services = tmp_path / "xdg" / "dbus-1" / "services"
    services.mkdir(parents=True)
    (services / "org.example.Chatty.service").write_text(
        "[D-BUS Service]\nName=org.example.Chatty\n"
        "Exec=/bin/sh -c 'echo chatty on stdout; exit 1'\n")
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    env["XDG_DATA_DIRS"] = str(tmp_path / "xdg")
    env["FSMOND_PYTHON"] = sys.executable  # this checkout, with the tests' interpreter
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen(["bash", "scripts/run", "--log-level", "info"], cwd=REPO,
                                stdout=o, stderr=e, env=env, start_new_session=True)
        try:
            while " ready: " not in err.read_text():
                assert proc.poll() is None, err.read_text()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.1)
            address = re.search(r"on the session bus (\S+)", err.read_text())
            assert address is not None, err.read_text()
            subprocess.run(["busctl", f"--address={address.group(1)}", "call",
                            "org.example.Chatty", "/", "org.example.Chatty", "Hello"],
                           capture_output=True, timeout=60)  # activates it; it fails
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    lines = out.read_text().splitlines()
    assert lines, "no events on stdout"
    for line in lines:
        json.loads(line)  # every line an event
    assert "chatty on stdout" in err.read_text()
