"""Watch paths: a mount point, or a glob whose `*` matches within one path
component only ("/srv/*" is not "/srv/a/b"), so a pattern says exactly which
level of the tree it means. Pure; shared by the configuration and AddWatch."""

from __future__ import annotations

import fnmatch


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def glob_match(path: str, pattern: str) -> bool:
    parts, pats = path.split("/"), pattern.split("/")
    return len(parts) == len(pats) and all(
        fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pats, strict=True))


def path_matches(mount_point: str, pattern: str) -> bool:
    return pattern == mount_point or (is_glob(pattern) and glob_match(mount_point, pattern))
