"""Pump-vs-program conformance: the gateway stops the pump on any mismatch."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.druglib import DoseCheckError, check_conformance

RATE, VTBI = 52500, 35000  # the reference program: 52.5 mL/h, 35 mL


def kinds(*args: object, **kw: object) -> list[tuple[str, str]]:
    return [(m.field, m.kind) for m in check_conformance(*args, **kw)]  # type: ignore[arg-type]


def test_pump_doing_what_it_was_told() -> None:
    assert check_conformance(RATE, VTBI, RATE, 8750, 600) == []  # 10 min in
    assert check_conformance(RATE, VTBI, RATE, VTBI, 2400) == []  # done at 40 min
    assert check_conformance(RATE, VTBI, RATE, 0, 0) == []


@pytest.mark.parametrize(
    ("reported", "ok"),
    [(52500 + 525, True), (52500 - 525, True), (52500 + 526, False), (52500 - 526, False)],
)
def test_rate_within_one_percent(reported: int, ok: bool) -> None:
    assert kinds(RATE, VTBI, reported, 1000, 600) == ([] if ok else [("rate_ul_h", "rate")])


def test_small_rates_allow_one_ul_per_h_of_rounding() -> None:
    assert kinds(50, 1000, 51, 0, 0) == []
    assert kinds(50, 1000, 52, 0, 0) == [("rate_ul_h", "rate")]
    assert kinds(50, 1000, 52, 0, 0, rate_tolerance_ul_h=2) == []


def test_rate_mismatch_message() -> None:
    (m,) = check_conformance(RATE, VTBI, 60000, 1000, 600)
    assert (m.expected, m.actual, m.tolerance) == (RATE, 60000, 525)
    assert m.message == (
        "pump rate 60000 uL/h differs from the programmed 52500 uL/h by more than 525 uL/h"
    )


def test_infused_beyond_vtbi() -> None:
    # Tolerance max(50 uL, 0.5% of 35000 = 175 uL).
    assert kinds(RATE, VTBI, RATE, VTBI + 175, 3600) == []
    assert kinds(RATE, VTBI, RATE, VTBI + 176, 3600) == [("infused_ul", "over_vtbi")]


def test_infused_faster_than_time_allows() -> None:
    # 600 s (+5 s latency) at 52500 uL/h +1% = 8911 uL, + 175 uL tolerance = 9086 uL.
    assert kinds(RATE, VTBI, RATE, 9086, 600) == []
    assert kinds(RATE, VTBI, RATE, 9087, 600) == [("infused_ul", "ahead_of_time")]
    (m,) = check_conformance(RATE, VTBI, RATE, 20000, 600)
    assert m.expected == 8750 and m.actual == 20000
    # A free-flowing pump that reports the right rate is still caught by its volume.
    assert kinds(RATE, VTBI, RATE, 30000, Decimal("600.5")) == [("infused_ul", "ahead_of_time")]


def test_less_volume_than_expected_is_not_a_mismatch() -> None:
    assert check_conformance(RATE, VTBI, RATE, 0, 1200) == []  # paused or occluded


def test_missing_values_are_mismatches() -> None:
    assert kinds(RATE, VTBI, None, None, 60) == [
        ("rate_ul_h", "missing"),
        ("infused_ul", "missing"),
    ]


def test_negative_elapsed_is_refused() -> None:
    with pytest.raises(DoseCheckError):
        check_conformance(RATE, VTBI, RATE, 0, -1)


@given(
    rate=st.integers(min_value=1, max_value=500_000),
    minutes=st.integers(min_value=1, max_value=120),
    elapsed=st.integers(min_value=0, max_value=7200),
)
def test_exact_delivery_never_mismatches(rate: int, minutes: int, elapsed: int) -> None:
    vtbi = rate * minutes // 60
    infused = min(vtbi, rate * elapsed // 3600)
    assert check_conformance(rate, vtbi, rate, infused, elapsed) == []
