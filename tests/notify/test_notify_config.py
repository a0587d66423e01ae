"""notify.toml and the ignores file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fsmond.errors import ConfigError
from fsmond.notify.config import NotifyConfig, load_notify_config, parse_notify_config
from fsmond.notify.policy import Condition
from fsmond.notify.store import load_ignores, save_ignores


def test_defaults_notify_every_class_for_every_file_system(tmp_path: Path) -> None:
    assert load_notify_config(str(tmp_path / "missing.toml")) == NotifyConfig()
    wants = NotifyConfig().filter("/home/u").wants
    assert wants(("/",)) and wants(("/home/u/x",))


def test_include_and_exclude_globs_match_one_component_and_expand_home() -> None:
    cfg = parse_notify_config('include = ["/", "/srv/*", "~"]\nexclude = ["/srv/tmp"]\n')
    wants = cfg.filter("/home/u").wants
    assert wants(("/",)) and wants(("/srv/a",)) and wants(("/home/u",))
    assert not wants(("/srv/a/b",)) and not wants(("/srv/tmp",)) and not wants(("/mnt",))
    assert not wants(("/srv/tmp", "/srv/a"))  # excluded at one of its mount points


@pytest.mark.parametrize(("text", "error"), [
    ('classes = ["thr", "info"]', 'notify.toml: classes = ["thr", "info"]: must be a list'),
    ('classes = "thr"', 'notify.toml: classes = "thr": must be a list'),
    ('include = ["srv"]', "notify.toml: include = [\"srv\"]: 'srv' is not an absolute"),
    ('exclude = [1]', "notify.toml: exclude = [1]: must be a list of strings"),
    ('lower = "10%"', 'notify.toml: lower = "10%": unknown key'),
    ("classes = [", "notify.toml: not valid TOML"),
])
def test_bad_configuration_is_one_line_naming_key_value_and_reason(text: str,
                                                                   error: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_notify_config(text, "notify.toml")
    assert str(e.value).startswith(error) and "\n" not in str(e.value)


def test_the_command_says_so_and_exits_78(tmp_path: Path) -> None:
    cfg = tmp_path / "notify.toml"
    cfg.write_text('classes = ["thr"]\nexclud = []\n')
    r = subprocess.run([sys.executable, "-m", "fsmond.notify", "--config", str(cfg),
                        "--check-config"], capture_output=True, text=True)
    assert r.returncode == 78
    assert r.stderr == f"fsmond-notify: {cfg}: exclud = []: unknown key\n"
    cfg.write_text('classes = ["thr"]\n')
    r = subprocess.run([sys.executable, "-m", "fsmond.notify", "--config", str(cfg),
                        "--check-config"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_ignores_survive_a_restart_and_a_broken_file_is_none(tmp_path: Path) -> None:
    path = tmp_path / "state/fsmond/notify-ignores.json"
    assert load_ignores(path) == {}
    save_ignores(path, {"/srv": Condition("upper"), "~/x": Condition("error", 2)})
    assert load_ignores(path) == {"/srv": Condition("upper"), "~/x": Condition("error", 2)}
    path.write_text("{not json")
    assert load_ignores(path) == {}
