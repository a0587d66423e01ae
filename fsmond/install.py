"""`fsmond install-system-files`: put the unit, bus policy, activation file,
introspection XML, example config, man pages and completion where systemd
and dbus-daemon read them; and the desktop agent's XDG autostart entry and
systemd user unit (fsmond-notify).

dbus-daemon reads system bus policy from /usr/share/dbus-1/system.d and
/etc/dbus-1/system.d only (not /usr/local/share/dbus-1/system.d), so with
any prefix but /usr the policy goes to /etc/dbus-1/system.d. Desktops read
autostart entries from /etc/xdg/autostart whatever the prefix ($XDG_CONFIG_DIRS).

The unit runs the fsmond this command was run as (a venv's, pip's
~/.local/bin, /usr/bin) unless --bindir says where it will be (packages).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

DATA = Path(__file__).parent / "data"


def introspection_xml() -> dict[str, str]:
    """Interface name -> introspection XML, from the exported objects themselves."""
    from fsmond.publishers.dbus_objects import FileSystemObject, ManagerObject

    out = {}
    for obj in (ManagerObject(None, ()), FileSystemObject(None, (0, 0))):  # type: ignore[arg-type]
        iface = obj.introspect()
        out[iface.name] = (
            '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
            ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
            f"<node>{_tostring(iface)}</node>\n")
    return out


def _tostring(iface: object) -> str:
    import xml.etree.ElementTree as ET

    return str(ET.tostring(iface.to_xml(), encoding="unicode"))  # type: ignore[attr-defined]


def plan(prefix: str, bindir: str | None = None) -> dict[str, str | bytes]:
    """Relative install path -> contents."""
    from fsmond.cli import fsmond_parser
    from fsmond.ctl import parser as ctl_parser
    from fsmond.manpages import completion, config_page, fsmonctl_page, fsmond_page, notify_page
    from fsmond.notify.agent import parser as notify_parser

    p = prefix.strip("/")
    bindir = bindir or f"{prefix}/bin"
    policy_dir = "usr/share/dbus-1/system.d" if p == "usr" else "etc/dbus-1/system.d"
    unit = (DATA / "fsmond.service").read_text().replace(
        "=/usr/bin/fsmond ", f"={bindir}/fsmond ")
    example = (DATA / "fsmond.toml").read_text()
    agent = f"{bindir}/fsmond-notify"
    user_unit = (DATA / "fsmond-notify.service").read_text().replace(
        "=/usr/bin/fsmond-notify", f"={agent}")
    desktop = (DATA / "fsmond-notify.desktop").read_text().replace(
        "=/usr/bin/fsmond-notify", f"={agent}")
    files: dict[str, str | bytes] = {
        f"{p}/lib/systemd/system/fsmond.service": unit,
        f"{policy_dir}/org.fsmond.FsMon1.conf": (DATA / "org.fsmond.FsMon1.conf").read_text(),
        f"{p}/share/dbus-1/system-services/org.fsmond.FsMon1.service":
            (DATA / "org.fsmond.FsMon1.service").read_text(),
        f"{p}/share/doc/fsmond/fsmond.toml.example": example,
        f"{p}/share/man/man8/fsmond.8": fsmond_page(fsmond_parser(), parser()),
        f"{p}/share/man/man1/fsmonctl.1": fsmonctl_page(ctl_parser()),
        f"{p}/share/man/man5/fsmond.toml.5": config_page(),
        f"{p}/share/bash-completion/completions/fsmond": completion(fsmond_parser()),
        f"{p}/share/bash-completion/completions/fsmonctl": completion(ctl_parser()),
        f"{p}/lib/systemd/user/fsmond-notify.service": user_unit,
        "etc/xdg/autostart/fsmond-notify.desktop": desktop,
        f"{p}/share/applications/fsmond-notify.desktop": desktop,  # names the notifications
        f"{p}/share/man/man1/fsmond-notify.1": notify_page(notify_parser()),
        f"{p}/share/bash-completion/completions/fsmond-notify": completion(notify_parser()),
    }
    for name, xml in introspection_xml().items():
        files[f"{p}/share/dbus-1/interfaces/{name}.xml"] = xml
    return files


def install(destdir: str, prefix: str, bindir: str | None = None) -> list[Path]:
    written = []
    for rel, content in plan(prefix, bindir).items():
        target = Path(destdir or "/") / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
        target.chmod(0o644)
        written.append(target)
    config = Path(destdir or "/") / "etc/fsmond/fsmond.toml"
    if not config.exists():  # never overwrite an admin's configuration
        config.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DATA / "fsmond.toml", config)
        written.append(config)
    return written


def running_bindir() -> str:
    """The directory of the fsmond command being run: sys.argv[0] when it is
    the console script; for `python -m fsmond`, the one beside the interpreter
    (a venv's bin), else the one on PATH."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "fsmond" and os.path.isfile(argv0):
        return os.path.dirname(os.path.abspath(argv0))
    beside = Path(sys.executable).parent / "fsmond"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside.parent)
    found = shutil.which("fsmond")
    if found is not None:
        return os.path.dirname(os.path.abspath(found))
    raise FileNotFoundError("cannot tell where the fsmond command is: give --bindir DIR")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fsmond install-system-files",
                                 description="Install unit, bus policy, man pages, completion, "
                                 "and the desktop agent's autostart entry and user unit.")
    ap.add_argument("--destdir", default=os.environ.get("DESTDIR", ""),
                    help="staging root (packaging); default: the real /")
    ap.add_argument("--prefix", default="/usr", help="installation prefix (default /usr)")
    ap.add_argument("--bindir", help="the directory the unit runs fsmond from (default: "
                    "that of the fsmond running this; packages give PREFIX/bin)")
    return ap


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    try:
        bindir = args.bindir or running_bindir()
    except FileNotFoundError as e:
        print(f"fsmond install-system-files: {e}", file=sys.stderr)
        return 1
    for path in install(args.destdir, args.prefix, bindir):
        print(path)
    if not args.destdir:
        print("now: systemctl daemon-reload && systemctl enable --now fsmond\n"
              "and, for desktop notifications in each user's graphical session: "
              "systemctl --global enable fsmond-notify", file=sys.stderr)
    return 0
