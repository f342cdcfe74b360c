"""When did this node make its recent messages? (the freshness anchor of commands)

Every command the gateway signs names a message of this node (boot, seq). The node
accepts the command only if that message is one of its last ``size`` messages and was made
less than ``max_age_ms`` ago, measured on its own tick clock. A bounded ring: a fixed
number of small ints, no allocation per message.

The node numbers its messages one by one (firmware/node.py), so the last ``size`` of them
have distinct ``seq % size``: that is each one's slot, and a lookup is one comparison. A
sequence that skipped numbers would only forget messages sooner, never keep one longer.
"""


class SentLog:
    def __init__(self, size=32):
        self._seqs = [-1] * size
        self._ticks = [0] * size

    def record(self, seq, tick):
        i = seq % len(self._seqs)
        self._seqs[i] = seq
        self._ticks[i] = tick

    def tick_of(self, seq):
        """The tick at which ``seq`` was made, or None if it is not among the recent ones."""
        i = seq % len(self._seqs)
        return self._ticks[i] if self._seqs[i] == seq else None
