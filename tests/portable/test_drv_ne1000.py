"""NE-1000 Safe Mode driver: exact bytes out, robust parsing in, stop pre-emption.

Replies are built here with an independent bitwise CRC, so a bug shared by the driver's
framing and its own CRC table cannot cancel out.
"""

from firmware.drivers import ne1000
from firmware.drivers.ne1000 import Ne1000Pump, format_number
from tests.portable.harness import check_cases, raises

_WRAP = 1 << 30


def frame(cmd):
    """The packet the driver sends for the raw command ``cmd`` (queued on an idle driver,
    then polled): the driver has no framing function of its own, which would cost heap on
    the node."""
    p = Ne1000Pump(saf_s=0, bootstrap=False)
    assert p.queue(cmd)
    return p.poll(0)


def crc16_xmodem(data):
    """The driver's CRC, read back from the packet it builds."""
    f = frame(bytes(data))
    return (f[-3] << 8) | f[-2]


def _crc_ref(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def _pkt(text):
    data = text.encode()
    c = _crc_ref(data)
    return bytes([2, len(data) + 4]) + data + bytes([c >> 8, c & 0xFF, 3])


def _ready(**kw):
    """A driver past its start-up SAF command, at tick 10."""
    p = Ne1000Pump(bootstrap=False, **kw)
    assert p.poll(0) == _pkt("SAF5")
    p.feed(_pkt("00S"), 10)
    assert p.pending() == 0
    return p


def test_saf0_frame_is_the_manuals_example():
    assert crc16_xmodem(b"SAF0") == 0x5543
    assert crc16_xmodem(b"123456789") == 0x31C3  # CRC-16/XMODEM check value
    assert frame(b"SAF0") == bytes([0x02, 0x08, 0x53, 0x41, 0x46, 0x30, 0x55, 0x43, 0x03])
    assert frame(b"") == bytes([0x02, 0x04, 0x00, 0x00, 0x03])  # status query
    raises(ValueError, Ne1000Pump().queue, b"X" * 251)  # the length byte would overflow
    assert Ne1000Pump().queue(b"X" * 250)
    raises(ValueError, Ne1000Pump(address=1).queue, b"X" * 249)  # with the address


def test_crc_matches_reference_on_many_inputs():
    data = bytearray()
    for i in range(60):
        data.append((i * 37 + 11) & 0xFF)
        assert crc16_xmodem(data) == _crc_ref(data)


def test_format_number_four_digits():
    cases = [
        ((5000, 3), (b"5.000", 5000)),
        ((1, 3), (b"0.001", 1)),
        ((9999, 3), (b"9.999", 9999)),
        ((10000, 3), (b"10.00", 10000)),
        ((52505, 3), (b"52.51", 52510)),  # 4-digit limit: rounded half up
        ((52504, 3), (b"52.50", 52500)),
        ((99995, 3), (b"100.0", 100000)),
        ((9999499, 3), (b"9999", 9999000)),
        ((2670, 2), (b"26.70", 2670)),
        ((0, 3), (b"0.000", 0)),
    ]

    def check(case):
        args, want = case
        assert format_number(*args) == want, (args, format_number(*args))

    check_cases("ne1000.format_number", cases, check, lambda c: str(c[0]))
    raises(ValueError, format_number, 9999500, 3)
    raises(ValueError, format_number, -1, 3)


def parse_number(text):
    """The driver's reading of a pump ``<float>`` in 0.001 units, through a RAT reply in
    mL/h (so uL/h); None when the reply is refused as unreadable."""
    p = _ready()
    assert p.poll(20) == _pkt("DIS")
    p.feed(_pkt("00SI0W0ML"), 21)
    assert p.poll(1020) == _pkt("RAT")
    p.feed(_pkt("00S" + text.decode() + "MH"), 1021)
    assert p.frames_invalid == (p.rate_ul_h is None), text
    return p.rate_ul_h


def test_parse_number():
    cases = [
        (b"0.500", 500),
        (b"12.5", 12500),
        (b"1.2345", 1235),
        (b"1.2344", 1234),
        (b"7", 7000),
        (b".5", 500),
        (b"", None),
        (b".", None),
        (b"1.2.3", None),
        (b"1a", None),
    ]

    def check(case):
        text, want = case
        assert parse_number(text) == want, (text, parse_number(text))

    check_cases("ne1000.parse_number", cases, check, lambda c: repr(c[0]))


def test_bootstrap_enters_safe_mode_then_sends_saf():
    p = Ne1000Pump(saf_s=7, poll_ms=1000)
    assert p.poll(0) == b"\rSAF7\r"  # Basic Mode command
    assert p.poll(1) == _pkt("SAF7")
    assert p.poll(2) is None  # one command in flight
    raises(ValueError, Ne1000Pump, None, 2, 1500)  # poll slower than half the watchdog


def test_bootstrap_repeated_while_pump_silent():
    p = Ne1000Pump(saf_s=5, offline_ms=3000)
    assert p.poll(0) == b"\rSAF5\r"
    assert p.poll(1) == _pkt("SAF5")
    boots = [t for t in range(2, 7000, 100) if p.poll(t) == b"\rSAF5\r"]
    assert boots == [3002, 6002]
    p.feed(_pkt("00S"), 7000)
    assert all(p.poll(t) != b"\rSAF5\r" for t in range(7000, 9000, 100))


def test_commands_exact_bytes():
    p = _ready()
    p.set_diameter(2670)
    assert p.set_rate(52505) == 52510
    assert p.set_volume(35000) == 35000
    p.set_direction_infuse()
    p.clear_volumes()
    p.run()
    want = ["DIA26.70", "RAT52.51MH", "VOLML", "VOL35.00", "DIRINF", "CLDINF", "CLDWDR", "RUN"]
    t = 20
    for text in want:
        assert p.poll(t) == _pkt(text), text
        p.feed(_pkt("00S"), t + 1)
        t += 10
    assert p.commands_ok == 1 + len(want)
    assert p.last_error is None


def test_address_prefix_and_foreign_replies():
    p = Ne1000Pump(address=3, bootstrap=False)
    assert p.poll(0) == _pkt("03SAF5")
    p.feed(_pkt("04S"), 5)  # another pump on the chain
    assert p.frames_invalid == 1 and p.pending() == 1
    p.feed(_pkt("03S"), 6)
    assert p.pending() == 0 and p.state == "stopped"


def test_status_poll_alternates_dis_and_rat_and_parses():
    p = _ready()
    assert p.poll(20) == _pkt("DIS")
    p.feed(_pkt("00II0.500W0.000ML"), 25)
    assert p.infused_ul == 500 and p.withdrawn_ul == 0 and p.volume_ms == 25
    assert p.state == "infusing"
    assert p.poll(30) is None  # next poll not yet due
    assert p.poll(1020) == _pkt("RAT")
    p.feed(_pkt("00I52.51MH"), 1030)
    assert p.rate_ul_h == 52510 and p.rate_ms == 1030
    assert p.poll(2020) == _pkt("DIS")
    p.feed(_pkt("00II12.50W1.000UL"), 2030)  # uL units
    assert p.infused_ul == 13 and p.withdrawn_ul == 1
    assert p.values(2040) == {
        ne1000.MDC_FLOW_FLUID_PUMP: (52510, -3, 1030),
        ne1000.MDC_VOL_DELIVERED_TOTAL: (13, -3, 2030),
    }


def test_reply_split_at_every_byte_boundary():
    reply = _pkt("00II1.250W0.000ML")
    for k in range(len(reply) + 1):
        p = _ready()
        assert p.poll(20) == _pkt("DIS")
        p.feed(reply[:k], 21)
        p.feed(reply[k:], 22)
        assert p.infused_ul == 1250, k
        assert p.frames_ok == 2 and p.frames_bad == 0 and p.bytes_discarded == 0, k


def test_reply_fed_one_byte_at_a_time():
    p = _ready()
    p.poll(20)
    for b in _pkt("00II1.250W0.000ML"):
        p.feed(bytes([b]), 21)
    assert p.infused_ul == 1250


def test_crc_error_changes_nothing_then_recovers():
    p = _ready()
    p.poll(20)
    bad = bytearray(_pkt("00II9.999W0.000ML"))
    bad[-2] ^= 0x01
    p.feed(bytes(bad), 21)
    assert p.frames_bad == 1 and p.infused_ul is None and p.pending() == 1
    p.feed(_pkt("00II1.000W0.000ML"), 22)
    assert p.infused_ul == 1000


def test_garbage_before_and_between_frames():
    p = _ready()
    p.poll(20)
    junk = b"\x00\xffnoise\x02\x30\x30zz\x02\x05\x03"
    p.feed(junk + _pkt("00II0.100W0.000ML") + junk, 21)
    assert p.infused_ul == 100
    p.poll(1100)
    p.feed(_pkt("00I5.000MH") + junk, 1101)
    assert p.rate_ul_h == 5000
    assert p.frames_ok == 3 and p.bytes_discarded > 0


def test_false_stx_with_long_length_does_not_swallow_reply():
    p = _ready()
    p.poll(20)
    p.feed(b"\x02\x3f" + _pkt("00II0.200W0.000ML"), 21)
    assert p.infused_ul == 200


def test_basic_mode_reply_is_skipped():
    p = Ne1000Pump()
    p.poll(0)
    p.poll(1)
    p.feed(b"\x0200S\x03\x0200S\x03" + _pkt("00S"), 5)
    assert p.pending() == 0 and p.state == "stopped"


def test_stale_partial_frame_discarded_after_500ms():
    p = _ready()
    p.poll(20)
    p.feed(_pkt("00II0.300W0.000ML")[:6], 21)
    p.feed(_pkt("00II0.400W0.000ML"), 600)  # 579 ms later: the fragment is dropped
    assert p.infused_ul == 400 and p.bytes_discarded == 6


def test_error_replies():
    p = _ready()
    p.set_rate(5000)
    assert p.poll(20) == _pkt("RAT5.000MH")
    p.feed(_pkt("00S?OOR"), 21)
    assert p.last_error == "?OOR" and p.last_error_cmd == b"RAT5.000MH"
    assert p.commands_failed == 1 and p.pending() == 0
    p.set_diameter(1000)
    assert p.poll(30) == _pkt("DIA10.00")
    p.feed(_pkt("00S?COM"), 31)  # corrupted on the way in: sent again
    assert p.poll(32) == _pkt("DIA10.00")
    p.feed(_pkt("00S"), 33)
    assert p.commands_failed == 1 and p.pending() == 0


def test_reply_timeout_retries_then_fails():
    p = _ready(retries=2, reply_timeout_ms=400)
    p.run()
    assert p.poll(20) == _pkt("RUN")
    assert p.poll(419) is None
    assert p.poll(420) == _pkt("RUN")
    assert p.poll(820) == _pkt("RUN")
    out = p.poll(1220)  # gives up, moves on to the status poll
    assert out == _pkt("DIS")
    assert p.last_error == "timeout" and p.last_error_cmd == b"RUN" and p.timeouts == 3


def test_stop_jumps_the_queue_and_drops_pending_run():
    p = _ready()
    p.set_rate(1000)
    p.run()
    assert p.poll(20) == _pkt("RAT1.000MH")  # in flight
    p.stop()
    assert p.poll(21) == _pkt("STP")  # no wait behind the in-flight command
    assert p.commands_dropped == 2 and p.stop_pending
    p.feed(_pkt("00S"), 22)  # late reply to RAT: prompt not running, taken as the stop
    assert not p.stop_pending and p.stop_acked_ms == 22
    for t in range(30, 3000, 100):
        out = p.poll(t)
        assert out != _pkt("RUN")
        if out is not None:
            p.feed(_pkt("00S") if out != _pkt("DIS") else _pkt("00SI0W0ML"), t + 1)


def test_stop_preempts_status_poll_and_rejects_stale_running_reply():
    p = _ready()
    assert p.poll(20) == _pkt("DIS")
    p.stop()
    assert p.poll(21) == _pkt("STP")
    p.feed(_pkt("00II0.100W0.000ML"), 22)  # the DIS answer: still infusing
    assert p.stop_pending and p.state == "infusing"
    assert p.infused_ul is None  # data of an abandoned query is not trusted
    assert p.poll(23) == _pkt("STP")  # sent again at once
    p.feed(_pkt("00P"), 24)
    assert not p.stop_pending and p.state == "paused"


def test_stop_keeps_watchdog_setting():
    p = Ne1000Pump(bootstrap=False)
    p.stop()  # before the start-up SAF went out
    assert p.poll(0) == _pkt("STP")
    p.feed(_pkt("00S"), 1)
    assert p.poll(2) == _pkt("SAF5")
    raises(ValueError, p.set_safe_timeout, 1)  # shorter than two polls


def test_stop_is_resent_until_confirmed():
    p = _ready(retries=1)
    p.stop()
    t = 20
    sent = 0
    for _ in range(10):
        if p.poll(t) == _pkt("STP"):
            sent += 1
        t += 400
    assert sent == 10 and p.stop_pending  # beyond ``retries``: a stop never gives up
    p.feed(_pkt("00S"), t)
    assert not p.stop_pending


def test_alarm_reply_never_reruns():
    p = _ready()
    p.run()
    p.run()
    assert p.poll(20) == _pkt("RUN")
    p.feed(_pkt("00A?S"), 21)
    assert p.alarm == "S" and p.state == "alarm" and p.alarms == 1
    assert p.last_error == "alarm" and p.pending() == 0  # queued RUN dropped too
    assert p.poll(22) == _pkt("DIS")
    p.feed(_pkt("00SI0.100W0.000ML"), 23)
    assert p.state == "stopped" and p.alarm == "S"  # latched until cleared
    p.clear_alarm()
    assert p.alarm is None


def test_alarm_reply_to_query_is_retried():
    p = _ready()
    assert p.poll(20) == _pkt("DIS")
    p.feed(_pkt("00A?T"), 21)
    assert p.alarm == "T"
    assert p.poll(22) == _pkt("DIS")
    p.feed(_pkt("00SI0.000W0.000ML"), 23)
    assert p.infused_ul == 0 and p.last_error is None


def test_unsolicited_auto_alarm():
    p = _ready()
    p.feed(_pkt("00A?R"), 50)
    assert p.alarm == "R" and p.alarm_ms == 50 and p.pending() == 0


def test_invalid_content_counted():
    p = _ready()
    p.poll(20)
    for text in ("00Q", "00A?Z", "00A", "00IIxW0ML", "00II1W0XX"):
        p.feed(_pkt(text), 21)
    assert p.frames_invalid == 5 and p.infused_ul is None
    for text in ("0", "xxS"):  # too short / no address: rejected by the framing
        p.feed(_pkt(text), 22)
    assert p.frames_invalid == 5 and p.bytes_discarded == len(_pkt("0")) + len(_pkt("xxS"))
    assert p.pending() == 1


def test_online_and_tick_wraparound():
    p = Ne1000Pump(bootstrap=False, reply_timeout_ms=400, offline_ms=3000)
    t0 = _WRAP - 100
    assert not p.online(t0)
    assert p.poll(t0) == _pkt("SAF5")
    assert p.poll((t0 + 399) % _WRAP) is None  # 399 ms later, across the wrap
    assert p.poll((t0 + 400) % _WRAP) == _pkt("SAF5")
    p.feed(_pkt("00S"), (t0 + 450) % _WRAP)
    assert p.online((t0 + 450 + 3000) % _WRAP)
    assert not p.online((t0 + 450 + 3001) % _WRAP)
    assert p.values((t0 + 500) % _WRAP) == {}


def test_set_volume_zero_refused():
    p = _ready()
    raises(ValueError, p.set_volume, 0)
    assert p.pending() == 0


def test_queue_is_bounded():
    p = _ready()
    n = 0
    while p.request_status():
        n += 1
    assert n == 8
