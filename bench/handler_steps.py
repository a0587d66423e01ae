"""fsmond with its FAN_FS_ERROR handler's Python steps counted (error_latency --steps).

    handler_steps.py OUT [fsmond's arguments]

Runs the real daemon (`python -m fsmond`) after wrapping
FsErrorSource._on_readable in a tracer of opcode events, as
`python_steps.py` counts them: per call of the handler, the steps before
fsmond's first write to the bus and in all, and per function over all
calls; written to OUT at exit. The tracer makes the daemon itself several
times slower: latencies taken with it mean nothing.
"""

from __future__ import annotations

import atexit
import collections
import runpy
import statistics
import sys
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent))

from fsmond.sources import fserror


def main() -> None:
    out, sys.argv[1:] = sys.argv[1], sys.argv[2:]
    by_function: collections.Counter[str] = collections.Counter()
    calls: list[tuple[int, int]] = []  # (steps before the first write, steps in all)
    handler = fserror.FsErrorSource._on_readable

    def counted(self: fserror.FsErrorSource) -> None:
        steps, before_write = 0, 0

        def tracer(frame: FrameType, event: str, arg: Any) -> Any:
            nonlocal steps, before_write
            frame.f_trace_opcodes = True
            code = frame.f_code
            if event == "opcode":
                steps += 1
                by_function[f"{Path(code.co_filename).name}:{code.co_qualname}"] += 1
            elif event == "call" and not before_write and code.co_name in ("send", "sendmsg") \
                    and "Socket" in code.co_qualname:
                before_write = steps
            return tracer

        sys.settrace(tracer)
        try:
            handler(self)
        finally:
            sys.settrace(None)
        calls.append((before_write, steps))

    def write() -> None:
        if not calls:
            return
        n = len(calls)
        with open(out, "w") as f:
            f.write(f"calls {n}, median steps before the first write "
                    f"{statistics.median(c[0] for c in calls):.0f}, in all "
                    f"{statistics.median(c[1] for c in calls):.0f} (the first call: "
                    f"{calls[0][0]} / {calls[0][1]})\n")
            for name, count in by_function.most_common(40):
                f.write(f"{count / n:8.0f} {name}\n")

    fserror.FsErrorSource._on_readable = counted  # type: ignore[method-assign]
    atexit.register(write)
    runpy.run_module("fsmond", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
