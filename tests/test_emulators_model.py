"""Device models of the emulators, on a manual clock and without any transport."""

import binascii
import struct

from emulators import DatexS5, ManualClock, Ne1000Pump, Radical7
from emulators.datex_monitor import phys_record, unescape, wrap


def pkt(text):
    data = text.encode()
    c = binascii.crc_hqx(data, 0)
    return bytes([2, len(data) + 4]) + data + bytes([c >> 8, c & 0xFF, 3])


def replies(raw):
    """Safe Mode reply texts in ``raw``, checking each CRC."""
    out = []
    i = 0
    while i < len(raw):
        assert raw[i] == 2, raw
        n = raw[i + 1]
        body = raw[i + 2 : i + n - 2]
        crc = raw[i + n - 2] << 8 | raw[i + n - 1]
        assert raw[i + n] == 3 and binascii.crc_hqx(body, 0) == crc
        out.append(body.decode())
        i += n + 1
    return out


def ask(pump, text):
    pump.receive(pkt(text))
    return replies(pump.service())


def setup_pump(**kw):
    clock = ManualClock()
    pump = Ne1000Pump(clock=clock, **kw)
    return clock, pump


def test_basic_mode_then_safe_mode():
    clock, pump = setup_pump(safe_mode=False)
    pump.receive(b"\r saf 5\r")
    assert pump.service() == b"\x0200S\x03\x0200S\x03"
    assert pump.safe_mode and pump.saf_s == 5
    assert ask(pump, "VER") == ["00SNE1000V3.930"]
    assert ask(pump, "SAF0") == ["00S"]  # answered in Safe Mode, then back to Basic
    assert not pump.safe_mode


def test_infusion_to_target_volume_and_dis():
    clock, pump = setup_pump()
    for cmd in ("DIA26.70", "RAT60.00MH", "VOLML", "VOL0.500", "DIRINF", "RUN"):
        assert ask(pump, cmd) == ["00S" if cmd != "RUN" else "00I"], cmd
    clock.advance(15)  # 60 mL/h for 15 s = 0.25 mL
    assert ask(pump, "DIS") == ["00II0.250W0.000ML"]
    assert ask(pump, "RAT") == ["00I60.00MH"]
    clock.advance(60)
    assert ask(pump, "DIS") == ["00SI0.500W0.000ML"]  # stopped at the target
    assert pump.true_infused_ul() == 500.0


def test_stop_pauses_then_stops_and_run_resumes():
    clock, pump = setup_pump()
    ask(pump, "RAT3600UH")
    ask(pump, "VOL1.000")
    assert ask(pump, "RUN") == ["00I"]
    clock.advance(10)
    assert ask(pump, "STP") == ["00P"]
    clock.advance(10)  # paused: nothing delivered
    assert ask(pump, "RUN") == ["00I"]
    clock.advance(10)
    assert ask(pump, "STP") == ["00P"]
    assert ask(pump, "STP") == ["00S"]
    assert abs(pump.true_infused_ul() - 20.0) < 1e-6


def test_rejections():
    clock, pump = setup_pump()
    assert ask(pump, "RAT99999MH") == ["00S?"]  # 5 digits: not a <float>
    assert ask(pump, "RAT9999MH") == ["00S?OOR"]  # beyond the syringe's speed
    assert ask(pump, "RUN") == ["00S?NA"]  # no rate set
    ask(pump, "RAT1.000MH")
    ask(pump, "RUN")
    assert ask(pump, "RAT5.000UH") == ["00I?NA"]  # units cannot change while pumping
    assert ask(pump, "DIA10.00") == ["00I?NA"]
    assert ask(pump, "XYZ") == ["00I?"]
    bad = bytearray(pkt("STP"))
    bad[-2] ^= 1
    pump.receive(bytes(bad))
    assert replies(pump.service()) == ["00I?COM"]
    assert pump.running()
    assert pump.log[-1][1:] == ("STP", False)


def test_alarm_is_answered_once_instead_of_the_command():
    clock, pump = setup_pump()
    ask(pump, "RAT1.000MH")
    ask(pump, "RUN")
    pump.inject_occlusion()
    assert replies(pump.service()) == ["00A?S"]  # auto-alarm
    assert not pump.running()
    assert ask(pump, "RUN") == ["00A?S"]  # acknowledges, does not run
    assert not pump.running()
    assert ask(pump, "RUN") == ["00I"]


def test_safe_mode_watchdog():
    clock, pump = setup_pump(saf_s=5)
    clock.advance(100)
    assert pump.service() == b""  # not armed before the first valid packet
    ask(pump, "RAT60.00MH")
    ask(pump, "RUN")
    t_last = clock()
    clock.advance(5)
    assert pump.service() == b"" and pump.running()
    clock.advance(0.01)
    assert replies(pump.service()) == ["00A?T"]
    assert not pump.running() and pump.alarms_raised == [(t_last + 5.01, "T")]
    clock.advance(60)
    assert pump.service() == b""  # timer waits for the next valid packet


def test_power_loss_and_restart():
    clock, pump = setup_pump()
    ask(pump, "RAT60.00MH")
    ask(pump, "RUN")
    clock.advance(6)
    pump.power_off()
    pump.receive(pkt("DIS"))
    assert pump.service() == b""
    clock.advance(60)
    pump.power_on()
    assert replies(pump.service()) == ["00A?R"]
    assert not pump.running() and abs(pump.true_infused_ul() - 100.0) < 1e-6
    assert ask(pump, "") == ["00A?R"]
    assert ask(pump, "RAT") == ["00S60.00MH"]  # settings survived


def test_interbyte_timeout_and_frozen_counter():
    clock, pump = setup_pump()
    pump.receive(pkt("RAT60.00MH")[:5])
    clock.advance(0.6)
    pump.service()
    pump.receive(pkt("RAT60.00MH")[5:] + pkt("RUN"))
    assert replies(pump.service()) == ["00S?NA"]  # fragment dropped: no rate, RUN refused
    ask(pump, "RAT60.00MH")
    ask(pump, "RUN")
    clock.advance(6)
    pump.freeze()
    clock.advance(6)
    assert ask(pump, "DIS") == ["00II0.100W0.000ML"]
    pump.unfreeze()
    assert ask(pump, "DIS") == ["00II0.200W0.000ML"]


def test_oximeter_lines():
    clock = ManualClock(start=1456181265)  # 02/22/16 22:47:45 UTC
    state = {"spo2": 98, "bpm": 97, "pi_x100": 360}
    ox = Radical7(lambda: state, clock=clock)
    line = ox.service()
    assert line == (
        b"02/22/16 22:47:45 SN=0000056661 SPO2=098% BPM=097 PI=03.60% SPCO=--.-% "
        b"SPMET=--.-% DESAT=-- PIDELTA=+-- PVI=-- ALARM=0000 EXC=000800\r\n"
    )
    assert ox.service() == b""
    state["spo2"] = None
    clock.advance(1)
    assert b"SPO2=---% BPM=097" in ox.service()
    ox.corrupt_next(3)
    for _ in range(3):
        clock.advance(1)
        out = ox.service()
        assert b"\x00" in out or b"BPM=O" in out or not out.endswith(b"\r\n")
    assert [s[4] for s in ox.sent] == [False, False, True, True, True]


def test_monitor_request_and_records():
    clock = ManualClock()
    vitals = {"hr": 72, "spo2_x100": 9800, "nibp": (12000, 8000, 9333)}
    mon = DatexS5(lambda: vitals, clock=clock)
    assert mon.service() == b""  # nothing until asked
    req = bytearray(49)
    req[0] = 49
    req[21] = 0xFF
    req[40:43] = bytes([1, 5, 0])
    mon.receive(wrap(bytes(req)))
    raw = mon.service()
    assert raw[0] == 0x7E and raw[-1] == 0x7E
    data = unescape(raw[1:-1])
    assert sum(data[:-1]) & 0xFF == data[-1] and len(data) == 319
    rec = data[:-1]
    assert struct.unpack_from("<h", rec, 0)[0] == 318
    (hr,) = struct.unpack_from("<h", rec, 40 + 4 + 6)
    (sys_,) = struct.unpack_from("<h", rec, 40 + 4 + 78)
    assert hr == 72 and sys_ == -32767  # no cuff cycle yet
    mon.cuff_cycle()
    clock.advance(4.9)
    assert mon.service() == b""
    clock.advance(0.1)
    rec = unescape(mon.service()[1:-1])[:-1]
    assert struct.unpack_from("<hhh", rec, 40 + 4 + 78) == (12000, 8000, 9333)
    assert rec == phys_record(mon.sent[-1][1], int(clock()), 2, 1)
    mon.power_off()
    mon.power_on()
    clock.advance(30)
    assert mon.service() == b""  # the request did not survive the power cycle
