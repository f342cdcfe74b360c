"""``make bench``: every benchmark in order, within a total time budget, then one table.

    python bench/run_all.py [--budget 880] [--out bench/results] [--only ingest,scale]

Each script runs as its own process with its share of the budget as a hard timeout (a
script that overruns is stopped and reported, the others still run); each writes
bench/results/<name>.json, from which the table is built. The sizes below are chosen to
fit about 14 minutes on a 2-core machine; every script takes options for other sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

# (name, script, arguments, share of the budget). Latency's own --budget is set below so it
# ends its series in time instead of being killed; scale writes its results after every step.
PLAN: list[tuple[str, str, list[str], float]] = [
    ("protocol", "protocol_bench.py", [], 0.01),
    ("ingest", "ingest.py", ["--nodes", "200", "--packets", "100", "--profile"], 0.05),
    ("footprint", "footprint.py", ["--speed", "240"], 0.11),
    ("scale", "scale.py", ["--steps", "400,800,1200,1400,1600,2000", "--window", "15"], 0.40),
    (
        "latency",
        "latency.py",
        [
            "--trips",
            "250",
            "--local-trips",
            "30",
            "--nodelay-trips",
            "50",
            "--loaded-trips",
            "50",
            "--background",
            "100",
        ],
        0.43,
    ),
]


def _get(d: Any, *path: Any) -> Any:
    for p in path:
        if not isinstance(d, (dict, list)):
            return None
        try:
            d = d[p]
        except (KeyError, IndexError, TypeError):
            return None
    return d


def _fmt(v: Any, unit: str = "", nd: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return ("%." + str(nd) + "f%s") % (v, unit)
    return "%s%s" % (v, unit)


def table(out: Path) -> list[tuple[str, str, str]]:
    """(benchmark, figure, value) rows from the results files that exist."""
    rows: list[tuple[str, str, str]] = []

    def load(name: str) -> dict[str, Any] | None:
        p = out / ("%s.json" % name)
        return json.loads(p.read_text()) if p.exists() else None

    if (d := load("protocol")) is not None:
        rows += [
            (
                "protocol",
                "encode+sign MicroPython / CPython",
                "%s / %s us (x%s)"
                % (
                    _fmt(_get(d, "micropython", "sign_us")),
                    _fmt(_get(d, "cpython_gateway_path", "sign_us"), nd=0),
                    _fmt(_get(d, "ratio_sign_mpy_over_cpython"), nd=0),
                ),
            )
        ]
    if (d := load("ingest")) is not None:
        s = d.get("summary", {})
        runs = {(r["mode"], r["workers"]): r for r in d.get("runs", []) if "profile_top" not in r}
        b = s.get("bounds", {})
        rows += [
            (
                "ingest",
                "bound: Ed25519 verify / full verify path, 1 core",
                "%s / %s per s" % (b.get("ed25519_verify_per_s"), b.get("verify_path_per_s")),
            )
        ]
        for (mode, w), r in sorted(runs.items()):
            rows.append(
                (
                    "ingest",
                    "%s, workers=%d" % (mode, w),
                    "%d packets/s, lost %d" % (r["ingest_per_s"], r["lost"]),
                )
            )
        rows += [
            (
                "ingest",
                "drain w1 / Ed25519 bound (target >= 0.8)",
                _fmt(s.get("drain_w1_over_ed25519"), nd=2),
            ),
            ("ingest", "drain w2 / w1 (target >= 1.7)", _fmt(s.get("drain_w2_over_w1"), nd=2)),
        ]
    if (d := load("latency")) is not None:
        for name, s in (d.get("series") or {}).items():
            h = s["hops_ms"]
            rows.append(
                (
                    "latency",
                    "%s e2e p50/p99 (n=%d)" % (name, h["e2e_ms"]["n"]),
                    "%s / %s ms" % (_fmt(h["e2e_ms"]["p50"], nd=0), _fmt(h["e2e_ms"]["p99"], nd=0)),
                )
            )
            if h["chain_ms"]["n"]:
                rows.append(
                    (
                        "latency",
                        "%s chain (no tick wait) p50/p99" % name,
                        "%s / %s ms"
                        % (_fmt(h["chain_ms"]["p50"], nd=0), _fmt(h["chain_ms"]["p99"], nd=0)),
                    )
                )
    if (d := load("footprint")) is not None:
        rows += [
            (
                "footprint",
                ".mpy size (protocol + firmware)",
                "%s bytes" % _get(d, "size", "mpy_bytes"),
            ),
            (
                "footprint",
                "smallest heap for a full session",
                "%s KiB" % d.get("min_session_heap_kib"),
            ),
            (
                "footprint",
                "peak live heap in a session",
                "%s bytes" % _get(d, "peak_session", "heapstat", "live_max_bytes"),
            ),
            (
                "footprint",
                "MicroPython telemetry sign / command verify",
                "%s / %s us"
                % (
                    _fmt(_get(d, "crypto_micropython", "telemetry_sign_us")),
                    _fmt(_get(d, "crypto_micropython", "command_verify_us")),
                ),
            ),
        ]
    if (d := load("scale")) is not None:
        s = d.get("summary", {})
        rows += [
            (
                "scale",
                "chairs sustained (zero loss, p99 < 250 ms)",
                str(s.get("max_chairs_passed")),
            ),
            ("scale", "first failing step", str(s.get("first_failure"))),
            ("scale", "gateway RSS per chair", "%s KiB" % s.get("gateway_rss_kib_per_chair")),
        ]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=880.0, help="seconds for everything")
    ap.add_argument("--out", default=str(BENCH / "results"))
    ap.add_argument("--only", default="", help="comma-separated names to run")
    args = ap.parse_args(argv)
    out = Path(args.out)
    only = {n for n in args.only.split(",") if n}
    t_all = time.monotonic()
    status: list[tuple[str, str, float]] = []
    plan = [p for p in PLAN if not only or p[0] in only]
    for n, (name, script, extra, share) in enumerate(plan):
        # Time a script leaves unused goes to the ones after it.
        left = args.budget - (time.monotonic() - t_all)
        limit = max(30.0, left * share / sum(p[3] for p in plan[n:]))
        cmd = [sys.executable, str(BENCH / script), *extra]
        if name != "protocol":
            cmd += ["--out", str(out)]
        elif out != BENCH / "results":
            cmd += ["--out", str(out)]
        if name == "latency":
            cmd += ["--budget", str(int(limit - 20))]  # it counts its benches itself
        print("== %s (limit %.0f s): %s" % (name, limit, " ".join(cmd[1:])), flush=True)
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=str(ROOT), start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
            state = "ok" if rc == 0 else "exit %d" % rc
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            state = "stopped at its time limit"
        status.append((name, state, time.monotonic() - t0))
    print("\n%-10s %-46s %s" % ("benchmark", "figure", "value"))
    print("-" * 100)
    for bench_name, figure, value in table(out):
        print("%-10s %-46s %s" % (bench_name, figure, value))
    print("-" * 100)
    for name, state, secs in status:
        print("%-10s %s in %.0f s" % (name, state, secs))
    print("total %.0f s; results in %s; see docs/performance.md" % (time.monotonic() - t_all, out))
    return 0 if all(s == "ok" for _, s, _ in status) else 1


if __name__ == "__main__":
    sys.exit(main())
