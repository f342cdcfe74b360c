"""Tiny test harness shared by CPython (pytest) and MicroPython (run.py).

Portable test modules use plain ``assert`` and these helpers only, so the very same file
runs under pytest as the oracle and under the MicroPython unix port.

Vector-driven tests call :func:`check_cases`, which runs every case, tallies passes per
vector set (printed at the end by both runners) and fails once, listing every case that
failed, so one bad vector never hides the next.
"""

import json

try:
    import os

    _getenv = os.getenv
except (ImportError, AttributeError):  # pragma: no cover - ports without getenv

    def _getenv(name, default=None):
        return default


# name -> [passed, failed]; read by the runners to print "N vectors passed" per interpreter.
TALLY = {}


def vectors_dir():
    """Where ../shared/vectors lives: $IVGW_VECTORS, else beside the repository root."""
    path = _getenv("IVGW_VECTORS")
    if path:
        return path
    for candidate in ("../shared/vectors", "../../shared/vectors", "../../../shared/vectors"):
        try:
            os.stat(candidate + "/PROVENANCE.md")
            return candidate
        except OSError:
            pass
    raise OSError("test vectors not found: set IVGW_VECTORS to the shared/vectors directory")


def load_json(relpath):
    with open(vectors_dir() + "/" + relpath) as f:
        return json.load(f)


def local_vectors(relpath):
    """Vectors we made ourselves live in tests/vectors/ (the shared ones are read-only)."""
    root = _getenv("IVGW_ROOT") or "."
    with open(root + "/tests/vectors/" + relpath) as f:
        return json.load(f)


def check_cases(name, cases, fn, label=None):
    """Run ``fn(case)`` for each case; raise AssertionError naming all failures."""
    passed = 0
    failures = []
    for i, case in enumerate(cases):
        tag = label(case) if label else str(i)
        try:
            fn(case)
            passed += 1
        except Exception as e:  # noqa: BLE001 - a harness reports every failure kind
            failures.append("%s: %s: %r" % (tag, type(e).__name__, e))
    counts = TALLY.get(name)
    if counts is None:
        counts = TALLY[name] = [0, 0]
    counts[0] += passed
    counts[1] += len(failures)
    if failures:
        raise AssertionError(
            "%s: %d of %d cases failed:\n  %s"
            % (name, len(failures), len(cases), "\n  ".join(failures[:20]))
        )
    return passed


def raises(exc_type, fn, *args):
    """Call fn(*args) and return the exception it raised; fail if it raised nothing."""
    try:
        fn(*args)
    except exc_type as e:
        return e
    raise AssertionError("%r did not raise %s" % (fn, exc_type.__name__))


def tally_lines():
    out = []
    for name in sorted(TALLY):
        if name.startswith("_"):  # the harness's own self-check
            continue
        p, f = TALLY[name]
        out.append("vectors %s: %d passed, %d failed" % (name, p, f))
    return out
