"""Python steps (bytecode instructions run) per function of the whole fsmond
process, every thread, for a `python -m fsmond` started with this directory
on PYTHONPATH (other Python processes, the bench's own, are left alone):

    STEP_COUNT_OUT=/tmp/steps-1000.tsv PYTHONPATH=$PWD/bench/step_count \\
        .venv/bin/python bench/mount_storm.py --mounts 1000 --without-findmnt
    (again with 3000 and /tmp/steps-3000.tsv, then)
    .venv/bin/python bench/step_count/per_change.py /tmp/steps-1000.tsv 1000 \\
        /tmp/steps-3000.tsv 3000

Two storms' difference is the steps of one mount and its unmount along the
daemon's whole path, start-up and idle work cancelled out: what
python_steps.py counts piece by piece, with the plumbing between the pieces.
The tracer makes fsmond many times slower; only the counts mean anything.
Written as `steps<TAB>file<TAB>function` lines when fsmond exits (it exits
cleanly on SIGTERM, as the benches stop it).
"""

import atexit
import collections
import os
import sys
import threading

_OUT = os.environ.get("STEP_COUNT_OUT")


def _is_fsmond() -> bool:
    with open("/proc/self/cmdline", "rb") as f:  # sys.argv is not set yet here
        args = f.read().split(b"\0")
    return b"-m" in args and b"fsmond" in args


if _OUT and _is_fsmond():
    _counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def _tracer(frame, event, arg):  # type: ignore[no-untyped-def]
        frame.f_trace_opcodes = True
        if event == "opcode":
            _counts[frame.f_code.co_filename, frame.f_code.co_qualname] += 1
        return _tracer

    def _write() -> None:
        sys.settrace(None)
        with open(_OUT, "w") as f:
            for (filename, function), n in _counts.most_common():
                f.write(f"{n}\t{filename}\t{function}\n")

    sys.settrace(_tracer)
    threading.settrace(_tracer)
    atexit.register(_write)
