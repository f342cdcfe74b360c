"""The interlock engine: every rule type, its timing at the boundary, latching and restore.

Time is passed in explicitly, so every boundary is tested exactly (at ``for_s`` and just
before), with no sleeping.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from decimal import Decimal

import pytest

from gateway.interlocks import (
    Evaluation,
    InterlockEngine,
    InterlockError,
    PumpState,
    Reading,
    RuleSet,
    Trip,
    parse_ruleset,
)
from protocol import mdc

RULES = """\
format: 1
protocol: test-proto
version: "t1"
approved_by: "Dr Test"
parameters:
  spo2:
    sources: [150456]
    required_for_permit: true
    max_age_s: 10
    warning: {low: 92, for_s: 5}
    critical: {low: 90, for_s: 10}
  hr:
    sources: [147842, 149530]
    required_for_permit: true
    max_age_s: 10
    warning: {low: 50, high: 110, for_s: 0}
    critical: {high: 150, for_s: 0}
  nibp_sys:
    required_for_permit: true
    max_age_s: 900
    warning: {high: 160, for_s: 0}
    critical: {high: 180, for_s: 0}
  rr:
    required_for_permit: false
    max_age_s: 30
    critical: {low: 8, for_s: 0}
combine:
  warnings_to_alarm: 2
  missing_counts_as_warning: true
pump:
  trip_on_alarms: [stalled]
  node_offline_s: 5
"""

CODE = {"spo2": mdc.SPO2, "hr": mdc.HR_ECG, "pr": mdc.PULSE_OXIM, "sys": mdc.NIBP_SYS}
GOOD = {"spo2": 97, "hr": 72, "sys": 120}
CHAIR = "chair-01"


def rules(text: str = RULES) -> RuleSet:
    return parse_ruleset(text, "test.yaml")


def readings(t: float, **values: float | str) -> dict[int, Reading]:
    return {CODE[k]: Reading(Decimal(str(v)), t) for k, v in values.items()}


class Chair:
    """Drives one chair the way the gateway does: every call's trips are collected."""

    def __init__(self, engine: InterlockEngine | None = None, chair: str = CHAIR) -> None:
        self.engine = engine or InterlockEngine(rules())
        self.chair = chair
        self.trips: list[Trip] = []

    def _keep(self, ev: Evaluation) -> Evaluation:
        self.trips.extend(ev.tripped)
        return ev

    def vitals(self, t: float, **values: float | str) -> Evaluation:
        """A telemetry packet measured at t: node heard, the given vitals (others good).

        Returns the vitals evaluation, with the node call's trips (if any) in ``tripped`` too.
        """
        seen = self.engine.node_seen(self.chair, t)
        merged: dict[str, float | str] = {**GOOD, **values}
        merged = {k: v for k, v in merged.items() if v != "absent"}
        ev = self.engine.update_vitals(self.chair, readings(t, **merged), t)
        return self._keep(dataclasses.replace(ev, tripped=(*seen.tripped, *ev.tripped)))

    def seen(self, t: float) -> Evaluation:
        return self._keep(self.engine.node_seen(self.chair, t))

    def pump(self, t: float, state: PumpState, alarms: list[str] | None = None) -> Evaluation:
        return self._keep(self.engine.update_pump(self.chair, state, alarms or [], t))

    def tick(self, t: float) -> Evaluation:
        """The tick's evaluation of this chair; when the tick skipped it (nothing due), an
        explicit evaluation that must then show that nothing was due: no new trip."""
        evs = [e for e in self.engine.tick(t) if e.chair == self.chair]
        if evs:
            return self._keep(evs[0])
        ev = self.engine.evaluate(self.chair, t)
        assert not ev.tripped, "tick skipped a chair that trips at %s: %r" % (t, ev.tripped)
        return ev

    def rules_tripped(self) -> list[str]:
        return [t.rule for t in self.trips]


def running_chair(t: float = 0.0) -> Chair:
    c = Chair()
    c.pump(t, PumpState.INFUSING)
    c.vitals(t)
    return c


# -- healthy ----------------------------------------------------------------------------------


def test_healthy_chair_may_have_a_permit() -> None:
    c = running_chair()
    ev = c.vitals(1)
    assert ev.permit_ok and not ev.reasons_not_ok
    assert not ev.warnings and not ev.alarms and not ev.latched and not c.trips


# -- critical limits and their duration -------------------------------------------------------


def test_critical_duration_exactly_at_for_s_and_not_before() -> None:
    c = running_chair(99)
    for t in range(100, 110):
        ev = c.vitals(t, spo2=89)
        assert not c.trips, t
    ev = c.tick(109.999)
    assert not c.trips and not ev.latched
    ev = c.tick(110)
    assert [t.rule for t in ev.tripped] == ["spo2.critical.low"]
    trip = ev.tripped[0]
    assert trip.cause == "spo2 low 89 < 90 for 10 s"
    assert (trip.breach_at, trip.condition_met_at, trip.tripped_at) == (100, 110, 110)
    assert ev.latched and not ev.permit_ok
    assert [a.rule for a in ev.alarms] == ["spo2.critical.low"]


def test_duration_completes_on_tick_without_new_data() -> None:
    c = running_chair(99)
    c.vitals(100, spo2=88)
    c.seen(105)
    c.seen(109)
    assert not c.tick(109.5).tripped
    ev = c.tick(110)
    assert [t.rule for t in ev.tripped] == ["spo2.critical.low"]


def test_late_detection_keeps_the_met_time() -> None:
    c = running_chair(99)
    c.vitals(100, spo2=88)
    c.vitals(104, spo2=88)
    c.seen(109)
    ev = c.tick(110.2)
    (trip,) = ev.tripped
    assert (trip.breach_at, trip.condition_met_at, trip.tripped_at) == (100, 110, 110.2)


def test_immediate_critical_trips_in_the_vitals_call() -> None:
    c = running_chair(49)
    ev = c.vitals(50, sys=185)
    (trip,) = ev.tripped
    assert trip.rule == "nibp_sys.critical.high"
    assert trip.cause == "nibp_sys high 185 > 180"
    assert (trip.value, trip.limit, trip.mdc_code) == (185, 180, mdc.NIBP_SYS)
    assert trip.breach_at == trip.condition_met_at == trip.tripped_at == 50


@pytest.mark.parametrize(
    "name,at_critical,at_warning",
    [("spo2", 90, 92), ("hr", 150, 110), ("sys", 180, 160)],
)
def test_a_limit_itself_is_acceptable(name: str, at_critical: int, at_warning: int) -> None:
    c = running_chair()
    for t in range(1, 40):
        ev = c.vitals(t, **{name: at_warning})
    assert not ev.warnings and not c.trips
    for t in range(40, 80):
        ev = c.vitals(t, **{name: at_critical})
    assert not ev.alarms and not c.trips and len(ev.warnings) == 1


def test_a_trip_is_reported_once() -> None:
    c = running_chair()
    for t in range(1, 40):
        c.vitals(t, spo2=85)
        c.tick(t + 0.5)
    assert c.rules_tripped() == ["spo2.critical.low"]


# -- hysteresis -------------------------------------------------------------------------------


def test_oscillation_around_the_limit_does_not_restart_the_timer() -> None:
    c = running_chair(99)
    for t in range(100, 112):
        c.vitals(t, spo2=89 if t % 2 == 0 else 91)
    assert c.rules_tripped() == ["spo2.critical.low"]
    (trip,) = c.trips
    assert trip.breach_at == 100 and trip.tripped_at == 110


def test_oscillation_met_while_back_in_range_trips_when_it_goes_out_again() -> None:
    c = running_chair(99)
    for t in range(100, 110):
        c.vitals(t, spo2=89 if t < 109 else 91)  # out 100-108, back in from 109
    assert not c.tick(110).tripped  # in range when the duration completes
    ev = c.vitals(111, spo2=89)  # out again before clear_s (default 3 s) passed
    (trip,) = ev.tripped
    assert (trip.breach_at, trip.condition_met_at) == (100, 111)


def test_each_return_to_range_needs_its_own_clear_s() -> None:
    text = RULES.replace(
        "critical: {low: 90, for_s: 10}", "critical: {low: 90, for_s: 20, clear_s: 5}"
    )
    c = Chair(InterlockEngine(rules(text)))
    c.pump(99, PumpState.INFUSING)
    pattern = [89] * 3 + [95] * 4 + [89] * 2 + [95] * 4 + [89] * 20  # in-range stretches of 4 s
    for i, v in enumerate(pattern):
        c.vitals(100 + i, spo2=v)
    crit = [t for t in c.trips if t.rule == "spo2.critical.low"]
    assert [(t.breach_at, t.tripped_at) for t in crit] == [(100, 120)]


def test_value_back_in_range_for_clear_s_restarts_the_timer() -> None:
    c = running_chair(99)
    for t in range(100, 105):
        c.vitals(t, spo2=89)
    for t in range(105, 116):
        c.vitals(t, spo2=95)  # in range for 10 s (> clear_s): breach forgotten
    for t in range(116, 126):
        c.vitals(t, spo2=89)
    assert not c.trips
    ev = c.vitals(126, spo2=89)
    assert [t.breach_at for t in ev.tripped] == [116]


def test_a_data_gap_does_not_restart_the_timer() -> None:
    c = running_chair(99)
    c.vitals(100, spo2=89)
    c.vitals(106, spo2="absent")  # SpO2 reading at 100 stays fresh until 110
    c.vitals(112, spo2="absent")  # stale: no evidence either way
    ev = c.vitals(113, spo2=89)
    (trip,) = ev.tripped
    assert trip.rule == "spo2.critical.low" and trip.breach_at == 100


# -- staleness, missing, sources --------------------------------------------------------------


def test_continuous_vital_goes_stale_after_max_age() -> None:
    c = running_chair(99)
    c.vitals(100)
    c.seen(109)
    assert c.tick(110).permit_ok  # exactly max_age_s old is still fresh
    ev = c.tick(110.01)
    assert not ev.permit_ok
    kinds = {(w.parameter, w.kind) for w in ev.warnings}
    assert {("spo2", "stale"), ("hr", "stale")} <= kinds
    assert ("nibp_sys", "stale") not in kinds  # intermittent: 900 s
    assert any(r.startswith("spo2 stale: last reading 10 s old") for r in ev.reasons_not_ok)


def test_intermittent_vital_stays_fresh_for_its_own_max_age() -> None:
    c = running_chair()
    c.vitals(0)
    for t in range(10, 901, 10):
        ev = c.vitals(t, sys="absent")
    assert ev.permit_ok  # the cuff reading at 0 is 900 s old: still fresh
    ev = c.vitals(901, sys="absent")
    assert not ev.permit_ok
    assert [w.kind for w in ev.warnings if w.parameter == "nibp_sys"] == ["stale"]


def test_fallback_source_keeps_hr_fresh_and_primary_is_preferred() -> None:
    c = running_chair()  # ECG heart rate 72 at 0
    for t in range(1, 12):
        ev = c.vitals(t, hr="absent", pr=72)
    assert ev.permit_ok  # ECG stale since 10; the pulse rate keeps hr fresh
    ev = c.vitals(12, hr=72, pr=160)  # both fresh: ECG wins, pulse-ox 160 is ignored
    for t in range(13, 23):
        ev = c.vitals(t, hr="absent", pr=160)
        assert ev.permit_ok and not c.trips, t
    ev = c.vitals(23, hr="absent", pr=160)  # ECG stale: the pulse rate now counts
    assert [(t.rule, t.mdc_code) for t in ev.tripped] == [("hr.critical.high", mdc.PULSE_OXIM)]


def test_missing_required_vital_blocks_the_permit_from_the_start() -> None:
    c = Chair()
    ev = c.vitals(0, sys="absent")
    assert not ev.permit_ok
    assert "nibp_sys missing: no reading in 0 s" in ev.reasons_not_ok
    assert not ev.warnings  # within max_age_s of the chair's start: not yet a warning
    ev = c.vitals(901, sys="absent")
    assert [(w.parameter, w.kind) for w in ev.warnings] == [("nibp_sys", "missing")]
    assert not c.trips  # one warning only


def test_missing_vitals_trip_only_while_infusing() -> None:
    idle = Chair()
    idle.pump(0, PumpState.STOPPED)
    idle.engine.node_seen(CHAIR, 0)
    for t in range(1, 30):
        idle.engine.node_seen(CHAIR, t)
        idle.tick(t)
    assert not idle.trips  # nothing to stop: no latch on an idle chair

    c = Chair()
    c.pump(0, PumpState.INFUSING)
    c.seen(0)
    c.seen(10)
    assert not c.tick(10).tripped  # spo2 and hr: grace until max_age_s (10 s) has passed
    c.seen(10.5)
    (trip,) = c.trips
    assert trip.rule == "combine.warnings_to_alarm"
    assert trip.cause == "two warnings: spo2 missing + hr missing"
    assert trip.condition_met_at == 10


def test_stale_vitals_while_infusing_trip_as_two_warnings() -> None:
    c = running_chair(99)
    c.vitals(100)
    c.seen(111)
    (trip,) = c.trips
    assert trip.cause == "two warnings: spo2 stale + hr stale"
    assert trip.breach_at == 110


def test_optional_vital_may_be_absent() -> None:
    c = running_chair()
    ev = c.vitals(5)
    assert ev.permit_ok and all(w.parameter != "rr" for w in ev.warnings)
    ev = c._keep(c.engine.update_vitals(CHAIR, {mdc.RESP_RATE: Reading(6, 6)}, 6))
    assert [t.rule for t in ev.tripped] == ["rr.critical.low"]  # checked when present


# -- combination of warnings ------------------------------------------------------------------


def test_one_warning_is_not_an_alarm() -> None:
    c = running_chair()
    ev = c.vitals(1, hr=115)
    assert [(w.parameter, w.kind) for w in ev.warnings] == [("hr", "high")]
    assert ev.permit_ok and not c.trips


def test_two_warnings_trip() -> None:
    c = running_chair()
    c.vitals(1, hr=115)
    ev = c.vitals(2, hr=115, sys=165)
    (trip,) = ev.tripped
    assert trip.rule == "combine.warnings_to_alarm"
    assert trip.cause == "two warnings: hr high + nibp_sys high"
    assert (trip.breach_at, trip.condition_met_at, trip.tripped_at) == (2, 2, 2)
    assert ev.latched and not ev.permit_ok


def test_a_warning_counts_only_after_its_own_duration() -> None:
    c = running_chair(99)
    c.vitals(100, hr=115, spo2=91)  # hr warning at once; spo2 warning needs 5 s
    for t in range(101, 105):
        c.vitals(t, hr=115, spo2=91)
    assert not c.trips
    ev = c.vitals(105, hr=115, spo2=91)
    assert [t.cause for t in ev.tripped] == ["two warnings: hr high + spo2 low"]


# -- pump and node ----------------------------------------------------------------------------


def test_listed_pump_alarm_trips_once_and_others_warn() -> None:
    c = running_chair()
    ev = c.pump(1, PumpState.ALARM, ["low_battery"])
    assert not ev.tripped and [w.kind for w in ev.warnings] == ["pump_alarm"]
    ev = c.pump(2, PumpState.ALARM, ["Stalled", "low_battery"])
    (trip,) = ev.tripped
    assert (trip.rule, trip.cause, trip.breach_at) == ("pump.alarm", "pump alarm stalled", 2)
    assert not c.pump(3, PumpState.ALARM, ["stalled"]).tripped
    assert c.rules_tripped() == ["pump.alarm"]


def test_pump_alarm_state_without_a_code_trips_under_any() -> None:
    text = RULES.replace("trip_on_alarms: [stalled]", "trip_on_alarms: any")
    c = Chair(InterlockEngine(rules(text)))
    c.vitals(0)
    ev = c.pump(1, PumpState.ALARM)
    assert [t.cause for t in ev.tripped] == ["pump alarm unspecified"]


def test_node_offline_trips_by_tick_while_infusing() -> None:
    c = running_chair()
    c.vitals(100)
    assert not c.tick(104.999).tripped
    ev = c.tick(105)
    (trip,) = ev.tripped
    assert trip.rule == "node.offline" and trip.cause == "node offline 5 s"
    assert (trip.breach_at, trip.condition_met_at, trip.tripped_at) == (100, 105, 105)
    assert not c.tick(106).tripped  # reported once per silence


def test_silent_idle_node_blocks_the_permit_without_a_trip() -> None:
    c = Chair()
    c.pump(0, PumpState.STOPPED)
    c.vitals(0)
    ev = c.tick(6)
    assert not ev.tripped and not ev.latched and not ev.permit_ok
    assert "node offline 6 s" in ev.reasons_not_ok
    assert [w.kind for w in ev.warnings if w.parameter == "node"] == ["offline"]


def test_unknown_pump_state_after_infusing_still_counts_as_infusing() -> None:
    c = running_chair()
    c.pump(1, PumpState.UNKNOWN)  # the node lost the pump's replies
    c.vitals(1)
    assert [t.rule for t in c.tick(6).tripped] == ["node.offline"]


# -- e-stop, latch, acknowledgement -----------------------------------------------------------


def test_e_stop_trips_at_once_and_ack_clears_it() -> None:
    c = running_chair()
    ev = c.engine.e_stop(CHAIR, "nurse Ana", "patient asked to stop", 3)
    (trip,) = ev.tripped
    assert trip.cause == "manual e-stop by nurse Ana: patient asked to stop"
    assert trip.rule == "manual.e_stop" and trip.tripped_at == 3
    assert ev.latched and not ev.permit_ok
    ack = c.engine.acknowledge(CHAIR, "nurse Ana", "patient settled", 4)
    assert ack.accepted and ack.cleared == (trip,)
    assert not ack.evaluation.latched


def test_external_trip_latches_under_its_own_rule() -> None:
    c = running_chair()
    ev = c.engine.trip(CHAIR, "dose.mismatch", "pump rate 12 mL/h, programmed 10 mL/h", 2)
    (trip,) = ev.tripped
    assert (trip.rule, trip.cause, trip.tripped_at) == (
        "dose.mismatch",
        "pump rate 12 mL/h, programmed 10 mL/h",
        2,
    )
    assert ev.latched and not ev.permit_ok
    assert c.engine.acknowledge(CHAIR, "nurse", "reprogrammed", 3).accepted


def test_latch_holds_after_recovery_and_ack_needs_the_condition_gone() -> None:
    c = running_chair(99)
    for t in range(100, 111):
        c.vitals(t, spo2=88)
    assert c.rules_tripped() == ["spo2.critical.low"]

    ack = c.engine.acknowledge(CHAIR, "nurse", "checked", 110.5)
    assert not ack.accepted and ack.cleared == ()
    assert ack.message.startswith("refused: chair chair-01 still has an active alarm: spo2 low")
    assert [a.rule for a in ack.still_active] == ["spo2.critical.low"]

    for t in range(111, 114):
        ev = c.vitals(t, spo2=96)
        assert ev.latched and not ev.permit_ok  # recovered, but still latched
    ack = c.engine.acknowledge(CHAIR, "nurse", "checked", 113)
    assert not ack.accepted  # back in range 2 s of the 3 s needed (default clear_s)
    assert "back in range 2 s of the 3 s needed" in ack.message

    c.vitals(114, spo2=96)
    ack = c.engine.acknowledge(CHAIR, "nurse", "checked", 114)
    assert ack.accepted and [t.rule for t in ack.cleared] == ["spo2.critical.low"]
    assert ack.evaluation.permit_ok
    assert c.vitals(115).permit_ok


def test_ack_refused_without_fresh_data_to_show_recovery() -> None:
    c = running_chair()
    c.vitals(0, sys=190)
    ack = c.engine.acknowledge(CHAIR, "nurse", "probe fixed", 2000)
    assert not ack.accepted and "no fresh reading to show a recovery" in ack.message


def test_ack_without_latch_is_refused_and_needs_an_operator() -> None:
    c = running_chair()
    ack = c.engine.acknowledge(CHAIR, "nurse", "nothing", 1)
    assert not ack.accepted and "no latched interlock" in ack.message
    with pytest.raises(InterlockError):
        c.engine.acknowledge(CHAIR, "  ", "reason", 1)
    with pytest.raises(InterlockError):
        c.engine.e_stop(CHAIR, "nurse", "", 1)


def test_pump_alarm_ack_refused_while_the_pump_still_reports_it() -> None:
    c = running_chair()
    c.pump(1, PumpState.ALARM, ["stalled"])
    assert not c.engine.acknowledge(CHAIR, "nurse", "cleared line", 2).accepted
    c.pump(3, PumpState.STOPPED)
    assert c.engine.acknowledge(CHAIR, "nurse", "cleared line", 3).accepted


def test_new_trips_while_latched_are_still_reported() -> None:
    c = running_chair()
    c.vitals(1, sys=190)
    c.pump(2, PumpState.ALARM, ["stalled"])
    assert c.rules_tripped() == ["nibp_sys.critical.high", "pump.alarm"]
    ev = c.tick(2)
    assert len(ev.latched_by) == 2


# -- snapshot and restore ---------------------------------------------------------------------


def roundtrip(snap: Mapping[str, object]) -> dict[str, object]:
    out: dict[str, object] = json.loads(json.dumps(snap))
    return out


def test_restored_latch_withholds_the_permit_and_needs_recovery_evidence() -> None:
    c = running_chair(99)
    for t in range(100, 111):
        c.vitals(t, spo2=88)
    snap = roundtrip(c.engine.snapshot(CHAIR))

    r = Chair(InterlockEngine(rules()))
    r.engine.restore(CHAIR, snap)
    ev = r.vitals(200)  # everything fresh and in range right after the restart
    assert ev.latched and not ev.permit_ok and not ev.tripped
    (before,) = c.trips
    (after,) = ev.latched_by
    assert after == dataclasses.replace(before, value="88", limit=Decimal(90))
    assert not r.engine.acknowledge(CHAIR, "nurse", "checked", 200).accepted
    r.vitals(210)
    assert r.engine.acknowledge(CHAIR, "nurse", "checked", 210).accepted


def test_restore_without_snapshot_waits_for_fresh_vitals_and_the_node() -> None:
    e = InterlockEngine(rules())
    e.restore(CHAIR, None)
    ev = e.tick(1000)[0]
    assert not ev.permit_ok and not ev.latched and not ev.tripped
    assert "node not heard yet" in ev.reasons_not_ok
    c = Chair(e)
    ev = c.vitals(1001, sys="absent")
    assert not ev.permit_ok and "nibp_sys missing: no reading in 1 s" in ev.reasons_not_ok
    assert c.vitals(1002).permit_ok


def test_restored_readings_do_not_back_a_permit() -> None:
    c = running_chair(99)
    c.vitals(100)
    snap = roundtrip(c.engine.snapshot(CHAIR))
    assert c.tick(101).permit_ok
    e = InterlockEngine(rules())
    e.restore(CHAIR, snap)
    e.node_seen(CHAIR, 101)
    ev = e.update_vitals(CHAIR, readings(101, spo2=97, hr=72), 101)  # no new cuff reading
    assert not ev.permit_ok and not ev.warnings
    assert ev.reasons_not_ok == ("nibp_sys: no reading since the interlock state was restored",)
    assert e.update_vitals(CHAIR, readings(102, sys=120), 102).permit_ok


def test_restored_reading_is_evidence_for_a_breach() -> None:
    c = running_chair(99)
    for t in range(100, 106):
        c.vitals(t, spo2=88)
    snap = roundtrip(c.engine.snapshot(CHAIR))
    r = Chair(InterlockEngine(rules()))
    r.engine.restore(CHAIR, snap)
    r.seen(109)
    assert not r.trips
    r.tick(110)  # the restored 88 at 105 is still fresh: 10 s below 90 since 100
    assert [t.rule for t in r.trips] == ["spo2.critical.low"]
    assert r.trips[0].breach_at == 100


def test_restart_after_a_long_outage_trips_an_infusing_chair() -> None:
    c = running_chair(99)
    c.vitals(100)
    snap = roundtrip(c.engine.snapshot(CHAIR))
    e = InterlockEngine(rules())
    e.restore(CHAIR, snap)
    ev = e.tick(500)[0]  # same clock: the node was last heard 400 s ago
    assert "node.offline" in [t.rule for t in ev.tripped]
    assert "node offline 400 s" in ev.reasons_not_ok


def test_restore_on_a_restarted_monotonic_clock_gives_the_node_its_full_time() -> None:
    c = running_chair(1_000_000)
    c.vitals(1_000_001)
    snap = roundtrip(c.engine.snapshot(CHAIR))
    e = InterlockEngine(rules())
    e.restore(CHAIR, snap)
    e.tick(5)  # restored times are clamped to the first call after the restore
    assert not e.tick(9.9)[0].tripped
    assert "node.offline" in [t.rule for t in e.tick(10)[0].tripped]


def test_restored_breach_from_a_clock_ahead_is_clamped_not_postponed() -> None:
    c = running_chair(1_000_000)
    c.vitals(1_000_001, spo2=89)  # a breach in progress when the gateway stops
    snap = roundtrip(c.engine.snapshot(CHAIR))
    r = Chair(InterlockEngine(rules()))
    r.engine.restore(CHAIR, snap)
    r.pump(5, PumpState.INFUSING)  # the monotonic clock restarted at boot
    for t in range(5, 15):
        r.vitals(t, spo2=89)
    assert not r.trips
    ev = r.vitals(15, spo2=89)
    assert [t.rule for t in ev.tripped] == ["spo2.critical.low"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: "not a mapping",
        lambda s: {**s, "format": 99},
        lambda s: {**s, "chair": "chair-02"},
        lambda s: {**s, "latch": "x"},
        lambda s: {**s, "pump": {**s["pump"], "state": 9}},
        lambda s: {**s, "timers": {"spo2.critical.low": {"breach_since": "soon"}}},
    ],
)
def test_unreadable_snapshot_latches_the_chair(damage: object) -> None:
    c = running_chair()
    snap = roundtrip(c.engine.snapshot(CHAIR))
    e = InterlockEngine(rules())
    e.restore(CHAIR, damage(snap))  # type: ignore[operator]
    c2 = Chair(e)
    ev = c2.vitals(10)
    assert [t.rule for t in ev.tripped] == ["restore.invalid"]
    assert ev.latched and not ev.permit_ok
    assert "could not be restored" in ev.tripped[0].cause
    assert e.snapshot(CHAIR)["latch"]  # and it stays latched across another restart
    assert e.acknowledge(CHAIR, "nurse", "patient checked", 11).accepted


def test_pending_restore_trip_survives_another_snapshot() -> None:
    e = InterlockEngine(rules())
    e.restore(CHAIR, {"format": 1})
    e2 = InterlockEngine(rules())
    e2.restore(CHAIR, roundtrip(e.snapshot(CHAIR)))
    ev = e2.tick(1)[0]
    assert [t.rule for t in ev.tripped] == ["restore.invalid"] and ev.latched


# -- inputs and time --------------------------------------------------------------------------


def test_time_never_runs_backwards_for_a_chair() -> None:
    c = running_chair(99)
    c.vitals(100, spo2=89)
    c.tick(105)
    ev = c.tick(50)  # a caller's clock stepped back: held at 105
    assert ev.at == 105


def test_old_readings_do_not_roll_back_and_future_ones_are_clamped() -> None:
    c = running_chair(99)
    c.vitals(100, sys=120)
    ev = c._keep(c.engine.update_vitals(CHAIR, readings(50, sys=190), 101))
    assert not ev.tripped  # a late packet's older cuff reading is ignored
    ev = c._keep(c.engine.update_vitals(CHAIR, readings(10_000, spo2=97, hr=72), 102))
    c.seen(112)
    assert c.tick(112).permit_ok
    assert not c.tick(112.5).permit_ok  # measured "at 10000" counts as measured at 102


def test_bad_inputs_are_refused() -> None:
    e = InterlockEngine(rules())
    with pytest.raises(InterlockError):
        e.update_vitals(CHAIR, {mdc.SPO2: Reading(float("nan"), 1)}, 1)
    with pytest.raises(InterlockError):
        e.update_vitals(CHAIR, {mdc.SPO2: Reading(Decimal("Infinity"), 1)}, 1)
    with pytest.raises(InterlockError):
        e.tick(float("inf"))
    with pytest.raises(InterlockError):
        e.node_seen("", 1)
    with pytest.raises(InterlockError):
        e.update_pump(CHAIR, 7, [], 1)


def test_chairs_are_independent() -> None:
    e = InterlockEngine(rules())
    a, b = Chair(e, "a"), Chair(e, "b")
    a.pump(0, PumpState.INFUSING)
    b.pump(0, PumpState.INFUSING)
    a.vitals(0, sys=190)
    b.vitals(0)
    evs = {ev.chair: ev for ev in e.tick(1)}
    assert set(evs) == {"a", "b"} and e.chairs() == ("a", "b")
    assert evs["a"].latched and not evs["b"].latched and evs["b"].permit_ok


def test_a_bad_reading_leaves_no_half_update() -> None:
    e = InterlockEngine(rules())
    e.update_vitals(CHAIR, readings(0, spo2=97), 0)
    bad = {mdc.SPO2: Reading(Decimal(80), 1), mdc.HR_ECG: Reading(float("nan"), 1)}
    with pytest.raises(InterlockError):
        e.update_vitals(CHAIR, bad, 1)
    assert e.snapshot(CHAIR)["readings"] == {str(mdc.SPO2): ["97", 0.0]}
