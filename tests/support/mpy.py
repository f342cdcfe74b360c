"""Run MicroPython scripts the way a node runs: precompiled modules and a small heap.

Source imports compile on the device heap (client.py alone needs more than 64 KiB to
compile); a board runs .mpy or frozen bytecode. ``build_mpy`` compiles protocol/ and firmware/
with mpy-cross into a directory put first on MICROPYPATH, so ``-X heapsize=64k`` measures the
firmware, not the compiler.
"""

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from gateway import firmware_build

ROOT = Path(__file__).resolve().parents[2]
_BIN = ROOT / ".venv" / "bin"


def _tool(name):
    p = _BIN / name
    if p.exists():
        return str(p)
    found = shutil.which(name)
    if not found:
        raise RuntimeError("%s not found: run `make setup` (it installs the dev extras)" % name)
    return found


def build_mpy(dest):
    """Compile protocol/ and firmware/ into ``dest`` with the same build a board gets."""
    return firmware_build.build(Path(dest))


class MpyProcess:
    """A MicroPython script whose stdout lines are collected by a reader thread."""

    def __init__(self, script, args=(), mpy_dir=None, heap="64k"):
        self.micropython = _tool("micropython")
        path = ".:.frozen" if mpy_dir is None else "%s:.:.frozen" % mpy_dir
        env = dict(os.environ, MICROPYPATH=path)
        self.argv = [self.micropython, "-X", "heapsize=" + heap, script] + [str(a) for a in args]
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._lines = []
        self._cv = threading.Condition()
        self._eof = False
        self._t = threading.Thread(target=self._read, name="mpy-stdout", daemon=True)
        self._t.start()

    def _read(self):
        for raw in self.proc.stdout:
            with self._cv:
                self._lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cv.notify_all()
        with self._cv:
            self._eof = True
            self._cv.notify_all()

    def output(self):
        with self._cv:
            return "\n".join(self._lines)

    def lines(self, prefix):
        """Lines starting with ``prefix + " "``, split into words (prefix dropped)."""
        with self._cv:
            return [ln.split()[1:] for ln in self._lines if ln.startswith(prefix + " ")]

    def fail(self, why):
        raise AssertionError(
            "%s\n--- %s output ---\n%s" % (why, " ".join(self.argv[3:]), self.output())
        )

    def wait_line(self, prefix, timeout=10.0, count=1):
        """Wait for the ``count``-th line starting with ``prefix``; return its words."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                found = [ln for ln in self._lines if ln.startswith(prefix + " ") or ln == prefix]
                if len(found) >= count:
                    return found[count - 1].split()[1:]
                if self._eof:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(min(left, 0.2))
        self.fail("no %r line #%d (exit code %s)" % (prefix, count, self.proc.poll()))

    def wait_exit(self, timeout=20.0):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.fail("script did not finish within %.0f s" % timeout)
        self._t.join(5)
        return rc

    def stats(self):
        """The ``STATS k=v ...`` line as a dict of ints."""
        words = self.wait_line("STATS", timeout=0.1)
        return {k: int(v) for k, v in (w.split("=") for w in words)}

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def close(self):
        self.kill()
        self._t.join(5)
        self.proc.stdout.close()
