"""Emulated Masimo Radical-7: one ASCII line per reading on its serial output (9600 8N1).

Line layout from the OpenICE ``masimo-radical-7.spec`` (mdpnp/mdpnp) and a Rad-8 capture:

    MM/dd/yy HH:mm:ss SN=0000056661 SPO2=098% BPM=097 PI=03.60% SPCO=--.-% SPMET=--.-%
    DESAT=-- PIDELTA=+-- PVI=-- ALARM=0000 EXC=000800<CR><LF>

``source()`` returns the current reading as a dict with ``spo2`` (%), ``bpm`` and
``pi_x100`` (perfusion index x100), each an int or None (shown as dashes), and optionally
``alarm``/``exc`` bit fields. Every line sent is recorded in ``sent`` as
(time, spo2, bpm, pi_x100, damaged) so tests can check the driver only ever reports values
that really went out intact.

``corrupt_next(n)`` damages the next n lines in ways a parser can detect (a letter in a
digit field, a cut line that runs into the next one, a control byte). ASCII output has no
checksum: a digit turned into another digit cannot be detected by anyone and is not
emulated.
"""

import time

from .base import Emulator

_DAMAGE = ("letter", "cut", "control")


class Radical7(Emulator):
    def __init__(self, source, clock=None, period_s=1.0, serial="0000056661"):
        super().__init__(clock)
        self.source = source
        self.period_s = period_s
        self.serial = serial
        self.sent = []
        self._next = None
        self._last = None
        self._damage = 0

    def _reading(self):
        if self.frozen and self._last is not None:
            return self._last
        r = dict(self.source() or {})
        self._last = r
        return r

    def _tick(self, now):
        if self._next is None:
            self._next = now
        if now < self._next:
            return
        self._next += self.period_s
        if self._next < now - self.period_s:
            self._next = now + self.period_s  # clock jumped: do not burst stale lines
        self._send_line(now, self._reading())

    def _on_power_off(self):
        self._next = None

    def _on_power_on(self, now):
        self._next = now + self.period_s  # a boot delay before the first line

    def _send_line(self, now, r):
        spo2, bpm, pi = r.get("spo2"), r.get("bpm"), r.get("pi_x100")
        alarm = r.get("alarm", 0)
        exc = r.get("exc", 0x000800 if spo2 is not None else 0x000020)
        line = "%s SN=%s SPO2=%s%% BPM=%s PI=%s%% SPCO=--.-%% SPMET=--.-%% DESAT=-- " % (
            time.strftime("%m/%d/%y %H:%M:%S", time.gmtime(now)),
            self.serial,
            "---" if spo2 is None else "%03d" % spo2,
            "---" if bpm is None else "%03d" % bpm,
            "--.--" if pi is None else "%02d.%02d" % divmod(pi, 100),
        )
        line += "PIDELTA=+-- PVI=-- ALARM=%04X EXC=%06X\r\n" % (alarm, exc)
        data = line.encode("ascii")
        damaged = self._take_corrupt()
        if damaged:
            kind = _DAMAGE[self._damage % len(_DAMAGE)]
            self._damage += 1
            if kind == "letter":
                data = data.replace(b"BPM=", b"BPM=O", 1)  # "BPM=O097": not a number
            elif kind == "cut":
                data = data[: len(data) // 2]  # no terminator: runs into the next line
            else:
                data = data[:30] + b"\x00" + data[30:]
        self.sent.append((now, spo2, bpm, pi, damaged))
        self._emit(data)
