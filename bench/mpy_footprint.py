# Runs inside MicroPython (from build/mpy): the node's per-packet and per-command costs.
# Prints one JSON line: encode+sign of a telemetry packet, verify+decode+check of a permit
# command (the node's command-gate crypto, the stop path's dominant cost), and the heap
# resident after importing the protocol modules a node loads and building its two keys (its
# own signing key and the gateway's verifying key, with their comb tables).
import gc
import json
import sys
import time

from firmware import unload

gc.collect()
base = gc.mem_alloc()
from protocol import cbor, cose, envelope  # noqa: E402  (what a node imports)

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20
node = cose.Ed25519Signer(bytes(range(32)))
gw_seed = bytes(range(32, 64))
verifier = cose.Ed25519Verifier(cose.Ed25519Signer(gw_seed).public)
unload(("protocol._ed25519_setup",))  # as firmware/boot.py does once the keys are built
gc.collect()
resident = gc.mem_alloc() - base
from protocol import mdc, schema  # noqa: E402  (to build the test messages only)

gw = cose.Ed25519Signer(gw_seed)


def telemetry(seq):
    m = schema.envelope(schema.TELEMETRY, "chair-01", 3, seq, 60000 + seq)
    m[schema.T_VITALS] = {
        mdc.SPO2: [97, 0, mdc.DIM_PERCENT, 59800],
        mdc.PULSE_OXIM: [72, 0, mdc.DIM_BEAT_PER_MIN, 59800],
        mdc.NIBP_SYS: [12800, -2, mdc.DIM_MMHG, 31000],
        mdc.NIBP_DIA: [8200, -2, mdc.DIM_MMHG, 31000],
        mdc.HR_ECG: [74, 0, mdc.DIM_BEAT_PER_MIN, 59900],
        mdc.RESP_RATE: [14, 0, mdc.DIM_RESP_PER_MIN, 59900],
    }
    m[schema.T_PUMP] = {
        schema.P_STATE: 2,
        schema.P_RATE: 52500,
        schema.P_INFUSED: 1234,
        schema.P_VTBI: 35000,
        schema.P_ALARMS: [],
        schema.P_T: 59900,
        schema.P_PROGRAM: 4,
    }
    m[schema.T_NODE] = {
        schema.N_PERMIT_MS: 4200,
        schema.N_LOCAL_TRIP: False,
        schema.N_BUFFERED: 0,
        schema.N_DROPPED: 0,
        schema.N_SERIAL_BAD: 0,
    }
    return m


def permit(seq):
    args = {schema.A_LIFETIME: 5000, schema.A_PROGRAM_ID: 4}
    msg = schema.make_command("chair-01", 7, seq, 0, schema.CMD_PERMIT, args, 3, 100 + seq)
    return cose.encode(cbor.dumps(msg), gw, b"gateway")


def lookup(kid):
    return verifier if kid == b"gateway" else None


wire = cose.encode(cbor.dumps(telemetry(0)), node, b"chair-01")
cmd = permit(1)
gc.collect()
t0 = time.ticks_us()
for i in range(N):
    wire = cose.encode(cbor.dumps(telemetry(i)), node, b"chair-01")
sign_us = time.ticks_diff(time.ticks_us(), t0) / N
t0 = time.ticks_us()
for _ in range(N):
    m = cose.verify(cmd, lookup)
    envelope.validate_command(cbor.loads(m.payload))
verify_us = time.ticks_diff(time.ticks_us(), t0) / N
print(
    json.dumps(
        {
            "telemetry_sign_us": sign_us,
            "command_verify_us": verify_us,
            "telemetry_bytes": len(wire),
            "command_bytes": len(cmd),
            "protocol_resident_bytes": resident,
        }
    )
)
