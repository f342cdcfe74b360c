"""Emulated GE Datex-Ohmeda S/5 monitor: the computer interface's displayed-values stream.

Independent of the firmware driver (``struct`` layouts written from VSCapture's
``datex_hdr_type`` / ``basic_phdb_type`` / ``dri_phdb`` definitions):

- frames: 0x7E, record + 8-bit sum checksum with 0x7E/0x7D escaped as 0x7D, b ^ 0x20, 0x7E;
- the host asks for displayed values with a 49-byte DRI_MT_PHDB request (phdb_rcrd_type 1,
  tx_interval s); the monitor then sends a record every tx_interval seconds (the first one
  right away, our choice) until a request with interval 0 or a power cycle;
- record: 40-byte header (r_len 318, r_maintype 0, sr_desc[0] = (0, DRI_PH_DISPL),
  sr_desc[1].sr_type 0xFF) and one 278-byte ``dri_phdb`` subrecord: time, basic class,
  marker, reserved, cl_drilvl_subt (class 0 = basic in bits 8-11, subtype 1 in bits 0-7);
- units: HR and respiration rates 1/min, NIBP 0.01 mmHg, SpO2 0.01 %, CO2 0.01 %,
  ambient pressure 0.1 mmHg; missing values are DATA_INVALID (-32767).

``source()`` returns a dict: ``hr``, ``spo2_x100``, ``rr`` (airway), ``rr_imp``,
``etco2_pct_x100``, ``amb_press_x10`` (ints or None), and ``nibp`` = (sys, dia, mean) in
0.01 mmHg: the patient's pressure, sampled into the display only by ``cuff_cycle()`` (or
every ``nibp_interval_s`` if set), like a real cuff. Every record sent is kept in ``sent``
as (time, displayed values dict, damaged).
"""

import struct

from .base import Emulator

FLAG = 0x7E
ESC = 0x7D
INVALID = -32767
HDR = struct.Struct("<hBBHIBBHh")  # 16 bytes, then 8 x sr_desc
SR = struct.Struct("<hB")
DRI_PH_DISPL = 1
DRI_LEVEL_2005 = 9
# basic class groups: (offset of the group header, number of int16 values, has header)
_GROUPS = (
    (0, 5, True),  # ecg: hr st1 st2 st3 imp_rr
    (16, 4, True),  # p1
    (30, 4, True),  # p2
    (44, 4, True),  # p3
    (58, 4, True),  # p4
    (72, 4, True),  # nibp: sys dia mean hr
    (86, 1, True),  # t1..t4
    (94, 1, True),
    (102, 1, True),
    (110, 1, True),
    (118, 4, True),  # SpO2: SpO2 pr ir_amp svo2
    (132, 4, True),  # co2: et fi rr amb_press
    (146, 2, True),  # o2
    (156, 2, True),  # n2o
    (166, 3, True),  # aa
    (178, 8, True),  # flow_vol
    (200, 4, True),  # co_wedge
    (214, 3, True),  # nmt
    (226, 3, False),  # ecg_extra (no header)
    (232, 1, True),  # svo2
    (240, 4, True),  # p5
    (254, 4, True),  # p6
)
_EXISTS_ACTIVE = 0x3  # group status bits 0 (exists) and 1 (active)


def escape(data):
    out = bytearray()
    for b in data:
        if b in (FLAG, ESC):
            out += bytes([ESC, b ^ 0x20])
        else:
            out.append(b)
    return bytes(out)


def unescape(data):
    out = bytearray()
    it = iter(data)
    for b in it:
        if b == ESC:
            b = next(it, None)
            if b is None:
                return None
            b ^= 0x20
        out.append(b)
    return bytes(out)


def wrap(record, damaged=False):
    s = sum(record) & 0xFF
    if damaged:
        s ^= 0x5A
    return bytes([FLAG]) + escape(record + bytes([s])) + bytes([FLAG])


def basic_class(v):
    """270-byte basic class from displayed values ``v`` (missing -> DATA_INVALID)."""
    b = bytearray(270)
    for off, n, hdr in _GROUPS:
        first = off + 6 if hdr else off
        for i in range(n):
            struct.pack_into("<h", b, first + 2 * i, INVALID)

    def put(pos, value, group):
        if value is not None:
            struct.pack_into("<h", b, pos, value)
            struct.pack_into("<I", b, group, _EXISTS_ACTIVE)

    put(6, v.get("hr"), 0)
    put(14, v.get("rr_imp"), 0)
    nibp = v.get("nibp")
    if nibp is not None:
        for i, x in enumerate(nibp):
            put(78 + 2 * i, x, 72)
    put(124, v.get("spo2_x100"), 118)
    put(138, v.get("etco2_pct_x100"), 132)
    put(142, v.get("rr"), 132)
    put(144, v.get("amb_press_x10"), 132)
    return bytes(b)


def phys_record(v, r_time, r_nbr=0, plug_id=1):
    sub = struct.pack("<I", r_time & 0xFFFFFFFF) + basic_class(v)
    sub += struct.pack("<BBH", 0, 0, (0 << 8) | DRI_PH_DISPL)
    descs = SR.pack(0, DRI_PH_DISPL) + SR.pack(0, 0xFF) + bytes(3 * 6)
    r_len = 40 + len(sub)
    hdr = HDR.pack(r_len, r_nbr & 0xFF, DRI_LEVEL_2005, plug_id, r_time & 0xFFFFFFFF, 0, 0, 0, 0)
    return hdr + descs + sub


class DatexS5(Emulator):
    def __init__(self, source, clock=None, nibp_interval_s=None, plug_id=1):
        super().__init__(clock)
        self.source = source
        self.nibp_interval_s = nibp_interval_s
        self.plug_id = plug_id
        self.tx_interval = 0
        self.requests = []
        self.sent = []
        self.nibp_displayed = None
        self._next_send = None
        self._next_cuff = None
        self._rx = bytearray()
        self._in = False
        self._r_nbr = 0
        self._display = None

    # ---- model ----------------------------------------------------------------------

    def cuff_cycle(self):
        """Measure NIBP now: the display takes the source's current pressure."""
        with self.lock:
            self.nibp_displayed = (self.source() or {}).get("nibp")

    def _values(self):
        if self.frozen and self._display is not None:
            return self._display
        v = dict(self.source() or {})
        v["nibp"] = self.nibp_displayed
        self._display = v
        return v

    def _tick(self, now):
        if self.nibp_interval_s:
            if self._next_cuff is None:
                self._next_cuff = now
            if now >= self._next_cuff:
                self._next_cuff = now + self.nibp_interval_s
                self.nibp_displayed = (self.source() or {}).get("nibp")
        if not self.tx_interval or self._next_send is None or now < self._next_send:
            return
        self._next_send += self.tx_interval
        if self._next_send < now:
            self._next_send = now + self.tx_interval
        v = self._values()
        damaged = self._take_corrupt()
        self._r_nbr += 1
        rec = phys_record(v, int(now), self._r_nbr, self.plug_id)
        self.sent.append((now, v, damaged))
        self._emit(wrap(rec, damaged))

    def _on_power_off(self):
        self.tx_interval = 0  # the request is forgotten
        self._rx.clear()
        self._in = False

    def _on_power_on(self, now):
        self.nibp_displayed = None
        self._next_cuff = None

    # ---- wire -----------------------------------------------------------------------

    def _on_bytes(self, data, now):
        for b in data:
            if b == FLAG:
                if self._in and self._rx:
                    self._frame(bytes(self._rx), now)
                self._rx.clear()
                self._in = True
            elif self._in:
                self._rx.append(b)
                if len(self._rx) > 3000:
                    self._rx.clear()
                    self._in = False

    def _frame(self, raw, now):
        data = unescape(raw)
        if data is None or len(data) < 41 or sum(data[:-1]) & 0xFF != data[-1]:
            return
        rec = data[:-1]
        r_len, _, _, _, _, _, _, _, maintype = HDR.unpack_from(rec, 0)
        if r_len != len(rec) or maintype != 0 or len(rec) < 49:
            return
        _, sr_type = SR.unpack_from(rec, 16)
        if sr_type != 0:  # 0 = transmission request subrecord
            return
        rcrd_type, interval, classes = struct.unpack_from("<BhI", rec, 40)
        self.requests.append((now, rcrd_type, interval, classes))
        if rcrd_type != DRI_PH_DISPL:
            return
        if interval <= 0:
            self.tx_interval = 0
            return
        self.tx_interval = max(interval, 5)
        self._next_send = now  # first record at once, then every tx_interval
