"""protocol.cbor on both interpreters: RFC 8949 Appendix A plus the wire subset's rejections."""

import binascii

from protocol.cbor import REASONS, EncodeError, Tag, dumps, loads
from protocol.errors import DecodeError
from tests.portable.harness import check_cases, load_json, raises


def strict_eq(a, b):
    """== that also tells True from 1 and bytes from bytearray (plain == does not)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(strict_eq(a[i], b[i]) for i in range(len(a)))
    if isinstance(a, dict):
        return len(a) == len(b) and all(k in b and strict_eq(a[k], b[k]) for k in a)
    if isinstance(a, Tag):
        return a.tag == b.tag and strict_eq(a.value, b.value)
    return a == b


def _h(s):
    return binascii.unhexlify(s)


def _reason(data, **kw):
    return raises(DecodeError, lambda: loads(data, **kw)).reason


# Appendix A vectors outside the wire subset, each with the reason it must be rejected for.
_FLOAT = "cbor.float_unsupported"
_TAG = "cbor.tag_unsupported"
_INDEF = "cbor.indefinite_unsupported"
_SIMPLE = "cbor.simple_unsupported"
REJECTED = {
    "c249010000000000000000": _TAG,  # bignum 2**64
    "c349010000000000000000": _TAG,  # bignum -2**64-1
    "f90000": _FLOAT,
    "f98000": _FLOAT,
    "f93c00": _FLOAT,
    "fb3ff199999999999a": _FLOAT,
    "f93e00": _FLOAT,
    "f97bff": _FLOAT,
    "fa47c35000": _FLOAT,
    "fa7f7fffff": _FLOAT,
    "fb7e37e43c8800759c": _FLOAT,
    "f90001": _FLOAT,
    "f90400": _FLOAT,
    "f9c400": _FLOAT,
    "fbc010666666666666": _FLOAT,
    "f97c00": _FLOAT,
    "f97e00": _FLOAT,
    "f9fc00": _FLOAT,
    "fa7f800000": _FLOAT,
    "fa7fc00000": _FLOAT,
    "faff800000": _FLOAT,
    "fb7ff0000000000000": _FLOAT,
    "fb7ff8000000000000": _FLOAT,
    "fbfff0000000000000": _FLOAT,
    "f7": _SIMPLE,  # undefined
    "f0": _SIMPLE,  # simple(16)
    "f818": "cbor.malformed",  # simple(24): RFC 7049 example, not well-formed per RFC 8949 §3.3
    "f8ff": _SIMPLE,  # simple(255)
    "c074323031332d30332d32315432303a30343a30305a": _TAG,
    "c11a514b67b0": _TAG,
    "c1fb41d452d9ec200000": _TAG,  # the tag is seen before its float content
    "d74401020304": _TAG,
    "d818456449455446": _TAG,
    "d82076687474703a2f2f7777772e6578616d706c652e636f6d": _TAG,
    "5f42010243030405ff": _INDEF,
    "7f657374726561646d696e67ff": _INDEF,
    "9fff": _INDEF,
    "9f018202039f0405ffff": _INDEF,
    "9f01820203820405ff": _INDEF,
    "83018202039f0405ff": _INDEF,
    "83019f0203ff820405": _INDEF,
    "9f0102030405060708090a0b0c0d0e0f101112131415161718181819ff": _INDEF,
    "bf61610161629f0203ffff": _INDEF,
    "826161bf61626163ff": _INDEF,
    "bf6346756ef563416d7421ff": _INDEF,
}

# Supported vectors whose value JSON cannot hold (only diagnostic notation is given).
DIAGNOSTIC_ONLY = {
    "40": b"",
    "4401020304": b"\x01\x02\x03\x04",
    "a201020304": {1: 2, 3: 4},
}


def _appendix():
    supported = []
    rejected = []
    for v in load_json("cbor/appendix_a.json"):
        if v["hex"] in REJECTED:
            rejected.append(v)
        else:
            supported.append(v)
    return supported, rejected


def _expected(v):
    if v["hex"] in DIAGNOSTIC_ONLY:
        return DIAGNOSTIC_ONLY[v["hex"]]
    return v["decoded"]


def test_appendix_a_classification_is_complete():
    supported, rejected = _appendix()
    # every rejection in the table is a real vector, every other vector has an expected value
    assert len(rejected) == len(REJECTED)
    for v in supported:
        assert "decoded" in v or v["hex"] in DIAGNOSTIC_ONLY, v["hex"]
    assert len(supported) + len(rejected) == 82


def test_appendix_a_decode():
    supported, _ = _appendix()

    def case(v):
        got = loads(_h(v["hex"]), deterministic=False)
        assert strict_eq(got, _expected(v)), (got, _expected(v))
        if v["roundtrip"]:  # those bytes are deterministic, so strict mode accepts them too
            assert strict_eq(loads(_h(v["hex"])), got)

    check_cases("cbor appendix A decode", supported, case, lambda v: v["hex"])


def test_appendix_a_roundtrip():
    supported, _ = _appendix()
    cases = [v for v in supported if v["roundtrip"]]

    def case(v):
        assert dumps(_expected(v)) == _h(v["hex"])

    assert len(cases) == len(supported)  # every supported vector is already deterministic
    check_cases("cbor appendix A roundtrip", cases, case, lambda v: v["hex"])


def test_appendix_a_rejected():
    _, rejected = _appendix()

    def case(v):
        data = _h(v["hex"])
        for det in (False, True):
            assert _reason(data, deterministic=det) == REJECTED[v["hex"]]

    check_cases("cbor appendix A rejected", rejected, case, lambda v: v["hex"])


def _message():
    # shaped like a signed packet: tag 18 around [protected bstr, header map, payload, signature]
    payload = dumps({"seq": 70000, "t": -40, "state": "run", "rate": [1, 250, 4294967296]})
    return dumps(Tag(18, [_h("a10127"), {4: b"11"}, payload, b"\x5a" * 64]))


def test_truncation_at_every_byte():
    msg = _message()
    assert strict_eq(loads(msg).value[3], b"\x5a" * 64)
    for i in range(len(msg)):
        assert _reason(msg[:i]) == "cbor.truncated", i
    assert _reason(b"") == "cbor.truncated"


def test_huge_declared_lengths_fail_without_allocating():
    # A DecodeError (not MemoryError) proves no allocation from the declared size.
    for hexs in (
        "5bffffffffffffffff",
        "7bffffffffffffffff",
        "9bffffffffffffffff",
        "bbffffffffffffffff",
        "5affffffff00",
        "9a0001ffff0000",
        "b9800000",
        "a2010203",  # 2 pairs need 4 bytes, 3 remain
    ):
        assert _reason(_h(hexs)) == "cbor.truncated", hexs
        assert _reason(_h(hexs), deterministic=False) == "cbor.truncated", hexs


def test_depth_limit():
    assert _reason(b"\x81" * 1000 + b"\x80") == "cbor.too_deep"
    assert _reason(b"\xd2" * 1000 + b"\x00") == "cbor.too_deep"  # tags nest too
    assert loads(b"\xd2" * 8 + b"\x00").value.value.value.value.value.value.value.value == 0
    assert _reason(b"\xd2" * 9 + b"\x00") == "cbor.too_deep"
    ok = b"\x81" * 7 + b"\x80"  # 8 nested arrays: the default limit
    assert strict_eq(loads(ok), [[[[[[[[]]]]]]]])
    assert _reason(b"\x81" + ok) == "cbor.too_deep"
    assert _reason(b"\xa1\x00" * 9 + b"\x00") == "cbor.too_deep"
    assert loads(b"\xa1\x00" * 8 + b"\x00") == {0: {0: {0: {0: {0: {0: {0: {0: 0}}}}}}}}
    assert loads(b"\x81\x81\x01", max_depth=2) == [[1]]
    assert _reason(b"\x81\x81\x01", max_depth=1) == "cbor.too_deep"
    assert loads(b"\x01", max_depth=0) == 1
    assert _reason(b"\x80", max_depth=0) == "cbor.too_deep"


def test_item_and_size_limits():
    arr = b"\x99\x01\xf4" + b"\x00" * 500  # 500 elements + the array = 501 items
    assert len(loads(arr)) == 500
    assert _reason(arr, max_items=500) == "cbor.too_many_items"
    assert _reason(b"\x99\x02\x58" + b"\x00" * 600) == "cbor.too_many_items"
    assert loads(b"\x99\x02\x58" + b"\x00" * 600, max_items=601) == [0] * 600
    assert _reason(b"\xa1\x01\xa1\x02\x03", max_items=4) == "cbor.too_many_items"
    assert loads(b"\xa1\x01\xa1\x02\x03", max_items=5) == {1: {2: 3}}
    # tags do not declare a count, so their content is counted as it arrives
    assert _reason(b"\xd2\xd2\x00", max_items=2) == "cbor.too_many_items"
    assert loads(b"\xd2\xd2\x00", max_items=3) == Tag(18, Tag(18, 0))
    assert _reason(b"\x01", max_items=0) == "cbor.too_many_items"
    big = b"\x59\x10\x00" + b"\x00" * 4096
    assert _reason(big) == "cbor.too_large"
    assert loads(big, max_size=len(big)) == bytes(4096)
    assert _reason(bytearray(big)) == "cbor.too_large"


def test_trailing_bytes():
    assert _reason(b"\x01\x00") == "cbor.trailing_bytes"
    assert _reason(_message() + b"\x00") == "cbor.trailing_bytes"
    assert _reason(b"\x80\x80") == "cbor.trailing_bytes"


def test_non_shortest_heads():
    for hexs, value in (
        ("1817", 23),
        ("190017", 23),
        ("1900ff", 255),
        ("1a0000ffff", 65535),
        ("1b00000000ffffffff", 4294967295),
        ("3817", -24),
        ("580161", b"a"),
        ("780161", "a"),
        ("980100", [0]),
        ("b8010000", {0: 0}),
        ("d8128100", Tag(18, [0])),
        ("d90012f6", Tag(18, None)),
    ):
        assert _reason(_h(hexs)) == "cbor.not_deterministic", hexs
        assert strict_eq(loads(_h(hexs), deterministic=False), value), hexs


def test_map_key_order_and_duplicates():
    assert _reason(_h("a2020001f4")) == "cbor.not_deterministic"
    assert loads(_h("a2020001f4"), deterministic=False) == {1: False, 2: 0}
    # bytewise, not RFC 7049 length-first: 24 (0x1818) sorts before -1 (0x20)
    assert dumps({-1: 0, 24: 0}) == _h("a2181800" + "2000")
    assert _reason(_h("a220001818" + "00")) == "cbor.not_deterministic"
    assert dumps({"aa": 1, "b": 2, 0: 3}) == _h("a3" + "0003" + "616202" + "62616101")
    for det in (True, False):
        assert _reason(_h("a201000100"), deterministic=det) == "cbor.duplicate_key"
        assert _reason(_h("a2616101616102"), deterministic=det) == "cbor.duplicate_key"


def test_bad_keys():
    for hexs in ("a18000", "a1f500", "a1f600", "a1400000", "a1a00000", "a1d2000000", "a1f9000000"):
        assert _reason(_h(hexs), deterministic=False) == "cbor.bad_key", hexs
    for bad in ({True: 1}, {None: 1}, {b"k": 1}, {(1,): 1}, {1.5: 1}):
        assert raises(EncodeError, dumps, bad).reason == "cbor.unencodable"


def test_utf8_validation():
    assert loads(_h("62c3bc")) == "\u00fc"
    assert loads(_h("64f48fbfbf")) == "\U0010ffff"
    assert loads(_h("63efbfbf")) == "\uffff"
    for hexs in (
        "61ff",  # never valid
        "6180",  # lone continuation
        "62c080",  # overlong NUL
        "62c1bf",  # overlong
        "63e08080",  # overlong 3-byte
        "64f0808080",  # overlong 4-byte
        "63eda080",  # surrogate U+D800
        "63edbfbf",  # surrogate U+DFFF
        "64f4908080",  # U+110000
        "64f5808080",
        "61c3",  # cut short
        "62e282",  # cut short
        "62e2ac61",  # continuation missing
    ):
        assert _reason(_h(hexs)) == "cbor.bad_utf8", hexs


def test_malformed_heads():
    for hexs in ("1c", "1d", "1e", "1f", "3f", "df", "ff", "fc", "5c", "f800", "f81f", "8201ff"):
        assert _reason(_h(hexs), deterministic=False) == "cbor.malformed", hexs


def test_bool_is_not_int():
    assert dumps(True) == b"\xf5" and dumps(False) == b"\xf4" and dumps(None) == b"\xf6"
    assert dumps(1) == b"\x01" and dumps(0) == b"\x00"
    assert dumps([True, 1, False, 0]) == b"\x84\xf5\x01\xf4\x00"
    assert loads(b"\xf5") is True and loads(b"\xf4") is False and loads(b"\xf6") is None
    got = loads(b"\x82\x01\xf5")
    assert type(got[0]) is int and got[1] is True


def test_integer_range():
    for v, hexs in (
        ((1 << 64) - 1, "1bffffffffffffffff"),
        (-(1 << 64), "3bffffffffffffffff"),
        (-1, "20"),
        (-24, "37"),
        (-25, "3818"),
        (-257, "390100"),
        (65536, "1a00010000"),
        (4294967296, "1b0000000100000000"),
    ):
        assert dumps(v) == _h(hexs), v
        assert loads(_h(hexs)) == v, v
    for v in (1 << 64, -(1 << 64) - 1, 1.5, 0.0, float("nan")):
        assert raises(EncodeError, dumps, v).reason == "cbor.unencodable"


def test_encode_types_and_errors():
    assert dumps(bytearray(b"ab")) == b"\x42ab"
    assert dumps(memoryview(b"abc")[1:]) == b"\x42bc"
    assert dumps((1, 2)) == b"\x82\x01\x02"
    assert dumps("\u6c34") == _h("63e6b0b4")
    for bad in (set(), object(), {"x": 1.0}, [1, [2.5]], Tag(-1, 0), Tag(True, 0)):
        assert raises(EncodeError, dumps, bad).reason == "cbor.unencodable"
    loop = []
    loop.append(loop)
    assert raises(EncodeError, dumps, loop).reason == "cbor.unencodable"
    deep = 0
    for _ in range(17):
        deep = [deep]
    raises(EncodeError, dumps, deep)
    assert strict_eq(loads(dumps(deep, max_depth=17), max_depth=17), deep)


def test_input_types():
    msg = _message()
    want = loads(msg)
    assert strict_eq(loads(bytearray(msg)), want)
    assert strict_eq(loads(memoryview(msg)), want)
    assert strict_eq(loads(memoryview(b"xx" + msg)[2:]), want)
    raises(TypeError, loads, "a0")


def test_tags():
    t = Tag(18, [b"\xa1\x01\x27", {}, b"pl", b"s"])
    enc = dumps(t)
    assert enc[:2] == b"\xd2\x84"
    back = loads(enc)
    assert isinstance(back, Tag) and back == t and not (back != t)
    assert back != Tag(18, [b"", {}, b"pl", b"s"]) and back != Tag(19, t.value) and back != 18
    assert repr(Tag(18, 1)) == "Tag(18, 1)"
    assert _reason(dumps(Tag(1, 0))) == "cbor.tag_unsupported"
    assert loads(dumps(Tag(1, 0)), tags=(1, 18)) == Tag(1, 0)
    assert _reason(enc, tags=()) == "cbor.tag_unsupported"
    assert loads(dumps([Tag(18, Tag(18, 0))])) == [Tag(18, Tag(18, 0))]
    assert dumps(Tag((1 << 64) - 1, 0)) == _h("dbffffffffffffffff00")


def test_every_rejection_reason_is_documented():
    seen = set()
    for data in (b"", b"\x01\x00", b"\x1c", b"\x18\x01", b"\x9f", b"\xf9\x00\x00", b"\xf7"):
        seen.add(_reason(data))
    for data in (b"\xc1\x00", b"\x61\xff", b"\xa1\x80\x00", b"\xa2\x01\x00\x01\x00"):
        seen.add(_reason(data))
    seen.add(_reason(b"\x81" * 9 + b"\x00"))
    seen.add(_reason(b"\x83\x00\x00\x00", max_items=2))
    seen.add(_reason(b"\x00\x00", max_size=1))
    assert seen == set(REASONS), seen ^ set(REASONS)


def _bytewise_dict(d):
    """The RFC 8949 §4.2.1 encoding of a map built the slow way: every key encoded on its
    own, the encodings sorted bytewise (the oracle for dumps' integer-key path)."""
    pairs = sorted((dumps(k), dumps(v)) for k, v in d.items())
    assert len(pairs) < 24
    out = bytearray([0xA0 | len(pairs)])
    for k, v in pairs:
        out.extend(k)
        out.extend(v)
    return bytes(out)


def test_integer_keys_sort_as_their_encodings():
    keys = [2**63, 65536, 0, 255, 23, 2**32, 24, 256, 65535, 1, 2**32 - 1, 2**64 - 1]
    d = {}
    for i, k in enumerate(keys):
        d[k] = i
    assert dumps(d) == _bytewise_dict(d)
    assert dumps({1: {3: 0, 2: 0}, 0: [{5: 1, 4: 2}]}) == _h("a2" + "0081a204020501" + "01a202000300")
    # other keys take the general path: negatives sort after every non-negative key
    mixed = {-1: 0, 30: 1, 2**40: 2, "a": 3, -25: 4}
    assert dumps(mixed) == _bytewise_dict(mixed)
    assert raises(EncodeError, dumps, {True: 1}).reason == "cbor.unencodable"
    assert raises(EncodeError, dumps, {2**64: 1}).reason == "cbor.unencodable"


def test_scratch_buffer_gives_the_same_bytes():
    from protocol import cbor

    values = [{1: [b"x" * 40, "y"], 0: -5}, [1, 2, 3], b"z" * 300, {}]
    plain = [dumps(v) for v in values]
    scratch = bytearray(64)
    cbor.use_scratch(scratch)
    try:
        assert [dumps(v) for v in values] == plain
        raises(EncodeError, dumps, {1: [1, 2, object()]})  # a failure half way through
        assert dumps([7]) == _h("8107")  # the next packet starts from an empty buffer
        first = dumps(b"ab")
        dumps(b"cd")
        assert first == _h("426162")  # results are copies, never views of the buffer
    finally:
        cbor.use_scratch(None)
    assert dumps([7]) == _h("8107")
