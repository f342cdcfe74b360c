"""Scenario 3: when something upstream dies, the infusion stops by itself.

* the gateway is SIGKILLed: no more permits, the node's permit lapses, the node stops the
  pump - within the permit lifetime (5 s) + 1 s;
* the node process is SIGKILLed: nothing talks to the pump, and the pump's own SAF
  communications watchdog (5 s, armed by the node) stops it.
"""

from __future__ import annotations

import time

from hil_tests.conftest import figure

PERMIT_S = 5.0


def test_gateway_killed_pump_stops_through_permit_lapse(make_bench):
    bench = make_bench(1, permit_lifetime_ms=int(PERMIT_S * 1000))
    bench.wait_online()
    chair = bench.chairs[0]
    bench.start_infusion(chair)
    time.sleep(2)  # a few renewals
    assert chair.pump.running()
    t0 = time.monotonic()
    bench.gateway.kill()
    bench.wait_for("the pump to stop", lambda: not chair.pump.running(), timeout=15,
                   interval=0.05)
    took = time.monotonic() - t0
    figure("gateway SIGKILL", "pump stopped %.2f s after the kill (permit lifetime %.0f s)"
           % (took, PERMIT_S))
    assert took <= PERMIT_S + 1.0
    chair.node.expect(r"EVENT permit_lapsed", 5)
    # Restarted, the gateway gets from its persistent broker session everything the node sent
    # while it was down; nothing it had acknowledged before the kill is missing.
    time.sleep(3)
    bench.gateway.start()
    conn_path = bench.config().db_path

    def seqs() -> list[int]:
        import sqlite3

        conn = sqlite3.connect(conn_path)
        try:
            return [r[0] for r in conn.execute(
                "SELECT seq FROM packets WHERE node_id = ? ORDER BY seq", (chair.node_id,))]
        finally:
            conn.close()

    def caught_up() -> bool:
        s = seqs()
        return bool(s) and s[-1] >= s[0] + 15

    bench.wait_for("the restarted gateway to catch up", caught_up, timeout=30)
    got = seqs()
    missing = sorted(set(range(got[0], got[-1] + 1)) - set(got))
    figure("gateway restart", "%d packets stored across the kill, missing seqs %s"
           % (len(got), missing))
    assert not missing
    assert bench.chair_state(chair)["latched"] is False  # a lapse is not an interlock


def test_node_killed_pump_stops_through_its_own_watchdog(make_bench):
    bench = make_bench(1)
    bench.wait_online()
    chair = bench.chairs[0]
    bench.start_infusion(chair)
    saf = [t for t, text in chair.pump.commands("SAF")]
    assert saf, "the node must arm the pump's SAF watchdog"
    t0 = time.monotonic()
    chair.node.kill()
    bench.wait_for("the pump to stop", lambda: not chair.pump.running(), timeout=15,
                   interval=0.05)
    took = time.monotonic() - t0
    alarms = [code for _, code in chair.pump.alarms_raised]
    figure("node SIGKILL", "pump stopped by its SAF watchdog %.2f s after the kill (SAF 5 s); "
           "alarms %s" % (took, alarms))
    assert "T" in alarms and took <= 5 + 1.5
