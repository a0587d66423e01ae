"""A GLib app that follows fsmond's file-system objects the way GNOME apps do:
GDBusObjectManagerClient on the ObjectManager's path, default flags (it
subscribes to every signal under that path), and a handler on every signal
it gets. Run with the distribution's python3 (python3-gi), on the system bus
(DBUS_SYSTEM_BUS_ADDRESS for a private one).

It prints `ready <n>` once it has the objects, `event <path> <class> <name>`
for each object Event, `added <path> <Size> <Sampled> <Responsive>` for
each new object and `changed <path> <property>...` for each
PropertiesChanged. On SIGUSR1 it prints one JSON line of what reached its
connection from fsmond (a filter sees every message the bus delivers, which
is what GLib parses whether a proxy wants it or not): signals by member,
the most MountPoints any carried, and its CPU seconds. SIGTERM ends it.

    DBUS_SYSTEM_BUS_ADDRESS=... /usr/bin/python3 bench/glib_objects.py [PATH]
"""

import json
import os
import signal
import sys
import threading

import gi

gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

NAME = "org.fsmond.FsMon1"
FS = "org.fsmond.FsMon1.FileSystem"
path = sys.argv[1] if len(sys.argv) > 1 else "/org/fsmond/FsMon1/fs"

lock = threading.Lock()
members: dict[str, int] = {}
most_points = [0]
owner = [""]


def on_filter(conn, msg, incoming):  # type: ignore[no-untyped-def]
    # GDBus worker thread: count only, touch nothing of the main loop's.
    if incoming and msg.get_message_type() == Gio.DBusMessageType.SIGNAL \
            and msg.get_sender() == owner[0]:
        with lock:
            member = msg.get_member() or ""
            members[member] = members.get(member, 0) + 1
    return msg


conn = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
owner[0] = conn.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus",
                          "org.freedesktop.DBus", "GetNameOwner", GLib.Variant("(s)", (NAME,)),
                          GLib.VariantType("(s)"), Gio.DBusCallFlags.NONE, -1, None).unpack()[0]
conn.add_filter(on_filter)
manager = Gio.DBusObjectManagerClient.new_sync(
    conn, Gio.DBusObjectManagerClientFlags.NONE, NAME, path, None, None, None)


def show(obj):  # type: ignore[no-untyped-def]
    proxy = obj.get_interface(FS)
    if proxy is None:
        return
    values = [proxy.get_cached_property(k) for k in ("Size", "Sampled", "Responsive")]
    points = proxy.get_cached_property("MountPoints")
    most_points[0] = max(most_points[0], len(points.unpack()) if points else 0)
    print("added", obj.get_object_path(), *(None if v is None else v.unpack() for v in values),
          flush=True)


def on_signal(manager, obj, proxy, sender, name, params):  # type: ignore[no-untyped-def]
    if name == "Event":
        cls, ev_name, _event = params.unpack()
        print("event", obj.get_object_path(), cls, ev_name, flush=True)


def on_properties(manager, obj, proxy, changed, invalidated):  # type: ignore[no-untyped-def]
    values = changed.unpack()
    print("changed", obj.get_object_path(), *sorted(values), flush=True)
    if "MountPoints" in values:
        most_points[0] = max(most_points[0], len(values["MountPoints"]))


def report():  # type: ignore[no-untyped-def]
    t = os.times()
    with lock:
        out = {"members": dict(members), "most_mount_points": most_points[0],
               "cpu": t.user + t.system}
    print("report", json.dumps(out), flush=True)
    return GLib.SOURCE_CONTINUE


manager.connect("object-added", lambda m, obj: show(obj))
manager.connect("interface-proxy-signal", on_signal)
manager.connect("interface-proxy-properties-changed", on_properties)
for o in manager.get_objects():
    show(o)
GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR1, report)
loop = GLib.MainLoop()
GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, lambda: loop.quit() or False)
print("ready", len(manager.get_objects()), flush=True)
loop.run()
