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

from firmware.commands import CommandGate, Rejected
from firmware.drivers._ticks import ticks_add, ticks_diff
from firmware.outbox import Outbox
from firmware.permit import Permit
from firmware.sentlog import SentLog
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
_DEATH = const(6)
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


def _beyond(value, lo, hi):
    """(mantissa, exponent) beyond integer limits lo/hi? Integer arithmetic only."""
    mant, exp = value
    if exp >= 0:
        scaled, unit = mant * (10 ** exp), 1
    else:
        scaled, unit = mant, 10 ** (-exp)
    if lo is not None and scaled < lo * unit:
        return True
    return hi is not None and scaled > hi * unit


def death_message(signer, node_id, boot):
    """The Last Will, seq 0 of this boot, signed in advance: the broker publishes it when the
    node vanishes (firmware/boot.py gives it to the MQTT client)."""
    return cose.encode(cbor.dumps(envelope(_DEATH, node_id, boot, 0, 0)), signer, node_id.encode())


class Node:
    def __init__(self, cfg, boot, now, uarts, pump, oximeter=None, monitor=None, board="unix",
                 clock=None, log=None, signer=None, gateway_verifier=None, death=None):
        # Plain values only, never ``cfg`` itself: the configuration module is unloaded
        # after boot (firmware/boot.py), and a Config instance would keep it alive.
        self.node_id = cfg.node_id
        self.kid = cfg.node_id.encode()
        self.boot = boot
        self.clock = clock  # ticks_ms-like callable, for latency figures only (None in tests)
        self.log = log  # console line writer (firmware/log.py on a board), or None
        self.wake = None  # an asyncio.Event the runner waits on for new outbox packets
        self._nibp_seq = 0
        self.signer = signer or cose.Ed25519Signer(cfg.node_key)
        self.uarts = uarts  # role -> UART object (read/write/close)
        self.pump = pump
        self.oximeter = oximeter
        self.monitor = monitor
        self.devices = {"pump": pump}
        if oximeter is not None:
            self.devices["oximeter"] = oximeter
        if monitor is not None:
            self.devices["monitor"] = monitor
        # What the birth message says of this node: drivers by role, board name
        self._birth = ([[role, cfg.wiring[role]["driver"]] for role in self.devices], board)
        self.limits = cfg.local_limits  # MDC code -> (lo, hi), integers in the code's unit
        self._limit_names = cfg.limit_names  # MDC code -> provisioning name ("spo2")
        from protocol import topics  # only here: the uplink topics are made once

        self._topics = [topics.uplink(self.node_id, k) for k in KINDS]
        n = cfg.node
        self.telemetry_ms = n["telemetry_ms"]
        self.permit = Permit(n["permit_max_ms"])
        self.sentlog = SentLog(32)
        self.gate = CommandGate(self.node_id,
                                gateway_verifier or cose.Ed25519Verifier(cfg.gateway_pub),
                                cfg.gateway_kid, self.sentlog, n["command_max_age_ms"])
        self.outbox = Outbox(cfg.state_dir + "/spool.bin", n["ram_slots"], n["spool_max_bytes"])
        self._seq = 1  # seq 0 of every boot is the pre-signed death message (Last Will)
        self._uptime = 0
        self._last_tick = now
        self._boot_tick = now
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
        self.death = death or death_message(self.signer, self.node_id, boot)

    # --- message plumbing ----------------------------------------------------------------

    def _uptime_at(self, now):
        self._uptime += ticks_diff(now, self._last_tick)
        self._last_tick = now
        return self._uptime

    def _envelope(self, mtype, now):
        seq = self._seq
        self._seq += 1
        self.sentlog.record(seq, now)
        return envelope(mtype, self.node_id, self.boot, seq, self._uptime_at(now))

    def _sign(self, msg):
        return cose.encode(cbor.dumps(msg), self.signer, self.kid)

    def _queue(self, kind, msg, critical):
        self.outbox.put(kind, self._sign(msg), critical)
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
        self._queue(_K_EVENT, msg, True)

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
        self._queue(_K_BIRTH, msg, True)

    # --- the periodic step -----------------------------------------------------------------

    def step(self, now):
        for role in self.devices:
            drv = self.devices[role]
            uart = self.uarts.get(role)
            if uart is None:
                continue
            data = uart.read()
            if data:
                drv.feed(data, now)
            out = drv.poll(now)
            if out:
                uart.write(out)
        self._guard(now)
        mon = self.monitor
        if mon is not None and mon.nibp_seq != self._nibp_seq:
            # A new cuff reading goes out at once: NIBP rules act on a single reading and it
            # arrives only every ~10 minutes, so waiting for the next 1 s tick is pure delay.
            self._nibp_seq = mon.nibp_seq
            self._next_telemetry = now
        if ticks_diff(now, self._next_telemetry) >= 0:
            self._next_telemetry = ticks_add(now, self.telemetry_ms)
            self._telemetry(now)

    def _pump_infusing(self):
        return self.pump.state == "infusing"

    def _stop_pump(self, now):
        self.running = False
        self.pump.stop()
        out = self.pump.poll(now)
        uart = self.uarts.get("pump")
        if out and uart is not None:
            uart.write(out)  # now, not on the next step

    def _guard(self, now):
        left = self.permit.remaining(now)
        if (self.running or self._pump_infusing()) and left == 0:
            self._stop_pump(now)
            if not self._lapse_reported:
                self._lapse_reported = True
                self.event("permit_lapsed", _SEV_ALARM, now,
                           "no valid run permit: pump stopped")
        if self.limits and (self.running or self._pump_infusing()):
            breach = self._local_breach(now)
            if breach is not None:
                self._stop_pump(now)
                self.permit.revoke()
                if not self.local_trip:
                    self.local_trip = True
                    code, value = breach
                    self.event("local_interlock", _SEV_ALARM, now,
                               "node hard limit: %s" % self._limit_names.get(code, code),
                               {1: code, 2: value[0], 3: value[1]})
        if ticks_diff(now, self._boot_tick) < _BOOT_GRACE_MS:
            return  # devices answer their first request within a few seconds of boot
        for role in self.devices:
            online = self.devices[role].online(now)
            was = self._offline_reported.get(role)
            if not online and was is not True:
                self._offline_reported[role] = True
                self.event("device_offline", _SEV_WARNING, now, role)
            elif online and was is True:
                self._offline_reported[role] = False
                self.event("device_online", _SEV_INFO, now, role)

    def _local_breach(self, now):
        vitals = self._vitals(now)
        for code in self.limits:
            v = vitals.get(code)
            if v is not None:
                lo, hi = self.limits[code]
                if _beyond((v[0], v[1]), lo, hi):
                    return code, (v[0], v[1])
        return None

    def _vitals(self, now):
        out = {}
        for drv in (self.monitor, self.oximeter):  # oximeter last: it wins for SpO2/pulse
            if drv is None:
                continue
            vals = drv.values(now)
            for code in vals:
                if code in _UNITS:
                    out[code] = vals[code]
        return out

    def _telemetry(self, now):
        msg = self._envelope(_TELEMETRY, now)
        up = msg[_K_T]
        vitals = {}
        v = self._vitals(now)
        for code in v:
            mant, exp, tick = v[code]
            vitals[code] = [mant, exp, _UNITS[code], max(0, up - ticks_diff(now, tick))]
        msg[_T_VITALS] = vitals
        p = self.pump
        pump = {_P_PROGRAM: self.program_id}  # type: dict

        if p.online(now):
            pump[_P_STATE] = _PUMP_STATES.get(p.state, _PUMP_UNKNOWN)
            pump[_P_T] = max(0, up - ticks_diff(now, p.last_reply_ms))
            if p.rate_ul_h is not None:
                pump[_P_RATE] = p.rate_ul_h
            if p.infused_ul is not None:
                pump[_P_INFUSED] = p.infused_ul
            pump[_P_ALARMS] = [p.alarm] if p.alarm else []
        else:
            pump[_P_STATE] = _PUMP_UNKNOWN
            pump[_P_T] = up
        if self._vtbi:
            pump[_P_VTBI] = self._vtbi
        msg[_T_PUMP] = pump
        serial_bad = 0
        for role in self.devices:
            serial_bad += self.devices[role].frames_bad
        msg[_T_NODE] = {
            _N_PERMIT_MS: self.permit.remaining(now),
            _N_LOCAL_TRIP: self.local_trip,
            _N_BUFFERED: len(self.outbox),
            _N_DROPPED: self.outbox.dropped,
            _N_SERIAL_BAD: serial_bad,
        }
        self._queue(_K_TELEMETRY, msg, False)
        if self.outbox.dropped != self._last_dropped:
            self._last_dropped = self.outbox.dropped
            self.event("buffer_overflow", _SEV_WARNING, now,
                       "telemetry dropped while offline", {1: self.outbox.dropped})

    # --- commands --------------------------------------------------------------------------

    def on_command(self, wire, now):
        """Verify and execute one command; queue its ack. Returns the ack result."""
        try:
            cmd, ref_tick = self.gate.check(wire, self.boot, now)
        except Rejected as e:
            if e.epoch is not None:
                if e.reason == "cmd.duplicate":
                    return None  # already executed and acked; QoS 1 redelivery
                self._ack(e.epoch, e.seq, _ACK_REJECTED, e.reason, now)
            else:
                # No trustworthy (epoch, seq) to answer: report it as an event instead.
                self.event("command_rejected", _SEV_WARNING, now, e.reason)
            return _ACK_REJECTED
        kind = cmd[_C_KIND]
        reason = self._execute(kind, cmd[_C_ARGS], ref_tick, now)
        result = _ACK_OK if reason is None else _ACK_REJECTED
        if self.log is not None and kind != _CMD_PERMIT:
            self.log("CMD %s %s" % (_CMD_NAMES[kind], reason or "ok"))
        self._ack(cmd[_K_BOOT], cmd[_K_SEQ], result, reason or "", now)
        return result

    def _ack(self, epoch, seq, result, reason, now):
        msg = self._envelope(_ACK, now)
        msg[_K_CMD] = [epoch, seq]
        msg[_K_RESULT] = result
        if reason:
            msg[_K_REASON] = reason[:64]
        self._queue(_K_ACK, msg, True)

    def _execute(self, kind, a, ref_tick, now):
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
            return None
        if kind == _CMD_PERMIT:
            return self.permit.grant(a[_A_PROGRAM_ID], ref_tick, a[_A_LIFETIME], now)
        if kind == _CMD_PROGRAM:
            return self._program(a, now)
        if kind == _CMD_START:
            pid = a[_A_PROGRAM_ID]
            if pid != self.program_id or pid == 0:
                return "cmd.no_program"
            if not self.permit.valid_for(pid, now):
                return "permit.none"
            if not self.pump.online(now):
                return "pump.offline"
            self.local_trip = False
            self._lapse_reported = False
            self.pump.clear_alarm()
            self.pump.run()
            self.running = True
            return None
        if kind == _CMD_CONFIG:
            period = a.get(_A_PERIOD)
            if period is not None:
                if not 200 <= period <= 60000:
                    return "cmd.bad_period"
                self.telemetry_ms = period
            return None
        return "cmd.unknown"

    def _program(self, a, now):
        pid = a[_A_PROGRAM_ID]
        p = self.pump
        if self.running or self._pump_infusing():
            if pid != self.program_id:
                return "cmd.busy"  # a new program only on a stopped pump
            # Rate change within the running program (the gateway checked the limits).
            if p.set_rate(a[_A_RATE]) is None:
                return "pump.queue_full"
            self._vtbi = a[_A_VTBI]
            return None
        if p.pending() > 2:
            return "pump.busy"
        try:
            ok = (p.set_diameter(a[_A_DIAMETER]) and p.set_direction_infuse()
                  and p.set_rate(a[_A_RATE]) is not None
                  and p.set_volume(a[_A_VTBI]) is not None and p.clear_volumes())
        except ValueError:
            return "pump.bad_value"
        if not ok:
            return "pump.queue_full"
        self.program_id = pid
        self._vtbi = a[_A_VTBI]
        self.permit.revoke()  # a permit belongs to a program
        return None

    # --- uplink ------------------------------------------------------------------------------

    def topic_of(self, kind_index):
        return self._topics[kind_index]
