"""The configuration: every key's good and bad values, one-line errors, resolution."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsmond.config import Config, load_config, parse_config, resolve_watch_args
from fsmond.config_values import Level, parse_bytes, parse_duration, parse_level
from fsmond.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "config" / "fsmond.toml"


def test_example_and_empty_give_the_documented_defaults() -> None:
    example = load_config(str(EXAMPLE), must_exist=True)
    empty = parse_config("")
    assert example.daemon == empty.daemon and example.defaults == empty.defaults
    assert example.mqtt == empty.mqtt and example.dbus == empty.dbus
    assert empty.daemon.poll_interval == 5.0 and empty.daemon.min_poll_interval == 0.1
    assert str(empty.defaults.lower) == "10%" and str(empty.defaults.upper) == "5%"


def test_missing_default_file_is_defaults_but_a_named_one_is_an_error(tmp_path: Path) -> None:
    assert load_config(str(tmp_path / "none.toml")) == parse_config("", "<defaults>")
    with pytest.raises(ConfigError, match="no such file"):
        load_config(str(tmp_path / "none.toml"), must_exist=True)


@pytest.mark.parametrize(("text", "key", "value", "reason"), [
    ('[daemon]\npoll_interval = "soon"', "daemon.poll_interval", '"soon"', "not a duration"),
    ("[daemon]\npoll_interval = 0", "daemon.poll_interval", "0", "more than 0"),
    ('[daemon]\nmin_poll_interval = "10s"', "daemon.min_poll_interval", "10.0", "poll_interval"),
    ('[daemon]\nstatvfs_timeout = "-1s"', "daemon.statvfs_timeout", '"-1s"', "not a duration"),
    ('[daemon]\nmount_backend = "inotify"', "daemon.mount_backend", '"inotify"', "one of"),
    ('[daemon]\nmount_namespace = "/etc/passwd"', "daemon.mount_namespace", "passwd", "ns/mnt"),
    ('[daemon]\nkmsg = "yes"', "daemon.kmsg", '"yes"', "true or false"),
    ("[daemon]\nchangelog_size = 1", "daemon.changelog_size", "1", "whole number"),
    ('[daemon]\nlog_level = "loud"', "daemon.log_level", '"loud"', "one of"),
    ('[daemon]\nenospc_trace = "on"', "daemon.enospc_trace", '"on"', "one of at-risk, always, off"),
    ("[daemon]\nbogus = 1", "daemon.bogus", "1", "unknown key"),
    ('[dbus]\nbus = "user"', "dbus.bus", '"user"', "bus address"),
    ('[mqtt]\nurl = "http://x"', "mqtt.url", '"http://x"', "mqtt://"),
    ('[mqtt]\nurl = "mqtt://"', "mqtt.url", '"mqtt://"', "no host"),
    ('[mqtt]\nurl = "mqtt://u:p@h"', "mqtt.url", "mqtt://u:p@h", "credentials"),
    ("[mqtt]\nqos = 3", "mqtt.qos", "3", "0 to 2"),
    ('[mqtt]\nprefix = "a/#"', "mqtt.prefix", '"a/#"', "topic level"),
    ("[mqtt]\nqueue_size = 0", "mqtt.queue_size", "0", "whole number"),
    ('[mqtt]\npassword_file = "/nonexistent"', "mqtt.password_file", "/nonexistent", "cannot"),
    ('[defaults]\nlower = "15 percent"', "defaults.lower", "15 percent", "not a level"),
    ('[defaults]\nupper = "150%"', "defaults.upper", '"150%"', "at most 100"),
    ('[defaults]\nlower = "1%"', "defaults.lower", '"1%"', "more room than defaults.upper"),
    ('[defaults]\ninodes_lower = "5GiB"', "defaults.inodes_lower", "5GiB", "inode level"),
    ('[defaults]\nclasses = ["info", "bogus"]', "defaults.classes", "bogus", "classes"),
    ("[defaults]\nclasses = []", "defaults.classes", "[]", "non-empty"),
    ('[defaults]\ninclude_fstypes = ["autofs"]', "defaults.include_fstypes", "autofs", "never"),
    ('[[watch]]\npath = "relative"', "watch[0].path", '"relative"', "absolute"),
    ('[[watch]]\npath = "/a"\nlower = "1GiB"\nupper = "2GiB"', "watch[0].lower", "1GiB", "room"),
    ('[[watch]]\npath = "/a"\nextra = 1', "watch[0].extra", "1", "unknown key"),
    ("[surprise]\nx = 1", "surprise", "x", "unknown key"),
    ("daemon = 3", "daemon", "3", "table"),
])
def test_bad_values_name_key_value_and_reason(text: str, key: str, value: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text.replace("%%", "%"), "f.toml")
    msg = str(err.value)
    assert msg.startswith(f"f.toml: {key} = "), msg
    assert value.replace("%%", "%") in msg and reason in msg
    assert "\n" not in msg


def test_toml_syntax_error_is_one_clear_line() -> None:
    with pytest.raises(ConfigError, match=r"f.toml: not valid TOML: .*line 1"):
        parse_config("[daemon\n", "f.toml")


def test_password_never_shows(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret-pw\n")
    cfg = parse_config(f'[mqtt]\npassword_file = "{tmp_path / "pw"}"')
    assert cfg.mqtt.password == "s3cret-pw"
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(cfg)
    with pytest.raises(ConfigError) as err:
        parse_config('[mqtt]\npassword = "s3cret-pw"\npassword_file = "/x"')
    assert "s3cret" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config("[mqtt]\npassword = 12345")
    assert "12345" not in str(err.value)


def test_mqtt_url_ports_and_tls() -> None:
    assert parse_config('[mqtt]\nurl = "mqtts://broker"').mqtt.port == 8883
    m = parse_config('[mqtt]\nurl = "mqtt://broker:1999"').mqtt
    assert (m.host, m.port, m.tls) == ("broker", 1999, False)


def test_watch_resolution() -> None:
    everything = parse_config("")
    assert everything.watch_for("/anything") == everything.defaults
    cfg = parse_config('''
[defaults]
lower = "20%"
[[watch]]
path = "/srv/*"
classes = ["err"]
[[watch]]
path = "/"
upper = "2GiB"
''')
    assert cfg.watch_for("/srv/a") is not None and cfg.watch_for("/srv/a").classes == ("err",)
    assert cfg.watch_for("/srv/a/b") is None  # * stays within one level
    root = cfg.watch_for("/")
    assert root is not None and str(root.lower) == "20%" and str(root.upper) == "2GiB"
    assert cfg.watch_for("/home") is None


def test_ignored_fstypes() -> None:
    cfg = parse_config('[defaults]\nignore_fstypes = ["tmpfs"]\ninclude_fstypes = ["squashfs"]')
    assert cfg.ignored_fstype("tmpfs") and cfg.ignored_fstype("proc")
    assert cfg.ignored_fstype("autofs") and not cfg.ignored_fstype("squashfs")
    assert not cfg.ignored_fstype("ext4") and Config().ignored_fstype("cgroup2")


@pytest.mark.parametrize(("text", "size", "bs", "expected"), [
    ("10%", 1000, 4096, 100), ("2.5%", 1000, 1, 25), ("5GiB", 0, 0, 5 << 30),
    ("500MB", 0, 0, 500_000_000), ("1k", 0, 0, 1000), ("100", 0, 4096, 409600),
    (7, 0, 1024, 7168), ("0", 0, 4096, 0),
])
def test_level_to_bytes(text: str | int, size: int, bs: int, expected: int) -> None:
    assert parse_level(text).to_bytes(size, bs) == expected


def test_durations_and_sizes() -> None:
    assert parse_duration("100ms") == 0.1 and parse_duration("2m") == 120
    assert parse_duration(1.5) == 1.5 and parse_duration("1h") == 3600
    assert parse_bytes("1KiB") == 1024 and parse_bytes(5) == 5
    for bad in ("", "1x", "1.5", "-1", True):
        with pytest.raises(ValueError):
            parse_bytes(bad)


def test_add_watch_arguments_are_validated_like_the_file() -> None:
    base = parse_config("").defaults
    w = resolve_watch_args(["thr"], "30%", "", base)
    assert w.classes == ("thr",) and w.lower == Level("percent", 30, "30%")
    assert w.upper == base.upper
    with pytest.raises(ConfigError, match=r"watch\.classes"):
        resolve_watch_args(["nope"], "", "", base)
    with pytest.raises(ConfigError, match="more room"):
        resolve_watch_args([], "1%", "2%", base)


@given(st.text(max_size=200))
def test_any_text_is_a_config_or_a_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(text)


@given(st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.booleans()))
def test_any_level_value_is_a_level_or_a_value_error(value: object) -> None:
    with contextlib.suppress(ValueError):
        parse_level(value)
