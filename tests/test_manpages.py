"""The man pages as a reader gets them: rendered by man, linted by groff,
complete against the code (every subcommand, every configuration key with
its default), and the configuration page's example a valid file."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from fsmond.cli import fsmond_parser
from fsmond.config import parse_config
from fsmond.config_doc import KEYS
from fsmond.ctl import parser as ctl_parser
from fsmond.install import parser as install_parser
from fsmond.manpages import CONFIG_EXAMPLE, config_page, fsmonctl_page, fsmond_page, notify_page
from fsmond.notify.agent import parser as notify_parser

REPO = Path(__file__).resolve().parent.parent
PAGES = {
    "fsmond.8": lambda: fsmond_page(fsmond_parser(), install_parser()),
    "fsmonctl.1": lambda: fsmonctl_page(ctl_parser()),
    "fsmond.toml.5": config_page,
    "fsmond-notify.1": lambda: notify_page(notify_parser()),
}


def rendered(name: str, tmp_path: Path) -> str:
    page = tmp_path / name
    page.write_text(PAGES[name]())
    lint = subprocess.run(["groff", "-ww", "-z", "-man", str(page)], capture_output=True,
                          text=True, timeout=60)
    assert lint.returncode == 0 and lint.stderr == "", lint.stderr
    r = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "MANWIDTH": "200", "MANPAGER": "cat", "PAGER": "cat",
                            "MAN_KEEP_FORMATTING": ""})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return re.sub(r".\x08", "", r.stdout)  # no overstrikes, whatever the terminal


def sections(text: str) -> dict[str, str]:
    parts = re.split(r"^(\S[^\n]*)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@pytest.mark.parametrize("name", sorted(PAGES))
def test_each_page_renders_with_man_and_is_clean_for_groff(name: str, tmp_path: Path) -> None:
    assert "NAME" in sections(rendered(name, tmp_path))


def test_fsmond_8_has_what_an_admin_looks_for(tmp_path: Path) -> None:
    s = sections(rendered("fsmond.8", tmp_path))
    for title in ("DESCRIPTION", "OPTIONS", "INSTALL-SYSTEM-FILES", "SIGNALS", "EXIT STATUS",
                  "FILES", "ENVIRONMENT", "D-BUS", "SEE ALSO"):
        assert title in s, title
    assert "SIGHUP" in s["SIGNALS"] and "SIGTERM" in s["SIGNALS"]
    assert [line.split()[0] for line in s["EXIT STATUS"].splitlines()
            if re.match(r"\s+\d+\s", line)] == ["0", "1", "78"]
    assert "--bindir" in s["INSTALL-SYSTEM-FILES"] and "--destdir" in s["INSTALL-SYSTEM-FILES"]
    assert "/etc/fsmond/fsmond.toml" in s["FILES"] and "NOTIFY_SOCKET" in s["ENVIRONMENT"]
    assert "GetChangesSince" in s["D-BUS"]
    assert "fsmond(8)" not in s["SEE ALSO"] and "fsmonctl(1)" in s["SEE ALSO"]


def test_fsmonctl_1_has_every_subcommand_with_its_arguments_and_exit_status(
        tmp_path: Path) -> None:
    text = rendered("fsmonctl.1", tmp_path)
    s = sections(text)
    for usage in ("status [--json]", "fs [--json] [PATH]", "mounts [--json]",
                  "watches [--json]", "watch list [--json]", "monitor [--json] [--count COUNT]",
                  "watch add MOUNT CLASSES [LOWER] [UPPER]", "watch remove MOUNT", "reload",
                  "check-config FILE"):
        assert re.search(rf"^\s+{re.escape(usage)}", s["COMMANDS"], re.M), usage
    for arg in ("MOUNT", "CLASSES", "LOWER", "UPPER", "FILE", "PATH"):
        assert re.search(rf"^\s+{arg}\s", s["COMMANDS"], re.M), arg
    assert text.count("-h, --help") == 1
    assert re.search(r"^\s+3\s+fsmond is not running", s["EXIT STATUS"], re.M)


def test_fsmond_toml_5_has_every_key_with_type_and_default_and_a_valid_example(
        tmp_path: Path) -> None:
    text = rendered("fsmond.toml.5", tmp_path)
    s = sections(text)
    for table, key, kind, default, _ in KEYS:
        title = "[[watch]]" if table == "watch" else f"[{table}]"
        shown = f"{key} ({kind}, default {default})" if default else f"{key} ({kind})"
        assert shown in s[title], (title, shown)
    # the example: [[watch]] keys under [[watch]], and a file fsmond takes
    example = s["EXAMPLE"]
    assert re.search(r"\[\[watch\]\]\n\s+path = \"/\"\n\s+lower = \"15%\"", example)
    config = parse_config(CONFIG_EXAMPLE)
    assert [w.path for w in config.watches] == ["/", "/var/lib/containers/*"]
    assert "password (string)" in s["[mqtt]"]  # no default invented for it


def test_the_documented_keys_are_those_the_code_takes_with_its_defaults() -> None:
    code = "".join((REPO / "fsmond" / f).read_text() for f in ("config.py", "config_mqtt.py"))
    taken = set(re.findall(r'take\(\s*"(\w+)"', code))
    taken |= set(re.findall(r'"(\w+)" in t\.data', code))  # mqtt.password
    taken |= set(re.findall(r'^\s+"(\w+)": (?:_classes|parse_level|_inode_level),$', code,
                            re.M))  # config._LEVEL_KEYS, for [defaults] and [[watch]]
    taken -= {"daemon", "dbus", "mqtt", "defaults", "watch"}  # the tables themselves
    assert taken == {key for _, key, *_ in KEYS}
    built_in = parse_config("")
    for table, key, _kind, default, _ in KEYS:
        if default is None or table == "watch":
            continue
        assert parse_config(f"[{table}]\n{key} = {default}\n") == built_in, (table, key)
