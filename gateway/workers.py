"""Verification worker processes: signature checks on every core, each chair in order.

A packet goes to worker ``hash(node) % N``, so all packets of one node pass through one
worker, in arrival order; the ingest loop collects results per worker in FIFO order and
re-sequences them by arrival index before any stateful step. Key changes (registration,
rotation, revocation) travel down the same queues as packets, so a packet received after a
revocation is checked against the revoked key, never the old one.

``workers=0`` verifies in the calling thread (tests, tiny installations).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.verify import NodeKey, PacketVerifier, Rejected, Verified

Result = Verified | Rejected


@dataclass(frozen=True)
class Ticket:
    size: int
    shards: tuple[int, ...]
    results: list[Result] | None  # already known (inline verification)


def _worker(inq: Any, outq: Any, keys: dict[str, NodeKey]) -> None:
    verifier = PacketVerifier(keys)
    parent = os.getppid()
    while True:
        try:
            batch = inq.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                return  # the gateway died (SIGKILL): do not linger as an orphan
            continue
        if batch is None:
            return
        out = []
        for item in batch:
            if item[0] == "key":
                verifier.set_key(item[1])
            elif item[0] == "unkey":
                verifier.remove_key(item[1])
            else:
                _, idx, topic, payload = item
                out.append((idx, verifier.verify(topic, payload)))
        if out:  # a key-only batch gets no reply: collect() expects one per packet batch
            outq.put(out)


def _shard(node_hint: str, n: int) -> int:
    return zlib.crc32(node_hint.encode()) % n


def node_hint(topic: str) -> str:
    """The node id level of a topic (cheap; verification re-parses it properly)."""
    parts = topic.split("/", 4)
    return parts[3] if len(parts) > 3 else ""


class VerifierPool:
    def __init__(self, workers: int, keys: dict[str, NodeKey]):
        self.workers = workers
        self._inline = PacketVerifier(keys) if workers == 0 else None
        self._procs: list[Any] = []
        self._inqs: list[Any] = []
        self._outqs: list[Any] = []
        if workers:
            ctx = mp.get_context("spawn")  # no inherited threads/sockets from the service
            for _ in range(workers):
                inq, outq = ctx.Queue(), ctx.Queue()
                p = ctx.Process(target=_worker, args=(inq, outq, dict(keys)), daemon=True)
                p.start()
                self._procs.append(p)
                self._inqs.append(inq)
                self._outqs.append(outq)

    def set_key(self, key: NodeKey) -> None:
        if self._inline is not None:
            self._inline.set_key(key)
        for q in self._inqs:
            q.put([("key", key)])

    def remove_key(self, node: str) -> None:
        if self._inline is not None:
            self._inline.remove_key(node)
        for q in self._inqs:
            q.put([("unkey", node)])

    def submit(self, items: Sequence[tuple[str, bytes]]) -> Ticket:
        """Hand ``(topic, payload)`` items to the workers and return at once: the caller
        applies the previous batch while the workers verify this one (pipelining)."""
        if self._inline is not None:
            return Ticket(len(items), (), [self._inline.verify(t, p) for t, p in items])
        n = self.workers
        shards: list[list[tuple]] = [[] for _ in range(n)]
        for idx, (topic, payload) in enumerate(items):
            shards[_shard(node_hint(topic), n)].append(("pkt", idx, topic, payload))
        used = []
        for i, shard in enumerate(shards):
            if shard:
                self._inqs[i].put(shard)
                used.append(i)
        return Ticket(len(items), tuple(used), None)

    def collect(self, ticket: Ticket) -> list[Result]:
        """The results of a submitted batch, in its order. Tickets must be collected in the
        order they were submitted (each worker answers in FIFO order)."""
        if ticket.results is not None:
            return ticket.results
        results: list[Result | None] = [None] * ticket.size
        for i in ticket.shards:
            for idx, res in self._outqs[i].get():
                results[idx] = res
        return [r for r in results if r is not None]

    def verify_batch(self, items: Sequence[tuple[str, bytes]]) -> list[Result]:
        """Verify ``(topic, payload)`` items; results come back in the same order."""
        return self.collect(self.submit(items))

    def close(self) -> None:
        for q in self._inqs:
            q.put(None)
        for p in self._procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        for q in self._inqs + self._outqs:
            q.close()
            q.join_thread()
        self._procs = []

    def alive(self) -> bool:
        return all(p.is_alive() for p in self._procs)

