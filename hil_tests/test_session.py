"""Scenario 1: a normal 60-minute ketamine session (the longest the protocol runs),
accelerated 60x (the pump's plunger moves 60x faster; permits, watchdogs and serial timing
run in real time), in the node heap the firmware is held to."""

from __future__ import annotations

import sqlite3
import time

from hil_tests.conftest import figure

# The heap the node is held to (issue 3: a full 60-minute session in 128 KiB). On the 64-bit
# unix port bytecode is loaded into the heap; 120 KiB fails (bench/footprint.py bisection),
# so this is one 8 KiB step above the smallest failing size: docs/firmware.md, "Footprint".
SESSION_HEAP = "128k"


def test_normal_session_delivers_the_programmed_dose_and_loses_no_packet(make_bench):
    bench = make_bench(1, speed=60.0, chair_kwargs={"heap": SESSION_HEAP})
    bench.wait_online()
    chair = bench.chairs[0]
    t0 = time.monotonic()
    res = bench.start_infusion(chair, duration="60")
    sid = res["session"]
    # 52.5 mL at 52.5 mL/h is 60 min of infusion: 60 s at 60x.
    bench.wait_for("the pump to finish the programmed volume",
                   lambda: not chair.pump.running() and chair.pump.true_infused_ul() > 51500,
                   timeout=120)
    elapsed = time.monotonic() - t0
    delivered = chair.pump.true_infused_ul()
    error_pct = abs(delivered - 52500) / 52500 * 100
    figure("dose delivered", "%.1f uL of 52500 uL programmed (error %.3f %%), %.1f s real time"
           % (delivered, error_pct, elapsed))
    assert error_pct <= 1.0
    st = bench.wait_for("the gateway to close the session",
                        lambda: bench.chair_state(chair)["session"] is None, timeout=20)
    assert st
    # Every telemetry packet the node made reached the gateway: no sequence gaps.
    time.sleep(1.5)
    conn = sqlite3.connect(bench.config().db_path)
    seqs = [r[0] for r in conn.execute(
        "SELECT seq FROM packets WHERE node_id = ? AND kind = 'telemetry' ORDER BY seq",
        (chair.node_id,))]
    status = bench.status()["gateway"]
    gaps = status["counters"].get("gap", 0)
    figure("telemetry packets", "%d received, first seq %d, last %d, gaps %d"
           % (len(seqs), seqs[0], seqs[-1], gaps))
    assert gaps == 0
    assert len(seqs) == len(set(seqs)) and len(seqs) > 50
    # The session record is complete: program, permits, start, acks, completion.
    sess = conn.execute("SELECT state, started_at, ended_at, rate_ul_h, vtbi_ul FROM sessions "
                        "WHERE id = ?", (sid,)).fetchone()
    assert sess[0] == "completed" and sess[1] and sess[2] and sess[3:] == (52500, 52500)
    cmds = conn.execute("SELECT kind, ack_result FROM commands WHERE session_id = ?",
                        (sid,)).fetchall()
    kinds = [k for k, _ in cmds]
    assert kinds[0] == "program" and "start" in kinds and kinds.count("permit") > 30
    unacked = [k for k, a in cmds if a is None]
    assert len(unacked) <= 2  # at most the last permit(s) in flight at completion
    assert all(a == 0 for _, a in cmds if a is not None)
    assert not conn.execute("SELECT COUNT(*) FROM trips").fetchone()[0]
    conn.close()
