"""A client of fsmond's bus run as a process, as a user runs one: the bus is
given to it as the system bus, and it does not see the tests' PYTHONPATH
(fsmonctl runs from the repository as its `cwd`). It prints lines; a test
waits for the one it expects, with a timeout."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Client:
    """A client process that prints lines; `expect` waits for one."""

    def __init__(self, cmd: list[str], bus: str, cwd: Path | None = None) -> None:
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus}
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, cwd=cwd)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, pred: Callable[[str], bool], timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"not seen; got {self.seen[-20:]}; stderr: {err}") from None
            self.seen.append(line)
            if pred(line):
                return line

    def report(self) -> dict[str, Any]:
        """What bench/glib_objects.py counted so far (it reports on SIGUSR1)."""
        self.proc.send_signal(signal.SIGUSR1)
        return dict(json.loads(self.expect(lambda s: s.startswith("report "))[7:]))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
