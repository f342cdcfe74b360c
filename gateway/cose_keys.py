"""``cryptography``-backed COSE verifiers and signers for the gateway.

protocol/cose.py does the structure checks on both interpreters; here only the primitive
changes: OpenSSL's Ed25519 is ~100x faster than the node's pure-Python code, and ES256 is
accepted for boards that sign inside a secure element (RFC 9053 §2.1: the signature is the
raw 32-byte r || 32-byte s, not DER).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from protocol.cose import ALG_EDDSA, ALG_ES256
from protocol.errors import SignatureError


class EdDSAVerifier:
    alg = ALG_EDDSA

    def __init__(self, public: bytes):
        try:
            self._key = ed25519.Ed25519PublicKey.from_public_bytes(bytes(public))
        except ValueError as e:
            raise SignatureError("cose.bad_key", "Ed25519 public key: %s" % e) from None
        self.public = bytes(public)

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            return False
        return True


class ES256Verifier:
    alg = ALG_ES256

    def __init__(self, key: ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise SignatureError("cose.bad_key", "ES256 needs a P-256 key")
        self._key = key

    @classmethod
    def from_xy(cls, x: bytes, y: bytes) -> ES256Verifier:
        try:
            nums = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            )
            return cls(nums.public_key())
        except ValueError as e:
            raise SignatureError("cose.bad_key", "P-256 point: %s" % e) from None

    def verify(self, signature: bytes, data: bytes) -> bool:
        if len(signature) != 64:
            return False
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        try:
            self._key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


class EdDSASigner:
    """The gateway signs commands and permits with its own Ed25519 key."""

    alg = ALG_EDDSA

    def __init__(self, seed: bytes):
        self._key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(seed))
        self.public = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)
