"""What the introspection XML says about each member: a DocString
(org.gtk.GDBus.DocString, which gdbus-codegen and d-feet show) and the names
of the arguments that dbus-fast cannot take from Python (return values and
signal arguments). docs/dbus.md is the long form; a test holds the two in
step, so a member added here without its documentation fails.
"""

from __future__ import annotations

from typing import Any

DOCSTRING = "org.gtk.GDBus.DocString"

# member -> (doc, names of the out arguments / signal arguments)
MANAGER: dict[str, tuple[str, tuple[str, ...]]] = {
    "": ("fsmond's root object: queries on the mount table and the watches, "
         "the privileged controls (root only), every event and the mount table's "
         "changes as signals. The file systems' ObjectManager is at "
         "/org/fsmond/FsMon1/fs.", ()),
    "GetStatus": ("Version, uptime, backends in use and counters; keys in docs/dbus.md.",
                  ("status",)),
    "ListMounts": ("Every mount of the namespace fsmond follows, with the generation "
                   "the list is of; follow MountsChanged from that generation.",
                   ("generation", "mounts")),
    "GetMount": ("The mount whose mount point is path (the topmost one); "
                 "org.fsmond.FsMon1.Error.NotFound if nothing is mounted there.", ("mount",)),
    "GetChangesSince": ("Mount-table changes after generation, oldest first. complete "
                        "is false when the bounded log no longer reaches back: call "
                        "ListMounts again.", ("generation", "complete", "changes")),
    "ListWatches": ("One entry per watched file system: what it is watched for.",
                    ("watches",)),
    "AddWatch": ("Root only. Watch mount_point (or a glob, as a [[watch]] path) for "
                 "classes with levels lower and upper ('' keeps the default); checked "
                 "as the configuration file is. Returns the file system's object, or / "
                 "for a glob or a path not mounted yet.", ("fs",)),
    "RemoveWatch": ("Root only. Stop watching mount_point; kept across Reload, "
                    "forgotten at a restart.", ()),
    "Reload": ("Root only. Re-read the configuration file (as SIGHUP does); a broken "
               "file is org.fsmond.FsMon1.Error.ConfigError and the old one stays.", ()),
    "Version": ("fsmond's version.", ()),
    "Generation": ("The mount table's generation: it grows by one per mount change.", ()),
    "Event": ("Every event, whichever file system it is from (fs is / for none).",
              ("fs", "class", "name", "event")),
    "MountsChanged": ("What the mount table did, coalesced (at most one signal every "
                      "100 ms); generation is the one after the last change.",
                      ("generation", "changes")),
}

FILESYSTEM: dict[str, tuple[str, tuple[str, ...]]] = {
    "": ("One watched file system (a superblock), at .../fs/<major>_<minor>.", ()),
    "Event": ("This file system's own events: not each bind mount's mounted/unmounted, "
              "only its first mount and last unmount (the Manager sends them all).",
              ("class", "name", "event")),
    "Device": ("major:minor of the superblock.", ()),
    "FsType": ("File-system type, with the subtype (fuse.sshfs).", ()),
    "Source": ("The mount source (/dev/sda1, tmpfs).", ()),
    "MountPoints": ("The first 16 mount points of this file system, the one sampled "
                    "first (MountCount says how many; ListMounts lists them all).", ()),
    "MountCount": ("How many mounts this file system has.", ()),
    "Sampled": ("false until statvfs has answered once: until then the space and inode "
                "figures are unknown (0), not zero.", ()),
    "Size": ("Size in bytes.", ()),
    "Available": ("Bytes available to unprivileged writers.", ()),
    "Free": ("Free bytes, the reserved blocks included.", ()),
    "Files": ("Inodes in all.", ()),
    "FilesAvailable": ("Inodes available to unprivileged writers.", ()),
    "PercentAvailable": ("Available as a percentage of Size.", ()),
    "Level": ("Space level reached: ok, lower or upper.", ()),
    "InodeLevel": ("Inode level reached: ok, lower or upper.", ()),
    "ReadOnly": ("The superblock is read-only (forced or mounted so).", ()),
    "Responsive": ("false while statvfs does not answer within statvfs_timeout.", ()),
    "ErrorCount": ("Errors reported since start (seeded from ext4's record).", ()),
    "LastError": ("The last error's message.", ()),
    "FillRate": ("Bytes per second, negative while freeing.", ()),
    "SecondsToFull": ("Seconds until available space runs out, -1 when not filling.", ()),
    "Classes": ("The event classes watched: info, warn, err, thr.", ()),
    "Lower": ("The lower level as given (10%, 5GiB, or blocks).", ()),
    "Upper": ("The upper level as given.", ()),
}


def document(iface: Any, docs: dict[str, tuple[str, tuple[str, ...]]]) -> Any:
    """Put the DocStrings and argument names on a dbus_fast Interface."""
    iface.annotations[DOCSTRING] = docs[""][0]
    for member in (*iface.methods, *iface.signals, *iface.properties):
        doc, names = docs[member.name]
        member.annotations[DOCSTRING] = doc
        args = getattr(member, "out_args", None)
        if args is None:
            args = getattr(member, "args", [])
        for arg, name in zip(args, names, strict=True):
            arg.name = name
    return iface
