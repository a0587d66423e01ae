"""The configuration: TOML -> frozen, validated dataclasses (SPEC section 7).

How it works: each TOML table is read through a `Table` that takes known
keys one by one, each with its parser and default, and at the end rejects
whatever is left as unknown, with its dotted path. Every error is a
ConfigError of one line: `file: dotted.key = value: reason`. The result is
frozen, so a reload builds a new Config and swaps it whole, or keeps the
old one when the new file is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fsmond.config_mqtt import MqttConfig, parse_mqtt
from fsmond.config_values import (
    Level,
    Table,
    bool_,
    choice,
    int_between,
    leaves_more_room,
    parse_duration,
    parse_level,
    read_config_text,
    root_table,
    show,
    str_,
)
from fsmond.engine.globs import path_matches
from fsmond.errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/fsmond/fsmond.toml"
CLASSES = ("info", "warn", "err", "thr")

# SPEC section 2: pseudo file systems, and read-only media that are always "full".
BUILTIN_IGNORED = frozenset({
    "proc", "sysfs", "cgroup", "cgroup2", "devpts", "devtmpfs", "mqueue", "debugfs",
    "tracefs", "securityfs", "pstore", "bpf", "configfs", "fusectl", "binfmt_misc",
    "hugetlbfs", "nsfs", "rpc_pipefs", "efivarfs", "selinuxfs", "autofs",
    "squashfs", "iso9660", "udf", "erofs",
})

def _str_list(v: object) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError("must be a list of strings")
    return tuple(v)


def _classes(v: object) -> tuple[str, ...]:
    items = _str_list(v)
    bad = [c for c in items if c not in CLASSES]
    if bad or not items or len(set(items)) != len(items):
        raise ValueError("must be a non-empty list of distinct classes from " + ", ".join(CLASSES))
    return items


def _bus(v: object) -> str:
    s = str_(v)
    if s not in ("system", "session") and "=" not in s:
        raise ValueError('must be "system", "session" or a bus address like "unix:path=..."')
    return s


def _namespace(v: object) -> str:
    s = str_(v)
    if s and not (s.startswith("/") and os.path.basename(s) == "mnt"):
        raise ValueError('must be "" (our own) or a namespace file like "/proc/1/ns/mnt"')
    return s


def _inode_level(v: object) -> Level:
    return parse_level(v, allow_bytes=False)


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    poll_interval: float = 5.0
    min_poll_interval: float = 0.1
    statvfs_timeout: float = 2.0
    mount_backend: str = "auto"
    mount_namespace: str = ""
    kmsg: bool = True
    kmsg_replay: bool = False
    fanotify_errors: bool = True
    udev: bool = True
    enospc_trace: str = "at-risk"
    log_level: str = "info"
    changelog_size: int = 4096


@dataclass(frozen=True, slots=True)
class DbusConfig:
    enabled: bool = True
    bus: str = "system"


_PCT10, _PCT5, _PCT1 = (Level("percent", p, f"{p}%") for p in (10, 5, 1))
_NO_MQTT = MqttConfig()


@dataclass(frozen=True, slots=True)
class ResolvedWatch:
    """What applies to one file system: a [[watch]] merged over [defaults]."""

    classes: tuple[str, ...] = CLASSES
    lower: Level = _PCT10
    upper: Level = _PCT5
    hysteresis: Level = _PCT1
    inodes_lower: Level = _PCT5
    inodes_upper: Level = _PCT1


@dataclass(frozen=True, slots=True)
class WatchConfig:
    path: str
    overrides: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class Config:
    daemon: DaemonConfig = DaemonConfig()
    dbus: DbusConfig = DbusConfig()
    mqtt: MqttConfig = _NO_MQTT
    defaults: ResolvedWatch = ResolvedWatch()
    ignore_fstypes: frozenset[str] = BUILTIN_IGNORED
    watches: tuple[WatchConfig, ...] = ()
    _resolved: tuple[tuple[str, ResolvedWatch], ...] = field(default=(), repr=False)

    def watch_for(self, mount_point: str) -> ResolvedWatch | None:
        """With no [[watch]], everything; else the first that matches the path
        (engine/globs.py: a glob's `*` matches within one path component)."""
        if not self._resolved:
            return self.defaults
        for pattern, watch in self._resolved:
            if path_matches(mount_point, pattern):
                return watch
        return None

    def ignored_fstype(self, fstype: str) -> bool:
        return fstype in self.ignore_fstypes or fstype.split(".")[0] in self.ignore_fstypes


_LEVEL_KEYS: dict[str, Callable[[object], Any]] = {
    "classes": _classes,
    "lower": parse_level,
    "upper": parse_level,
    "hysteresis": parse_level,
    "inodes_lower": _inode_level,
    "inodes_upper": _inode_level,
}


def _watch_fields(t: Table, base: ResolvedWatch) -> ResolvedWatch:
    values = {k: t.take(k, p, getattr(base, k)) for k, p in _LEVEL_KEYS.items()}
    for lo, up in (("lower", "upper"), ("inodes_lower", "inodes_upper")):
        if leaves_more_room(values[lo], values[up]) is False:
            raise t.error(lo, str(values[lo]),
                          f"the lower level must leave more room than {t.key(up)} = "
                          f"{show(str(values[up]))}")
    return ResolvedWatch(**values)


def parse_config(text: str, origin: str = "<string>") -> Config:
    root = root_table(text, origin)
    d = Table(root.take("daemon", _table, _EMPTY), "daemon", origin)
    daemon = DaemonConfig(
        poll_interval=d.take("poll_interval", parse_duration, 5.0),
        min_poll_interval=d.take("min_poll_interval", parse_duration, 0.1),
        statvfs_timeout=d.take("statvfs_timeout", parse_duration, 2.0),
        mount_backend=d.take("mount_backend", choice("auto", "fanotify", "mountinfo"), "auto"),
        mount_namespace=d.take("mount_namespace", _namespace, ""),
        kmsg=d.take("kmsg", bool_, True),
        kmsg_replay=d.take("kmsg_replay", bool_, False),
        fanotify_errors=d.take("fanotify_errors", bool_, True),
        udev=d.take("udev", bool_, True),
        enospc_trace=d.take("enospc_trace", choice("at-risk", "always", "off"), "at-risk"),
        log_level=d.take("log_level", choice("debug", "info", "warning", "error"), "info"),
        changelog_size=d.take("changelog_size", int_between(16, 10_000_000), 4096),
    )
    if daemon.min_poll_interval > daemon.poll_interval:
        raise d.error("min_poll_interval", daemon.min_poll_interval,
                      f"must not be more than daemon.poll_interval ({daemon.poll_interval}s)")
    d.finish()
    b = Table(root.take("dbus", _table, _EMPTY), "dbus", origin)
    dbus = DbusConfig(enabled=b.take("enabled", bool_, True), bus=b.take("bus", _bus, "system"))
    b.finish()
    mqtt = parse_mqtt(Table(root.take("mqtt", _table, _EMPTY), "mqtt", origin))
    df = Table(root.take("defaults", _table, _EMPTY), "defaults", origin)
    defaults = _watch_fields(df, ResolvedWatch())
    none: tuple[str, ...] = ()
    ignore = df.take("ignore_fstypes", _str_list, none)
    include = df.take("include_fstypes", _str_list, none)
    if "autofs" in include:
        raise df.error("include_fstypes", list(include),
                       "autofs is never watched: fsmond must not trigger automounts")
    df.finish()
    raw_watches: list[Any] = root.take(
        "watch", lambda v: v if isinstance(v, list) else _no_list(), [])
    watches, resolved = [], []
    for i, raw in enumerate(raw_watches):
        w = Table(raw, f"watch[{i}]", origin)
        path = w.take("path", str_, "")
        if not path.startswith("/"):
            raise w.error("path", path, "must be an absolute mount point or glob")
        watch = _watch_fields(w, defaults)
        overrides = {
            k: getattr(watch, k) for k in _LEVEL_KEYS if getattr(watch, k) != getattr(defaults, k)
        }
        w.finish()
        watches.append(WatchConfig(path, overrides))
        resolved.append((path.rstrip("/") or "/", watch))
    root.finish()
    return Config(
        daemon=daemon, dbus=dbus, mqtt=mqtt, defaults=defaults,
        ignore_fstypes=(BUILTIN_IGNORED | frozenset(ignore)) - frozenset(include),
        watches=tuple(watches), _resolved=tuple(resolved),
    )


_EMPTY: dict[str, Any] = {}


def _table(v: object) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ValueError("must be a table")
    return v


def _no_list() -> list[Any]:
    raise ValueError("must be an array of tables ([[watch]])")


def load_config(path: str | None, *, must_exist: bool = False) -> Config:
    """Read and parse a file; a missing file is the defaults unless it was named."""
    if path is None:
        return parse_config("", "<defaults>")
    text = read_config_text(path)
    if text is None:
        if must_exist:
            raise ConfigError(f"{path}: no such file")
        return parse_config("", "<defaults>")
    return parse_config(text, os.path.basename(path))


def resolve_watch_args(classes: list[str], lower: str, upper: str,
                       base: ResolvedWatch) -> ResolvedWatch:
    """AddWatch's arguments, validated like a [[watch]] ("" keeps the default)."""
    data: dict[str, Any] = {}
    if classes:
        data["classes"] = classes
    if lower:
        data["lower"] = lower
    if upper:
        data["upper"] = upper
    return _watch_fields(Table(data, "watch", "AddWatch"), base)
