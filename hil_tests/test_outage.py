"""Scenario 4: the broker is stopped for 60 s mid-infusion, then restored.

Documented policy (docs/firmware.md "Outages"): without the gateway there is no permit, so
the node stops the pump within the permit lifetime and reports ``permit_lapsed``; the
infusion resumes only on an operator's ``ivgw start``. Every telemetry packet made during
the outage is buffered by the node and delivered, in order, after reconnection.
"""

from __future__ import annotations

import sqlite3
import time

from hil_tests.conftest import figure

OUTAGE_S = 60


def test_broker_outage_loses_no_telemetry_and_the_pump_stops_meanwhile(make_bench):
    bench = make_bench(1)
    bench.wait_online()
    chair = bench.chairs[0]
    bench.start_infusion(chair)
    time.sleep(2)
    t0 = time.monotonic()
    bench.broker.stop()
    bench.wait_for("the pump to stop during the outage", lambda: not chair.pump.running(),
                   timeout=15, interval=0.05)
    stopped_after = time.monotonic() - t0
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t0)))
    bench.broker.restart()
    chair.node.expect(r"connected to broker", 60)
    db = bench.config().db_path

    def telemetry_seqs() -> list[int]:
        conn = sqlite3.connect(db)
        try:
            return [r[0] for r in conn.execute(
                "SELECT seq FROM packets WHERE node_id = ? AND kind = 'telemetry' ORDER BY id",
                (chair.node_id,))]
        finally:
            conn.close()

    def caught_up() -> bool:
        st = bench.chair_state(chair)
        return st["online"] and len(telemetry_seqs()) >= OUTAGE_S + 5

    bench.wait_for("the backlog to arrive", caught_up, timeout=90)
    time.sleep(2)
    seqs = telemetry_seqs()
    counters = bench.status()["gateway"]["counters"]
    figure("broker outage", "%d s outage; pump stopped %.1f s after the broker went down; "
           "%d telemetry packets stored, gaps %d, duplicates %d"
           % (OUTAGE_S, stopped_after, len(seqs), counters.get("gap", 0),
              counters.get("duplicate", 0)))
    assert stopped_after <= 5 + 1.5
    assert seqs == sorted(seqs), "delivered out of order"
    assert counters.get("gap", 0) == 0
    assert bench.chair_state(chair)["pump"]["state"] != "infusing"
