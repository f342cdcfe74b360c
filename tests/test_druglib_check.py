"""Dose checks: verdicts at the limits, derived pump programs, overrides, rate changes."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.druglib import (
    DoseCheck,
    DoseCheckError,
    DrugLibrary,
    Verdict,
    apply_override,
    authorize,
    check_cumulative,
    check_program,
    check_rate_change,
    load_library,
    parse_library,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "druglib.example.yaml"

TEST_LIB = """\
format: 1
name: Check tests
version: "c.1"
approved_by: Dr Test
approved_on: 2026-11-01
care_areas:
  test:
    description: Units and bolus
    drugs:
      ket:
        name: Ketamine
        concentrations: [1, 2]
        dosing_unit: mg/kg/h
        weight_kg: {min: 40, max: 160}
        rate: {lower_hard: 0.25, lower_soft: 0.5, default: 0.75, upper_soft: 0.9, upper_hard: 1.0}
        bolus: {lower_hard: 0.05, lower_soft: 0.1, default: 0.2, upper_soft: 0.3, upper_hard: 0.5}
        max_cumulative_dose: {upper_soft: 0.75, upper_hard: 1.0}
        duration_min: {lower_hard: 20, lower_soft: 40, default: 40, upper_soft: 60, upper_hard: 90}
      flat:
        name: Flat dosed
        concentrations: [5]
        dosing_unit: mg/h
        rate: {lower_hard: 10, lower_soft: 20, default: 50, upper_soft: 80, upper_hard: 100}
        max_cumulative_dose: {upper_soft: 100, upper_hard: 150}
        duration_min: {default: 60, upper_soft: 90, upper_hard: 120}
"""


@pytest.fixture(scope="module")
def example() -> DrugLibrary:
    return load_library(EXAMPLE)


@pytest.fixture(scope="module")
def lib() -> DrugLibrary:
    return parse_library(TEST_LIB.encode(), "test.yaml")


def ket(
    library: DrugLibrary,
    *,
    rate: str = "0.75",
    dur: str = "40",
    weight: str | None = "70",
    conc: str = "1",
    bolus: str | None = None,
    area: str = "ketamine-trd",
    drug: str = "ketamine",
) -> DoseCheck:
    return check_program(
        library,
        area,
        drug,
        concentration_mg_ml=conc,
        weight_kg=weight,
        dose_rate=rate,
        duration_min=dur,
        bolus=bolus,
    )


def limits_hit(check: DoseCheck) -> list[tuple[str, bool]]:
    return [(v.name, v.hard) for v in check.violations]


# -- reference case --------------------------------------------------------------------------


def test_reference_program_70kg_half_mg_per_kg_over_40_min(example: DrugLibrary) -> None:
    c = ket(example)
    assert c.verdict is Verdict.OK and c.violations == ()
    p = c.program
    assert p is not None
    assert p.rate_ul_h == 52500  # 52.5 mL/h
    assert p.vtbi_ul == 35000  # 35 mL
    assert p.total_dose_mg == Decimal("35")
    assert p.session_dose == Decimal("0.5")  # mg/kg
    assert p.effective_dose_rate == Decimal("0.75")
    assert (p.library_sha256, p.library_version) == (example.sha256, example.version)
    assert (c.library_sha256, c.library_version) == (example.sha256, example.version)


def test_reference_program_at_2_mg_per_ml(example: DrugLibrary) -> None:
    p = ket(example, conc="2").program
    assert p is not None
    assert (p.rate_ul_h, p.vtbi_ul, p.total_dose_mg) == (26250, 17500, Decimal("35"))


def test_decimal_and_int_inputs_agree(example: DrugLibrary) -> None:
    a = ket(example)
    b = check_program(
        example,
        "ketamine-trd",
        "ketamine",
        concentration_mg_ml=Decimal("1.0"),
        weight_kg=70,
        dose_rate=Decimal("0.750"),
        duration_min=40,
    )
    assert a.program is not None and b.program is not None
    assert (a.program.rate_ul_h, a.program.vtbi_ul) == (b.program.rate_ul_h, b.program.vtbi_ul)


def test_floats_and_garbage_are_refused(example: DrugLibrary) -> None:
    with pytest.raises(TypeError):
        check_program(
            example,
            "ketamine-trd",
            "ketamine",
            concentration_mg_ml=1,
            weight_kg=70,
            dose_rate=0.75,  # type: ignore[arg-type]
            duration_min=40,
        )
    with pytest.raises(DoseCheckError, match="dose_rate must be a decimal number"):
        ket(example, rate="0.75 mg")
    with pytest.raises(DoseCheckError, match="finite"):
        check_program(
            example,
            "ketamine-trd",
            "ketamine",
            concentration_mg_ml=1,
            weight_kg=Decimal("NaN"),
            dose_rate="0.75",
            duration_min=40,
        )


# -- boundaries: limits are inclusive ----------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        ("0.249999", [("rate.lower_hard", True)]),
        ("0.25", [("rate.lower_soft", False)]),
        ("0.499999", [("rate.lower_soft", False)]),
        ("0.5", []),
        ("0.75", []),
        ("0.9", []),
        ("0.900001", [("rate.upper_soft", False)]),
        ("1.0", [("rate.upper_soft", False)]),
        ("1.000001", [("rate.upper_hard", True)]),
    ],
)
def test_rate_boundaries(example: DrugLibrary, rate: str, expected: list[tuple[str, bool]]) -> None:
    # 30 min keeps the session dose within the cumulative soft limit for every rate here.
    c = ket(example, rate=rate, dur="30")
    hits = [h for h in limits_hit(c) if not h[0].startswith("duration_min")]
    assert hits == expected


@pytest.mark.parametrize(
    ("dur", "expected"),
    [
        ("19.99", [("duration_min.lower_hard", True)]),
        ("20", [("duration_min.lower_soft", False)]),
        ("39.99", [("duration_min.lower_soft", False)]),
        ("40", []),
        ("60", []),
        ("60.01", [("duration_min.upper_soft", False)]),
        ("90", [("duration_min.upper_soft", False)]),
        ("90.01", [("duration_min.upper_hard", True), ("max_cumulative_dose.upper_soft", False)]),
    ],
)
def test_duration_boundaries(
    example: DrugLibrary, dur: str, expected: list[tuple[str, bool]]
) -> None:
    # 0.5 mg/kg/h x 90 min = 0.75 mg/kg: exactly the cumulative soft limit, still OK.
    c = ket(example, rate="0.5", dur=dur)
    assert limits_hit(c) == expected


@pytest.mark.parametrize(
    ("rate", "dur", "expected", "verdict"),
    [
        ("0.75", "60", [], Verdict.OK),  # 0.75 mg/kg: exactly the soft maximum
        ("0.9", "50.01", [("max_cumulative_dose.upper_soft", False)], Verdict.SOFT),
        (
            "1.0",
            "60",
            [("rate.upper_soft", False), ("max_cumulative_dose.upper_soft", False)],
            Verdict.SOFT,
        ),  # 1.0 mg/kg: exactly the hard maximum
        (
            "1.0",
            "60.06",
            [
                ("rate.upper_soft", False),
                ("duration_min.upper_soft", False),
                ("max_cumulative_dose.upper_hard", True),
            ],
            Verdict.HARD,
        ),
    ],
)
def test_session_dose_boundaries(
    example: DrugLibrary, rate: str, dur: str, expected: list[tuple[str, bool]], verdict: Verdict
) -> None:
    c = ket(example, rate=rate, dur=dur)
    assert limits_hit(c) == expected
    assert c.verdict is verdict


@pytest.mark.parametrize(
    ("weight", "verdict"),
    [("39.9", Verdict.HARD), ("40", Verdict.OK), ("160", Verdict.OK), ("160.1", Verdict.HARD)],
)
def test_implausible_weight_is_hard(example: DrugLibrary, weight: str, verdict: Verdict) -> None:
    c = ket(example, weight=weight)
    assert c.verdict is verdict
    if verdict is Verdict.HARD:
        (v,) = c.violations
        assert v.field == "weight_kg" and v.hard
        assert "outside the plausible range 40-160 kg" in v.message


def test_weight_required_for_weight_based_dosing(example: DrugLibrary) -> None:
    c = ket(example, weight=None)
    assert c.verdict is Verdict.HARD and c.program is None
    assert c.violations[0].name == "weight_kg.required"


def test_unknown_care_area_drug_and_concentration_are_hard(example: DrugLibrary) -> None:
    c = ket(example, area="icu")
    assert c.verdict is Verdict.HARD and c.program is None
    assert "care area 'icu' is not in drug library 2026-11-01.1" in c.violations[0].message
    c = ket(example, drug="propofol")
    assert c.verdict is Verdict.HARD
    assert "drug 'propofol' is not in care area 'ketamine-trd'" in c.violations[0].message
    c = ket(example, conc="1.5")
    assert c.verdict is Verdict.HARD
    assert c.violations[0].message == (
        "concentration 1.5 mg/mL is not an approved concentration of Ketamine (approved: 1, 2 mg/mL)"
    )


def test_non_positive_inputs_are_hard(example: DrugLibrary) -> None:
    assert ket(example, rate="0").verdict is Verdict.HARD
    assert ket(example, dur="-5").verdict is Verdict.HARD
    assert ket(example, rate="-1").program is None


def test_every_violation_is_listed(example: DrugLibrary) -> None:
    c = ket(example, rate="1.2", dur="100", bolus="0.1", weight="70")
    assert [v.name for v in c.violations] == [
        "bolus.allowed",
        "rate.upper_hard",
        "duration_min.upper_hard",
        "max_cumulative_dose.upper_hard",
    ]
    assert c.violations[1].message == (
        "rate 1.2 mg/kg/h is above the hard maximum of 1.0 mg/kg/h (rate.upper_hard)"
    )


# -- bolus, other units -----------------------------------------------------------------------


def test_bolus_not_allowed_in_example(example: DrugLibrary) -> None:
    c = ket(example, bolus="0.1")
    assert c.verdict is Verdict.HARD
    assert c.violations[0].message == (
        "a bolus is not allowed for Ketamine in care area 'ketamine-trd'"
    )


@pytest.mark.parametrize(
    ("bolus", "expected"),
    [
        ("0.049", [("bolus.lower_hard", True)]),
        ("0.05", [("bolus.lower_soft", False)]),
        ("0.1", []),
        ("0.3", [("max_cumulative_dose.upper_soft", False)]),
        ("0.31", [("bolus.upper_soft", False), ("max_cumulative_dose.upper_soft", False)]),
        ("0.5", [("bolus.upper_soft", False), ("max_cumulative_dose.upper_soft", False)]),
        ("0.51", [("bolus.upper_hard", True), ("max_cumulative_dose.upper_hard", True)]),
    ],
)
def test_bolus_limits_and_session_dose(
    lib: DrugLibrary, bolus: str, expected: list[tuple[str, bool]]
) -> None:
    c = ket(lib, area="test", drug="ket", bolus=bolus)  # + 0.5 mg/kg infusion
    assert limits_hit(c) == expected


def test_bolus_volume_and_total_dose(lib: DrugLibrary) -> None:
    p = ket(lib, area="test", drug="ket", bolus="0.2", rate="0.75", dur="20.01").program
    assert p is not None
    assert p.bolus_ul == 14000  # 0.2 mg/kg x 70 kg / 1 mg/mL
    assert p.total_dose_mg == Decimal(p.vtbi_ul + p.bolus_ul) / 1000


def test_mg_per_h_and_ml_per_h_programs(lib: DrugLibrary, example: DrugLibrary) -> None:
    c = check_program(
        lib,
        "test",
        "flat",
        concentration_mg_ml="5",
        weight_kg=None,
        dose_rate="50",
        duration_min="60",
    )
    assert c.verdict is Verdict.OK
    assert c.program is not None
    assert (c.program.rate_ul_h, c.program.vtbi_ul, c.program.total_dose_mg) == (
        10000,
        10000,
        Decimal("50"),
    )
    c = check_program(
        example,
        "recovery",
        "sodium-chloride-0-9",
        concentration_mg_ml=9,
        weight_kg=None,
        dose_rate="10",
        duration_min=60,
    )
    assert c.verdict is Verdict.OK
    assert c.program is not None
    assert (c.program.rate_ul_h, c.program.vtbi_ul, c.program.session_dose) == (
        10000,
        10000,
        Decimal("10"),
    )


# -- integer pump values never cross a limit ---------------------------------------------------


def effective_rate(c: DoseCheck) -> Fraction:
    p = c.program
    assert p is not None and p.weight_kg is not None
    return Fraction(p.rate_ul_h) * Fraction(p.concentration_mg_ml) / 1000 / Fraction(p.weight_kg)


def test_rounding_stays_inside_the_soft_band(example: DrugLibrary) -> None:
    # 0.9 mg/kg/h x 73.33 kg / 2 mg/mL = 32998.5 uL/h: must round down, not up past 0.9.
    hi = ket(example, rate="0.9", weight="73.33", conc="2", dur="40")
    assert hi.verdict is Verdict.OK
    assert hi.program is not None and hi.program.rate_ul_h == 32998
    assert effective_rate(hi) <= Fraction("0.9")
    # 0.5 mg/kg/h x 73.33 kg / 2 mg/mL = 18332.5 uL/h: must round up, not down below 0.5.
    lo = ket(example, rate="0.5", weight="73.33", conc="2", dur="40")
    assert lo.verdict is Verdict.OK
    assert lo.program is not None and lo.program.rate_ul_h == 18333
    assert effective_rate(lo) >= Fraction("0.5")


_EDGES = [Decimal(x) for x in ("0.25", "0.5", "0.75", "0.9", "1.0")]
rates = st.one_of(
    st.decimals(min_value=Decimal("0.1"), max_value=Decimal("1.2"), places=4),
    # Exactly at, or a hair either side of, each rate limit of the example.
    st.builds(
        lambda edge, k: edge + Decimal(k) / 1_000_000,
        st.sampled_from(_EDGES),
        st.integers(min_value=-3, max_value=3),
    ),
)
weights = st.decimals(min_value=Decimal("30"), max_value=Decimal("170"), places=2)
durations = st.one_of(
    st.decimals(min_value=Decimal("10"), max_value=Decimal("100"), places=1),
    st.decimals(min_value=Decimal("40"), max_value=Decimal("50"), places=3),
)


@settings(max_examples=300, deadline=None)
@given(rate=rates, weight=weights, dur=durations, conc=st.sampled_from(["1", "2"]))
def test_ok_program_is_delivered_within_limits(
    example: DrugLibrary, rate: Decimal, weight: Decimal, dur: Decimal, conc: str
) -> None:
    c = check_program(
        example,
        "ketamine-trd",
        "ketamine",
        concentration_mg_ml=conc,
        weight_kg=weight,
        dose_rate=rate,
        duration_min=dur,
    )
    entry = example.entry("ketamine-trd", "ketamine")
    assert entry is not None
    in_hard = Fraction(entry.rate.lower_hard or 0) <= rate <= Fraction(entry.rate.upper_hard)
    if c.verdict is Verdict.OK:
        eff = effective_rate(c)
        assert Fraction(entry.rate.lower_hard or 0) <= eff <= Fraction(entry.rate.upper_hard)
        assert Fraction(entry.rate.lower_soft or 0) <= eff <= Fraction(entry.rate.upper_soft)
        p = c.program
        assert p is not None
        session = Fraction(p.vtbi_ul) * Fraction(conc) / 1000 / Fraction(weight)
        assert session <= Fraction(entry.max_cumulative_dose.upper_soft)
    if c.verdict is not Verdict.HARD:
        assert in_hard and c.program is not None
        eff = effective_rate(c)
        assert Fraction(entry.rate.lower_hard or 0) <= eff <= Fraction(entry.rate.upper_hard)
    if not in_hard or not (40 <= weight <= 160):
        assert c.verdict is Verdict.HARD


# -- overrides ---------------------------------------------------------------------------------


def test_authorize_ok_program(example: DrugLibrary) -> None:
    c = ket(example)
    a = authorize(c, clock=lambda: 1234.5)
    assert a.program == c.program
    assert (a.overridden, a.operator, a.reason, a.at) == ((), None, None, 1234.5)
    assert (a.library_sha256, a.library_version) == (example.sha256, example.version)


def test_soft_override_records_who_why_when(example: DrugLibrary) -> None:
    c = ket(example, rate="0.95")
    assert c.verdict is Verdict.SOFT
    with pytest.raises(DoseCheckError, match="soft limit rate.upper_soft needs an override"):
        authorize(c)
    a = apply_override(c, " Nurse Ada ", "responder, slow titration per MD", clock=lambda: 99.0)
    assert a.overridden == c.violations
    assert [v.name for v in a.overridden] == ["rate.upper_soft"]
    assert (a.operator, a.reason, a.at) == ("Nurse Ada", "responder, slow titration per MD", 99.0)
    assert a.program.rate_ul_h == 66500


def test_hard_limit_cannot_be_overridden(example: DrugLibrary) -> None:
    c = ket(example, rate="1.1")
    assert c.verdict is Verdict.HARD
    with pytest.raises(DoseCheckError, match="^hard limit rate.upper_hard cannot be overridden"):
        apply_override(c, "Dr Who", "because")
    with pytest.raises(DoseCheckError, match="^hard limit rate.upper_hard cannot be overridden"):
        authorize(c)


def test_override_needs_operator_and_reason(example: DrugLibrary) -> None:
    c = ket(example, rate="0.95")
    with pytest.raises(DoseCheckError, match="operator"):
        apply_override(c, "  ", "good reason")
    with pytest.raises(DoseCheckError, match="at least 4 characters"):
        apply_override(c, "Ada", "ok ")
    with pytest.raises(DoseCheckError, match="at least 4 characters"):
        apply_override(c, "Ada", "      ")
    assert apply_override(c, "Ada", "okay", clock=lambda: 0.0).reason == "okay"


def test_nothing_to_override_when_ok(example: DrugLibrary) -> None:
    with pytest.raises(DoseCheckError, match="nothing to override"):
        apply_override(ket(example), "Ada", "no reason needed")


# -- rate change -------------------------------------------------------------------------------


def test_rate_change_keeps_the_remaining_volume(example: DrugLibrary) -> None:
    a = authorize(ket(example), clock=lambda: 0.0)
    # 10 min at 52.5 mL/h = 8750 uL given; 26250 uL left at 35 mL/h = 45 min; session 55 min.
    c = check_rate_change(example, a, "0.5", infused_ul=8750, elapsed_s=600)
    assert c.verdict is Verdict.OK
    p = c.program
    assert p is not None
    assert (p.rate_ul_h, p.vtbi_ul, p.prior_infused_ul) == (35000, 26250, 8750)
    assert (p.duration_min, p.session_duration_min) == (Decimal("45"), Decimal("55"))
    assert p.session_dose == Decimal("0.5")


def test_rate_change_that_lengthens_the_session_is_soft(example: DrugLibrary) -> None:
    a = authorize(ket(example), clock=lambda: 0.0)
    # 26250 uL at 28 mL/h = 56.25 min; session 66.25 min > 60.
    c = check_rate_change(example, a, "0.4", infused_ul=8750, elapsed_s=600)
    assert limits_hit(c) == [("rate.lower_soft", False), ("duration_min.upper_soft", False)]
    assert c.violations[1].actual == Decimal("66.25")
    b = apply_override(c, "Ada", "nausea, slowing down", clock=lambda: 700.0)
    # A second change counts the whole session so far.
    c2 = check_rate_change(example, b, "0.75", infused_ul=2800, elapsed_s=360)
    assert c2.program is not None
    assert c2.program.prior_infused_ul == 8750 + 2800
    assert c2.program.session_duration_min == Decimal(16) + Decimal(23450 * 60) / 52500


def test_rate_change_above_hard_and_after_completion(example: DrugLibrary) -> None:
    a = authorize(ket(example), clock=lambda: 0.0)
    c = check_rate_change(example, a, "1.1", infused_ul=100, elapsed_s=10)
    assert c.verdict is Verdict.HARD
    with pytest.raises(DoseCheckError, match="cannot be overridden"):
        apply_override(c, "Ada", "reason")
    done = check_rate_change(example, a, "0.5", infused_ul=35000, elapsed_s=2400)
    assert done.verdict is Verdict.HARD
    assert done.violations[0].name == "vtbi.remaining"
    with pytest.raises(DoseCheckError):
        check_rate_change(example, a, "0.5", infused_ul=-1, elapsed_s=10)


def test_rate_change_uses_the_library_passed_in(example: DrugLibrary, lib: DrugLibrary) -> None:
    a = authorize(ket(example), clock=lambda: 0.0)
    c = check_rate_change(lib, a, "0.5", infused_ul=100, elapsed_s=10)
    assert c.verdict is Verdict.HARD
    assert c.violations[0].name == "care_area.unknown"
    assert c.library_sha256 == lib.sha256


# -- cumulative dose during the session --------------------------------------------------------


@pytest.mark.parametrize(
    ("delivered", "soft", "exceeded", "remaining_ul", "remaining_mg"),
    [
        (0, False, False, 70000, Decimal("70")),
        (35000, False, False, 35000, Decimal("35")),
        (52500, False, False, 17500, Decimal("17.5")),  # 0.75 mg/kg: at the soft limit
        (52501, True, False, 17499, Decimal("17.499")),
        (69999, True, False, 1, Decimal("0.001")),
        (70000, True, True, 0, Decimal("0")),  # 1.0 mg/kg reached: stop
        (80000, True, True, 0, Decimal("0")),
    ],
)
def test_cumulative_dose(
    example: DrugLibrary,
    delivered: int,
    soft: bool,
    exceeded: bool,
    remaining_ul: int,
    remaining_mg: Decimal,
) -> None:
    p = ket(example).program
    assert p is not None
    cc = check_cumulative(p, delivered)
    assert (cc.soft_exceeded, cc.exceeded, cc.remaining_ul, cc.remaining_mg) == (
        soft,
        exceeded,
        remaining_ul,
        remaining_mg,
    )
    assert cc.unit == "mg/kg"
    assert cc.delivered_mg == Decimal(delivered) / 1000


def test_cumulative_rejects_bad_volume(example: DrugLibrary) -> None:
    p = ket(example).program
    assert p is not None
    with pytest.raises(DoseCheckError):
        check_cumulative(p, -1)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.decimals(min_value=Decimal("0.5"), max_value=Decimal("0.9"), places=6),
    weight=st.decimals(min_value=Decimal("40"), max_value=Decimal("160"), places=3),
    dur=st.decimals(min_value=Decimal("40"), max_value=Decimal("50"), places=3),
    conc=st.sampled_from(["1", "2"]),
)
def test_inside_soft_band_is_ok_and_delivered_inside_it(
    example: DrugLibrary, rate: Decimal, weight: Decimal, dur: Decimal, conc: str
) -> None:
    # Every value here is inside its soft band (0.9 x 50 min = 0.75 mg/kg, the soft maximum).
    c = check_program(
        example,
        "ketamine-trd",
        "ketamine",
        concentration_mg_ml=conc,
        weight_kg=weight,
        dose_rate=rate,
        duration_min=dur,
    )
    assert c.verdict is Verdict.OK, c.violations
    eff = effective_rate(c)
    assert Fraction("0.5") <= eff <= Fraction("0.9")
    assert abs(eff - Fraction(rate)) * Fraction(weight) * 1000 / Fraction(conc) <= 1  # <= 1 uL/h
    p = c.program
    assert p is not None
    assert Fraction(p.vtbi_ul) * Fraction(conc) / 1000 / Fraction(weight) <= Fraction("0.75")
