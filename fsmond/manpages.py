"""Man pages and bash completion generated from the code's own definitions.

The options and subcommands of fsmond(8), fsmonctl(1) and fsmond-notify(1)
come from the argparse parsers the commands use, with the prose around them here;
fsmond.toml(5) from config_doc.KEYS, which tests hold to what config.py
takes and to its defaults. So the pages cannot drift from the code.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence

from fsmond import __version__


def _roff(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in text.split("\n"))


def _header(name: str, section: int, title: str) -> list[str]:
    today = dt.date.today().isoformat()
    return [f'.TH {name.upper()} {section} "{today}" "fsmond {__version__}" "{title}"',
            ".SH NAME", _roff(name)]


def _para(*texts: str) -> list[str]:
    out: list[str] = []
    for text in texts:
        out += [".PP", _roff(text)]
    return out


def _items(pairs: Sequence[tuple[str, str]]) -> list[str]:
    out: list[str] = []
    for term, text in pairs:
        out += [".TP", f"\\fB{_roff(term)}\\fR", _roff(text)]
    return out


def _options(parser: argparse.ArgumentParser, with_help: bool = True) -> list[str]:
    """Positionals first (their metavar and help), then options; -h, --help
    only where `with_help` (once per page)."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if isinstance(action, argparse._HelpAction) and not with_help:
            continue
        if action.option_strings:
            flags = ", ".join(action.option_strings)
            if action.nargs != 0:
                flags += " " + (str(action.metavar) if action.metavar else action.dest.upper())
        else:
            flags = str(action.metavar or action.dest).upper()
        text = (action.help or "").replace("%%", "%")
        if action.choices and action.option_strings:
            text += f" ({', '.join(map(str, action.choices))})"
        out += [".TP", f"\\fB{_roff(flags)}\\fR", _roff(text)]
    return out


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                sub.description = sub.description or helps.get(name)
                out.append((name, sub))
                out += [(f"{name} {n}", s) for n, s in _subcommands(sub)]
    return out


def _usage(parser: argparse.ArgumentParser, with_help: bool = True) -> str:
    usage = " ".join(parser.format_usage().removeprefix("usage: ").split())
    return usage if with_help else usage.replace(" [-h]", "", 1)


FSMOND_DESCRIPTION = (
    "fsmond watches every mounted file system of its mount namespace and tells people "
    "and programs, the moment it happens, what the file systems are doing: mounted, "
    "unmounted, remounted; forced read-only after an error; an error the kernel reported; "
    "out of space or inodes; available space crossing a lower or upper level (with "
    "hysteresis, in both directions).",
    "Events are published as signals from one D-Bus object per file system "
    "(org.fsmond.FsMon1 on the system bus), optionally on MQTT, and as JSON lines on "
    "standard output with --print-events. The mount table is kept incrementally "
    "(fanotify mount marks and statmount, or /proc/self/mountinfo), so a mount storm "
    "costs little; free space is sampled with statvfs every poll_interval, and a file "
    "system that hangs (a dead NFS server, a stopped FUSE server) delays no other.",
    "What is watched, the levels and the sources are set in fsmond.toml(5).",
)


def fsmond_page(parser: argparse.ArgumentParser, install: argparse.ArgumentParser) -> str:
    lines = [*_header("fsmond", 8, "System Manager's Manual")]
    lines[-1] += " \\- " + _roff(parser.description or "")
    lines += [".SH SYNOPSIS", _roff(_usage(parser)), ".br",
              _roff(_usage(install, with_help=False)),
              ".SH DESCRIPTION", *_para(*FSMOND_DESCRIPTION),
              ".SH OPTIONS", *_options(parser),
              ".SH INSTALL\\-SYSTEM\\-FILES",
              *_para("fsmond install-system-files puts the systemd unit, the D-Bus bus "
                     "policy, the D-Bus activation file, the introspection XML, the man "
                     "pages, bash completion and an example configuration where systemd "
                     "and dbus-daemon read them, and /etc/fsmond/fsmond.toml when there is "
                     "none (an admin's file is never overwritten). It prints each path it "
                     "writes. The unit runs the fsmond that install-system-files was run "
                     "as, unless --bindir names another directory; when that cannot be "
                     "told, it says to give --bindir and writes nothing. Then: systemctl "
                     "daemon-reload; systemctl enable --now fsmond."),
              *_options(install, with_help=False),
              ".SH SIGNALS",
              *_items((("SIGHUP", "Re-read the configuration file (as systemctl reload "
                        "fsmond and the D-Bus method Reload). A broken file keeps the old "
                        "configuration; the log and an err/config event say why."),
                       ("SIGTERM, SIGINT", "Stop cleanly: publishers say goodbye (MQTT "
                        "offline), then exit 0."))),
              ".SH EXIT STATUS",
              *_items((("0", "Stopped by a signal, or --check-config found the file valid."),
                       ("1", "A failure that stops fsmond: the bus went away, the name "
                        "org.fsmond.FsMon1 is taken, a source it needs could not start. "
                        "systemd restarts it."),
                       ("78", "The configuration is wrong (EX_CONFIG): the message names "
                        "the key, the value and the reason."))),
              ".SH FILES",
              *_items((("/etc/fsmond/fsmond.toml", "The configuration (fsmond.toml(5)); "
                        "a missing file means the built-in defaults."),
                       ("/usr/lib/systemd/system/fsmond.service", "The unit: Type=notify, "
                        "watchdog, hardened."),
                       ("/usr/share/dbus-1/system.d/org.fsmond.FsMon1.conf", "The bus "
                        "policy: only root owns the name and calls AddWatch, RemoveWatch "
                        "and Reload (with another prefix, in /etc/dbus-1/system.d)."),
                       ("/usr/share/dbus-1/interfaces/org.fsmond.FsMon1.*.xml", "The "
                        "documented introspection XML."),
                       ("/dev/kmsg, /proc/self/mountinfo", "Kernel messages and the mount "
                        "table."))),
              ".SH ENVIRONMENT",
              *_items((("NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID", "Set by systemd: "
                        "READY=1 once every source has started and the bus name is owned; "
                        "watchdog pings from the event loop (sd_notify(3))."),
                       ("JOURNAL_STREAM", "Set by systemd: log lines then carry their "
                        "priority (<N> prefixes) for the journal."),
                       ("DBUS_SESSION_BUS_ADDRESS, DBUS_SYSTEM_BUS_ADDRESS", "The buses "
                        "--bus session and --bus system connect to."),
                       ("DESTDIR", "install-system-files' staging root, as --destdir."))),
              ".SH D\\-BUS",
              *_para("Name org.fsmond.FsMon1 on the system bus (or --bus). The root object "
                     "/org/fsmond/FsMon1 implements org.fsmond.FsMon1.Manager (GetStatus, "
                     "ListMounts, GetMount, GetChangesSince, ListWatches, AddWatch, "
                     "RemoveWatch, Reload; the signals Event and MountsChanged; the "
                     "properties Version and Generation). The file systems' "
                     "org.freedesktop.DBus.ObjectManager is /org/fsmond/FsMon1/fs, and "
                     "nothing per-mount is sent from under it. Each watched file system is "
                     "/org/fsmond/FsMon1/fs/<major>_<minor> with "
                     "org.fsmond.FsMon1.FileSystem: its space, level, read-only and error "
                     "state as properties, and its own Event signal. The full reference "
                     "is docs/dbus.md in the source; busctl introspect org.fsmond.FsMon1 "
                     "/org/fsmond/FsMon1 shows the documented interfaces."),
              ".SH SEE ALSO",
              "fsmonctl(1), fsmond-notify(1), fsmond.toml(5), busctl(1), systemctl(1), "
              "sd_notify(3)"]
    return "\n".join(lines) + "\n"


FSMONCTL_EXIT = (
    ("0", "Done."),
    ("1", "fsmond refused (its error is printed: not root, a bad argument, nothing "
          "mounted there)."),
    ("2", "Wrong usage."),
    ("3", "fsmond is not running, or its bus cannot be reached; monitor: the bus went "
          "away."),
    ("78", "check-config: the file is wrong."),
)


def fsmonctl_page(parser: argparse.ArgumentParser) -> str:
    lines = [*_header("fsmonctl", 1, "User Commands")]
    lines[-1] += " \\- " + _roff(parser.description or "")
    lines += [".SH SYNOPSIS", _roff(_usage(parser)),
              ".SH DESCRIPTION",
              *_para("fsmonctl asks a running fsmond(8) over D-Bus what it sees: "
                     "the file systems with their space as df(1) counts it (used = size "
                     "- free, used % = used / (used + available)), the mount table, the "
                     "watches, and the events as they happen. Tables for people, --json "
                     "for programs. watch add, watch remove and reload are for root."),
              ".SH OPTIONS", *_options(parser), ".SH COMMANDS"]
    for _name, sub in _subcommands(parser):
        if _subcommands(sub):
            continue  # "watch": its own subcommands follow
        lines += [".TP", f"\\fB{_roff(_usage(sub, with_help=False).removeprefix('fsmonctl '))}\\fR",
                  _roff(sub.description or ""), ".RS", *_options(sub, with_help=False),
                  ".RE"]
    lines += [".SH EXIT STATUS", *_items(FSMONCTL_EXIT),
              ".SH SEE ALSO", "fsmond(8), fsmond-notify(1), fsmond.toml(5), busctl(1), df(1)"]
    return "\n".join(lines) + "\n"


def notify_page(parser: argparse.ArgumentParser) -> str:
    """fsmond-notify(1): its parser's description, options and epilog."""
    lines = [*_header("fsmond-notify", 1, "User Commands")]
    lines[-1] += " \\- " + _roff(parser.description or "")
    lines += [".SH SYNOPSIS", _roff(_usage(parser)), ".SH OPTIONS", *_options(parser)]
    if parser.epilog:
        lines += [".SH NOTES", _roff(parser.epilog)]
    lines += [".SH SEE ALSO", "fsmond(8), fsmonctl(1), notify-send(1)"]
    return "\n".join(lines) + "\n"


CONFIG_EXAMPLE = """[daemon]
poll_interval = "10s"

[defaults]
lower = "10%"
upper = "5%"

[[watch]]
path = "/"
lower = "15%"
upper = "2GiB"

[[watch]]
path = "/var/lib/containers/*"
classes = ["err", "thr"]
"""


def config_page() -> str:
    from fsmond.config_doc import KEYS, TABLES, TYPES

    lines = [*_header("fsmond.toml", 5, "File Formats")]
    lines[-1] += " \\- fsmond configuration"
    lines += [".SH SYNOPSIS", "/etc/fsmond/fsmond.toml", ".SH DESCRIPTION",
              *_para("fsmond(8) reads its configuration from /etc/fsmond/fsmond.toml "
                     "(TOML), or the file given with --config. A missing default file "
                     "means the built-in defaults. Every key is optional. An unknown key "
                     "or a bad value is an error of one line naming the key, the value "
                     "and the reason: fsmond does not start (exit status 78), and a "
                     "reload keeps the old configuration. Check a file with fsmond "
                     "--check-config FILE; apply it with systemctl reload fsmond (or "
                     "SIGHUP)."),
              ".SH VALUES", *_items(TYPES)]
    for table, text in TABLES.items():
        lines += [f".SH {'[[watch]]' if table == 'watch' else '[' + table + ']'}",
                  *_para(text)]
        for t, key, kind, default, meaning in KEYS:
            if t != table:
                continue
            shown = f"{kind}, default {default}" if default is not None else kind
            lines += [".TP", f"\\fB{_roff(key)}\\fR ({_roff(shown)})", _roff(meaning)]
    lines += [".SH EXAMPLE",
              *_para("Sample every 10 seconds; warn at 10% and 5% available everywhere "
                     "but on /, which warns at 15% and 2 GiB; containers' file systems "
                     "send only errors and level crossings. With [[watch]] tables, only "
                     "what they match is watched."),
              ".PP", ".nf", ".RS 4", _roff(CONFIG_EXAMPLE.rstrip("\n")), ".RE", ".fi",
              ".SH FILES", *_items((("/etc/fsmond/fsmond.toml", "The configuration."),
                                    ("/usr/share/doc/fsmond/fsmond.toml.example",
                                     "A commented example."))),
              ".SH SEE ALSO", "fsmond(8), fsmonctl(1)"]
    return "\n".join(lines) + "\n"


def completion(parser: argparse.ArgumentParser) -> str:
    """A bash completion function: options, then subcommands by position."""
    words = [o for a in parser._actions for o in a.option_strings]
    subs = {name: sorted(o for a in sub._actions for o in a.option_strings)
            for name, sub in _subcommands(parser) if " " not in name}
    nested: dict[str, list[str]] = {
        name.split()[0]: [] for name, _ in _subcommands(parser) if " " in name}
    for name, _ in _subcommands(parser):
        if " " in name:
            nested[name.split()[0]].append(name.split()[1])
    fn = "_" + parser.prog.replace("-", "_")
    cases = "\n".join(
        f'        {name}) opts="{" ".join(opts + nested.get(name, []))}" ;;'
        for name, opts in subs.items())
    return f"""# bash completion for {parser.prog} (generated by fsmond)
{fn}() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} cmd="" opts w
    for w in "${{COMP_WORDS[@]:1:COMP_CWORD-1}}"; do
        case "$w" in -*) ;; *) [ -z "$cmd" ] && cmd=$w ;; esac
    done
    case "$cmd" in
{cases}
        *) opts="{" ".join(words + list(subs))}" ;;
    esac
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}}
complete -o default -F {fn} {parser.prog}
"""
