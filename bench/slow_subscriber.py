"""A subscriber that matches every signal fsmond sends but reads slowly, or not
at all, during a storm (issue 22): what a stuck desktop app does to the bus,
to fsmond and to the other subscribers.

The subscriber is `gdbus monitor --dest org.fsmond.FsMon1` (an ordinary
match on fsmond's signals, not a bus monitor), writing to a file. `stopped`
stops it (SIGSTOP) for the whole storm, `slow` lets it run 0.1 s of each
second; either way it is let go at the end and given time to read what the
bus kept for it. Then: is it still connected (the bus still knows its
name), and how many of fsmond's signals it got.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

MODES = ("stopped", "slow")
SLOW_RUN = 0.1  # seconds of each second that a `slow` subscriber runs


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM) so far, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class SlowSubscriber:
    def __init__(self, address: str, mode: str) -> None:
        self.address = address
        self.mode = mode
        self.out = Path(tempfile.mkstemp(prefix="fsmond-slow-subscriber-")[1])
        with open(self.out, "w") as f:
            self.proc = subprocess.Popen(["gdbus", "monitor", "--address", address,
                                          "--dest", "org.fsmond.FsMon1"],
                                         stdout=f, stderr=subprocess.STDOUT)
        self.name = ""
        end = time.monotonic() + 10
        while time.monotonic() < end and "Monitoring" not in self.out.read_text():
            time.sleep(0.05)  # gdbus has added its match
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self) -> None:
        """From now on, read slowly or not at all."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        if self.mode == "slow":
            self._thread = threading.Thread(target=self._duty, daemon=True)
            self._thread.start()

    def _duty(self) -> None:
        while not self._stop.is_set():
            os.kill(self.proc.pid, signal.SIGCONT)
            time.sleep(SLOW_RUN)
            os.kill(self.proc.pid, signal.SIGSTOP)
            self._stop.wait(1 - SLOW_RUN)

    def resume(self) -> None:
        """Read at full speed again."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        os.kill(self.proc.pid, signal.SIGCONT)

    def release(self, drain: float = 10.0) -> tuple[bool, int]:
        """Let it read again; once it has read all (or after `drain` seconds):
        (still connected, fsmond's signals it received)."""
        self.resume()
        before = -1
        for _ in range(int(drain * 2)):  # until it has read everything
            time.sleep(0.5)
            now = self.out.stat().st_size
            if now == before:
                break
            before = now
        alive = self.proc.poll() is None and self._connected()
        received = sum(1 for line in self.out.read_text(errors="replace").splitlines()
                       if line.startswith("/org/fsmond/FsMon1"))
        return alive, received

    def _connected(self) -> bool:
        """The bus still has a connection of this process's."""
        out = subprocess.run(["busctl", f"--address={self.address}", "list", "--no-legend"],
                             capture_output=True, text=True).stdout
        return any(line.split()[1:2] == [str(self.proc.pid)] for line in out.splitlines()
                   if line.startswith(":"))

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.terminate()
        self.proc.wait(10)
        self.out.unlink(missing_ok=True)
