"""The MQTT publisher end to end: the real daemon, a real mosquitto, a real subscriber."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.publishers.mosquitto import Broker, Subscriber
from tests.running import FsmondProcess, daemon_config, fsmond, tmpfs

pytestmark = [pytest.mark.root]


def config(tmp_path: Path, watch: str, url: str, extra: str = "") -> Path:
    return daemon_config(tmp_path / "fsmond.toml", watch, tables=f"""[mqtt]
enabled = true
url = "{url}"
prefix = "test"
discovery = true
reconnect_max = "1s"
queue_size = 100
{extra}""")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    folder = tmp_path / "broker"
    folder.mkdir()
    b = Broker(folder).start()
    try:
        yield b
    finally:
        b.stop()


def host() -> str:
    import socket

    from fsmond.publishers.mqtt_format import safe_id
    return safe_id(socket.gethostname())


def test_status_states_events_discovery_and_clean_stop(tmp_path: Path, broker: Broker) -> None:
    sub = Subscriber(broker.port)
    base = f"test/{host()}"
    try:
        with tmpfs(tmp_path / "t", "size=10m") as t:
            cfg = config(tmp_path, str(t), f"mqtt://127.0.0.1:{broker.port}")
            with fsmond(cfg) as p:
                sub.wait_for(lambda m: m.topic == f"{base}/status" and m.payload == b"online")
                state = sub.wait_for(lambda m: m.topic.startswith(f"{base}/fs/")
                                     and m.topic.endswith("/state") and m.payload != b"")
                assert json.loads(state.payload)["mount_points"] == [str(t)]
                cfgs = [m for m in sub.messages if m.topic.startswith("homeassistant/")]
                sub.wait_for(lambda m: m.topic.startswith("homeassistant/binary_sensor/"))
                (t / "a").write_bytes(b"x" * (6 << 20))
                ev = sub.wait_for(lambda m: m.topic == f"{base}/event/thr/threshold")
                assert json.loads(ev.payload)["details"]["state"] == "reached"
                assert not ev.retain
                low = sub.wait_for(lambda m: m.topic == state.topic
                                   and json.loads(m.payload or b"{}").get("low_space") is True)
                assert low.payload
                del cfgs
            assert p.proc.returncode == 0
        sub.wait_for(lambda m: m.topic == f"{base}/status" and m.payload == b"offline")
    finally:
        sub.close()
    # retained: a new subscriber sees status and state at once
    late = Subscriber(broker.port)
    try:
        late.wait_for(lambda m: m.topic == f"{base}/status" and m.retain
                      and m.payload == b"offline")
    finally:
        late.close()


def test_a_broker_that_stops_answering_never_holds_up_a_stop(tmp_path: Path,
                                                             broker: Broker) -> None:
    """SIGTERM while the broker is connected but hung: `offline` and the
    DISCONNECT go unanswered, and fsmond must still stop, and cleanly."""
    sub = Subscriber(broker.port, "test/+/status")
    try:
        cfg = config(tmp_path, "/nonexistent", f"mqtt://127.0.0.1:{broker.port}")
        with fsmond(cfg) as p:
            sub.wait_for(lambda m: m.payload == b"online")
            assert broker.proc is not None
            broker.proc.send_signal(signal.SIGSTOP)
            p.proc.send_signal(signal.SIGTERM)
            assert p.proc.wait(10) == 0  # a hang, not a timing: it used to never stop
    finally:
        if broker.proc is not None:
            broker.proc.send_signal(signal.SIGCONT)
        sub.close()


def test_kill_9_leaves_the_will(tmp_path: Path, broker: Broker) -> None:
    sub = Subscriber(broker.port, "test/+/status")
    try:
        cfg = config(tmp_path, "/nonexistent", f"mqtt://127.0.0.1:{broker.port}",
                     'keepalive = "1s"')
        p = FsmondProcess(cfg)
        try:
            p.wait_ready()
            sub.wait_for(lambda m: m.payload == b"online")
            p.proc.send_signal(signal.SIGKILL)
            p.proc.wait(10)
            sub.wait_for(lambda m: m.payload == b"offline", timeout=30)
        finally:
            p.stop()
    finally:
        sub.close()


def test_broker_down_at_start_then_restarted_nothing_lost(tmp_path: Path) -> None:
    folder = tmp_path / "broker"
    folder.mkdir()
    broker = Broker(folder).start()
    # A persistent subscriber: the broker keeps QoS 1 messages for it while away.
    sub = Subscriber(broker.port, "test/+/event/#", client_id="fsmond-test-sub")
    broker.stop()
    base = f"test/{host()}"
    base_dir = tmp_path / "m"
    base_dir.mkdir()
    cfg = config(tmp_path, f"{base_dir}/*", f"mqtt://127.0.0.1:{broker.port}")

    def mount(name: str) -> str:
        d = base_dir / name
        d.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "q", str(d)], check=True)
        p.wait_for(lambda e: e["name"] == "mounted" and e["mount_point"] == str(d))
        return str(d)

    def delivered(point: str) -> int:
        m = sub.wait_for(lambda m: m.topic == f"{base}/event/info/mounted"
                         and json.loads(m.payload)["mount_point"] == point, timeout=30)
        return int(json.loads(m.payload)["seq"])

    try:
        with fsmond(cfg) as p:  # ready although the broker is down
            points = [mount(f"x{i}") for i in range(3)]
            broker.start()
            seqs = [delivered(point) for point in points]
            assert seqs == sorted(seqs)  # queued events go out in order
            # Lose the broker once more, mid-run: after the session's start-up
            # (states are its last publishes), so the loss lands inside its TaskGroup.
            states = Subscriber(broker.port, f"{base}/fs/+/state")
            for point in points:
                dev = next(e["device"] for e in p.events if e["mount_point"] == point)
                states.wait_for(lambda m, d=dev: m.topic.endswith(f"/{d.replace(':', '_')}/state"))
            states.close()
            time.sleep(1)
            broker.stop()
            later = mount("later")
            broker.start()
            delivered(later)
    finally:
        sub.close()
        broker.stop()
        subprocess.run(f"umount {base_dir}/*", shell=True, check=False)


def test_tls_with_a_test_ca(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=pki)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=fsmond test CA")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    (pki / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    folder = tmp_path / "broker"
    folder.mkdir()
    broker = Broker(folder, tls={"ca": pki / "ca.crt", "cert": pki / "server.crt",
                                 "key": pki / "server.key"}).start()
    sub = Subscriber(broker.port, tls_ca=pki / "ca.crt")
    try:
        cfg = config(tmp_path, "/nonexistent", f"mqtts://127.0.0.1:{broker.port}",
                     f'ca_file = "{pki / "ca.crt"}"')
        with fsmond(cfg):
            sub.wait_for(lambda m: m.topic.endswith("/status") and m.payload == b"online")
    finally:
        sub.close()
        broker.stop()


def test_a_broker_away_drops_the_oldest_beyond_the_bound_and_says_so(tmp_path: Path) -> None:
    from tests.publishers.buses import busctl, dbus_daemon
    from tests.publishers.mosquitto import free_port

    base = tmp_path / "m"
    base.mkdir()
    cfg = config(tmp_path, f"{base}/*", f"mqtt://127.0.0.1:{free_port()}").read_text()
    cfg = cfg.replace("queue_size = 100", "queue_size = 2")
    (tmp_path / "fsmond.toml").write_text(cfg)
    with dbus_daemon() as bus, fsmond(tmp_path / "fsmond.toml", bus=bus) as p:
        for i in range(5):
            d = base / f"x{i}"
            d.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "q", str(d)], check=True)
            p.wait_for(lambda e, d=d: e["name"] == "mounted" and e["mount_point"] == str(d))
        status = json.loads(busctl(bus, "call", "org.fsmond.FsMon1", "/org/fsmond/FsMon1",
                                   "org.fsmond.FsMon1.Manager", "GetStatus").stdout)["data"][0]
        # 5 mounted + 5 watch-added events into a queue of 2
        assert status["mqtt_dropped"]["data"] >= 8
        assert any("oldest items dropped" in line for line in p.stderr)
    subprocess.run(f"umount {base}/*", shell=True, check=False)


def test_a_stop_is_not_lost_when_leaving_the_broker_fails(tmp_path: Path,
                                                         broker: Broker) -> None:
    """aiomqtt raises MqttError when the DISCONNECT is not answered in time;
    during a stop that error must not be taken for a lost broker and retried."""
    from fsmond.config import load_config
    from fsmond.publishers.mqtt import MqttPublisher

    fail = [True]

    class Leaving(aiomqtt.Client):
        async def __aexit__(self, *exc: Any) -> None:
            await super().__aexit__(*exc)
            if fail[0]:
                raise aiomqtt.MqttError("Operation timed out")

    class FailingToLeave(MqttPublisher):
        def _client(self) -> aiomqtt.Client:
            client = super()._client()
            client.__class__ = Leaving
            return client

    cfg = load_config(str(config(tmp_path, "/nonexistent", f"mqtt://127.0.0.1:{broker.port}")))
    assert cfg.mqtt is not None

    sub = Subscriber(broker.port, "test/+/status")

    async def main() -> None:
        daemon: Any = type("D", (), {"engine": type("E", (), {"filesystems": {}})()})()
        publisher = FailingToLeave(cfg.mqtt, daemon)
        task = asyncio.create_task(publisher.run(lambda: None))
        await asyncio.to_thread(sub.wait_for, lambda m: m.payload == b"online")
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        if task not in done:  # it swallowed the stop: let it go, then fail
            fail[0] = False
            task.cancel()
            await asyncio.wait({task}, timeout=10)
        assert task in done and task.cancelled()

    try:
        asyncio.run(main())
    finally:
        sub.close()
