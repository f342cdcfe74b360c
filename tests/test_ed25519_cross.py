"""protocol.ed25519 / protocol.sha512 against pyca/cryptography and hashlib (CPython only)."""

import hashlib
import json
import pathlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import ed25519
from protocol.sha512 import PureSHA512

_EDGE = pathlib.Path(__file__).parent / "vectors" / "ed25519_edge.json"

seeds = st.binary(min_size=32, max_size=32)
# Message lengths where a hashed input gains a SHA-512 block: prefix || M (32 + M bytes)
# at M = 80 and 208, R || A || M (64 + M) at M = 48 and 176; plus empty and 111-129.
_EDGES = (0, 1, 47, 48, 79, 80, 175, 176, 207, 208)
messages = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(_EDGES).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    st.binary(min_size=111, max_size=129),
)


def pyca_verify(pk, msg, sig):
    try:
        Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)
    except (InvalidSignature, ValueError):
        return False
    return True


@settings(max_examples=100, deadline=None)
@given(seed=seeds, msg=messages)
def test_sign_and_verify_match_cryptography(seed, msg):
    theirs = Ed25519PrivateKey.from_private_bytes(seed)
    pk = theirs.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ours = ed25519.SigningKey(seed)
    assert ours.public == pk == ed25519.public_key(seed)
    sig = ours.sign(msg)
    assert sig == theirs.sign(msg)  # deterministic: byte-identical
    assert ed25519.verify(pk, msg, sig)
    assert ed25519.VerifyingKey(pk).verify(msg, sig)
    assert pyca_verify(pk, msg, sig)


@settings(max_examples=100, deadline=None)
@given(seed=seeds, msg=messages, target=st.sampled_from(["sig", "msg", "pk"]), pos=st.integers(0))
def test_single_bit_flips_rejected_by_both(seed, msg, target, pos):
    key = ed25519.SigningKey(seed)
    pk, sig = key.public, key.sign(msg)
    fields = {"sig": bytearray(sig), "msg": bytearray(msg), "pk": bytearray(pk)}
    buf = fields[target]
    if not buf:  # empty message: flip the signature instead
        target, buf = "sig", fields["sig"]
    bit = pos % (len(buf) * 8)
    buf[bit >> 3] ^= 1 << (bit & 7)
    args = (bytes(fields["pk"]), bytes(fields["msg"]), bytes(fields["sig"]))
    ours = ed25519.verify(*args)
    assert ours is False
    assert pyca_verify(*args) is ours
    if target != "pk":
        assert ed25519.VerifyingKey(pk).verify(args[1], args[2]) is False


def test_edge_vectors_against_cryptography():
    """The recorded OpenSSL verdicts still hold, and we differ only by RFC-strict A decoding."""
    cases = json.loads(_EDGE.read_text())["cases"]
    differ = []
    for c in cases:
        pk, msg, sig = (bytes.fromhex(c[k]) for k in ("public", "message", "signature"))
        assert pyca_verify(pk, msg, sig) is c["openssl"], c["name"]
        assert ed25519.verify(pk, msg, sig) is c["valid"], c["name"]
        if c["openssl"] != c["valid"]:
            # OpenSSL accepts; RFC 8032 §5.1.3 rejects the encoding of A itself
            assert c["openssl"] and len(pk) == 32 and ed25519._decode(pk) is None, c["name"]
            differ.append(c["name"])
    assert differ == [
        "speccheck-14",
        "A-y-equals-p",
        "A-identity-noncanonical-y",
        "A-identity-negative-zero",
    ]


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=700), cuts=st.lists(st.integers(0, 700), max_size=6))
def test_pure_sha512_matches_hashlib_incrementally(data, cuts):
    h = PureSHA512()
    start = 0
    for cut in sorted(c for c in cuts if c <= len(data)) + [len(data)]:
        h.update(memoryview(data)[start:cut])
        start = cut
    assert h.digest() == hashlib.sha512(data).digest()
