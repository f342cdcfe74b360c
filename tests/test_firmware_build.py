"""The node's compiled tree (gateway/firmware_build.py) is built by several processes at once.

`make bench` and the benchmark smoke test start five scripts together on a fresh clone, and
each builds build/mpy before a node imports it. Before the build took a lock and renamed
each file into place, one process could import a .mpy that another was still rewriting
("ValueError: incompatible .mpy file", seen in CI).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway import firmware_build

ROOT = Path(__file__).resolve().parent.parent

# Each builder builds the shared tree, then keeps re-reading every file for a while, as a
# node importing the tree would while the other builders are still running; it prints
# every file it ever saw differ from the reference build.
_BUILDER = r"""
import sys, time
from pathlib import Path
from gateway import firmware_build
shared, ref = Path(sys.argv[1]), Path(sys.argv[2])
start = sys.argv[3]
while not Path(start).exists():
    time.sleep(0.001)
firmware_build.build(shared)
want = {p.relative_to(ref): p.read_bytes() for p in ref.rglob("*.mpy")}
bad = set()
end = time.monotonic() + 1.5
while time.monotonic() < end:
    for rel, data in want.items():
        try:
            got = (shared / rel).read_bytes()
        except FileNotFoundError:
            got = None
        if got != data:
            bad.add(str(rel))
print("BAD", sorted(bad))
"""


def test_concurrent_builds_never_expose_a_partial_file(tmp_path: Path) -> None:
    ref = firmware_build.build(tmp_path / "ref")
    shared = tmp_path / "shared"
    start = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _BUILDER, str(shared), str(ref), str(start)],
            cwd=str(ROOT),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    start.touch()
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out
        assert "BAD []" in out, out
    # Nothing half-made is left behind, and the tree is the reference tree.
    assert not list(shared.rglob("*.part"))
    assert sorted(p.relative_to(shared) for p in shared.rglob("*.mpy")) == sorted(
        p.relative_to(ref) for p in ref.rglob("*.mpy")
    )


def test_a_build_with_other_flags_rebuilds_the_whole_tree(tmp_path: Path) -> None:
    out = firmware_build.build(tmp_path / "mpy")
    shipped = {p: p.read_bytes() for p in out.rglob("*.mpy")}
    firmware_build.build(out, source_lines=True)
    debug = {p: p.read_bytes() for p in out.rglob("*.mpy")}
    assert debug.keys() == shipped.keys()
    # The line tables make every module with code larger; nothing kept from the other build.
    assert sum(map(len, debug.values())) > sum(map(len, shipped.values()))
    firmware_build.build(out)
    assert {p: p.read_bytes() for p in out.rglob("*.mpy")} == shipped


def test_a_module_that_does_not_compile_names_the_file_and_leaves_no_part(tmp_path: Path) -> None:
    root = tmp_path / "src"
    for pkg in firmware_build.PACKAGES:
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "firmware" / "broken.py").write_text("def f(:\n")
    with pytest.raises(firmware_build.BuildError, match="firmware/broken.py"):
        firmware_build.build(tmp_path / "mpy", root=root)
    assert not list((tmp_path / "mpy").rglob("*.part"))
