"""Replay protection over (boot counter, sequence number).

Every signed message carries the sender's boot counter (persisted, incremented at each
boot) and a sequence number that starts at 0 on each boot and only grows. A receiver keeps,
per sender, the highest boot seen and a sliding bitmap of the last ``WINDOW`` sequence
numbers of that boot - the anti-replay window of IPsec (RFC 4303 §3.4.3), so that:

* NEW        - never seen: process it;
* DUPLICATE  - seen already: a QoS 1 redelivery (MQTT 3.1.1 §4.3.2 allows duplicates),
               acknowledge it again but do not process it twice. Not an attack;
* STALE      - older than the window, or from an earlier boot: reject and audit.

With ``ordered=True`` (the node's view of gateway commands, which arrive in order over
one MQTT subscription) a never-seen number below the highest is STALE too: a withheld
command can never be released later.

``check`` does not change state; ``accept`` records a sequence number and must be called
only once the message has been verified (and, on the gateway, durably stored), so a forged
packet can never move the window.
"""

from protocol import const

NEW = const(0)
DUPLICATE = const(1)
STALE = const(2)

WINDOW = const(64)
_MASK = const(0xFFFFFFFFFFFFFFFF)

VERDICTS = ("new", "duplicate", "stale")


class ReplayWindow:
    """Per-sender state: highest (boot, seq) and a bitmap of recent sequence numbers."""

    def __init__(self, boot=-1, top=-1, bitmap=0, ordered=False):
        self.ordered = ordered
        self.boot = boot  # highest boot counter seen (-1: nothing yet)
        self.top = top  # highest sequence number accepted in that boot
        self.bitmap = bitmap  # bit i set <=> seq (top - i) accepted

    def check(self, boot, seq):
        if boot < self.boot:
            return STALE
        if boot > self.boot or self.top < 0:
            return NEW
        if seq > self.top:
            return NEW
        offset = self.top - seq
        if offset >= WINDOW:
            return STALE
        if (self.bitmap >> offset) & 1:
            return DUPLICATE
        return STALE if self.ordered else NEW

    def accept(self, boot, seq):
        """Record (boot, seq); return the verdict it had (so callers can do both at once)."""
        verdict = self.check(boot, seq)
        if verdict != NEW:
            return verdict
        if boot > self.boot:
            self.boot = boot
            self.top = seq
            self.bitmap = 1
        elif seq > self.top:
            shift = seq - self.top
            self.bitmap = ((self.bitmap << shift) | 1) & _MASK if shift < WINDOW else 1
            self.top = seq
        else:
            self.bitmap |= 1 << (self.top - seq)
        return NEW

    def gap(self, boot, seq):
        """How many sequence numbers were skipped before ``seq`` (0 when contiguous)."""
        if boot != self.boot or self.top < 0 or seq <= self.top:
            return 0
        return seq - self.top - 1

    def state(self):
        """A plain tuple for persistence (the gateway stores it; the node keeps it in RAM)."""
        return (self.boot, self.top, self.bitmap)
