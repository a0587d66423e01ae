"""fsmond-notify end to end: the real agent following the real fsmond on a
private bus, showing notifications on a session of its own (a private
session bus, dunst drawing on Xvfb); what the server was asked is recorded
by a monitor connection on that session bus. For the Ignore action and a
server without actions, a small spec-faithful server stands in for dunst.

No test waits for nothing to happen: a later notification that must come
proves that what came before it was handled (fsmond's signals reach the
agent in order, and its calls reach the server in order)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.notify.servers import (
    AgentProcess,
    FileManager,
    NotificationsMonitor,
    SpecServer,
    agent,
    dunst,
    summary,
    urgency,
    xvfb,
)
from tests.publishers.buses import SYSTEM, dbus_daemon
from tests.running import bind_mounts, daemon_config, fsmond, loop_ext4, tmpfs, wait_until

pytestmark = [pytest.mark.root]
NORMAL, CRITICAL = 1, 2
NOBODY = 65534


@dataclass
class Desktop:
    bus: str
    display: str
    monitor: NotificationsMonitor


@pytest.fixture
def desktop() -> Iterator[Desktop]:
    """A session: X display, session bus, dunst, and the monitor."""
    with xvfb() as display, dbus_daemon() as bus, dunst(bus, display):
        monitor = NotificationsMonitor(bus)
        try:
            yield Desktop(bus, display, monitor)
        finally:
            monitor.close()


@pytest.fixture
def system_bus() -> Iterator[str]:
    with dbus_daemon() as address:
        yield address


def fill(path: Path, name: str, mib: float) -> None:
    with open(path / name, "wb") as f:
        f.write(b"x" * int(mib * (1 << 20)))
        f.flush()
        os.fsync(f.fileno())


def df_h(path: Path) -> tuple[str, str]:
    """What `df -h` says: (size, available)."""
    out = subprocess.run(["df", "-h", "--output=size,avail", str(path)], capture_output=True,
                         text=True, check=True).stdout.splitlines()[1].split()
    return out[0], out[1]


def dunst_count(bus: str) -> int:
    out = subprocess.run(["dunstctl", "count", "displayed"], capture_output=True, text=True,
                         check=True, env={**os.environ, "DBUS_SESSION_BUS_ADDRESS": bus})
    return int(out.stdout)


def test_lower_then_upper_replaces_one_notification_and_clearing_closes_it(
        tmp_path: Path, system_bus: str, desktop: Desktop) -> None:
    mon = desktop.monitor
    cfg = daemon_config(tmp_path / "fsmond.toml", str(tmp_path / "t"))
    # The agent starts first, fsmond after it (it waits for the name).
    with tmpfs(tmp_path / "t", "size=10m") as t, \
            agent(system_bus, desktop.bus, home=tmp_path) as a:
        a.wait_log("fsmond is not running")
        with fsmond(cfg, bus=system_bus):
            a.wait_log("following fsmond")
            fill(t, "a", 6)  # 40% left: lower (50%) reached
            lower = mon.wait_for(lambda c: c.member == "Notify")
            assert summary(lower) == "Low disk space on ~/t"  # $HOME is tmp_path
            size, avail = df_h(t)
            assert f"{avail} free of {size}" in lower.body[4]
            assert lower.body[1] == 0 and urgency(lower) == NORMAL
            assert lower.body[5] == ["default", "Open", "open", "Open", "ignore", "Ignore"]
            (nid,) = lower.reply or [0]

            fill(t, "b", 2.5)  # 15% left: upper (20%) reached
            upper = mon.wait_for(lambda c: c.member == "Notify" and "Very low" in summary(c))
            assert upper.body[1] == nid and upper.reply == [nid]  # replaced, not stacked
            assert urgency(upper) == CRITICAL
            assert dunst_count(desktop.bus) == 1

            (t / "a").unlink()
            (t / "b").unlink()  # all free: both levels clear
            close = mon.wait_for(lambda c: c.member == "CloseNotification")
            assert close.body == [nid]
            notifies = mon.notifies()
            assert all(c.body[1] in (0, nid) and c.reply == [nid] for c in notifies)
            assert notifies[-1] is not lower and mon.after(close) == []


def test_an_action_sent_before_the_notify_reply_still_counts(tmp_path: Path,
                                                             system_bus: str) -> None:
    """dbus-fast runs a signal's handler as the message arrives, and the code
    awaiting Notify's reply a turn later: a click that beats the reply must
    not be dropped as one on an unknown notification."""
    cfg = daemon_config(tmp_path / "fsmond.toml", str(tmp_path / "t"))
    with dbus_daemon() as session, tmpfs(tmp_path / "t", "size=10m") as t, \
            fsmond(cfg, bus=system_bus):
        server = SpecServer(session, ["actions", "body"])
        server.iface.click_at_once = "ignore"
        try:
            with agent(system_bus, session, home=tmp_path / "home") as a:
                a.wait_log("following fsmond")
                fill(t, "a", 6)  # lower
                a.wait_log(f"ignores saved in {tmp_path}/home/.local/state/fsmond/"
                           f"notify-ignores.json: {t}")
        finally:
            server.close()


def test_ignore_holds_until_the_next_level(tmp_path: Path, system_bus: str) -> None:
    cfg = daemon_config(tmp_path / "fsmond.toml", str(tmp_path / "t"))
    with dbus_daemon() as session, tmpfs(tmp_path / "t", "size=10m") as t, \
            fsmond(cfg, bus=system_bus):
        server = SpecServer(session, ["actions", "body"])
        mon = NotificationsMonitor(session)
        try:
            with agent(system_bus, session, home=tmp_path / "home") as a:
                a.wait_log("following fsmond")
                fill(t, "a", 6)  # lower
                lower = mon.wait_for(lambda c: c.member == "Notify")
                assert summary(lower) == f"Low disk space on {t}"
                (nid,) = lower.reply or [0]
                server.invoke(nid, "ignore")
                ignores = tmp_path / "home/.local/state/fsmond/notify-ignores.json"
                a.wait_log(f"ignores saved in {ignores}: {t}")
                assert json.loads(ignores.read_text())["ignored"] == {
                    str(t): {"kind": "lower", "errors": 0}}
                fill(t, "b", 1)  # 30% left: still lower, ignored
                fill(t, "c", 1.5)  # 15% left: upper, worse than what was ignored
                upper = mon.wait_for(lambda c: c.member == "Notify" and c is not lower)
                assert summary(upper) == f"Very low disk space on {t}"
                assert upper.body[1] == 0  # a new notification: the ignored one was closed
                assert mon.notifies() == [lower, upper]
        finally:
            mon.close()
            server.close()


def test_a_server_without_actions_still_gets_notifications(tmp_path: Path,
                                                           system_bus: str) -> None:
    cfg = daemon_config(tmp_path / "fsmond.toml", str(tmp_path / "t"))
    with dbus_daemon() as session, tmpfs(tmp_path / "t", "size=10m") as t, \
            fsmond(cfg, bus=system_bus):
        server = SpecServer(session, ["body"])
        mon = NotificationsMonitor(session)
        try:
            with agent(system_bus, session, home=tmp_path / "home") as a:
                a.wait_log("following fsmond")
                fill(t, "a", 9)  # 10% left: lower and upper in one go
                shown = mon.wait_for(lambda c: c.member == "Notify")
                assert summary(shown) == f"Very low disk space on {t}"
                assert shown.body[5] == []  # no buttons the server could not show
                assert server.iface.shown[shown.reply[0]][0] == summary(shown)  # type: ignore[index]
        finally:
            mon.close()
            server.close()


def test_a_mount_storm_gives_no_notification(tmp_path: Path, system_bus: str,
                                             desktop: Desktop) -> None:
    mon = desktop.monitor
    cfg = daemon_config(tmp_path / "fsmond.toml", str(tmp_path / "t"))
    targets = [tmp_path / "storm" / f"m{i}" for i in range(1000)]
    with tmpfs(tmp_path / "t", "size=10m") as t, fsmond(cfg, bus=system_bus) as p, \
            agent(system_bus, desktop.bus, home=tmp_path / "home") as a:
        a.wait_log("following fsmond")
        fill(t, "a", 6)  # lower: one notification open while the storm goes on
        lower = mon.wait_for(lambda c: c.member == "Notify")
        (t / "src").mkdir()
        with bind_mounts(t / "src", targets):  # the watched file system, 1,000 times more
            p.wait_for(lambda e: e["name"] == "mounted" and e["mount_point"] == str(targets[-1]))
            fill(t, "b", 2.5)  # upper, with 1,001 mount points
            upper = mon.wait_for(lambda c: c.member == "Notify" and c is not lower)
        assert summary(upper) == f"Very low disk space on {t}"  # the one people know
        p.wait_for(lambda e: e["name"] == "unmounted" and e["mount_point"] == str(targets[-1]))
        (t / "b").unlink()  # back to lower: the open notification says so
        back = mon.wait_for(lambda c: c.member == "Notify" and c not in (lower, upper))
        assert summary(back) == f"Low disk space on {t}"
        assert mon.notifies() == [lower, upper, back]
        assert {c.reply[0] for c in mon.notifies() if c.reply} == {lower.reply[0]}  # type: ignore[index]


def test_an_ext4_error_is_a_critical_notification_naming_the_mount_point(
        tmp_path: Path, system_bus: str, desktop: Desktop) -> None:
    mon = desktop.monitor
    cfg = daemon_config(tmp_path / "fsmond.toml", str(tmp_path / "e"))
    with loop_ext4(tmp_path / "img", tmp_path / "e") as (mp, loop), \
            fsmond(cfg, bus=system_bus) as p, \
            agent(system_bus, desktop.bus, home=tmp_path / "home") as a:
        a.wait_log("following fsmond")
        Path(f"/sys/fs/ext4/{loop}/trigger_fs_error").write_text("x")
        p.wait_for(p.named("error"))
        shown = mon.wait_for(lambda c: c.member == "Notify")
        assert summary(shown) == f"{mp} reported an error"
        assert urgency(shown) == CRITICAL
        assert "The kernel said: " in shown.body[4]
        assert dunst_count(desktop.bus) == 1


def test_a_forced_read_only_is_a_critical_notification_with_the_kernels_message(
        tmp_path: Path, system_bus: str, desktop: Desktop) -> None:
    mon = desktop.monitor
    cfg = daemon_config(tmp_path / "fsmond.toml", str(tmp_path / "e"))
    with loop_ext4(tmp_path / "img", tmp_path / "e", "errors=remount-ro") as (mp, loop), \
            fsmond(cfg, bus=system_bus) as p, \
            agent(system_bus, desktop.bus, home=tmp_path / "home") as a:
        a.wait_log("following fsmond")
        Path(f"/sys/fs/ext4/{loop}/trigger_fs_error").write_text("x")
        p.wait_for(p.named("read-only"))
        shown = mon.wait_for(lambda c: c.member == "Notify" and "read-only" in summary(c))
        assert summary(shown) == f"{mp} was made read-only after an error"
        assert urgency(shown) == CRITICAL


def test_fsmond_restarted_mid_run_gives_no_duplicate(tmp_path: Path, system_bus: str,
                                                     desktop: Desktop) -> None:
    mon = desktop.monitor
    cfg = daemon_config(tmp_path / "fsmond.toml", str(tmp_path / "t"))
    with tmpfs(tmp_path / "t", "size=10m") as t, \
            agent(system_bus, desktop.bus, home=tmp_path / "home") as a:
        with fsmond(cfg, bus=system_bus):
            a.wait_log("following fsmond")
            fill(t, "a", 6)  # lower
            lower = mon.wait_for(lambda c: c.member == "Notify")
        a.wait_log("fsmond went away")
        with fsmond(cfg, bus=system_bus):
            # The new fsmond finds the same file system at the same level; the
            # agent resynchronises and shows nothing again. Falling further
            # then replaces the one notification.
            assert sum("following fsmond" in line for line in a.log) >= 1
            fill(t, "b", 2.5)  # upper
            upper = mon.wait_for(lambda c: c.member == "Notify" and c is not lower)
            assert summary(upper) == f"Very low disk space on {t}"
            assert mon.notifies() == [lower, upper] and upper.body[1] == lower.reply[0]  # type: ignore[index]
            # The log comes through a pipe, maybe after the notification did.
            wait_until(lambda: sum("following fsmond" in line for line in a.log) >= 2,
                       "the agent following the new fsmond")
            assert sum("following fsmond" in line for line in a.log) == 2


def test_the_session_bus_going_away_and_back_shows_what_is_still_true(
        tmp_path: Path, system_bus: str) -> None:
    """The old server's notifications died with it: the agent reconnects and
    shows the new one what is still true, once, then replaces that one."""
    cfg = daemon_config(tmp_path / "fsmond.toml", str(tmp_path / "t"))
    socket = tmp_path / "session-bus"
    with xvfb() as display, tmpfs(tmp_path / "t", "size=10m") as t, \
            fsmond(cfg, bus=system_bus), ExitStack() as first:
        address = first.enter_context(dbus_daemon(socket=socket))
        first.enter_context(dunst(address, display))
        mon = NotificationsMonitor(address)
        first.callback(mon.close)
        with agent(system_bus, address, home=tmp_path / "home") as a:
            a.wait_log("following fsmond")
            fill(t, "a", 6)  # lower
            before = mon.wait_for(lambda c: c.member == "Notify")
            first.close()  # the session bus and its server go
            a.wait_log("the session bus went away")
            with dbus_daemon(socket=socket):
                mon = NotificationsMonitor(address)  # before the server: sees all it gets
                try:
                    with dunst(address, display):
                        again = mon.wait_for(lambda c: c.member == "Notify")
                        assert summary(again) == summary(before) == f"Low disk space on {t}"
                        assert again.body[1] == 0
                        fill(t, "b", 2.5)  # upper
                        upper = mon.wait_for(lambda c: c.member == "Notify" and c is not again)
                        assert upper.body[1] == again.reply[0]  # type: ignore[index]
                        assert mon.notifies() == [again, upper]
                finally:
                    mon.close()


def test_open_shows_the_mount_point_in_the_file_manager(tmp_path: Path, system_bus: str) -> None:
    cfg = daemon_config(tmp_path / "fsmond.toml", str(tmp_path / "t"))
    with dbus_daemon() as session, tmpfs(tmp_path / "t", "size=10m") as t, \
            fsmond(cfg, bus=system_bus):
        server = SpecServer(session, ["actions", "body"])
        files = FileManager(session)
        mon = NotificationsMonitor(session)
        try:
            with agent(system_bus, session, home=tmp_path / "home") as a:
                a.wait_log("following fsmond")
                fill(t, "a", 6)
                lower = mon.wait_for(lambda c: c.member == "Notify")
                server.invoke(lower.reply[0], "open")  # type: ignore[index]
                assert files.shown.get(timeout=20) == [f"file://{t}"]
        finally:
            mon.close()
            files.close()
            server.close()


def test_an_unprivileged_user_follows_fsmond_on_a_bus_with_the_shipped_policy(
        tmp_path: Path) -> None:
    """Nothing it calls or receives needs more than any user has."""
    home = Path(tempfile.mkdtemp(prefix="fsmond-notify-home-"))
    home.chmod(0o777)
    cfg = daemon_config(tmp_path / "fsmond.toml", str(tmp_path / "t"))
    try:
        with dbus_daemon(SYSTEM) as system, dbus_daemon() as session, \
                tmpfs(tmp_path / "t", "size=10m") as t, fsmond(cfg, bus=system):
            server = SpecServer(session, ["actions", "body"])
            mon = NotificationsMonitor(session)
            try:
                with agent(system, session, home, uid=NOBODY) as a:
                    a.wait_log("following fsmond")
                    fill(t, "a", 6)
                    lower = mon.wait_for(lambda c: c.member == "Notify")
                    assert summary(lower) == f"Low disk space on {t}"
                    server.invoke(lower.reply[0], "ignore")  # type: ignore[index]
                    a.wait_log("ignores saved in")  # in its own $XDG_STATE_HOME
                    assert (home / ".local/state/fsmond/notify-ignores.json").stat().st_uid \
                        == NOBODY
            finally:
                mon.close()
                server.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_second_agent_in_the_same_session_leaves_it_to_the_first(tmp_path: Path) -> None:
    with dbus_daemon() as system, dbus_daemon() as session, \
            agent(system, session, home=tmp_path / "home") as first:
        first.wait_log("notification server")
        second = AgentProcess(system, session, tmp_path / "home")
        assert second.proc.wait(20) == 0
        second.stop()
        assert any("another fsmond-notify runs in this session" in line for line in second.log)
