"""Verification worker processes: results in order, and key changes while running."""

from __future__ import annotations

import os

from gateway.verify import NodeKey, Verified
from gateway.workers import VerifierPool
from protocol import cbor, cose, mdc, schema, topics


def _packet(seed: bytes, node: str, seq: int) -> tuple[str, bytes]:
    m = schema.envelope(schema.TELEMETRY, node, 1, seq, 1000)
    m[schema.T_VITALS] = {mdc.SPO2: [97, 0, mdc.DIM_PERCENT, 1000]}
    m[schema.T_PUMP] = {schema.P_STATE: schema.PUMP_STOPPED, schema.P_T: 1000}
    m[schema.T_NODE] = {schema.N_PERMIT_MS: 0}
    wire = cose.encode(cbor.dumps(m), cose.Ed25519Signer(seed), node.encode())
    return topics.uplink(node, "telemetry"), wire


def test_key_changes_while_running_keep_results_aligned():
    a, b = os.urandom(32), os.urandom(32)
    key_a = NodeKey("chair-a", cose.ALG_EDDSA, cose.Ed25519Signer(a).public)
    pool = VerifierPool(2, {"chair-a": key_a})
    try:
        assert isinstance(pool.verify_batch([_packet(a, "chair-a", 1)])[0], Verified)
        # Registering a node while running sends a key-only batch down every worker queue;
        # it must not produce a reply that the next batch would take for its own.
        pool.set_key(NodeKey("chair-b", cose.ALG_EDDSA, cose.Ed25519Signer(b).public))
        items = [_packet(a, "chair-a", 2), _packet(b, "chair-b", 1), _packet(a, "chair-a", 3)]
        results = pool.verify_batch(items)
        assert len(results) == 3 and all(isinstance(r, Verified) for r in results)
        assert [r.node for r in results] == ["chair-a", "chair-b", "chair-a"]
        pool.remove_key("chair-b")
        res = pool.verify_batch([_packet(b, "chair-b", 2)])
        assert len(res) == 1 and res[0].reason == "node.unknown"
    finally:
        pool.close()
