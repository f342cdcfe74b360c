"""The run permit: the pump may infuse only while the node holds one.

A permit is granted by a gateway-signed command that names a message this node sent
(``ref`` = boot, seq). Its lifetime is counted on the node's own tick clock *from the
moment the node made that message*, not from when the permit arrived, so:

* no synchronized clock is needed;
* a permit delayed in a queue has less time left, never more;
* a captured or replayed permit names an old message, so it expires at once (and the
  command gate rejects it before it gets here).

The node checks ``remaining(now)`` at least every 100 ms and stops the pump at 0
(docs/firmware.md, "Permit"). ``max_lifetime_ms`` is the node's own ceiling: a gateway
(or a forged-but-valid key) cannot grant more than the node was provisioned to accept.
"""

from firmware.drivers._ticks import ticks_add, ticks_diff


class Permit:
    """``program_id`` names the program the permit is for; a node may let the pump infuse
    that program only while ``remaining(now) > 0`` (firmware/node.py checks both)."""

    def __init__(self, max_lifetime_ms):
        self.max_lifetime_ms = max_lifetime_ms
        self.program_id = 0
        self._expiry = None  # tick at which the permit held lapses; None: no permit
        self.granted = 0  # counters for telemetry and tests
        self.lapsed = 0

    def grant(self, program_id, ref_tick, lifetime_ms, now):
        """Take a permit valid until ``ref_tick + lifetime``; return None or a reason."""
        if lifetime_ms <= 0:
            return "permit.zero_lifetime"
        if lifetime_ms > self.max_lifetime_ms:
            lifetime_ms = self.max_lifetime_ms
        age = ticks_diff(now, ref_tick)
        if age < 0:
            return "permit.ref_in_future"
        if age >= lifetime_ms:
            return "permit.expired"
        expiry = ticks_add(ref_tick, lifetime_ms)
        if (self._expiry is not None and self.program_id == program_id
                and ticks_diff(self._expiry, expiry) > 0):
            # An older permit may arrive after a newer one (retransmission): never shorten.
            return None
        self.program_id = program_id
        self._expiry = expiry
        self.granted += 1
        return None

    def remaining(self, now):
        """ms left (0 when none). Also latches the lapse, so it is counted once."""
        if self._expiry is None:
            return 0
        left = ticks_diff(self._expiry, now)
        if left <= 0:
            self._expiry = None
            self.lapsed += 1
            return 0
        if left > self.max_lifetime_ms:  # cannot happen unless the clock misbehaved
            self._expiry = None
            return 0
        return left

    def revoke(self):
        """Drop the permit at once (stop command, local interlock, new program)."""
        self._expiry = None
