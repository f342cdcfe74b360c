"""COSE_Sign1 (RFC 9052 §4.2, CBOR tag 18) for the node and the gateway.

Profile used on the wire (docs/protocol.md, "Signing"):

* tagged: the message must carry tag 18 (RFC 9052 §2). Untagged input is rejected with
  ``cose.untagged`` unless the caller passes ``tagged=False`` (used only by conformance
  tests for the cose-wg ``sign-pass-03`` vector);
* our nodes sign with EdDSA/Ed25519 (alg -8, RFC 9053 §2.2) and put ``alg`` and ``kid`` in
  the *protected* header, so both are covered by the signature; the gateway also accepts
  ES256 (alg -7, RFC 9053 §2.1) from boards that sign in a secure element;
* ``crit`` (label 2) is rejected: we understand no extension (RFC 9052 §3.1);
* a label may not appear in both buckets (RFC 9052 §3);
* the payload is attached (no detached content);
* the signature is checked over the protected bytes *as received*, never re-encoded. The
  one exception is RFC 9052 §4.4: a protected bstr that holds an empty map is signed as a
  zero-length bstr, which the cose-wg ``sign-pass-01`` vector exercises.

Verification is shared by both interpreters; only the primitive differs. A *verifier* is
any object with ``alg`` (int) and ``verify(signature, data) -> bool``. This module ships
the pure-Python Ed25519 one (the node's); gateway/cose_keys.py provides ``cryptography``
ones. A *signer* has ``alg`` and ``sign(data) -> bytes``.
"""

from protocol import cbor, const, ed25519
from protocol.errors import DecodeError, SignatureError

TAG_SIGN1 = const(18)
ALG_EDDSA = const(-8)
ALG_ES256 = const(-7)
ALG_NAMES = {ALG_EDDSA: "EdDSA", ALG_ES256: "ES256"}

H_ALG = const(1)
H_CRIT = const(2)
H_CTY = const(3)
H_KID = const(4)

# Detail numbers in protocol/details.py (private copies, checked by tests/test_details.py).
_D_NOT_BYTES = const(30)
_D_SIZE = const(31)
_D_WRONG_TAG = const(32)
_D_UNTAGGED = const(33)
_D_NOT_ARRAY4 = const(34)
_D_PROTECTED_TYPE = const(35)
_D_PAYLOAD_TYPE = const(36)
_D_SIGNATURE_TYPE = const(37)
_D_PROTECTED_CBOR = const(38)
_D_HEADER_NOT_MAP = const(39)
_D_HEADER_LABEL = const(40)
_D_BOTH_BUCKETS = const(41)
_D_CRIT = const(42)
_D_NO_ALG = const(43)
_D_ALG = const(44)
_D_NO_KID = const(45)
_D_ALG_MISMATCH = const(46)
_D_SIGNATURE_SIZE = const(47)
_D_NO_VERIFY = const(48)
_D_KEY_SIZE = const(49)
_D_KEY_INVALID = const(50)
_D_TEXT = const(51)

MAX_MESSAGE = const(2048)  # bytes; a telemetry packet is ~250 (docs/protocol.md size budget)
_MAX_KID = const(64)


class Sign1:
    """A decoded, not yet verified, COSE_Sign1 message."""

    def __init__(self, protected_bytes, protected, unprotected, payload, signature):
        self.protected_bytes = protected_bytes
        self.protected = protected
        self.unprotected = unprotected
        self.payload = payload
        self.signature = signature
        self.alg = self.header(H_ALG)
        self.kid = self.header(H_KID)

    def header(self, label):
        v = self.protected.get(label)
        return self.unprotected.get(label) if v is None else v


def sig_structure(protected_bytes, payload, external_aad=b""):
    """The bytes that are signed: RFC 9052 §4.4 Sig_structure for "Signature1"."""
    return cbor.dumps(["Signature1", protected_bytes, external_aad, payload])


class Ed25519Signer:
    """The node's signer: pure-Python Ed25519 with the expanded key cached."""

    alg = ALG_EDDSA

    def __init__(self, seed):
        self._key = ed25519.SigningKey(seed)
        self.public = self._key.public

    def sign(self, data):
        return self._key.sign(data)


class Ed25519Verifier:
    """Pure-Python Ed25519 verification (the node verifies gateway commands with it).

    The key is decoded once and keeps a small precomputed table (ed25519.VerifyingKey),
    which halves the cost of every verify: this is the node's stop-command path.
    """

    alg = ALG_EDDSA

    def __init__(self, public):
        if len(public) != 32:
            raise SignatureError("cose.bad_key", _D_KEY_SIZE)
        self.public = bytes(public)
        try:
            self._key = ed25519.VerifyingKey(self.public)
        except ValueError:
            raise SignatureError("cose.bad_key", _D_KEY_INVALID)

    def verify(self, signature, data):
        return self._key.verify(data, signature)


def encode(payload, signer, kid):
    """Build a tagged COSE_Sign1 over ``payload`` (bytes) with alg and kid protected."""
    return encode_with_headers(payload, signer, {H_ALG: signer.alg, H_KID: kid}, {})


def encode_with_headers(payload, signer, protected, unprotected, external_aad=b""):
    """Build a tagged COSE_Sign1 with explicit header maps (conformance vectors use this)."""
    protected_bytes = cbor.dumps(protected) if protected else b""
    signature = signer.sign(sig_structure(protected_bytes, payload, external_aad))
    return cbor.dumps(cbor.Tag(TAG_SIGN1, [protected_bytes, unprotected, payload, signature]))


def _fail(reason, detail, *args):
    raise SignatureError(reason, detail, *args)


def _header_map(m, where):
    if not isinstance(m, dict):
        _fail("cose.malformed", _D_HEADER_NOT_MAP, where)
    for label in m:
        if not isinstance(label, (int, str)) or isinstance(label, bool):
            _fail("cose.malformed", _D_HEADER_LABEL, where, label)
    return m


def decode(data, tagged=True, max_size=MAX_MESSAGE):
    """Parse the COSE_Sign1 structure (RFC 9052 §4.2) without verifying it."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        _fail("cose.malformed", _D_NOT_BYTES)
    if len(data) > max_size:
        _fail("cose.too_large", _D_SIZE, len(data), max_size)
    if len(data) and data[0] >> 5 == 6 and data[0] != 0xD2:
        # A tag other than 18 (0xD2 is the one-byte head of tag 18).
        _fail("cose.wrong_tag", _D_WRONG_TAG)
    try:
        obj = cbor.loads(data, max_size=max_size, tags=(TAG_SIGN1,))
    except DecodeError as e:
        _fail("cose.malformed", _D_TEXT, e.reason)
    if isinstance(obj, cbor.Tag):
        obj = obj.value
    elif tagged:
        _fail("cose.untagged", _D_UNTAGGED)
    if not isinstance(obj, (list, tuple)) or len(obj) != 4:
        _fail("cose.malformed", _D_NOT_ARRAY4)
    protected_bytes, unprotected, payload, signature = obj
    if not isinstance(protected_bytes, bytes):
        _fail("cose.malformed", _D_PROTECTED_TYPE)
    if not isinstance(payload, bytes):
        _fail("cose.detached_payload" if payload is None else "cose.malformed", _D_PAYLOAD_TYPE)
    if not isinstance(signature, bytes):
        _fail("cose.malformed", _D_SIGNATURE_TYPE)
    if protected_bytes:
        try:
            protected = cbor.loads(protected_bytes, max_size=256, tags=())
        except DecodeError as e:
            _fail("cose.malformed", _D_PROTECTED_CBOR, e.reason)
    else:
        protected = {}
    _header_map(protected, "protected")
    _header_map(unprotected, "unprotected")
    for label in protected:
        if label in unprotected:
            _fail("cose.duplicate_header", _D_BOTH_BUCKETS, label)
    if H_CRIT in protected or H_CRIT in unprotected:
        _fail("cose.crit_unsupported", _D_CRIT)
    return Sign1(protected_bytes, protected, unprotected, payload, signature)


def verify(data, lookup, external_aad=b"", tagged=True, max_size=MAX_MESSAGE):
    """Decode and verify ``data``; return the :class:`Sign1` or raise SignatureError.

    ``lookup(kid) -> verifier`` returns the key registered for ``kid`` or None. The
    algorithm in the message must equal the verifier's: the key, not the sender, decides
    the algorithm, so no algorithm substitution is possible.
    """
    msg = decode(data, tagged, max_size)
    alg = msg.alg
    if alg is None:
        _fail("cose.no_alg", _D_NO_ALG)
    if alg not in ALG_NAMES:
        _fail("cose.unknown_alg", _D_ALG, alg)
    kid = msg.kid
    if not isinstance(kid, bytes) or not 0 < len(kid) <= _MAX_KID:
        _fail("cose.no_kid", _D_NO_KID)
    verifier = lookup(kid)
    if verifier is None:
        _fail("cose.unknown_kid", _D_TEXT, repr(kid)[:80])
    if verifier.alg != alg:
        _fail("cose.alg_mismatch", _D_ALG_MISMATCH,
              ALG_NAMES[alg], ALG_NAMES.get(verifier.alg, verifier.alg))
    if len(msg.signature) != 64:
        _fail("cose.bad_signature", _D_SIGNATURE_SIZE)
    # RFC 9052 §4.4: an empty protected map is signed as a zero-length bstr.
    body = b"" if not msg.protected else msg.protected_bytes
    if not verifier.verify(msg.signature, sig_structure(body, msg.payload, external_aad)):
        _fail("cose.bad_signature", _D_NO_VERIFY)
    return msg
