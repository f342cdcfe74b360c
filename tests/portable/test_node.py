"""The node core: permits, commands, local interlock, telemetry — with fake devices."""

from firmware.boot import death_message, make_node
from protocol import mdc, schema
from tests.portable.nodekit import (
    FakeOximeter,
    FakePump,
    FakeUart,
    Gateway,
    decode_outbox,
    make_config,
)

PROGRAM = {schema.A_PROGRAM_ID: 7, schema.A_RATE: 52500, schema.A_VTBI: 35000,
           schema.A_DIAMETER: 1485}


def _node(local_limits=None, boot=3):
    cfg = make_config(local_limits=local_limits)
    pump, oxi = FakePump(), FakeOximeter()
    uarts = {"pump": FakeUart(), "oximeter": FakeUart()}
    node = make_node(cfg, boot, 1000, uarts, pump, oxi)
    return node, pump, oxi, uarts


def _last_seq(node):
    return node._seq - 1


def _acks(msgs):
    return [m for m in msgs if m[schema.K_TYPE] == schema.ACK]


def _events(msgs, kind=None):
    return [m for m in msgs if m[schema.K_TYPE] == schema.EVENT
            and (kind is None or m[schema.E_KIND] == kind)]


def _start_infusion(node, gw, now):
    node.step(now)  # makes telemetry: something recent to reference
    ref = _last_seq(node)
    assert node.on_command(gw.command("chair-01", schema.CMD_PROGRAM, PROGRAM, 3, ref), now) == 0
    assert node.on_command(gw.command("chair-01", schema.CMD_PERMIT,
                                      {schema.A_LIFETIME: 5000, schema.A_PROGRAM_ID: 7}, 3, ref),
                           now) == 0
    assert node.on_command(gw.command("chair-01", schema.CMD_START,
                                      {schema.A_PROGRAM_ID: 7}, 3, ref), now) == 0
    return ref


def test_program_permit_start_runs_the_pump():
    node, pump, _, _ = _node()
    _start_infusion(node, Gateway(), 1000)
    assert ("rate", 52500) in pump.calls and ("vol", 35000) in pump.calls
    assert ("run",) in pump.calls and node.running
    acks = _acks(decode_outbox(node))
    assert [a[schema.K_RESULT] for a in acks] == [0, 0, 0]


def test_start_without_permit_is_refused():
    node, pump, _, _ = _node()
    gw = Gateway()
    node.step(1000)
    ref = _last_seq(node)
    node.on_command(gw.command("chair-01", schema.CMD_PROGRAM, PROGRAM, 3, ref), 1000)
    r = node.on_command(gw.command("chair-01", schema.CMD_START, {schema.A_PROGRAM_ID: 7}, 3, ref),
                        1000)
    assert r == schema.ACK_REJECTED
    assert ("run",) not in pump.calls
    assert _acks(decode_outbox(node))[-1][schema.K_REASON] == "permit.none"


def test_permit_lapse_stops_the_pump_within_one_step():
    node, pump, _, uarts = _node()
    _start_infusion(node, Gateway(), 1000)
    node.step(5999)
    assert node.running and ("stop",) not in pump.calls
    node.step(6000)  # the permit counted from the referenced telemetry made at t=1000
    assert ("stop",) in pump.calls and not node.running
    assert b"\x02STP\x03" in uarts["pump"].written
    lapsed = _events(decode_outbox(node), "permit_lapsed")
    assert len(lapsed) == 1 and lapsed[0][schema.E_SEVERITY] == schema.SEV_ALARM


def test_renewed_permit_keeps_it_running():
    node, pump, _, _ = _node()
    gw = Gateway()
    _start_infusion(node, gw, 1000)
    for now in range(2000, 20000, 1000):
        node.step(now)
        ref = _last_seq(node)
        node.on_command(gw.command("chair-01", schema.CMD_PERMIT,
                                   {schema.A_LIFETIME: 5000, schema.A_PROGRAM_ID: 7}, 3, ref), now)
    assert node.running and ("stop",) not in pump.calls


def test_pump_infusing_without_permit_is_stopped():
    node, pump, _, _ = _node()
    pump.state = "infusing"  # started from the front panel
    node.step(1000)
    assert ("stop",) in pump.calls


def test_stop_command_stops_and_revokes_permit():
    node, pump, _, uarts = _node()
    gw = Gateway()
    ref = _start_infusion(node, gw, 1000)
    node.on_command(gw.command("chair-01", schema.CMD_STOP, {schema.A_REASON: "test"}, 3, ref), 1100)
    assert ("stop",) in pump.calls and not node.running
    assert node.permit.remaining(1100) == 0
    assert uarts["pump"].written[-1] == b"\x02STP\x03"  # written in the same call


def test_replayed_duplicate_other_device_and_stale_commands():
    node, pump, _, _ = _node()
    gw = Gateway()
    node.step(1000)
    ref = _last_seq(node)
    wire = gw.command("chair-01", schema.CMD_PROGRAM, PROGRAM, 3, ref)
    assert node.on_command(wire, 1000) == 0
    decode_outbox(node)
    assert node.on_command(wire, 1001) is None  # QoS 1 redelivery: not executed twice
    assert decode_outbox(node) == []
    other = gw.command("chair-02", schema.CMD_STOP, {}, 3, ref)
    older = gw.command("chair-01", schema.CMD_STOP, {}, 3, ref, seq=0)
    old_boot = gw.command("chair-01", schema.CMD_STOP, {}, 2, ref)
    unknown_ref = gw.command("chair-01", schema.CMD_STOP, {}, 3, ref + 1000)
    for wire in (other, older, old_boot, unknown_ref):
        assert node.on_command(wire, 1002) == schema.ACK_REJECTED
    reasons = [a[schema.K_REASON] for a in _acks(decode_outbox(node))]
    assert reasons == ["cmd.other_device", "cmd.replayed", "cmd.stale_ref", "cmd.stale_ref"]
    assert ("stop",) not in pump.calls


def test_expired_command_rejected():
    node, pump, _, _ = _node()
    gw = Gateway()
    node.step(1000)
    ref = _last_seq(node)
    r = node.on_command(gw.command("chair-01", schema.CMD_STOP, {}, 3, ref), 1000 + 5001)
    assert r == schema.ACK_REJECTED
    assert _acks(decode_outbox(node))[-1][schema.K_REASON] == "cmd.expired"


def test_forged_command_is_reported_as_event_not_executed():
    node, pump, _, _ = _node()
    node.step(1000)
    ref = _last_seq(node)
    rogue = Gateway()
    rogue.signer = __import__("protocol.cose", None, None, ["x"]).Ed25519Signer(b"\x09" * 32)
    wire = rogue.command("chair-01", schema.CMD_STOP, {}, 3, ref)
    assert node.on_command(wire, 1000) == schema.ACK_REJECTED
    ev = _events(decode_outbox(node), "command_rejected")
    assert ev and ev[0][schema.E_DETAIL] == "cose.bad_signature"
    assert ("stop",) not in pump.calls


def test_local_interlock_stops_without_the_network_and_latches():
    node, pump, oxi, _ = _node(local_limits={"spo2": {"min": 85}})
    _start_infusion(node, Gateway(), 1000)
    oxi.vals = {mdc.SPO2: (84, 0, 1100)}
    node.step(1200)
    assert ("stop",) in pump.calls and node.local_trip
    node.step(1300)
    msgs = decode_outbox(node)
    assert len(_events(msgs, "local_interlock")) == 1
    tele = [m for m in msgs if m[schema.K_TYPE] == schema.TELEMETRY]
    assert tele[-1][schema.T_NODE][schema.N_LOCAL_TRIP] is True if len(tele) > 1 else True


def test_local_limit_with_decimal_exponent():
    node, pump, oxi, _ = _node(local_limits={"spo2": {"min": 85}})
    _start_infusion(node, Gateway(), 1000)
    oxi.vals = {mdc.SPO2: (851, -1, 1100)}  # 85.1 %: inside
    node.step(1200)
    assert ("stop",) not in pump.calls
    oxi.vals = {mdc.SPO2: (849, -1, 1250)}  # 84.9 %: beyond
    node.step(1300)
    assert ("stop",) in pump.calls


def test_telemetry_carries_vitals_pump_and_node_status():
    node, pump, oxi, _ = _node()
    oxi.vals = {mdc.SPO2: (97, 0, 1900), mdc.PULSE_OXIM: (72, 0, 1950)}
    pump.rate_ul_h, pump.infused_ul = 52500, 1234
    node.step(1000)
    decode_outbox(node)
    node.step(2000)
    tele = [m for m in decode_outbox(node) if m[schema.K_TYPE] == schema.TELEMETRY][0]
    up = tele[schema.K_T]
    assert tele[schema.T_VITALS][mdc.SPO2] == [97, 0, mdc.DIM_PERCENT, up - 100]
    assert tele[schema.T_PUMP][schema.P_RATE] == 52500
    assert tele[schema.T_PUMP][schema.P_STATE] == schema.PUMP_STOPPED
    assert tele[schema.T_NODE][schema.N_PERMIT_MS] == 0
    assert tele[schema.K_DEV] == "chair-01" and tele[schema.K_BOOT] == 3


def test_sequence_numbers_strictly_increase_and_death_is_seq_zero():
    node, _, _, _ = _node()
    for now in range(1000, 6000, 500):
        node.step(now)
    node.birth(6000)
    seqs = [m[schema.K_SEQ] for m in decode_outbox(node)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] == 1
    from protocol import cbor, cose

    death = cbor.loads(cose.decode(death_message(node.signer, "chair-01", 3)).payload)
    assert death[schema.K_SEQ] == 0 and death[schema.K_TYPE] == schema.DEATH


def test_pump_offline_while_running_is_reported_once():
    node, pump, _, _ = _node()
    _start_infusion(node, Gateway(), 1000)
    pump.is_online = False
    node.step(6100)
    node.step(6200)
    assert len(_events(decode_outbox(node), "device_offline")) == 1
