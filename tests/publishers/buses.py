"""Private dbus-daemons for tests: a permissive one, and a system-type one that
includes the shipped policy (config/org.fsmond.FsMon1.conf)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

POLICY = Path(__file__).parent.parent.parent / "config" / "org.fsmond.FsMon1.conf"

PERMISSIVE = """<busconfig><type>session</type><listen>unix:path={sock}</listen>
<auth>EXTERNAL</auth><policy context="default"><allow user="*"/><allow own="*"/>
<allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/></policy></busconfig>"""

# The defaults of Debian's /usr/share/dbus-1/system.conf, plus our policy.
SYSTEM = """<busconfig><type>system</type><listen>unix:path={sock}</listen>
<auth>EXTERNAL</auth>
<policy context="default">
  <allow user="*"/><deny own="*"/><deny send_type="method_call"/>
  <allow send_type="signal"/>
  <allow send_requested_reply="true" send_type="method_return"/>
  <allow send_requested_reply="true" send_type="error"/>
  <allow receive_type="method_call"/><allow receive_type="method_return"/>
  <allow receive_type="error"/><allow receive_type="signal"/>
  <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
  <allow send_destination="org.freedesktop.DBus"
         send_interface="org.freedesktop.DBus.Introspectable"/>
</policy>
<include>{policy}</include></busconfig>"""


PIDS: dict[str, int] = {}  # address -> the dbus-daemon's pid, while it runs


@contextmanager
def dbus_daemon(template: str = PERMISSIVE, policy: Path = POLICY,
                activates: dict[str, str] | None = None,
                socket: Path | None = None) -> Iterator[str]:
    """A dbus-daemon of its own; yields its address, the path of its socket
    (`socket`, or one in a folder of its own). The socket's folder is
    world-searchable so tests can call it as an unprivileged uid too.
    `activates` maps bus names to the command that D-Bus activation runs.
    A bus at a `socket` of the test's choosing can be stopped and another
    started at the same address (a session ending and a new one beginning)."""
    folder = tempfile.mkdtemp(prefix="fsmond-bus-")
    os.chmod(folder, 0o755)
    socket = socket or Path(folder) / "bus"
    conf = Path(folder) / "bus.conf"
    services = Path(folder) / "services"
    services.mkdir()
    for name, command in (activates or {}).items():
        (services / f"{name}.service").write_text(
            f"[D-BUS Service]\nName={name}\nExec={command}\n")
    conf.write_text(template.format(sock=socket, policy=policy).replace(
        "</busconfig>", f"<servicedir>{services}</servicedir></busconfig>"))
    proc = subprocess.Popen(["dbus-daemon", "--nofork", "--print-address",
                             f"--config-file={conf}"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        printed = proc.stdout.readline().strip()  # once it listens
        assert printed.startswith("unix:"), printed
        os.chmod(socket, 0o777)
        address = f"unix:path={socket}"  # no guid: a bus started again has another
        PIDS[address] = proc.pid
        try:
            yield address
        finally:
            del PIDS[address]
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
        shutil.rmtree(folder, ignore_errors=True)
        socket.unlink(missing_ok=True)


def busctl(address: str, *args: str, uid: int | None = None, check: bool = True,
           timeout: float = 30) -> subprocess.CompletedProcess[str]:
    cmd = ["busctl", f"--address={address}", "--json=short", *args]
    if uid is not None:
        cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                          timeout=timeout, check=check)
