"""Deterministic, float-free CBOR (RFC 8949) for the wire format; runs on MicroPython and CPython.

Why our own codec: micropython-lib's cbor2 port cannot decode tags, writes floats as float64 only
and has no depth limit, and the gateway must reject exactly what the node would never send. One
small module, byte-identical on both interpreters, is the single definition of the wire bytes.

Wire-format decisions (copied to docs/protocol.md):

- Integers: major types 0/1, i.e. -2**64 .. 2**64-1. No bignums: tags 2/3 are rejected
  like any tag not allowed ("cbor.tag_unsupported").
- Byte strings and text strings, definite length only. Text must be well-formed UTF-8
  (RFC 3629 §4: no overlongs, no surrogates, nothing above U+10FFFF): "cbor.bad_utf8".
- Arrays and maps, definite length only. Map keys are integers or text strings
  ("cbor.bad_key" otherwise); duplicate keys are rejected ("cbor.duplicate_key"), as
  RFC 8949 §5.6 allows a strict decoder to do.
- Simple values: false, true, null only. undefined (0xf7) and every other simple value:
  "cbor.simple_unsupported". A two-byte simple value below 32 is not well-formed
  (RFC 8949 §3.3): "cbor.malformed".
- NO floats: half, single and double are all rejected ("cbor.float_unsupported").
  Measurements travel as scaled integers, so both ends agree bit for bit.
- Tags: only those the caller allows (default: 18, COSE_Sign1, RFC 9052 §4.2), decoded into
  :class:`Tag`; any other tag: "cbor.tag_unsupported".
- Indefinite lengths (additional information 31): "cbor.indefinite_unsupported".
- Encoding is RFC 8949 §4.2.1 core deterministic: shortest heads, definite lengths, map keys
  sorted bytewise by their encoded form (not RFC 7049's length-first order). The decoder
  enforces the same by default (``deterministic=True``): non-shortest heads and unsorted map
  keys are "cbor.not_deterministic", so one message has exactly one encoding.

Decoder limits (all checked before anything is allocated from attacker-declared sizes):
input over ``max_size`` bytes "cbor.too_large"; more than ``max_depth`` nested arrays, maps
and tags "cbor.too_deep"; more than ``max_items`` data items in all (every array element, map
key, map value, tag and tag content counts) "cbor.too_many_items". A declared length or count
that the remaining input cannot hold (each item takes at least one byte) is "cbor.truncated" at
once. Other reasons: "cbor.trailing_bytes" (bytes after the one top-level item),
"cbor.malformed" (reserved additional information 28-30, a misplaced break or 31 on majors
0/1/6). Every rejection is a :class:`protocol.errors.DecodeError` carrying one of ``REASONS``;
passing something that is not bytes-like is a programming error (TypeError).
Encoding errors are :class:`EncodeError`, reason "cbor.unencodable".

The decoder is a loop with an explicit stack (bounded by ``max_depth``), not recursion, so a
hostile nesting depth costs neither C stack nor Python recursion; the encoder recurses, bounded by
its own ``max_depth``, which also stops cyclic structures.
"""

from protocol import const
from protocol.errors import DecodeError, ProtocolError

TRUNCATED = "cbor.truncated"
TRAILING_BYTES = "cbor.trailing_bytes"
TOO_LARGE = "cbor.too_large"
TOO_DEEP = "cbor.too_deep"
TOO_MANY_ITEMS = "cbor.too_many_items"
MALFORMED = "cbor.malformed"
NOT_DETERMINISTIC = "cbor.not_deterministic"
INDEFINITE_UNSUPPORTED = "cbor.indefinite_unsupported"
FLOAT_UNSUPPORTED = "cbor.float_unsupported"
SIMPLE_UNSUPPORTED = "cbor.simple_unsupported"
TAG_UNSUPPORTED = "cbor.tag_unsupported"
BAD_UTF8 = "cbor.bad_utf8"
BAD_KEY = "cbor.bad_key"
DUPLICATE_KEY = "cbor.duplicate_key"
UNENCODABLE = "cbor.unencodable"

# Every reason loads() can raise (the documented interface).
REASONS = (
    TRUNCATED,
    TRAILING_BYTES,
    TOO_LARGE,
    TOO_DEEP,
    TOO_MANY_ITEMS,
    MALFORMED,
    NOT_DETERMINISTIC,
    INDEFINITE_UNSUPPORTED,
    FLOAT_UNSUPPORTED,
    SIMPLE_UNSUPPORTED,
    TAG_UNSUPPORTED,
    BAD_UTF8,
    BAD_KEY,
    DUPLICATE_KEY,
)

TAG_COSE_SIGN1 = const(18)  # RFC 9052 §4.2

_ARRAY = const(0)
_MAP = const(1)
_TAG = const(2)

# Detail numbers in protocol/details.py (private copies, checked by tests/test_details.py).
_D_BAD_UTF8_TEXT = const(1)
_D_INT_RANGE = const(2)
_D_KEY_TYPE = const(3)
_D_ITEMSIZE = const(4)
_D_ENC_DEEP = const(5)
_D_TAG_RANGE = const(6)
_D_UNSUPPORTED = const(7)
_D_AT = const(10)
_D_INPUT = const(11)
_D_KEY_MAJOR = const(12)
_D_SIMPLE = const(13)
_D_SIMPLE_BELOW_32 = const(14)
_D_INITIAL = const(15)
_D_NON_SHORTEST = const(16)
_D_STRING = const(17)
_D_TAG = const(18)
_D_COUNT = const(19)
_D_KEY_ORDER = const(20)

_U64_END = 1 << 64  # first integer a CBOR head cannot carry (RFC 8949 §3.1)

_NO_KEY = object()  # a map frame waiting for its next key


class EncodeError(ProtocolError):
    """A value outside the wire subset (float, out-of-range int, unsupported type, too deep)."""


class Tag:
    """A tagged data item (RFC 8949 §3.4): ``tag`` number and decoded ``value``."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __ne__(self, other):  # MicroPython does not derive != from __eq__
        return not self.__eq__(other)

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


def _utf8_ok(b):
    """RFC 3629 §4 well-formedness. MicroPython's decode() accepts overlongs, surrogates and
    code points above U+10FFFF, so we check ourselves on both interpreters."""
    n = len(b)
    if n == 0 or max(b) < 0x80:  # ASCII fast path, one C loop
        return True
    i = 0
    while i < n:
        c = b[i]
        if c < 0x80:
            i += 1
            continue
        # (continuation count, allowed range of the second byte), RFC 3629 §4 table:
        #   C2..DF 80..BF | E0 A0..BF | E1..EC, EE..EF 80..BF | ED 80..9F |
        #   F0 90..BF | F1..F3 80..BF | F4 80..8F; any other lead byte is ill-formed
        if c < 0xC2 or c > 0xF4:
            return False
        lo = 0x80
        hi = 0xBF
        if c < 0xE0:
            need = 1
        elif c < 0xF0:
            need = 2
            if c == 0xE0:
                lo = 0xA0  # no overlongs
            elif c == 0xED:
                hi = 0x9F  # no surrogates U+D800..DFFF
        else:
            need = 3
            if c == 0xF0:
                lo = 0x90  # no overlongs
            elif c == 0xF4:
                hi = 0x8F  # nothing above U+10FFFF
        if i + need >= n:
            return False
        c = b[i + 1]
        if c < lo or c > hi:
            return False
        for j in range(i + 2, i + need + 1):
            c = b[j]
            if c < 0x80 or c > 0xBF:
                return False
        i += need + 1
    return True


# ---------------------------------------------------------------------------- encoding


def _head(buf, major, n):
    """Shortest head for argument n (RFC 8949 §4.2.1, first bullet)."""
    mt = major << 5
    if n < 24:
        buf.append(mt | n)
    elif n < 0x100:
        buf.append(mt | 24)
        buf.append(n)
    else:
        # additional information 25, 26, 27: a 2, 4 or 8-byte argument follows
        ai = 25 if n < 0x10000 else 26 if n < 0x100000000 else 27
        buf.append(mt | ai)
        buf.extend(n.to_bytes(1 << (ai - 24), "big"))


def _utf8(s):
    try:
        b = s.encode("utf-8")
    except UnicodeError:  # CPython: lone surrogates
        b = None
    if b is None or not _utf8_ok(b):
        raise EncodeError(UNENCODABLE, _D_BAD_UTF8_TEXT)
    return b


def _enc_int(buf, v):
    if 0 <= v < _U64_END:
        _head(buf, 0, v)
    elif -_U64_END <= v < 0:
        _head(buf, 1, -1 - v)
    else:
        raise EncodeError(UNENCODABLE, _D_INT_RANGE)


def _enc_key(k):
    """Encoded form of a map key, on its own so keys can be sorted bytewise (§4.2.1)."""
    kb = bytearray()
    if isinstance(k, str):
        b = _utf8(k)
        _head(kb, 3, len(b))
        kb.extend(b)
    elif isinstance(k, int) and k is not True and k is not False:
        _enc_int(kb, k)
    else:
        raise EncodeError(UNENCODABLE, _D_KEY_TYPE, type(k).__name__)
    return bytes(kb)


def _enc(buf, obj, depth):
    # True/False first: bool is an int subclass on CPython (not on MicroPython).
    if obj is None:
        buf.append(0xF6)
    elif obj is False:
        buf.append(0xF4)
    elif obj is True:
        buf.append(0xF5)
    elif isinstance(obj, int):
        _enc_int(buf, obj)
    elif isinstance(obj, str):
        b = _utf8(obj)
        _head(buf, 3, len(b))
        buf.extend(b)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        if getattr(obj, "itemsize", 1) != 1:
            raise EncodeError(UNENCODABLE, _D_ITEMSIZE)
        _head(buf, 2, len(obj))
        buf.extend(obj)
    elif depth <= 0 and isinstance(obj, (list, tuple, dict, Tag)):
        raise EncodeError(UNENCODABLE, _D_ENC_DEEP)
    elif isinstance(obj, (list, tuple)):
        _head(buf, 4, len(obj))
        for x in obj:
            _enc(buf, x, depth - 1)
    elif isinstance(obj, dict):
        _head(buf, 5, len(obj))
        for k in obj:
            if type(k) is not int or k < 0:
                break
        else:
            # Only non-negative integer keys (every map of our messages): their numeric
            # order is the bytewise order of their shortest encodings (RFC 8949 §4.2.1), so
            # no encoded copy of each key is needed; the node encodes a telemetry packet
            # with ~90 fewer short-lived objects (docs/firmware.md, "Footprint").
            for k in sorted(obj):
                _enc_int(buf, k)
                _enc(buf, obj[k], depth - 1)
            return
        pairs = [(_enc_key(k), v) for k, v in obj.items()]
        # Bytewise order of encoded keys, RFC 8949 §4.2.1. Distinct keys have distinct
        # encodings, so sorting the pairs never compares two values.
        pairs.sort()
        for kb, v in pairs:
            buf.extend(kb)
            _enc(buf, v, depth - 1)
    elif isinstance(obj, Tag):
        t = obj.tag
        if not isinstance(t, int) or t is True or t is False or not 0 <= t < _U64_END:
            raise EncodeError(UNENCODABLE, _D_TAG_RANGE)
        _head(buf, 6, t)
        _enc(buf, obj.value, depth - 1)
    else:
        # floats land here too: measurements travel as scaled integers.
        raise EncodeError(UNENCODABLE, _D_UNSUPPORTED, type(obj).__name__)


_scratch = None  # see use_scratch()


def use_scratch(buf):
    """Encode every later :func:`dumps` into ``buf`` (a bytearray, emptied first) instead of
    a new, growing bytearray; ``None`` to stop.

    For the node (firmware/boot.py), where a buffer grown a few bytes at a time needs ever
    larger contiguous pieces of a small, fragmented heap: emptied with ``buf[:] = b""``, a
    bytearray keeps its capacity, so a packet costs one allocation, its final ``bytes``.
    Only for a single-threaded program: the buffer is shared by every caller.
    """
    global _scratch
    _scratch = buf


def dumps(obj, max_depth=16):
    """Encode obj (int, bytes-like, str, list/tuple, dict, bool, None, Tag) deterministically.

    ``max_depth`` bounds nesting of lists, dicts and tags (and so catches cycles).
    """
    buf = _scratch
    if buf is None:
        buf = bytearray()
    else:
        buf[:] = b""
    _enc(buf, obj, max_depth)
    return bytes(buf)


# ---------------------------------------------------------------------------- decoding


def _fail(reason, pos, detail=_D_AT, arg=None):
    """Raise ``reason``; the detail (formatted only if read) ends with the byte offset."""
    if arg is None:
        raise DecodeError(reason, detail, pos)
    raise DecodeError(reason, detail, arg, pos)


def loads(
    data, max_size=4096, max_depth=8, max_items=512, tags=(TAG_COSE_SIGN1,), deterministic=True
):
    """Decode exactly one data item from bytes-like ``data``; see the module doc for limits.

    Arrays become lists, maps dicts, byte strings bytes, allowed tags :class:`Tag`.
    ``deterministic=False`` accepts non-shortest heads and unsorted keys (generic CBOR such as
    RFC 8949 Appendix A); the wire format always uses the default.
    """
    if not isinstance(data, bytes):
        if not isinstance(data, (bytearray, memoryview)):
            raise TypeError("loads() needs bytes, bytearray or memoryview")
        if len(data) > max_size:
            _fail(TOO_LARGE, max_size)
        data = bytes(data)  # a stable private copy: the caller's buffer may change under us
    end = len(data)
    if end > max_size:
        _fail(TOO_LARGE, max_size, _D_INPUT, end)

    pos = 0
    items = 0
    stack = []  # type: list  # frames: [kind, list/dict/tag number, items left, pending key, previous key bytes]
    while True:
        # ---- one head (RFC 8949 §3)
        start = pos
        if pos >= end:
            _fail(TRUNCATED, pos)
        ib = data[pos]
        pos += 1
        major = ib >> 5
        ai = ib & 0x1F
        items += 1
        if items > max_items:
            _fail(TOO_MANY_ITEMS, start)
        if stack:
            f = stack[-1]
            if f[0] == _MAP and f[3] is _NO_KEY and major != 0 and major != 1 and major != 3:
                _fail(BAD_KEY, start, _D_KEY_MAJOR, major)

        val = None  # type: object
        if major == 7:  # simple values and floats (RFC 8949 §3.3)
            if ai == 20:
                val = False
            elif ai == 21:
                val = True
            elif ai == 22:
                val = None
            elif ai < 24:
                _fail(SIMPLE_UNSUPPORTED, start, _D_SIMPLE, ai)
            elif ai == 24:
                if pos >= end:
                    _fail(TRUNCATED, pos)
                if data[pos] < 32:  # not well-formed, §3.3
                    _fail(MALFORMED, start, _D_SIMPLE_BELOW_32)
                _fail(SIMPLE_UNSUPPORTED, start, _D_SIMPLE, data[pos])
            elif ai < 28:
                _fail(FLOAT_UNSUPPORTED, start)
            else:  # 28-30 reserved; 31 is a break outside an indefinite item
                _fail(MALFORMED, start, _D_INITIAL, ib)
        else:
            if ai < 24:
                arg = ai
            elif ai < 28:
                size = 1 << (ai - 24)
                if pos + size > end:
                    _fail(TRUNCATED, pos)
                arg = data[pos]
                for i in range(pos + 1, pos + size):
                    arg = (arg << 8) | data[i]
                pos += size
                # shortest form, RFC 8949 §4.2.1: each size must be needed
                if deterministic and arg < (24 if size == 1 else 1 << (size << 2)):
                    _fail(NOT_DETERMINISTIC, start, _D_NON_SHORTEST)
            elif ai == 31 and 2 <= major <= 5:
                _fail(INDEFINITE_UNSUPPORTED, start)
            else:  # 28-30 reserved; 31 on majors 0, 1, 6 (RFC 8949 §3.2.4)
                _fail(MALFORMED, start, _D_INITIAL, ib)

            if major == 0:
                val = arg
            elif major == 1:
                val = -1 - arg
            elif major <= 3:
                if arg > end - pos:  # before slicing: never trust a declared length
                    _fail(TRUNCATED, pos, _D_STRING, arg)
                raw = data[pos : pos + arg]
                pos += arg
                if major == 3:
                    if not _utf8_ok(raw):
                        _fail(BAD_UTF8, start)
                    val = str(raw, "utf-8")
                else:
                    val = raw
            elif major == 6:
                if arg not in tags:
                    _fail(TAG_UNSUPPORTED, start, _D_TAG, arg)
                if len(stack) >= max_depth:
                    _fail(TOO_DEEP, start)
                stack.append([_TAG, arg, 1, None, None])
                continue
            else:
                if len(stack) >= max_depth:
                    _fail(TOO_DEEP, start)
                need = arg if major == 4 else arg << 1
                if need > end - pos:  # each item takes at least one byte
                    _fail(TRUNCATED, pos, _D_COUNT, arg)
                if items + need > max_items:
                    _fail(TOO_MANY_ITEMS, start)
                if arg == 0:
                    val = [] if major == 4 else {}
                elif major == 4:
                    stack.append([_ARRAY, [], arg, None, None])
                    continue
                else:
                    stack.append([_MAP, {}, arg, _NO_KEY, None])
                    continue

        # ---- hand the finished item to its enclosing containers
        while True:
            if not stack:
                if pos != end:
                    _fail(TRAILING_BYTES, pos)
                return val
            f = stack[-1]
            kind = f[0]
            if kind == _ARRAY:
                f[1].append(val)
                f[2] -= 1
                if f[2]:
                    break
            elif kind == _MAP:
                if f[3] is _NO_KEY:
                    if deterministic:
                        # a key is one scalar item, so start:pos is its whole encoding;
                        # strictly increasing encodings also rule out duplicates
                        kb = data[start:pos]
                        prev = f[4]
                        if prev is not None and kb <= prev:
                            if kb == prev:
                                _fail(DUPLICATE_KEY, start)
                            _fail(NOT_DETERMINISTIC, start, _D_KEY_ORDER)
                        f[4] = kb
                    elif val in f[1]:
                        _fail(DUPLICATE_KEY, start)
                    f[3] = val
                    break
                f[1][f[3]] = val
                f[3] = _NO_KEY
                f[2] -= 1
                if f[2]:
                    break
            else:
                stack.pop()
                val = Tag(f[1], val)
                continue
            stack.pop()
            val = f[1]
