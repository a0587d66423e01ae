"""A GLib app that follows the mount table itself, as GIO's own users do:
GUnixMountMonitor, and g_unix_mounts_get on each `mounts-changed`. Run with
the distribution's python3 (python3-gi). Prints `ready`, and on SIGUSR1 one
line `report <changes seen> <mounts last read>`; SIGTERM ends it.

    /usr/bin/python3 bench/glib_mounts.py
"""

import signal

import gi

gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

seen = [0, 0]


def on_changed(monitor):  # type: ignore[no-untyped-def]
    mounts, _time = Gio.unix_mounts_get()
    seen[0] += 1
    seen[1] = len(mounts)


def report():  # type: ignore[no-untyped-def]
    print("report", *seen, flush=True)
    return GLib.SOURCE_CONTINUE


monitor = Gio.UnixMountMonitor.get()
monitor.connect("mounts-changed", on_changed)
loop = GLib.MainLoop()
GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR1, report)
GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, lambda: loop.quit() or False)
print("ready", flush=True)
loop.run()
