"""Virtual chairs: a load generator that signs and publishes realistic telemetry for many
nodes at the real cadence (1 packet/s each) and answers nothing.

Why not more real chairs: each real node is a MicroPython process signing in pure Python
(~3 ms a packet plus its serial and MQTT work), so a 2-core machine runs a handful. A
virtual chair costs ~0.1 ms of CPU per packet (``cryptography`` signs), so hundreds fit.

A virtual chair listens to its own command topic only to keep its telemetry plausible: a
program command loads its pump, start makes it report infusing (with the volume the rate
implies), stop stops it, permits are counted. It never acks, never verifies, never stops
on a lapsed permit: it is load, not a node.

Each generator is one process (``LoadGen.start()``); it reports what it published, what
the broker acknowledged, how late it ran against its schedule, and the commands it got.
"""

from __future__ import annotations

import multiprocessing as mp
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import benchlib
import paho.mqtt.client as mqtt  # noqa: E402
from benchlib import VirtualNode
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from gateway.cose_keys import EdDSASigner  # noqa: E402
from protocol import schema, topics  # noqa: E402


@dataclass(frozen=True)
class GenReport:
    name: str
    nodes: int
    published: int
    acked: int
    late_p99_ms: float
    late_max_ms: float
    commands: dict[str, int]
    cpu_s: float
    wall_s: float
    # (wall time the telemetry was published, ms until the permit referencing it arrived);
    # a chair's first permit answers a packet up to 1 s old (the start request makes it), so
    # callers keep only packets published inside their measurement window.
    permit_rtt: list[tuple[float, float]]

    def rtt_ms(self, since: float) -> list[float]:
        return [ms for t, ms in self.permit_rtt if t >= since]


def _run(
    name: str,
    host: str,
    port: int,
    nodes: list[VirtualNode],
    period_s: float,
    stop: Any,
    out: Any,
    nodelay: bool,
) -> None:
    signers = [EdDSASigner(v.seed) for v in nodes]
    kids = [v.node_id.encode() for v in nodes]
    pumps = {v.node_id: benchlib.Pump() for v in nodes}
    commands: dict[str, int] = {}
    acked = [0]
    lock = threading.Lock()
    sent_at: dict[str, dict[int, float]] = {v.node_id: {} for v in nodes}
    rtt: list[tuple[float, float]] = []

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        try:
            cmd = benchlib.command_of(bytes(msg.payload))
        except Exception:  # noqa: BLE001 - load, not a node: count and move on
            commands["undecodable"] = commands.get("undecodable", 0) + 1
            return
        kind = schema.CMD_NAMES.get(cmd[schema.C_KIND], "?")
        commands[kind] = commands.get(kind, 0) + 1
        pump = pumps.get(cmd[schema.K_DEV])
        if pump is None:
            return
        a = cmd[schema.C_ARGS]
        now = time.time()
        if kind == "permit":
            t = sent_at[cmd[schema.K_DEV]].get(cmd[schema.C_REF][1])
            if t is not None:
                rtt.append((t, (now - t) * 1000.0))
        with lock:
            if kind == "program":
                pump.program, pump.rate_ul_h = a[schema.A_PROGRAM_ID], a[schema.A_RATE]
                pump.vtbi_ul, pump.base_ul, pump.started = a[schema.A_VTBI], 0.0, None
            elif kind == "start" and pump.program:
                pump.state, pump.started = schema.PUMP_INFUSING, now
            elif kind == "stop":
                pump.base_ul = float(pump.infused(now))
                pump.state, pump.started = schema.PUMP_STOPPED, None

    def on_publish(client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        acked[0] += 1

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.on_message = on_message
    c.on_publish = on_publish
    subscribed = threading.Event()
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect(host, port, keepalive=30)
    if nodelay:
        sock = c.socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.loop_start()
    c.subscribe([(topics.downlink(v.node_id), 1) for v in nodes])
    subscribed.wait(10)
    cpu0 = time.process_time()
    t_boot = time.time()
    seq = [1] * len(nodes)
    published = 0
    for i, v in enumerate(nodes):
        c.publish(
            topics.uplink(v.node_id, "birth"),
            benchlib.sign(benchlib.birth(v.node_id, 1, seq[i], 0), signers[i], kids[i]),
            qos=1,
        )
        seq[i] += 1
        published += 1
    # Node i sends at t0 + i/n + k * period: the load is spread evenly over each second.
    n = len(nodes)
    t0 = time.time() + 0.05
    k = 0
    late: list[float] = []
    while not stop.is_set():
        for i, v in enumerate(nodes):
            due = t0 + k * period_s + i * period_s / n
            now = time.time()
            if due > now:
                time.sleep(due - now)
                if stop.is_set():
                    break
                now = time.time()
            late.append((now - due) * 1000.0)
            with lock:
                msg = benchlib.telemetry(
                    v.node_id,
                    1,
                    seq[i],
                    int((now - t_boot) * 1000),
                    pump=pumps[v.node_id],
                    now=now,
                    permit_ms=4000 if pumps[v.node_id].program else 0,
                )
            wire = benchlib.sign(msg, signers[i], kids[i])
            sa = sent_at[v.node_id]
            sa[seq[i]] = time.time()
            sa.pop(seq[i] - 64, None)
            c.publish(v.topic, wire, qos=1)
            seq[i] += 1
            published += 1
        k += 1
    deadline = time.time() + 20
    while acked[0] < published and time.time() < deadline:
        time.sleep(0.05)
    wall = time.time() - t_boot
    c.disconnect()
    c.loop_stop()
    late.sort()
    out.put(
        GenReport(
            name,
            n,
            published,
            acked[0],
            round(late[int(0.99 * (len(late) - 1))], 1) if late else 0.0,
            round(late[-1], 1) if late else 0.0,
            dict(commands),
            round(time.process_time() - cpu0, 2),
            round(wall, 2),
            list(rtt),
        )
    )


class LoadGen:
    """One generator process for a set of virtual nodes (``stop()`` returns its report)."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        nodes: list[VirtualNode],
        period_s: float = 1.0,
        nodelay: bool = False,
    ):
        ctx = mp.get_context("spawn")
        self._stop = ctx.Event()
        self._q = ctx.Queue()
        self.nodes = nodes
        self.proc = ctx.Process(
            target=_run,
            args=(name, host, port, nodes, period_s, self._stop, self._q, nodelay),
            daemon=True,
        )

    def start(self) -> LoadGen:
        self.proc.start()
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def stop(self, timeout: float = 40.0) -> GenReport:
        self._stop.set()
        rep = self._q.get(timeout=timeout)
        self.proc.join(10)
        return rep

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


def start_sessions(request: Any, nodes: list[VirtualNode], timeout: float = 60.0) -> int:
    """Program and start every virtual chair (reference session: EXAMPLE ketamine dose)."""
    started = 0
    deadline = time.monotonic() + timeout
    pending = list(nodes)
    while pending and time.monotonic() < deadline:
        retry = []
        for v in pending:
            chair = "%s/%s" % (v.site, v.chair)
            r = request(
                {
                    "op": "program",
                    "chair": chair,
                    "drug": "ketamine",
                    "concentration_mg_ml": "1",
                    "weight_kg": "70",
                    "dose_rate": "0.75",
                    "duration_min": "40",
                    "diameter_cmm": 2670,
                    "operator": "bench",
                }
            )
            if not r.get("ok"):
                retry.append(v)
                continue
            r = request({"op": "start", "chair": chair, "operator": "bench"})
            if r.get("ok"):
                started += 1
            else:
                retry.append(v)
        pending = retry
        if pending:
            time.sleep(0.5)
    return started
