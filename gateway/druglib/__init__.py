"""Drug library: per-care-area dose limits, dose checks, overrides and library diffs.

The gateway is the dose-error-reduction authority for every chair: a program reaches a pump
only after ``check_program`` says OK (or SOFT with a named override), and the running
infusion is held to it by ``check_cumulative`` and ``check_conformance``. The numbers in any
library are the clinic's medical director's to set; the shipped example is an example only.
See docs/druglib.md.
"""

from __future__ import annotations

from gateway.druglib.check import (
    Authorization,
    CumulativeCheck,
    DoseCheck,
    DoseCheckError,
    Mismatch,
    PumpProgram,
    Verdict,
    Violation,
    apply_override,
    authorize,
    check_conformance,
    check_cumulative,
    check_program,
    check_rate_change,
)
from gateway.druglib.diff import Change, diff_libraries
from gateway.druglib.loader import DrugLibraryError, LibraryIssue, load_library, parse_library
from gateway.druglib.model import (
    CareArea,
    DosingUnit,
    DrugEntry,
    DrugLibrary,
    Limits,
    WeightRange,
)

__all__ = [
    "Authorization",
    "CareArea",
    "Change",
    "CumulativeCheck",
    "DoseCheck",
    "DoseCheckError",
    "DosingUnit",
    "DrugEntry",
    "DrugLibrary",
    "DrugLibraryError",
    "LibraryIssue",
    "Limits",
    "Mismatch",
    "PumpProgram",
    "Verdict",
    "Violation",
    "WeightRange",
    "apply_override",
    "authorize",
    "check_conformance",
    "check_cumulative",
    "check_program",
    "check_rate_change",
    "diff_libraries",
    "load_library",
    "parse_library",
]
