"""The strict YAML reader both clinical files share: every trap refused, at its token."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yaml.nodes import Node

from gateway.druglib import DrugLibraryError, LibraryIssue
from gateway.interlocks import RuleIssue, RulesError
from gateway.yaml_strict import StrictReader, YamlFileError, YamlIssue, read_source


class _Reader(StrictReader[YamlIssue]):
    reviewed = "the test file"
    unhinted = frozenset({"upper_hard"})


class _LineOnly(_Reader):
    def first_note(self, node: Node) -> str:
        return f"first given on line {node.start_mark.line + 1}"


def messages(r: StrictReader[YamlIssue]) -> list[str]:
    return [str(i) for i in r.in_file_order()]


def read_fields(
    text: str,
    required: tuple[str, ...],
    optional: tuple[str, ...] = (),
    reader: type[_Reader] = _Reader,
) -> tuple[dict[str, tuple[Node, Node]] | None, list[str]]:
    r = reader("t.yaml", YamlIssue)
    root = r.compose(text)
    assert root is not None, r.issues
    out = r.fields(root, "block", required, optional)
    return out, [str(i) for i in r.issues]


# -- issues and errors ----------------------------------------------------------------------


def test_issue_names_file_line_column_and_path() -> None:
    assert str(YamlIssue("f.yaml", 3, 7, "a.b", "bad")) == "f.yaml:3:7: a.b: bad"
    assert str(YamlIssue("f.yaml", 3, 7, "", "bad")) == "f.yaml:3:7: bad"
    assert str(YamlIssue("f.yaml", 0, 0, "", "cannot read")) == "f.yaml: cannot read"


def test_both_clinical_files_share_the_issue_and_error_types() -> None:
    lib = LibraryIssue("l.yaml", 1, 2, "x", "m")
    rule = RuleIssue("r.yaml", 1, 2, "x", "m")
    assert isinstance(lib, YamlIssue) and isinstance(rule, YamlIssue)
    assert str(lib) == "l.yaml:1:2: x: m" and str(rule) == "r.yaml:1:2: x: m"
    assert lib != YamlIssue("l.yaml", 1, 2, "x", "m")  # a library issue is not a rules issue
    err = DrugLibraryError([lib])
    assert isinstance(err, YamlFileError) and isinstance(err, ValueError)
    assert err.issues == (lib,) and str(err) == "l.yaml:1:2: x: m"
    assert issubclass(RulesError, YamlFileError)


def test_read_source_raises_the_callers_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError) as e:
        read_source(tmp_path / "none.yaml", 10, RulesError, RuleIssue)
    (issue,) = e.value.issues
    assert isinstance(issue, RuleIssue)
    assert (issue.line, issue.path) == (0, "")
    assert issue.message.startswith("cannot read the file (")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"x" * 100)
    source, data = read_source(big, 10, RulesError, RuleIssue)
    assert source == str(big) and data == b"x" * 11  # one past the limit shows it is too large


# -- the document ---------------------------------------------------------------------------


def test_document_refuses_large_non_utf8_and_says_empty() -> None:
    r = _Reader("t.yaml", YamlIssue)
    assert r.document(b"a: 1\n" * 10, 20) is None
    assert messages(r) == ["t.yaml:1:1: file is larger than 20 bytes"]
    r = _Reader("t.yaml", YamlIssue)
    assert r.document(b"a: \xff\n", 100) is None
    assert messages(r) == ["t.yaml:1:1: not UTF-8 text (byte 3)"]
    r = _Reader("t.yaml", YamlIssue)
    assert r.document(b"# nothing\n", 100) is None
    assert messages(r) == ["t.yaml:1:1: the file is empty"]
    r = _Reader("t.yaml", YamlIssue)
    assert r.document(b"a: 1\n", 100) is not None and r.issues == []


def test_every_alias_is_refused_at_its_position() -> None:
    r = _Reader("t.yaml", YamlIssue)
    assert r.compose("a: &x 1\nb: *x\nc: [2, *x]\n") is None
    assert messages(r) == [
        "t.yaml:2:4: alias *x is not allowed: write every value out where it applies so "
        "the test file can be reviewed line by line",
        "t.yaml:3:8: alias *x is not allowed: write every value out where it applies so "
        "the test file can be reviewed line by line",
    ]


def test_yaml_syntax_error_is_located() -> None:
    r = _Reader("t.yaml", YamlIssue)
    assert r.compose("a: 1\nb: [2\nc: 3\n") is None
    assert messages(r) == ["t.yaml:3:2: YAML error: expected ',' or ']', but got ':'"]
    r = _Reader("t.yaml", YamlIssue)
    assert r.compose("a: 1\n---\nb: 2\n") is None
    (msg,) = messages(r)
    assert msg.startswith("t.yaml:2:1: YAML error: but found another document")


def test_issues_come_out_in_file_order() -> None:
    r = _Reader("t.yaml", YamlIssue)
    root = r.compose("b: 1\na: 2\n")
    assert root is not None
    r.error(root.value[1][0], "late", "second")
    r.error(root.value[0][0], "early", "first")
    assert messages(r) == ["t.yaml:1:1: early: first", "t.yaml:2:1: late: second"]


# -- fixed-key mappings ---------------------------------------------------------------------


def test_known_fields_are_returned_with_their_nodes() -> None:
    out, errs = read_fields("low: 1\nhigh: 2\n", ("low",), ("high", "unused"))
    assert errs == [] and out is not None
    assert {k: v.value for k, (_, v) in out.items()} == {"low": "1", "high": "2"}


def test_unknown_field_gets_a_hint_or_the_list() -> None:
    _, errs = read_fields("low: 1\nhihg: 2\n", ("low",), ("high",))
    assert errs == ["t.yaml:2:1: block: unknown field 'hihg'; did you mean 'high'?"]
    _, errs = read_fields("low: 1\nzzz: 2\n", ("low",), ("high",))
    assert errs == ["t.yaml:2:1: block: unknown field 'zzz' (allowed: low, high)"]


def test_an_unhinted_name_gets_the_list_not_a_guess() -> None:
    _, errs = read_fields("low: 1\nupper_hard: 2\n", ("low",), ("upper_soft",))
    assert errs == ["t.yaml:2:1: block: unknown field 'upper_hard' (allowed: low, upper_soft)"]


def test_duplicate_field_names_where_it_was_first_given() -> None:
    text = "low: 1\nhigh: 2\nlow: 3\n"
    _, errs = read_fields(text, ("low",), ("high",))
    assert errs == ["t.yaml:3:1: block: duplicate field 'low' (first at line 1, column 1)"]
    _, errs = read_fields(text, ("low",), ("high",), reader=_LineOnly)
    assert errs == ["t.yaml:3:1: block: duplicate field 'low' (first given on line 1)"]


def test_missing_fields_point_at_the_mapping_or_the_anchor() -> None:
    _, errs = read_fields("x: 0\nlow: 1\n", ("low", "high", "for_s"), ("x",))
    assert errs == [
        "t.yaml:1:1: block: missing required field 'high'",
        "t.yaml:1:1: block: missing required field 'for_s'",
    ]
    r = _Reader("t.yaml", YamlIssue)
    root = r.compose("band:\n  low: 1\n")
    assert root is not None
    key, value = root.value[0]
    r.fields(value, "band", ("low", "high"), anchor=key)
    assert messages(r) == ["t.yaml:1:1: band: missing required field 'high'"]
    r = _Reader("t.yaml", YamlIssue)
    r.fields(value, "band", ("low", "high"))
    assert messages(r) == ["t.yaml:2:3: band: missing required field 'high'"]


def test_merge_keys_and_non_word_keys_are_refused() -> None:
    _, errs = read_fields("low: 1\n<<: {high: 2}\n", ("low",), ("high",))
    assert errs == ["t.yaml:2:1: block: merge keys (<<) are not allowed: write every field out"]
    _, errs = read_fields("low: 1\n? [a]\n: 2\n", ("low",))
    assert errs == ["t.yaml:2:3: block: field names must be plain words"]


def test_a_non_mapping_is_refused() -> None:
    r = _Reader("t.yaml", YamlIssue)
    root = r.compose("- 1\n")
    assert root is not None
    assert r.fields(root, "block", ("low",)) is None
    assert messages(r) == ["t.yaml:1:1: block: must be a mapping of fields"]


# -- scalars --------------------------------------------------------------------------------


def value_issue(written: str, *, signed: bool = False) -> tuple[Decimal | None, list[str]]:
    r = _Reader("t.yaml", YamlIssue)
    root = r.compose(f"v: {written}\n")
    assert root is not None, r.issues
    value = r.decimal(root.value[0][1], "v", signed=signed, example="1 or 2.5")
    return value, [str(i) for i in r.issues]


@pytest.mark.parametrize(
    ("written", "why"),
    [
        ('"90"', "must be a number, not quoted text '90'"),
        ("'-2.5'", "must be a number, not quoted text '-2.5'"),
        ("~", "must be a number, not empty"),
        ("fast", "must be a number, not 'fast'"),
        ("[1]", "must be a number, not a list"),
        ("{a: 1}", "must be a number, not a mapping"),
        ("1e3", "must be a number, not '1e3'"),  # YAML 1.1 reads it as text
    ],
)
def test_what_is_not_a_number_is_named(written: str, why: str) -> None:
    value, errs = value_issue(written)
    assert value is None and errs == [f"t.yaml:1:4: v: {why}"]


@pytest.mark.parametrize(
    "written", ["1.0e+3", ".5", "0x10", "1_000", "010", "1:30", ".inf", "+1", "-1"]
)
def test_yaml_number_forms_are_refused(written: str) -> None:
    value, errs = value_issue(written)
    assert value is None
    assert errs == [
        f"t.yaml:1:4: v: must be a plain decimal number such as 1 or 2.5, not '{written}' "
        "(no signs, exponents, underscores, leading zeros, hex or infinities)"
    ]


def test_signed_decimals_allow_only_a_minus() -> None:
    assert value_issue("-2.50", signed=True) == (Decimal("-2.50"), [])
    value, errs = value_issue("+2", signed=True)
    assert value is None
    assert errs == [
        "t.yaml:1:4: v: must be a plain decimal number such as 1 or 2.5, not '+2' "
        "(no '+', exponents, underscores, leading zeros, hex or infinities)"
    ]


def _written_as_on_paper(text: str, signed: bool) -> bool:
    """The decimal grammar, spelled out differently from the reader's regular expression."""
    if signed and text.startswith("-"):
        text = text[1:]
    whole, dot, frac = text.partition(".")
    if not whole.isascii() or not whole.isdigit() or (len(whole) > 1 and whole[0] == "0"):
        return False
    return not dot or (frac.isascii() and frac.isdigit())


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789.-+e_x", min_size=1, max_size=8), st.booleans())
def test_a_number_is_read_exactly_as_written_or_refused_once(text: str, signed: bool) -> None:
    if text.startswith("-") and text[1:2] in ("", " "):
        return  # "- " would be a YAML list item, not a scalar
    value, errs = value_issue(text, signed=signed)
    if _written_as_on_paper(text, signed):
        assert errs == [] and value is not None and str(value) == text
    else:
        assert value is None and len(errs) == 1
        assert re.match(r"t\.yaml:1:4: v: must be ", errs[0])


@pytest.mark.parametrize(
    ("written", "why"),
    [
        ("[a]", "must be true or false, not a list"),
        ('"1"', "must be true or false, not quoted text '1'"),
        ("yes", "must be true or false, not 'yes'"),
    ],
)
def test_not_a_explains_the_likely_slip(written: str, why: str) -> None:
    r = _Reader("t.yaml", YamlIssue)
    root = r.compose(f"v: {written}\n")
    assert root is not None
    r.not_a(root.value[0][1], "v", "true or false")
    assert messages(r) == [f"t.yaml:1:4: v: {why}"]
