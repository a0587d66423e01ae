"""notify.toml: which classes and which file systems notify. Pure (text in).

Read like the daemon's configuration (fsmond/config.py): a `Table` takes the
known keys, anything left is an unknown key, and every error is one line
naming the file, the key, the value and the reason.

    classes = ["thr", "warn", "err"]   # thr: levels; warn: no space/inodes; err: read-only, errors
    include = []                       # mount-point globs; empty: every file system
    exclude = ["/boot/efi", "~/mnt/*"]

A glob's `*` matches within one path component, as in fsmond.toml; `~` is
$HOME. A file system is included when any of its mount points matches.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from fsmond.config_values import read_config_text, root_table
from fsmond.notify.policy import Filter

CLASSES = ("thr", "warn", "err")


def _classes(v: object) -> frozenset[str]:
    if (not isinstance(v, list) or not all(isinstance(x, str) and x in CLASSES for x in v)
            or len(set(v)) != len(v)):
        raise ValueError("must be a list of distinct classes from " + ", ".join(CLASSES)
                         + " (info events never notify)")
    return frozenset(v)


def _globs(v: object) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError("must be a list of strings")
    for g in v:
        if not g.startswith(("/", "~")):
            raise ValueError(f"{g!r} is not an absolute mount point or glob (or ~/...)")
    return tuple(v)


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    classes: frozenset[str] = frozenset(CLASSES)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def filter(self, home: str) -> Filter:
        include = tuple(_expand(g, home) for g in self.include)
        exclude = tuple(_expand(g, home) for g in self.exclude)

        def wants(points: tuple[str, ...]) -> bool:
            if any(_match(p, g) for p in points for g in exclude):
                return False
            return not include or any(_match(p, g) for p in points for g in include)

        return Filter(classes=self.classes, wants=wants)


def _expand(glob: str, home: str) -> str:
    if glob == "~" or glob.startswith("~/"):
        return (home.rstrip("/") + glob[1:]) or "/"
    return glob


def _match(path: str, glob: str) -> bool:
    glob = glob.rstrip("/") or "/"
    parts, pats = path.split("/"), glob.split("/")
    return len(parts) == len(pats) and all(
        fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pats, strict=True))


def parse_notify_config(text: str, origin: str = "<string>") -> NotifyConfig:
    t = root_table(text, origin)
    config = NotifyConfig(classes=t.take("classes", _classes, frozenset(CLASSES)),
                          include=t.take("include", _globs, ()),
                          exclude=t.take("exclude", _globs, ()))
    t.finish()
    return config


def load_notify_config(path: str) -> NotifyConfig:
    """A missing file is the defaults (the agent runs for everyone, configured or not)."""
    text = read_config_text(path)
    if text is None:
        return NotifyConfig()
    return parse_notify_config(text, path)
