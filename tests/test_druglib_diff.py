"""Library diff for review: every added, removed and changed item, limits marked loosened/tightened."""

from __future__ import annotations

from pathlib import Path

from gateway.druglib import DrugLibrary, diff_libraries, parse_library

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "druglib.example.yaml"
TEXT = EXAMPLE.read_text(encoding="utf-8")
K = "care_areas.ketamine-trd.drugs.ketamine"


def lib(text: str) -> DrugLibrary:
    return parse_library(text.encode(), "x.yaml")


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_identical_and_cosmetic_changes_are_no_difference() -> None:
    a = lib(TEXT)
    assert diff_libraries(a, a) == []
    b = lib(edit(TEXT, "upper_hard: 1.0                 #", "upper_hard: 1.00 # same value;"))
    assert b.sha256 != a.sha256
    assert diff_libraries(a, b) == []


def test_limit_changes_name_path_values_and_effect() -> None:
    t = edit(TEXT, 'version: "2026-11-01.1"', 'version: "2026-12-01.1"')
    t = edit(t, "upper_soft: 0.9\n", "upper_soft: 0.95\n")
    t = edit(t, "lower_hard: 0.25", "lower_hard: 0.3")
    t = edit(t, "concentrations: [1, 2]", "concentrations: [2, 5]")
    t = edit(t, "weight_kg: {min: 40, max: 160}", "weight_kg: {min: 45, max: 180}")
    t = edit(
        t,
        "        max_cumulative_dose:              # mg/kg",
        "        bolus: {lower_hard: 0.05, lower_soft: 0.1, default: 0.2, upper_soft: 0.3,"
        " upper_hard: 0.5}\n        max_cumulative_dose:              # mg/kg",
    )
    changes = [str(c) for c in diff_libraries(lib(TEXT), lib(t))]
    assert changes == [
        "changed version: 2026-11-01.1 -> 2026-12-01.1",
        f"removed {K}.concentrations: 1 mg/mL (tightened)",
        f"added {K}.concentrations: 5 mg/mL (loosened)",
        f"changed {K}.weight_kg.min: 40 -> 45 kg (tightened)",
        f"changed {K}.weight_kg.max: 160 -> 180 kg (loosened)",
        f"changed {K}.rate.lower_hard: 0.25 -> 0.3 mg/kg/h (tightened)",
        f"changed {K}.rate.upper_soft: 0.9 -> 0.95 mg/kg/h (loosened)",
        f"added {K}.bolus (loosened)",
    ]


def test_care_areas_and_drugs_added_and_removed() -> None:
    t = edit(
        TEXT,
        "  recovery:\n",
        "  extra-area:\n    description: New\n    drugs:\n"
        "      saline:\n"
        "        name: Saline\n        concentrations: [9]\n        dosing_unit: mL/h\n"
        "        rate: {lower_hard: 5, lower_soft: 10, default: 20, upper_soft: 50, upper_hard: 100}\n"
        "        max_cumulative_dose: {upper_soft: 100, upper_hard: 250}\n"
        "        duration_min: {default: 60, upper_soft: 120, upper_hard: 180}\n"
        "  recovery:\n",
    )
    start = t.index("      sodium-chloride-0-9:\n")
    end = t.index("  extra-area:")
    t = t[:start] + t[end:]
    t = edit(
        t,
        "duration_min: {default: 60, upper_soft: 120, upper_hard: 180}\n        advisory: Keep",
        "duration_min: {lower_soft: 30, default: 60, upper_soft: 120, upper_hard: 180}"
        "\n        advisory: Keep",
    )
    changes = [str(c) for c in diff_libraries(lib(TEXT), lib(t))]
    assert changes == [
        "removed care_areas.ketamine-trd.drugs.sodium-chloride-0-9",
        "added care_areas.recovery.drugs.sodium-chloride-0-9.duration_min.lower_soft: 30 min "
        "(tightened)",
        "added care_areas.extra-area",
    ]


def test_dosing_unit_change_does_not_claim_looser_or_tighter() -> None:
    t = TEXT.replace(
        "dosing_unit: mL/h\n        rate: {lower_hard: 5, lower_soft: 5.5",
        "dosing_unit: mg/h\n        rate: {lower_hard: 5, lower_soft: 6",
    )
    d = diff_libraries(lib(TEXT), lib(t))
    p = "care_areas.recovery.drugs.sodium-chloride-0-9"
    assert [str(c) for c in d] == [
        f"changed {p}.dosing_unit: mL/h -> mg/h",
        f"changed {p}.rate.lower_soft: 5.5 -> 6 mg/h",
    ]
