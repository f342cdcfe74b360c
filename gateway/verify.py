"""Stateless packet verification: the CPU-heavy, parallel stage of ingest.

Given a topic, the raw payload and a snapshot of the registered node keys, decide whether
a packet is a well-formed, correctly signed message *from the node named in its topic*.
Nothing here depends on earlier packets, so any number of worker processes can run it; the
stateful checks (replay window, limits, interlocks) run afterwards in one place, in order
(gateway/ingest.py).

Checks, in order, each with its own reason code (counted and audited by the caller):
size cap (``packet.too_large``) -> topic (``topic.*``) -> node registered and not revoked
(``node.unknown``, ``node.revoked``) -> COSE_Sign1 with the node's key (``cose.*``; a kid
that belongs to another node is ``cose.kid_mismatch``) -> CBOR (``cbor.*``) -> schema,
including the type the topic promises (``schema.*``) -> envelope device id equals the topic's
node (``schema.dev_mismatch``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.cose_keys import EdDSAVerifier, ES256Verifier
from gateway.fast_verify import FastShape
from protocol import cbor, cose, schema, topics
from protocol.errors import ProtocolError

MAX_PACKET = 2048

_KIND_TYPES = {
    "birth": schema.BIRTH,
    "telemetry": schema.TELEMETRY,
    "event": schema.EVENT,
    "ack": schema.ACK,
    "death": schema.DEATH,
}


@dataclass(frozen=True)
class NodeKey:
    """A node's registered public key, as the workers need it (picklable)."""

    node: str
    alg: int  # cose.ALG_EDDSA or cose.ALG_ES256
    public: bytes  # Ed25519: 32 bytes; ES256: 64 bytes x || y
    revoked: bool = False

    def verifier(self) -> Any:
        if self.alg == cose.ALG_EDDSA:
            return EdDSAVerifier(self.public)
        return ES256Verifier.from_xy(self.public[:32], self.public[32:])


@dataclass(frozen=True)
class Verified:
    node: str
    kind: str
    msg: dict
    size: int

    @property
    def boot(self) -> int:
        return self.msg[schema.K_BOOT]

    @property
    def seq(self) -> int:
        return self.msg[schema.K_SEQ]


@dataclass(frozen=True)
class Rejected:
    node: str | None
    reason: str
    detail: str
    size: int


class PacketVerifier:
    def __init__(self, keys: dict[str, NodeKey] | None = None):
        self._keys: dict[str, NodeKey] = {}
        self._verifiers: dict[str, Any] = {}
        self._fast: dict[str, FastShape] = {}
        for key in (keys or {}).values():
            self.set_key(key)

    def set_key(self, key: NodeKey) -> None:
        self._keys[key.node] = key
        self._verifiers[key.node] = key.verifier()
        self._fast[key.node] = FastShape(key.alg, key.node.encode(), self._verifiers[key.node])

    def remove_key(self, node: str) -> None:
        self._keys.pop(node, None)
        self._verifiers.pop(node, None)
        self._fast.pop(node, None)

    def verify(self, topic: str, payload: bytes) -> Verified | Rejected:
        size = len(payload)
        node: str | None = None
        try:
            if size > MAX_PACKET:
                return Rejected(None, "packet.too_large", "%d bytes > %d" % (size, MAX_PACKET), size)
            direction, node, kind = topics.parse(topic)
            if direction != topics.UPLINK:
                return Rejected(node, "topic.not_uplink", topic[:80], size)
            key = self._keys.get(node)
            if key is None:
                return Rejected(node, "node.unknown", "no key registered for %s" % node, size)
            if key.revoked:
                return Rejected(node, "node.revoked", "key of %s is revoked" % node, size)
            msg = self._fast[node].verify(payload)
            if msg is not None:
                msg = schema.validate(msg, _KIND_TYPES[kind])
                if msg[schema.K_DEV] != node:
                    return Rejected(node, "schema.dev_mismatch",
                                    "message says %r on %s's topic" % (msg[schema.K_DEV], node),
                                    size)
                return Verified(node, kind, msg, size)
            # Not the common shape: the strict, portable path decides and names the reason.
            expected_kid = node.encode()

            def lookup(kid: bytes) -> Any:
                if kid == expected_kid:
                    return self._verifiers[node]
                other = kid.decode("utf-8", "replace")
                if other in self._keys:
                    raise ProtocolError("cose.kid_mismatch", "kid %r on %s's topic" % (other, node))
                return None

            sign1 = cose.verify(payload, lookup)
            msg = schema.validate(cbor.loads(sign1.payload), _KIND_TYPES[kind])
            if msg[schema.K_DEV] != node:
                return Rejected(node, "schema.dev_mismatch",
                                "message says %r on %s's topic" % (msg[schema.K_DEV], node), size)
            return Verified(node, kind, msg, size)
        except ProtocolError as e:
            return Rejected(node, e.reason, e.detail, size)
