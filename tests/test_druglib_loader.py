"""Drug library loader: every fault reported with file, line, column and field path."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.druglib import DosingUnit, DrugLibraryError, load_library, parse_library

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "druglib.example.yaml"

HEADER = """\
format: 1
name: Test library
version: "t.1"
approved_by: Dr Test
approved_on: 2026-11-01
care_areas:
  area:
    description: Test area
    drugs:
      drug:
"""
# Entry lines start at line 11 (name) and run to line 24 (advisory).
ENTRY = """\
        name: Drug
        concentrations: [1, 2]
        dosing_unit: mg/kg/h
        weight_kg: {min: 40, max: 160}
        rate:
          lower_hard: 0.25
          lower_soft: 0.5
          default: 0.75
          upper_soft: 0.9
          upper_hard: 1.0
        bolus: {lower_hard: 0.05, lower_soft: 0.1, default: 0.2, upper_soft: 0.3, upper_hard: 0.5}
        max_cumulative_dose: {upper_soft: 0.75, upper_hard: 1.0}
        duration_min: {lower_hard: 20, lower_soft: 40, default: 40, upper_soft: 60, upper_hard: 90}
        advisory: Test.
"""
P = "care_areas.area.drugs.drug"


def errors(text: str) -> list[str]:
    with pytest.raises(DrugLibraryError) as e:
        parse_library(text.encode(), "f.yaml")
    assert str(e.value) == "\n".join(str(i) for i in e.value.issues)
    return [str(i) for i in e.value.issues]


def entry_errors(old: str, new: str) -> list[str]:
    assert ENTRY.count(old) == 1, old
    return errors(HEADER + ENTRY.replace(old, new))


def test_base_document_loads() -> None:
    lib = parse_library((HEADER + ENTRY).encode(), "f.yaml")
    e = lib.entry("area", "drug")
    assert e is not None
    assert e.dosing_unit is DosingUnit.MG_PER_KG_H
    assert e.concentrations == (Decimal("1"), Decimal("2"))
    assert e.rate.upper_hard == Decimal("1.0")
    assert e.bolus is not None and e.bolus.upper_hard == Decimal("0.5")
    assert e.duration_min.lower_hard == Decimal("20")
    assert e.weight_kg is not None and e.weight_kg.max == Decimal("160")
    assert lib.approved_on.isoformat() == "2026-11-01"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "upper_soft: 0.9",
            "upper_soft: 1.2",
            f"f.yaml:19:23: {P}.rate.upper_soft: must be below upper_hard (1.0 mg/kg/h)",
        ),
        (
            "upper_soft: 0.9",
            "upper_soft: 1.0",
            f"f.yaml:19:23: {P}.rate.upper_soft: must be below upper_hard (1.0 mg/kg/h)",
        ),
        (
            "lower_soft: 0.5",
            "lower_soft: 0.8",
            f"f.yaml:17:23: {P}.rate.lower_soft: must not be above default (0.75 mg/kg/h)",
        ),
        (
            "lower_hard: 0.25",
            "lower_hard: 0.5",
            f"f.yaml:16:23: {P}.rate.lower_hard: must be below lower_soft (0.5 mg/kg/h)",
        ),
        (
            "default: 0.75",
            "default: 0.95",
            f"f.yaml:18:20: {P}.rate.default: must not be above upper_soft (0.9 mg/kg/h)",
        ),
        (
            "          upper_hard: 1.0\n",
            "          upper_hard: 1.0\n          uper_soft: 0.8\n",
            f"f.yaml:21:11: {P}.rate: unknown field 'uper_soft'; did you mean 'upper_soft'?",
        ),
        (
            "        dosing_unit: mg/kg/h\n",
            "",
            f"f.yaml:10:7: {P}: missing required field 'dosing_unit'",
        ),
        (
            "          upper_hard: 1.0\n",
            "",
            f"f.yaml:15:9: {P}.rate: missing required field 'upper_hard'",
        ),
        (
            "dosing_unit: mg/kg/h",
            "dosing_unit: mg/kg/hr",
            f"f.yaml:13:22: {P}.dosing_unit: must be one of mg/kg/h, mg/h, mL/h, not 'mg/kg/hr'",
        ),
        (
            "default: 0.75",
            "default: fast",
            f"f.yaml:18:20: {P}.rate.default: must be a number, not 'fast'",
        ),
        (
            "default: 0.75",
            'default: "0.75"',
            f"f.yaml:18:20: {P}.rate.default: must be a number, not quoted text '0.75'",
        ),
        (
            "default: 0.75",
            "default:",
            f"f.yaml:18:19: {P}.rate.default: must be a number, not empty",
        ),
        (
            "lower_hard: 0.25",
            "lower_hard: -0.25",
            f"f.yaml:16:23: {P}.rate.lower_hard: must be greater than 0, not -0.25",
        ),
        (
            "lower_hard: 0.25",
            "lower_hard: 0",
            f"f.yaml:16:23: {P}.rate.lower_hard: must be greater than 0, not 0",
        ),
        (
            "          default: 0.75\n",
            "          default: 0.75\n          default: 0.8\n",
            f"f.yaml:19:11: {P}.rate: duplicate field 'default' (first at line 18, column 11)",
        ),
        (
            "concentrations: [1, 2]",
            "concentrations: [1, 1.0]",
            f"f.yaml:12:29: {P}.concentrations: duplicate concentration 1.0 mg/mL "
            "(first at line 12, column 26)",
        ),
        (
            "concentrations: [1, 2]",
            "concentrations: []",
            f"f.yaml:12:25: {P}.concentrations: must be a non-empty list of concentrations "
            "in mg/mL, such as [1, 2]",
        ),
        (
            "{min: 40, max: 160}",
            "{min: 160, max: 40}",
            f"f.yaml:14:26: {P}.weight_kg.min: must be below max (40 kg)",
        ),
        (
            "        weight_kg: {min: 40, max: 160}\n",
            "",
            f"f.yaml:10:7: {P}: missing required field 'weight_kg' "
            "(dosing unit mg/kg/h is weight-based)",
        ),
        (
            "upper_soft: 0.3, upper_hard: 0.5}",
            "upper_soft: 0.3, upper_hard: 1.5}",
            f"f.yaml:21:95: {P}.bolus.upper_hard: must not be above "
            "max_cumulative_dose.upper_hard (1.0 mg/kg)",
        ),
        (
            "{upper_soft: 0.75, upper_hard: 1.0}",
            "{upper_soft: 0.4, upper_hard: 1.0}",
            f"f.yaml:22:43: {P}.max_cumulative_dose.upper_soft: is below the default program's "
            "dose (0.5 mg/kg = rate.default x duration_min.default), so every default program "
            "would need an override",
        ),
        (
            "name: Drug",
            "name: " + "X" * 33,
            f"f.yaml:11:15: {P}.name: must be at most 32 characters, not 33",
        ),
        (
            "{upper_soft: 0.75, upper_hard: 1.0}",
            "{upper_soft: 0.75, upper_hard: 1.0, lower_hard: 0.1}",
            f"f.yaml:22:66: {P}.max_cumulative_dose: unknown field 'lower_hard' "
            "(allowed: upper_soft, upper_hard)",
        ),
        (
            "        advisory: Test.\n",
            "        advisory: Test.\n        advisroy: Typo.\n",
            f"f.yaml:25:9: {P}: unknown field 'advisroy'; did you mean 'advisory'?",
        ),
    ],
)
def test_entry_fault_is_located_exactly(old: str, new: str, expected: str) -> None:
    assert entry_errors(old, new) == [expected]


@pytest.mark.parametrize("text", ["1e3", "1.0e+3", ".5", "0x10", "1_000", "010", ".inf", ".nan"])
def test_yaml_number_forms_are_refused(text: str) -> None:
    (msg,) = entry_errors("          upper_hard: 1.0", f"          upper_hard: {text}")
    assert msg.startswith(f"f.yaml:20:23: {P}.rate.upper_hard: must be ")
    assert f"'{text}'" in msg


def test_every_error_is_reported_in_file_order() -> None:
    text = HEADER + ENTRY.replace("upper_soft: 0.9", "upper_soft: x").replace(
        "dosing_unit: mg/kg/h", "dosing_unit: ml/h"
    ).replace("concentrations: [1, 2]", "concentrations: [1, -2]")
    assert errors(text) == [
        f"f.yaml:12:29: {P}.concentrations: must be greater than 0, not -2",
        f"f.yaml:13:22: {P}.dosing_unit: must be one of mg/kg/h, mg/h, mL/h, not 'ml/h'",
        f"f.yaml:19:23: {P}.rate.upper_soft: must be a number, not 'x'",
    ]


def test_top_level_faults() -> None:
    text = (
        HEADER.replace("approved_on: 2026-11-01", "approved_on: 2026-13-01").replace(
            'version: "t.1"', "version: two words"
        )
        + ENTRY
        + "extra: 1\n"
    )
    assert errors(text) == [
        "f.yaml:3:10: version: must be one word of letters, digits, '.', '-', '_' or '+', "
        "such as 2026-11-01.1",
        "f.yaml:5:14: approved_on: must be a date written YYYY-MM-DD, not '2026-13-01'",
        "f.yaml:25:1: unknown field 'extra' (allowed: format, name, version, approved_by, "
        "approved_on, care_areas)",
    ]


def test_missing_top_level_fields_point_at_document_start() -> None:
    assert errors("format: 1\nname: x\n") == [
        "f.yaml:1:1: missing required field 'version'",
        "f.yaml:1:1: missing required field 'approved_by'",
        "f.yaml:1:1: missing required field 'approved_on'",
        "f.yaml:1:1: missing required field 'care_areas'",
    ]


def test_unsupported_format_is_the_only_error() -> None:
    assert errors("format: 2\nwhatever: 1\n") == [
        "f.yaml:1:9: format: unsupported format '2' (this gateway reads format 1)"
    ]


def test_duplicate_and_malformed_ids() -> None:
    text = HEADER + ENTRY + "      drug:\n" + ENTRY + "  Bad Area:\n    description: x\n"
    assert errors(text) == [
        "f.yaml:25:7: care_areas.area.drugs: duplicate drug 'drug' (first at line 10, column 7)",
        "f.yaml:40:3: care_areas: care area id 'Bad Area' must be 1-32 lowercase letters, "
        "digits, '-' or '_'",
    ]


def test_care_area_without_drugs() -> None:
    text = HEADER.replace("    drugs:\n      drug:\n", "    drugs: {}\n")
    assert errors(text) == ["f.yaml:9:12: care_areas.area.drugs: must list at least one drug"]


def test_alias_is_refused() -> None:
    text = (
        (HEADER + ENTRY)
        .replace("name: Drug", "name: &n Drug")
        .replace("advisory: Test.", "advisory: *n")
    )
    assert errors(text) == [
        "f.yaml:24:19: alias *n is not allowed: write every value out where it applies so the "
        "library can be reviewed line by line"
    ]


def test_yaml_syntax_error_is_located() -> None:
    assert errors("format: 1\nname: [unclosed\nversion: x\n") == [
        "f.yaml:3:8: YAML error: expected ',' or ']', but got ':'"
    ]


def test_empty_and_non_mapping_documents() -> None:
    assert errors("") == ["f.yaml:1:1: the file is empty"]
    assert errors("# only a comment\n") == ["f.yaml:1:1: the file is empty"]
    assert errors("- 1\n") == ["f.yaml:1:1: must be a mapping of fields"]


def test_not_utf8() -> None:
    with pytest.raises(DrugLibraryError, match=r"f.yaml:1:1: not UTF-8 text"):
        parse_library(b"format: 1\nname: \xff\n", "f.yaml")


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(DrugLibraryError, match=r"nope\.yaml: cannot read the file"):
        load_library(missing)


def test_example_library_loads_and_is_marked_as_example() -> None:
    lib = load_library(EXAMPLE)
    text = EXAMPLE.read_text(encoding="utf-8")
    assert text.startswith(
        "# EXAMPLE ONLY — values must be set and approved by the clinic's medical director"
    )
    assert set(lib.care_areas) == {"ketamine-trd", "recovery"}
    k = lib.entry("ketamine-trd", "ketamine")
    assert k is not None
    assert k.rate.upper_hard == Decimal("1.0")
    assert k.rate.default == Decimal("0.75")
    assert k.bolus is None
    assert k.duration_min.default == Decimal("40")
    assert k.duration_min.upper_hard == Decimal("90")


def test_content_hash_is_sha256_of_file_bytes(tmp_path: Path) -> None:
    data = EXAMPLE.read_bytes()
    lib = load_library(EXAMPLE)
    assert lib.sha256 == hashlib.sha256(data).hexdigest()
    copy = tmp_path / "copy.yaml"
    copy.write_bytes(data)
    assert load_library(copy).sha256 == lib.sha256
    # A comment changes the document, so it changes the identity even if no limit changed.
    copy.write_bytes(data + b"# reviewed\n")
    again = load_library(copy)
    assert again.sha256 != lib.sha256
    assert again.care_areas == lib.care_areas
    assert lib.ident == f"{lib.version} ({lib.sha256[:12]})"


def test_numbers_are_decimal_not_float() -> None:
    text = HEADER + ENTRY.replace("upper_soft: 0.9", "upper_soft: 0.9000000000000000000001")
    e = parse_library(text.encode(), "f.yaml").entry("area", "drug")
    assert e is not None
    assert e.rate.upper_soft == Decimal("0.9000000000000000000001")
    assert e.rate.upper_soft > Decimal("0.9")
