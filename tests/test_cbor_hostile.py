"""Hostile input: whatever bytes arrive, protocol.cbor.loads returns a value or raises
DecodeError with a documented reason -- never another exception, never a hang (every loop
step consumes input, and input is bounded by max_size)."""

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.cbor import REASONS, Tag, _utf8_ok, dumps, loads
from protocol.errors import DecodeError

SAMPLES = [
    dumps(
        Tag(
            18,
            [
                dumps({1: -8}),
                {4: b"node-07"},
                dumps({"seq": 123456, "rate_uL_h": 25000, "spo2": 97, "alarm": None}),
                bytes(range(64)),
            ],
        )
    ),
    dumps({"k": [1, -2, "\u6c34", b"\x00\xff", True, False, None, [], {}], 0: (1 << 64) - 1}),
    dumps([{"a": {"b": {"c": [0, [1, [2]]]}}}, -(1 << 64), "x" * 30]),
]


def outcome(data, **kw):
    """(True, value) or (False, reason); any exception but DecodeError propagates and fails."""
    try:
        return True, loads(data, **kw)
    except DecodeError as e:
        assert e.reason in REASONS, e.reason
        return False, e.reason


def check(data):
    for det in (True, False):
        outcome(data, deterministic=det)
        outcome(data, deterministic=det, tags=(), max_depth=3, max_items=20)


def test_every_bit_flip_of_valid_messages():
    for msg in SAMPLES:
        assert outcome(msg)[0]
        buf = bytearray(msg)
        for i in range(len(buf) * 8):
            buf[i >> 3] ^= 1 << (i & 7)
            check(bytes(buf))
            buf[i >> 3] ^= 1 << (i & 7)


def test_every_truncation_of_valid_messages():
    for msg in SAMPLES:
        for i in range(len(msg)):
            assert outcome(msg[:i]) == (False, "cbor.truncated")
            assert outcome(msg[:i], deterministic=False) == (False, "cbor.truncated")


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes(data):
    check(data)


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(SAMPLES), st.integers(0, 10_000), st.binary(min_size=1, max_size=8))
def test_random_splices(msg, at, junk):
    at %= len(msg)
    check(msg[:at] + junk + msg[at:])
    check(msg[:at] + junk + msg[at + len(junk) :])


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=64))
def test_whatever_we_accept_cbor2_reads_alike(data):
    # Acceptance implies well-formed CBOR that an independent decoder reads the same way.
    ok, got = outcome(data, deterministic=False)
    if not ok:
        return
    theirs = cbor2.loads(data)
    assert dumps(got) == dumps(_plain(theirs))


def _plain(v):
    if isinstance(v, cbor2.CBORTag):
        return Tag(v.tag, _plain(v.value))
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (dict, cbor2.frozendict)):
        return {k: _plain(x) for k, x in v.items()}
    return v


# the edges of RFC 3629 §4's byte ranges
_BOUNDARY_BYTES = [0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF]
_BOUNDARY_BYTES += [0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF]


@settings(max_examples=3000, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=12),
        st.lists(st.integers(0x80, 0xFF), max_size=8).map(bytes),
        st.lists(st.sampled_from(_BOUNDARY_BYTES), max_size=8).map(bytes),
        st.text(max_size=4).map(lambda s: s.encode("utf-8", "surrogatepass")),
    )
)
def test_utf8_validator_agrees_with_cpython(b):
    # MicroPython's decode() is lax, so the codec checks UTF-8 itself; CPython is the oracle.
    try:
        b.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    assert _utf8_ok(b) == valid
