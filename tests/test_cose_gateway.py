"""COSE_Sign1 on the gateway path (``cryptography``): ES256 and EdDSA vectors, cross-checks
with the node's pure-Python path in both directions, and every single-bit flip."""

from __future__ import annotations

import base64
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cose_keys import EdDSASigner, EdDSAVerifier, ES256Verifier
from protocol import cbor, cose
from protocol.errors import SignatureError
from tests.portable.harness import vectors_dir

COSE_DIR = os.path.join(vectors_dir(), "cose")


def _load(rel):
    with open(os.path.join(COSE_DIR, rel)) as f:
        return json.load(f)


def _b64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _lookup(case):
    key = case["input"]["sign0"]["key"]
    kid = key["kid"].encode()
    if key["kty"] == "EC":
        verifier = ES256Verifier.from_xy(_b64url(key["x"]), _b64url(key["y"]))
    else:
        verifier = EdDSAVerifier(bytes.fromhex(key["x_hex"]))
    return lambda k: verifier if k == kid else None


ES256_CASES = sorted(
    ["ecdsa-examples/ecdsa-sig-01.json"]
    + ["sign1-tests/" + n for n in os.listdir(os.path.join(COSE_DIR, "sign1-tests"))]
)


@pytest.mark.parametrize("rel", ES256_CASES + ["eddsa-examples/eddsa-sig-01.json"])
def test_cose_wg_vector_on_gateway_path(rel):
    case = _load(rel)
    wire = bytes.fromhex(case["output"]["cbor"])
    aad = bytes.fromhex(case["input"]["sign0"].get("external", ""))
    untagged_ok = "RemoveCBORTag" in (case["input"].get("failures") or {})
    if case.get("fail"):
        with pytest.raises(SignatureError) as e:
            cose.verify(wire, _lookup(case), external_aad=aad)
        assert e.value.reason in {
            "cose.wrong_tag", "cose.bad_signature", "cose.unknown_alg", "cose.alg_mismatch",
        }, e.value.reason
    else:
        if untagged_ok:
            # Our wire profile requires tag 18; the signature itself must still verify.
            with pytest.raises(SignatureError, match="cose.untagged"):
                cose.verify(wire, _lookup(case), external_aad=aad)
        msg = cose.verify(wire, _lookup(case), external_aad=aad, tagged=not untagged_ok)
        assert msg.payload == case["input"]["plaintext"].encode()
        tbs = bytes.fromhex(case["intermediates"]["ToBeSign_hex"])
        body = b"" if not msg.protected else msg.protected_bytes
        assert cose.sig_structure(body, msg.payload, aad) == tbs


def test_fail_vectors_fail_for_the_documented_reason():
    expected = {
        "sign-fail-01.json": "cose.wrong_tag",
        "sign-fail-02.json": "cose.bad_signature",
        "sign-fail-03.json": "cose.unknown_alg",
        "sign-fail-04.json": "cose.unknown_alg",
        "sign-fail-06.json": "cose.bad_signature",
        "sign-fail-07.json": "cose.bad_signature",
    }
    for name, reason in expected.items():
        case = _load("sign1-tests/" + name)
        with pytest.raises(SignatureError) as e:
            cose.verify(bytes.fromhex(case["output"]["cbor"]), _lookup(case))
        assert e.value.reason == reason, name


payloads = st.binary(min_size=0, max_size=300)
seeds = st.binary(min_size=32, max_size=32)
kids = st.binary(min_size=1, max_size=32)


@settings(max_examples=40, deadline=None)
@given(seed=seeds, payload=payloads, kid=kids)
def test_node_made_sign1_verifies_on_gateway_path(seed, payload, kid):
    wire = cose.encode(payload, cose.Ed25519Signer(seed), kid)
    verifier = EdDSAVerifier(cose.Ed25519Signer(seed).public)
    assert cose.verify(wire, lambda k: verifier if k == kid else None).payload == payload


@settings(max_examples=40, deadline=None)
@given(seed=seeds, payload=payloads, kid=kids)
def test_gateway_made_sign1_verifies_on_node_path(seed, payload, kid):
    signer = EdDSASigner(seed)
    wire = cose.encode(payload, signer, kid)
    # Ed25519 is deterministic: both implementations make the same bytes.
    assert wire == cose.encode(payload, cose.Ed25519Signer(seed), kid)
    verifier = cose.Ed25519Verifier(signer.public)
    assert cose.verify(wire, lambda k: verifier if k == kid else None).payload == payload


def test_every_single_bit_flip_rejected_on_both_paths():
    seed = bytes(range(32))
    payload = cbor.dumps({0: 2, 1: "chair-01", 2: 1, 3: 5, 4: 999, 10: {}, 11: {1: 1, 6: 0}})
    wire = cose.encode(payload, EdDSASigner(seed), b"chair-01")
    fast = EdDSAVerifier(EdDSASigner(seed).public)
    pure = cose.Ed25519Verifier(EdDSASigner(seed).public)
    reasons: dict[str, int] = {}
    for bit in range(len(wire) * 8):
        flipped = bytearray(wire)
        flipped[bit // 8] ^= 1 << (bit % 8)
        for verifier in (fast, pure) if bit % 4 == 0 else (fast,):
            with pytest.raises(SignatureError) as e:
                cose.verify(bytes(flipped), lambda k, v=verifier: v if k == b"chair-01" else None)
            reasons[e.value.reason] = reasons.get(e.value.reason, 0) + 1
    print("bit flips of a %d-byte packet rejected by reason: %s" % (len(wire), reasons))
    assert sum(reasons.values()) >= len(wire) * 8
