"""The MQTT publisher (SPEC section 6), with aiomqtt.

How it works: `started()` is called at once, since a broker that is down
must never delay the daemon. Then a loop connects, and on every (re)connect
publishes `online` (retained; the broker sends the retained `offline` will
if we vanish), then the events queued meanwhile in order, then every file
system's retained state (and Home Assistant discovery configs). While
connected, events go out as they come (QoS from the config) and state
changes are coalesced per file system. A lost connection puts the unsent
batch back at the front of the bounded outbox and retries with capped
exponential back-off and jitter. A clean stop publishes `offline` itself.
The password is never logged. The publisher follows the engine's steps:
a state payload is the file system's latest FsState, with all its mount
points asked of the daemon's `Control` when it is sent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiomqtt

from fsmond.config_mqtt import MqttConfig
from fsmond.engine.step import FsState, Step
from fsmond.events import DevNum, Event
from fsmond.publishers.mqtt_format import (
    Topics,
    discovery,
    discovery_removal,
    event_payload,
    state_payload,
)
from fsmond.publishers.outbox import Outbox

if TYPE_CHECKING:
    from fsmond.publishers.control import Control

log = logging.getLogger(__name__)

STATE_INTERVAL = 0.5  # seconds: state changes of one file system are coalesced to this
BACKOFF_START = 0.5
LEAVE_TIMEOUT = 1.0  # seconds: a stop waits this long for the broker to see us go


def jitter(seconds: float) -> float:
    return seconds * random.uniform(0.5, 1.5)


class MqttPublisher:
    name = "mqtt"

    def __init__(self, config: MqttConfig, control: Control, hostname: str | None = None) -> None:
        self.config = config
        self.control = control
        self.hostname = hostname or socket.gethostname()
        self.topics = Topics(config.prefix, self.hostname, config.discovery_prefix)
        self.outbox: Outbox[Event] = Outbox("mqtt", config.queue_size)
        self.connected = False
        self.connections = 0
        # Every watched file system's latest FsState; `_dirty` (state to send)
        # is within it, `_gone` (retained state to clear) outside it.
        self.states: dict[DevNum, FsState] = {}
        self._dirty: set[DevNum] = set()
        self._gone: set[DevNum] = set()
        self._announced: set[DevNum] = set()
        self._last_state: dict[DevNum, str] = {}
        self._state_wake = asyncio.Event()

    @property
    def dropped(self) -> int:
        return self.outbox.dropped

    # ----------------------------------------------------- from the daemon

    def publish(self, step: Step) -> None:
        if step.events:
            self.outbox.put_all(step.events)
        if not step.refreshes():
            return
        for s in step.states:
            self.states[s.device] = s
        for dev in step.removed:
            self.states.pop(dev, None)
        self._dirty |= step.changed
        self._gone |= step.removed
        self._dirty -= step.removed
        self._gone -= step.added
        if self._dirty or self._gone:
            self._state_wake.set()

    # ------------------------------------------------------------ lifecycle

    def _client(self) -> aiomqtt.Client:
        c = self.config
        tls = None
        if c.tls:
            tls = aiomqtt.TLSParameters(
                ca_certs=c.ca_file or None, certfile=c.cert_file or None,
                keyfile=c.key_file or None, cert_reqs=ssl.CERT_REQUIRED)
        return aiomqtt.Client(
            hostname=c.host, port=c.port,
            identifier=c.client_id or f"fsmond-{self.hostname}",
            username=c.username or None, password=c.password or None,
            will=aiomqtt.Will(self.topics.status, "offline", qos=1, retain=True),
            keepalive=int(c.keepalive), tls_params=tls, tls_insecure=c.tls_insecure or None,
            timeout=10,
        )

    async def run(self, started: Callable[[], None]) -> None:
        started()
        delay = BACKOFF_START
        stopping = False
        while True:
            try:
                async with self._client() as client:
                    self.connected = True
                    self.connections += 1
                    delay = BACKOFF_START
                    log.info("MQTT: connected to %s:%d", self.config.host, self.config.port)
                    try:
                        await self._session(client)
                    except asyncio.CancelledError:
                        stopping = True
                        await self._say_offline(client)
                        client.timeout = LEAVE_TIMEOUT  # for the DISCONNECT's answer
                        raise
            except* aiomqtt.MqttError as lost:
                # Grouped when a task of the session's TaskGroup saw the loss first.
                log.warning("MQTT: %s; retrying in about %.1fs", lost.exceptions[0], delay)
            finally:
                self.connected = False
            if stopping:
                # Leaving the broker failed, and its MqttError took the cancel's
                # place above: retrying would never stop. (Not Task.cancelling():
                # on 3.11 a TaskGroup that saw a lost broker leaves it set.)
                raise asyncio.CancelledError
            await asyncio.sleep(jitter(delay))
            delay = min(self.config.reconnect_max, delay * 2)

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        # The broker sends the will only on an unclean loss: say it ourselves.
        try:
            async with asyncio.timeout(2):
                await client.publish(self.topics.status, "offline", qos=1, retain=True)
        except (aiomqtt.MqttError, TimeoutError):
            log.debug("MQTT: could not say offline")

    async def _session(self, client: aiomqtt.Client) -> None:
        t = self.topics
        await client.publish(t.status, "online", qos=1, retain=True)
        await self._send_events(client, until_empty=True)
        self._dirty |= set(self.states)
        self._announced.clear()  # a new session: discovery configs and states go out again
        self._last_state.clear()
        await self._send_states(client)
        if self.config.discovery:
            await client.subscribe(t.ha_status)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._send_events(client))
            tg.create_task(self._state_loop(client))
            if self.config.discovery:
                tg.create_task(self._listen(client))

    async def _send_events(self, client: aiomqtt.Client, until_empty: bool = False) -> None:
        while not until_empty or len(self.outbox):
            batch = await self.outbox.get_batch(100)
            for i, e in enumerate(batch):
                try:
                    await client.publish(self.topics.event(e.cls, e.name), event_payload(e),
                                         qos=self.config.qos)
                except BaseException:
                    self.outbox.requeue_front(batch[i:])  # sent again after reconnect
                    raise

    async def _state_loop(self, client: aiomqtt.Client) -> None:
        while True:
            await self._state_wake.wait()
            self._state_wake.clear()
            await self._send_states(client)
            await asyncio.sleep(STATE_INTERVAL)

    async def _send_states(self, client: aiomqtt.Client) -> None:
        gone, self._gone = self._gone, set()
        for dev in gone:
            self._announced.discard(dev)
            self._last_state.pop(dev, None)
            await client.publish(self.topics.state(dev), b"", qos=1, retain=True)
            if self.config.discovery:
                for topic in discovery_removal(self.topics, dev):
                    await client.publish(topic, b"", qos=1, retain=True)
        dirty, self._dirty = self._dirty, set()
        for dev in dirty:
            fs = self.states.get(dev)
            if fs is None:
                continue
            if self.config.discovery and dev not in self._announced:
                await self._send_discovery(client, dev)
                self._announced.add(dev)
            payload = state_payload(fs, self.control.mount_points(dev))
            if self._last_state.get(dev) != payload:  # retained: only news is worth sending
                await client.publish(self.topics.state(dev), payload, qos=1, retain=True)
                self._last_state[dev] = payload

    async def _send_discovery(self, client: aiomqtt.Client, dev: DevNum) -> None:
        fs = self.states.get(dev)
        if fs is None:
            return
        label = fs.mount_points[0] if fs.mount_points else f"{dev[0]}:{dev[1]}"
        for topic, payload in discovery(self.topics, dev, label):
            await client.publish(topic, payload, qos=1, retain=True)

    async def _listen(self, client: aiomqtt.Client) -> None:
        """Home Assistant restarted: send discovery again, after a jitter so a fleet
        of hosts does not answer in the same instant."""
        async for message in client.messages:
            if message.payload == b"online":
                await asyncio.sleep(random.uniform(0, 2))
                for dev in list(self.states):
                    await self._send_discovery(client, dev)
