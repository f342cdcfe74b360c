"""Provisioning files and the persisted boot counter."""

import json

from firmware import bootcount, config
from firmware.hal.storage import ConfigError, write_atomic
from tests.portable.harness import check_cases, raises
from tests.portable.nodekit import make_config, tempdir


def test_boot_counter_increments_and_survives_one_corrupt_copy():
    d = tempdir()
    assert [bootcount.next_boot(d) for _ in range(3)] == [1, 2, 3]
    write_atomic(d + "/boot.a", b"garbage")
    assert bootcount.next_boot(d) == 4
    write_atomic(d + "/boot.b", b"\xff\xfe")
    assert bootcount.next_boot(d) == 5  # boot.a was rewritten at 4


def test_boot_counter_lost_in_both_copies_refuses_to_start():
    d = tempdir()
    bootcount.next_boot(d)
    write_atomic(d + "/boot.a", b"x")
    write_atomic(d + "/boot.b", b"y")
    e = raises(ConfigError, bootcount.next_boot, d)
    assert "re-provision" in str(e)


def test_valid_config_loads_with_defaults():
    cfg = make_config(local_limits={"spo2": {"min": 85}, "nibp_sys": {"max": 200}})
    assert cfg.node_id == "chair-01" and cfg.gateway_kid == b"gateway"
    assert cfg.node["telemetry_ms"] == 1000 and cfg.node["permit_max_ms"] == 10000
    assert cfg.local_limits[150456] == (85, None)


def _bad(mutate, expect):
    def run(_):
        cfg = make_config()
        path = cfg.base + "/config.json"
        with open(path) as f:
            data = json.load(f)
        mutate(data)
        with open(path, "w") as f:
            json.dump(data, f)
        e = raises(ConfigError, config.load, cfg.base)
        assert expect in str(e), str(e)
        assert "config.json" in str(e)

    return run


def _set(key, value):
    def m(d):
        d[key] = value

    return m


def _set2(key, sub, value):
    def m(d):
        d[key][sub] = value

    return m


def _del(key):
    def m(d):
        del d[key]

    return m


BAD = [
    ("format", _set("format", 2), "format must be 1"),
    ("node id", _set("node_id", "chair/01"), "node_id"),
    ("missing broker", _del("broker"), "broker must be an object"),
    ("port range", _set2("broker", "port", 70000), "broker.port"),
    ("unknown role", _set2("wiring", "ecg", {"driver": "x", "port": "tcp:h:1"}), "unknown role"),
    ("wrong driver", _set2("wiring", "pump", {"driver": "alaris", "port": "pty:/x"}), "not a pump driver"),
    ("no pump", lambda d: d["wiring"].pop("pump"), "wiring.pump is required"),
    ("unknown node setting", _set("node", {"telemetry": 5}), "node.telemetry: unknown"),
    ("bad limit", _set("local_limits", {"spo2": {"min": 85.5}}), "whole numbers"),
    ("unknown vital", _set("local_limits", {"sao2": {"min": 85}}), "unknown vital"),
    ("missing key file", _set("keys", {"node_key": "nope.key", "gateway_pub": "gateway.pub"}),
     "nope.key: missing"),
]


def test_bad_configs_name_file_and_field():
    check_cases("node config rejects", BAD, lambda c: _bad(c[1], c[2])(c), lambda c: c[0])


def test_not_json():
    cfg = make_config()
    with open(cfg.base + "/config.json", "w") as f:
        f.write("{not json")
    e = raises(ConfigError, config.load, cfg.base)
    assert "not valid JSON" in str(e)
