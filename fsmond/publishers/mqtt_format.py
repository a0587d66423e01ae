"""Pure MQTT topics and payloads (SPEC section 6), Home Assistant discovery included.

Topics live under `<prefix>/<hostname>/`: `status` (retained online/offline,
also the last will), `event/<class>/<name>` (JSON events), and
`fs/<major>_<minor>/state` (retained JSON state). Discovery configs follow
Home Assistant's MQTT discovery schema: one device per host, per file system
two sensors (percent and bytes available) and three binary sensors
(read-only, error, low space), each with a unique_id, the state topic and
the availability topic. An empty retained payload removes a config or state.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fsmond import __version__
from fsmond.engine.step import FsState
from fsmond.events import DevNum, Event


def safe_id(text: str) -> str:
    """Home Assistant's node and object ids allow [a-zA-Z0-9_-] only."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", text)


class Topics:
    def __init__(self, prefix: str, hostname: str, discovery_prefix: str = "homeassistant"):
        self.host = hostname
        self.base = f"{prefix}/{safe_id(hostname)}"
        self.discovery_prefix = discovery_prefix
        self.node = f"fsmond_{safe_id(hostname)}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def ha_status(self) -> str:
        return f"{self.discovery_prefix}/status"

    def event(self, cls: str, name: str) -> str:
        return f"{self.base}/event/{safe_id(cls)}/{safe_id(name)}"

    def state(self, dev: DevNum) -> str:
        return f"{self.base}/fs/{dev[0]}_{dev[1]}/state"

    def config(self, component: str, dev: DevNum, what: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node}/{dev[0]}_{dev[1]}_{what}/config"


def event_payload(e: Event) -> str:
    return json.dumps(e.to_dict(), ensure_ascii=True, separators=(",", ":"))


def state_payload(fs: FsState, mount_points: list[str]) -> str:
    """The retained state. Space and inode figures are null until the first
    sample (unknown, not 0; Home Assistant shows a sensor whose template
    renders None as unknown); used and percent_used are df's."""
    known = fs.sampled
    used = max(0, fs.size - fs.free)
    room = used + fs.available
    return json.dumps({
        "device": f"{fs.device[0]}:{fs.device[1]}",
        "fstype": fs.fstype,
        "source": fs.source,
        "mount_points": mount_points,
        "sampled": known,
        "size": fs.size if known else None,
        "available": fs.available if known else None,
        "free": fs.free if known else None,
        "used": used if known else None,
        "percent_used": (round(100.0 * used / room, 3) if room else 0.0) if known else None,
        "files": fs.files if known else None,
        "files_available": fs.files_available if known else None,
        "percent_available": round(fs.percent_available, 3) if known else None,
        "level": fs.level,
        "inode_level": fs.inode_level,
        "low_space": fs.level != "ok" if known else None,
        "read_only": fs.read_only,
        "responsive": fs.responsive,
        "error_count": fs.error_count,
        "last_error": fs.last_error,
        "fill_rate": round(fs.fill_rate, 3) if known else None,
        "seconds_to_full": round(fs.seconds_to_full, 3) if known else None,
    }, ensure_ascii=True, separators=(",", ":"))


# (component, object suffix, name suffix, value template, extra keys)
_ENTITIES: tuple[tuple[str, str, str, str, dict[str, Any]], ...] = (
    ("sensor", "pct", "available", "{{ value_json.percent_available }}",
     {"unit_of_measurement": "%", "state_class": "measurement", "icon": "mdi:harddisk"}),
    ("sensor", "bytes", "available bytes", "{{ value_json.available }}",
     {"unit_of_measurement": "B", "device_class": "data_size", "state_class": "measurement"}),
    ("binary_sensor", "ro", "read-only",
     "{{ 'ON' if value_json.read_only else 'OFF' }}", {"device_class": "problem"}),
    ("binary_sensor", "error", "error",
     "{{ 'ON' if value_json.error_count > 0 else 'OFF' }}", {"device_class": "problem"}),
    ("binary_sensor", "low", "low space",
     "{{ None if value_json.low_space is none else ('ON' if value_json.low_space else 'OFF') }}",
     {"device_class": "problem"}),
)


def discovery(topics: Topics, dev: DevNum, label: str) -> list[tuple[str, str]]:
    """(config topic, JSON payload) for each entity of one file system."""
    device = {
        "identifiers": [topics.node],
        "name": f"{topics.host} file systems",
        "manufacturer": "fsmond",
        "model": "fsmond",
        "sw_version": __version__,
    }
    out = []
    for component, suffix, name, template, extra in _ENTITIES:
        payload = {
            "name": f"{label} {name}",
            "unique_id": f"{topics.node}_{dev[0]}_{dev[1]}_{suffix}",
            "object_id": f"{topics.node}_{dev[0]}_{dev[1]}_{suffix}",
            "state_topic": topics.state(dev),
            "value_template": template,
            "availability_topic": topics.status,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
            **extra,
        }
        out.append((topics.config(component, dev, suffix), json.dumps(payload)))
    return out


def discovery_removal(topics: Topics, dev: DevNum) -> list[str]:
    return [topics.config(component, dev, suffix) for component, suffix, *_ in _ENTITIES]
