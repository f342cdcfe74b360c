"""COSE_Sign1 on the portable (node) path: cose-wg vectors, our own profile, hostile input.

The ES256 vectors need P-256, which only the gateway path has (tests/test_cose_gateway.py);
here the node path must still reject their structural faults for the right reason.
"""

from binascii import unhexlify

from protocol import cbor, cose, ed25519
from protocol.errors import SignatureError
from tests.portable.harness import check_cases, load_json, raises

RFC8032_SEED = unhexlify("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")


def _example(path):
    return load_json("cose/" + path)


def _eddsa_lookup(kid):
    if kid == b"11":
        return cose.Ed25519Verifier(ed25519.public_key(RFC8032_SEED))
    return None


def test_eddsa_sig_01_verifies_and_is_recreated_byte_identically():
    case = _example("eddsa-examples/eddsa-sig-01.json")
    wire = unhexlify(case["output"]["cbor"])
    msg = cose.verify(wire, _eddsa_lookup)
    assert msg.payload == b"This is the content."
    assert msg.alg == cose.ALG_EDDSA and msg.kid == b"11"
    tbs = unhexlify(case["intermediates"]["ToBeSign_hex"])
    assert cose.sig_structure(msg.protected_bytes, msg.payload) == tbs
    again = cose.encode_with_headers(
        b"This is the content.",
        cose.Ed25519Signer(RFC8032_SEED),
        {cose.H_ALG: cose.ALG_EDDSA, cose.H_CTY: 0},
        {cose.H_KID: b"11"},
    )
    assert again == wire


def test_es256_fail_vectors_rejected_for_structural_reasons_on_node_path():
    cases = [
        ("sign1-tests/sign-fail-01.json", "cose.wrong_tag"),
        ("sign1-tests/sign-fail-03.json", "cose.unknown_alg"),
        ("sign1-tests/sign-fail-04.json", "cose.unknown_alg"),
    ]

    def run(case):
        path, reason = case
        wire = unhexlify(_example(path)["output"]["cbor"])
        e = raises(SignatureError, cose.verify, wire, _eddsa_lookup)
        assert e.reason == reason, e.reason

    check_cases("cose node-path structural rejects", cases, run, lambda c: c[0])


def _our_message():
    signer = cose.Ed25519Signer(RFC8032_SEED)
    payload = cbor.dumps({0: 2, 1: "chair-01", 2: 7, 3: 42, 4: 123456})
    return cose.encode(payload, signer, b"chair-01"), signer


def _lookup_for(signer, kid=b"chair-01"):
    verifier = cose.Ed25519Verifier(signer.public)
    return lambda k: verifier if k == kid else None


def test_own_profile_puts_alg_and_kid_in_protected_header():
    wire, signer = _our_message()
    msg = cose.verify(wire, _lookup_for(signer))
    assert msg.protected == {cose.H_ALG: cose.ALG_EDDSA, cose.H_KID: b"chair-01"}
    assert msg.unprotected == {}
    assert wire[0] == 0xD2


def test_unknown_kid_wrong_key_and_alg_mismatch_rejected():
    wire, signer = _our_message()
    assert raises(SignatureError, cose.verify, wire, lambda k: None).reason == "cose.unknown_kid"
    other = cose.Ed25519Verifier(ed25519.public_key(b"\x01" * 32))
    e = raises(SignatureError, cose.verify, wire, lambda k: other)
    assert e.reason == "cose.bad_signature"

    class FakeES256:
        alg = cose.ALG_ES256

        def verify(self, sig, data):
            return True

    e = raises(SignatureError, cose.verify, wire, lambda k: FakeES256())
    assert e.reason == "cose.alg_mismatch"


def test_untagged_rejected_unless_allowed():
    wire, signer = _our_message()
    untagged = wire[1:]
    e = raises(SignatureError, cose.verify, untagged, _lookup_for(signer))
    assert e.reason == "cose.untagged"
    assert cose.verify(untagged, _lookup_for(signer), tagged=False).kid == b"chair-01"


def test_crit_duplicate_header_and_detached_payload_rejected():
    signer = cose.Ed25519Signer(RFC8032_SEED)
    lookup = _lookup_for(signer)
    crit = cose.encode_with_headers(
        b"x", signer, {cose.H_ALG: -8, cose.H_CRIT: [99], cose.H_KID: b"chair-01"}, {}
    )
    assert raises(SignatureError, cose.verify, crit, lookup).reason == "cose.crit_unsupported"
    dup = cose.encode_with_headers(
        b"x", signer, {cose.H_ALG: -8, cose.H_KID: b"chair-01"}, {cose.H_KID: b"chair-01"}
    )
    assert raises(SignatureError, cose.verify, dup, lookup).reason == "cose.duplicate_header"
    protected = cbor.dumps({cose.H_ALG: -8, cose.H_KID: b"chair-01"})
    detached = cbor.dumps(cbor.Tag(18, [protected, {}, None, b"\x00" * 64]))
    assert raises(SignatureError, cose.verify, detached, lookup).reason == "cose.detached_payload"


def test_truncation_at_every_byte_rejected():
    wire, signer = _our_message()
    lookup = _lookup_for(signer)

    def run(n):
        e = raises(SignatureError, cose.verify, wire[:n], lookup)
        assert e.reason.startswith("cose."), e.reason

    check_cases("cose truncations", list(range(len(wire))), run)


def test_bit_flips_rejected():
    """Every bit flip of the structure; the signature/payload bits are sampled here
    because each costs a pure-Python verify on MicroPython (CPython covers all of them
    in tests/test_cose_gateway.py)."""
    wire, signer = _our_message()
    lookup = _lookup_for(signer)
    positions = []
    for bit in range(len(wire) * 8):
        if bit < 40 * 8 or bit % 13 == 0:
            positions.append(bit)

    def run(bit):
        flipped = bytearray(wire)
        flipped[bit // 8] ^= 1 << (bit % 8)
        e = raises(SignatureError, cose.verify, bytes(flipped), lookup)
        assert e.reason.startswith("cose."), e.reason

    check_cases("cose bit flips (node path)", positions, run)


def test_oversized_message_rejected_before_parsing():
    e = raises(SignatureError, cose.verify, b"\xd2" + b"\x00" * 5000, lambda k: None)
    assert e.reason == "cose.too_large"
