"""Firmware footprint: compiled size, the smallest heap a full session runs in, the peak
live heap during one, and the node's per-packet and per-command crypto time.

    python bench/footprint.py [--speed 240] [--lo 32] [--hi 256] [--step 8]

* size: protocol/ + firmware/ compiled with mpy-cross (gateway/firmware_build.py), the
  bytes a board stores;
* smallest ``-X heapsize``: bisection over bench sessions. A trial passes when a node with
  that heap boots, connects, loads a program, infuses the whole programmed volume
  (accelerated ``--speed`` times: permits, watchdogs and serial timing stay real time),
  the gateway closes the session, and a stop command is executed, with the node process
  alive and no MemoryError on its console;
* peak live heap: the same session with a sampler task added around the real firmware
  (``gc.collect()`` then ``gc.mem_alloc()`` every second, printed as ``HEAPSTAT`` lines); no
  firmware change is needed for it;
* crypto: bench/mpy_footprint.py in the MicroPython unix port (64-bit; a 32-bit board is
  expected to be 50-200x slower: /work/shared/reference/platform.md);
* import costs: the heap each module the running node keeps costs once imported (in boot
  order, so a module's figure excludes what it imports), split into the qstrs it adds and
  the rest; and the boot-only modules firmware/boot.py unloads.

The unix port loads bytecode into the heap; a board with frozen modules runs it from flash,
so the heap figures here are an upper bound for such a board.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib

from gateway import firmware_build  # noqa: E402
from gateway.selfcheck import micropython_path  # noqa: E402
from testbed.bench import Bench  # noqa: E402
from testbed.chair import EmulatedChair  # noqa: E402
from testbed.dut import EmulatedNode  # noqa: E402

SESSION_MIN = 60  # minutes of infusion in a footprint session (accelerated by --speed)
QUIET_BROKER = ("log_type none", "log_type error", "log_type warning")
_PROBE = """
import gc
try:
    import asyncio
except ImportError:
    import uasyncio as asyncio
import firmware.runner as _r
_run = _r.run
async def _probe():
    while True:
        gc.collect()
        print("HEAPSTAT live=%d free=%d" % (gc.mem_alloc(), gc.mem_free()))
        await asyncio.sleep_ms(1000)
async def _wrapped(*a, **k):
    asyncio.create_task(_probe())
    await _run(*a, **k)
_r.run = _wrapped
import firmware.main as m
m.main(BUNDLE)
"""


class HeapProbeNode(EmulatedNode):
    """The real firmware with a heap sampler task beside it (bench only)."""

    def start(self) -> None:
        exe = shutil.which("micropython") or micropython_path()
        self.proc = subprocess.Popen(
            [
                exe,
                "-X",
                "heapsize=" + self.heap,
                "-c",
                _PROBE.replace("BUNDLE", repr(str(self.bundle))),
            ],
            cwd=str(self.build),
            env=dict(os.environ, MICROPYPATH=".:.frozen"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        self.console.feed_stream(self.proc.stdout)


# --- size ----------------------------------------------------------------------------------------


def sizes() -> dict[str, Any]:
    out = firmware_build.build()
    files = sorted(out.rglob("*.mpy"))
    per_pkg: dict[str, int] = {}
    for f in files:
        pkg = f.relative_to(out).parts[0]
        per_pkg[pkg] = per_pkg.get(pkg, 0) + f.stat().st_size
    src = sum(p.stat().st_size for p in firmware_build.sources())
    largest = sorted(files, key=lambda f: -f.stat().st_size)[:6]
    return {
        "mpy_bytes": firmware_build.total_size(out),
        "mpy_bytes_by_package": per_pkg,
        "mpy_files": len(files),
        "source_bytes": src,
        "largest": {str(f.relative_to(out)): f.stat().st_size for f in largest},
    }


# --- crypto in MicroPython -------------------------------------------------------------------


def mpy_costs(n: int) -> dict[str, Any]:
    r = subprocess.run(
        [
            micropython_path(),
            "-X",
            "heapsize=256k",
            str(benchlib.ROOT / "bench" / "mpy_footprint.py"),
            str(n),
        ],
        cwd=str(firmware_build.build()),
        env=dict(os.environ, MICROPYPATH=".:.frozen"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if r.returncode != 0:
        raise benchlib.BenchError("mpy_footprint.py failed: %s" % (r.stdout + r.stderr)[-800:])
    return json.loads(r.stdout.strip().splitlines()[-1])


# --- import costs ----------------------------------------------------------------------------

# What the running node keeps, in the order it imports it (firmware/boot.py), then what boot
# loads and unloads again.
RUNTIME_MODULES = (
    "protocol.errors protocol.cbor protocol.sha512 protocol.ed25519 "
    "protocol.cose protocol.envelope protocol.replay firmware.drivers._ticks "
    "firmware.mqtt.codec firmware.mqtt.client firmware.outbox "
    "firmware.permit firmware.sentlog firmware.commands firmware.log firmware.node "
    "firmware.drivers.ne1000 firmware.drivers.masimo firmware.drivers.datex "
    "firmware.hal.uart_pty firmware.hal.watchdog firmware.runner firmware.main"
).split()
BOOT_MODULES = (
    "protocol.topics protocol.mdc firmware.hal firmware.hal.storage firmware.hal.wifi "
    "firmware.bootcount firmware.config protocol._ed25519_setup firmware.boot"
).split()
_IMPORTS = """
import gc, micropython
import asyncio
def step(name):
    gc.collect()
    print("IMPORTED %s %d" % (name, gc.mem_alloc()))
    micropython.qstr_info()
step("-")
for name in NAMES:
    __import__(name)
    step(name)
"""
_STEP = re.compile(
    r"IMPORTED (\S+) (\d+)\nqstr pool: n_pool=\d+, n_qstr=(\d+), n_str_data_bytes=\d+, "
    r"n_total_bytes=(\d+)"
)


def import_costs(build_dir: Path | None = None) -> dict[str, Any]:
    """{module: {"bytes", "qstrs", "bytes_without_qstrs"}} for the runtime modules (in import
    order, asyncio already loaded) and the boot-only ones, plus totals. The qstr pool grows
    in doubling chunks, so "bytes" puts a whole new chunk on the module that needed it;
    "bytes_without_qstrs" (heap minus the pool's growth) is the steadier figure."""
    out = firmware_build.build(build_dir)
    # firmware.hal (boot-only) is imported as the parent of firmware.hal.uart_pty: import it
    # first so that its cost is not counted as the port's.
    walk = [n for n in RUNTIME_MODULES if n != "firmware.hal.uart_pty"]
    walk = walk[:-3] + ["firmware.hal", "firmware.hal.uart_pty"] + walk[-3:]
    walk += [n for n in BOOT_MODULES if n != "firmware.hal"]
    r = subprocess.run(
        [micropython_path(), "-X", "heapsize=1m", "-c", _IMPORTS.replace("NAMES", repr(walk))],
        cwd=str(out),
        env=dict(os.environ, MICROPYPATH=".:.frozen"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    steps = [
        (m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)))
        for m in _STEP.finditer(r.stdout)
    ]
    if len(steps) != 1 + len(RUNTIME_MODULES) + len(BOOT_MODULES):
        raise benchlib.BenchError("import walk failed: %s" % (r.stdout + r.stderr)[-800:])
    mods: dict[str, Any] = {}
    for prev, cur in zip(steps, steps[1:], strict=False):
        alloc, qstrs, pool = cur[1] - prev[1], cur[2] - prev[2], cur[3] - prev[3]
        mods[cur[0]] = {"bytes": alloc, "qstrs": qstrs, "bytes_without_qstrs": alloc - pool}

    def total(names: list[str], key: str) -> int:
        return sum(mods[n][key] for n in names)

    return {
        "runtime": {n: mods[n] for n in RUNTIME_MODULES},
        "boot_only": {n: mods[n] for n in BOOT_MODULES},
        "runtime_bytes": total(RUNTIME_MODULES, "bytes"),
        "runtime_qstrs": total(RUNTIME_MODULES, "qstrs"),
        "boot_only_bytes": total(BOOT_MODULES, "bytes"),
    }


# --- sessions --------------------------------------------------------------------------------


def _node_up(chair: EmulatedChair, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if any("connected to broker" in line for line in chair.node.lines):
            return
        if not chair.node.alive():
            raise benchlib.BenchError("node exited: %s" % " | ".join(chair.node.lines[-3:]))
        if time.monotonic() > deadline:
            raise benchlib.BenchError("node did not connect within %.0f s" % timeout)
        time.sleep(0.05)


def session(work: Path, heap: str, speed: float, probe: bool = False) -> dict[str, Any]:
    """One full accelerated session; returns {"ok", "detail", "seconds", "heapstat"}."""
    t0 = time.monotonic()
    bench = Bench(work, 1, speed=speed, chair_kwargs={"heap": heap}, mosquitto_extra=QUIET_BROKER)
    res: dict[str, Any] = {"heap": heap, "ok": False, "detail": ""}
    try:
        bench.start()
        chair = bench.chairs[0]
        if probe:
            _node_up(chair, 30)
            chair.node.stop()
            chair.node = HeapProbeNode(
                chair.dir, bench.workdir, chair.node_id + "-probe", heap=heap
            )
            chair.node.start()
        _node_up(chair, 30)
        bench.wait_online(15)
        # A 60-minute session (the longest the ketamine protocol runs): 52.5 mL at 52.5 mL/h.
        bench.start_infusion(chair, duration=str(SESSION_MIN))
        volume_ul = chair.pump.target_ul  # what the gateway programmed into the pump
        infusion_s = SESSION_MIN * 60 / speed
        deadline = time.monotonic() + infusion_s + 30
        while not (not chair.pump.running() and chair.pump.true_infused_ul() > volume_ul * 0.98):
            if not chair.node.alive():
                raise benchlib.BenchError(
                    "node died mid-session: %s" % " | ".join(chair.node.lines[-3:])
                )
            if time.monotonic() > deadline:
                raise benchlib.BenchError("the infusion did not complete")
            time.sleep(0.1)
        bench.wait_for(
            "the gateway to close the session",
            lambda: bench.chair_state(chair)["session"] is None,
            20,
        )
        bench.request({"op": "stop", "chair": chair.id, "operator": "bench", "reason": "footprint"})
        chair.node.expect(r"STOP written", 10)
        bad = [line for line in chair.node.lines if "MemoryError" in line or "Traceback" in line]
        if bad or not chair.node.alive():
            raise benchlib.BenchError("node trouble: %s" % " | ".join(bad[:3]))
        res["ok"] = True
        if probe:
            live = [
                int(m.group(1))
                for m in (re.search(r"HEAPSTAT live=(\d+)", line) for line in chair.node.lines)
                if m
            ]
            free = [
                int(m.group(1))
                for m in (
                    re.search(r"HEAPSTAT live=\d+ free=(\d+)", line) for line in chair.node.lines
                )
                if m
            ]
            res["heapstat"] = {
                "samples": len(live),
                "live_max_bytes": max(live, default=0),
                "live_median_bytes": sorted(live)[len(live) // 2] if live else 0,
                "free_min_bytes": min(free, default=0),
            }
    except Exception as e:  # noqa: BLE001 - a failed trial is a result, not an error
        res["detail"] = str(e).splitlines()[0][:300]
    finally:
        try:
            bench.close()
        except Exception:  # noqa: BLE001
            pass
    res["seconds"] = round(time.monotonic() - t0, 1)
    return res


def min_heap(
    work: Path,
    speed: float,
    lo: int,
    hi: int,
    step: int,
    trials: list[dict[str, Any]],
    hi_passed: bool = False,
) -> int | None:
    """Smallest heap (KiB, a multiple of ``step``) in [lo, hi] in which a session passes;
    ``hi_passed``: a session at ``hi`` already passed (the sampler run), do not repeat it."""

    def ok(kib: int) -> bool:
        r = session(work / ("heap-%dk" % kib), "%dk" % kib, speed)
        trials.append(r)
        print(
            "  heap %4d KiB: %s (%.0f s) %s"
            % (kib, "ok" if r["ok"] else "FAIL", r["seconds"], r["detail"][:100])
        )
        return bool(r["ok"])

    if not hi_passed and not ok(hi):
        return None
    a, b = lo // step, hi // step
    while a < b:
        mid = (a + b) // 2
        if ok(mid * step):
            b = mid
        else:
            a = mid + 1
    return b * step


def _print_imports(imp: dict[str, Any]) -> None:
    print(
        "import costs (heap once imported, 64-bit unix port): runtime modules %d bytes, %d "
        "qstrs; boot-only modules %d bytes (unloaded after boot)"
        % (imp["runtime_bytes"], imp["runtime_qstrs"], imp["boot_only_bytes"])
    )
    for name, c in sorted(imp["runtime"].items(), key=lambda kv: -kv[1]["bytes_without_qstrs"]):
        print(
            "  %-26s %6d bytes (%5d without its %3d qstrs)"
            % (name, c["bytes"], c["bytes_without_qstrs"], c["qstrs"])
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--speed",
        type=float,
        default=240.0,
        help="pump acceleration: the 40-min reference session takes 2400/speed s",
    )
    ap.add_argument("--lo", type=int, default=32, help="KiB, lower end of the bisection")
    ap.add_argument("--hi", type=int, default=256, help="KiB, must pass")
    ap.add_argument("--step", type=int, default=8, help="KiB resolution")
    ap.add_argument("--crypto-n", type=int, default=50, help="MicroPython sign/verify repeats")
    ap.add_argument("--no-bisect", action="store_true", help="size, crypto and peak heap only")
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--imports-only",
        action="store_true",
        help="print the heap each runtime module takes once imported, then stop (no session)",
    )
    ap.add_argument(
        "--build-dir", default=None, help="compile the firmware here (default build/mpy)"
    )
    args = ap.parse_args(argv)
    if args.imports_only:
        imp = import_costs(Path(args.build_dir) if args.build_dir else None)
        _print_imports(imp)
        return 0
    result: dict[str, Any] = {"config": vars(args)}
    result["size"] = sizes()
    print(
        "compiled firmware: %d bytes of .mpy in %d files (%s); source %d bytes"
        % (
            result["size"]["mpy_bytes"],
            result["size"]["mpy_files"],
            ", ".join("%s %d" % kv for kv in result["size"]["mpy_bytes_by_package"].items()),
            result["size"]["source_bytes"],
        )
    )
    result["imports"] = imp = import_costs()
    _print_imports(imp)
    result["crypto_micropython"] = mpy_costs(args.crypto_n)
    c = result["crypto_micropython"]
    print(
        "MicroPython unix port: telemetry encode+sign %.0f us, command verify+decode %.0f us; "
        "protocol + keys resident %d bytes"
        % (c["telemetry_sign_us"], c["command_verify_us"], c["protocol_resident_bytes"])
    )
    with tempfile.TemporaryDirectory(prefix="ivgw-footprint-") as tmp:
        probe = session(Path(tmp) / "probe", "%dk" % args.hi, args.speed, probe=True)
        result["peak_session"] = probe
        benchlib.write_result("footprint", result, benchlib.out_dir_arg(args.out))  # partial
        if probe["ok"]:
            h = probe["heapstat"]
            print(
                "session at %d KiB with heap sampler: live heap max %d bytes, median %d "
                "(%d samples), least free %d bytes"
                % (
                    args.hi,
                    h["live_max_bytes"],
                    h["live_median_bytes"],
                    h["samples"],
                    h["free_min_bytes"],
                )
            )
        else:
            print("session with heap sampler failed: %s" % probe["detail"])
        if not args.no_bisect:
            trials: list[dict[str, Any]] = []
            lo = args.lo
            if probe.get("ok"):
                # A heap below the live peak cannot work: start the bisection there.
                lo = max(lo, probe["heapstat"]["live_max_bytes"] // 1024 // args.step * args.step)
            # The sampler session at --hi is a full session with a little more on the heap:
            # if it passed, a session at --hi without the sampler passes too.
            found = min_heap(
                Path(tmp), args.speed, lo, args.hi, args.step, trials, bool(probe.get("ok"))
            )
            result["min_session_heap_kib"] = found
            result["bisection"] = trials
            print(
                "smallest heap for a full session: %s KiB"
                % (found if found is not None else "none <= %d" % args.hi)
            )
    out = benchlib.write_result("footprint", result, benchlib.out_dir_arg(args.out))
    print("results: %s" % out)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    sys.exit(main())
