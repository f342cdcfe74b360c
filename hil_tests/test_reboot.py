"""Scenario 7: the node reboots mid-session. It comes back with a new boot counter, never
reuses a (boot, seq), and the gateway continues the same session; packets captured before
two reboots are stale when replayed."""

from __future__ import annotations

import sqlite3
import time

from hil_tests.conftest import figure
from hil_tests.test_attacks import Wire
from protocol import topics


def _packets(bench, node):
    conn = sqlite3.connect(bench.config().db_path)
    try:
        return conn.execute("SELECT boot, seq, session_id FROM packets WHERE node_id = ? "
                            "ORDER BY id", (node,)).fetchall()
    finally:
        conn.close()


def test_reboot_mid_session(make_bench):
    bench = make_bench(1)
    bench.wait_online()
    chair = bench.chairs[0]
    wire = Wire(bench.broker.host, bench.broker.port)
    try:
        sid = bench.start_infusion(chair)["session"]
        up = topics.uplink(chair.node_id, "telemetry")
        bench.wait_for("captured telemetry", lambda: wire.all(up))
        old = wire.last(up)
        for _ in range(2):
            chair.node.kill()
            chair.node.start()
            chair.node.expect(r"node chair-01 boot \d+", 15)
            chair.node.expect(r"connected to broker", 30)
            time.sleep(2)
        bench.wait_for("the pump stopped (SAF watchdog or permit)",
                       lambda: not chair.pump.running(), timeout=10)
        rows = _packets(bench, chair.node_id)
        boots = sorted({b for b, _, _ in rows})
        pairs = [(b, s) for b, s, _ in rows]
        assert boots == [1, 2, 3], boots
        assert len(pairs) == len(set(pairs)), "a (boot, seq) was reused"
        # The gateway continues the same session across reboots ...
        assert {s for b, _, s in rows if b == 3} == {sid}
        assert bench.chair_state(chair)["session"] == sid
        # ... and an operator can resume it.
        bench.request({"op": "start", "chair": chair.id, "operator": "bench"})
        bench.wait_for("the pump to run again", chair.pump.running, timeout=20)
        # A packet from boot 1, replayed now that boot 3 runs, is stale: rejected, audited.
        wire.inject(up, old)

        def stale() -> bool:
            conn = sqlite3.connect(bench.config().db_path)
            try:
                return conn.execute("SELECT COUNT(*) FROM audit WHERE kind = 'packet.rejected' "
                                    "AND data LIKE '%replay.stale%'").fetchone()[0] > 0
            finally:
                conn.close()

        bench.wait_for("the stale replay to be rejected", stale, timeout=10)
        figure("node reboot", "boots %s, %d packets, no (boot, seq) reused, session %d "
               "continued and resumed; boot-1 replay rejected as stale" % (boots, len(rows), sid))
    finally:
        wire.close()
