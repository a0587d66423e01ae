"""Value types of the configuration (levels, durations, byte sizes) and the table reader. Pure.

Each parser takes the raw TOML value and raises `ValueError` with a reason;
config.py adds the dotted key and the file name, so every error is one line
naming the key, the value and the reason.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fsmond.errors import ConfigError

T = TypeVar("T")

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
LEVEL_HELP = 'use "10%", "5GiB" or a number of blocks'


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_bytes(value: object) -> int:
    """'500MB' (powers of 1000), '5GiB' (powers of 1024), 'B', or an integer of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _SIZE.fullmatch(value.strip())
        if m and m.group(2).lower() in _UNITS and (m.group(2) or "." not in m.group(1)):
            return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    raise ValueError('not a byte size (use "512MiB", "2GB" or a number of bytes)')


def parse_duration(value: object) -> float:
    """'100ms', '5s', '2m', '1h', '1.5s' or a number of seconds; must be > 0."""
    seconds: float | None = None
    if _is_number(value):
        seconds = float(value)  # type: ignore[arg-type]
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value.strip())):
        seconds = float(m.group(1)) * _SECONDS[m.group(2)]
    if seconds is None:
        raise ValueError('not a duration (use "100ms", "5s", "2m", "1h" or seconds)')
    if not seconds > 0 or seconds > 10 * 365 * 86400:
        raise ValueError("must be more than 0 and at most 10 years")
    return seconds


@dataclass(frozen=True, slots=True)
class Level:
    """A level on available space or inodes: a percentage of size, bytes, or blocks."""

    kind: str  # "percent" | "bytes" | "blocks"
    value: float
    text: str

    def __str__(self) -> str:
        return self.text

    def to_bytes(self, size: int, block_size: int) -> int:
        """In the resource's unit: bytes for space (block_size = f_frsize), inodes
        for inodes (size = files, block_size = 1)."""
        if self.kind == "percent":
            return int(size * self.value / 100)
        if self.kind == "blocks":
            return int(self.value) * block_size
        return int(self.value)


def parse_level(value: object, *, allow_bytes: bool = True) -> Level:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must not be negative")
        return Level("blocks", value, str(value))
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            try:
                pct = float(text[:-1])
            except ValueError:
                raise ValueError(f"not a level ({LEVEL_HELP})") from None
            if not 0 < pct <= 100:
                raise ValueError("a percentage must be more than 0 and at most 100")
            return Level("percent", pct, text)
        if text.isdigit():
            return Level("blocks", int(text), text)
        if allow_bytes:
            try:
                return Level("bytes", parse_bytes(text), text)
            except ValueError:
                pass
        elif _SIZE.fullmatch(text):
            raise ValueError('a byte size is no inode level (use "5%" or a number of inodes)')
    raise ValueError(f"not a level ({LEVEL_HELP})")


def leaves_more_room(lower: Level, upper: Level) -> bool | None:
    """The RFC's rule, when it can be told without a file system (same units)."""
    if lower.kind != upper.kind:
        return None
    return lower.value > upper.value


def show(value: object) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


class Table:
    """Reads one TOML table; whatever is not taken is an unknown key."""

    def __init__(self, data: object, path: str, origin: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{origin}: {path} = {show(data)}: must be a table")
        self.data = dict(data)
        self.path = path
        self.origin = origin

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, value: object, reason: str) -> ConfigError:
        return ConfigError(f"{self.origin}: {self.key(name)} = {show(value)}: {reason}")

    def take(self, name: str, parse: Callable[[Any], T], default: T) -> T:
        if name not in self.data:
            return default
        value = self.data.pop(name)
        try:
            return parse(value)
        except ValueError as e:
            raise self.error(name, value, str(e)) from None

    def finish(self) -> None:
        for name, value in self.data.items():
            raise self.error(name, value, "unknown key")


def bool_(v: object) -> bool:
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def str_(v: object) -> str:
    if not isinstance(v, str):
        raise ValueError("must be a string")
    return v


def int_between(lo: int, hi: int) -> Callable[[object], int]:
    def parse(v: object) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ValueError(f"must be a whole number from {lo} to {hi}")
        return v
    return parse


def choice(*allowed: str) -> Callable[[object], str]:
    def parse(v: object) -> str:
        if v not in allowed:
            raise ValueError("must be one of " + ", ".join(allowed))
        return str(v)
    return parse


def read_config_text(path: str) -> str | None:
    """A configuration file's text, or None when there is no such file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None


def root_table(text: str, origin: str) -> Table:
    """The whole file as its top-level Table."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{origin}: not valid TOML: {e}") from None
    return Table(data, "", origin)
