"""The gateway's decisions, end to end without a broker: signed packets from a scripted node
go through verification and the core; commands come out signed; the database and the audit
chain hold the record. Time is a fake clock, so a whole session runs instantly."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gateway import db
from gateway.audit import AuditLog
from gateway.commander import Commander
from gateway.core import ActionError, GatewayCore
from gateway.cose_keys import EdDSASigner
from gateway.druglib import load_library
from gateway.interlocks import load_ruleset
from gateway.service import EXAMPLE_LIBRARY, EXAMPLE_RULES
from gateway.store import Store
from gateway.verify import PacketVerifier, Rejected, Verified
from protocol import cbor, cose, mdc, schema, topics

NODE_SEED = bytes(range(32))
GW_SEED = bytes(range(100, 132))


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class ScriptedNode:
    """Makes the packets a real node would (same protocol code), with its own uptime."""

    def __init__(self, node: str = "chair-01", boot: int = 1):
        self.node, self.boot, self.seq, self.up = node, boot, 0, 0
        self.signer = cose.Ed25519Signer(NODE_SEED)
        self.gw = cose.Ed25519Verifier(EdDSASigner(GW_SEED).public)

    def _env(self, mtype: int) -> dict:
        self.seq += 1
        return schema.envelope(mtype, self.node, self.boot, self.seq, self.up)

    def wire(self, kind: str, msg: dict) -> tuple[str, bytes]:
        return topics.uplink(self.node, kind), cose.encode(cbor.dumps(msg), self.signer,
                                                           self.node.encode())

    def telemetry(self, spo2: int = 97, hr: int = 72, sys_: int = 125, dia: int = 80,
                  state: int = schema.PUMP_STOPPED, rate: int = 0, infused: int = 0,
                  program: int = 0) -> tuple[str, bytes]:
        m = self._env(schema.TELEMETRY)
        up = self.up
        m[schema.T_VITALS] = {
            mdc.SPO2: [spo2, 0, mdc.DIM_PERCENT, up], mdc.HR_ECG: [hr, 0, mdc.DIM_BEAT_PER_MIN, up],
            mdc.NIBP_SYS: [sys_, 0, mdc.DIM_MMHG, up], mdc.NIBP_DIA: [dia, 0, mdc.DIM_MMHG, up],
        }
        m[schema.T_PUMP] = {schema.P_STATE: state, schema.P_T: up, schema.P_RATE: rate,
                            schema.P_INFUSED: infused, schema.P_PROGRAM: program}
        m[schema.T_NODE] = {schema.N_PERMIT_MS: 0}
        return self.wire("telemetry", m)

    def birth(self) -> tuple[str, bytes]:
        m = self._env(schema.BIRTH)
        m[schema.B_FIRMWARE] = "0.1.0"
        m[schema.B_DRIVERS] = [["pump", "ne1000"]]
        m[schema.B_CAPS] = ["permit"]
        return self.wire("birth", m)

    def decode(self, payload: bytes) -> dict:
        msg = cose.verify(payload, lambda kid: self.gw)
        return schema.validate(cbor.loads(msg.payload), schema.COMMAND)


@pytest.fixture
def gw(tmp_path: Path):
    clock = Clock()
    conn = db.open_db(tmp_path / "gw.sqlite3")
    store = Store(conn)
    audit = AuditLog(conn, clock=clock)
    with db.transaction(conn):
        rec = store.register_node("chair-01", "north", "c1", cose.ALG_EDDSA,
                                  cose.Ed25519Signer(NODE_SEED).public, clock())
    core = GatewayCore(store, audit, Commander(EdDSASigner(GW_SEED), b"gateway", 1),
                       load_library(EXAMPLE_LIBRARY), load_ruleset(EXAMPLE_RULES),
                       care_area="ketamine-trd", permit_lifetime_ms=5000, clock=clock)
    verifier = PacketVerifier({rec.node_id: rec.key})

    class Harness:
        def __init__(self):
            self.clock, self.conn, self.store, self.audit, self.core = clock, conn, store, audit, core
            self.node = ScriptedNode()
            self.sent: list[dict] = []

        def feed(self, item: tuple[str, bytes], advance: float = 1.0) -> bool:
            self.clock.t += advance
            self.node.up += int(advance * 1000)
            res = verifier.verify(*item)
            with db.transaction(conn):
                if isinstance(res, Rejected):
                    core.reject(res, item[0], clock())
                    ok = False
                else:
                    assert isinstance(res, Verified)
                    ok = core.accept(res, clock(), item[1])
                core.tick(clock())
            self._collect()
            return ok

        def act(self, fn, *a, **kw):
            with db.transaction(conn):
                r = fn(*a, **kw)
            self._collect()
            return r

        def _collect(self):
            for p in core.take_output():
                if "/down/cmd" in p.topic:
                    self.sent.append(self.node.decode(p.payload))

        def kinds(self) -> list[str]:
            return [schema.CMD_NAMES[m[schema.C_KIND]] for m in self.sent]

    h = Harness()
    yield h
    conn.close()


def _program(h, **kw):
    args = dict(drug="ketamine", concentration_mg_ml=Decimal("1"), weight_kg=Decimal("70"),
                dose_rate=Decimal("0.75"), duration_min=Decimal("40"), diameter_cmm=2670,
                operator="nurse.jones")
    args.update(kw)
    return h.act(h.core.program, "north/c1", **args)


def _ready(h):
    h.feed(h.node.birth())
    for _ in range(3):
        h.feed(h.node.telemetry())


def test_program_start_and_permit_renewal(gw):
    _ready(gw)
    result = _program(gw)
    assert result["verdict"] == "ok" and result["rate_ul_h"] == 52500 and result["vtbi_ul"] == 35000
    sid = result["session"]
    gw.act(gw.core.start, "north/c1", "nurse.jones")
    assert gw.kinds() == ["program", "permit", "start"]
    prog = gw.sent[0][schema.C_ARGS]
    assert prog[schema.A_RATE] == 52500 and prog[schema.A_PROGRAM_ID] == sid
    # Every command references the node's latest message and counts up.
    assert all(m[schema.C_REF] == [1, gw.node.seq] for m in gw.sent)
    assert [m[schema.K_SEQ] for m in gw.sent] == [1, 2, 3]
    for i in range(5):
        gw.feed(gw.node.telemetry(state=schema.PUMP_INFUSING, rate=52500, infused=14 * (i + 1),
                                  program=sid))
    assert gw.kinds().count("permit") == 6


def test_hard_limit_refused_soft_limit_needs_override(gw):
    _ready(gw)
    hard = _program(gw, dose_rate=Decimal("1.2"))
    assert hard["verdict"] == "hard" and "session" not in hard
    soft = _program(gw, dose_rate=Decimal("0.95"))
    assert soft["verdict"] == "soft" and "session" not in soft
    ok = _program(gw, dose_rate=Decimal("0.95"), override_reason="weight-adjusted per MD order")
    assert ok["session"] and gw.kinds() == ["program"]
    kinds = [r.kind for r in gw.audit.iter_records()]
    assert "program.rejected" in kinds and "override" in kinds


def test_desaturation_trips_stops_latches_and_ack_after_recovery(gw):
    _ready(gw)
    sid = _program(gw)["session"]
    gw.act(gw.core.start, "north/c1", "nurse.jones")
    gw.sent.clear()
    for _ in range(12):  # SpO2 85 for 12 s: the example rule is < 90 for 10 s
        gw.feed(gw.node.telemetry(spo2=85, state=schema.PUMP_INFUSING, rate=52500, program=sid))
    assert "stop" in gw.kinds()
    assert "permit" not in gw.kinds()[gw.kinds().index("stop"):]
    trips = gw.store.trips(sid)
    assert len(trips) >= 1 and trips[0]["stop_sent_at"] is not None
    assert 9_000 <= trips[0]["latency_ms"] <= 12_000  # breach_at is the start of the 10 s rule
    with pytest.raises(ActionError, match="still has an active alarm"):
        gw.act(gw.core.acknowledge, "north/c1", "dr.smith", "reviewed")
    for _ in range(15):
        gw.feed(gw.node.telemetry(spo2=97))
    res = gw.act(gw.core.acknowledge, "north/c1", "dr.smith", "patient recovered, probe ok")
    assert res["acknowledged"]
    assert gw.audit.verify().ok


def test_restart_restores_the_latch_before_any_permit(gw, tmp_path):
    _ready(gw)
    _program(gw)
    gw.act(gw.core.start, "north/c1", "nurse.jones")
    gw.act(gw.core.stop, "north/c1", "nurse.jones", "patient request")
    # A new core over the same database: the e-stop latch must still hold.
    core2 = GatewayCore(gw.store, gw.audit, Commander(EdDSASigner(GW_SEED), b"gateway", 2),
                        gw.core.library, gw.core.rules, care_area="ketamine-trd",
                        permit_lifetime_ms=5000, clock=gw.clock)
    ev = core2.engine.evaluate("north/c1", gw.clock())
    assert ev.latched and not ev.permit_ok


def test_rejections_are_counted_and_audited(gw):
    _ready(gw)
    topic, wire = gw.node.telemetry()
    assert not gw.feed((topic, wire[:-1] + bytes([wire[-1] ^ 1])))  # bad signature
    assert not gw.feed((topics.uplink("chair-02", "telemetry"), wire))  # unknown node
    assert not gw.feed((topics.uplink("chair-01", "event"), wire))  # wrong type for topic
    assert gw.feed((topic, wire))
    assert not gw.feed((topic, wire))  # QoS 1 redelivery: duplicate, not an attack
    reasons = {r[1]: r[2] for r in gw.store.rejections()}
    assert reasons == {"cose.bad_signature": 1, "node.unknown": 1, "schema.type_mismatch": 1}
    assert gw.core.counters["duplicate"] == 1
    audited = [r.data["reason"] for r in gw.audit.iter_records(kind="packet.rejected")]
    assert sorted(audited) == sorted(reasons)


def test_pump_rate_mismatch_stops_the_pump(gw):
    _ready(gw)
    sid = _program(gw)["session"]
    gw.act(gw.core.start, "north/c1", "nurse.jones")
    for i in range(6):  # inside the grace after a start, stale pump replies are tolerated
        gw.feed(gw.node.telemetry(state=schema.PUMP_INFUSING, rate=52500, infused=14 * i,
                                  program=sid))
    gw.sent.clear()
    gw.feed(gw.node.telemetry(state=schema.PUMP_INFUSING, rate=99000, infused=100, program=sid))
    assert "stop" in gw.kinds()
    assert any("pump mismatch" in t["cause"] for t in gw.store.trips(sid))


def test_stale_vitals_withhold_the_permit(gw):
    _ready(gw)
    sid = _program(gw)["session"]
    gw.act(gw.core.start, "north/c1", "nurse.jones")
    gw.sent.clear()
    # Telemetry keeps coming but without SpO2 (probe off): no more permits after max_age.
    for _ in range(15):
        topic, wire = gw.node.telemetry(state=schema.PUMP_INFUSING, rate=52500, program=sid)
        gw.feed((topic, wire))
    assert gw.kinds().count("permit") == 15
    node = gw.node
    for _ in range(15):
        m = node._env(schema.TELEMETRY)
        m[schema.T_VITALS] = {mdc.HR_ECG: [72, 0, mdc.DIM_BEAT_PER_MIN, node.up]}
        m[schema.T_PUMP] = {schema.P_STATE: schema.PUMP_INFUSING, schema.P_T: node.up,
                            schema.P_RATE: 52500, schema.P_PROGRAM: sid}
        m[schema.T_NODE] = {schema.N_PERMIT_MS: 1000}
        gw.feed(node.wire("telemetry", m))
    after = gw.kinds()[15:]
    assert after.count("permit") < 12 and "stop" in after
