"""Per-node traffic limits: a token bucket on packets/s and one on bytes/s.

A flooding or compromised node must not starve the other chairs: its excess packets are
dropped *before* signature verification (the expensive step), counted and audited (in
batches, so a flood cannot flood the audit log either). Limits are generous against the
real cadence (one telemetry packet per second of ~300 bytes, plus bursts after an outage
when a node flushes its store-and-forward buffer).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrafficLimit:
    packets_per_s: float = 50.0
    packet_burst: float = 500.0  # a node flushing a 60 s outage backlog
    bytes_per_s: float = 50_000.0
    byte_burst: float = 500_000.0


class TokenBucket:
    """Classic token bucket: ``rate`` tokens/s up to ``burst``; time is passed in."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, amount: float, now: float) -> bool:
        elapsed = max(0.0, now - self.stamp)
        self.stamp = now
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False


class TrafficLimiter:
    """One pair of buckets per node; ``allow`` returns False for traffic over the limit."""

    def __init__(self, limit: TrafficLimit):
        self.limit = limit
        self._buckets: dict[str, tuple[TokenBucket, TokenBucket]] = {}
        self.dropped: dict[str, int] = {}

    def allow(self, node: str, size: int, now: float) -> bool:
        pair = self._buckets.get(node)
        if pair is None:
            lim = self.limit
            pair = (TokenBucket(lim.packets_per_s, lim.packet_burst, now),
                    TokenBucket(lim.bytes_per_s, lim.byte_burst, now))
            self._buckets[node] = pair
        packets, octets = pair
        # Check both before taking from either, so a refused packet costs nothing.
        ok_p = packets.take(1, now)
        ok_b = octets.take(size, now) if ok_p else False
        if ok_p and not ok_b:
            packets.tokens += 1
        if ok_p and ok_b:
            return True
        self.dropped[node] = self.dropped.get(node, 0) + 1
        return False
