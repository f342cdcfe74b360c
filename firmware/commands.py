"""The command gate: only fresh, gateway-signed commands for this node get through.

Checks, in order (each failure has its own reason, acked back to the gateway and counted):

1. COSE_Sign1 signature by the gateway key provisioned on the board (``cose.*``);
2. CBOR payload and schema of a COMMAND (``cbor.*``, ``schema.*``);
3. addressed to this node (``cmd.other_device``);
4. ``ref`` names one of this node's recent messages of *this* boot (``cmd.stale_ref``) made
   less than ``max_age_ms`` ago on the node's own clock (``cmd.expired``): a command
   captured earlier, or from before a reboot, can never be replayed into action;
5. the gateway's (epoch, seq) is new (``cmd.duplicate`` for a QoS 1 redelivery, which is
   acked again but not executed twice; ``cmd.replayed`` for an older one).

The window is advanced only after all checks pass, so a forged or stale command can never
move it.
"""

from firmware.drivers._ticks import ticks_diff
from protocol import cbor, cose, schema
from protocol.errors import ProtocolError
from protocol.replay import DUPLICATE, STALE, ReplayWindow


class Rejected(Exception):
    """A command that must not be executed; ``reason`` is acked to the gateway."""

    def __init__(self, reason, epoch=None, seq=None):
        super().__init__(reason)
        self.reason = reason
        self.epoch = epoch
        self.seq = seq


class Command:
    def __init__(self, msg):
        self.epoch = msg[schema.K_BOOT]
        self.seq = msg[schema.K_SEQ]
        self.kind = msg[schema.C_KIND]
        self.args = msg[schema.C_ARGS]
        self.ref_seq = msg[schema.C_REF][1]


class CommandGate:
    def __init__(self, node_id, gateway_verifier, gateway_kid, sentlog, max_age_ms):
        self.node_id = node_id
        self._verifier = gateway_verifier
        self._kid = gateway_kid
        self._sentlog = sentlog
        self.max_age_ms = max_age_ms
        self.window = ReplayWindow(ordered=True)
        self.rejected = 0

    def _lookup(self, kid):
        return self._verifier if kid == self._kid else None

    def check(self, wire, boot, now):
        """Return (Command, ref_tick) for a command to execute; raise Rejected otherwise."""
        try:
            msg = cose.verify(wire, self._lookup)
            body = schema.validate(cbor.loads(msg.payload), schema.COMMAND)
        except ProtocolError as e:
            self.rejected += 1
            raise Rejected(e.reason)
        cmd = Command(body)
        if body[schema.K_DEV] != self.node_id:
            self.rejected += 1
            raise Rejected("cmd.other_device", cmd.epoch, cmd.seq)
        ref_boot, ref_seq = body[schema.C_REF]
        ref_tick = self._sentlog.tick_of(ref_seq) if ref_boot == boot else None
        if ref_tick is None:
            self.rejected += 1
            raise Rejected("cmd.stale_ref", cmd.epoch, cmd.seq)
        age = ticks_diff(now, ref_tick)
        if age < 0 or age > self.max_age_ms:
            self.rejected += 1
            raise Rejected("cmd.expired", cmd.epoch, cmd.seq)
        verdict = self.window.check(cmd.epoch, cmd.seq)
        if verdict == DUPLICATE:
            raise Rejected("cmd.duplicate", cmd.epoch, cmd.seq)
        if verdict == STALE:
            self.rejected += 1
            raise Rejected("cmd.replayed", cmd.epoch, cmd.seq)
        self.window.accept(cmd.epoch, cmd.seq)
        return cmd, ref_tick
