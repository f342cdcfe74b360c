# Runs inside MicroPython (from build/mpy): encode+sign and decode+verify of a typical
# telemetry packet with the node's pure-Python code, and the heap one sign needs.
import gc
import json
import sys
import time

from protocol import cbor, cose, mdc, schema

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50
ONLY_SIGN = len(sys.argv) > 2  # heap bisection: just sign a few packets
seed = bytes(range(32))
signer = cose.Ed25519Signer(seed)
verifier = cose.Ed25519Verifier(signer.public)


def telemetry(seq):
    m = schema.envelope(schema.TELEMETRY, "chair-01", 3, seq, 60000 + seq)
    m[schema.T_VITALS] = {
        mdc.SPO2: [97, 0, mdc.DIM_PERCENT, 59800],
        mdc.PULSE_OXIM: [72, 0, mdc.DIM_BEAT_PER_MIN, 59800],
        mdc.NIBP_SYS: [128, 0, mdc.DIM_MMHG, 31000],
        mdc.NIBP_DIA: [82, 0, mdc.DIM_MMHG, 31000],
        mdc.HR_ECG: [74, 0, mdc.DIM_BEAT_PER_MIN, 59900],
        mdc.RESP_RATE: [14, 0, mdc.DIM_RESP_PER_MIN, 59900],
    }
    m[schema.T_PUMP] = {schema.P_STATE: 2, schema.P_RATE: 52500, schema.P_INFUSED: 1234,
                        schema.P_VTBI: 35000, schema.P_ALARMS: [], schema.P_T: 59900,
                        schema.P_PROGRAM: 4}
    m[schema.T_NODE] = {schema.N_PERMIT_MS: 4200, schema.N_LOCAL_TRIP: False}
    return m


wire = cose.encode(cbor.dumps(telemetry(0)), signer, b"chair-01")
if ONLY_SIGN:
    for i in range(3):
        cose.encode(cbor.dumps(telemetry(i)), signer, b"chair-01")
    print("SIGNED")
    sys.exit(0)
gc.collect()
before = gc.mem_alloc()
t0 = time.ticks_us()
for i in range(N):
    wire = cose.encode(cbor.dumps(telemetry(i)), signer, b"chair-01")
sign_us = time.ticks_diff(time.ticks_us(), t0) / N
t0 = time.ticks_us()
for _ in range(N):
    m = cose.verify(wire, lambda kid: verifier)
    schema.validate(cbor.loads(m.payload))
verify_us = time.ticks_diff(time.ticks_us(), t0) / N

gc.collect()
print(json.dumps({"sign_us": sign_us, "verify_us": verify_us, "size": len(wire),
                  "resident_bytes": before}))
