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
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]
        return x


from ._ticks import ticks_diff

_CR = const(0x0D)
_LF = const(0x0A)

MDC_PULS_OXIM_SAT_O2 = const(150456)
MDC_PULS_OXIM_PULS_RATE = const(149530)


def _int_field(v, ndig, suffix):
    """'098%' -> 98; dashes -> -1 (absent); malformed -> None."""
    if suffix:
        if v[-1:] != suffix:
            return None
        v = v[:-1]
    if len(v) != ndig:
        return None
    if v == b"-" * ndig:
        return -1
    n = 0
    for c in v:
        if not 0x30 <= c <= 0x39:
            return None
        n = n * 10 + c - 0x30
    return n


def _pi_field(v):
    """'03.60%' -> 360 (hundredths); dashes -> -1; malformed -> None."""
    if v[-1:] != b"%" or len(v) != 6 or v[2] != 0x2E:
        return None
    if v[:5] == b"--.--":
        return -1
    d = v[:2] + v[3:5]
    n = 0
    for c in d:
        if not 0x30 <= c <= 0x39:
            return None
        n = n * 10 + c - 0x30
    return n


def _hex_field(v):
    if not 1 <= len(v) <= 8:
        return None
    n = 0
    for c in v:
        if 0x30 <= c <= 0x39:
            n = n * 16 + c - 0x30
        elif 0x41 <= c <= 0x46:
            n = n * 16 + c - 0x37
        elif 0x61 <= c <= 0x66:
            n = n * 16 + c - 0x57
        else:
            return None
    return n


def _shape(v, pattern):
    # pattern: 'd' digit, anything else literal
    if len(v) != len(pattern):
        return False
    for i in range(len(v)):
        p = pattern[i]
        c = v[i]
        if p == 0x64:  # 'd'
            if not 0x30 <= c <= 0x39:
                return False
        elif c != p:
            return False
    return True


class Radical7:
    """Attributes: spo2 (%), pr (bpm), pi_x100 (perfusion index x100), each None when the
    last line showed it absent, with spo2_ms / pr_ms / pi_ms (tick of that line);
    alarm, exc (ints), line_ms (tick of the last accepted line), serial (bytes);
    counters lines_ok, lines_bad, lines_too_long, bytes_discarded (and frames_ok /
    frames_bad aliases for the common interface)."""

    def __init__(self, max_line=200, offline_ms=3000):
        self.max_line = max_line
        self.offline_ms = offline_ms
        self._buf = bytearray(max_line)
        self._n = 0
        self._skip = False
        self._ever = False
        self.spo2 = None
        self.spo2_ms = 0
        self.pr = None
        self.pr_ms = 0
        self.pi_x100 = None
        self.pi_ms = 0
        self.alarm = None
        self.exc = None
        self.serial = None
        self.line_ms = 0
        self.lines_ok = 0
        self.lines_bad = 0
        self.lines_too_long = 0
        self.bytes_discarded = 0

    @property
    def frames_ok(self):
        return self.lines_ok

    @property
    def frames_bad(self):
        return self.lines_bad

    def poll(self, now_ms):
        return None  # output-only device

    def online(self, now_ms):
        return self._ever and ticks_diff(now_ms, self.line_ms) <= self.offline_ms

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
        for c in data:
            if c == _CR or c == _LF:
                if self._skip:
                    self._skip = False
                elif self._n:
                    self._line(memoryview(buf)[: self._n], now_ms)
                self._n = 0
                continue
            if self._skip:
                self.bytes_discarded += 1
                continue
            if self._n >= self.max_line:
                self.lines_too_long += 1
                self.bytes_discarded += self._n + 1
                self._n = 0
                self._skip = True
                continue
            buf[self._n] = c
            self._n += 1

    def _bad(self, n):
        self.lines_bad += 1
        self.bytes_discarded += n

    def _line(self, mv, now_ms):
        n = len(mv)
        line = bytes(mv)
        for c in line:
            if c < 0x20 or c > 0x7E:
                self._bad(n)
                return
        parts = line.split()
        if len(parts) < 4:
            self._bad(n)
            return
        if not _shape(parts[0], b"dd/dd/dd") or not _shape(parts[1], b"dd:dd:dd"):
            self._bad(n)
            return
        spo2 = pr = pi = alarm = exc = serial = None
        for kv in parts[2:]:
            k, eq, v = kv.partition(b"=")
            if not eq:
                self._bad(n)
                return
            if k == b"SPO2":
                spo2 = _int_field(v, 3, b"%")
                if spo2 is None or spo2 > 100:
                    self._bad(n)
                    return
            elif k == b"BPM":
                pr = _int_field(v, 3, b"")
                if pr is None or pr > 300:
                    self._bad(n)
                    return
            elif k == b"PI":
                pi = _pi_field(v)
                if pi is None or pi > 2000:
                    self._bad(n)
                    return
            elif k == b"ALARM":
                alarm = _hex_field(v)
                if alarm is None:
                    self._bad(n)
                    return
            elif k == b"EXC":
                exc = _hex_field(v)
                if exc is None:
                    self._bad(n)
                    return
            elif k == b"SN":
                serial = v
        if spo2 is None or pr is None or pi is None or alarm is None or exc is None:
            self._bad(n)  # a required field is missing: not a reading line
            return
        self.lines_ok += 1
        self._ever = True
        self.line_ms = now_ms
        # Dashes (-1) and zeros mean "not available": reported absent, never as 0.
        self.spo2 = spo2 if spo2 > 0 else None
        self.spo2_ms = now_ms
        self.pr = pr if pr > 0 else None
        self.pr_ms = now_ms
        self.pi_x100 = pi if pi > 0 else None
        self.pi_ms = now_ms
        self.alarm = alarm
        self.exc = exc
        if serial is not None and serial != self.serial:
            self.serial = serial
