"""The [mqtt] table (SPEC section 6). The password never appears in a repr or an error."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from fsmond.config_values import Table, bool_, int_between, parse_duration, str_


@dataclass(frozen=True, slots=True)
class MqttConfig:
    enabled: bool = False
    url: str = "mqtt://localhost:1883"
    host: str = "localhost"
    port: int = 1883
    tls: bool = False
    client_id: str = ""  # "" = fsmond-<hostname>
    username: str = ""
    password: str = field(default="", repr=False)
    prefix: str = "fsmond"
    qos: int = 1
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    tls_insecure: bool = False
    keepalive: float = 60.0
    queue_size: int = 10000
    reconnect_max: float = 60.0
    discovery: bool = False
    discovery_prefix: str = "homeassistant"


def _url(v: object) -> tuple[str, str, int, bool]:
    s = str_(v)
    parts = urlsplit(s)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError('must start with "mqtt://" or "mqtts://"')
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has a bad port") from None
    if not parts.hostname:
        raise ValueError("names no host")
    if parts.username or parts.password:
        raise ValueError("must not hold credentials: use mqtt.username and mqtt.password_file")
    tls = parts.scheme == "mqtts"
    return s, parts.hostname, port or (8883 if tls else 1883), tls


def _prefix(v: object) -> str:
    s = str_(v)
    if not s or re.search(r"[+#\x00]", s) or s.startswith("/") or s.endswith("/"):
        raise ValueError("must be a topic level without + # or a leading/trailing /")
    return s


def _read_password(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\n")
    except OSError as e:
        raise ValueError(f"cannot read it: {e.strerror}") from None


def parse_mqtt(t: Table) -> MqttConfig:
    d = MqttConfig()
    url, host, port, tls = t.take("url", _url, (d.url, d.host, d.port, d.tls))
    password = ""
    if "password" in t.data and "password_file" in t.data:
        raise t.error("password_file", t.data["password_file"],
                      "give mqtt.password or mqtt.password_file, not both")
    if "password" in t.data:
        raw = t.data.pop("password")
        if not isinstance(raw, str):
            raise t.error("password", "<hidden>", "must be a string")
        password = raw
    password = t.take("password_file", lambda v: _read_password(str_(v)), password)
    cfg = MqttConfig(
        enabled=t.take("enabled", bool_, False),
        url=url, host=host, port=port, tls=tls,
        client_id=t.take("client_id", str_, ""),
        username=t.take("username", str_, ""),
        password=password,
        prefix=t.take("prefix", _prefix, "fsmond"),
        qos=t.take("qos", int_between(0, 2), 1),
        ca_file=t.take("ca_file", str_, ""),
        cert_file=t.take("cert_file", str_, ""),
        key_file=t.take("key_file", str_, ""),
        tls_insecure=t.take("tls_insecure", bool_, False),
        keepalive=t.take("keepalive", parse_duration, 60.0),
        queue_size=t.take("queue_size", int_between(1, 10_000_000), 10000),
        reconnect_max=t.take("reconnect_max", parse_duration, 60.0),
        discovery=t.take("discovery", bool_, False),
        discovery_prefix=t.take("discovery_prefix", _prefix, "homeassistant"),
    )
    t.finish()
    return cfg
