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

Written for a small heap (docs/firmware.md, "Footprint"): every function costs heap on
the node, so a frame is checked and read inside ``feed`` itself and the request is built by
the constructor (the tests build frames and records on their own, from the layout above).
"""

from protocol import const

from ._ticks import ticks_diff

_FLAG = const(0x7E)
_ESC = const(0x7D)
_HDR = const(40)
_PHDB = const(278)
_INVALID_LIMIT = const(-32001)
_DRI_MT_PHDB = const(0)  # r_maintype of physiological data (checked as 0 below)
_DRI_PH_DISPL = const(1)  # sr_type / phdb_rcrd_type: displayed values
# Receiver states (feed): outside a frame, inside one, after an escape byte, in an
# over-long frame (discarded up to the next flag).
_OUT = const(0)
_IN = const(1)
_ESCAPED = const(2)
_OVER = const(3)
# Where _basic values are, in 2-byte units from the start of the basic class: hr, imp_rr,
# nibp sys/dia/mean, SpO2, EtCO2, rr, amb_press (offsets in the module docstring / 2).
_AT = const(b"\x03\x07\x27\x28\x29\x3e\x45\x47\x48")

MDC_ECG_HEART_RATE = const(147842)
MDC_PRESS_BLD_NONINV_SYS = const(150021)
MDC_PRESS_BLD_NONINV_DIA = const(150022)
MDC_PRESS_BLD_NONINV_MEAN = const(150023)
MDC_PULS_OXIM_SAT_O2 = const(150456)
MDC_RESP_RATE = const(151562)
MDC_AWAY_RESP_RATE = const(151570)
MDC_AWAY_CO2_ET = const(151728)


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
        self.offline_ms = offline_ms if offline_ms is not None else 3000 * interval_s
        self.rerequest_ms = 2000 * interval_s + 1000
        # The request (module docstring): a 49-byte record with interval and classes...
        r = bytearray(49)
        r[0] = 49  # r_len
        r[21] = 0xFF  # sr_desc[1].sr_type: end of subrecord list
        r[40] = _DRI_PH_DISPL  # phdb_rcrd_type
        r[41] = interval_s & 0xFF
        r[42] = (interval_s >> 8) & 0xFF
        for i in range(4):
            r[43 + i] = (classes >> (8 * i)) & 0xFF
        # ... framed: flag, record and checksum escaped, flag.
        out = bytearray()
        out.append(_FLAG)
        for b in r + bytes((sum(r) & 0xFF,)):
            if b == _FLAG or b == _ESC:
                out.append(_ESC)
                b ^= 0x20
            out.append(b)
        out.append(_FLAG)
        self._request = bytes(out)
        # Receive buffer (_n bytes of the unescaped frame so far) and receiver state.
        self._buf = bytearray(max_frame)
        self._n = self._st = 0
        self._quiet_ms = 0  # tick of the last request or record
        self.hr = self.rr = self.rr_imp = self.spo2_x100 = None
        self.nibp_sys = self.nibp_dia = self.nibp_mean = None
        self.etco2_pct_x100 = self.etco2_mmhg_x10 = self.r_time = None
        self.hr_ms = self.rr_ms = self.rr_imp_ms = self.spo2_ms = self.etco2_ms = 0
        self.nibp_ms = self.nibp_seq = self.record_ms = 0
        self.nibp_time_known = False
        self.frames_ok = self.frames_bad = self.frames_invalid = self.frames_too_long = 0
        self.bytes_discarded = self.records_ignored = self.requests_sent = 0

    def poll(self, now_ms):
        """The data request: at start, then again whenever records stop arriving."""
        if self.requests_sent and ticks_diff(now_ms, self._quiet_ms) < self.rerequest_ms:
            return None
        self._quiet_ms = now_ms
        self.requests_sent += 1
        return self._request

    def online(self, now_ms):
        # r_time is None until the first record with displayed values
        return self.r_time is not None and ticks_diff(now_ms, self.record_ms) <= self.offline_ms

    def values(self, now_ms, max_age_ms=None):
        """{MDC code: (mantissa, exponent, tick)} for values present and fresh.

        NIBP entries carry nibp_ms (first sighting of the reading), and are included while
        the record showing them is fresh: judging the reading's age is the caller's job.
        """
        age = self.offline_ms if max_age_ms is None else max_age_ms
        out: dict = {}
        if ticks_diff(now_ms, self.record_ms) > age or self.r_time is None:
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
        buf = self._buf
        n = self._n
        st = self._st
        for b in data:
            if b != _FLAG:
                if st == _OUT or st == _OVER:
                    self.bytes_discarded += 1
                elif st == _IN and b == _ESC:
                    st = _ESCAPED
                elif n < len(buf):
                    buf[n] = b ^ 0x20 if st == _ESCAPED else b
                    n += 1
                    st = _IN
                else:
                    self.frames_too_long += 1
                    self.bytes_discarded += n + 1
                    n = 0
                    st = _OVER
                continue
            # A flag: the end of a frame (if any) and the start of the next.
            if st == _ESCAPED:  # 7D 7E: aborted frame (HDLC abort)
                self.bytes_discarded += n + 1
            elif st == _IN and n:
                # The frame: record, then its checksum (8-bit sum of the record bytes).
                m = n - 1  # record length without the checksum
                c = 0
                for k in range(m):
                    c += buf[k]
                if m < _HDR:
                    self.bytes_discarded += n  # a fragment or noise between flags
                elif (c & 0xFF) != buf[m]:
                    self.frames_bad += 1
                elif buf[0] | (buf[1] << 8) != m:  # r_len
                    self.frames_invalid += 1
                elif buf[14] | buf[15]:  # r_maintype other than DRI_MT_PHDB (0)
                    self.frames_ok += 1
                    self.records_ignored += 1
                else:
                    self.frames_ok += 1
                    # A physiological record: read its displayed-values subrecords.
                    used = False
                    for k in range(8):
                        d = 16 + 3 * k
                        if buf[d + 2] == 0xFF:  # sr_type: end of the subrecord list
                            break
                        # sr_offset read unsigned: a negative one (>= 0x8000) lands beyond the record
                        start = _HDR + (buf[d] | (buf[d + 1] << 8))
                        if buf[d + 2] != _DRI_PH_DISPL or start + _PHDB > m:
                            self.records_ignored += 1
                            continue
                        if buf[start + 277] & 0x0F:  # cl_drilvl_subt bits 8-11: not the basic class
                            self.records_ignored += 1
                            continue
                        # The basic class values (the class data follows the 4-byte time): each an
                        # int16, where a value below -32001 is a marker (absent).
                        v = []
                        for a in _AT:
                            i = start + 4 + 2 * a
                            x = buf[i] | (buf[i + 1] << 8)
                            if x & 0x8000:
                                x -= 0x10000
                            v.append(None if x < _INVALID_LIMIT else x)
                        hr, rr_imp, sys, dia, mean, spo2, et, rr, amb = v
                        self.hr = hr
                        self.rr_imp = rr_imp
                        self.spo2_x100 = spo2
                        self.rr = rr
                        self.etco2_pct_x100 = et
                        if et is None or amb is None or et < 0 or amb <= 0:
                            self.etco2_mmhg_x10 = None
                        else:
                            # et (0.01 %) x amb (0.1 mmHg) / 10**5 = mmHg; x10 for 0.1 mmHg, half up
                            self.etco2_mmhg_x10 = (et * amb + 5000) // 10000
                        self.hr_ms = self.rr_imp_ms = self.spo2_ms = self.rr_ms = self.etco2_ms = (
                            now_ms
                        )
                        if not self.nibp_seq or (sys, dia, mean) != (
                            self.nibp_sys,
                            self.nibp_dia,
                            self.nibp_mean,
                        ):
                            # A new reading; or the first record, so its time is not known
                            self.nibp_time_known = self.nibp_seq > 0
                            self.nibp_ms = now_ms
                            self.nibp_seq += 1
                        self.nibp_sys = sys
                        self.nibp_dia = dia
                        self.nibp_mean = mean
                        used = True
                    if used:
                        self._quiet_ms = self.record_ms = now_ms
                        self.r_time = (
                            buf[6] | (buf[7] << 8) | (buf[8] << 16) | (buf[9] << 24)
                        )  # a big int on 32-bit ports after 2038 only
            n = 0
            st = _IN
        self._n = n
        self._st = st
