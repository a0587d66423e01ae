"""fsmond as a system service: installed files, unit checks, sd_notify, the host's view."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fsmond.install import install
from tests.publishers.buses import SYSTEM, busctl, dbus_daemon
from tests.running import (
    FSMOND,
    FsmondProcess,
    daemon_config,
    dev_of,
    fsmond,
    run,
    tmpfs,
    write_config,
)

VENV_BIN = str(Path(sys.executable).parent)
UNIT = Path(__file__).parent.parent / "systemd" / "fsmond.service"


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    dest = tmp_path / "dest"
    install(str(dest), "/usr", bindir=VENV_BIN)
    return dest


def test_install_puts_every_file_where_systemd_and_dbus_read_them(installed: Path) -> None:
    for rel in ("usr/lib/systemd/system/fsmond.service",
                "usr/share/dbus-1/system.d/org.fsmond.FsMon1.conf",
                "usr/share/dbus-1/system-services/org.fsmond.FsMon1.service",
                "usr/share/dbus-1/interfaces/org.fsmond.FsMon1.Manager.xml",
                "usr/share/dbus-1/interfaces/org.fsmond.FsMon1.FileSystem.xml",
                "usr/share/man/man8/fsmond.8", "usr/share/man/man1/fsmonctl.1",
                "usr/share/man/man5/fsmond.toml.5", "etc/fsmond/fsmond.toml",
                "usr/share/bash-completion/completions/fsmonctl"):
        assert (installed / rel).is_file(), rel
    manager = (installed / "usr/share/dbus-1/interfaces/org.fsmond.FsMon1.Manager.xml").read_text()
    assert 'name="GetChangesSince"' in manager and 'name="MountsChanged"' in manager
    fs8 = (installed / "usr/share/man/man8/fsmond.8").read_text()
    assert "print\\-events" in fs8 and "check\\-config" in fs8
    ctl1 = (installed / "usr/share/man/man1/fsmonctl.1").read_text()
    assert "watch add" in ctl1 and "monitor" in ctl1
    toml5 = (installed / "usr/share/man/man5/fsmond.toml.5").read_text()
    assert "poll_interval" in toml5 and "[mqtt]" in toml5
    unit = (installed / "usr/lib/systemd/system/fsmond.service").read_text()
    assert f"ExecStart={VENV_BIN}/fsmond --config" in unit
    assert f"ExecReload={VENV_BIN}/fsmond --check-config" in unit  # a broken file fails
    assert "/usr/bin/fsmond" not in unit
    activation = installed / "usr/share/dbus-1/system-services/org.fsmond.FsMon1.service"
    assert "SystemdService=fsmond.service" in activation.read_text()


def test_policy_goes_to_etc_with_another_prefix(tmp_path: Path) -> None:
    install(str(tmp_path), "/usr/local")
    assert (tmp_path / "etc/dbus-1/system.d/org.fsmond.FsMon1.conf").is_file()
    assert not (tmp_path / "usr/local/share/dbus-1/system.d").exists()


def test_completion_is_valid_bash(installed: Path) -> None:
    script = installed / "usr/share/bash-completion/completions/fsmonctl"
    subprocess.run(["bash", "-n", str(script)], check=True)
    out = subprocess.run(["bash", "-c", f'source {script}; COMP_WORDS=(fsmonctl wat); '
                          'COMP_CWORD=1; _fsmonctl; echo "${COMPREPLY[@]}"'],
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["watches", "watch"] or set(out.split()) == {"watches", "watch"}


def test_the_desktop_agent_is_installed_like_desktop_software(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "fsmond-notify"  # what pip's console script does
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m fsmond.notify "$@"\n')
    script.chmod(0o755)
    dest = tmp_path / "dest"
    install(str(dest), "/usr", bindir=str(bindir))
    unit = dest / "usr/lib/systemd/user/fsmond-notify.service"
    text = unit.read_text()
    assert f"ExecStart={script}\n" in text and "WantedBy=graphical-session.target" in text
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    autostart = dest / "etc/xdg/autostart/fsmond-notify.desktop"
    r = subprocess.run(["desktop-file-validate", str(autostart)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "", r.stdout
    assert (dest / "usr/share/applications/fsmond-notify.desktop").read_text() == \
        autostart.read_text()  # the desktop-entry hint names it
    # The autostart entry's command line runs the agent.
    exec_line = next(line for line in autostart.read_text().splitlines()
                     if line.startswith("Exec="))
    home = tmp_path / "home"
    (home / ".config/fsmond").mkdir(parents=True)
    (home / ".config/fsmond/notify.toml").write_text('exclude = ["/boot/efi"]\n')
    r = subprocess.run([*exec_line.removeprefix("Exec=").split(), "--check-config"],
                       capture_output=True, text=True, env={**os.environ, "HOME": str(home)})
    assert r.returncode == 0 and "notify.toml: configuration is valid" in r.stdout, r.stderr
    page = (dest / "usr/share/man/man1/fsmond-notify.1").read_text()
    assert "session\\-bus" in page and "notify.toml" in page and "exclude" in page


def test_unit_verifies_cleanly_and_exposure_is_at_most_3(installed: Path) -> None:
    unit = installed / "usr/lib/systemd/system/fsmond.service"
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(UNIT)],
                       capture_output=True, text=True)
    m = re.search(r"Overall exposure level for fsmond.service: ([\d.]+)", r.stdout + r.stderr)
    assert m is not None, r.stdout + r.stderr
    assert float(m.group(1)) <= 3.0
    text = UNIT.read_text()
    for must_not in ("ProtectKernelLogs=yes", "PrivateDevices=yes"):
        assert must_not not in text  # /dev/kmsg must stay readable
    assert "Type=notify" in text and "BusName=org.fsmond.FsMon1" in text


@pytest.mark.root
def test_installed_policy_in_a_real_system_bus(installed: Path, tmp_path: Path) -> None:
    policy = installed / "usr/share/dbus-1/system.d/org.fsmond.FsMon1.conf"
    cfg = write_config(tmp_path / "f.toml", "[daemon]\nudev = false\nkmsg = false\n"
                       '[[watch]]\npath = "/nonexistent"\n')
    with dbus_daemon(SYSTEM, policy=policy) as bus, fsmond(cfg, bus=bus):
        r = busctl(bus, "call", "org.fsmond.FsMon1", "/org/fsmond/FsMon1",
                   "org.fsmond.FsMon1.Manager", "GetStatus", uid=65534)
        assert json.loads(r.stdout)["data"][0]["version"]["data"]
        r = busctl(bus, "call", "org.fsmond.FsMon1", "/org/fsmond/FsMon1",
                   "org.fsmond.FsMon1.Manager", "Reload", uid=65534, check=False)
        assert r.returncode != 0


def notify_socket(tmp_path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(tmp_path / "notify"))
    s.settimeout(20)
    return s


@pytest.mark.root
def test_ready_only_after_the_name_is_owned_then_status_watchdog_stopping(
        tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "f.toml", "[daemon]\nudev = false\n"
                       '[[watch]]\npath = "/nonexistent"\n')
    sock = notify_socket(tmp_path)
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
    try:
        with dbus_daemon() as bus:
            os.environ.update(env)
            try:
                p = FsmondProcess(cfg, bus=bus)
            finally:
                for k in env:
                    del os.environ[k]
            try:
                first = sock.recv(4096).decode()
                # at READY the name must already be owned
                owned = busctl(bus, "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                               "org.freedesktop.DBus", "NameHasOwner", "s", "org.fsmond.FsMon1")
                assert first.startswith("READY=1\nSTATUS=") and "mounts via" in first
                assert json.loads(owned.stdout)["data"] == [True]
                assert sock.recv(100) == b"WATCHDOG=1"
                assert sock.recv(100) == b"WATCHDOG=1"
            finally:
                p.stop()
            rest = []
            sock.settimeout(0.5)
            try:
                while True:
                    rest.append(sock.recv(100))
            except TimeoutError:
                pass
            assert b"STOPPING=1" in rest
    finally:
        sock.close()


@pytest.mark.root
def test_host_view_survives_a_read_only_sandbox(tmp_path: Path) -> None:
    """ProtectSystem=strict makes every mount read-only *for the daemon* with
    read-only bind remounts in its own namespace. The daemon must still report
    the host's file system as read-write and keep its thresholds working."""
    with tmpfs(tmp_path / "t", "size=10m") as t:
        cfg = daemon_config(tmp_path / "f.toml", str(t),
                            mount_namespace=f'"/proc/{os.getpid()}/ns/mnt"')
        sandbox = (f"mount --make-rslave / && mount -o remount,bind,ro {t} && "
                   f"exec {sys.executable} -m fsmond \"$@\"")
        p = FsmondProcess(cfg, launcher=["unshare", "-m", "sh", "-c", sandbox, "sh"])
        try:
            p.wait_ready()
            assert os.statvfs(t).f_flag & os.ST_RDONLY == 0  # rw here, ro in the sandbox
            (t / "a").write_bytes(b"x" * (6 << 20))
            e = p.wait_for(p.named("threshold", level="lower", state="reached"))
            assert e["device"] == dev_of(t)
        finally:
            p.stop()
        assert not [e for e in p.events if e["name"] == "read-only"]


# How systemd builds a unit's namespace (ProtectSystem=, PrivateMounts=, ...):
# the new root is moved over the old one, which stays underneath, out of reach.
UNDER_A_MOVED_ROOT = ("mount --make-rslave / && mkdir -p /run/fsmond-root && "
                      "mount --rbind / /run/fsmond-root && cd /run/fsmond-root && "
                      f"mount --move . / && exec chroot . {sys.executable} -m fsmond \"$@\"")


@pytest.mark.root
def test_a_mount_made_after_start_under_a_moved_root_is_one_mount_and_sampled(
        tmp_path: Path) -> None:
    """A mount made outside propagates into both copies of the tree: the one
    under the daemon's root and the hidden one below it. fanotify reports
    both; only the reachable one is a mount (with its path), and its file
    system is sampled (a threshold fires)."""
    with tmpfs(tmp_path / "share", "size=1m") as share:
        run("mount", "--make-shared", str(share))
        cfg = daemon_config(tmp_path / "f.toml", f"{share}/*")
        p = FsmondProcess(cfg, launcher=["unshare", "-m", "--propagation", "unchanged",
                                         "sh", "-c", UNDER_A_MOVED_ROOT, "sh"])
        try:
            p.wait_ready()
            with tmpfs(share / "late", "size=10m") as late:
                (late / "a").write_bytes(b"x" * (6 << 20))
                e = p.wait_for(p.named("threshold", level="lower", state="reached"))
                assert e["mount_point"] == str(late)
                time.sleep(0.5)  # a second copy's events would come with the first's
        finally:
            p.stop()
    mounted = [e for e in p.events if e["name"] == "mounted"]
    assert [e["mount_point"] for e in mounted] == [str(late)]
    added = [e for e in p.events if e["name"] == "watch-added"]
    assert [e["mount_point"] for e in added] == [str(late)]


@pytest.mark.root
@pytest.mark.parametrize(("drop", "namespace", "says"), [
    ("sys_admin", "", "[Errno 1] fanotify mount-namespace mark: Operation not permitted"),
    ("sys_ptrace", "/proc/1/ns/mnt", "[Errno 13] Permission denied: '/proc/1/ns/mnt'"),
])
def test_a_backend_refused_by_a_permission_is_a_warning_with_its_errno(
        tmp_path: Path, drop: str, namespace: str, says: str) -> None:
    """Not the kernel's age: a capability the sandbox took away. The log says
    which call failed and how, at WARNING, and the mountinfo backend runs."""
    cfg = daemon_config(tmp_path / "f.toml", "/nonexistent", kmsg="false",
                        fanotify_errors="false", mount_namespace=f'"{namespace}"')
    launcher = ["setpriv", f"--inh-caps=-{drop}", f"--bounding-set=-{drop}", *FSMOND]
    with fsmond(cfg, launcher=launcher) as p:
        warning = [line for line in p.stderr if "mount backend: mountinfo" in line]
        assert len(warning) == 1 and warning[0].startswith("fsmond WARNING"), p.stderr
        assert says in warning[0]
