"""Compile the node's code (protocol/ + firmware/) to .mpy with mpy-cross.

Boards run compiled bytecode: compiling ed25519.py from source alone needs more than a
64 KiB heap, and .mpy files load faster and keep no source text in RAM. The same build is
what ``ivgw flash`` copies to a board and what the test bench runs in the unix port, so
the code under test is the code that ships.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("protocol", "firmware")

# No source-line tables: on a board (and in the unix port) loaded bytecode lives in RAM, and
# the line tables of the node's modules take about 3 KB of a 128 KiB heap. Tracebacks then
# name the file and function but show line 1 (docs/firmware.md, "Footprint").
MPY_FLAGS = ("-X", "no-source-lines")
_NAMING = "dotted"  # source names (see _source_name); part of the build stamp
_STAMP = ".mpy-cross-flags"
_LOCK = ".build-lock"


class BuildError(Exception):
    pass


def mpy_cross() -> str:
    exe = shutil.which("mpy-cross") or os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    if not os.path.exists(exe):
        raise BuildError("mpy-cross is not installed: run `make setup`")
    return exe


def sources(root: Path = ROOT) -> list[Path]:
    out = []
    for pkg in PACKAGES:
        for p in sorted((root / pkg).rglob("*.py")):
            if "__pycache__" not in p.parts:
                out.append(p)
    return out


def _source_name(rel: Path) -> str:
    """The name tracebacks show for a module: its dotted import name ("firmware.node"),
    which the interpreter has interned anyway when it imports the module; a path such as
    "firmware/node.py" would be one more string per module in RAM (docs/firmware.md,
    "Footprint")."""
    parts = rel.with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def build(out_dir: Path | None = None, root: Path = ROOT, source_lines: bool = False) -> Path:
    """Compile every module into ``out_dir`` (default build/mpy), only when out of date.

    ``source_lines``: keep the source-line tables, so tracebacks name the line (a debug
    build for diagnosing a fault, ``ivgw flash --source-lines``; about 3 KB more heap)."""
    out = Path(out_dir) if out_dir else root / "build" / "mpy"
    exe = mpy_cross()
    mpy_flags = () if source_lines else MPY_FLAGS
    out.mkdir(parents=True, exist_ok=True)
    # Several processes build the same tree at once (the benchmarks, the test bench's
    # nodes): one builds while the others wait, and each file appears whole (written
    # beside and renamed), so a node importing the tree never reads a half-written .mpy.
    with open(out / _LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _build_locked(out, root, exe, mpy_flags)
    return out


def _build_locked(out: Path, root: Path, exe: str, mpy_flags: tuple[str, ...]) -> None:
    # A build made with other flags is out of date as a whole, whatever the file times say.
    stamp = out / _STAMP
    flags = " ".join(mpy_flags + (_NAMING,))
    rebuild = not stamp.exists() or stamp.read_text() != flags
    if rebuild:
        stamp.unlink(missing_ok=True)  # a build interrupted from here on is redone as a whole next time
    for src in sources(root):
        rel = src.relative_to(root)
        dst = out / rel.with_suffix(".mpy")
        if not rebuild and dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        part = dst.with_name(dst.name + ".part")
        r = subprocess.run([exe, *mpy_flags, "-o", str(part), "-s", _source_name(rel), str(src)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            part.unlink(missing_ok=True)
            raise BuildError("mpy-cross failed on %s: %s" % (rel, r.stderr.strip()))
        os.replace(part, dst)
    if rebuild:
        stamp.write_text(flags)


def total_size(out: Path) -> int:
    return sum(p.stat().st_size for p in out.rglob("*.mpy"))


if __name__ == "__main__":
    d = build()
    print("built %s (%d bytes of .mpy)" % (d, total_size(d)))
