"""`fsmond-notify`: the wiring of follower, policy, notifier and the ignore store.

Everything that happens comes in as a callback on the one event loop
(fsmond's signals, the server's signals), goes through the pure policy, and
the notifications it calls for go out through the notifier's queue, in
order. Ignores are saved after each change, in a thread.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fsmond import __version__
from fsmond.errors import ConfigError
from fsmond.notify.config import NotifyConfig, load_notify_config
from fsmond.notify.follow import FsmondFollower
from fsmond.notify.policy import Action, FsView, Policy
from fsmond.notify.server import AlreadyRunning, Notifier
from fsmond.notify.store import load_ignores, save_ignores, state_dir
from fsmond.publishers.console import setup_logging

log = logging.getLogger("fsmond.notify")


def config_path(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(environ.get("HOME", "~"), ".config")
    return Path(base) / "fsmond" / "notify.toml"


def session_address(given: str | None, environ: Mapping[str, str]) -> str | None:
    """--session-bus, DBUS_SESSION_BUS_ADDRESS, or the user bus's socket, as
    libdbus and sd-bus find it."""
    if given:
        return given
    if environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return environ["DBUS_SESSION_BUS_ADDRESS"]
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.exists(os.path.join(runtime, "bus")):
        return f"unix:path={runtime}/bus"
    return None


class Agent:
    def __init__(self, config: NotifyConfig, fsmond_bus: str | None, session_bus: str,
                 ignores_file: Path, home: str) -> None:
        self.policy = Policy(config.filter(home), home, load_ignores(ignores_file))
        self.ignores_file = ignores_file
        self.notifier = Notifier(session_bus, self._on_action, self._on_closed, self._on_reset)
        self.follower = FsmondFollower(fsmond_bus, self)
        self._saves: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.notifier.run())
            tg.create_task(self.follower.run())

    def _apply(self, actions: list[Action]) -> None:
        self.notifier.send(actions)
        if self.policy.ignores_changed:
            self.policy.ignores_changed = False
            task = asyncio.get_running_loop().create_task(self._save(dict(self.policy.ignores)))
            self._saves.add(task)
            task.add_done_callback(self._saves.discard)

    async def _save(self, ignores: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(save_ignores, self.ignores_file, ignores)
        except OSError as e:
            log.warning("%s: cannot save the ignores: %s", self.ignores_file, e)
            return
        log.info("ignores saved in %s: %s", self.ignores_file, ", ".join(sorted(ignores)))

    # from the follower (fsmond)
    def resync(self, views: list[FsView]) -> None:
        self._apply(self.policy.resync(views))

    def update(self, view: FsView) -> None:
        self._apply(self.policy.update(view))

    def event(self, path: str, name: str, details: Mapping[str, Any]) -> None:
        self._apply(self.policy.event(path, name, details))

    def remove(self, path: str) -> None:
        self._apply(self.policy.remove(path))

    # from the notifier (the server)
    def _on_action(self, path: str, key: str) -> None:
        if key == "ignore":
            self._apply(self.policy.ignore(path))

    def _on_closed(self, path: str) -> None:
        self._apply(self.policy.closed(path))

    def _on_reset(self) -> None:
        self._apply(self.policy.server_reset())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fsmond-notify",
        description="Desktop notifications of what fsmond sees: one per file system, "
        "replaced as it changes, closed when it clears; Ignore holds until it gets worse.",
        epilog="Configuration: $XDG_CONFIG_HOME/fsmond/notify.toml (default ~/.config), "
        "TOML, every key optional, unknown keys are errors: classes = [\"thr\", \"warn\", "
        "\"err\"] (thr: space and inode levels; warn: no space, no inodes; err: forced "
        "read-only, kernel errors); include = [] and exclude = [] (mount-point globs, * "
        "within one path component, ~ for $HOME; an empty include means every file system). "
        "Read-only images (squashfs, iso9660, erofs...) never notify. Ignores are kept in "
        "$XDG_STATE_HOME/fsmond/notify-ignores.json (default ~/.local/state). Exit status: "
        "0, or 1 without a session bus, 78 for a bad configuration.")
    p.add_argument("--bus", metavar="BUS", default="system",
                   help="fsmond's bus: system (default), session or an address")
    p.add_argument("--session-bus", metavar="ADDRESS",
                   help="the notification server's bus (default: DBUS_SESSION_BUS_ADDRESS)")
    p.add_argument("--config", metavar="FILE",
                   help="configuration (default $XDG_CONFIG_HOME/fsmond/notify.toml)")
    p.add_argument("--check-config", action="store_true",
                   help="validate the configuration and exit")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   default="info", help="log level on stderr")
    p.add_argument("--version", action="version", version=f"fsmond-notify {__version__}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    environ = dict(os.environ)
    setup_logging(args.log_level)
    path = Path(args.config) if args.config else config_path(environ)
    try:
        config = load_notify_config(str(path))
    except ConfigError as e:
        print(f"fsmond-notify: {e}", file=sys.stderr)
        return ConfigError.exit_status
    if args.check_config:
        print(f"{path}: configuration is valid")
        return 0
    session = session_address(args.session_bus, environ)
    if session is None:
        print("fsmond-notify: no session bus (DBUS_SESSION_BUS_ADDRESS is not set; "
              "use --session-bus)", file=sys.stderr)
        return 1
    if args.bus == "session":
        fsmond_bus: str | None = session
    else:
        fsmond_bus = None if args.bus == "system" else args.bus
    agent = Agent(config, fsmond_bus, session, state_dir(environ) / "notify-ignores.json",
                  environ.get("HOME", ""))
    try:
        asyncio.run(agent.run())
    except KeyboardInterrupt:
        return 130
    except ExceptionGroup as eg:
        running, rest = eg.split(AlreadyRunning)
        if rest is not None or running is None:
            raise
        log.info("%s", running.exceptions[0])
    return 0
