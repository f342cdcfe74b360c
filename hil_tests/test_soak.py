"""Soak: many chairs for a long time (``make soak``; excluded from ``make test`` by the
``soak`` marker). Every chair infuses at the real cadence and restarts when its session
ends; the run checks that no telemetry is lost, no process dies and the gateway's memory
does not grow without bound.

    IVGW_SOAK_S=3600 IVGW_SOAK_CHAIRS=6 make soak
"""

from __future__ import annotations

import os
import sqlite3
import time

import pytest

from hil_tests.conftest import figure

pytestmark = pytest.mark.soak


def _rss_kb(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_soak_many_chairs(make_bench):
    duration = float(os.environ.get("IVGW_SOAK_S", "600"))
    n = int(os.environ.get("IVGW_SOAK_CHAIRS", "4"))
    bench = make_bench(n, speed=20.0)
    bench.wait_online(60)
    for chair in bench.chairs:
        bench.start_infusion(chair)
    assert bench.gateway.proc is not None
    pid = bench.gateway.proc.pid
    rss0 = _rss_kb(pid)
    t_end = time.monotonic() + duration
    restarts = 0
    while time.monotonic() < t_end:
        time.sleep(5)
        for chair in bench.chairs:
            assert chair.node.alive(), "node %s died; see %s" % (chair.node_id, chair.node.log_path)
            if not chair.pump.running() and bench.chair_state(chair)["session"] is None:
                bench.start_infusion(chair)  # session complete: the next patient
                restarts += 1
        assert bench.gateway.alive(), "gateway died; see %s" % bench.describe_logs()
    rss1 = _rss_kb(pid)
    counters = bench.status()["gateway"]["counters"]
    conn = sqlite3.connect(bench.config().db_path)
    packets = conn.execute("SELECT COUNT(*) FROM packets").fetchone()[0]
    conn.close()
    figure("soak", "%d chairs for %.0f s: %d packets, %d sessions restarted, gaps %d, "
           "gateway RSS %d -> %d kB" % (n, duration, packets, restarts, counters.get("gap", 0),
                                        rss0, rss1))
    assert counters.get("gap", 0) == 0
    assert rss1 < rss0 * 2 + 50_000
