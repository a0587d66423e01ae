"""A real mosquitto on a free loopback port, and a real subscriber (paho)."""

from __future__ import annotations

import queue
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho

from tests.running import first_match

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    def __init__(self, folder: Path, port: int | None = None, tls: dict[str, Path] | None = None):
        self.folder = folder
        self.port = port or free_port()
        self.conf = folder / "mosquitto.conf"
        # user root: as root mosquitto would drop to its own user, which cannot
        # read the test's files.
        lines = ["user root", f"listener {self.port} 127.0.0.1", "allow_anonymous true",
                 f"persistence_location {folder}/", "persistence true"]
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool


class Subscriber:
    """Subscribes at QoS 1; with `client_id` its session persists in the broker, so
    messages published while it is away are kept for it."""

    def __init__(self, port: int, topic: str = "#", tls_ca: Path | None = None,
                 client_id: str = "") -> None:
        self.messages: list[Received] = []
        self._new: queue.Queue[Received] = queue.Queue()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not client_id)
        self.client.reconnect_delay_set(0.2, 1)
        if tls_ca:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: object, userdata: object, msg: paho.MQTTMessage) -> None:
        r = Received(msg.topic, msg.payload, bool(msg.retain))
        self.messages.append(r)
        self._new.put(r)

    def wait_for(self, pred: Callable[[Received], bool], timeout: float = 20) -> Received:
        found = first_match(self.messages, self._new, pred, timeout)
        if found is not None:
            return found
        raise AssertionError("no such message; got: " + ", ".join(
            f"{m.topic}={m.payload[:40]!r}" for m in self.messages[-20:]))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
