"""Topics and payloads, including Home Assistant discovery's required keys."""

from __future__ import annotations

import json

from fsmond.engine.filesystems import FileSystem
from fsmond.engine.step import snapshot
from fsmond.events import Event
from fsmond.publishers.mqtt_format import (
    Topics,
    discovery,
    discovery_removal,
    event_payload,
    safe_id,
    state_payload,
)
from tests.engine.test_engine import Watch

T = Topics("fsmond", "web-1.example", "homeassistant")


def test_topics() -> None:
    assert T.status == "fsmond/web-1_example/status"
    assert T.event("thr", "threshold") == "fsmond/web-1_example/event/thr/threshold"
    assert T.state((8, 1)) == "fsmond/web-1_example/fs/8_1/state"
    assert safe_id("a/b+c#d e") == "a_b_c_d_e"


def test_event_and_state_payloads_are_json() -> None:
    e = Event(seq=3, time=0.0, cls="err", name="error", device="8:1", details={"count": 2})
    assert json.loads(event_payload(e))["details"] == {"count": 2}
    fs = FileSystem((8, 1), "ext4", "/dev/sda1", "rw", Watch(), mount_points=["/srv"],
                    size=100, available=4, error_count=1, sampled_at=1.0)
    state = json.loads(state_payload(snapshot(fs, None), ["/srv"]))
    assert state["percent_available"] == 4.0 and state["error_count"] == 1
    assert state["mount_points"] == ["/srv"] and state["read_only"] is False


def test_a_file_system_not_sampled_is_unknown_not_zero_and_used_is_df_s() -> None:
    fs = FileSystem((8, 1), "ext4", "/dev/sda1", "rw", Watch(), mount_points=["/srv"])
    state = json.loads(state_payload(snapshot(fs, None), ["/srv"]))
    for key in ("size", "available", "free", "used", "percent_used", "files",
                "files_available", "percent_available", "low_space"):
        assert state[key] is None, key
    assert state["sampled"] is False
    # 100 bytes, 50 free of which 20 reserved: df says 50 used, 50 / (50 + 30) = 62.5 %
    fs.size, fs.free, fs.available, fs.sampled_at = 100, 50, 30, 1.0
    state = json.loads(state_payload(snapshot(fs, None), ["/srv"]))
    assert (state["used"], state["percent_used"], state["low_space"]) == (50, 62.5, False)


def test_discovery_has_what_home_assistant_requires() -> None:
    configs = discovery(T, (8, 1), "/srv")
    assert len(configs) == 5
    components = sorted(topic.split("/")[1] for topic, _ in configs)
    assert components == ["binary_sensor"] * 3 + ["sensor"] * 2
    ids = set()
    for topic, raw in configs:
        prefix, component, node, obj, last = topic.split("/")
        assert (prefix, node, last) == ("homeassistant", "fsmond_web-1_example", "config")
        assert safe_id(obj) == obj
        p = json.loads(raw)
        for key in ("name", "unique_id", "state_topic", "value_template",
                    "availability_topic", "device"):
            assert key in p, key
        assert p["state_topic"] == T.state((8, 1)) and p["availability_topic"] == T.status
        assert p["device"]["identifiers"] == ["fsmond_web-1_example"]
        ids.add(p["unique_id"])
        if component == "binary_sensor":
            assert "'ON'" in p["value_template"] and "'OFF'" in p["value_template"]
    assert len(ids) == 5
    assert discovery_removal(T, (8, 1)) == [topic for topic, _ in configs]
