"""The illustrative patient model (testbed/physiology.py) and scenario files (testbed/scenario.py).

The model is not a clinical model; these tests pin the behaviour the bench relies on:
deterministic noise, artefacts too short to trip a timed rule, the average blood-pressure
response of a standard infusion, events that change their channel and end, and adapters
that speak the emulators' units. Shipped scenarios are checked against the example rules
in config/rules.example.yaml, so a scenario cannot quietly stop testing what it claims.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from emulators import DatexS5, ManualClock, Radical7
from testbed.physiology import (
    EVENT_KINDS,
    PRESETS,
    Baseline,
    Event,
    PatientModel,
    PhysiologyError,
    Vitals,
    monitor_source,
    oximeter_source,
)
from testbed.scenario import (
    ChairScenario,
    Scenario,
    ScenarioClock,
    ScenarioError,
    load,
    loads,
)

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "scenarios").glob("*.toml"))
ADULT = PRESETS["adult"]
RATE, END = 0.75, 2400.0  # the standard session: 0.5 mg/kg over 40 min


def standard_dose(t: float, start: float = 0.0) -> tuple[float, float]:
    if t < start:
        return 0.0, 0.0
    if t < start + END:
        return RATE, RATE * (t - start) / 3600.0
    return 0.0, RATE * END / 3600.0


def sample(model: PatientModel, t: float, dose=standard_dose) -> Vitals:
    return model.vitals(t, *dose(t))


def longest_run(flags: list[bool]) -> int:
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


# --- determinism ---------------------------------------------------------------------------
def test_same_seed_and_time_give_the_same_vitals_in_any_order():
    times = [i * 7.3 for i in range(700)]  # 0 .. ~85 min: before, during and after
    ordered = PatientModel(ADULT, 42)
    expected = {t: sample(ordered, t) for t in times}
    shuffled = list(times)
    random.Random(1).shuffle(shuffled)
    other = PatientModel(ADULT, 42)
    sample(other, 1200.0)  # one sample of the running infusion fixes its history
    for t in shuffled:
        assert sample(other, t) == expected[t]
    for t in times[::50]:  # and asking again changes nothing
        assert sample(other, t) == expected[t]


def test_noise_is_a_function_of_seed_and_time_only():
    a, b = PatientModel(ADULT, 5), PatientModel(ADULT, 5)
    for t in (3.0, 1.0, 2.0, 1000.25, 0.0):
        assert a.vitals(t, 0, 0) == b.vitals(t, 0, 0)
    c = PatientModel(ADULT, 6)
    assert [a.vitals(t, 0, 0) for t in range(0, 600, 30)] != [
        c.vitals(t, 0, 0) for t in range(0, 600, 30)
    ]


# --- baseline behaviour ----------------------------------------------------------------------
@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    preset=st.sampled_from(sorted(PRESETS)),
    offset=st.floats(min_value=0.0, max_value=0.95),
)
def test_without_events_vitals_stay_physiological_and_artefacts_stay_short(seed, preset, offset):
    b = PRESETS[preset]
    model = PatientModel(b, seed)
    vs = [sample(model, k + offset) for k in range(0, 4200)]  # 1 Hz, like the oximeter
    assert all(v.spo2 is not None and v.hr is not None and v.pulse is not None for v in vs)
    # an artefact may dip SpO2 below 90 % but never for more than 3 consecutive seconds
    assert longest_run([round(v.spo2) < 90 for v in vs]) <= 3  # type: ignore[arg-type]
    assert longest_run([v.artifact for v in vs]) <= 3
    clean = [v for v in vs if not v.artifact]
    assert all(b.spo2 - 3 <= v.spo2 <= 100 for v in clean)  # type: ignore[operator]
    assert all(b.hr - 15 <= v.hr <= b.hr + 30 for v in clean)  # type: ignore[operator]
    assert all(b.sys - 20 <= v.sys <= b.sys + 60 for v in vs)
    assert all(b.dia - 15 <= v.dia <= b.dia + 40 and v.dia < v.sys for v in vs)
    assert all(b.rr - 5 <= v.rr <= b.rr + 5 and v.etco2_mmhg > 25 for v in vs)
    assert not any(v.events for v in vs)


def test_standard_infusion_raises_bp_by_about_16_11_at_the_end_and_it_settles():
    ends, afters, mids = [], [], []
    for seed in range(60):
        model = PatientModel(ADULT, seed)
        mids.append(sample(model, 1200.0))
        ends.append(sample(model, END))
        afters.append(sample(model, END + 1800.0))
    rise_sys = statistics.mean(v.sys for v in ends) - ADULT.sys
    rise_dia = statistics.mean(v.dia for v in ends) - ADULT.dia
    rise_hr = statistics.mean(v.hr for v in ends) - ADULT.hr  # type: ignore[misc]
    assert 10 <= rise_sys <= 22
    assert 6 <= rise_dia <= 16
    assert 1 <= rise_hr <= 10
    assert statistics.mean(v.sys for v in mids) - ADULT.sys < rise_sys  # still rising mid-way
    settled = statistics.mean(v.sys for v in afters) - ADULT.sys
    assert settled < 5 and settled < rise_sys / 3  # back toward baseline 30 min after
    assert all(v.effect == pytest.approx(1.0, abs=1e-3) for v in ends)


def test_effect_follows_the_dose_actually_given():
    model = PatientModel(ADULT, 3)
    nothing = PatientModel(ADULT, 3)
    at_stop = sample(model, 600.0).effect
    assert at_stop > 0.2
    assert nothing.vitals(600.0, 0, 0).effect == 0.0
    # stopped at 10 min (a trip): the effect fades instead of climbing to the end

    def stopped(t: float) -> tuple[float, float]:
        return standard_dose(t) if t < 600 else (0.0, RATE * 600 / 3600)

    cut = PatientModel(ADULT, 3)
    for t in range(0, 2401, 10):
        last = cut.vitals(float(t), *stopped(t))
    assert last.effect < at_stop / 3  # 30 min after the stop, not 1.0 as at the planned end


# --- events --------------------------------------------------------------------------------
EVENT_AT, EVENT_FOR = 600.0, 300.0


def _changed(kind: str, v: Vitals, plain: Vitals) -> bool:
    return {
        "desaturation": v.spo2 is not None and v.spo2 <= 87.5,
        "hypertensive": v.sys >= 180 and v.dia > plain.dia + 10,
        "bradycardia": v.hr is not None and v.hr <= 43,
        "tachycardia": v.hr is not None and v.hr >= 135,
        "apnea": v.rr == 0 and v.etco2_mmhg < 3 and (v.spo2 or 100) < (plain.spo2 or 0),
        "lead_off": v.hr is None and v.rr_imp is None and v.spo2 is not None,
        "probe_off": v.spo2 is None and v.pulse is None and v.pi is None and v.hr is not None,
        "nibp_cycle": v == plain,  # no effect on the patient
    }[kind]


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_each_event_changes_its_channel_then_ends(kind):
    seed = 21
    duration = 0.0 if kind == "nibp_cycle" else EVENT_FOR
    event = Event(kind, EVENT_AT, duration)
    model = PatientModel(ADULT, seed).with_events([event])
    twin = PatientModel(ADULT, seed)
    late = EVENT_AT + EVENT_FOR - 5  # well into the event
    assert _changed(kind, sample(model, late), sample(twin, late)), kind
    if kind != "nibp_cycle":
        assert kind in sample(model, late).events
    for t in (EVENT_AT - 1, event.end_s, event.end_s + 1, event.end_s + 600):
        assert sample(model, t) == sample(twin, t), (kind, t)


def test_desaturation_ramps_rather_than_jumps():
    model = PatientModel(ADULT, 2).with_events([Event("desaturation", 100, 120, 86)])
    spo2 = [model.vitals(t, 0, 0).spo2 for t in range(100, 125)]
    assert all(s is not None for s in spo2)
    assert max(abs(a - b) for a, b in zip(spo2, spo2[1:], strict=False)) < 3  # type: ignore
    assert spo2[-1] <= 87  # type: ignore[operator]


@pytest.mark.parametrize(
    "args",
    [
        ("desat", 0, 10, None),
        ("desaturation", -1, 10, None),
        ("desaturation", 0, 0, None),
        ("desaturation", 0, 10, 120),
        ("lead_off", 0, 10, 5),
        ("hypertensive", 0, 10, True),
    ],
)
def test_impossible_events_are_refused(args):
    with pytest.raises(PhysiologyError):
        Event(*args)


def test_impossible_baselines_are_refused():
    with pytest.raises(PhysiologyError, match="dia"):
        replace(ADULT, dia=130)
    with pytest.raises(PhysiologyError, match="spo2"):
        replace(ADULT, spo2=101)
    with pytest.raises(PhysiologyError, match="pi"):
        Baseline(weight_kg=70, hr=72, sys=120, dia=80, spo2=98, rr=14, etco2=38, pi=0)


# --- adapters ------------------------------------------------------------------------------
def test_adapters_speak_the_emulators_units():
    b = replace(ADULT, etco2=38.0)
    model = PatientModel(b, 4).with_events(
        [Event("lead_off", 100, 10), Event("probe_off", 200, 10)]
    )
    t = {"now": 50.0}
    clock = lambda: t["now"]  # noqa: E731
    dose = lambda: standard_dose(t["now"])  # noqa: E731
    oxi, mon = oximeter_source(model, clock, dose), monitor_source(model, clock, dose)
    v = sample(PatientModel(b, 4), 50.0)

    o, m = oxi(), mon()
    assert set(o) == {"spo2", "bpm", "pi_x100"} and all(isinstance(x, int) for x in o.values())
    assert o["spo2"] == round(v.spo2) and o["bpm"] == round(v.pulse)  # type: ignore[arg-type]
    assert o["pi_x100"] == round(v.pi * 100)  # type: ignore[operator]
    assert m["hr"] == round(v.hr) and m["spo2_x100"] == round(v.spo2) * 100  # type: ignore
    assert m["amb_press_x10"] == 7600
    assert m["etco2_pct_x100"] == round(v.etco2_mmhg / 760 * 10000)  # ~5 % for 38 mmHg
    assert 450 <= m["etco2_pct_x100"] <= 560
    assert m["nibp"] == (round(v.sys) * 100, round(v.dia) * 100, round(v.mean) * 100)
    assert m["rr"] == round(v.rr) and m["rr_imp"] == round(v.rr)

    t["now"] = 105.0  # ECG leads off: no HR, no impedance respiration, SpO2 still there
    m = mon()
    assert m["hr"] is None and m["rr_imp"] is None and m["spo2_x100"] is not None
    t["now"] = 205.0  # finger probe off: the oximeter shows dashes
    assert oxi() == {"spo2": None, "bpm": None, "pi_x100": None}
    assert mon()["spo2_x100"] is None and mon()["hr"] is not None

    thin = monitor_source(model, clock, dose, ambient_mmhg=600.0, impedance_rr=False)()
    assert thin["amb_press_x10"] == 6000 and thin["rr_imp"] is None
    with pytest.raises(PhysiologyError):
        monitor_source(model, clock, dose, ambient_mmhg=60.0)


def test_adapters_drive_the_real_emulators():
    model = PatientModel(ADULT, 8)
    ec = ManualClock()
    t0 = ec()

    def clock() -> float:
        return ec() - t0

    def dose() -> tuple[float, float]:
        return standard_dose(clock())

    oxi = Radical7(oximeter_source(model, clock, dose), clock=ec)
    line = oxi.service()
    assert line.endswith(b"\r\n") and b" SPO2=0" in line and b" BPM=0" in line
    assert oxi.sent[-1][1] is not None and 90 <= oxi.sent[-1][1] <= 100
    mon = DatexS5(monitor_source(model, clock, dose), clock=ec, nibp_interval_s=600)
    mon.service()
    sys_, dia_, mean_ = mon.nibp_displayed  # the first cuff cycle took the pressure
    assert 9000 <= sys_ <= 18000 and dia_ < mean_ < sys_ and sys_ % 100 == 0


# --- scenario files ------------------------------------------------------------------------
RULES = yaml.safe_load((ROOT / "config" / "rules.example.yaml").read_text())["parameters"]


def run_chair(chair: ChairScenario, duration_s: float) -> list[Vitals]:
    """The chair's patient at every scenario second, on the planned dose (no trips)."""
    model = chair.patient()
    return [model.vitals(float(t), *chair.planned_dose(float(t))) for t in range(int(duration_s))]


def bp_hr_warning(v: Vitals) -> bool:
    s, d, h = RULES["nibp_sys"]["warning"], RULES["nibp_dia"]["warning"], RULES["hr"]["warning"]
    return (
        not s["low"] <= v.sys <= s["high"]
        or not d["low"] <= v.dia <= d["high"]
        or (v.hr is not None and not h["low"] <= v.hr <= h["high"])
    )


def test_shipped_scenarios_load():
    names = {p.stem for p in SCENARIOS}
    assert {"normal-40min", "desaturation", "hypertension", "demo"} <= names
    for path in SCENARIOS:
        sc = load(path)
        assert isinstance(sc, Scenario) and sc.chairs and sc.speed > 0
        for chair in sc.chairs:
            assert chair.program is not None and chair.actions[0].op == "program"
            assert chair.nibp_interval_s == 600  # a baseline cuff reading before the start


def test_demo_has_three_chairs_and_single_files_have_one():
    demo = load(ROOT / "scenarios" / "demo.toml")
    assert [c.name for c in demo.chairs] == ["chair-1", "chair-2", "chair-3"]
    assert [c.preset for c in demo.chairs] == ["adult", "older", "adult"]
    assert [c.expect.trip for c in demo.chairs] == [False, False, True]
    assert [e.kind for e in demo.chair("chair-3").events] == ["desaturation"]
    normal = load(ROOT / "scenarios" / "normal-40min.toml")
    (chair,) = normal.chairs
    assert chair.weight_kg == 70 and [a.op for a in chair.actions] == ["program", "start"]
    assert chair.planned_dose(1200.0) == (0.75, pytest.approx(0.25))
    assert chair.planned_dose(4000.0) == (0.0, pytest.approx(0.5))
    req = chair.program.request(chair.name, chair.weight_kg, "rn.x")  # type: ignore[union-attr]
    assert req["dose_rate"] == "0.75" and req["weight_kg"] == "70" and req["op"] == "program"


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_shipped_scenarios_do_what_they_expect_under_the_example_rules(path):
    sc = load(path)
    spo2_crit = RULES["spo2"]["critical"]
    hold_s = spo2_crit["for_s"] * sc.speed  # the gateway times rules in real seconds
    for chair in sc.chairs:
        vs = run_chair(chair, sc.duration_s)
        first_event = min((e.start_s for e in chair.events), default=sc.duration_s)
        low = [v.spo2 is not None and round(v.spo2) < spo2_crit["low"] for v in vs]
        if chair.expect.trip is False:
            # whenever the cuff cycles, no BP/HR value is even a warning; SpO2 dips are short
            assert not any(bp_hr_warning(v) for v in vs), chair.name
            assert longest_run(low) <= 3, chair.name
            continue
        assert chair.expect.trip is True and chair.expect.trip_by_s is not None
        assert not any(bp_hr_warning(v) for v in vs[: int(first_event)]), chair.name
        assert longest_run(low[: int(first_event)]) <= 3
        if chair.expect.trip_rule == "spo2.critical.low":
            by = int(chair.expect.trip_by_s)
            assert longest_run(low[:by]) >= hold_s + 2 * sc.speed, chair.name  # 2 s of slack
        elif chair.expect.trip_rule == "nibp_sys.critical.high":
            limit = RULES["nibp_sys"]["critical"]["high"]
            (cuff,) = chair.nibp_cycles
            assert cuff < chair.expect.trip_by_s
            # the scripted cuff reading is high even if the bench takes it a second late
            assert all(vs[int(cuff) + d].sys > limit for d in range(0, 2 * int(sc.speed)))
        else:
            pytest.fail(f"no check for {chair.expect.trip_rule}")


def test_scenario_clock_runs_at_speed_from_zero():
    now = {"t": 100.0}
    clock = ScenarioClock(20, monotonic=lambda: now["t"])
    assert clock() == 0.0
    now["t"] = 103.0
    assert clock() == 60.0 and clock.real_deadline(120.0) == 106.0
    assert load(ROOT / "scenarios" / "normal-40min.toml").real_s(4200) == 210.0


# --- bad scenario files ----------------------------------------------------------------------
GOOD = """\
[scenario]
name = "t"
speed = 10
duration_s = 3000

[patient]
preset = "adult"
seed = 1

[program]
drug = "ketamine"
concentration_mg_ml = 1
dose_rate = 0.75
duration_min = 40

[[events]]
kind = "desaturation"
at_s = 100
duration_s = 60

[[events]]
kind = "apnea"
at_s = 500
duration_s = 60
"""


def test_a_good_file_loads():
    sc = loads(GOOD, "good.toml")
    assert [e.kind for e in sc.chairs[0].events] == ["desaturation", "apnea"]


@pytest.mark.parametrize(
    "old, new, line, key, words",
    [
        ('kind = "apnea"', 'kind = "apnoea"', 22, "events[2].kind", "unknown event kind"),
        (
            "duration_s = 60\n\n[[events]]",
            "duration_s = -6\n\n[[events]]",
            19,
            "events[1].duration_s",
            "at least 0",
        ),
        ("at_s = 500", "at_s = 500\nmagnitude = 5", 24, "events[2].magnitude", "no magnitude"),
        ("seed = 1", "seed = 1\nweigth_kg = 70", 9, "patient.weigth_kg", "unknown key"),
        ("dose_rate = 0.75", 'dose_rate = "0.75"', 13, "program.dose_rate", "must be a number"),
        ("speed = 10", "speed = 0", 3, "scenario.speed", "above 0"),
        ('preset = "adult"', 'preset = "elderly"', 7, "patient.preset", "unknown preset"),
        ("seed = 1", "seed = 1\ndia = 140", 9, "patient.dia", "below sys"),
        ('name = "t"\n', "", 1, "scenario", "missing required key 'name'"),
        (
            "[patient]",
            '[expect]\ntrip_rule = "x"\n\n[patient]',
            7,
            "expect.trip_rule",
            "trip = true",
        ),
        (
            "[patient]",
            '[[actions]]\nat_s = 5\nop = "ack"\n\n[patient]',
            6,
            "actions[1]",
            "missing required key 'reason'",
        ),
        (
            "[patient]",
            '[[actions]]\nat_s = 5\nop = "pause"\n\n[patient]',
            8,
            "actions[1].op",
            "unknown op",
        ),
        ("[patient]", "[[chairs]]\n\n[patient]", 8, "patient", "each [[chairs]] entry"),
        ("at_s = 100", "at_s = 9000", 18, "events[1].at_s", "outside 0..3000"),
    ],
)
def test_bad_files_are_refused_naming_file_line_and_key(old, new, line, key, words):
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    with pytest.raises(ScenarioError) as err:
        loads(text, "bad.toml")
    msg = str(err.value)
    assert msg.startswith(f"bad.toml:{line}: {key}: "), msg
    assert words in msg


def test_bad_multi_chair_file_names_the_chair_entry():
    text = """\
[scenario]
name = "m"
duration_s = 100

[[chairs]]
name = "a"

[[chairs]]
name = "b"
[chairs.patient]
seed = 2
[[chairs.events]]
kind = "tachycardia"
at_s = 10
duration_s = 20
magnitude = 500
"""
    with pytest.raises(ScenarioError, match=r"^m\.toml:16: chairs\[2\]\.events\[1\]\.magnitude: "):
        loads(text, "m.toml")
    dup = text.replace('name = "b"', 'name = "a"').replace("500", "150")
    with pytest.raises(ScenarioError, match=r"^m\.toml:9: chairs\[2\]\.name: .*twice"):
        loads(dup, "m.toml")


def test_unreadable_and_invalid_toml_name_the_file(tmp_path):
    with pytest.raises(ScenarioError, match="nope.toml: cannot read"):
        load(tmp_path / "nope.toml")
    bad = tmp_path / "broken.toml"
    bad.write_text("[scenario\nname = 1\n")
    with pytest.raises(ScenarioError, match=r"broken\.toml: not valid TOML: .*line 1"):
        load(bad)
