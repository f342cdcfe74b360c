"""Sans-IO driver for the GE Datex-Ohmeda S/5 computer interface (physiological data).

Link: RS-232 19200 8E1 with RTS/CTS handshake (VSCapture DSerialPort settings).

Framing (VSCapture ``WriteBuffer``/``CreateFrameListFromByte``): a frame is
``0x7E <escaped record + checksum> 0x7E``. Inside, 0x7E and 0x7D are sent as 0x7D followed
by the byte XOR 0x20 (HDLC-style; VSCapture writes 7D 5E / 7D 5D). The checksum is the
8-bit sum of the unescaped record bytes; we escape it like any other byte.

Record (little-endian, packed; VSCapture ``datex_hdr_type``, 40-byte header)::

    0  r_len (int16, record length without checksum)   2  r_nbr     3  dri_level
    4  plug_id (uint16)   6  r_time (uint32, unix s)   10 reserved x4
    14 r_maintype (int16; 0 = DRI_MT_PHDB)
    16 sr_desc[8]: sr_offset (int16, from byte 40), sr_type (byte; 0xFF ends the list)

Request (49 bytes): header with r_len 49, r_maintype 0, sr_desc[0] = (0, 0 = transmission
request), sr_desc[1].sr_type = 0xFF; then phdb_rcrd_type (1 = displayed values),
tx_interval (int16 seconds; 0 stops; the spec minimum is 5), phdb_class_bf (uint32; 0 =
basic class only), reserved int16. The monitor then sends a record every tx_interval.

Physiological subrecord ``dri_phdb`` (278 bytes at 40 + sr_offset, sr_type 1 = displayed):
time (uint32), the 270-byte class data, marker, reserved, cl_drilvl_subt (uint16; class in
bits 8-11, 0 = basic). Basic class offsets used here (VSCapture ``basic_phdb_type``; each
group starts with a 6-byte header: status uint32, label uint16):

    ecg  +0:  hr @6 (1/min), imp_rr @14 (1/min)
    nibp +72: sys @78, dia @80, mean @82 (0.01 mmHg)
    SpO2 +118: SpO2 @124 (0.01 %)
    co2  +132: et @138 (0.01 %), rr @142 (1/min), amb_press @144 (0.1 mmHg)

A value below -32001 is a marker (-32767 no data, -32766 not updated, -32765
discontinuity, -32764/-32763 under/over range, -32762 not calibrated) and is reported absent.

NIBP is displayed until the next cuff cycle, so its tick is the time the triple
(sys, dia, mean) was first seen with its current value, not the record time; the record
carries no NIBP measurement time. ``nibp_time_known`` is False when that first sighting
was the first record after start (the measurement may be older). Two successive cuff cycles
with identical results are indistinguishable from "no new measurement".
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]
        return x


from ._frame import RxBuffer
from ._ticks import ticks_diff

_FLAG = const(0x7E)
_ESC = const(0x7D)
_HDR = const(40)
_PHDB = const(278)
_INVALID_LIMIT = const(-32001)
DRI_MT_PHDB = const(0)
DRI_PH_DISPL = const(1)

MDC_ECG_HEART_RATE = const(147842)
MDC_PRESS_BLD_NONINV_SYS = const(150021)
MDC_PRESS_BLD_NONINV_DIA = const(150022)
MDC_PRESS_BLD_NONINV_MEAN = const(150023)
MDC_PULS_OXIM_SAT_O2 = const(150456)
MDC_RESP_RATE = const(151562)
MDC_AWAY_RESP_RATE = const(151570)
MDC_AWAY_CO2_ET = const(151728)


def frame(record):
    """Wrap a record: flag, escaped record and checksum, flag."""
    out = bytearray()
    out.append(_FLAG)
    s = 0
    for b in record:
        s += b
        _put(out, b)
    _put(out, s & 0xFF)
    out.append(_FLAG)
    return bytes(out)


def _put(out, b):
    if b == _FLAG or b == _ESC:
        out.append(_ESC)
        out.append(b ^ 0x20)
    else:
        out.append(b)


def request_record(interval_s=5, classes=0, rcrd_type=DRI_PH_DISPL):
    """The 49-byte "transmit physiological data" request (see module docstring)."""
    r = bytearray(49)
    r[0] = 49
    r[21] = 0xFF  # sr_desc[1].sr_type: end of subrecord list
    r[40] = rcrd_type
    r[41] = interval_s & 0xFF
    r[42] = (interval_s >> 8) & 0xFF
    r[43] = classes & 0xFF
    r[44] = (classes >> 8) & 0xFF
    r[45] = (classes >> 16) & 0xFF
    r[46] = (classes >> 24) & 0xFF
    return bytes(r)


def _s16(buf, i):
    v = buf[i] | (buf[i + 1] << 8)
    return v - 0x10000 if v & 0x8000 else v


def _val(buf, i):
    v = _s16(buf, i)
    return None if v < _INVALID_LIMIT else v


class DatexS5:
    """Attributes (None = absent; ``*_ms`` = tick of the record that carried it):
    hr, hr_ms                         ECG heart rate, 1/min
    nibp_sys, nibp_dia, nibp_mean     0.01 mmHg; nibp_ms = when this triple first appeared
    nibp_seq, nibp_time_known         change counter; see module docstring
    spo2_x100, spo2_ms                SpO2 in 0.01 %
    rr, rr_ms                         airway respiration rate (CO2), 1/min
    rr_imp, rr_imp_ms                 impedance respiration rate (ECG), 1/min
    etco2_pct_x100                    EtCO2 in 0.01 % (as sent)
    etco2_mmhg_x10, etco2_ms          EtCO2 in 0.1 mmHg = et x ambient pressure
    r_time, record_ms                 monitor clock (unix s) and tick of the last record
    frames_ok, frames_bad (checksum), frames_invalid, frames_too_long, bytes_discarded,
    records_ignored (other main types / subrecords), requests_sent
    """

    def __init__(self, interval_s=5, classes=0, max_frame=640, offline_ms=None):
        if interval_s < 5:
            raise ValueError("the S/5 interface sends displayed data at most every 5 s")
        self.interval_ms = interval_s * 1000
        self.offline_ms = offline_ms if offline_ms is not None else 3 * self.interval_ms
        self.rerequest_ms = 2 * self.interval_ms + 1000
        self._request = frame(request_record(interval_s, classes))
        self._rx = RxBuffer(max_frame)
        self._in = False
        self._esc = False
        self._over = False
        self._requested = False
        self._quiet_ms = 0
        self._ever = False
        self._nibp_key = None
        self.hr = None
        self.hr_ms = 0
        self.nibp_sys = None
        self.nibp_dia = None
        self.nibp_mean = None
        self.nibp_ms = 0
        self.nibp_seq = 0
        self.nibp_time_known = False
        self.spo2_x100 = None
        self.spo2_ms = 0
        self.rr = None
        self.rr_ms = 0
        self.rr_imp = None
        self.rr_imp_ms = 0
        self.etco2_pct_x100 = None
        self.etco2_mmhg_x10 = None
        self.etco2_ms = 0
        self.r_time = None
        self.record_ms = 0
        self.frames_ok = 0
        self.frames_bad = 0
        self.frames_invalid = 0
        self.frames_too_long = 0
        self.bytes_discarded = 0
        self.records_ignored = 0
        self.requests_sent = 0

    def request_bytes(self):
        return self._request

    def poll(self, now_ms):
        """The data request: at start, then again whenever records stop arriving."""
        if self._requested and ticks_diff(now_ms, self._quiet_ms) < self.rerequest_ms:
            return None
        self._requested = True
        self._quiet_ms = now_ms
        self.requests_sent += 1
        return self._request

    def online(self, now_ms):
        return self._ever and ticks_diff(now_ms, self.record_ms) <= self.offline_ms

    def values(self, now_ms, max_age_ms=None):
        """{MDC code: (mantissa, exponent, tick)} for values present and fresh.

        NIBP entries carry nibp_ms (first sighting of the reading), and are included while
        the record showing them is fresh: judging the reading's age is the caller's job.
        """
        age = self.offline_ms if max_age_ms is None else max_age_ms
        out: dict = {}
        if ticks_diff(now_ms, self.record_ms) > age or not self._ever:
            return out
        if self.hr is not None:
            out[MDC_ECG_HEART_RATE] = (self.hr, 0, self.hr_ms)
        if self.nibp_sys is not None:
            out[MDC_PRESS_BLD_NONINV_SYS] = (self.nibp_sys, -2, self.nibp_ms)
        if self.nibp_dia is not None:
            out[MDC_PRESS_BLD_NONINV_DIA] = (self.nibp_dia, -2, self.nibp_ms)
        if self.nibp_mean is not None:
            out[MDC_PRESS_BLD_NONINV_MEAN] = (self.nibp_mean, -2, self.nibp_ms)
        if self.spo2_x100 is not None:
            out[MDC_PULS_OXIM_SAT_O2] = (self.spo2_x100, -2, self.spo2_ms)
        if self.rr is not None:
            out[MDC_AWAY_RESP_RATE] = (self.rr, 0, self.rr_ms)
        if self.rr_imp is not None:
            out[MDC_RESP_RATE] = (self.rr_imp, 0, self.rr_imp_ms)
        if self.etco2_mmhg_x10 is not None:
            out[MDC_AWAY_CO2_ET] = (self.etco2_mmhg_x10, -1, self.etco2_ms)
        return out

    def feed(self, data, now_ms):
        rx = self._rx
        for b in data:
            if b == _FLAG:
                if self._esc:  # 7D 7E: aborted frame (HDLC abort)
                    self.bytes_discarded += rx.n + 1
                elif self._over:
                    pass
                elif self._in and rx.n:
                    self._frame(now_ms)
                rx.clear()
                self._in = True
                self._esc = False
                self._over = False
                continue
            if not self._in or self._over:
                self.bytes_discarded += 1
                continue
            if self._esc:
                self._esc = False
                b ^= 0x20
            elif b == _ESC:
                self._esc = True
                continue
            if not rx.append(b):
                self.frames_too_long += 1
                self.bytes_discarded += rx.n + 1
                rx.clear()
                self._over = True

    def _frame(self, now_ms):
        rx = self._rx
        n = rx.n - 1  # record length without the checksum
        buf = rx.buf
        s = 0
        for i in range(n):
            s += buf[i]
        if n < _HDR or (s & 0xFF) != buf[n]:
            if n < _HDR:
                self.bytes_discarded += rx.n  # a fragment or noise between flags
            else:
                self.frames_bad += 1
            return
        if _s16(buf, 0) != n:
            self.frames_invalid += 1
            return
        self.frames_ok += 1
        if _s16(buf, 14) != DRI_MT_PHDB:
            self.records_ignored += 1
            return
        used = False
        for k in range(8):
            d = 16 + 3 * k
            sr_type = buf[d + 2]
            if sr_type == 0xFF:
                break
            start = _HDR + _s16(buf, d)
            if sr_type != DRI_PH_DISPL or start < _HDR or start + _PHDB > n:
                self.records_ignored += 1
                continue
            if (buf[start + 276] | (buf[start + 277] << 8)) >> 8 & 0x0F:
                self.records_ignored += 1  # not the basic class
                continue
            self._basic(buf, start + 4, now_ms)
            used = True
        if used:
            self._ever = True
            self._quiet_ms = now_ms
            self.record_ms = now_ms
            self.r_time = (
                buf[6] | (buf[7] << 8) | (buf[8] << 16) | (buf[9] << 24)
            )  # a big int on 32-bit ports after 2038 only

    def _basic(self, buf, b, now_ms):
        self.hr = _val(buf, b + 6)
        self.hr_ms = now_ms
        self.rr_imp = _val(buf, b + 14)
        self.rr_imp_ms = now_ms
        sys = _val(buf, b + 78)
        dia = _val(buf, b + 80)
        mean = _val(buf, b + 82)
        key = (sys, dia, mean)
        if key != self._nibp_key:
            self.nibp_time_known = self._nibp_key is not None
            self._nibp_key = key
            self.nibp_ms = now_ms
            self.nibp_seq += 1
        self.nibp_sys = sys
        self.nibp_dia = dia
        self.nibp_mean = mean
        self.spo2_x100 = _val(buf, b + 124)
        self.spo2_ms = now_ms
        self.rr = _val(buf, b + 142)
        self.rr_ms = now_ms
        et = _val(buf, b + 138)
        amb = _val(buf, b + 144)
        self.etco2_pct_x100 = et
        if et is None or amb is None or et < 0 or amb <= 0:
            self.etco2_mmhg_x10 = None
        else:
            # et (0.01 %) x amb (0.1 mmHg) / 10**5 = mmHg; x10 for 0.1 mmHg, half up
            self.etco2_mmhg_x10 = (et * amb + 5000) // 10000
        self.etco2_ms = now_ms
