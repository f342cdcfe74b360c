"""gateway/fast_verify.py may only ever agree with the strict, portable path: never accept a
packet the strict path rejects, and return the very message the strict path returns. Checked
on our own packets, on generated CBOR (including floats, tags, bignums, negative and text keys,
unsorted and duplicate keys, non-shortest heads), on random bytes, and on every truncation and
many mutations of a real packet."""

from __future__ import annotations

import struct
from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cose_keys import EdDSASigner
from gateway.fast_verify import FastShape, decode_payload
from gateway.verify import NodeKey, PacketVerifier, Rejected, Verified
from protocol import cbor, cose, mdc, schema, topics
from protocol.errors import ProtocolError
from tests.portable.test_cbor import strict_eq

SEED = bytes(range(32))
NODE = "chair-01"
SIGNER = EdDSASigner(SEED)
KEY = NodeKey(NODE, cose.ALG_EDDSA, SIGNER.public)
TOPIC = topics.uplink(NODE, "telemetry")
U64 = 1 << 64


def telemetry(seq: int = 5) -> dict:
    msg = schema.envelope(schema.TELEMETRY, NODE, 1, seq, 65_000)
    msg[schema.T_VITALS] = {
        mdc.SPO2: schema.vital(97, 0, mdc.DIM_PERCENT, 64_850),
        mdc.NIBP_SYS: schema.vital(12_500, -2, mdc.DIM_MMHG, 35_000),
    }
    msg[schema.T_PUMP] = {
        schema.P_STATE: schema.PUMP_INFUSING,
        schema.P_T: 64_600,
        schema.P_PROGRAM: 7,
        schema.P_ALARMS: [],
        schema.P_RATE: 52_500,
        schema.P_INFUSED: 1_200,
    }
    msg[schema.T_NODE] = {
        schema.N_PERMIT_MS: 4_000,
        schema.N_LOCAL_TRIP: False,
        schema.N_BUFFERED: 0,
        schema.N_DROPPED: 0,
        schema.N_SERIAL_BAD: 0,
    }
    return msg


def signed(payload: bytes, kid: bytes = NODE.encode()) -> bytes:
    return cose.encode(payload, SIGNER, kid)


class Refused(str):
    """A rejection reason (a str subclass, so it cannot be confused with a text value)."""


def strict_message(payload: bytes) -> Any:
    """The strict decoder's verdict on a payload: the value, or the rejection reason."""
    try:
        return cbor.loads(payload)
    except ProtocolError as e:
        return Refused(e.reason)


def strict_verify(topic: str, wire: bytes) -> Any:
    """Reference: the portable path alone (what PacketVerifier did before the fast path)."""
    try:
        direction, node, kind = topics.parse(topic)
        verifier = KEY.verifier()

        def lookup(kid: bytes) -> Any:
            return verifier if kid == node.encode() else None

        sign1 = cose.verify(wire, lookup)
        msg = schema.validate(cbor.loads(sign1.payload), schema.TELEMETRY)
        if msg[schema.K_DEV] != node:
            return Refused("schema.dev_mismatch")
        return msg
    except ProtocolError as e:
        return Refused(e.reason)


def outcome(res: Verified | Rejected) -> Any:
    return res.msg if isinstance(res, Verified) else Refused(res.reason)


def same(got: Any, want: Any) -> bool:
    if isinstance(want, Refused) or isinstance(got, Refused):
        return isinstance(got, Refused) and isinstance(want, Refused) and got == want
    return strict_eq(got, want)


# --- the payload decoder ---------------------------------------------------------------


def check_payload(payload: bytes) -> None:
    fast = decode_payload(payload)
    if fast is None:
        return  # not recognized: the strict path decides, nothing to compare
    strict = strict_message(payload)
    assert not isinstance(strict, Refused), "fast path accepted what strict rejects: %s" % strict
    assert strict_eq(fast, strict)


def test_our_own_packets_take_the_fast_path_with_the_strict_result() -> None:
    payload = cbor.dumps(telemetry())
    fast = decode_payload(payload)
    assert fast is not None and strict_eq(fast, cbor.loads(payload))


ints = st.one_of(
    st.integers(-(U64) - 5, U64 + 5),
    st.sampled_from([0, 23, 24, 255, 256, 65535, 65536, 2**32, U64 - 1, U64, -U64, -U64 - 1]),
)
keys = st.one_of(ints, st.text(max_size=8), st.booleans(), st.binary(max_size=4))
scalars = st.one_of(
    ints,
    st.binary(max_size=20),
    st.text(max_size=20),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.builds(lambda n, v: cbor2.CBORTag(n, v), st.integers(0, 300), st.integers(0, 9)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=25,
)


@settings(max_examples=1500, deadline=None)
@given(v=values, canonical=st.booleans())
def test_generated_cbor_is_never_accepted_where_strict_rejects(v: Any, canonical: bool) -> None:
    try:
        payload = cbor2.dumps(v, canonical=canonical)
    except (cbor2.CBOREncodeError, TypeError, ValueError):
        return
    check_payload(payload)


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=64))
def test_random_bytes_are_never_accepted_where_strict_rejects(data: bytes) -> None:
    check_payload(data)


def test_known_traps_take_the_strict_path_or_agree() -> None:
    traps = [
        b"\xa2\x02\x00\x01\x00",  # unsorted keys {2: 0, 1: 0}
        b"\xa2\x01\x00\x01\x01",  # duplicate key
        b"\xa1\x18\x01\x00",  # non-shortest key 1
        b"\xbf\x01\x00\xff",  # indefinite-length map
        b"\xa1\x01\xfb\x3f\xf0\x00\x00\x00\x00\x00\x00",  # float64 1.0
        b"\xa1\x01\xf9\x3c\x00",  # half float
        b"\xa1\x01\xc2\x49\x01\x00\x00\x00\x00\x00\x00\x00\x00",  # bignum 2**64
        b"\xa1\x01\xc2\x41\x01",  # bignum 1 (re-encodes as plain 1)
        b"\xa1\x01\xf7",  # undefined
        b"\xa1\xf5\x00",  # bool key
        b"\xa1\x20\x00",  # negative key -1 (legal, strict decides)
        b"\xa2\x18\x18\x00\x20\x00",  # {24: 0, -1: 0}: bytewise order, RFC 7049 would differ
        b"\xa2\x20\x00\x18\x18\x00",  # {-1: 0, 24: 0}: length-first order, not ours
        b"\xa1\x61\x61\x00",  # text key
        b"\xa1\x01\xd8\x12\x00",  # tag 18 inside the payload
        b"\xa1\x01\x62\xc0\xaf",  # overlong UTF-8
        b"\xa1\x01\x63\xed\xa0\x80",  # surrogate in UTF-8
        b"\x81" * 12 + b"\x00",  # nesting deeper than the strict limit
        b"\xa1\xc2\x49\x01" + bytes(8) + b"\xf6",  # bignum 2**64 as a map key
    ]
    for t in traps:
        check_payload(t)
    assert decode_payload(b"\xa2\x02\x00\x01\x00") is None
    # Item limits count the whole payload, not each container (strict: cbor.too_many_items).
    many = cbor2.dumps({1: list(range(300)), 2: list(range(300))})
    check_payload(many)
    assert decode_payload(many) is None
    assert decode_payload(b"\xa1\x01\xfb\x3f\xf0\x00\x00\x00\x00\x00\x00") is None
    assert decode_payload(b"\xa1\x01\xc2\x49\x01\x00\x00\x00\x00\x00\x00\x00\x00") is None


# --- whole packets through PacketVerifier ------------------------------------------------


def test_a_packet_through_the_fast_path_equals_the_strict_result() -> None:
    wire = signed(cbor.dumps(telemetry()))
    assert FastShape(cose.ALG_EDDSA, NODE.encode(), KEY.verifier()).verify(wire) is not None
    res = PacketVerifier({NODE: KEY}).verify(TOPIC, wire)
    assert isinstance(res, Verified)
    assert strict_eq(res.msg, strict_verify(TOPIC, wire))


def test_payload_sizes_across_every_bstr_head_form() -> None:
    """Payloads of < 24, < 256 and >= 256 bytes use different bstr heads."""
    shape = FastShape(cose.ALG_EDDSA, NODE.encode(), KEY.verifier())
    for n in (0, 10, 23, 24, 200, 255, 256, 1500):
        payload = cbor.dumps({1: "x" * n}) if n else cbor.dumps({})
        wire = signed(payload)
        assert strict_eq(shape.verify(wire), cbor.loads(payload)), n


def test_every_truncation_and_bit_flip_matches_the_strict_verdict() -> None:
    wire = signed(cbor.dumps(telemetry()))
    pv = PacketVerifier({NODE: KEY})
    for n in range(len(wire)):
        res = pv.verify(TOPIC, wire[:n])
        assert isinstance(res, Rejected) and res.reason == strict_verify(TOPIC, wire[:n])
    for i in range(len(wire)):
        for bit in (0, 3, 7):
            bad = bytearray(wire)
            bad[i] ^= 1 << bit
            want = strict_verify(TOPIC, bytes(bad))
            got = outcome(pv.verify(TOPIC, bytes(bad)))
            assert same(got, want), (i, bit)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_packets_match_the_strict_verdict(data: st.DataObject) -> None:
    wire = bytearray(signed(cbor.dumps(telemetry(data.draw(st.integers(0, 2**32 - 1))))))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["set", "insert", "delete"]))
        i = data.draw(st.integers(0, len(wire) - 1))
        if op == "set":
            wire[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            wire.insert(i, data.draw(st.integers(0, 255)))
        else:
            del wire[i]
    want = strict_verify(TOPIC, bytes(wire))
    got = outcome(PacketVerifier({NODE: KEY}).verify(TOPIC, bytes(wire)))
    assert same(got, want)


def test_a_packet_signed_with_unusual_but_valid_headers_still_verifies_strictly() -> None:
    """The fast path knows one header layout; another valid one (kid unprotected) goes the
    strict way and is accepted there, unchanged from before the fast path existed."""
    payload = cbor.dumps(telemetry())
    wire = cose.encode_with_headers(
        payload, SIGNER, {cose.H_ALG: cose.ALG_EDDSA}, {cose.H_KID: NODE.encode()}
    )
    assert FastShape(cose.ALG_EDDSA, NODE.encode(), KEY.verifier()).verify(wire) is None
    assert same(
        outcome(PacketVerifier({NODE: KEY}).verify(TOPIC, wire)), strict_verify(TOPIC, wire)
    )


def test_another_nodes_kid_is_still_named_as_a_mismatch() -> None:
    other = NodeKey("chair-02", cose.ALG_EDDSA, EdDSASigner(bytes(32)).public)
    wire = signed(cbor.dumps(telemetry()), kid=b"chair-02")
    res = PacketVerifier({NODE: KEY, "chair-02": other}).verify(TOPIC, wire)
    assert isinstance(res, Rejected) and res.reason == "cose.kid_mismatch"


def test_a_wrong_signature_is_rejected_with_the_strict_reason() -> None:
    wire = bytearray(signed(cbor.dumps(telemetry())))
    wire[-1] ^= 1
    res = PacketVerifier({NODE: KEY}).verify(TOPIC, bytes(wire))
    assert isinstance(res, Rejected) and res.reason == strict_verify(TOPIC, bytes(wire))
    assert struct.pack(">B", wire[-1])  # the flip stayed inside the signature
