"""The chairside node's logic: devices in, signed packets out, commands in, pump guarded.

This is the sans-IO core: ``step(now)`` moves bytes between UART objects and drivers,
enforces the permit and the local limits, and makes telemetry when it is due;
``on_command(wire, now)`` runs the command gate and executes what passes. Everything it
sends goes into the outbox; firmware/runner.py drains the outbox into MQTT. Tests drive
this class with fake UARTs and a fake clock.

Safety rules, in the order ``step`` applies them (docs/firmware.md, "Safety"):

1. the pump may infuse only while the permit is valid for the loaded program: when it
   lapses - or the pump reports infusing without one - the node stops it at once and
   reports ``permit_lapsed``;
2. a fresh vital beyond the node's own hard limits stops the pump without the network and
   latches ``local_interlock`` until the gateway sends a new start;
3. a pump that stops answering while it should infuse is reported (``device_offline``); its
   own SAF watchdog stops it if our frames stop reaching it;
4. a stop command pre-empts everything queued for the pump and goes out in the same step.
"""

from firmware.commands import Rejected
from firmware.drivers._ticks import ticks_add, ticks_diff
from protocol import cbor, const, cose
from protocol.envelope import envelope

FIRMWARE_VERSION = "0.1.0"

# Outbox kind index -> uplink topic kind (the spool stores the index in 4 bits).
KINDS = ("birth", "telemetry", "event", "ack", "death")
_K_BIRTH = const(0)
_K_TELEMETRY = const(1)
_K_EVENT = const(2)
_K_ACK = const(3)

# Wire numbers (protocol/schema.py has the public names and the field meanings). Private
# const() copies are folded into the bytecode: importing protocol.schema would cost the node
# heap for every name the gateway needs. tests/test_const_copies.py checks that they agree.
_BIRTH = const(1)
_TELEMETRY = const(2)
_EVENT = const(3)
_ACK = const(5)
_K_BOOT = const(2)
_K_SEQ = const(3)
_K_T = const(4)
_C_KIND = const(10)
_C_ARGS = const(11)
_B_FIRMWARE = const(10)
_B_DRIVERS = const(11)
_B_CAPS = const(12)
_B_BOARD = const(13)
_B_PERMIT_MAX = const(14)
_T_VITALS = const(10)
_T_PUMP = const(11)
_T_NODE = const(12)
_P_STATE = const(1)
_P_RATE = const(2)
_P_INFUSED = const(3)
_P_VTBI = const(4)
_P_ALARMS = const(5)
_P_T = const(6)
_P_PROGRAM = const(7)
_PUMP_UNKNOWN = const(0)
_PUMP_STOPPED = const(1)
_PUMP_INFUSING = const(2)
_PUMP_PAUSED = const(3)
_PUMP_ALARM = const(4)
_N_PERMIT_MS = const(1)
_N_LOCAL_TRIP = const(2)
_N_BUFFERED = const(3)
_N_DROPPED = const(4)
_N_SERIAL_BAD = const(5)
_E_KIND = const(10)
_E_SEVERITY = const(11)
_E_DETAIL = const(12)
_E_DATA = const(13)
_SEV_INFO = const(0)
_SEV_WARNING = const(1)
_SEV_ALARM = const(2)
_CMD_PROGRAM = const(1)
_CMD_START = const(2)
_CMD_STOP = const(3)
_CMD_PERMIT = const(4)
_CMD_CONFIG = const(5)
_A_PROGRAM_ID = const(1)
_A_RATE = const(2)
_A_VTBI = const(3)
_A_DIAMETER = const(4)
_A_LIFETIME = const(6)
_A_PERIOD = const(9)
_K_CMD = const(10)
_K_RESULT = const(11)
_K_REASON = const(12)
_ACK_OK = const(0)
_ACK_REJECTED = const(1)
_CMD_NAMES = ("", "program", "start", "stop", "permit", "config")  # for the console only

# IEEE 11073 codes of the vitals a node reports -> the unit each must be sent in
# (protocol/mdc.py UNITS, which a receiver enforces).
_UNITS = {
    150456: 262688,  # SpO2: %
    149530: 264864,  # pulse rate (oximeter): /min
    150488: 262688,  # perfusion index: %
    149546: 264864,  # pulse rate (NIBP): /min
    150021: 266016,  # NIBP systolic: mmHg
    150022: 266016,  # NIBP diastolic: mmHg
    150023: 266016,  # NIBP mean: mmHg
    147842: 264864,  # heart rate (ECG): /min
    151562: 264928,  # respiration rate: /min
    151570: 264928,  # airway respiration rate: /min
    151728: 266016,  # EtCO2: mmHg
}

_PUMP_STATES = {
    "stopped": _PUMP_STOPPED,
    "infusing": _PUMP_INFUSING,
    "paused": _PUMP_PAUSED,
    "alarm": _PUMP_ALARM,
}

_BOOT_GRACE_MS = const(5000)


class Node:
    """One chair's node, made by ``firmware.boot.make_node`` from the provisioned
    configuration: the node's resident code never reads the configuration itself (that
    code is boot-only, and unloaded). Kept to at most 29 instance attributes, so the
    instance dictionary's table stays at 29 slots; small helpers are written inline where
    they are used, as each method costs a function object (docs/firmware.md, "Footprint").

    ``devices``: role -> (driver, UART object (read/write/close) or None), with a "pump";
    ``limits``: MDC code -> (lo, hi, provisioning name such as "spo2"), lo/hi integers in
    the code's unit or None; ``topics``: uplink topic by outbox kind index (``KINDS``);
    ``birth``: (drivers as [[role, driver name]], board name) for the birth message.
    """

    def __init__(self, node_id, boot, now, devices, signer, gate, permit, outbox, topics,
                 telemetry_ms, limits, birth, clock=None, log=None):
        self.node_id = node_id
        self.kid = node_id.encode()
        self.boot = boot
        self.clock = clock  # ticks_ms-like callable, for latency figures only (None in tests)
        self.log = log  # console line writer (firmware/log.py on a board), or None
        self.wake = None  # an asyncio.Event the runner waits on for new outbox packets
        self._nibp_seq = 0
        self.signer = signer
        self.devices = devices
        self.pump = devices["pump"][0]
        self._birth = birth
        self.limits = limits
        self.topics = topics
        self.telemetry_ms = telemetry_ms
        self.permit = permit
        # The command gate keeps the log of this node's recent messages (gate.sentlog):
        # _envelope records every message made in it.
        self.gate = gate
        self.outbox = outbox
        self._seq = 1  # seq 0 of every boot is the pre-signed death message (Last Will)
        # Uptime in ms: accumulated tick differences, so it survives the tick counter's wrap.
        self._uptime = 0
        self._last_tick = now  # the boot tick until the first message is made
        self._next_telemetry = now
        # Program loaded into the pump (gateway program id 0: none).
        self.program_id = 0
        self.running = False  # we commanded RUN and have not stopped since
        self.local_trip = False
        self._lapse_reported = False
        self._offline_reported = {}
        self.stop_latency_ms = []  # recent stop-arrival -> STP-frame-written figures
        self._vtbi = 0
        self._last_dropped = 0

    # --- message plumbing ----------------------------------------------------------------

    def _envelope(self, mtype, now):
        seq = self._seq
        self._seq += 1
        self.gate.sentlog.record(seq, now)
        self._uptime += ticks_diff(now, self._last_tick)
        self._last_tick = now
        return envelope(mtype, self.node_id, self.boot, seq, self._uptime)

    def _queue(self, kind, payload):
        """Sign ``payload`` (a CBOR-encoded message) and queue it; every kind but telemetry
        is critical (it may use the spool's reserve)."""
        self.outbox.put(kind, cose.encode(payload, self.signer, self.kid), kind != _K_TELEMETRY)
        if self.wake is not None:
            self.wake.set()  # the uplink task sends it now, not at its next poll

    def event(self, kind, severity, now, detail="", data=None):
        if self.log is not None:
            self.log("EVENT %s %s" % (kind, detail))
        msg = self._envelope(_EVENT, now)
        msg[_E_KIND] = kind
        msg[_E_SEVERITY] = severity
        if detail:
            msg[_E_DETAIL] = detail[:128]
        if data:
            msg[_E_DATA] = data
        self._queue(_K_EVENT, cbor.dumps(msg))

    def birth(self, now):
        """Queued on every (re)connect (runner's on_connect)."""
        msg = self._envelope(_BIRTH, now)
        msg[_B_FIRMWARE] = FIRMWARE_VERSION
        msg[_B_DRIVERS] = self._birth[0]
        caps = ["permit", "saf-watchdog", "store-and-forward"]
        if self.limits:
            caps.append("local-interlock")
        msg[_B_CAPS] = caps
        msg[_B_BOARD] = self._birth[1]
        msg[_B_PERMIT_MAX] = self.permit.max_lifetime_ms
        self._queue(_K_BIRTH, cbor.dumps(msg))

    # --- the periodic step -----------------------------------------------------------------

    def step(self, now):
        for role in self.devices:
            drv, uart = self.devices[role]
            if uart is None:
                continue
            data = uart.read()
            if data:
                drv.feed(data, now)
            out = drv.poll(now)
            if out:
                uart.write(out)
        self._guard(now)
        mon = self.devices.get("monitor")
        if mon is not None and mon[0].nibp_seq != self._nibp_seq:
            # A new cuff reading goes out at once: NIBP rules act on a single reading and it
            # arrives only every ~10 minutes, so waiting for the next 1 s tick is pure delay.
            self._nibp_seq = mon[0].nibp_seq
            self._next_telemetry = now
        if ticks_diff(now, self._next_telemetry) >= 0:
            self._next_telemetry = ticks_add(now, self.telemetry_ms)
            self._telemetry(now)

    def _stop_pump(self, now):
        self.running = False
        self.pump.stop()
        out = self.pump.poll(now)
        uart = self.devices["pump"][1]
        if out and uart is not None:
            uart.write(out)  # now, not on the next step

    def _guard(self, now):
        pump = self.pump
        left = self.permit.remaining(now)
        if (self.running or pump.state == "infusing") and left == 0:
            self._stop_pump(now)
            if not self._lapse_reported:
                self._lapse_reported = True
                self.event("permit_lapsed", _SEV_ALARM, now,
                           "no valid run permit: pump stopped")
        if self.limits and (self.running or pump.state == "infusing"):
            # The first fresh vital beyond its limits, if any, stops the pump.
            vitals = self._vitals(now)
            for code in self.limits:
                v = vitals.get(code)
                if v is None:
                    continue
                lo, hi, name = self.limits[code]
                # (mantissa, exponent) beyond integer limits lo/hi? Integer arithmetic only.
                mant, exp = v[0], v[1]
                if exp >= 0:
                    scaled, unit = mant * (10 ** exp), 1
                else:
                    scaled, unit = mant, 10 ** (-exp)
                if (lo is not None and scaled < lo * unit) or (hi is not None
                                                               and scaled > hi * unit):
                    self._stop_pump(now)
                    self.permit.revoke()
                    if not self.local_trip:
                        self.local_trip = True
                        self.event("local_interlock", _SEV_ALARM, now,
                                   "node hard limit: %s" % name, {1: code, 2: mant, 3: exp})
                    break
        # Devices answer their first request within a few seconds of boot: no offline
        # reports before then (uptime so far plus the time since the last message).
        if self._uptime + ticks_diff(now, self._last_tick) < _BOOT_GRACE_MS:
            return
        for role in self.devices:
            online = self.devices[role][0].online(now)
            was = self._offline_reported.get(role)
            if not online and was is not True:
                self._offline_reported[role] = True
                self.event("device_offline", _SEV_WARNING, now, role)
            elif online and was is True:
                self._offline_reported[role] = False
                self.event("device_online", _SEV_INFO, now, role)

    def _vitals(self, now):
        """{MDC code: (mantissa, exponent, tick)}: the fresh vitals of every device, a new
        dictionary (the caller may change it)."""
        out = {}
        for role in ("monitor", "oximeter"):  # oximeter last: it wins for SpO2/pulse
            d = self.devices.get(role)
            if d is None:
                continue
            vals = d[0].values(now)
            for code in vals:
                if code in _UNITS:
                    out[code] = vals[code]
        return out

    def _telemetry(self, now):
        msg = self._envelope(_TELEMETRY, now)
        up = msg[_K_T]
        # The vitals dictionary becomes the packet's: each value is replaced in place by
        # (mantissa, exponent, unit, uptime of the reading), encoded as a CBOR array.
        v = self._vitals(now)
        for code in v:
            mant, exp, tick = v[code]
            v[code] = (mant, exp, _UNITS[code], max(0, up - ticks_diff(now, tick)))
        msg[_T_VITALS] = v
        p = self.pump
        if p.online(now):
            pump = {
                _P_PROGRAM: self.program_id,
                _P_STATE: _PUMP_STATES.get(p.state, _PUMP_UNKNOWN),
                _P_T: max(0, up - ticks_diff(now, p.last_reply_ms)),
                _P_ALARMS: (p.alarm,) if p.alarm else (),
            }
            if p.rate_ul_h is not None:
                pump[_P_RATE] = p.rate_ul_h
            if p.infused_ul is not None:
                pump[_P_INFUSED] = p.infused_ul
        else:
            pump = {_P_PROGRAM: self.program_id, _P_STATE: _PUMP_UNKNOWN, _P_T: up}
        if self._vtbi:
            pump[_P_VTBI] = self._vtbi
        msg[_T_PUMP] = pump
        serial_bad = 0
        for role in self.devices:
            serial_bad += self.devices[role][0].frames_bad
        msg[_T_NODE] = {
            _N_PERMIT_MS: self.permit.remaining(now),
            _N_LOCAL_TRIP: self.local_trip,
            _N_BUFFERED: len(self.outbox),
            _N_DROPPED: self.outbox.dropped,
            _N_SERIAL_BAD: serial_bad,
        }
        msg = cbor.dumps(msg)
        # The message's dictionaries are garbage from here: they need not stay alive while
        # the packet is signed, the step's largest need of heap.
        del v, pump
        self._queue(_K_TELEMETRY, msg)
        if self.outbox.dropped != self._last_dropped:
            self._last_dropped = self.outbox.dropped
            self.event("buffer_overflow", _SEV_WARNING, now,
                       "telemetry dropped while offline", {1: self.outbox.dropped})

    # --- commands --------------------------------------------------------------------------

    def on_command(self, wire, now):
        """Verify and execute one command; queue its ack. Returns the ack result (None for a
        redelivery of a command already executed)."""
        try:
            cmd, ref_tick = self.gate.check(wire, self.boot, now)
        except Rejected as e:
            if e.epoch is None:
                # No trustworthy (epoch, seq) to answer: report it as an event instead.
                self.event("command_rejected", _SEV_WARNING, now, e.reason)
                return _ACK_REJECTED
            if e.reason == "cmd.duplicate":
                return None  # already executed and acked; QoS 1 redelivery
            epoch, seq, reason = e.epoch, e.seq, e.reason
        else:
            epoch, seq = cmd[_K_BOOT], cmd[_K_SEQ]
            kind = cmd[_C_KIND]
            a = cmd[_C_ARGS]
            p = self.pump
            reason = None  # executed; else why not
            if kind == _CMD_STOP:
                self._stop_pump(now)
                self.permit.revoke()
                if self.clock is not None:
                    # ``now`` was read when the command arrived; the STP frame is written now.
                    self.stop_latency_ms.append(ticks_diff(self.clock(), now))
                    del self.stop_latency_ms[:-16]
                    if self.log is not None:
                        self.log("STOP written %d ms after the command arrived"
                                 % self.stop_latency_ms[-1])
            elif kind == _CMD_PERMIT:
                reason = self.permit.grant(a[_A_PROGRAM_ID], ref_tick, a[_A_LIFETIME], now)
            elif kind == _CMD_PROGRAM:
                pid = a[_A_PROGRAM_ID]
                if self.running or p.state == "infusing":
                    if pid != self.program_id:
                        reason = "cmd.busy"  # a new program only on a stopped pump
                    # Rate change within the running program (the gateway checked the limits).
                    elif p.set_rate(a[_A_RATE]) is None:
                        reason = "pump.queue_full"
                    else:
                        self._vtbi = a[_A_VTBI]
                elif p.pending() > 2:
                    reason = "pump.busy"
                else:
                    try:
                        if not (p.set_diameter(a[_A_DIAMETER]) and p.set_direction_infuse()
                                and p.set_rate(a[_A_RATE]) is not None
                                and p.set_volume(a[_A_VTBI]) is not None and p.clear_volumes()):
                            reason = "pump.queue_full"
                    except ValueError:
                        reason = "pump.bad_value"
                    if reason is None:
                        self.program_id = pid
                        self._vtbi = a[_A_VTBI]
                        self.permit.revoke()  # a permit belongs to a program
            elif kind == _CMD_START:
                pid = a[_A_PROGRAM_ID]
                if pid != self.program_id or pid == 0:
                    reason = "cmd.no_program"
                # A valid permit for this program (remaining() first: it latches a lapse).
                elif not (self.permit.remaining(now) > 0 and self.permit.program_id == pid):
                    reason = "permit.none"
                elif not p.online(now):
                    reason = "pump.offline"
                else:
                    self.local_trip = False
                    self._lapse_reported = False
                    p.clear_alarm()
                    p.run()
                    self.running = True
            elif kind == _CMD_CONFIG:
                period = a.get(_A_PERIOD)
                if period is not None:
                    if 200 <= period <= 60000:
                        self.telemetry_ms = period
                    else:
                        reason = "cmd.bad_period"
            else:
                reason = "cmd.unknown"
            if self.log is not None and kind != _CMD_PERMIT:
                self.log("CMD %s %s" % (_CMD_NAMES[kind], reason or "ok"))
        # The ack: ok, or the reason the command was rejected.
        msg = self._envelope(_ACK, now)
        msg[_K_CMD] = [epoch, seq]
        msg[_K_RESULT] = result = _ACK_OK if reason is None else _ACK_REJECTED
        if reason:
            msg[_K_REASON] = reason[:64]
        self._queue(_K_ACK, cbor.dumps(msg))
        return result
