"""Entry points: `fsmond` (the daemon) and `fsmonctl` (the client)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from fsmond import __version__
from fsmond.config import DEFAULT_CONFIG_PATH, Config, load_config
from fsmond.errors import ConfigError, FsmondError
from fsmond.publishers.console import setup_logging, to_the_journal

log = logging.getLogger("fsmond")

LOG_LEVELS = ("debug", "info", "warning", "error")


def fsmond_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fsmond",
        description="Watch every mounted file system and publish what happens to it.",
        epilog="fsmond install-system-files [--destdir D] [--prefix /usr] installs the "
        "unit, bus policy, man pages and completion.",
    )
    p.add_argument("--config", metavar="FILE",
                   help=f"configuration file (default {DEFAULT_CONFIG_PATH}; missing = defaults)")
    p.add_argument("--bus", metavar="BUS", help="system, session or a D-Bus address")
    p.add_argument("--no-dbus", action="store_true", help="do not publish on D-Bus")
    p.add_argument("--print-events", action="store_true",
                   help="write each event as one JSON line to stdout")
    p.add_argument("--log-level", choices=LOG_LEVELS, help="log level on stderr")
    p.add_argument("--check-config", metavar="FILE", help="validate FILE and exit")
    p.add_argument("--trace", metavar="FILE",
                   help="append every observation the engine is given to FILE (for replay)")
    p.add_argument("--version", action="version", version=f"fsmond {__version__}")
    return p


def check_config(path: str) -> int:
    try:
        load_config(path, must_exist=True)
    except ConfigError as e:
        # <3>: when systemctl reload runs the check, the journal files it as an error.
        prefix = "<3>" if to_the_journal(sys.stderr, dict(os.environ)) else ""
        print(f"{prefix}fsmond: {e}", file=sys.stderr)
        return ConfigError.exit_status
    print(f"{path}: configuration is valid")
    return 0


def fsmond_main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["install-system-files"]:
        from fsmond.install import main

        return main(argv[1:])
    args = fsmond_parser().parse_args(argv)
    if args.check_config:
        return check_config(args.check_config)
    try:
        config = load_config(args.config or DEFAULT_CONFIG_PATH, must_exist=bool(args.config))
    except ConfigError as e:
        setup_logging("info")
        log.error("%s", e)
        return ConfigError.exit_status
    setup_logging(args.log_level or config.daemon.log_level)
    try:
        with contextlib.ExitStack() as stack:
            trace = stack.enter_context(open(args.trace, "a")) if args.trace else None
            asyncio.run(_serve(config, args, trace))
    except (FsmondError, OSError) as e:
        log.error("%s", e)
        return 1
    except ExceptionGroup as eg:
        # A required component failed in the task group: say what, exit non-zero
        # (systemd restarts us); anything that is not ours is a bug and re-raised.
        ours, rest = eg.split((FsmondError, OSError))
        if rest is not None:
            raise
        for err in _leaves(ours):
            log.error("%s", err)
        return 1
    return 0


def _leaves(e: BaseException | None) -> list[BaseException]:
    """The errors inside nested exception groups (task groups within task groups)."""
    if e is None:
        return []
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in _leaves(sub)]
    return [e]


async def _serve(config: Config, args: argparse.Namespace, trace: TextIO | None) -> None:
    from fsmond.daemon import Daemon
    from fsmond.lifecycle import Publisher
    from fsmond.publishers.console import ConsolePublisher

    publishers: list[Publisher] = []
    if args.print_events:
        publishers.append(ConsolePublisher())
    daemon = Daemon(config, args.config, publishers=publishers)
    if trace is not None:
        from fsmond.trace import Tracer

        daemon.tracer = Tracer(trace)
    if config.dbus.enabled and not args.no_dbus:
        from fsmond.publishers.dbus import DbusPublisher

        daemon.publishers.append(DbusPublisher(daemon.control, args.bus or config.dbus.bus))
    if config.mqtt.enabled:
        from fsmond.publishers.mqtt import MqttPublisher

        daemon.publishers.append(MqttPublisher(config.mqtt, daemon.control))
    await daemon.run()


def fsmonctl_main(argv: Sequence[str] | None = None) -> int:
    from fsmond.ctl import main

    return main(argv)
