"""Run the portable tests under MicroPython (or CPython) without pytest.

Usage (from the repository root):  micropython tests/portable/run.py [module ...]
Prints one line per test, a tally per vector set, and the closing line
"N passed, M failed"; exits non-zero if anything failed.
"""

import sys

try:
    import os

    _listdir = os.listdir
except ImportError:  # pragma: no cover
    _listdir = None

from tests.portable import harness


def _modules(argv):
    if argv:
        return argv
    names = [n[:-3] for n in _listdir("tests/portable") if n.startswith("test_") and n.endswith(".py")]
    names.sort()
    return names


def main(argv):
    passed = failed = 0
    for modname in _modules(argv):
        try:
            mod = __import__("tests.portable." + modname, None, None, ["*"])
        except Exception as e:  # noqa: BLE001 - an import error is a failure to report
            print("FAIL %s (import): %s: %s" % (modname, type(e).__name__, e))
            failed += 1
            continue
        names = [n for n in dir(mod) if n.startswith("test_")]
        names.sort()
        for name in names:
            fn = getattr(mod, name)
            if not callable(fn):
                continue
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                failed += 1
                print("FAIL %s.%s: %s: %s" % (modname, name, type(e).__name__, e))
            else:
                passed += 1
                print("ok   %s.%s" % (modname, name))
    for line in harness.tally_lines():
        print(line)
    print("%d passed, %d failed" % (passed, failed))
    return failed


if __name__ == "__main__":
    sys.exit(1 if main(sys.argv[1:]) else 0)
