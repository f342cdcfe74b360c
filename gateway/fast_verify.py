"""The common case of packet verification at C speed, with the strict path as the authority.

Ingest is bounded by one Ed25519 verification per packet (~60 us with ``cryptography``), but
the portable, pure-Python decoders in protocol/ (COSE structure, deterministic CBOR, both
written to run on the node) cost nearly as much again. Almost every packet has exactly the
shape our own firmware produces, so the gateway recognizes that one shape with byte
comparisons and the C CBOR decoder (cbor2), and hands *everything else* to the strict path
(``protocol.cose.verify`` + ``protocol.cbor.loads``), which decides and names the reason.

This module can therefore only say "verified, here is the message" or "not recognized";
it never rejects. It accepts a packet only when:

* the bytes are exactly ``D2 84 <bstr protected> A0 <bstr payload> 58 40 <64-byte
  signature>``: tag 18 (RFC 9052 §4.2), an array of four, the protected header equal
  byte for byte to the one this node's key implies (``{1: alg, 4: kid}``, RFC 9052 §3.1),
  an empty unprotected map, shortest-form lengths (RFC 8949 §4.2.1), nothing after;
* the signature verifies over the Sig_structure (RFC 9052 §4.4) with the node's key;
* the payload decodes with cbor2 and re-encodes to the identical bytes (which excludes
  non-shortest heads, indefinite lengths, duplicate keys and non-double floats), every map's
  keys are unsigned integers in RFC 8949 §4.2.1 order (for them, numeric order; any other
  key takes the strict path), every value is one the strict decoder allows (ints within
  64 bits, bytes, text, lists, maps, bools, null: no floats, no tags), and the depth and
  the total number of data items stay below the strict decoder's limits;

and then the same ``protocol.schema.validate`` runs on the result. tests/test_fast_verify.py
checks, over generated and mutated packets, that this path never accepts what the strict
path rejects and returns the same message when both accept.
"""

from __future__ import annotations

from typing import Any

import cbor2

from protocol import cose

# Conservative limits (the strict decoder allows max_depth 8 and max_items 512 in all, the
# whole payload counted): anything near them takes the strict path, which applies the exact
# limits.
_MAX_DEPTH = 6
_MAX_ITEMS = 400
_INT_MIN = -(2**64)
_INT_MAX = 2**64 - 1
_SIG_HEAD = b"\x58\x40"  # bstr of 64 bytes
_SIGNATURE1 = b"\x84\x6aSignature1"  # ["Signature1", ...] (RFC 9052 §4.4)


def _bstr_head(n: int) -> bytes:
    if n < 24:
        return bytes((0x40 + n,))
    if n < 256:
        return bytes((0x58, n))
    if n < 65536:
        return b"\x59" + n.to_bytes(2, "big")
    return b"\x5a" + n.to_bytes(4, "big")


class FastShape:
    """The byte prefixes of one node's packets and Sig_structures, built once per key."""

    def __init__(self, alg: int, kid: bytes, verifier: Any):
        protected = cbor2.dumps({cose.H_ALG: alg, cose.H_KID: kid})  # keys 1 < 4: sorted
        bprot = _bstr_head(len(protected)) + protected
        self.head = b"\xd2\x84" + bprot + b"\xa0"
        self.sig_prefix = _SIGNATURE1 + bprot + b"\x40"  # external_aad: empty bstr
        self.verifier = verifier

    def verify(self, wire: bytes) -> Any:
        """The decoded payload (a dict), or None: not recognized, use the strict path."""
        head = self.head
        if not wire.startswith(head):
            return None
        p = len(head)
        end = len(wire)
        if p >= end:
            return None
        b = wire[p]
        if 0x40 <= b < 0x58:
            n, p = b - 0x40, p + 1
        elif b == 0x58 and p + 1 < end and wire[p + 1] >= 24:
            n, p = wire[p + 1], p + 2
        elif b == 0x59 and p + 2 < end and wire[p + 1] > 0:  # shortest: > 255
            n, p = (wire[p + 1] << 8) | wire[p + 2], p + 3
        else:
            return None
        payload_end = p + n
        if payload_end + 66 != end or wire[payload_end : payload_end + 2] != _SIG_HEAD:
            return None
        # The Sig_structure ends with the payload as a bstr: the very bytes in the packet.
        if not self.verifier.verify(
            wire[payload_end + 2 :], self.sig_prefix + wire[len(head) : payload_end]
        ):
            return None
        return decode_payload(wire[p:payload_end])


def decode_payload(payload: bytes) -> Any:
    """The payload as the strict decoder would return it, or None if it might disagree."""
    try:
        msg = cbor2.loads(payload)
        if cbor2.dumps(msg) != payload or _items(msg) < 0:
            return None
    except Exception:  # noqa: BLE001 - anything unusual is the strict path's to judge
        return None
    return msg


_LEAVES = frozenset((int, bytes, str, bool, type(None)))
_CONTAINERS_AND_LEAVES = _LEAVES | {dict, list}
_INTS = {int}


def _items(obj: Any, depth: int = 1) -> int:
    """The number of data items in ``obj`` (each element, key and value, the containers
    themselves included), or -1 unless it holds only the value types the strict decoder
    produces (ints within 64 bits, bytes, text, bools, null, lists, maps with unsigned
    integer keys in deterministic order) within the depth and total item limits. Works a
    container at a time with C-level builtins: this runs for every packet."""
    t = type(obj)
    if t is dict:
        keys = list(obj)
        if keys and not (
            set(map(type, keys)) == _INTS
            and keys == sorted(keys)
            and keys[0] >= 0
            and keys[-1] <= _INT_MAX
        ):
            return -1  # negative or text keys, or unsorted: the strict decoder decides
        values = list(obj.values())
        n = 1 + 2 * len(values)
    elif t is list:
        values = obj
        n = 1 + len(values)
    else:
        return 1 if t in _LEAVES and (t is not int or _INT_MIN <= obj <= _INT_MAX) else -1
    if n > _MAX_ITEMS or depth >= _MAX_DEPTH:
        return -1
    types = set(map(type, values))
    if int in types:
        ints = values if types == _INTS else [v for v in values if type(v) is int]
        if min(ints) < _INT_MIN or max(ints) > _INT_MAX:
            return -1
    if types <= _LEAVES:
        return n
    if not types <= _CONTAINERS_AND_LEAVES:
        return -1
    for v in values:
        if type(v) is dict or type(v) is list:
            inner = _items(v, depth + 1)
            if inner < 0:
                return -1
            n += inner - 1  # the container was already counted as one element
            if n > _MAX_ITEMS:
                return -1
    return n
