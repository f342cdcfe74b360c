"""The interlock rules loader: the example file loads, and every fault is named at its token."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.interlocks import RulesError, load_ruleset, parse_ruleset
from protocol import mdc

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "rules.example.yaml"

BASE = """\
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
    critical: {high: 150, for_s: 0, clear_s: 20}
combine:
  warnings_to_alarm: 2
  missing_counts_as_warning: true
pump:
  trip_on_alarms: [stalled]
  node_offline_s: 5
"""


def pos(text: str, needle: str, nth: int = 0) -> str:
    """1-based 'line:col' of the nth occurrence of needle in text."""
    i = -1
    for _ in range(nth + 1):
        i = text.index(needle, i + 1)
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    return f"{line}:{col}"


def errors(text: str) -> list[str]:
    with pytest.raises(RulesError) as e:
        parse_ruleset(text, "r.yaml")
    lines = str(e.value).splitlines()
    assert len(lines) == len(e.value.issues)
    return lines


def test_example_loads_and_is_identified_by_its_bytes() -> None:
    rs = load_ruleset(EXAMPLE)
    assert rs.protocol == "ketamine-trd"
    assert rs.sha256 == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    spo2 = rs.parameter("spo2")
    assert spo2.sources == (mdc.SPO2,)
    assert spo2.critical is not None and spo2.critical.low == Decimal(90)
    assert rs.parameter("hr").sources == (mdc.HR_ECG, mdc.PULSE_OXIM)
    assert rs.parameter("nibp_sys").max_age_s == 900
    assert rs.combine.warnings_to_alarm == 2 and rs.combine.missing_counts_as_warning
    assert rs.pump.trips_on("stalled") and rs.pump.trips_on("anything")
    assert "ketamine-trd" in rs.summary() and rs.sha256 in rs.summary()


def test_example_says_it_is_an_example() -> None:
    head = EXAMPLE.read_text().splitlines()[:5]
    assert any("EXAMPLE ONLY" in line for line in head)
    assert any("medical director" in line for line in head)


def test_base_loads_with_defaults() -> None:
    rs = parse_ruleset(BASE, "r.yaml")
    hr = rs.parameter("hr")
    assert hr.warning is not None and hr.warning.clear_s == 0  # clear_s defaults to for_s
    assert hr.critical is not None and hr.critical.clear_s == 20
    assert rs.pump.trips_on("STALLED") and not rs.pump.trips_on("low_battery")
    assert rs.source == "r.yaml"


def test_default_sources_by_name() -> None:
    text = BASE.replace("    sources: [150456]\n", "")
    assert parse_ruleset(text).parameter("spo2").sources == (mdc.SPO2,)


# (replace this, with that, the token the error must point at, words the message must hold)
FAULTS = [
    ("pump:\n  trip", "pump:\n  <<: {x: 1}\n  trip", "<<", "pump: merge keys (<<) are not allowed"),
    ("approved_by:", "aproved_by:", "aproved_by", "unknown field 'aproved_by'; did you mean"),
    (
        "    critical: {low: 90",
        "    critcal: {low: 90",
        "critcal",
        "parameters.spo2: unknown field",
    ),
    (
        "max_age_s: 10\n    warning: {low: 92",
        "max_age_s: 10\n    max_age_s: 9\n    warning: {low: 92",
        "max_age_s: 9",
        "duplicate field 'max_age_s' (first given on line 9)",
    ),
    ("{low: 90, for_s: 10}", '{low: "90", for_s: 10}', '"90"', "not quoted text '90'"),
    ("{low: 90, for_s: 10}", "{low: -90, for_s: 10}", "-90", "plain decimal number"),
    ("{low: 90, for_s: 10}", "{low: 0x5A, for_s: 10}", "0x5A", "plain decimal number"),
    ("{low: 90, for_s: 10}", "{low: .inf, for_s: 10}", ".inf", "plain decimal number"),
    ("{low: 90, for_s: 10}", "{low: 90, for_s: 1e3}", "1e3", "must be a number"),
    (
        "{low: 50, high: 110, for_s: 0}",
        "{low: 120, high: 110, for_s: 0}",
        "110, for_s: 0",
        "must be above low (120)",
    ),
    ("{low: 92, for_s: 5}", "{low: 88, for_s: 5}", "88", "warning low 88 is below critical low 90"),
    (
        "{high: 150, for_s: 0, clear_s: 20}",
        "{high: 100, for_s: 0, clear_s: 20}",
        "110",
        "warning high 110 is above critical high 100",
    ),
    (
        "    max_age_s: 10\n    warning: {low: 92",
        "    warning: {low: 92",
        "sources: [150456]",
        "missing required field 'max_age_s'",
    ),
    ("format: 1", "format: 2", "2", "unsupported format '2'"),
    ("[150456]", "[150457]", "150457", "150457 is not a vital the nodes send"),
    ("[147842, 149530]", "[147842, 147842]", "147842]", "listed twice"),
    ("  spo2:\n    sources: [150456]\n", "  sat:\n", "sat", "'sat' is not a known vital"),
    ("  spo2:", "  pump:", "pump:", "reserved"),
    ("  spo2:", "  SpO2:", "SpO2", "lowercase"),
    ("required_for_permit: true", "required_for_permit: yes", "yes", "true or false"),
    ("max_age_s: 10", "max_age_s: 0", "0\n    warning", "greater than 0 seconds"),
    ("max_age_s: 10", "max_age_s: 100000", "100000", "at most 86400 seconds"),
    ("warnings_to_alarm: 2", "warnings_to_alarm: 0", "0\n  missing", "at least 1"),
    ("warnings_to_alarm: 2", "warnings_to_alarm: 1.5", "1.5", "whole number"),
    ("[stalled]", "[Stalled!]", "Stalled!", "alarm code 'Stalled!'"),
    ("[stalled]", "some", "some", "'any' or a list of pump alarm codes"),
    ('version: "t1"', "version: 1.10", "1.10", "quote it"),
    ("{low: 92, for_s: 5}", "{for_s: 5}", "{for_s: 5}", "must give a 'low' limit"),
    ("{low: 92, for_s: 5}", "{low: 92}", "{low: 92}", "missing required field 'for_s'"),
    ("    sources: [150456]", "    sources: 150456", "150456", "must be a list of MDC codes"),
    ("pump:\n  trip", "pump: &p\n  trip", "*p", "alias *p is not allowed"),
    ("node_offline_s: 5", "node_offline_s:\n  - 5", "- 5", "must be a number, not a list"),
    ("protocol: test-proto", "protocol: Test Proto", "Test Proto", "lowercase letters"),
    (
        BASE[BASE.index("  hr:") : BASE.index("combine:")],
        "  hr: [1]\n",
        "[1]",
        "parameters.hr: must be a mapping of fields",
    ),
]


@pytest.mark.parametrize("old,new,token,words", FAULTS)
def test_fault_is_reported_at_its_token(old: str, new: str, token: str, words: str) -> None:
    assert old in BASE
    text = BASE.replace(old, new, 1)
    if new.endswith("*p") or "&p" in new:
        text += "extra: *p\n"
    found = errors(text)
    where = f"r.yaml:{pos(text, token)}: "
    assert any(line.startswith(where) and words in line for line in found), (where, found)


def test_yaml_syntax_error_has_line_and_column() -> None:
    text = BASE.replace("  node_offline_s: 5", "  node_offline_s: [5")
    assert errors(text) == ["r.yaml:24:1: YAML error: expected ',' or ']', but got '<stream end>'"]
    bad_indent = BASE.replace(
        "    max_age_s: 10\n    warning: {low: 50", "   max_age_s: 10\n    warning: {low: 50"
    )
    (line,) = errors(bad_indent)
    assert line.startswith(f"r.yaml:{pos(bad_indent, 'max_age_s: 10', 1)}: YAML error: ")


def test_every_error_is_listed_in_file_order() -> None:
    text = (
        BASE.replace("approved_by:", "aproved_by:")
        .replace("{low: 90, for_s: 10}", '{low: "90", for_s: 10}')
        .replace("node_offline_s: 5", "node_offline_s: -5")
    )
    found = errors(text)
    assert [f.split(":")[1] for f in found] == ["1", "4", "11", "23"]
    assert found[0] == "r.yaml:1:1: missing required field 'approved_by'"
    assert found[1].startswith("r.yaml:4:1: unknown field 'aproved_by'")


def test_empty_and_unreadable_files(tmp_path: Path) -> None:
    assert errors("") == ["r.yaml:1:1: the file is empty"]
    assert errors("# only a comment\n") == ["r.yaml:1:1: the file is empty"]
    (line,) = errors("- a\n- b\n")
    assert line.startswith("r.yaml:1:1: must be a mapping of fields")
    with pytest.raises(RulesError, match="cannot read the file"):
        load_ruleset(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"format: 1\nprotocol: \xff\n")
    with pytest.raises(RulesError, match="not UTF-8"):
        load_ruleset(bad)


def test_two_documents_are_refused() -> None:
    (line,) = errors(BASE + "---\nformat: 1\n")
    assert line.startswith("r.yaml:24:1: YAML error: but found another document")


def test_the_documented_example_is_valid() -> None:
    doc = (ROOT / "docs" / "interlocks.md").read_text()
    snippet = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    rs = parse_ruleset(snippet, "doc")
    assert [p.name for p in rs.parameters] == ["spo2", "hr"]
