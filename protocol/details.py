"""The catalog of rejection details: what a human reads after the reason code.

protocol/cbor.py, cose.py and envelope.py raise with a detail *number* from this table and
its arguments; :class:`protocol.errors.ProtocolError` formats the text here only when
``detail`` or ``str(error)`` is read. The gateway reads every one (audit records, logs); a
node never does, so the catalog never enters its heap (protocol/errors.py says why).

The numbers are private ``const()`` copies in each raising module (``_D_NAME = const(n)``,
named after the text). tests/test_details.py checks that every copy names an entry here
with as many arguments as its template takes, and that no entry is unused.
Numbers are internal: only the reason codes and this text reach the outside.
"""

TEXT = {
    # protocol/cbor.py, encoding (EncodeError, reason cbor.unencodable)
    1: "text is not valid UTF-8",
    2: "integer outside the 64-bit CBOR range",
    3: "map key must be int or str, not %s",
    4: "memoryview must have 1-byte items",
    5: "nested too deep (or cyclic)",
    6: "tag number outside 0..2**64-1",
    7: "unsupported type %s",
    # protocol/cbor.py, decoding (DecodeError): the last argument is the byte offset
    10: "at byte %d",
    11: "input of %d bytes at byte %d",
    12: "map key of major type %d at byte %d",
    13: "simple(%d) at byte %d",
    14: "two-byte simple value below 32 at byte %d",
    15: "initial byte 0x%02x at byte %d",
    16: "non-shortest head at byte %d",
    17: "string of %d bytes at byte %d",
    18: "tag %d at byte %d",
    19: "count of %d at byte %d",
    20: "map keys not in bytewise order at byte %d",
    # protocol/cose.py (SignatureError)
    30: "message must be bytes",
    31: "%d bytes > %d",
    32: "expected CBOR tag 18 (COSE_Sign1)",
    33: "COSE_Sign1 must carry CBOR tag 18",
    34: "COSE_Sign1 is an array of 4",
    35: "protected header must be a bstr",
    36: "payload must be an attached bstr",
    37: "signature must be a bstr",
    38: "protected header: %s",
    39: "%s header is not a map",
    40: "%s header label %r",
    41: "label %r in both buckets",
    42: "no critical extensions are understood",
    43: "alg header missing",
    44: "alg %r",
    45: "kid header missing or not a bstr of 1-64 bytes",
    46: "message says %s, key is %s",
    47: "signature must be 64 bytes",
    48: "signature does not verify",
    49: "Ed25519 public key must be 32 bytes",
    50: "not a valid Ed25519 public key",
    51: "%s",
    # protocol/envelope.py (SchemaError)
    60: "%s: expected text of at most %d",
    61: "%s: expected a pair",
    62: "%s: expected unsigned integer <= %d",
    63: "%s: expected map",
    64: "%s: key %d is required",
    65: "%s: key %r",
    66: "payload must be a CBOR map",
    67: "message type %r",
    68: "%s message where command expected",
    69: "envelope key %d is required",
    70: "command: unknown command kind %r",
}


def text(number, args):
    """The detail for ``number`` formatted with ``args``. Never raises: a detail is read
    while a rejection is being audited, and a wrong catalog entry must not turn that into
    a crash (tests/test_details.py keeps the entries and the call sites in agreement)."""
    template = TEXT.get(number)
    if template is None:
        return "detail %d %r" % (number, args)
    try:
        return template % args
    except (TypeError, ValueError):
        return "%s %r" % (template, args)
