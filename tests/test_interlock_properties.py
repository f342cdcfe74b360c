"""Properties of the interlock engine over generated vitals, for the shipped example rules and
a test rule set: in-range fresh vitals never stop a pump, a critical value held for its
duration always does, and a restart never grants a permit the running engine would withhold.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.interlocks import (
    Band,
    Evaluation,
    InterlockEngine,
    ParameterRule,
    PumpState,
    Reading,
    RuleSet,
    Trip,
    load_ruleset,
    parse_ruleset,
)
from tests.test_interlock_engine import RULES

ROOT = Path(__file__).resolve().parent.parent
RULESETS = [load_ruleset(ROOT / "config" / "rules.example.yaml"), parse_ruleset(RULES, "test.yaml")]
CHAIR = "chair-07"
TENTH = Decimal("0.1")

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)


def inside(p: ParameterRule) -> tuple[Decimal, Decimal]:
    """The range of values that raise no warning (and no alarm) for p, limits included."""
    band: Band | None = p.warning or p.critical
    assert band is not None
    if band.low is not None:
        low = band.low
        high = band.high if band.high is not None else low + 100
    else:
        assert band.high is not None
        low, high = max(Decimal(0), band.high - 100), band.high
    return low, high


def mid(p: ParameterRule) -> Decimal:
    low, high = inside(p)
    return ((low + high) / 2).quantize(TENTH)


def value_in(low: Decimal, high: Decimal) -> st.SearchStrategy[Decimal]:
    return st.integers(int(low / TENTH), int(high / TENTH)).map(lambda n: n * TENTH)


def fastest(rules: RuleSet) -> float:
    """A reading interval that keeps every vital fresh and the node online."""
    return min(min(p.max_age_s for p in rules.parameters), rules.pump.node_offline_s) * 0.9


def feed(
    engine: InterlockEngine, t: float, values: dict[str, Decimal], trips: list[Trip]
) -> list[Evaluation]:
    rules = engine.rules
    readings = {rules.parameter(n).sources[0]: Reading(v, t) for n, v in values.items()}
    evs = [engine.node_seen(CHAIR, t), engine.update_vitals(CHAIR, readings, t)]
    for ev in evs:
        trips.extend(ev.tripped)
    return evs


@SETTINGS
@given(data=st.data(), rules=st.sampled_from(RULESETS), t0=st.floats(0, 1e7))
def test_fresh_values_inside_the_warning_ranges_keep_the_permit(
    data: st.DataObject, rules: RuleSet, t0: float
) -> None:
    engine = InterlockEngine(rules)
    trips: list[Trip] = []
    engine.update_pump(CHAIR, PumpState.INFUSING, [], t0)
    t = t0
    for _ in range(data.draw(st.integers(1, 40), label="steps")):
        values = {
            p.name: data.draw(value_in(*inside(p)), label=p.name)
            for p in rules.parameters
            if p.required_for_permit or data.draw(st.booleans(), label=f"send {p.name}")
        }
        ev = feed(engine, t, values, trips)[-1]
        assert ev.permit_ok, ev.reasons_not_ok
        dt = data.draw(st.floats(0.01, fastest(rules)), label="dt")
        ticked = engine.tick(t + dt / 2)
        ev = ticked[0] if ticked else engine.evaluate(CHAIR, t + dt / 2)
        assert ev.permit_ok, ev.reasons_not_ok
        t += dt
    assert not trips


@st.composite
def breaches(draw: st.DrawFn) -> tuple[RuleSet, ParameterRule, str, Decimal]:
    rules = draw(st.sampled_from(RULESETS))
    p = draw(st.sampled_from([p for p in rules.parameters if p.critical is not None]))
    assert p.critical is not None
    sides = [s for s, lim in (("low", p.critical.low), ("high", p.critical.high)) if lim]
    side = draw(st.sampled_from(sides))
    if side == "low":
        assert p.critical.low is not None
        value = draw(value_in(Decimal(0), p.critical.low - TENTH))
    else:
        assert p.critical.high is not None
        value = draw(value_in(p.critical.high + TENTH, p.critical.high + 200))
    return rules, p, side, value


@SETTINGS
@given(data=st.data(), breach=breaches(), t0=st.floats(1, 1e7))
def test_a_critical_value_held_for_its_duration_always_trips(
    data: st.DataObject, breach: tuple[RuleSet, ParameterRule, str, Decimal], t0: float
) -> None:
    rules, p, side, value = breach
    assert p.critical is not None
    engine = InterlockEngine(rules)
    trips: list[Trip] = []
    healthy = {q.name: mid(q) for q in rules.parameters}
    engine.update_pump(CHAIR, PumpState.INFUSING, [], t0 - 1)
    feed(engine, t0 - 1, healthy, trips)
    end = t0 + p.critical.for_s
    t = t0
    while True:
        feed(engine, t, {**healthy, p.name: value}, trips)
        dt = data.draw(st.floats(0.25, min(fastest(rules), p.max_age_s / 2)), label="dt")
        if t + dt >= end:
            break
        t += dt
    for ev in engine.tick(end):
        trips.extend(ev.tripped)
    rule = f"{p.name}.critical.{side}"
    mine = [tr for tr in trips if tr.rule == rule]
    assert len(mine) == 1, trips
    assert mine[0].breach_at == t0
    assert mine[0].condition_met_at == end
    assert mine[0].tripped_at <= end


@SETTINGS
@given(data=st.data(), t0=st.floats(0, 1e6))
def test_a_value_wobbling_around_a_limit_cannot_hide_a_breach(
    data: st.DataObject, t0: float
) -> None:
    """Out of range at t0, then any mix of in and out, never in range for clear_s in a row."""
    rules = RULESETS[0]
    p = rules.parameter("spo2")
    assert p.critical is not None and p.critical.low is not None
    clear_s = p.critical.clear_s
    assert clear_s > 2
    engine = InterlockEngine(rules)
    trips: list[Trip] = []
    healthy = {q.name: mid(q) for q in rules.parameters}
    engine.update_pump(CHAIR, PumpState.INFUSING, [], t0)
    t, last_out, out = t0, t0, True
    while t <= t0 + p.critical.for_s + clear_s and not trips:
        v = p.critical.low - 1 if out else p.critical.low + 1
        feed(engine, t, {**healthy, "spo2": v}, trips)
        if out:
            last_out = t
        t += data.draw(st.floats(0.05, 1.0), label="dt")
        out = t - last_out >= clear_s - 1.5 or data.draw(st.booleans(), label="out")
    assert [tr.rule for tr in trips] == ["spo2.critical.low"]
    assert trips[0].breach_at == t0
    assert trips[0].tripped_at >= t0 + p.critical.for_s


@st.composite
def histories(draw: st.DrawFn) -> tuple[RuleSet, list[tuple[str, float, object]]]:
    rules = draw(st.sampled_from(RULESETS))
    events: list[tuple[str, float, object]] = []
    t = draw(st.floats(0, 1e6))
    for _ in range(draw(st.integers(2, 40))):
        t += draw(st.floats(0, 8))
        kind = draw(
            st.sampled_from(["vitals", "vitals", "vitals", "pump", "seen", "tick", "ack", "stop"])
        )
        arg: object = None
        if kind == "vitals":
            arg = {
                p.name: draw(value_in(Decimal(0), Decimal(250)) | value_in(*inside(p)))
                for p in rules.parameters
                if draw(st.integers(0, 4))
            }
        elif kind == "pump":
            arg = (
                draw(st.sampled_from(list(PumpState))),
                draw(st.lists(st.sampled_from(["stalled", "reset", "low_battery"]), max_size=2)),
            )
        events.append((kind, t, arg))
    return rules, events


def apply(engine: InterlockEngine, kind: str, t: float, arg: object) -> Evaluation:
    if kind == "vitals":
        assert isinstance(arg, dict)
        readings = {engine.rules.parameter(n).sources[0]: Reading(v, t) for n, v in arg.items()}
        engine.node_seen(CHAIR, t)
        return engine.update_vitals(CHAIR, readings, t)
    if kind == "pump":
        assert isinstance(arg, tuple)
        return engine.update_pump(CHAIR, arg[0], arg[1], t)
    if kind == "seen":
        return engine.node_seen(CHAIR, t)
    if kind == "ack":
        return engine.acknowledge(CHAIR, "nurse", "checked", t).evaluation
    if kind == "stop":
        return engine.e_stop(CHAIR, "nurse", "test", t)
    return engine.evaluate(CHAIR, t)


@SETTINGS
@given(history=histories(), data=st.data())
def test_a_restart_never_grants_a_permit_the_running_engine_would_withhold(
    history: tuple[RuleSet, list[tuple[str, float, object]]], data: st.DataObject
) -> None:
    rules, events = history
    cut = data.draw(st.integers(1, len(events) - 1), label="restart after")
    running = InterlockEngine(rules)
    for kind, t, arg in events[:cut]:
        apply(running, kind, t, arg)
    restarted = InterlockEngine(rules)
    restarted.restore(CHAIR, json.loads(json.dumps(running.snapshot(CHAIR))))
    for kind, t, arg in events[cut:]:
        a = apply(running, kind, t, arg)
        b = apply(restarted, kind, t, arg)
        assert a.permit_ok or not b.permit_ok, (a.reasons_not_ok, b.reasons_not_ok)


def _outcome(ev: Evaluation) -> tuple:
    return (
        ev.permit_ok,
        ev.latched,
        sorted(c.rule for c in ev.alarms),
        sorted(c.rule for c in ev.warnings),
    )


@SETTINGS
@given(history=histories(), data=st.data())
def test_a_tick_that_skips_chairs_decides_exactly_like_evaluating_every_chair(
    history: tuple[RuleSet, list[tuple[str, float, object]]], data: st.DataObject
) -> None:
    """tick() skips a chair until a deadline of its state is due. Against a twin engine
    whose chair is evaluated at every tick, the trips (rule, breach and trip times) and,
    at every tick, the permit, latch, alarms and warnings must be the same."""
    rules, events = history
    step = data.draw(st.sampled_from([0.05, 0.1, 0.2]), label="tick interval")
    skipping, full = InterlockEngine(rules), InterlockEngine(rules)
    trips_s: list[Trip] = []
    trips_f: list[Trip] = []
    last: Evaluation | None = None
    t = events[0][1]
    for kind, at, arg in events:
        while t + step < at:  # the ticks between two events
            t += step
            ticked = skipping.tick(t)
            last = ticked[0] if ticked else last
            ref = full.evaluate(CHAIR, t)
            trips_s.extend(e for ev in ticked for e in ev.tripped)
            trips_f.extend(ref.tripped)
            assert last is not None and _outcome(last) == _outcome(ref), (t, kind)
        a, b = apply(skipping, kind, at, arg), apply(full, kind, at, arg)
        trips_s.extend(a.tripped)
        trips_f.extend(b.tripped)
        last = a
        t = max(t, at)

    def key(tr: Trip) -> tuple:
        return (tr.rule, tr.breach_at, tr.tripped_at)

    assert [key(x) for x in trips_s] == [key(x) for x in trips_f]
