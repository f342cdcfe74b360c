"""Protocol benchmark: a typical telemetry packet on both interpreters (``make bench-protocol``).

Prints and records (bench/results/protocol.json): encode+sign and decode+verify per packet in
MicroPython (the node's pure-Python code, compiled .mpy) and in CPython (the gateway path,
``cryptography``), their ratio, the packet size, and the heap one sign allocates in
MicroPython. Ratios are what to compare across machines; absolute times vary.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway import firmware_build  # noqa: E402
from gateway.cose_keys import EdDSASigner, EdDSAVerifier  # noqa: E402
from gateway.selfcheck import micropython_path  # noqa: E402
from protocol import cbor, cose, schema  # noqa: E402


def cpython(n: int, telemetry) -> dict:
    signer = EdDSASigner(bytes(range(32)))
    verifier = EdDSAVerifier(signer.public)
    t0 = time.perf_counter()
    for i in range(n):
        wire = cose.encode(cbor.dumps(telemetry(i)), signer, b"chair-01")
    sign = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for _ in range(n):
        m = cose.verify(wire, lambda kid: verifier)
        schema.validate(cbor.loads(m.payload))
    verify = (time.perf_counter() - t0) / n * 1e6
    return {"sign_us": sign, "verify_us": verify, "size": len(wire)}


def min_heap_kib(build: Path) -> int:
    """Smallest ``-X heapsize`` (KiB) in which importing the protocol and signing telemetry
    packets works: the practical peak heap of a sign on a board (GC churn included)."""

    def ok(kib: int) -> bool:
        r = subprocess.run(
            [micropython_path(), "-X", "heapsize=%dk" % kib,
             str(ROOT / "bench" / "mpy_protocol.py"), "1", "sign-only"],
            cwd=str(build), env=dict(os.environ, MICROPYPATH=".:.frozen"),
            capture_output=True, text=True, timeout=120,
        )
        return "SIGNED" in r.stdout

    lo, hi = 8, 256
    if not ok(hi):
        return -1
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Protocol benchmark (make bench-protocol).")
    ap.add_argument("--n-mpy", type=int, default=200, help="MicroPython repeats")
    ap.add_argument("--n-cpython", type=int, default=2000, help="CPython repeats")
    ap.add_argument("--no-heap", action="store_true", help="skip the heap bisection")
    ap.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = ap.parse_args(argv)
    build = firmware_build.build()
    n_mpy = args.n_mpy
    r = subprocess.run(
        [micropython_path(), "-X", "heapsize=256k", str(ROOT / "bench" / "mpy_protocol.py"),
         str(n_mpy)],
        cwd=str(build), env=dict(os.environ, MICROPYPATH=".:.frozen"),
        capture_output=True, text=True, timeout=300,
    )
    if r.returncode != 0:
        print(r.stdout + r.stderr, file=sys.stderr)
        return 1
    mpy = json.loads(r.stdout.strip().splitlines()[-1])
    mpy["min_heap_kib_to_sign"] = None if args.no_heap else min_heap_kib(build)
    sys.path.insert(0, str(ROOT / "bench"))
    ns: dict = {}
    src = (ROOT / "bench" / "mpy_protocol.py").read_text()
    saved, sys.argv = sys.argv, sys.argv[:1]  # the script reads its repeat count from argv
    try:
        exec(compile(src.split("wire = cose.encode")[0].replace("N = int", "N_ = int"),
                     "mpy_protocol", "exec"), ns)
    finally:
        sys.argv = saved
    cpy = cpython(args.n_cpython, ns["telemetry"])
    result = {
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "platform": platform.platform()},
        "packet_bytes": cpy["size"],
        "micropython": mpy,
        "cpython_gateway_path": cpy,
        "ratio_sign_mpy_over_cpython": mpy["sign_us"] / cpy["sign_us"],
        "ratio_verify_mpy_over_cpython": mpy["verify_us"] / cpy["verify_us"],
    }
    out = (Path(args.out) if args.out else ROOT / "bench" / "results") / "protocol.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("typical telemetry packet: %d bytes" % cpy["size"])
    print("encode+sign   MicroPython %8.0f us   CPython %6.0f us   ratio %5.1f"
          % (mpy["sign_us"], cpy["sign_us"], result["ratio_sign_mpy_over_cpython"]))
    print("decode+verify MicroPython %8.0f us   CPython %6.0f us   ratio %5.1f"
          % (mpy["verify_us"], cpy["verify_us"], result["ratio_verify_mpy_over_cpython"]))
    print("MicroPython: smallest heap that imports the protocol and signs packets: %s KiB "
          "(%d bytes resident after import and key setup)"
          % (mpy["min_heap_kib_to_sign"], mpy["resident_bytes"]))
    print("results: %s" % out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
