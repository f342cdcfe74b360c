"""Scenario 2: vital-sign interlocks stop the pump through the real chain: the emulated
monitor emits the value, the node reads it over serial and signs it, the gateway's rule
trips, its signed stop reaches the node, and the STP frame reaches the emulated pump."""

from __future__ import annotations

import sqlite3
import time

from hil_tests.conftest import figure


def _running_bench(make_bench):
    bench = make_bench(1)
    bench.wait_online()
    chair = bench.chairs[0]
    bench.start_infusion(chair)
    return bench, chair


def _trips(bench):
    conn = sqlite3.connect(bench.config().db_path)
    try:
        return conn.execute("SELECT rule, cause, latency_ms FROM trips ORDER BY id").fetchall()
    finally:
        conn.close()


def _stopped(chair):
    return not chair.pump.running()


def test_desaturation_stops_the_pump(make_bench):
    bench, chair = _running_bench(make_bench)
    t0 = time.monotonic()
    chair.vitals.spo2 = 85  # below the example's critical 90 for 10 s
    bench.wait_for("the pump to stop", lambda: _stopped(chair), timeout=30)
    took = time.monotonic() - t0
    trips = _trips(bench)
    assert trips and trips[0][0] == "spo2.critical.low", trips
    figure("desaturation", "pump stopped %.1f s after SpO2 fell to 85 (rule: < 90 for 10 s); "
           "breach-to-stop-sent %.0f ms" % (took, trips[0][2]))
    chair.node.expect(r"STOP written (\d+) ms", 5)
    assert bench.chair_state(chair)["latched"]


def test_hypertension_stops_the_pump(make_bench):
    bench, chair = _running_bench(make_bench)
    chair.vitals.nibp = (195, 100, 132)
    t0 = time.monotonic()
    chair.monitor.cuff_cycle()  # NIBP is intermittent: the next cuff reading shows it
    bench.wait_for("the pump to stop", lambda: _stopped(chair), timeout=30)
    took = time.monotonic() - t0
    rules = [t[0] for t in _trips(bench)]
    assert "nibp_sys.critical.high" in rules, rules
    figure("hypertension", "pump stopped %.2f s after the cuff reading SBP 195; breach-to-stop-"
           "sent %.0f ms" % (took, _trips(bench)[0][2]))


def test_monitor_unplugged_withholds_permits_and_the_pump_stops(make_bench):
    bench, chair = _running_bench(make_bench)
    t0 = time.monotonic()
    chair.oximeter.unplug()
    chair.monitor.unplug()
    bench.wait_for("the pump to stop", lambda: _stopped(chair), timeout=40)
    took = time.monotonic() - t0
    st = bench.chair_state(chair)
    assert st["permitRemainingMs"] == 0
    figure("monitor unplugged", "pump stopped %.1f s after both monitors went silent "
           "(SpO2 stale after 10 s, permit 5 s)" % took)
    assert took < 10 + 5 + 5


def test_two_simultaneous_warnings_stop_the_pump(make_bench):
    bench, chair = _running_bench(make_bench)
    # Each alone is only a warning (SBP 160-180, DBP 100-110 in the example rules).
    chair.vitals.nibp = (170, 105, 127)
    chair.monitor.cuff_cycle()
    bench.wait_for("the pump to stop", lambda: _stopped(chair), timeout=30)
    causes = [t[1] for t in _trips(bench)]
    assert any("warning" in c for c in causes), causes
    figure("two warnings", causes[0])
