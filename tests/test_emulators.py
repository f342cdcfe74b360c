"""Firmware drivers against the emulators over a real pty and a loopback TCP port.

Clocks run accelerated (ScaledClock); the driver gets tick values derived from the same
clock. The invariant checked throughout: a value the driver reports is one the device
really sent intact, or absent.
"""

import os
import re
import select
import socket
import threading
import time
import tty

import pytest

from emulators import DatexS5, Ne1000Pump, PtyTransport, Radical7, ScaledClock, TcpTransport
from firmware.drivers import datex as drv_datex
from firmware.drivers import masimo as drv_masimo
from firmware.drivers import ne1000 as drv_ne1000
from firmware.drivers._ticks import ticks_from_seconds


class PtyPort:
    """The node's side of a pty, opened the way the node opens a serial port."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)

    def write(self, data):
        while data:
            n = os.write(self.fd, data)
            data = data[n:]

    def read(self, timeout):
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return b""
        try:
            return os.read(self.fd, 4096)
        except BlockingIOError:
            return b""

    def close(self):
        os.close(self.fd)


class TcpPort:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port))
        self.sock.setblocking(False)

    def write(self, data):
        self.sock.sendall(data)

    def read(self, timeout):
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return b""
        try:
            return self.sock.recv(4096)
        except BlockingIOError:
            return b""

    def close(self):
        self.sock.close()


@pytest.fixture(params=["pty", "tcp"])
def link(request):
    opened = []

    def make(emulator):
        if request.param == "pty":
            t = PtyTransport(emulator).start()
            port = PtyPort(t.path)
        else:
            t = TcpTransport(emulator).start()
            port = TcpPort(t.host, t.port)
        opened.append((t, port))
        return port

    yield make
    for t, port in opened:
        port.close()
        t.stop()
        assert t.error is None


class Node:
    """A minimal I/O loop: what the real node does with one driver and one port."""

    def __init__(self, driver, port, clock):
        self.driver = driver
        self.port = port
        self.clock = clock
        self.silent = False
        self.checks = []

    def now(self):
        return ticks_from_seconds(self.clock())

    def run(self, until, real_timeout=8.0):
        deadline = time.monotonic() + real_timeout
        while time.monotonic() < deadline:
            if not self.silent:
                out = self.driver.poll(self.now())
                if out:
                    self.port.write(out)
            data = self.port.read(0.002)
            if data:
                self.driver.feed(data, self.now())
            for check in self.checks:
                check()
            if until():
                return True
        raise AssertionError("condition not reached in %.1f s (real)" % real_timeout)


# ---- pump ---------------------------------------------------------------------------

_DIS = re.compile(r"^\d\d(?:[IWSPTUX]|A\?.)I([\d.]+)W([\d.]+)(UL|ML)$")


def reported_infused(pump):
    """uL values in the intact DIS replies the emulated pump sent."""
    out = set()
    for _, text, damaged in list(pump.sent):
        m = _DIS.match(text)
        if m and not damaged:
            per = 1000 if m.group(3) == "ML" else 1
            out.add(round(float(m.group(1)) * per))
    return out


def pump_setup(link, speed=50, **kw):
    clock = ScaledClock(speed)
    pump = Ne1000Pump(clock=clock, safe_mode=False, **kw)
    drv = drv_ne1000.Ne1000Pump(saf_s=5, poll_ms=1000, reply_timeout_ms=2000)
    node = Node(drv, link(pump), clock)
    node.checks.append(lambda: drv.infused_ul is None or drv.infused_ul in reported_infused(pump))
    node.run(lambda: drv.state is not None and drv.pending() == 0)
    assert pump.safe_mode and pump.saf_s == 5
    return clock, pump, drv, node


def start_infusion(drv, node, rate_ul_h, volume_ul):
    drv.set_diameter(2670)
    assert drv.set_rate(rate_ul_h) == rate_ul_h
    assert drv.set_volume(volume_ul) == volume_ul
    drv.set_direction_infuse()
    drv.clear_volumes()
    drv.run()
    node.run(lambda: drv.pending() == 0 and drv.state == "infusing")
    assert drv.last_error is None


def test_pump_infuses_to_target_despite_line_faults(link):
    clock, pump, drv, node = pump_setup(link)
    start_infusion(drv, node, 120000, 1000)  # 1 mL at 120 mL/h: 30 s emulated
    last = [time.monotonic()]

    def faults():
        if time.monotonic() - last[0] > 0.05:
            last[0] = time.monotonic()
            pump.inject_garbage(b"\x02\x09\x00noise\x03")
            pump.corrupt_next(1)

    node.checks.append(faults)
    node.run(lambda: drv.state == "stopped" and drv.infused_ul == 1000)
    assert round(pump.true_infused_ul()) == 1000 and not pump.running()
    assert drv.rate_ul_h == 120000
    assert drv.frames_bad > 0 and drv.bytes_discarded > 0
    assert drv.values(node.now())[drv_ne1000.MDC_VOL_DELIVERED_TOTAL][:2] == (1000, -3)


def test_pump_watchdog_stops_infusion_when_node_goes_silent(link):
    clock, pump, drv, node = pump_setup(link)
    start_infusion(drv, node, 60000, 50000)
    node.silent = True  # the node hangs: no more packets
    node.run(lambda: any(code == "T" for _, code in pump.alarms_raised))
    t_alarm = [t for t, code in pump.alarms_raised if code == "T"][0]
    t_last = max(t for t, _, ok in pump.log if ok)
    assert t_alarm - t_last >= 5.0  # never before the configured timeout
    assert not pump.running()
    node.silent = False
    node.run(lambda: drv.alarm == "T")
    node.run(lambda: drv.state == "stopped")


def test_pump_stop_is_next_on_the_wire(link):
    clock, pump, drv, node = pump_setup(link)
    start_infusion(drv, node, 60000, 50000)
    while True:  # let the next status poll go out, then stop while it is in flight
        out = drv.poll(node.now())
        if out:
            node.port.write(out)
            if drv._inflight in (b"DIS", b"RAT"):
                break
        data = node.port.read(0.002)
        if data:
            drv.feed(data, node.now())
    in_flight = drv._inflight
    with pump.lock:
        mark = len(pump.log)
    drv.set_rate(30000)
    drv.request_status()
    drv.stop()
    node.run(lambda: not drv.stop_pending)
    after = [text for _, text, ok in pump.log[mark:] if ok]
    if after[0] != "STP":
        assert after[0] == in_flight.decode()  # already on the wire before stop()
        after = after[1:]
    assert after[0] == "STP"
    assert "RAT30.00MH" not in after and not pump.running()
    assert drv.state in ("paused", "stopped")


def test_pump_power_loss_and_occlusion(link):
    clock, pump, drv, node = pump_setup(link)
    start_infusion(drv, node, 60000, 50000)
    pump.power_off()
    node.run(lambda: not drv.online(node.now()))
    pump.power_on()
    node.run(lambda: drv.alarm == "R")
    assert not pump.running()
    node.run(lambda: drv.state == "stopped")
    drv.clear_alarm()
    drv.run()
    node.run(lambda: drv.state == "infusing")
    pump.inject_occlusion()
    node.run(lambda: drv.alarm == "S")
    assert not pump.running()
    with pump.lock:
        pump.safe_mode = False  # back to Basic Mode (SAF0 from the keypad)
    node.run(lambda: not drv.online(node.now()))
    node.run(lambda: drv.online(node.now()) and pump.safe_mode)  # driver re-entered it


# ---- oximeter -----------------------------------------------------------------------


def test_oximeter_values_flow_and_faults(link):
    clock = ScaledClock(20)
    step = [0]

    def source():
        step[0] += 1
        k = step[0]
        if k % 7 == 0:
            return {"spo2": None, "bpm": None, "pi_x100": None, "exc": 0x28}
        return {"spo2": 90 + k % 10, "bpm": 60 + k, "pi_x100": 100 + k}

    ox = Radical7(source, clock=clock)
    drv = drv_masimo.Radical7()
    node = Node(drv, link(ox), clock)

    def intact():
        if drv.lines_ok:
            got = (drv.spo2, drv.pr, drv.pi_x100)
            assert got in {(s, b, p) for _, s, b, p, damaged in list(ox.sent) if not damaged}

    node.checks.append(intact)
    node.run(lambda: drv.lines_ok >= 3 and drv.online(node.now()))
    ox.corrupt_next(3)
    ox.inject_garbage(b"\xff\xfe garbage \r\n\x00")
    n = len(ox.sent)
    node.run(lambda: len(ox.sent) >= n + 10)
    assert drv.lines_bad >= 3 and drv.lines_ok >= 8
    ox.freeze()
    node.run(lambda: len(ox.sent) >= n + 13)
    frozen = (drv.spo2, drv.pr, drv.pi_x100)
    node.run(lambda: len(ox.sent) >= n + 16)
    assert (drv.spo2, drv.pr, drv.pi_x100) == frozen
    ox.unfreeze()
    ox.unplug()
    node.run(lambda: not drv.online(node.now()))
    assert drv.values(node.now()) == {}
    ox.replug()
    node.run(lambda: drv.online(node.now()))


# ---- monitor ------------------------------------------------------------------------


def test_monitor_request_response_nibp_and_power_cycle(link):
    clock = ScaledClock(50)
    step = [0]

    def source():
        step[0] += 1
        k = step[0]
        return {
            "hr": 70 + k % 5,
            "spo2_x100": 9700 + k,
            "rr": 12,
            "rr_imp": 13,
            "etco2_pct_x100": 480 + k % 3,
            "amb_press_x10": 7600,
            "nibp": (11000 + 100 * k, 7000 + 100 * k, 8300 + 100 * k),
        }

    mon = DatexS5(source, clock=clock)
    drv = drv_datex.DatexS5(interval_s=5)
    node = Node(drv, link(mon), clock)

    def intact():
        if drv.frames_ok:
            got = (drv.hr, drv.spo2_x100, drv.rr, drv.etco2_pct_x100)
            sent = {
                (v["hr"], v["spo2_x100"], v["rr"], v["etco2_pct_x100"])
                for _, v, damaged in list(mon.sent)
                if not damaged
            }
            assert got in sent
            nibp = (drv.nibp_sys, drv.nibp_dia, drv.nibp_mean)
            if nibp != (None, None, None):
                assert nibp in {v["nibp"] for _, v, damaged in list(mon.sent) if not damaged}

    node.checks.append(intact)
    node.run(lambda: drv.frames_ok >= 2)
    assert drv.nibp_sys is None  # no cuff cycle yet
    assert drv.rr == 12 and drv.rr_imp == 13
    assert drv.etco2_mmhg_x10 == (drv.etco2_pct_x100 * 7600 + 5000) // 10000
    mon.cuff_cycle()
    node.run(lambda: drv.nibp_sys is not None)
    t_nibp, seq = drv.nibp_ms, drv.nibp_seq
    assert drv.nibp_time_known
    mon.corrupt_next(1)
    mon.inject_garbage(b"\x7e\x7d\x00junk\x7e")
    n = drv.frames_ok
    node.run(lambda: drv.frames_ok >= n + 2)
    assert drv.frames_bad >= 1
    assert (drv.nibp_ms, drv.nibp_seq) == (t_nibp, seq)  # unchanged between cuff cycles
    mon.power_off()
    node.run(lambda: not drv.online(node.now()))
    mon.power_on()
    n = drv.frames_ok
    node.run(lambda: drv.frames_ok > n)  # the driver asked again after the silence
    assert drv.requests_sent >= 2 and len(mon.requests) >= 2
    assert drv.nibp_sys is None  # the restarted monitor has no NIBP reading


# ---- transports ---------------------------------------------------------------------


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_transports_stop_cleanly():
    fds = _open_fds()
    threads = threading.active_count()
    for make in (PtyTransport, TcpTransport):
        for _ in range(3):
            t = make(Radical7(lambda: {"spo2": 97, "bpm": 60, "pi_x100": 200})).start()
            if isinstance(t, PtyTransport):
                port = PtyPort(t.path)
            else:
                port = TcpPort(t.host, t.port)
            data = b""
            deadline = time.monotonic() + 5
            while b"\n" not in data and time.monotonic() < deadline:
                data += port.read(0.01)
            assert b"SPO2=097%" in data
            port.close()
            t.stop()
            t.stop()  # idempotent
            assert t.error is None
    assert _open_fds() == fds
    assert threading.active_count() == threads


def test_tcp_new_client_replaces_old():
    ox = Radical7(lambda: {"spo2": 95, "bpm": 70, "pi_x100": 150}, clock=ScaledClock(20))
    with TcpTransport(ox) as t:
        first = TcpPort(t.host, t.port)
        second = TcpPort(t.host, t.port)
        data = b""
        deadline = time.monotonic() + 5
        while data.count(b"\n") < 2 and time.monotonic() < deadline:
            data += second.read(0.01)
        assert b"SPO2=095%" in data
        first.close()
        second.close()
