"""`ivgw demo` (what `make demo` runs), non-interactively: three chairs on the embedded
broker, one trips its interlock, the others complete, and every session has a report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hil_tests.conftest import figure

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_trips_one_chair_and_writes_reports(tmp_path: Path):
    out = tmp_path / "demo"
    # The whole scenario (4500 s) at 40x: about 2 minutes, with room for every chair's
    # 40-minute session to complete even when starts wait for the first cuff reading.
    r = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--no-live", "--speed", "40",
         "--out", str(out)],
        cwd=str(ROOT), capture_output=True, text=True, timeout=400,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin:" + str(Path(sys.executable).parent)},
    )
    text = r.stdout + r.stderr
    assert r.returncode == 0, text[-3000:]
    assert "spo2.critical.low" in text
    reports = sorted((out / "reports").glob("session-*.*"))
    assert len(reports) == 6, reports  # PNG + PDF for each of the three sessions
    assert all(p.stat().st_size > 10_000 for p in reports)
    assert (out / "gateway.log").exists() and (out / "chair-03.log").exists()
    figure("demo", "exit 0; %d report files; %s" % (
        len(reports), [ln for ln in text.splitlines() if "demo/c3" in ln][:1]))
