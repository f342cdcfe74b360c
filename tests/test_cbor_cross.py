"""protocol.cbor against cbor2 (an independent implementation) and an independent reference
encoder of RFC 8949 §4.2.1 core deterministic encoding."""

import struct

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.cbor import Tag, dumps, loads
from protocol.errors import DecodeError
from tests.portable.test_cbor import strict_eq

U64 = 1 << 64
ints = st.one_of(
    st.integers(-(U64), U64 - 1),
    st.sampled_from([0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, U64 - 1]),
    st.sampled_from([-1, -24, -25, -256, -257, -65536, -65537, -(2**32), -(2**32) - 1, -U64]),
)
keys = st.one_of(ints, st.text(max_size=30))
scalars = st.one_of(ints, st.binary(max_size=100), st.text(max_size=60), st.booleans(), st.none())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(keys, inner, max_size=6),
    ),
    max_leaves=30,
)
tagged = st.builds(lambda v: Tag(18, v), values)
LIMITS = {"max_size": 1 << 20, "max_items": 1 << 16, "max_depth": 64}


def from_cbor2(v):
    """cbor2 gives tuples inside tags and CBORTag for tags; map both onto our types."""
    if isinstance(v, cbor2.CBORTag):
        return Tag(v.tag, from_cbor2(v.value))
    if isinstance(v, (list, tuple)):
        return [from_cbor2(x) for x in v]
    if isinstance(v, (dict, cbor2.frozendict)):
        return {k: from_cbor2(x) for k, x in v.items()}
    return v


def ref_head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    for ai, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | ai]) + struct.pack(fmt, n)
    raise AssertionError(n)


def ref_encode(v):
    """Straight from RFC 8949 §4.2.1: shortest heads, map entries sorted by encoded key."""
    if v is False:
        return b"\xf4"
    if v is True:
        return b"\xf5"
    if v is None:
        return b"\xf6"
    if isinstance(v, int):
        return ref_head(0, v) if v >= 0 else ref_head(1, -1 - v)
    if isinstance(v, bytes):
        return ref_head(2, len(v)) + v
    if isinstance(v, str):
        b = v.encode("utf-8")
        return ref_head(3, len(b)) + b
    if isinstance(v, list):
        return ref_head(4, len(v)) + b"".join(ref_encode(x) for x in v)
    if isinstance(v, dict):
        entries = sorted((ref_encode(k), ref_encode(x)) for k, x in v.items())
        return ref_head(5, len(v)) + b"".join(k + x for k, x in entries)
    if isinstance(v, Tag):
        return ref_head(6, v.tag) + ref_encode(v.value)
    raise AssertionError(type(v))


@settings(max_examples=300, deadline=None)
@given(st.one_of(values, tagged))
def test_cbor2_reads_what_we_write(v):
    assert strict_eq(from_cbor2(cbor2.loads(dumps(v, max_depth=64))), v)


@settings(max_examples=300, deadline=None)
@given(st.one_of(values, tagged))
def test_we_read_what_cbor2_writes(v):
    plain = cbor2.dumps(v if not isinstance(v, Tag) else cbor2.CBORTag(v.tag, v.value))
    # cbor2 keeps insertion order; canonical=True is RFC 7049 length-first. Neither is
    # §4.2.1 in general, so read them as generic CBOR.
    for enc in (plain, cbor2.dumps(v, canonical=True) if not isinstance(v, Tag) else plain):
        assert strict_eq(loads(enc, deterministic=False, **LIMITS), v)


@settings(max_examples=300, deadline=None)
@given(st.one_of(values, tagged))
def test_dumps_matches_reference_deterministic_encoding(v):
    enc = dumps(v, max_depth=64)
    assert enc == ref_encode(v)
    assert strict_eq(loads(enc, **LIMITS), v)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, st.integers(0, 3), min_size=2, max_size=12))
def test_strict_mode_accepts_exactly_the_deterministic_bytes(d):
    # cbor2 writes shortest heads but keeps insertion order: those bytes are deterministic
    # exactly when they equal ours, and strict mode must agree.
    theirs = cbor2.dumps(d)
    if theirs == dumps(d):
        assert loads(theirs) == d
    else:
        with pytest.raises(DecodeError) as e:
            loads(theirs)
        assert e.value.reason == "cbor.not_deterministic"
    # our key order is the bytewise order of the encoded keys
    m = loads(dumps(d))
    order = [ref_encode(k) for k in m]
    assert order == sorted(order)


def test_key_order_differs_from_rfc7049_canonical():
    d = {-1: 0, 24: 0, "a": 0, 1000: 0}
    assert dumps(d) == ref_encode(d)
    assert dumps(d) != cbor2.dumps(d, canonical=True)  # length-first would put -1 first
