"""Every benchmark script runs end to end in a tiny configuration, so `make bench` cannot rot.

Not a performance test: nothing here is timed. The scripts run at once as separate
processes (each is mostly waiting on its bench), each writing its JSON into a temporary
folder; the test checks the exit codes and that the figures the summary table reads exist.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

TINY: dict[str, list[str]] = {
    "protocol": ["protocol_bench.py", "--n-mpy", "2", "--n-cpython", "20", "--no-heap"],
    "ingest": [
        "ingest.py",
        "--nodes",
        "4",
        "--packets",
        "5",
        "--workers",
        "1",
        "--modes",
        "drain",
        "--publishers",
        "1",
        "--bound-seconds",
        "0.05",
    ],
    "latency": [
        "latency.py",
        "--trips",
        "1",
        "--local-trips",
        "1",
        "--nodelay-trips",
        "0",
        "--loaded-trips",
        "0",
    ],
    "footprint": ["footprint.py", "--no-bisect", "--speed", "2400", "--crypto-n", "1"],
    "scale": ["scale.py", "--steps", "3", "--window", "2"],
}


@pytest.mark.mosquitto
def test_every_benchmark_runs_in_a_tiny_configuration(tmp_path: Path) -> None:
    procs = {}
    for name, (script, *args) in TINY.items():
        log = open(tmp_path / ("%s.log" % name), "wb")  # noqa: SIM115 - closed below
        procs[name] = (
            subprocess.Popen(
                [sys.executable, str(BENCH / script), *args, "--out", str(tmp_path)],
                cwd=str(ROOT),
                stdout=log,
                stderr=subprocess.STDOUT,
            ),
            log,
        )
    failed = []
    for name, (proc, log) in procs.items():
        try:
            rc = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        log.close()
        if rc != 0:
            failed.append(
                "%s exited %d:\n%s" % (name, rc, (tmp_path / ("%s.log" % name)).read_text()[-2000:])
            )
    assert not failed, "\n".join(failed)

    def result(name: str) -> dict:
        return json.loads((tmp_path / ("%s.json" % name)).read_text())

    assert result("protocol")["micropython"]["sign_us"] > 0
    ingest = result("ingest")
    assert ingest["summary"]["zero_loss"] and ingest["runs"][0]["rows_stored"] == 20
    latency = result("latency")["series"]
    assert latency["gateway_path"]["hops_ms"]["e2e_ms"]["n"] == 1
    assert latency["node_local"]["hops_ms"]["e2e_ms"]["n"] == 1
    footprint = result("footprint")
    assert footprint["size"]["mpy_bytes"] > 0 and footprint["peak_session"]["ok"]
    scale = result("scale")
    assert scale["steps"][0]["pass"], scale["steps"][0]["failures"]


def test_the_summary_table_reads_what_the_scripts_write(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import run_all
    finally:
        sys.path.remove(str(BENCH))
    (tmp_path / "scale.json").write_text(
        json.dumps(
            {
                "summary": {
                    "max_chairs_passed": 801,
                    "first_failure": [1200, ["loss"]],
                    "gateway_rss_kib_per_chair": 20.0,
                }
            }
        )
    )
    rows = run_all.table(tmp_path)
    assert ("scale", "chairs sustained (zero loss, p99 < 250 ms)", "801") in rows
    assert all(r[0] == "scale" for r in rows)
