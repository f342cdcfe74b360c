"""Scale: the most chairs one gateway sustains on this machine at the real cadence (one
telemetry packet a second per chair, a permit back for each) with zero loss and p99
interlock latency under 250 ms.

    python bench/scale.py [--steps 100,200,400,800] [--window 30] [--workers 1]

Each step is a fresh bench: Mosquitto, ``ivgw run``, one real chair (the firmware in
MicroPython, infusing) and K virtual chairs (bench/loadgen.py: they sign and publish like
nodes and never answer), all registered before the gateway starts. Every virtual chair
gets the reference program and is started, so the gateway renews a permit on every packet.
During a ``--window`` of seconds the real chair is tripped repeatedly (bench/latency.py's
SBP trip), and every virtual chair measures its permit round trip (telemetry published ->
the permit that references it received), which crosses the same path as a stop command:
broker, verification, rules, signing, broker back.

A step passes when: every virtual packet was PUBACKed and stored (rows == published, no
sequence gap, nothing rate-limited), the load generators kept their schedule (p99 lateness
< 100 ms, else the step says so), and the p99 of both the real chair's chain latency (the
trip minus the node's wait for its 1 s telemetry tick, see latency.py) and the permit round
trip is below ``--p99-ms``. Steps stop at the first failure.

Memory per chair: the slope of the gateway process's RSS against K over the steps run.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib
from benchlib import CpuProbe
from latency import LOCAL_LIMITS, NODELAY_BROKER, QUIET_BROKER, Trip, gateway_trip, summarize
from loadgen import LoadGen, start_sessions

from testbed.bench import Bench  # noqa: E402


def _slope(xs: list[float], ys: list[float]) -> float | None:
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else None


def _gateway_targets(bench: Bench, gens: list[LoadGen]) -> dict[str, tuple[int, int | None]]:
    assert bench.gateway.proc is not None and bench.broker.proc is not None
    gpid = bench.gateway.proc.pid
    t: dict[str, tuple[int, int | None]] = {"gateway main thread (loop)": (gpid, gpid)}
    try:
        tids = sorted(int(p.name) for p in Path("/proc/%d/task" % gpid).iterdir())
    except OSError:
        tids = []
    for tid in tids:
        if tid != gpid:
            t["gateway thread %d" % tid] = (gpid, tid)
    for i, w in enumerate(benchlib.spawned_workers(gpid)):
        t["verifier worker %d" % (i + 1)] = (w, None)
    t["mosquitto"] = (bench.broker.proc.pid, None)
    node = bench.chairs[0].node
    if getattr(node, "proc", None) is not None:
        t["real node (MicroPython)"] = (node.proc.pid, None)
    for g in gens:
        if g.pid:
            t["load generator %s" % g.pid] = (g.pid, None)
    return t


def step(
    work: Path, k: int, window: float, workers: int, per_gen: int, p99_ms: float, nodelay: bool
) -> dict[str, Any]:
    vnodes = benchlib.virtual_nodes(k)
    bench = Bench(
        work,
        1,
        workers=workers,
        chair_kwargs={"local_limits": LOCAL_LIMITS},
        mosquitto_extra=QUIET_BROKER + (NODELAY_BROKER if nodelay else ()),
    )
    benchlib.preregister(bench.data_dir, vnodes)
    gens: list[LoadGen] = []
    res: dict[str, Any] = {"chairs_virtual": k, "chairs_real": 1}
    try:
        bench.start()
        bench.wait_online()
        chair = bench.chairs[0]
        assert bench.gateway.proc is not None
        gpid = bench.gateway.proc.pid
        res["gateway_rss_kib_idle"] = benchlib.rss_kib(gpid)
        bench.start_infusion(chair)
        gens = [
            LoadGen(
                "loadgen-%d" % (i // per_gen),
                bench.broker.host,
                bench.broker.port,
                vnodes[i : i + per_gen],
                nodelay=nodelay,
            ).start()
            for i in range(0, k, per_gen)
        ]
        time.sleep(3)
        t0 = time.monotonic()
        res["sessions_started"] = start_sessions(bench.request, vnodes, timeout=120)
        res["sessions_start_s"] = round(time.monotonic() - t0, 1)
        time.sleep(3)  # every chair through one permit cycle before the window
        probe = CpuProbe(_gateway_targets(bench, gens))
        probe.start()
        since = time.time()
        trips: list[Trip] = []
        rng = random.Random(k)
        t_end = time.monotonic() + window
        while time.monotonic() < t_end:
            trips.append(gateway_trip(bench, chair, rng))
        probe.stop()
        res["gateway_rss_kib"] = benchlib.rss_kib(gpid)
        res["worker_rss_kib"] = [benchlib.rss_kib(w) for w in benchlib.spawned_workers(gpid)]
        reports = [g.stop() for g in gens]
        gens = []
        published = sum(r.published for r in reports)
        acked = sum(r.acked for r in reports)
        rtt = [x for r in reports for x in r.rtt_ms(since)]
        db_path = bench.config().db_path

        def stored() -> int:
            conn = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True, timeout=10)
            try:
                return conn.execute(
                    "SELECT COUNT(*) FROM packets WHERE node_id LIKE 'v%'"
                ).fetchone()[0]
            finally:
                conn.close()

        try:
            rows = bench.wait_for(
                "the gateway to store every virtual packet",
                lambda: (lambda n: n if n >= published else 0)(stored()),
                30,
            )
        except Exception:  # noqa: BLE001 - loss is a result
            rows = stored()
        counters = bench.status()["gateway"]["counters"]
        lat = summarize(trips)
        res.update(
            {
                "window_s": round(probe.wall, 1),
                "virtual_published": published,
                "virtual_acked": acked,
                "virtual_stored": rows,
                "lost": published - rows,
                "gaps": counters.get("gap", 0),
                "rate_limited": counters.get("rejected.traffic.limited", 0),
                "rejected": {c: n for c, n in counters.items() if c.startswith("rejected.")},
                "generator_late_p99_ms": max(r.late_p99_ms for r in reports),
                "generator_commands": _sum_dicts([r.commands for r in reports]),
                "permit_rtt_ms": benchlib.percentiles(rtt),
                "trip_latency_ms": lat,
                "cores_busy": probe.cores(),
                "cores_busy_total": round(sum(probe.cores().values()), 2),
            }
        )
        chain99 = lat["chain_ms"]["p99"]
        rtt99 = res["permit_rtt_ms"]["p99"]
        failures = []
        if res["lost"] or res["gaps"] or res["rate_limited"] or acked < published:
            failures.append("loss")
        if res["generator_late_p99_ms"] > 100:
            failures.append("load generator behind schedule")
        if chain99 is None or chain99 >= p99_ms:
            failures.append("real chair chain p99 %s ms" % chain99)
        if rtt99 is None or rtt99 >= p99_ms:
            failures.append("permit round trip p99 %s ms" % rtt99)
        res["failures"] = failures
        res["pass"] = not failures
    except Exception as e:  # noqa: BLE001 - a step that cannot run is a failed step
        res["pass"] = False
        res["failures"] = ["error: %s" % str(e).splitlines()[0][:300]]
    finally:
        for g in gens:
            g.kill()
        bench.close()
    return res


def profile_at(work: Path, k: int, window: float, per_gen: int) -> dict[str, Any]:
    """K virtual chairs against an in-process gateway whose loop runs under cProfile: where
    the loop's time goes at this load (cProfile inflates call-heavy Python code; read the
    shares, not the absolute times)."""
    import logging

    from ingest import GatewayThread

    from gateway.config import load as load_config
    from gateway.service import load_gateway_key

    logging.getLogger("ivgw").setLevel(logging.ERROR)
    work.mkdir(parents=True, exist_ok=True)
    broker = benchlib.production_broker(work / "mosquitto")
    broker.start()
    vnodes = benchlib.virtual_nodes(k)
    gens: list[LoadGen] = []
    gwt = None
    try:
        cfg_path = benchlib.write_gateway_config(
            work / "gateway.toml", work / "gw", broker.host, broker.port
        )
        cfg = load_config(cfg_path)
        (work / "gw").mkdir(parents=True, exist_ok=True)
        load_gateway_key(cfg.key_path, create=True)
        benchlib.register(cfg.db_path, vnodes)
        gwt = GatewayThread(cfg_path, profile=True)
        gwt.start()
        gw = gwt.gw
        assert gw is not None
        benchlib.wait_until("the gateway to connect", gw.connected.is_set, 30)
        gens = [
            LoadGen(
                "prof-%d" % (i // per_gen), broker.host, broker.port, vnodes[i : i + per_gen]
            ).start()
            for i in range(0, k, per_gen)
        ]
        time.sleep(3)
        started = start_sessions(gw.request, vnodes, timeout=120)
        time.sleep(2)
        since = time.time()
        time.sleep(window)
        reports = [g.stop() for g in gens]
        gens = []
        rtt = [x for r in reports for x in r.rtt_ms(since)]
        gwt.close()
        return {
            "chairs": k,
            "sessions": started,
            "permit_rtt_ms": benchlib.percentiles(rtt),
            "loop_waiting_for_workers_s": round(gwt.verify_wait_s, 2),
            "profile": gwt.profile_text,
        }
    finally:
        for g in gens:
            g.kill()
        if gwt is not None:
            gwt.close()
        broker.close()


def _sum_dicts(ds: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in ds:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--steps",
        default="100,200,400,800",
        help="virtual chair counts, in order; stops at the first failing step",
    )
    ap.add_argument("--window", type=float, default=30.0, help="measured seconds per step")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--per-gen", type=int, default=200, help="virtual chairs per generator")
    ap.add_argument("--p99-ms", type=float, default=250.0)
    ap.add_argument(
        "--tcp-nodelay",
        action="store_true",
        help="broker set_tcp_nodelay and TCP_NODELAY on the virtual chairs",
    )
    ap.add_argument(
        "--profile-at",
        type=int,
        default=0,
        help="also profile an in-process gateway's loop at this many chairs",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",") if s]
    results: list[dict[str, Any]] = []
    prof: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="ivgw-scale-") as tmp:
        if args.profile_at:
            prof = profile_at(Path(tmp) / "profile", args.profile_at, args.window, args.per_gen)
            print(
                "cProfile of the loop at %d chairs (permit RTT p50 %s p99 %s ms under "
                "cProfile):\n%s"
                % (
                    args.profile_at,
                    prof["permit_rtt_ms"]["p50"],
                    prof["permit_rtt_ms"]["p99"],
                    prof["profile"][:7000],
                )
            )
        for k in steps:
            r = step(
                Path(tmp) / ("k%d" % k),
                k,
                args.window,
                args.workers,
                args.per_gen,
                args.p99_ms,
                args.tcp_nodelay,
            )
            results.append(r)
            if "trip_latency_ms" in r:
                print(
                    "%4d virtual + 1 real: %s  lost %d/%d, permit RTT p50 %s p99 %s ms, "
                    "real chain p99 %s ms (e2e p99 %s, %d trips), gateway RSS %d KiB, "
                    "cores %.2f"
                    % (
                        k,
                        "PASS" if r["pass"] else "FAIL",
                        r["lost"],
                        r["virtual_published"],
                        r["permit_rtt_ms"]["p50"],
                        r["permit_rtt_ms"]["p99"],
                        r["trip_latency_ms"]["chain_ms"]["p99"],
                        r["trip_latency_ms"]["e2e_ms"]["p99"],
                        r["trip_latency_ms"]["e2e_ms"]["n"],
                        r["gateway_rss_kib"],
                        r["cores_busy_total"],
                    )
                )
                print(
                    "      cores: %s" % ", ".join("%s %.2f" % kv for kv in r["cores_busy"].items())
                )
            _save(results, prof, args)
            if not r["pass"]:
                print("%4d: FAIL: %s" % (k, "; ".join(r["failures"])))
                break
    summary, out = _save(results, prof, args)
    print(
        "largest passing: %s chairs (virtual + 1 real); gateway RSS per chair %s KiB"
        % (summary["max_chairs_passed"], summary["gateway_rss_kib_per_chair"])
    )
    print("results: %s" % out)
    return 0


def _save(
    results: list[dict[str, Any]], prof: dict[str, Any] | None, args: Any
) -> tuple[dict[str, Any], Path]:
    """Write scale.json (after every step, so a run stopped by a time limit keeps its steps)."""
    passed = [r for r in results if r["pass"]]
    with_rss = [r for r in results if "gateway_rss_kib" in r]
    slope = _slope(
        [r["chairs_virtual"] for r in with_rss], [r["gateway_rss_kib"] for r in with_rss]
    )
    summary = {
        "max_chairs_passed": (passed[-1]["chairs_virtual"] + 1) if passed else 0,
        "first_failure": (results[-1]["chairs_virtual"], results[-1]["failures"])
        if results and not results[-1]["pass"]
        else None,
        "gateway_rss_kib_per_chair": round(slope, 1) if slope is not None else None,
    }
    out = benchlib.write_result(
        "scale",
        {
            "config": vars(args),
            "summary": summary,
            "steps": [_slim(r) for r in results],
            "profile": prof,
        },
        benchlib.out_dir_arg(args.out),
    )
    return summary, out


def _slim(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if k != "raw"}


if __name__ == "__main__":
    sys.exit(main())
