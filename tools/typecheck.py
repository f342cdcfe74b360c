"""Type-check protocol/ and firmware/ against MicroPython rp2 stubs (run by `make typecheck`).

The stubs live in .venv/mpy-stubs (see pyproject's ``firmware-stubs`` extra); mypy uses
their stdlib as its typeshed, so CPython-only APIs are errors in portable code.
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUBS = os.path.join(ROOT, ".venv", "mpy-stubs")
TARGETS = [t for t in ("protocol", "firmware") if os.path.isdir(os.path.join(ROOT, t))]


def main() -> int:
    if not os.path.isfile(os.path.join(STUBS, "machine.pyi")):
        print("MicroPython stubs missing in %s: run `make setup`" % STUBS, file=sys.stderr)
        return 2
    env = dict(os.environ, MYPYPATH=STUBS)
    cmd = [
        sys.executable, "-m", "mypy",
        "--config-file", os.path.join(ROOT, "tools", "mypy-firmware.ini"),
        "--custom-typeshed-dir", STUBS,
        "--cache-dir", os.path.join(ROOT, ".mypy_cache", "firmware"),
        *TARGETS,
    ]
    print("typecheck (MicroPython rp2 stubs):", " ".join(TARGETS))
    return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
