"""Datex-Ohmeda S/5 driver: request bytes, framing, checksum, record layout, freshness.

Records are built here byte by byte from the layout in the driver's docstring (VSCapture's
structures), independently of the driver's own code.
"""

from firmware.drivers import datex
from firmware.drivers.datex import DatexS5
from tests.portable.harness import raises

_WRAP = 1 << 30
_INVALID = -32767


def _le16(v):
    v &= 0xFFFF
    return bytes([v & 0xFF, v >> 8])


def _le32(v):
    return bytes([v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF, (v >> 24) & 0xFF])


# value name -> offset inside the 270-byte basic class
_AT = {
    "hr": 6,
    "rr_imp": 14,
    "sys": 78,
    "dia": 80,
    "mean": 82,
    "spo2": 124,
    "et": 138,
    "rr": 142,
    "amb": 144,
}
VITALS = {
    "hr": 72,
    "rr_imp": 14,
    "sys": 12000,
    "dia": 8000,
    "mean": 9333,
    "spo2": 9800,
    "et": 500,
    "rr": 12,
    "amb": 7600,
}


def _record(vals, r_time=1700000000, sr_type=1, maintype=0, cls=0, r_len=None, r_nbr=0):
    basic = bytearray(270)
    for i in range(0, 270, 2):
        basic[i : i + 2] = _le16(_INVALID)
    for k, v in vals.items():
        if v is not None:
            basic[_AT[k] : _AT[k] + 2] = _le16(v)
    sub = _le32(r_time) + bytes(basic) + b"\x00\x00" + _le16((cls << 8) | 1)
    hdr = bytearray(40)
    hdr[0:2] = _le16(40 + len(sub) if r_len is None else r_len)
    hdr[2] = r_nbr
    hdr[3] = 9
    hdr[6:10] = _le32(r_time)
    hdr[14:16] = _le16(maintype)
    hdr[18] = sr_type
    hdr[21] = 0xFF
    return bytes(hdr) + sub


def _wrap(rec, bad=False):
    s = 0
    for b in rec:
        s += b
    body = rec + bytes([(s & 0xFF) ^ (0x01 if bad else 0)])
    out = bytearray([0x7E])
    for b in body:
        if b in (0x7E, 0x7D):
            out += bytes([0x7D, b ^ 0x20])
        else:
            out.append(b)
    out.append(0x7E)
    return bytes(out)


def test_request_frame_exact_bytes():
    want = (
        bytes([0x7E, 0x31])
        + bytes(20)
        + b"\xff"
        + bytes(18)
        + bytes([0x01, 0x05, 0, 0, 0, 0, 0, 0, 0, 0x36, 0x7E])
    )
    assert len(want) == 2 + 49 + 1  # flags, record, checksum (nothing escaped)
    d = DatexS5()
    assert d.poll(0) == want
    # the spec example quoted in public code: interval 10 s, classes 0x0E -> checksum 0x49
    spec = DatexS5(10, 0x0E).poll(0)
    assert spec[-2] == 0x49 and spec[41:48] == bytes([0x01, 0x0A, 0x00, 0x0E, 0, 0, 0])
    raises(ValueError, DatexS5, 4)


def test_good_record_values_and_units():
    d = DatexS5()
    d.feed(_wrap(_record(VITALS)), 100)
    assert d.frames_ok == 1 and d.online(100)
    assert d.hr == 72 and d.rr == 12 and d.rr_imp == 14
    assert (d.nibp_sys, d.nibp_dia, d.nibp_mean) == (12000, 8000, 9333)
    assert d.spo2_x100 == 9800 and d.etco2_pct_x100 == 500
    assert d.etco2_mmhg_x10 == 380  # 5.00 % of 760.0 mmHg = 38.0 mmHg
    assert d.r_time == 1700000000 and d.record_ms == 100
    assert d.values(200) == {
        datex.MDC_ECG_HEART_RATE: (72, 0, 100),
        datex.MDC_PRESS_BLD_NONINV_SYS: (12000, -2, 100),
        datex.MDC_PRESS_BLD_NONINV_DIA: (8000, -2, 100),
        datex.MDC_PRESS_BLD_NONINV_MEAN: (9333, -2, 100),
        datex.MDC_PULS_OXIM_SAT_O2: (9800, -2, 100),
        datex.MDC_AWAY_RESP_RATE: (12, 0, 100),
        datex.MDC_RESP_RATE: (14, 0, 100),
        datex.MDC_AWAY_CO2_ET: (380, -1, 100),
    }


def test_invalid_markers_are_absent():
    d = DatexS5()
    d.feed(_wrap(_record(VITALS)), 1)
    for marker in (-32767, -32766, -32765, -32764, -32763, -32762, -32002):
        v = dict(VITALS)
        v["hr"] = marker
        v["spo2"] = marker
        v["amb"] = marker
        d.feed(_wrap(_record(v)), 2)
        assert d.hr is None and d.spo2_x100 is None, marker
        assert d.etco2_pct_x100 == 500 and d.etco2_mmhg_x10 is None, marker
    assert datex.MDC_ECG_HEART_RATE not in d.values(3)
    v = dict(VITALS)
    v["hr"] = -32001  # the limit itself is a value
    d.feed(_wrap(_record(v)), 4)
    assert d.hr == -32001


def test_escaped_bytes_and_checksum():
    v = dict(VITALS)
    v["hr"] = 0x7E
    v["sys"] = 0x307E
    v["dia"] = 0x1F7D
    for nbr in range(256):  # covers checksums equal to 0x7E and 0x7D
        d = DatexS5()
        rec = _record(v, r_time=0x7E7D7E7D, r_nbr=nbr)
        d.feed(_wrap(rec), 1)
        assert d.frames_ok == 1, nbr
        assert d.hr == 0x7E and d.nibp_sys == 0x307E and d.nibp_dia == 0x1F7D
        assert d.r_time == 0x7E7D7E7D


def test_bad_checksum_changes_nothing():
    d = DatexS5()
    d.feed(_wrap(_record(VITALS)), 1)
    v = dict(VITALS)
    v["hr"] = 150
    d.feed(_wrap(_record(v), bad=True), 2)
    assert d.frames_bad == 1 and d.hr == 72 and d.record_ms == 1
    d.feed(_wrap(_record(v)), 3)
    assert d.hr == 150


def test_split_at_every_byte_boundary():
    v = dict(VITALS)
    v["hr"] = 0x7E  # an escape sequence to split as well
    data = _wrap(_record(v))
    for k in range(len(data) + 1):
        d = DatexS5()
        d.feed(data[:k], 1)
        d.feed(data[k:], 2)
        assert d.frames_ok == 1 and d.hr == 0x7E and d.bytes_discarded == 0, k


def test_garbage_before_between_and_stray_flags():
    d = DatexS5()
    junk = b"\x00\x7d\x55\x7e\x7e\x01\x02\x7e"
    v2 = dict(VITALS)
    v2["hr"] = 80
    d.feed(b"noise" + _wrap(_record(VITALS)) + junk + _wrap(_record(v2)) + b"tail", 5)
    assert d.frames_ok == 2 and d.hr == 80 and d.frames_bad == 0
    assert d.bytes_discarded > 0


def test_abort_sequence_and_overlong_frame():
    d = DatexS5(max_frame=400)
    d.feed(b"\x7e" + _record(VITALS)[:50] + b"\x7d\x7e", 1)  # 7D 7E aborts the frame
    d.feed(_wrap(_record(VITALS)), 2)
    assert d.frames_ok == 1
    d.feed(b"\x7e" + b"\x11" * 500 + b"\x7e", 3)
    assert d.frames_too_long == 1
    d.feed(_wrap(_record(VITALS)), 4)
    assert d.frames_ok == 2 and d.record_ms == 4


def test_records_not_for_us_are_ignored():
    d = DatexS5()
    d.feed(_wrap(_record(VITALS, maintype=1)), 1)  # waveform record
    d.feed(_wrap(_record(VITALS, sr_type=2)), 1)  # 10 s trend subrecord
    d.feed(_wrap(_record(VITALS, cls=1)), 1)  # ext1 class
    assert d.records_ignored == 3 and d.hr is None and not d.online(1)
    d.feed(_wrap(_record(VITALS, r_len=317)), 1)  # length field disagrees with frame
    assert d.frames_invalid == 1 and d.hr is None


def test_nibp_time_is_first_sighting_of_the_reading():
    d = DatexS5()
    d.feed(_wrap(_record(VITALS)), 1000)
    assert d.nibp_ms == 1000 and not d.nibp_time_known and d.nibp_seq == 1
    d.feed(_wrap(_record(VITALS)), 6000)  # same cuff reading, displayed again
    assert d.nibp_ms == 1000 and d.nibp_seq == 1
    assert d.values(6000)[datex.MDC_PRESS_BLD_NONINV_SYS] == (12000, -2, 1000)
    v = dict(VITALS)
    v["sys"] = 14500
    d.feed(_wrap(_record(v)), 11000)  # a new cuff cycle
    assert d.nibp_ms == 11000 and d.nibp_time_known and d.nibp_seq == 2
    v["sys"] = v["dia"] = v["mean"] = None
    d.feed(_wrap(_record(v)), 16000)
    assert d.nibp_sys is None and datex.MDC_PRESS_BLD_NONINV_SYS not in d.values(16000)


def test_poll_rerequests_only_when_records_stop():
    d = DatexS5(interval_s=5)
    assert d.poll(0) is not None and d.requests_sent == 1
    assert d.poll(10999) is None
    assert d.poll(11000) is not None  # nothing for 2 intervals + 1 s: ask again
    d.feed(_wrap(_record(VITALS)), 12000)
    for t in range(12000, 23000, 1000):
        assert d.poll(t) is None
    assert d.poll(23000) is not None and d.requests_sent == 3


def test_online_timeout_and_wraparound():
    d = DatexS5(interval_s=5)  # offline after 3 intervals
    t0 = _WRAP - 2000
    assert not d.online(t0) and d.values(t0) == {}
    assert d.poll(t0) is not None
    d.feed(_wrap(_record(VITALS)), t0)
    assert d.online((t0 + 15000) % _WRAP)
    assert not d.online((t0 + 15001) % _WRAP)
    assert d.values((t0 + 15001) % _WRAP) == {}
    assert d.poll((t0 + 10999) % _WRAP) is None
    assert d.poll((t0 + 11000) % _WRAP) is not None
