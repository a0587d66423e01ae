"""docs/dbus.md against the introspection XML and the values fsmond sends:
a member, an argument or a key cannot be added without its documentation."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fsmond.engine.mounts import CHANGED, MountChange
from fsmond.events import MountEntry
from fsmond.install import introspection_xml
from fsmond.publishers.dbus_convert import INT_TYPES, change_fields
from fsmond.publishers.dbus_docs import DOCSTRING

REPO = Path(__file__).resolve().parent.parent
DOC = (REPO / "docs" / "dbus.md").read_text()
ROW = re.compile(r"^\| `([\w-]+)` \| `([a-z{}()]+)` \|", re.M)


def section(interface: str) -> str:
    start = DOC.index(f"## Interface `{interface}`")
    end = DOC.find("\n## ", start + 1)
    return DOC[start:end if end != -1 else None]


def interfaces() -> list[ET.Element]:
    return [ET.fromstring(xml.split("\n", 2)[2]).find("interface")  # type: ignore[misc]
            for xml in introspection_xml().values()]


def doc_of(element: ET.Element) -> str | None:
    for a in element.findall("annotation"):
        if a.get("name") == DOCSTRING:
            return a.get("value")
    return None


def args(element: ET.Element, direction: str) -> str:
    return ", ".join(f"{a.get('type')} {a.get('name')}" for a in element.findall("arg")
                     if (a.get("direction") or "in") == direction)


@pytest.mark.parametrize("iface", interfaces(), ids=lambda i: i.get("name"))
def test_every_member_of_the_xml_is_documented_with_its_types(iface: ET.Element) -> None:
    text = section(iface.get("name") or "")
    assert doc_of(iface)
    for m in iface.findall("method"):
        out = args(m, "out")
        heading = f"### `{m.get('name')}({args(m, 'in')})" + (f" -> ({out})`" if out else "`")
        assert heading in text, heading
    for s in iface.findall("signal"):
        heading = f"### `{s.get('name')}({args(s, 'out')})`"
        assert heading in text, heading
    rows = dict(ROW.findall(text))
    for p in iface.findall("property"):
        assert rows.get(p.get("name") or "") == p.get("type"), p.get("name")
    for member in (*iface.findall("method"), *iface.findall("signal"),
                   *iface.findall("property")):
        assert doc_of(member), f"{member.get('name')} has no {DOCSTRING}"
        assert all(a.get("name") for a in member.findall("arg")), member.get("name")


def test_a_key_has_one_type_in_the_docs_and_it_is_the_one_sent() -> None:
    documented: dict[str, set[str]] = {}
    for key, sig in ROW.findall(DOC):
        documented.setdefault(key, set()).add(sig)
    assert {k: s for k, s in documented.items() if len(s) > 1} == {}
    for key, sig in INT_TYPES.items():
        assert documented.get(key) == {sig}, key
    entry = MountEntry(7, 1, (7, 1), "/", "/m", "rw", "ext4", "/dev/loop0", "rw")
    sent = change_fields(MountChange(3, CHANGED, entry, entry), "/org/fsmond/FsMon1/fs/7_1")
    for key, (sig, _) in sent.items():
        assert documented.get(key) == {sig}, key


def test_every_event_the_engine_makes_is_in_the_event_table() -> None:
    made = set()
    for source in (REPO / "fsmond" / "engine").glob("*.py"):
        made |= set(re.findall(r'Notice\("(\w+)", "([\w-]+)"', source.read_text()))
        made |= {("info", n) for n in re.findall(r'_watch_notice\("([\w-]+)"',
                                                 source.read_text())}
    assert ("thr", "threshold") in made and ("info", "watch-added") in made
    table = DOC[DOC.index("| class | name |"):]
    for cls, name in made:
        assert re.search(rf"^\| {cls} \| [^|]*`{name}`", table, re.M), (cls, name)


def test_benchmarks_md_is_a_reference_whose_commands_exist() -> None:
    """Short, and every bench script and option it names is there to run."""
    text = (REPO / "BENCHMARKS.md").read_text()
    assert len(text.splitlines()) <= 250
    for script in set(re.findall(r"bench/(\w+\.py)", text)):
        source = (REPO / "bench" / script).read_text()
        for option in set(re.findall(rf"bench/{script} ([^`\n]*)", text)):
            for flag in re.findall(r"--[\w-]+", option):
                assert f'"{flag}"' in source, (script, flag)
    storm = (REPO / "bench" / "mount_storm.py").read_text()
    for flag in re.findall(r"^\| `(--[\w-]+)", text, re.M):
        assert f'"{flag}"' in storm, flag
