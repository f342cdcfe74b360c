"""Interlock latency through the real chain: emulated monitor -> node (real firmware in
MicroPython) -> Mosquitto -> gateway (``ivgw run``) -> signed stop -> node -> STP frame at
the emulated pump.

    python bench/latency.py [--trips 200] [--local-trips 50] [--loaded-trips 60]
                            [--background 100]

Each gateway-path trip: the patient's systolic pressure is set to 195 mmHg (the example
rules' critical limit is 180, ``for_s: 0``), a cuff cycle puts it on the monitor's display,
and the monitor sends its next displayed-values record *now* (a real S/5 sends every 5 s on
its own schedule; only the phase is chosen here, so a run of hundreds of trips fits in
minutes). Latency is measured from the moment that record (the one carrying the breach)
left the emulated monitor to the moment the STP frame reached the emulated pump, both on
this machine's wall clock. Then the pressure recovers, the trip is acknowledged and the
infusion restarted, and the next trip begins.

Hops (docs/performance.md explains them):

* ``wait_for_tick``: the breaching value's node time -> the node's telemetry packet that
  carried it (node clock, exact): a node that sends only on its 1 s tick waits up to 1 s
  here; the firmware sends a new NIBP reading at once, so this should be ~0;
* ``read_sign_uplink``: the rest of monitor emit -> gateway received (serial read, CBOR +
  Ed25519 sign in MicroPython, MQTT up);
* ``gateway``: packet received by paho -> stop command signed (batch wait, verification in
  a worker, rules, trip recorded);
* ``downlink``: stop signed -> STP frame at the pump (SQLite commit, MQTT down, node verify,
  STP written); ``node_verify_write`` is the node's own part of it (its console line);
* ``chain``: everything except ``wait_for_tick``.

The node-local path (local hard limit SpO2 < 85 in the node's config: the node stops the
pump without the gateway) is measured from the oximeter line carrying the low SpO2 to the
STP frame. The example SpO2 limit is an EXAMPLE, not a clinical recommendation.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import benchlib
from benchlib import BenchError
from loadgen import LoadGen, start_sessions

from gateway.store import packet_body  # noqa: E402
from protocol import mdc  # noqa: E402
from testbed.bench import Bench  # noqa: E402
from testbed.chair import EmulatedChair  # noqa: E402

NORMAL_NIBP = (125, 80, 95)
HIGH_NIBP = (195, 85, 122)  # only the systolic is beyond its (EXAMPLE) critical limit
LOCAL_LIMITS = {"spo2": {"min": 85}, "nibp_sys": {"max": 200}}  # EXAMPLE node hard limits
QUIET_BROKER = ("log_type none", "log_type error", "log_type warning", "max_inflight_messages 1000")
# Mosquitto's default leaves Nagle's algorithm on for its client sockets: a small packet
# (a stop, a permit) waits for the ACK of the previous one, which the receiver delays up to
# 40 ms. Measured with and without (docs/performance.md).
NODELAY_BROKER = ("set_tcp_nodelay true",)


@dataclass
class Trip:
    e2e_ms: float
    wait_for_tick_ms: float | None = None
    read_sign_uplink_ms: float | None = None
    gateway_ms: float | None = None
    downlink_ms: float | None = None
    node_verify_write_ms: float | None = None
    chain_ms: float | None = None
    gateway_breach_to_stop_ms: float | None = None
    rule: str = ""


def emit_record_now(monitor: Any) -> None:
    """Make the emulated S/5 send its next displayed-values record now instead of at its
    5 s schedule. Reaches into the emulator (no public hook exists: docs/performance.md
    proposes ``DatexS5.send_now()``); the measurement starts at the record actually sent."""
    with monitor.lock:
        monitor._next_send = monitor.clock()


def _db(bench: Bench) -> sqlite3.Connection:
    return sqlite3.connect("file:%s?mode=ro" % bench.config().db_path, uri=True, timeout=10)


def _last_trip_id(bench: Bench) -> int:
    conn = _db(bench)
    try:
        return conn.execute("SELECT COALESCE(MAX(id), 0) FROM trips").fetchone()[0]
    finally:
        conn.close()


def _new_trip(bench: Bench, after_id: int) -> tuple | None:
    conn = _db(bench)
    try:
        return conn.execute(
            "SELECT id, rule, breach_at, tripped_at, stop_sent_at, latency_ms FROM trips "
            "WHERE id > ? AND stop_sent_at IS NOT NULL ORDER BY id LIMIT 1",
            (after_id,),
        ).fetchone()
    finally:
        conn.close()


def _breach_packet(bench: Bench, node: str, since: float, until: float) -> tuple | None:
    """(received_at, body) of the first telemetry packet received in [since, until] that
    carries the breaching systolic pressure (the gateway's trip time can be a moment later
    than the packet's receipt, so the trip row does not name the packet exactly)."""
    conn = _db(bench)
    try:
        rows = conn.execute(
            "SELECT received_at, body, signed FROM packets WHERE node_id = ? "
            "AND kind = 'telemetry' "
            "AND received_at BETWEEN ? AND ? ORDER BY received_at",
            (node, since, until + 1e-6),
        ).fetchall()
    finally:
        conn.close()
    for received_at, text, signed in rows:
        body = packet_body(text, signed)
        vit = body["10"].get(str(mdc.NIBP_SYS))
        if vit is not None and vit[1] == -2 and vit[0] == HIGH_NIBP[0] * 100:
            return received_at, body
    return None


def _stp_after(chair: EmulatedChair, t: float) -> float | None:
    for when, _text in chair.pump.commands("STP"):
        if when >= t:
            return when
    return None


def _recover(bench: Bench, chair: EmulatedChair, timeout: float = 30.0) -> None:
    """Pressure back to normal, acknowledge the trip, restart the infusion."""
    chair.vitals.nibp = NORMAL_NIBP
    chair.vitals.spo2 = 97
    chair.monitor.cuff_cycle()
    emit_record_now(chair.monitor)
    deadline = time.monotonic() + timeout
    while True:
        r = bench.request(
            {"op": "ack", "chair": chair.id, "operator": "bench", "reason": "latency benchmark"},
            ok=False,
        )
        if r.get("ok"):
            break
        if time.monotonic() > deadline:
            raise BenchError("acknowledgement refused: %s" % r.get("error"))
        time.sleep(0.02)
    while True:
        r = bench.request({"op": "start", "chair": chair.id, "operator": "bench"}, ok=False)
        if r.get("ok"):
            break
        if time.monotonic() > deadline:
            raise BenchError("restart refused: %s" % r.get("error"))
        time.sleep(0.05)
    bench.wait_for("pump infusing again", chair.pump.running, timeout, interval=0.01)


def gateway_trip(
    bench: Bench, chair: EmulatedChair, rng: random.Random, timeout: float = 20.0
) -> Trip:
    mon = chair.monitor
    assert mon is not None
    last_id = _last_trip_id(bench)
    n_sent = len(mon.sent)
    n_lines = len(chair.node.lines)
    # A random phase against the node's 1 s telemetry tick: the restart that ends the
    # previous trip is itself tied to a telemetry packet, so without this every trip would
    # see the same wait for the tick.
    time.sleep(rng.uniform(0.0, 1.0))
    chair.vitals.nibp = HIGH_NIBP
    mon.cuff_cycle()
    emit_record_now(mon)
    sys_x100 = HIGH_NIBP[0] * 100

    def emitted() -> float | None:
        for when, v, damaged in list(mon.sent[n_sent:]):
            if not damaged and v.get("nibp") and v["nibp"][0] == sys_x100:
                return when
        return None

    e = bench.wait_for("the breaching record", emitted, timeout, interval=0.005)
    p = bench.wait_for("STP at the pump", lambda: _stp_after(chair, e), timeout, interval=0.005)
    trip = Trip(e2e_ms=(p - e) * 1000.0)
    row = bench.wait_for("the trip row", lambda: _new_trip(bench, last_id), timeout, interval=0.02)
    _tid, trip.rule, breach_at, tripped_at, stop_sent_at, latency_ms = row
    trip.gateway_breach_to_stop_ms = latency_ms
    trip.downlink_ms = (p - stop_sent_at) * 1000.0
    found = _breach_packet(bench, chair.node_id, e, tripped_at)
    if found is not None:
        received_at, body = found
        vit = body["10"][str(mdc.NIBP_SYS)]
        trip.wait_for_tick_ms = float(body["4"] - vit[3])
        trip.read_sign_uplink_ms = (received_at - e) * 1000.0 - trip.wait_for_tick_ms
        trip.gateway_ms = (stop_sent_at - received_at) * 1000.0
        trip.chain_ms = trip.e2e_ms - trip.wait_for_tick_ms
    for line in chair.node.lines[n_lines:]:
        m = re.search(r"STOP written (\d+) ms", line)
        if m:
            trip.node_verify_write_ms = float(m.group(1))
            break
    _recover(bench, chair)
    return trip


def local_trip(
    bench: Bench, chair: EmulatedChair, rng: random.Random, timeout: float = 20.0
) -> Trip:
    oxi = chair.oximeter
    n_sent = len(oxi.sent)
    time.sleep(rng.uniform(0.0, 1.0))  # random phase against the node's 10 ms step loop
    chair.vitals.spo2 = 80  # below the node's EXAMPLE hard limit of 85

    def emitted() -> float | None:
        for when, spo2, _bpm, _pi, damaged in list(oxi.sent[n_sent:]):
            if not damaged and spo2 == 80:
                return when
        return None

    e = bench.wait_for("the low-SpO2 line", emitted, timeout, interval=0.005)
    p = bench.wait_for("STP at the pump", lambda: _stp_after(chair, e), timeout, interval=0.005)
    trip = Trip(e2e_ms=(p - e) * 1000.0)
    chair.vitals.spo2 = 97
    # The gateway latches the chair on the node's local_interlock event. Restart only once
    # the node has read a recovered SpO2 line: a start while the node still holds the low
    # value would trip its limit again at once.
    bench.wait_for(
        "the gateway latch", lambda: bench.chair_state(chair).get("latched"), timeout, interval=0.02
    )

    def recovered() -> float | None:
        for when, spo2, _bpm, _pi, damaged in list(oxi.sent[n_sent:]):
            if when > e and not damaged and spo2 == 97:
                return when
        return None

    bench.wait_for("a recovered SpO2 line", recovered, timeout, interval=0.01)
    time.sleep(0.05)  # the node reads its UARTs every 10 ms
    _recover(bench, chair)
    return trip


def summarize(trips: list[Trip]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in Trip.__dataclass_fields__:
        if f == "rule":
            continue
        vals = [getattr(t, f) for t in trips if getattr(t, f) is not None]
        out[f] = benchlib.percentiles(vals)
    return out


def run_series(
    label: str, fn: Any, bench: Bench, chair: EmulatedChair, n: int, budget_s: float
) -> tuple[list[Trip], float]:
    trips: list[Trip] = []
    rng = random.Random(7)
    t0 = time.monotonic()
    for i in range(n):
        if time.monotonic() - t0 > budget_s:
            print("  %s: time budget (%.0f s) reached after %d trips" % (label, budget_s, i))
            break
        trips.append(fn(bench, chair, rng))
        if (i + 1) % 25 == 0:
            print("  %s: %d trips, last e2e %.0f ms" % (label, i + 1, trips[-1].e2e_ms))
    return trips, time.monotonic() - t0


def _series(trips: list[Trip], secs: float) -> dict[str, Any]:
    return {
        "trips": len(trips),
        "seconds": round(secs, 1),
        "hops_ms": summarize(trips),
        "raw": [asdict(t) for t in trips],
    }


@contextlib.contextmanager
def _bench(
    work: Path,
    workers: int,
    vnodes: list | None = None,
    nodelay: bool = False,
) -> Iterator[Bench]:
    """One real chair infusing, with ``vnodes`` registered before the gateway starts."""
    bench = Bench(
        work,
        1,
        workers=workers,
        chair_kwargs={"local_limits": LOCAL_LIMITS},
        mosquitto_extra=QUIET_BROKER + (NODELAY_BROKER if nodelay else ()),
    )
    if vnodes:
        benchlib.preregister(bench.data_dir, vnodes)
    try:
        bench.start()
        bench.wait_online()
        bench.start_infusion(bench.chairs[0])
        yield bench
    finally:
        bench.close()


def _print(label: str, s: dict[str, Any]) -> None:
    print("%s (n=%d): " % (label, s["e2e_ms"]["n"]))
    for hop, p in s.items():
        if p["n"]:
            print(
                "   %-26s p50 %7.1f  p95 %7.1f  p99 %7.1f  max %7.1f ms"
                % (hop, p["p50"], p["p95"], p["p99"], p["max"])
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trips", type=int, default=200, help="gateway-path trips, no load")
    ap.add_argument("--local-trips", type=int, default=50, help="node-local trips")
    ap.add_argument(
        "--loaded-trips",
        type=int,
        default=60,
        help="gateway-path trips with --background virtual chairs running",
    )
    ap.add_argument("--background", type=int, default=100, help="virtual chairs for the load")
    ap.add_argument(
        "--nodelay-trips",
        type=int,
        default=50,
        help="gateway-path trips with the broker's set_tcp_nodelay on",
    )
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument(
        "--budget",
        type=float,
        default=600.0,
        help="seconds for all series together; a series stops early when its "
        "share is used (the count run is recorded)",
    )
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep", default=None, help="work folder to keep (logs) instead of a temp")
    args = ap.parse_args(argv)
    result: dict[str, Any] = {"config": vars(args)}
    counts = {
        "gateway": args.trips,
        "local": args.local_trips,
        "loaded": args.loaded_trips if args.background else 0,
        "nodelay": args.nodelay_trips,
    }
    benches = sum(1 for k in ("loaded", "nodelay") if counts[k]) + (
        1 if counts["gateway"] or counts["local"] else 0
    )
    # About 12 s to bring up and tear down each bench (20 more with background chairs).
    avail = args.budget - 12 * benches - (20 if counts["loaded"] else 0)
    wanted = max(1, sum(counts.values()))
    share = {k: max(0.0, avail) * n / wanted for k, n in counts.items()}
    series: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ivgw-latency-") as tmp_dir:
        tmp = Path(args.keep or tmp_dir)
        if args.trips or args.local_trips:
            with _bench(tmp / "quiet", args.workers) as bench:
                chair = bench.chairs[0]
                if args.trips:
                    trips, secs = run_series(
                        "gateway path", gateway_trip, bench, chair, args.trips, share["gateway"]
                    )
                    series["gateway_path"] = _series(trips, secs)
                    _print("gateway path, no load", series["gateway_path"]["hops_ms"])
                if args.local_trips:
                    trips, secs = run_series(
                        "node-local", local_trip, bench, chair, args.local_trips, share["local"]
                    )
                    series["node_local"] = _series(trips, secs)
                    _print("node-local path", series["node_local"]["hops_ms"])
        if args.nodelay_trips:
            with _bench(tmp / "nodelay", args.workers, nodelay=True) as bench:
                trips, secs = run_series(
                    "gateway path, broker TCP_NODELAY",
                    gateway_trip,
                    bench,
                    bench.chairs[0],
                    args.nodelay_trips,
                    share["nodelay"],
                )
                series["gateway_path_nodelay"] = _series(trips, secs)
                _print(
                    "gateway path, broker set_tcp_nodelay",
                    series["gateway_path_nodelay"]["hops_ms"],
                )
        if args.loaded_trips and args.background:
            vnodes = benchlib.virtual_nodes(args.background)
            with _bench(tmp / "loaded", args.workers, vnodes) as bench:
                chair = bench.chairs[0]
                gens = [
                    LoadGen(
                        "loadgen-%d" % (i // 100),
                        bench.broker.host,
                        bench.broker.port,
                        vnodes[i : i + 100],
                    ).start()
                    for i in range(0, len(vnodes), 100)
                ]
                try:
                    time.sleep(3)  # births and first telemetry: the chairs must be online
                    started = start_sessions(bench.request, vnodes)
                    time.sleep(2)
                    since = time.time()
                    trips, secs = run_series(
                        "gateway path + %d virtual chairs" % args.background,
                        gateway_trip,
                        bench,
                        chair,
                        args.loaded_trips,
                        share["loaded"],
                    )
                    reports = [g.stop() for g in gens]
                finally:
                    for g in gens:
                        g.kill()
                s = _series(trips, secs)
                s.update(
                    background_chairs=args.background,
                    background_sessions=started,
                    background_permit_rtt_ms=benchlib.percentiles(
                        [x for r in reports for x in r.rtt_ms(since)]
                    ),
                    background=[
                        {k: v for k, v in asdict(r).items() if k != "permit_rtt"} for r in reports
                    ],
                )
                series["gateway_path_loaded"] = s
                _print("gateway path with %d virtual chairs" % args.background, s["hops_ms"])
    result["series"] = series
    summary: dict[str, Any] = {}
    for name, s in result["series"].items():
        h = s["hops_ms"]
        summary[name] = {
            "n": h["e2e_ms"]["n"],
            "e2e_p50": h["e2e_ms"]["p50"],
            "e2e_p99": h["e2e_ms"]["p99"],
            "chain_p50": h["chain_ms"]["p50"],
            "chain_p99": h["chain_ms"]["p99"],
        }
    result["summary"] = summary
    out = benchlib.write_result("latency", result, benchlib.out_dir_arg(args.out))
    print("results: %s" % out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
