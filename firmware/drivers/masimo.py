"""Sans-IO parser for the Masimo Radical-7 (also Rad-8) serial ASCII output.

The oximeter only talks (9600 8N1, no handshake): about one line per second,

    02/22/16 22:47:45 SN=0000056661 SPO2=098% BPM=097 PI=03.60% SPCO=--.-% SPMET=--.-%
    DESAT=-- PIDELTA=+-- PVI=-- ALARM=0000 EXC=000800<CR><LF>

(one line on the wire). Field list: OpenICE ``masimo-radical-7.spec`` (mdpnp/mdpnp); the
example line, without PVI, is a Rad-8 capture (yahnatan/pulseox). A value the device cannot
measure is shown as dashes. The Rad-8/Rad-57 manuals' trend format writes "not available"
as zeros (``SpO2=000 PR=000 PI=00.00``), so zero SpO2, pulse rate and PI are treated as
absent too. ALARM and EXC are hexadecimal bit fields, kept raw (EXC bits in the Rad-8
manual: 001 no sensor, 002 defective sensor, 004 low perfusion, 008 pulse search, 010
interference, 020 sensor off, 040 ambient light, 080 unrecognized sensor, 400 low signal IQ,
800 SET mode).

There is no checksum, so a line is accepted only if every field we read has exactly the
expected shape and a plausible range; anything else is counted and dropped whole. Lines
longer than ``max_line`` are dropped up to the next terminator (a stuck or wrong-baud line
must not grow the buffer).

Written for a small heap (docs/firmware.md, "Footprint"): every function costs about 100
bytes on the node, so the line checks are one pattern matcher and one method.
"""

from protocol import const

from ._ticks import ticks_diff

_CR = const(0x0D)
_LF = const(0x0A)

MDC_PULS_OXIM_SAT_O2 = const(150456)
MDC_PULS_OXIM_PULS_RATE = const(149530)


def _match(v, pattern):
    """The digits of ``v`` (a str) as an integer if ``v`` has the shape of ``pattern``
    ("d": a decimal digit, "h": 1 to 8 hexadecimal digits, read base 16, as the whole
    pattern; anything else literal), e.g. ("03.60%", "dd.dd%") -> 360; None if it has not.
    A pattern of dashes in place of the digits, e.g. "--.--%", gives -1 (absent).

    The line is checked and read as str: the patterns and keys are then short str
    constants, interned names, where each bytes constant would be a heap object."""
    if pattern == "h":
        if not 1 <= len(v) <= 8:
            return None
        n = 0
        for c in v:
            o = ord(c)
            if 0x30 <= o <= 0x39:
                n = n * 16 + o - 0x30
            elif 0x41 <= o <= 0x46 or 0x61 <= o <= 0x66:
                n = n * 16 + (o & 0x0F) + 9  # "A"/"a" are 0x41/0x61
            else:
                return None
        return n
    if len(v) != len(pattern):
        return None
    n = 0
    dashes = True
    for i in range(len(v)):
        p = pattern[i]
        c = v[i]
        if p == "d":
            if c == "-":
                n = -1
                continue
            dashes = False
            if not "0" <= c <= "9":
                return None
            n = n * 10 + ord(c) - 0x30
        elif c != p:
            return None
    if n < 0:  # all digits or all dashes, nothing in between
        return -1 if dashes else None
    return n


class Radical7:
    """Attributes: spo2 (%), pr (bpm), pi_x100 (perfusion index x100), each None when the
    last line showed it absent, with spo2_ms / pr_ms / pi_ms (tick of that line);
    alarm, exc (ints), line_ms (tick of the last accepted line), serial (bytes);
    counters lines_ok, lines_bad, lines_too_long, bytes_discarded (and frames_ok /
    frames_bad, the same counts under the common interface's names)."""

    def __init__(self, max_line=200, offline_ms=3000):
        self.offline_ms = offline_ms
        self._buf = bytearray(max_line)  # the line so far: _n bytes; _n -1: skip to CR/LF
        self._n = 0
        self.spo2 = self.pr = self.pi_x100 = self.alarm = self.exc = self.serial = None
        self.spo2_ms = self.pr_ms = self.pi_ms = self.line_ms = 0
        self.lines_ok = self.lines_bad = self.lines_too_long = self.bytes_discarded = 0
        self.frames_ok = self.frames_bad = 0

    def poll(self, now_ms):
        return None  # output-only device

    def online(self, now_ms):
        return self.lines_ok > 0 and ticks_diff(now_ms, self.line_ms) <= self.offline_ms

    def values(self, now_ms, max_age_ms=None):
        """{MDC code: (value, exponent, tick)} for values present and fresh."""
        age = self.offline_ms if max_age_ms is None else max_age_ms
        out: dict = {}
        if self.spo2 is not None and ticks_diff(now_ms, self.spo2_ms) <= age:
            out[MDC_PULS_OXIM_SAT_O2] = (self.spo2, 0, self.spo2_ms)
        if self.pr is not None and ticks_diff(now_ms, self.pr_ms) <= age:
            out[MDC_PULS_OXIM_PULS_RATE] = (self.pr, 0, self.pr_ms)
        return out

    def feed(self, data, now_ms):
        buf = self._buf
        n = self._n
        for c in data:
            if c != _CR and c != _LF:
                if n < 0:
                    self.bytes_discarded += 1
                elif n >= len(buf):
                    self.lines_too_long += 1
                    self.bytes_discarded += n + 1
                    n = -1
                else:
                    buf[n] = c
                    n += 1
                continue
            # End of a line (or of a skipped over-long one).
            m = n
            n = 0
            if m <= 0:
                continue
            ok = True
            for j in range(m):
                if not 0x20 <= buf[j] <= 0x7E:
                    ok = False  # not printable
            # printable ASCII, so it decodes; one character per byte
            parts = bytes(buf[:m]).decode().split() if ok else []
            ok = len(parts) >= 4
            if ok:  # date and time: digits only (no dashes: -1)
                d = _match(parts[0], "dd/dd/dd")
                t = _match(parts[1], "dd:dd:dd")
                ok = d is not None and t is not None and d >= 0 and t >= 0
            spo2 = pr = pi = alarm = exc = serial = None
            for kv in parts[2:] if ok else ():
                k, eq, v = kv.partition("=")
                if not eq:
                    ok = False
                elif k == "SPO2":
                    spo2 = _match(v, "ddd%")
                    ok = spo2 is not None and spo2 <= 100
                elif k == "BPM":
                    pr = _match(v, "ddd")
                    ok = pr is not None and pr <= 300
                elif k == "PI":
                    pi = _match(v, "dd.dd%")
                    ok = pi is not None and pi <= 2000
                elif k == "ALARM":
                    alarm = _match(v, "h")
                    ok = alarm is not None
                elif k == "EXC":
                    exc = _match(v, "h")
                    ok = exc is not None
                elif k == "SN":
                    serial = v.encode()
                if not ok:
                    break
            # A required field missing: not a reading line.
            if not ok or spo2 is None or pr is None or pi is None or alarm is None or exc is None:
                self.frames_bad = self.lines_bad = self.lines_bad + 1
                self.bytes_discarded += m
                continue
            self.frames_ok = self.lines_ok = self.lines_ok + 1
            self.line_ms = self.spo2_ms = self.pr_ms = self.pi_ms = now_ms
            # Dashes (-1) and zeros mean "not available": reported absent, never as 0.
            self.spo2 = spo2 if spo2 > 0 else None
            self.pr = pr if pr > 0 else None
            self.pi_x100 = pi if pi > 0 else None
            self.alarm = alarm
            self.exc = exc
            if serial is not None and serial != self.serial:
                self.serial = serial
        self._n = n
