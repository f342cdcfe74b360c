"""The device under test: one node, either the real firmware in the MicroPython unix port
(``EmulatedNode``) or a real board on a serial port (``BoardNode``, through mpremote).

Both expose the same interface, so a scenario does not care which it drives:

* ``start()`` / ``stop()`` / ``kill()`` (SIGKILL: the node vanishes mid-sentence);
* ``expect(pattern, timeout)``: wait for a console line matching a regular expression and
  return the match; on timeout, fail with the pattern *and the lines received*;
* ``lines`` / ``log_path``: the whole console, also left on disk for a failed test.

The console is the firmware's own log (firmware/log.py): ``EVENT ...``, ``CMD ...``,
``STOP written N ms ...``, ``connected to broker ...``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from gateway import firmware_build

ROOT = Path(__file__).resolve().parent.parent


class ExpectTimeout(AssertionError):
    pass


class Console:
    """Lines from a stream, kept in memory and in a log file, waited on with ``expect``."""

    def __init__(self, log_path: Path, name: str):
        self.log_path = log_path
        self.name = name
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._pos = 0  # expect() consumes lines in order
        self._log = open(log_path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115

    def feed_stream(self, stream) -> threading.Thread:
        def pump() -> None:
            for raw in iter(stream.readline, b""):
                self.add(raw.decode("utf-8", "replace").rstrip("\r\n"))
            self.add("<console closed>")

        t = threading.Thread(target=pump, name="console-" + self.name, daemon=True)
        t.start()
        return t

    def add(self, line: str) -> None:
        with self._cond:
            self.lines.append(line)
            self._log.write(line + "\n")
            self._log.flush()
            self._cond.notify_all()

    def expect(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                while self._pos < len(self.lines):
                    m = rx.search(self.lines[self._pos])
                    self._pos += 1
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = "\n    ".join(self.lines[-25:]) or "(nothing)"
                    raise ExpectTimeout(
                        "%s: no line matching %r within %.1f s; last lines received:\n    %s\n"
                        "(full log: %s)" % (self.name, pattern, timeout, tail, self.log_path))
                self._cond.wait(left)

    def close(self) -> None:
        self._log.close()


class ConsoleProcess:
    """The lifecycle shared by the bench's child processes (the gateway, each emulated
    node): a process whose merged output feeds a :class:`Console`, killed like a power cut
    or stopped politely, with the console closed either way."""

    stop_grace_s = 5.0  # between SIGTERM and SIGKILL in stop()
    proc: subprocess.Popen[bytes] | None = None
    console: Console | None = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: nothing gets to clean up (a crash, a power cut)."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(self.stop_grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.console is not None:
            self.console.close()


class EmulatedNode(ConsoleProcess):
    """The real firmware (compiled .mpy) in the MicroPython unix port."""

    def __init__(self, bundle: Path, workdir: Path, name: str, heap: str = "256k"):
        self.bundle = bundle
        self.name = name
        self.heap = heap
        self.build = firmware_build.build()
        self.log_path = workdir / ("%s.log" % name)
        self.console = Console(self.log_path, name)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def lines(self) -> list[str]:
        return self.console.lines

    def start(self) -> None:
        exe = shutil.which("micropython") or os.path.join(os.path.dirname(sys.executable),
                                                          "micropython")
        code = "import firmware.main as m; m.main(%r)" % str(self.bundle)
        self.proc = subprocess.Popen(
            [exe, "-X", "heapsize=" + self.heap, "-c", code],
            cwd=str(self.build), env=dict(os.environ, MICROPYPATH=".:.frozen"),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,  # platform.md: otherwise pty reads can fail with EIO
        )
        assert self.proc.stdout is not None
        self.console.feed_stream(self.proc.stdout)

    def expect(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        return self.console.expect(pattern, timeout)



class BoardNode:
    """A real board on a serial port: the bundle and firmware are copied with mpremote, the
    board is reset into ``main.py`` and its USB console is read like the emulated one.

    Wiring on the bench: the board's UARTs go to USB-serial adapters on the host, and the
    emulators attach to those (``emulators.transport`` over a serial port); see docs/hil.md.
    """

    def __init__(self, port: str, bundle: Path, workdir: Path, name: str):
        self.port = port
        self.bundle = bundle
        self.name = name
        self.log_path = workdir / ("%s.log" % name)
        self.console = Console(self.log_path, name)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def lines(self) -> list[str]:
        return self.console.lines

    def _mpremote(self, *args: str) -> None:
        exe = shutil.which("mpremote") or os.path.join(os.path.dirname(sys.executable), "mpremote")
        r = subprocess.run([exe, "connect", self.port, *args], capture_output=True, text=True,
                           timeout=120)
        if r.returncode != 0:
            raise RuntimeError("mpremote %s failed: %s" % (" ".join(args), r.stderr.strip()))

    def start(self) -> None:
        build = firmware_build.build()
        self._mpremote("fs", "cp", "-r", str(build / "protocol"), str(build / "firmware"), ":")
        for f in sorted(self.bundle.iterdir()):
            if f.is_file():
                self._mpremote("fs", "cp", str(f), ":" + f.name)
        boot = self.log_path.parent / ("%s-main.py" % self.name)
        boot.write_text("import firmware.main as m\nm.main('/')\n")
        self._mpremote("fs", "cp", str(boot), ":main.py")
        exe = shutil.which("mpremote") or os.path.join(os.path.dirname(sys.executable), "mpremote")
        # Reset, then follow the console: the board runs main.py (firmware.main) on boot.
        self.proc = subprocess.Popen([exe, "connect", self.port, "reset", "+", "repl"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        self.console.feed_stream(self.proc.stdout)

    def expect(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        return self.console.expect(pattern, timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        self._mpremote("reset")  # the nearest thing to pulling the plug from the host side

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            self.proc.wait(5)
        self.console.close()
