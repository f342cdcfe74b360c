"""Protocol self-check: one packet each way between the two interpreters.

Runs the node's side (pure-Python CBOR + Ed25519 + COSE) in the real MicroPython
interpreter and the gateway's side (``cryptography``) in CPython, and checks that a signed
telemetry packet made by the node verifies at the gateway, that a signed command made by the
gateway verifies on the node, and that a tampered copy is rejected on both. It is the
quickest way to see that an installation works: ``python -m gateway.selfcheck``.
"""

from __future__ import annotations

import binascii
import os
import shutil
import subprocess
import sys
import time

from gateway import firmware_build
from gateway.cose_keys import EdDSASigner, EdDSAVerifier
from protocol import cbor, cose, mdc, schema
from protocol.errors import ProtocolError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs inside MicroPython: make + sign a telemetry packet, then verify a gateway command.
_NODE_SCRIPT = r"""
import sys, time, binascii
from protocol import cbor, cose, schema, mdc
seed = binascii.unhexlify(sys.argv[1])
signer = cose.Ed25519Signer(seed)
msg = schema.envelope(schema.TELEMETRY, "selfcheck", 1, 0, 1000)
msg[schema.T_VITALS] = {mdc.SPO2: schema.vital(97, 0, mdc.DIM_PERCENT, 990)}
msg[schema.T_PUMP] = {schema.P_STATE: schema.PUMP_STOPPED, schema.P_T: 995}
msg[schema.T_NODE] = {schema.N_PERMIT_MS: 0}
t0 = time.ticks_us()
wire = cose.encode(cbor.dumps(msg), signer, b"selfcheck")
t1 = time.ticks_us()
print("PACKET", binascii.hexlify(wire).decode(), time.ticks_diff(t1, t0))
gw = cose.Ed25519Verifier(binascii.unhexlify(sys.argv[2]))
for line in sys.argv[3:]:
    data = binascii.unhexlify(line)
    t0 = time.ticks_us()
    try:
        m = cose.verify(data, lambda kid: gw if kid == b"gateway" else None)
        body = schema.validate(cbor.loads(m.payload), schema.COMMAND)
        print("VERIFIED", body[schema.C_KIND], time.ticks_diff(time.ticks_us(), t0))
    except ValueError as e:
        print("REJECTED", e.reason)
"""


def micropython_path() -> str:
    exe = shutil.which("micropython") or os.path.join(os.path.dirname(sys.executable), "micropython")
    if not os.path.exists(exe):
        raise SystemExit("micropython is not installed: run `make setup` (pyproject dev extra)")
    return exe


def main() -> int:
    node_seed = os.urandom(32)
    gateway = EdDSASigner(os.urandom(32))
    node_pub = cose.Ed25519Signer(node_seed).public

    cmd = schema.make_command("selfcheck", 1, 0, 0, schema.CMD_STOP, {schema.A_REASON: "check"}, 1, 0)
    good = cose.encode(cbor.dumps(cmd), gateway, b"gateway")
    bad = bytearray(good)
    bad[-1] ^= 1
    build = firmware_build.build()  # the node runs compiled .mpy, as on a board
    out = subprocess.run(
        [micropython_path(), "-X", "heapsize=128k", "-c", _NODE_SCRIPT,
         node_seed.hex(), gateway.public.hex(), good.hex(), bytes(bad).hex()],
        cwd=str(build), env=dict(os.environ, MICROPYPATH=".:.frozen"),
        capture_output=True, text=True, timeout=60,
    )
    lines = out.stdout.split("\n")
    if out.returncode != 0 or not lines[0].startswith("PACKET"):
        print("MicroPython side failed:\n" + out.stdout + out.stderr, file=sys.stderr)
        return 1
    _, packet_hex, sign_us = lines[0].split()
    packet = binascii.unhexlify(packet_hex)

    ok = True
    verifier = EdDSAVerifier(node_pub)
    t0 = time.perf_counter()
    try:
        msg = cose.verify(packet, lambda kid: verifier if kid == b"selfcheck" else None)
        body = schema.validate(cbor.loads(msg.payload), schema.TELEMETRY)
        verify_us = (time.perf_counter() - t0) * 1e6
        print("node -> gateway: %d-byte telemetry packet signed in MicroPython (128 KiB heap) in %.1f ms, "
              "verified by the gateway in %.0f us (SpO2 %d%%)"
              % (len(packet), int(sign_us) / 1000, verify_us, body[schema.T_VITALS][mdc.SPO2][0]))
    except ProtocolError as e:
        print("FAIL: gateway rejected the node's packet: %s" % e)
        ok = False
    tampered = bytearray(packet)
    tampered[len(tampered) // 2] ^= 0x10
    try:
        cose.verify(bytes(tampered), lambda kid: verifier if kid == b"selfcheck" else None)
        print("FAIL: gateway accepted a tampered packet")
        ok = False
    except ProtocolError as e:
        print("tampered packet rejected by the gateway: %s" % e.reason)

    verdicts = lines[1:3]
    if len(verdicts) == 2 and verdicts[0].startswith("VERIFIED") and verdicts[1].startswith("REJECTED"):
        print("gateway -> node: signed stop command verified in MicroPython in %.1f ms; "
              "tampered copy rejected (%s)" % (int(verdicts[0].split()[2]) / 1000, verdicts[1].split()[1]))
    else:
        print("FAIL: MicroPython command verdicts: %r" % (verdicts,))
        ok = False
    print("protocol self-check: %s" % ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
