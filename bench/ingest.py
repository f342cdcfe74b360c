"""Ingest throughput: signed telemetry through a real Mosquitto into the real gateway,
verified, decoded, rule-checked and stored, counted as rows in the packets table.

    python bench/ingest.py [--nodes 200] [--packets 100] [--workers 1,2] [--profile]

Why the gateway runs in this process (``gateway.service.Gateway`` on its own thread, built
and closed on that thread because its SQLite connection is bound to it) rather than as
``ivgw run``: the same code runs, but here the loop thread's and paho thread's CPU time can
be read from /proc by thread id, the verification wait can be timed, and the loop can be
profiled with cProfile. Nothing else runs in this process while the gateway drains.

Two modes:

* ``drain`` (the headline figure): the gateway's persistent session is created first, all
  K x N packets are published and queued by the broker, then the gateway starts and drains
  the backlog. No publisher competes for the 2 cores, so the figure is the gateway's own
  ceiling (the situation after a gateway restart with a queued backlog).
* ``live``: the gateway is up and P publisher processes publish as fast as paho allows;
  the publish rate is recorded beside the ingest rate to show whether the publishers or
  the gateway set the pace.

Bounds measured in the same run, on one core of this process: raw Ed25519 verifications/s
(``cryptography``) and the full stateless verification path (topic, COSE, CBOR, schema:
``gateway.verify.PacketVerifier``), which is the most one worker process can do.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import multiprocessing as mp
import pstats
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import paho.mqtt.client as mqtt  # noqa: E402  (after benchlib puts the repo on sys.path)
from benchlib import BenchError, CpuProbe, VirtualNode
from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from gateway.config import load as load_config  # noqa: E402
from gateway.cose_keys import EdDSASigner  # noqa: E402
from gateway.service import Gateway, load_gateway_key  # noqa: E402
from gateway.verify import NodeKey, PacketVerifier, Verified  # noqa: E402
from protocol import cose, topics  # noqa: E402

CLIENT_ID = "ivgw-gateway"


# --- packets -----------------------------------------------------------------------------------


def presign(nodes: list[VirtualNode], per_node: int) -> list[list[tuple[str, bytes]]]:
    """Per node, ``per_node`` telemetry packets in sequence order (boot 1, seq 1..)."""
    out = []
    for v in nodes:
        signer = EdDSASigner(v.seed)
        kid = v.node_id.encode()
        out.append(
            [
                (
                    v.topic,
                    benchlib.sign(
                        benchlib.telemetry(v.node_id, 1, s, 60_000 + s * 1000), signer, kid
                    ),
                )
                for s in range(1, per_node + 1)
            ]
        )
    return out


# --- bounds ------------------------------------------------------------------------------------


def bounds(sample: tuple[str, bytes], node: VirtualNode, seconds: float) -> dict[str, float]:
    """Single-core ceilings: raw Ed25519 verify, and the whole stateless verify path."""
    topic, wire = sample
    sign1 = cose.decode(wire)
    data = cose.sig_structure(sign1.protected_bytes, sign1.payload)
    key = ed25519.Ed25519PublicKey.from_public_bytes(node.public)
    sig = sign1.signature

    def rate(fn: Any) -> float:
        n, t0 = 0, time.perf_counter()
        while True:
            for _ in range(200):
                fn()
            n += 200
            el = time.perf_counter() - t0
            if el >= seconds:
                return n / el

    raw = rate(lambda: key.verify(sig, data))
    verifier = PacketVerifier({node.node_id: NodeKey(node.node_id, cose.ALG_EDDSA, node.public)})
    assert isinstance(verifier.verify(topic, wire), Verified)
    path = rate(lambda: verifier.verify(topic, wire))
    return {
        "ed25519_verify_per_s": round(raw),
        "verify_path_per_s": round(path),
        "packet_bytes": len(wire),
    }


def pool_rates(
    per_node: list[list[tuple[str, bytes]]], nodes: list[VirtualNode], worker_counts: list[int]
) -> dict[str, float]:
    """The verification pool alone (``gateway.workers.VerifierPool``, batches of 512, two at
    the workers at once as the gateway keeps them), fed by this process with nothing else
    running: how the parallel stage scales when cores are free for it. The end-to-end
    figures add the loop, paho and Mosquitto on the same 2 cores."""
    from gateway.workers import VerifierPool

    items = _round_robin(per_node)
    keys = {v.node_id: NodeKey(v.node_id, cose.ALG_EDDSA, v.public) for v in nodes}
    out = {}
    for n in worker_counts:
        pool = VerifierPool(n, keys)
        try:
            pool.verify_batch(items[:16])  # workers up and warm
            t0 = time.perf_counter()
            tickets = []
            for i in range(0, len(items), 512):
                tickets.append(pool.submit(items[i : i + 512]))
                if len(tickets) > 2:
                    res = pool.collect(tickets.pop(0))
                    assert all(isinstance(r, Verified) for r in res)
            for t in tickets:
                pool.collect(t)
            out["pool_w%d_per_s" % n] = round(len(items) / (time.perf_counter() - t0))
        finally:
            pool.close()
    return out


# --- publishers ----------------------------------------------------------------------------------


def _publisher(
    host: str, port: int, name: str, packets: list[tuple[str, bytes]], inflight: int, out: Any
) -> None:
    """One paho client publishing QoS 1 as fast as it can; reports (start, end, acked)."""
    done = threading.Event()
    acked = [0]
    n = len(packets)

    def on_publish(client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        acked[0] += 1
        if acked[0] >= n:
            done.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(inflight)
    c.max_queued_messages_set(0)
    c.on_publish = on_publish
    c.connect(host, port, keepalive=30)
    c.loop_start()
    t0 = time.time()
    for topic, payload in packets:
        c.publish(topic, payload, qos=1)
    ok = done.wait(600) if n else True
    t1 = time.time()
    c.disconnect()
    c.loop_stop()
    out.put((name, t0, t1, acked[0], ok))


def publish_all(
    host: str, port: int, per_node: list[list[tuple[str, bytes]]], procs: int, inflight: int
) -> tuple[Any, list[Any]]:
    """Start ``procs`` publisher processes, each owning whole nodes (per-node order kept)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    shards: list[list[list[tuple[str, bytes]]]] = [[] for _ in range(procs)]
    for i, pk in enumerate(per_node):
        shards[i % procs].append(pk)
    ps = []
    for i, shard in enumerate(shards):
        p = ctx.Process(
            target=_publisher,
            args=(host, port, "bench-pub-%d" % i, _round_robin(shard), inflight, q),
        )
        p.start()
        ps.append(p)
    return q, ps


def _round_robin(lists: list[list[tuple[str, bytes]]]) -> list[tuple[str, bytes]]:
    """Interleave nodes like real chairs do, each node's packets in sequence order."""
    out = []
    longest = max((len(x) for x in lists), default=0)
    for i in range(longest):
        for lst in lists:
            if i < len(lst):
                out.append(lst[i])
    return out


def collect(q: Any, ps: list[Any], timeout: float) -> dict[str, Any]:
    res = [q.get(timeout=timeout) for _ in ps]
    for p in ps:
        p.join(10)
    start = min(r[1] for r in res)
    end = max(r[2] for r in res)
    n = sum(r[3] for r in res)
    if not all(r[4] for r in res):
        raise BenchError("a publisher did not get all its PUBACKs")
    return {
        "published": n,
        "publish_s": round(end - start, 3),
        "publish_per_s": round(n / (end - start)) if end > start else None,
        "start": start,
        "end": end,
    }


def precreate_session(host: str, port: int) -> None:
    """The gateway's persistent session and subscription, so a backlog queues for it."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=CLIENT_ID, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    subscribed = threading.Event()
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect(host, port, clean_start=True, properties=props)
    c.loop_start()
    c.subscribe(topics.uplink_filter(), qos=1)
    if not subscribed.wait(10):
        raise BenchError("could not create the gateway's session on the broker")
    c.disconnect()
    c.loop_stop()


# --- the gateway on its own thread ----------------------------------------------------------


@dataclass
class GatewayThread:
    """Builds, runs and closes a Gateway on one thread (its SQLite connection's thread)."""

    config_path: Path
    profile: bool = False
    gw: Gateway | None = None
    tid: int = 0
    ready: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    verify_wait_s: float = 0.0
    batches: int = 0
    profile_text: str = ""
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="bench-gateway", daemon=True)
        self.thread.start()
        if not self.ready.wait(60) or self.gw is None:
            raise BenchError("the gateway did not start: %r" % (self.error,))

    def _run(self) -> None:
        self.tid = threading.get_native_id()
        prof = cProfile.Profile() if self.profile else None
        try:
            gw = Gateway(load_config(self.config_path))
            gw.start()
            assert gw.pool is not None
            # The loop waits for verification in collect() (pipelined pool) or in
            # verify_batch() (older, synchronous pool): time whichever the loop calls.
            name = "collect" if hasattr(gw.pool, "collect") else "verify_batch"
            inner = getattr(gw.pool, name)

            def timed(arg: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return inner(arg)
                finally:
                    self.verify_wait_s += time.perf_counter() - t0
                    self.batches += 1

            setattr(gw.pool, name, timed)
            self.gw = gw
            self.ready.set()
            if prof is not None:
                prof.enable()
            while not self.stop.is_set():
                gw.step(timeout=gw.cfg.gateway.tick_ms / 1000.0)
            if prof is not None:
                prof.disable()
                buf = io.StringIO()
                st = pstats.Stats(prof, stream=buf).sort_stats("cumulative")
                st.print_stats(30)
                buf.write("\n--- by own time ---\n")
                st.sort_stats("tottime").print_stats(25)
                self.profile_text = buf.getvalue()
            gw.close()
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            self.error = e
            self.ready.set()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(60)


def paho_tid() -> int | None:
    for t in threading.enumerate():
        if t.name.startswith("paho-mqtt-client") and t.native_id:
            return t.native_id
    return None


# --- one run -----------------------------------------------------------------------------------


def run_once(
    work: Path,
    nodes: list[VirtualNode],
    per_node: list[list[tuple[str, bytes]]],
    workers: int,
    mode: str,
    publishers: int,
    profile: bool,
    timeout: float,
) -> dict[str, Any]:
    total = sum(len(p) for p in per_node)
    work.mkdir(parents=True, exist_ok=True)
    broker = benchlib.production_broker(work / "mosquitto", queue=max(100_000, 2 * total))
    broker.start()
    gwt: GatewayThread | None = None
    try:
        data_dir = work / "gw"
        cfg_path = benchlib.write_gateway_config(
            work / "gateway.toml",
            data_dir,
            broker.host,
            broker.port,
            workers=workers,
            client_id=CLIENT_ID,
        )
        cfg = load_config(cfg_path)
        data_dir.mkdir(parents=True, exist_ok=True)
        load_gateway_key(cfg.key_path, create=True)
        benchlib.register(cfg.db_path, nodes)
        pub: dict[str, Any] = {}
        if mode == "drain":
            precreate_session(broker.host, broker.port)
            q, ps = publish_all(broker.host, broker.port, per_node, publishers, 1000)
            pub = collect(q, ps, timeout)
        gwt = GatewayThread(cfg_path, profile=profile)
        gwt.start()
        gw = gwt.gw
        assert gw is not None
        benchlib.wait_until("the gateway to connect", gw.connected.is_set, 30)
        import os

        me = os.getpid()
        targets: dict[str, tuple[int, int | None]] = {
            "gateway process, all threads": (me, None),
            "gateway loop thread": (me, gwt.tid),
            "mosquitto": (broker.proc.pid, None),
        }
        ptid = paho_tid()
        if ptid:
            targets["gateway paho thread"] = (me, ptid)
        for i, c in enumerate(benchlib.spawned_workers(me)):
            targets["verifier worker %d" % (i + 1)] = (c, None)
        probe = CpuProbe(targets)
        probe.start()
        t0 = time.time()
        if mode == "live":
            q, ps = publish_all(broker.host, broker.port, per_node, publishers, 1000)
        benchlib.wait_until(
            "all %d packets processed" % total,
            lambda: gw.processed >= total or gwt.error is not None,
            timeout,
            interval=0.01,
        )
        t1 = time.time()
        probe.stop()
        if mode == "live":
            pub = collect(q, ps, timeout)
            t0 = pub["start"]
        counters = dict(gw.core.counters)
        verify_wait, batches = gwt.verify_wait_s, gwt.batches
        gwt.close()
        if gwt.error is not None:
            raise BenchError("gateway failed: %r" % (gwt.error,))
        conn = sqlite3.connect(str(cfg.db_path))
        rows = conn.execute("SELECT COUNT(*) FROM packets").fetchone()[0]
        conn.close()
        secs = t1 - t0
        cores = probe.cores()
        result = {
            "mode": mode,
            "workers": workers,
            "nodes": len(nodes),
            "packets_sent": total,
            "rows_stored": rows,
            "lost": total - rows,
            "seconds": round(secs, 3),
            "ingest_per_s": round(rows / secs),
            "batches": batches,
            "mean_batch": round(total / batches, 1) if batches else None,
            "loop_waiting_for_workers_s": round(verify_wait, 3),
            "loop_waiting_share": round(verify_wait / secs, 3),
            "cores_busy": cores,
            "cores_busy_total": round(
                sum(
                    v
                    for k, v in cores.items()
                    if "thread" not in k or k.startswith("gateway process")
                ),
                3,
            ),
            "counters": counters,
            "publisher": {k: v for k, v in pub.items() if k not in ("start", "end")},
        }
        if profile:
            result["profile_top"] = gwt.profile_text
        return result
    finally:
        if gwt is not None:
            gwt.close()
        broker.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=200, help="virtual nodes (K)")
    ap.add_argument("--packets", type=int, default=100, help="telemetry packets per node (N)")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--modes", default="drain,live", help="drain and/or live")
    ap.add_argument("--publishers", type=int, default=2, help="publisher processes")
    ap.add_argument("--bound-seconds", type=float, default=1.0)
    ap.add_argument(
        "--profile",
        action="store_true",
        help="one more drain run at workers=1 with cProfile on the loop thread",
    )
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = ap.parse_args(argv)
    logging.getLogger("ivgw").setLevel(logging.ERROR)
    nodes = benchlib.virtual_nodes(args.nodes)
    t = time.perf_counter()
    per_node = presign(nodes, args.packets)
    presign_s = time.perf_counter() - t
    b = bounds(per_node[0][0], nodes[0], args.bound_seconds)
    print(
        "bounds on one core: Ed25519 verify %d/s, full verify path %d/s (%d-byte packet)"
        % (b["ed25519_verify_per_s"], b["verify_path_per_s"], b["packet_bytes"])
    )
    runs = []
    modes = [m for m in args.modes.split(",") if m]
    worker_counts = [int(w) for w in args.workers.split(",") if w]
    pool = pool_rates(per_node, nodes, worker_counts)
    print(
        "verification pool alone: %s"
        % ", ".join("%d workers %d/s" % (n, pool["pool_w%d_per_s" % n]) for n in worker_counts)
    )
    b.update(pool)
    with tempfile.TemporaryDirectory(prefix="ivgw-ingest-") as tmp:
        plan = [(m, w, False) for m in modes for w in worker_counts]
        if args.profile:
            plan.append(("drain", 1, True))
        for i, (mode, w, prof) in enumerate(plan):
            r = run_once(
                Path(tmp) / ("run%d" % i),
                nodes,
                per_node,
                w,
                mode,
                args.publishers,
                prof,
                args.timeout,
            )
            runs.append(r)
            print(
                "%-5s workers=%d%s: %6d packets/s  (%d/%d stored, lost %d; %.2f s; "
                "mean batch %s; loop waiting for workers %.0f%%; cores %s)"
                % (
                    mode,
                    w,
                    " [cProfile]" if prof else "",
                    r["ingest_per_s"],
                    r["rows_stored"],
                    r["packets_sent"],
                    r["lost"],
                    r["seconds"],
                    r["mean_batch"],
                    100 * r["loop_waiting_share"],
                    ", ".join("%s %.2f" % kv for kv in r["cores_busy"].items()),
                )
            )
            if r["publisher"]:
                print(
                    "      publishers: %s packets/s (%d processes)"
                    % (r["publisher"]["publish_per_s"], args.publishers)
                )
            if prof:
                print(r["profile_top"][:6000])

    def pick(mode: str, w: int) -> dict[str, Any] | None:
        for r in runs:
            if r["mode"] == mode and r["workers"] == w and "profile_top" not in r:
                return r
        return None

    summary: dict[str, Any] = {"bounds": b, "presign_s": round(presign_s, 2)}
    for mode in modes:
        r1, r2 = pick(mode, 1), pick(mode, 2)
        if r1:
            summary["%s_w1_over_ed25519" % mode] = round(
                r1["ingest_per_s"] / b["ed25519_verify_per_s"], 3
            )
            summary["%s_w1_over_verify_path" % mode] = round(
                r1["ingest_per_s"] / b["verify_path_per_s"], 3
            )
        if r1 and r2:
            summary["%s_w2_over_w1" % mode] = round(r2["ingest_per_s"] / r1["ingest_per_s"], 3)
    if "pool_w1_per_s" in b and "pool_w2_per_s" in b:
        summary["pool_w2_over_w1"] = round(b["pool_w2_per_s"] / b["pool_w1_per_s"], 3)
        summary["pool_w1_over_ed25519"] = round(b["pool_w1_per_s"] / b["ed25519_verify_per_s"], 3)
    summary["zero_loss"] = all(r["lost"] == 0 for r in runs)
    out = benchlib.write_result(
        "ingest",
        {"config": vars(args), "summary": summary, "runs": runs},
        benchlib.out_dir_arg(args.out),
    )
    for k, v in summary.items():
        if k != "bounds":
            print("%s: %s" % (k, v))
    print("results: %s" % out)
    return 0 if summary["zero_loss"] else 1


if __name__ == "__main__":
    sys.exit(main())
