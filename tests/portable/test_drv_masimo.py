"""Masimo Radical-7 ASCII line parser: values only from whole, well-formed lines."""

from firmware.drivers import masimo
from firmware.drivers.masimo import Radical7
from tests.portable.harness import check_cases

_WRAP = 1 << 30

LINE = (
    b"02/22/16 22:47:45 SN=0000056661 SPO2=098% BPM=097 PI=03.60% SPCO=--.-% "
    b"SPMET=--.-% DESAT=-- PIDELTA=+-- PVI=-- ALARM=0000 EXC=000800\r\n"
)
# Rad-8 capture (yahnatan/pulseox): same fields, no PVI
RAD8 = (
    b"02/22/16 22:47:46 SN=0000056661 SPO2=096% BPM=101 PI=03.95% SPCO=--.-% "
    b"SPMET=--.-% DESAT=-- PIDELTA=+-- ALARM=0000 EXC=000800\r\n"
)
DASHES = (
    b"02/22/16 22:47:47 SN=0000056661 SPO2=---% BPM=--- PI=--.--% SPCO=--.-% "
    b"SPMET=--.-% DESAT=-- PIDELTA=+-- PVI=-- ALARM=0003 EXC=000021\r\n"
)


def test_good_line():
    m = Radical7()
    m.feed(LINE, 100)
    assert (m.spo2, m.pr, m.pi_x100) == (98, 97, 360)
    assert m.spo2_ms == m.pr_ms == m.pi_ms == m.line_ms == 100
    assert m.alarm == 0 and m.exc == 0x800 and m.serial == b"0000056661"
    assert m.lines_ok == 1 and m.frames_ok == 1 and m.bytes_discarded == 0
    assert m.values(200) == {
        masimo.MDC_PULS_OXIM_SAT_O2: (98, 0, 100),
        masimo.MDC_PULS_OXIM_PULS_RATE: (97, 0, 100),
    }
    assert m.poll(200) is None  # output-only device


def test_rad8_line_without_pvi():
    m = Radical7()
    m.feed(RAD8, 5)
    assert (m.spo2, m.pr, m.pi_x100) == (96, 101, 395)


def test_dashes_and_zeros_are_absent():
    m = Radical7()
    m.feed(LINE, 1)
    m.feed(DASHES, 2)
    assert m.spo2 is None and m.pr is None and m.pi_x100 is None
    assert m.spo2_ms == 2 and m.alarm == 3 and m.exc == 0x21
    assert m.values(3) == {}
    m.feed(LINE.replace(b"SPO2=098%", b"SPO2=000%").replace(b"BPM=097", b"BPM=000"), 4)
    assert m.spo2 is None and m.pr is None and m.pi_x100 == 360


def test_line_terminators():
    for end in (b"\r\n", b"\n", b"\r", b"\n\r"):
        m = Radical7()
        m.feed(LINE[:-2] + end + LINE[:-2] + end, 7)
        assert m.lines_ok == 2 and m.lines_bad == 0, end


def test_split_at_every_byte_boundary():
    data = LINE + DASHES.replace(b"SPO2=---%", b"SPO2=091%")
    for k in range(len(data) + 1):
        m = Radical7()
        m.feed(data[:k], 1)
        m.feed(data[k:], 2)
        assert m.lines_ok == 2 and m.lines_bad == 0, k
        assert m.spo2 == 91 and m.pr is None, k


def test_malformed_lines_dropped_whole():
    def bad(text):
        return LINE.replace(*text)

    cases = [
        (b"SPO2=098%", b"SPO2=0O8%"),
        (b"SPO2=098%", b"SPO2=98%"),
        (b"SPO2=098%", b"SPO2=101%"),
        (b"SPO2=098%", b"SPO2=098"),
        (b"BPM=097", b"BPM=O97"),
        (b"BPM=097", b"BPM=301"),
        (b"PI=03.60%", b"PI=3.60%"),
        (b"PI=03.60%", b"PI=20.01%"),
        (b"PI=03.60%", b"PI=03,60%"),
        (b"ALARM=0000", b"ALARM=00G0"),
        (b"EXC=000800", b"EXC="),
        (b"EXC=000800", b""),
        (b"02/22/16", b"02-22-16"),
        (b"22:47:45", b"22:47"),
        (b"02/22/16", b"--/--/--"),
        (b"22:47:45", b"22:--:45"),
        (b"SPO2=098%", b"SPO2=-98%"),
        (b"SPO2=098%", b"SPO2=9-8%"),
        (b"BPM=097", b"BPM=--7"),
        (b"PI=03.60%", b"PI=--.60%"),
        (b"ALARM=0000", b"ALARM=000000000"),
        (b"ALARM=0000", b"ALARM=-1"),
        (b"DESAT=--", b"DESAT"),
        (b"PVI=--", b"PVI=-\x00"),
        (b"PVI=--", b"PVI=-\xc3"),
    ]

    def check(case):
        m = Radical7()
        m.feed(LINE, 1)
        m.feed(bad(case), 2)
        assert m.lines_bad == 1 and m.lines_ok == 1
        assert m.spo2 == 98 and m.spo2_ms == 1  # last good values kept, not replaced

    check_cases("masimo.malformed", cases, check, lambda c: repr(c[1]))


def test_garbage_between_lines():
    m = Radical7()
    m.feed(b"\x00\xff\x7e garbage\r\n" + LINE + b"\r\n\r\n" + b"#@!" + LINE, 3)
    # "#@!" has no terminator before the next line: that line is lost with it
    assert m.lines_ok == 1 and m.lines_bad == 2
    m.feed(LINE, 4)
    assert m.lines_ok == 2


def test_overlong_line_dropped_then_recovers():
    m = Radical7(max_line=200)
    m.feed(b"X" * 450, 1)
    m.feed(LINE, 2)  # still inside the over-long line: its terminator ends it
    assert m.lines_too_long == 1 and m.lines_ok == 0
    m.feed(LINE, 3)
    assert m.lines_ok == 1 and m.spo2 == 98 and m.bytes_discarded >= 450
    m2 = Radical7(max_line=len(LINE) - 2)  # a line of exactly max_line fits
    m2.feed(LINE, 1)
    assert m2.lines_ok == 1 and m2.lines_too_long == 0


def test_online_timeout_and_wraparound():
    m = Radical7(offline_ms=3000)
    t0 = _WRAP - 1000
    assert not m.online(t0)
    m.feed(LINE, t0)
    assert m.online((t0 + 3000) % _WRAP)
    assert not m.online((t0 + 3001) % _WRAP)
    assert m.values((t0 + 2000) % _WRAP) != {}
    assert m.values((t0 + 3001) % _WRAP) == {}
    assert m.values((t0 + 1500) % _WRAP, max_age_ms=1000) == {}
