"""Signed commands to nodes: (epoch, seq) numbering, the freshness ref, the signature.

The epoch is persisted and incremented at every gateway start (store.next_epoch), so the
node's ordered command window never sees a number twice. Every command names a recent
message of its target node (``ref``): the node refuses it unless that message is one of its
last 32 of the current boot and less than 5 s old by its own clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol import cbor, cose, schema, topics


@dataclass(frozen=True)
class OutgoingCommand:
    node: str
    topic: str
    wire: bytes
    epoch: int
    seq: int
    kind: int
    args: dict

    @property
    def kind_name(self) -> str:
        return schema.CMD_NAMES.get(self.kind, str(self.kind))


class Commander:
    def __init__(self, signer: Any, kid: bytes, epoch: int):
        self.signer = signer
        self.kid = kid
        self.epoch = epoch
        self.seq = 0

    def make(self, node: str, kind: int, args: dict, ref_boot: int, ref_seq: int,
             uptime_ms: int = 0) -> OutgoingCommand:
        self.seq += 1
        msg = schema.make_command(node, self.epoch, self.seq, uptime_ms, kind, args,
                                  ref_boot, ref_seq)
        schema.validate(msg, schema.COMMAND)  # never send what a node would reject as malformed
        wire = cose.encode(cbor.dumps(msg), self.signer, self.kid)
        return OutgoingCommand(node, topics.downlink(node), wire, self.epoch, self.seq, kind, args)
