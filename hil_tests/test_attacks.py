"""Scenario 5: attacks are rejected and audited, and the pump never changes state because
of them: a packet signed with the wrong key, a replayed packet, a replayed permit and start,
a command from a rogue client, and a node publishing on another node's topic."""

from __future__ import annotations

import os
import sqlite3
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from hil_tests.conftest import figure
from protocol import cbor, cose, mdc, schema, topics


class Wire:
    """A rogue MQTT client on the (plain, ACL-less) bench broker: it sniffs and injects."""

    def __init__(self, host: str, port: int):
        self.captured: dict[str, list[bytes]] = {}
        self._lock = threading.Lock()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="rogue-%d" % os.getpid())
        self.c.on_message = self._on_message
        self.c.connect(host, port)
        self.c.subscribe("ivgw/v1/node/#", qos=1)
        self.c.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.captured.setdefault(msg.topic, []).append(bytes(msg.payload))

    def last(self, topic: str) -> bytes:
        with self._lock:
            return self.captured[topic][-1]

    def all(self, topic: str) -> list[bytes]:
        with self._lock:
            return list(self.captured.get(topic, []))

    def inject(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def _rejections(bench) -> dict[str, int]:
    conn = sqlite3.connect(bench.config().db_path)
    try:
        return {r[0]: r[1] for r in conn.execute(
            "SELECT reason, SUM(count) FROM rejections GROUP BY reason")}
    finally:
        conn.close()


def _audited(bench, reason: str) -> bool:
    conn = sqlite3.connect(bench.config().db_path)
    try:
        return conn.execute("SELECT COUNT(*) FROM audit WHERE kind = 'packet.rejected' AND "
                            "data LIKE ?", ("%" + reason + "%",)).fetchone()[0] > 0
    finally:
        conn.close()


def _telemetry(node: str, boot: int, seq: int, spo2: int = 99) -> bytes:
    m = schema.envelope(schema.TELEMETRY, node, boot, seq, 1000)
    m[schema.T_VITALS] = {mdc.SPO2: [spo2, 0, mdc.DIM_PERCENT, 1000]}
    m[schema.T_PUMP] = {schema.P_STATE: schema.PUMP_STOPPED, schema.P_T: 1000}
    m[schema.T_NODE] = {schema.N_PERMIT_MS: 0}
    return cbor.dumps(m)


def test_forged_replayed_and_misrouted_packets_are_rejected(make_bench):
    bench = make_bench(2)
    bench.wait_online()
    a, b = bench.chairs
    wire = Wire(bench.broker.host, bench.broker.port)
    try:
        bench.start_infusion(a)
        up_a = topics.uplink(a.node_id, "telemetry")
        bench.wait_for("a captured telemetry packet", lambda: wire.all(up_a))
        genuine = wire.last(up_a)  # before injecting: the sniffer also sees what it injects
        # 1. Signed with the wrong key, under chair-01's kid and topic.
        rogue = cose.Ed25519Signer(os.urandom(32))
        wire.inject(up_a, cose.encode(_telemetry(a.node_id, 99, 1, spo2=50), rogue,
                                      a.node_id.encode()))
        # 2. Chair-01's genuine key and kid, published on chair-02's topic.
        wire.inject(topics.uplink(b.node_id, "telemetry"), genuine)
        # 3. A captured genuine packet, replayed: a duplicate, never processed twice.
        wire.inject(up_a, genuine)
        bench.wait_for("the rejections to be counted",
                       lambda: {"cose.bad_signature", "cose.kid_mismatch"} <= set(_rejections(bench)))
        assert _audited(bench, "cose.bad_signature") and _audited(bench, "cose.kid_mismatch")
        counters = bench.wait_for("the replay to be recognized as a duplicate", lambda: (
            lambda c: c if c.get("duplicate", 0) >= 1 else None)(
            bench.status()["gateway"]["counters"]))
        # The forged SpO2 of 50 never reached the chair state; the pump kept infusing.
        time.sleep(1.5)
        spo2 = [v["value"] for v in bench.chair_state(a)["vitals"] if v["mdc"] == mdc.SPO2]
        assert spo2 and spo2[0] > 90
        assert a.pump.running()
        figure("packet attacks", "rejections %s, duplicates %d; pump still infusing"
               % (_rejections(bench), counters.get("duplicate", 0)))
    finally:
        wire.close()


def test_replayed_permit_and_rogue_commands_never_move_the_pump(make_bench):
    bench = make_bench(1)
    bench.wait_online()
    chair = bench.chairs[0]
    wire = Wire(bench.broker.host, bench.broker.port)
    down = topics.downlink(chair.node_id)
    try:
        bench.start_infusion(chair)
        bench.wait_for("captured commands", lambda: len(wire.all(down)) >= 4)
        captured = wire.all(down)  # program, permit(s), start
        # A rogue client's stop, signed with its own key under the gateway's kid.
        rogue = cose.Ed25519Signer(os.urandom(32))
        fake = schema.make_command(chair.node_id, 99, 1, 0, schema.CMD_STOP, {}, 1, 1)
        wire.inject(down, cose.encode(cbor.dumps(fake), rogue, b"gateway"))
        chair.node.expect(r"EVENT command_rejected cose.bad_signature", 10)
        assert chair.pump.running()
        # The operator stops; replaying the captured permits and start must not restart it.
        bench.request({"op": "stop", "chair": chair.id, "operator": "bench", "reason": "test"})
        bench.wait_for("the pump to stop", lambda: not chair.pump.running())
        time.sleep(6)  # past the node's 5 s command freshness window
        for payload in captured:
            wire.inject(down, payload)
        time.sleep(3)
        assert not chair.pump.running()
        log = "\n".join(chair.node.lines)
        assert "CMD start ok" in log and log.count("CMD start ok") == 1
        figure("command attacks", "rogue stop rejected (bad signature); %d captured commands "
               "replayed after stop: pump stayed stopped" % len(captured))
    finally:
        wire.close()
