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
from protocol import cbor, const, cose
from protocol.envelope import validate_command
from protocol.errors import ProtocolError
from protocol.replay import DUPLICATE, STALE, ReplayWindow

# protocol/schema.py numbers, as folded private copies (see firmware/node.py)
_K_DEV = const(1)
_K_BOOT = const(2)
_K_SEQ = const(3)
_C_REF = const(12)


class Rejected(Exception):
    """A command that must not be executed; ``reason`` is acked to the gateway."""

    def __init__(self, reason, epoch=None, seq=None):
        super().__init__(reason)
        self.reason = reason
        self.epoch = epoch
        self.seq = seq


class CommandGate:
    def __init__(self, node_id, gateway_verifier, gateway_kid, sentlog, max_age_ms):
        self.node_id = node_id
        # kid -> verifier: the one provisioned gateway key (its ``get`` is cose's lookup)
        self._keys = {gateway_kid: gateway_verifier}
        self.sentlog = sentlog  # the node records its messages here (firmware/node.py)
        self.max_age_ms = max_age_ms
        self.window = ReplayWindow(ordered=True)
        self.rejected = 0

    def check(self, wire, boot, now):
        """Return (message, ref_tick) for a command to execute (the validated payload map,
        keys as in protocol/schema.py); raise Rejected otherwise."""
        try:
            msg = cose.verify(wire, self._keys.get)
            body = validate_command(cbor.loads(msg.payload))
        except ProtocolError as e:
            self.rejected += 1
            raise Rejected(e.reason)
        epoch = body[_K_BOOT]
        seq = body[_K_SEQ]
        ref_boot, ref_seq = body[_C_REF]
        ref_tick = self.sentlog.tick_of(ref_seq) if ref_boot == boot else None
        if body[_K_DEV] != self.node_id:
            reason = "cmd.other_device"
        elif ref_tick is None:
            reason = "cmd.stale_ref"
        elif not 0 <= ticks_diff(now, ref_tick) <= self.max_age_ms:
            reason = "cmd.expired"
        else:
            verdict = self.window.check(epoch, seq)
            if verdict == DUPLICATE:
                raise Rejected("cmd.duplicate", epoch, seq)  # not counted: a redelivery
            if verdict != STALE:
                self.window.accept(epoch, seq)
                return body, ref_tick
            reason = "cmd.replayed"
        self.rejected += 1
        raise Rejected(reason, epoch, seq)
