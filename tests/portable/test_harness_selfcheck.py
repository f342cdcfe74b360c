"""The harness itself: a failing case must fail the test (no test that cannot fail)."""

from tests.portable.harness import check_cases, raises


def test_check_cases_reports_failures():
    def fn(case):
        assert case < 2, "too big"

    e = raises(AssertionError, check_cases, "_selfcheck", [0, 1, 2, 3], fn)
    assert "2 of 4 cases failed" in str(e)


def test_raises_requires_an_exception():
    raises(AssertionError, raises, ValueError, lambda: None)
