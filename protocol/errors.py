"""The one exception family of the wire protocol.

Every rejection carries a short, stable ``reason`` code (for example ``"cbor.truncated"``
or ``"cose.bad_signature"``). The gateway counts and audits rejections by that code, so
codes are part of the documented interface (docs/protocol.md): never reword one casually.
``detail`` is free text for humans.

A detail is given either as text or, by the decoders a node runs (cbor, cose, envelope), as
a number in the catalog of protocol/details.py plus its arguments, formatted only when
someone reads ``detail`` or ``str(error)``. The node acts on reasons alone and never loads
the catalog: on a board its ~50 sentences would take about 3.5 KB of the heap for text
nobody there reads (docs/firmware.md, "Footprint"); the gateway reads every detail.
"""


class ProtocolError(ValueError):
    def __init__(self, reason, detail="", *args):
        super().__init__(reason)
        self.reason = reason
        self._detail = detail
        self._args = args

    @property
    def detail(self):
        d = self._detail
        if isinstance(d, int):
            from protocol.details import text

            return text(d, self._args)
        return d

    def __str__(self):
        d = self.detail
        return self.reason + ": " + d if d else self.reason


class DecodeError(ProtocolError):
    """Malformed, unsupported or over-limit CBOR (reasons ``cbor.*``)."""


class SignatureError(ProtocolError):
    """A COSE/Ed25519 structure or signature that does not verify (reasons ``cose.*``)."""


class SchemaError(ProtocolError):
    """Well-formed CBOR that is not a valid message (reasons ``schema.*``)."""


class TopicError(ProtocolError):
    """A topic outside the namespace (reasons ``topic.*``)."""
