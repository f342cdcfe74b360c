"""The one exception family of the wire protocol.

Every rejection carries a short, stable ``reason`` code (for example ``"cbor.truncated"``
or ``"cose.bad_signature"``). The gateway counts and audits rejections by that code, so
codes are part of the documented interface (docs/protocol.md): never reword one casually.
``detail`` is free text for humans.
"""


class ProtocolError(ValueError):
    def __init__(self, reason, detail=""):
        super().__init__(reason if not detail else reason + ": " + detail)
        self.reason = reason
        self.detail = detail


class DecodeError(ProtocolError):
    """Malformed, unsupported or over-limit CBOR (reasons ``cbor.*``)."""


class SignatureError(ProtocolError):
    """A COSE/Ed25519 structure or signature that does not verify (reasons ``cose.*``)."""


class SchemaError(ProtocolError):
    """Well-formed CBOR that is not a valid message (reasons ``schema.*``)."""


class TopicError(ProtocolError):
    """A topic outside the namespace (reasons ``topic.*``)."""


class ReplayError(ProtocolError):
    """A sequence number that is a duplicate or stale (reasons ``replay.*``)."""
