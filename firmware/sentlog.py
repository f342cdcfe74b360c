"""When did this node make its recent messages? (the freshness anchor of commands)

Every command the gateway signs names a message of this node (boot, seq). The node
accepts the command only if that message is one of its last ``size`` messages and was made
less than ``max_age_ms`` ago, measured on its own tick clock. A bounded ring: a fixed
number of small ints, no allocation per message.
"""


class SentLog:
    def __init__(self, size=32):
        self._seqs = [-1] * size
        self._ticks = [0] * size
        self._next = 0

    def record(self, seq, tick):
        self._seqs[self._next] = seq
        self._ticks[self._next] = tick
        self._next = (self._next + 1) % len(self._seqs)

    def tick_of(self, seq):
        """The tick at which ``seq`` was made, or None if it is not among the recent ones."""
        for i in range(len(self._seqs)):
            if self._seqs[i] == seq:
                return self._ticks[i]
        return None
