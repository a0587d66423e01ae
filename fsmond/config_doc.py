"""Every configuration key with its type, default and meaning: fsmond.toml(5)
is rendered from this. tests/test_manpages.py holds it to what config.py and
config_mqtt.py take (no key missing, none invented) and each default to the
built-in one, so the page cannot drift from the code."""

from __future__ import annotations

# (table, key, type, default as TOML, or None when there is none, meaning)
KEYS: tuple[tuple[str, str, str, str | None, str], ...] = (
    ("daemon", "poll_interval", "duration", '"5s"',
     "statvfs of every watched file system this often."),
    ("daemon", "min_poll_interval", "duration", '"100ms"',
     "Sooner, down to this, when the fill rate predicts a level crossing before the next "
     "poll. At most poll_interval."),
    ("daemon", "statvfs_timeout", "duration", '"2s"',
     "A file system whose statvfs takes longer is reported unresponsive and retried with "
     "back-off; no other file system waits for it."),
    ("daemon", "mount_backend", "string", '"auto"',
     "How mount changes are learnt: auto, fanotify (fanotify mount marks and statmount, "
     "Linux 6.15 or later) or mountinfo (/proc/self/mountinfo, re-read on POLLPRI)."),
    ("daemon", "mount_namespace", "string", '""',
     'Whose mounts: "" is fsmond\'s own namespace (right under the systemd unit, which '
     'receives every host mount); a namespace file such as "/proc/1/ns/mnt" follows that '
     "namespace (needs CAP_SYS_PTRACE)."),
    ("daemon", "enospc_trace", "string", '"at-risk"',
     "Name the writers whose system calls fail with ENOSPC or EDQUOT, from a tracefs "
     "instance of fsmond's own filtered in the kernel: at-risk arms it only while a "
     "watched file system has a level reached or is full (an armed trace slows every "
     "system call a little), always keeps it armed (EDQUOT needs it), off makes none."),
    ("daemon", "kmsg", "boolean", "true",
     "Read kernel messages from /dev/kmsg for errors and forced read-only (needs "
     "CAP_SYSLOG)."),
    ("daemon", "kmsg_replay", "boolean", "false",
     "Also read the messages since boot at start; their events are marked replayed."),
    ("daemon", "fanotify_errors", "boolean", "true",
     "FAN_FS_ERROR marks on file systems on a block device (Linux 5.16 or later)."),
    ("daemon", "udev", "boolean", "true",
     "Block-device events from the kernel (works without systemd-udevd)."),
    ("daemon", "log_level", "string", '"info"',
     "debug, info, warning or error; fsmond --log-level overrides it."),
    ("daemon", "changelog_size", "integer", "4096",
     "Mount changes kept for GetChangesSince (16 to 10000000)."),
    ("dbus", "enabled", "boolean", "true", "Publish on D-Bus; fsmond --no-dbus overrides it."),
    ("dbus", "bus", "string", '"system"',
     'system, session or a bus address ("unix:path=..."); fsmond --bus overrides it.'),
    ("mqtt", "enabled", "boolean", "false", "Publish events and state to an MQTT broker too."),
    ("mqtt", "url", "string", '"mqtt://localhost:1883"',
     "The broker: mqtt://host:port, or mqtts://host:port for TLS (port 8883 by default). "
     "No credentials in it."),
    ("mqtt", "client_id", "string", '""', 'The MQTT client id; "" is fsmond-<hostname>.'),
    ("mqtt", "username", "string", '""', "The user name, if the broker wants one."),
    ("mqtt", "password", "string", None,
     "The password (never logged); password_file keeps it out of this file. Not both."),
    ("mqtt", "password_file", "string", None,
     "A file holding the password (trailing newlines removed)."),
    ("mqtt", "prefix", "string", '"fsmond"', "Topics are <prefix>/<hostname>/..."),
    ("mqtt", "qos", "integer", "1", "QoS of the events (0, 1 or 2)."),
    ("mqtt", "ca_file", "string", '""', "CA certificates for mqtts:// (\"\": the system's)."),
    ("mqtt", "cert_file", "string", '""', "A client certificate for mqtts://."),
    ("mqtt", "key_file", "string", '""', "The client certificate's key."),
    ("mqtt", "tls_insecure", "boolean", "false",
     "true skips the check of the broker certificate's host name."),
    ("mqtt", "keepalive", "duration", '"60s"', "MQTT keepalive."),
    ("mqtt", "queue_size", "integer", "10000",
     "Events kept while the broker is away; the oldest are dropped and counted "
     "(GetStatus mqtt_dropped)."),
    ("mqtt", "reconnect_max", "duration", '"60s"',
     "Reconnects back off exponentially, with jitter, up to this."),
    ("mqtt", "discovery", "boolean", "false", "Home Assistant MQTT discovery."),
    ("mqtt", "discovery_prefix", "string", '"homeassistant"',
     "Home Assistant's discovery prefix."),
    ("defaults", "classes", "list of strings", '["info", "warn", "err", "thr"]',
     "The event classes published: info (mounts, watches), warn (no space, no inodes, "
     "unresponsive), err (errors, forced read-only), thr (levels)."),
    ("defaults", "lower", "level", '"10%"',
     "First warning: a thr event when available space falls to this."),
    ("defaults", "upper", "level", '"5%"',
     "Critical: must leave less room than lower, or the file is refused."),
    ("defaults", "hysteresis", "level", '"1%"',
     "A level is cleared only when available space rises this far above it."),
    ("defaults", "inodes_lower", "level", '"5%"',
     "As lower, for inodes (a percentage or a number of inodes)."),
    ("defaults", "inodes_upper", "level", '"1%"', "As upper, for inodes."),
    ("defaults", "ignore_fstypes", "list of strings", "[]",
     "File-system types not watched, added to the built-in list of pseudo and read-only "
     "media types."),
    ("defaults", "include_fstypes", "list of strings", "[]",
     "Types removed from that list, to be watched after all (never autofs: fsmond must not "
     "trigger automounts)."),
    ("watch", "path", "string", None,
     'A mount point, or a glob whose "*" matches within one path level ("/srv/*" is '
     '"/srv/a", not "/srv/a/b"). Required.'),
    ("watch", "classes", "list of strings", None, "As in [defaults], for this watch."),
    ("watch", "lower", "level", None, "As in [defaults]."),
    ("watch", "upper", "level", None, "As in [defaults]."),
    ("watch", "hysteresis", "level", None, "As in [defaults]."),
    ("watch", "inodes_lower", "level", None, "As in [defaults]."),
    ("watch", "inodes_upper", "level", None, "As in [defaults]."),
)

TABLES = {
    "daemon": "The daemon: how it samples and which sources it reads.",
    "dbus": "The D-Bus service (org.fsmond.FsMon1).",
    "mqtt": "The optional MQTT publisher: events under <prefix>/<hostname>/event/<class>/"
            "<name>, retained state under .../fs/<major>_<minor>/state, status online/offline.",
    "defaults": "What every watch gets unless it says otherwise.",
    "watch": "[[watch]], an array of tables. With none, every file system that is not "
             "ignored is watched with [defaults]; with some, only what they match, the "
             "first match winning. A watch's keys not given come from [defaults].",
}

TYPES = (
    ("duration", '"100ms", "5s", "2m", "1h", or a number of seconds.'),
    ("level", 'A percentage of the size ("10%"), a byte size ("500MB", powers of 1000; '
              '"5GiB", powers of 1024), or a bare number of blocks ("2048" or 2048, in '
              "units of the file system's fragment size, as in the RFC). Inode levels take "
              "a percentage or a number of inodes."),
)
