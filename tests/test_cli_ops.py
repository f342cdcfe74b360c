"""`ivgw status/devices/program/start/stop/ack` against a live gateway (in-process, no
broker), and their error paths: no gateway, unknown chair, hard and soft limits, bad numbers."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway import db
from gateway.cli import app
from gateway.config import load
from gateway.service import Gateway
from protocol import cose

runner = CliRunner()


def _cfg(tmp_path: Path) -> Path:
    p = tmp_path / "gw.toml"
    p.write_text('[gateway]\ndata_dir = "%s"\n' % (tmp_path / "data"))
    return p


def _invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "250"})


@pytest.fixture
def live(tmp_path: Path):
    """A gateway service in a thread (its database connection lives in that thread)."""
    cfg_path = _cfg(tmp_path)
    ready = threading.Event()
    box: dict = {}

    def serve() -> None:
        gw = Gateway(load(cfg_path), create_key=True)
        with db.transaction(gw.conn):
            rec = gw.store.register_node("chair-01", "north", "c1", cose.ALG_EDDSA,
                                         cose.Ed25519Signer(bytes(32)).public, time.time())
        gw.core.node_registered(rec)
        gw.start(connect=False)
        box["gw"] = gw
        ready.set()
        gw.run_forever()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(30)
    yield cfg_path
    box["gw"].stop()
    t.join(10)


def test_no_gateway_running_is_exit_4(tmp_path: Path):
    r = _invoke("status", "--config", str(_cfg(tmp_path)))
    assert r.exit_code == 4
    assert r.output.startswith("error: the gateway is not running") and "Traceback" not in r.output


def test_status_and_devices_json(live: Path):
    r = _invoke("status", "--config", str(live), "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["gateway"]["examples"] is True
    assert [c["node"] for c in data["chairs"]] == ["chair-01"]
    r = _invoke("devices", "--config", str(live))
    assert r.exit_code == 0 and "north/c1" in r.output


def _program(live: Path, *extra: str):
    return _invoke("program", "north/c1", "--drug", "ketamine", "--concentration", "1",
                   "--weight", "70", "--duration", "40", "--operator", "rn.lee",
                   "--config", str(live), *extra)


def test_hard_limit_is_refused_with_the_limit_named(live: Path):
    r = _program(live, "--dose", "1.5")
    assert r.exit_code == 1
    assert "refused: hard limit rate.upper_hard" in r.output


def test_soft_limit_needs_a_reason(live: Path):
    r = _program(live, "--dose", "0.95", "--yes")
    assert r.exit_code == 1 and "--override-reason" in r.output
    r = _program(live, "--dose", "0.95", "--override-reason", "MD order, tolerance known")
    # The node has never been heard from: stored, with a clear message and exit 4.
    assert r.exit_code == 4 and "has not been heard from yet" in r.output


def test_unknown_chair_bad_numbers_and_refused_actions(live: Path):
    r = _invoke("start", "north/c9", "--operator", "x", "--config", str(live))
    assert r.exit_code == 3 and "unknown chair" in r.output
    r = _program(live, "--dose", "fast")
    assert r.exit_code == 2 and "--dose: 'fast' is not a number" in r.output
    r = _invoke("start", "north/c1", "--operator", "x", "--config", str(live))
    assert r.exit_code == 1 and "has no program" in r.output
    r = _invoke("ack", "north/c1", "--operator", "x", "--reason", "ok", "--config", str(live))
    assert r.exit_code == 1 and "no latched interlock" in r.output
    r = _invoke("stop", "north/c1", "--operator", "x", "--config", str(live))
    assert r.exit_code == 0 and "latched until acknowledged" in r.output
    r = _invoke("ack", "north/c1", "--operator", "dr.kim", "--reason", "reviewed",
                "--config", str(live))
    assert r.exit_code == 0 and "accepted" in r.output


def test_a_control_request_wakes_a_loop_waiting_for_packets(tmp_path: Path):
    """A loop blocked waiting for packets (here for up to 60 s) answers a CLI request at
    once instead of at its next tick; so does stop(). Checked without timing: the loop's
    single step must return, with the request answered, long before its 60 s wait ends."""
    box: dict = {}
    ready, first_step_done = threading.Event(), threading.Event()

    def loop() -> None:  # the gateway lives on one thread (its SQLite connection's)
        gw = Gateway(load(_cfg(tmp_path)), create_key=True)
        gw.start(connect=False)
        box["gw"] = gw
        ready.set()
        gw.step(timeout=60.0)
        first_step_done.set()
        gw.step(timeout=60.0)
        gw.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    assert ready.wait(30)
    gw = box["gw"]
    answer = gw.request({"op": "status"}, timeout=30)
    assert answer["ok"] is True and answer["result"]["gateway"]["processed"] == 0
    assert first_step_done.wait(20), "the loop kept waiting for packets"
    gw.stop()
    t.join(20)
    assert not t.is_alive(), "stop() did not wake the loop"


def test_a_tick_too_slow_for_the_interlocks_is_refused(tmp_path: Path):
    p = tmp_path / "gw.toml"
    p.write_text('[gateway]\ndata_dir = "%s"\ntick_ms = 5000\n' % (tmp_path / "data"))
    r = _invoke("status", "--config", str(p))
    assert r.exit_code == 5 and "tick_ms: must be 20..1000" in r.output
