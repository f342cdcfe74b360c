"""Sans-IO driver for New Era NE-1000 family syringe pumps (WPI AL-1000) in Safe Mode.

Wire format (NE-1000 User Manual, Publication #1200-01, §10.2.3-10.2.4; 19200 8N1):

    command:  STX <length> <command data> <CRC16 hi> <CRC16 lo> ETX
    reply:    STX <length> <address><status>[<data>] <CRC16 hi> <CRC16 lo> ETX

``length`` is "the number of bytes remaining in packet, including this byte": 1 + data + 2
+ 1, so the manual's example ``SAF0`` frame is 02 08 53 41 46 30 55 43 03. The CRC is
CRC-16/XMODEM over the data only. ``status`` is a prompt letter (I infusing, W withdrawing,
S stopped, P paused, T pause phase, U user wait, X purging) or an alarm ``A?x`` (R reset /
power interrupted, S motor stalled, T safe-mode comms timeout, E program error, O phase out
of range). A rejected command carries ``?``, ``?NA``, ``?OOR``, ``?COM`` or ``?IGN`` as data.

Safe Mode (``SAF n``, n > 0) makes the pump stop and raise ``A?T`` when no valid packet
arrives for n seconds: the device-side watchdog this driver keeps fed with status polls.
A fresh pump is in Basic Mode and ignores safe packets, so the first ``poll`` emits the
Basic-Mode command ``SAF n<CR>`` (the way the PyExpLabSys AL1000 driver enters Safe Mode),
and repeats it every ``offline_ms`` while the pump stays silent; a pump already in Safe
Mode discards those bytes as a packet without STX.

Integers only: rates in uL/h, volumes in uL, diameter in 0.01 mm. The pump's numbers are at
most 4 digits plus a decimal point, at most 3 after it (manual §10.2.1 ``<float>``), so the
driver always speaks mL/h and mL: exact below 10 mL/h and 10 mL, 0.01 mL(/h) steps up to 100.

One command is in flight at a time (the manual: "wait for the response from each command
before sending the next"); a reply timeout re-sends it up to ``retries`` times. ``stop()``
empties the queue but for a SAF setting (a queued RUN must never run after a stop),
abandons whatever is in flight, and is re-sent until a reply shows the pump not running.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]
        return x


from ._frame import RxBuffer
from ._ticks import ticks_diff
from .crc16 import crc16_xmodem

_STX = const(0x02)
_ETX = const(0x03)
_MAX_FRAME = const(64)  # longest reply we accept (DIS/VER replies are < 30 bytes)
_INTERBYTE_MS = const(500)  # manual: a packet with a 0.5 s gap between bytes is discarded
_QMAX = const(8)
_ALARM_RETRIES = const(2)

# prompt letter -> state name (manual §10.2.4 "<prompt>")
STATES = {
    ord("I"): "infusing",
    ord("W"): "withdrawing",
    ord("S"): "stopped",
    ord("P"): "paused",
    ord("T"): "pause_phase",
    ord("U"): "user_wait",
    ord("X"): "purging",
}
_RUNNING = b"IWX"

# alarm letter -> meaning (manual §10.2.4 "<alarm type>")
ALARMS = {
    "R": "reset",  # pump was reset (power was interrupted)
    "S": "stalled",  # pump motor stalled (occlusion, end of travel)
    "T": "comms_timeout",  # safe mode communications time out
    "E": "program_error",
    "O": "phase_out_of_range",
}

# MDC codes reported by values() (clinical.md): pump flow rate, volume delivered total.
MDC_FLOW_FLUID_PUMP = const(157784)
MDC_VOL_DELIVERED_TOTAL = const(157993)


def frame(cmd):
    """Safe Mode packet for the ASCII command ``cmd`` (bytes), e.g. ``frame(b"SAF0")``."""
    n = len(cmd)
    if n > 250:
        raise ValueError("command too long")
    crc = crc16_xmodem(cmd)
    out = bytearray(n + 5)
    out[0] = _STX
    out[1] = n + 4
    out[2 : 2 + n] = cmd
    out[n + 2] = crc >> 8
    out[n + 3] = crc & 0xFF
    out[n + 4] = _ETX
    return bytes(out)


def format_number(mant, exp):
    """Encode ``mant * 10**-exp`` (0 <= exp <= 3) as the pump's ``<float>``.

    Returns ``(ascii_bytes, encoded_mant)``: the text and the value it really carries, in
    the same 10**-exp units (rounded half up when the 4-digit limit drops decimals).
    Raises ValueError when even the integer part has more than 4 digits.
    """
    if mant < 0 or exp < 0 or exp > 3:
        raise ValueError("number out of range")
    f = exp
    while f >= 0:
        unit = 10 ** (exp - f)
        m = (mant + unit // 2) // unit  # value in 10**-f units
        scale = 10**f
        ip = str(m // scale)
        if len(ip) + f <= 4:
            if f == 0:
                return ip.encode(), m * unit
            fp = str(m % scale)
            return (ip + "." + "0" * (f - len(fp)) + fp).encode(), m * unit
        f -= 1
    raise ValueError("number has more than 4 digits")


def parse_number(text, exp):
    """Parse a pump ``<float>`` into an integer in 10**-exp units (half up); None if bad."""
    ip = 0
    fp = 0
    fd = 0  # fraction digits kept
    extra = -1  # first dropped fraction digit, for rounding
    seen_point = False
    digits = 0
    for c in text:
        if c == 0x2E:  # '.'
            if seen_point:
                return None
            seen_point = True
        elif 0x30 <= c <= 0x39:
            digits += 1
            if not seen_point:
                ip = ip * 10 + c - 0x30
            elif fd < exp:
                fp = fp * 10 + c - 0x30
                fd += 1
            elif extra < 0:
                extra = c - 0x30
        else:
            return None
    if digits == 0:
        return None
    v = ip * 10**exp + fp * 10 ** (exp - fd)
    if extra >= 5:
        v += 1
    return v


# rate units -> uL/h per unit (manual: UM uL/min, MM mL/min, UH uL/h, MH mL/h)
_RATE_UNITS = {b"UM": 60, b"MM": 60000, b"UH": 1, b"MH": 1000}
_VOL_UNITS = {b"UL": 1, b"ML": 1000}


def _scaled(text, per_unit):
    """``text`` number times ``per_unit`` as an integer (rounded half up), None if bad."""
    milli = parse_number(text, 3)
    if milli is None:
        return None
    return (milli * per_unit + 500) // 1000


class Ne1000Pump:
    """One pump on one UART. See firmware/drivers/__init__.py for the common interface.

    Attributes (integers; ``*_ms`` are ticks of the last intact reply carrying the value):
      state, state_ms     "infusing", "withdrawing", "stopped", "paused", ..., "alarm",
                          or None before the first reply
      alarm, alarm_ms     latched alarm letter ("R", "S", "T", "E", "O") until clear_alarm()
      rate_ul_h, rate_ms  pumping rate the pump reports (RAT query)
      infused_ul, withdrawn_ul, volume_ms   volumes the pump reports (DIS query)
      stop_pending        True from stop() until a reply shows the pump not running
      stop_acked_ms       tick of that reply
      last_error, last_error_cmd   e.g. "?OOR"/b"RAT..." or "timeout", "alarm"
      last_reply_ms       tick of the last intact reply (any)
      frames_ok, frames_bad (CRC), frames_invalid (CRC ok, content not understood),
      bytes_discarded, timeouts, commands_ok, commands_failed, alarms
    """

    def __init__(
        self,
        address=None,
        saf_s=5,
        poll_ms=1000,
        reply_timeout_ms=400,
        retries=3,
        offline_ms=3000,
        bootstrap=True,
    ):
        if address is not None and not 0 <= address <= 99:
            raise ValueError("address must be 0..99")
        if not 0 <= saf_s <= 255:
            raise ValueError("saf_s must be 0..255")
        if saf_s and poll_ms * 2 > saf_s * 1000:
            raise ValueError("poll_ms must be at most half the safe-mode timeout")
        self.address = address
        self._prefix = b"" if address is None else ("%02d" % address).encode()
        self.saf_s = saf_s
        self.poll_ms = poll_ms
        self.reply_timeout_ms = reply_timeout_ms
        self.retries = retries
        self.offline_ms = offline_ms
        self._rx = RxBuffer(_MAX_FRAME)
        self._rx_ms = 0
        self._queue = []
        self._inflight = None
        self._sent_ms = 0
        self._tries = 0
        self._alarm_tries = 0
        self._resend = False
        self._last_poll_ms = 0
        self._polled = False
        self._poll_rat = False
        self._boot_bytes = ("\rSAF%d\r" % saf_s).encode() if bootstrap else None
        self._boot = self._boot_bytes
        self._boot_ms = 0
        self._ever = False
        self.state = None
        self.state_ms = 0
        self.alarm = None
        self.alarm_ms = 0
        self.rate_ul_h = None
        self.rate_ms = 0
        self.infused_ul = None
        self.withdrawn_ul = None
        self.volume_ms = 0
        self.stop_pending = False
        self.stop_acked_ms = 0
        self.last_error = None
        self.last_error_cmd = None
        self.last_reply_ms = 0
        self.frames_ok = 0
        self.frames_bad = 0
        self.frames_invalid = 0
        self.bytes_discarded = 0
        self.timeouts = 0
        self.commands_ok = 0
        self.commands_failed = 0
        self.commands_dropped = 0
        self.alarms = 0
        if saf_s:
            self._queue.append(("SAF%d" % saf_s).encode())

    # ---- commands -------------------------------------------------------------------

    def queue(self, cmd):
        """Queue a raw command (bytes, without address); False if the queue is full."""
        if len(self._queue) >= _QMAX:
            return False
        self._queue.append(bytes(cmd))
        return True

    def set_diameter(self, mm_x100):
        """Syringe inside diameter in 0.01 mm (``DIA``). Resets the pump's volume units."""
        text, _ = format_number(mm_x100, 2)
        return self.queue(b"DIA" + text)

    def set_rate(self, ul_per_h):
        """Queue ``RAT <mL/h> MH``; returns the rate in uL/h the pump will really get.

        Below 10 mL/h the value is exact; above it is rounded to what 4 digits can carry
        (10 uL/h steps below 100 mL/h). Returns None if the queue is full; raises
        ValueError at or beyond 10 L/h.
        """
        text, eff = format_number(ul_per_h, 3)
        if not self.queue(b"RAT" + text + b"MH"):
            return None
        return eff

    def set_volume(self, ul):
        """Queue the volume to be infused (``VOL ML`` then ``VOL <mL>``); returns uL sent
        (None if the queue is full).

        0 would mean "pump continuously until the syringe is empty" on this pump, so it is
        refused: an infusion here always has a target volume.
        """
        if ul <= 0:
            raise ValueError("volume must be > 0 (0 means continuous on the NE-1000)")
        text, eff = format_number(ul, 3)
        if len(self._queue) + 2 > _QMAX:
            return None
        self._queue.append(b"VOLML")
        self._queue.append(b"VOL" + text)
        return eff

    def set_direction_infuse(self):
        return self.queue(b"DIRINF")

    def clear_volumes(self):
        """Zero the pump's infused and withdrawn counters (``CLD INF``, ``CLD WDR``)."""
        return self.queue(b"CLDINF") and self.queue(b"CLDWDR")

    def set_safe_timeout(self, saf_s):
        """Change the pump's comms watchdog (``SAF n``, seconds; 0 leaves Safe Mode)."""
        if not 0 <= saf_s <= 255 or (saf_s and self.poll_ms * 2 > saf_s * 1000):
            raise ValueError("saf_s must be 0..255 and at least twice poll_ms")
        self.saf_s = saf_s
        if self._boot_bytes is not None:
            self._boot_bytes = ("\rSAF%d\r" % saf_s).encode()
        return self.queue(("SAF%d" % saf_s).encode())

    def run(self):
        return self.queue(b"RUN")

    def request_status(self):
        """Status-only query (a packet without a command, manual §10.4)."""
        return self.queue(b"")

    def request_volumes(self):
        return self.queue(b"DIS")

    def stop(self):
        """Stop now: drop queued commands, pre-empt any query, resend until confirmed.

        Only the safe-mode watchdog setting (SAF) survives in the queue, behind the STP.
        """
        keep = [c for c in self._queue if c[:3] == b"SAF"]
        self.commands_dropped += len(self._queue) - len(keep)
        self._queue = keep
        self.stop_pending = True
        if self._inflight is not None and self._inflight != b"STP":
            self.commands_dropped += 1
            self._inflight = None  # abandoned; a late reply is checked by its prompt
            self._resend = False

    def clear_alarm(self):
        self.alarm = None

    def pending(self):
        return len(self._queue) + (0 if self._inflight is None else 1)

    # ---- I/O ------------------------------------------------------------------------

    def poll(self, now_ms):
        """Bytes to write now, or None."""
        boot = self._boot_bytes
        if boot is not None and (
            self._boot is not None
            or (not self.online(now_ms) and ticks_diff(now_ms, self._boot_ms) >= self.offline_ms)
        ):
            # At start, and again while the pump stays silent: it may have been reset to
            # Basic Mode (SAF0 from its keypad or a replacement pump).
            self._boot = None
            self._boot_ms = now_ms
            self._last_poll_ms = now_ms
            return boot
        if self._inflight is not None:
            if self._resend:  # reply asked for a resend (?COM, alarm acknowledged)
                self._resend = False
                self._sent_ms = now_ms
                return frame(self._prefix + self._inflight)
            if ticks_diff(now_ms, self._sent_ms) < self.reply_timeout_ms:
                return None
            self.timeouts += 1
            if self._inflight == b"STP" or self._tries < self.retries:
                return self._send(self._inflight, now_ms, self._tries + 1)
            self._fail("timeout")
        if self.stop_pending:
            return self._send(b"STP", now_ms, 0)
        if self._queue:
            return self._send(self._queue.pop(0), now_ms, 0)
        if not self._polled or ticks_diff(now_ms, self._last_poll_ms) >= self.poll_ms:
            self._polled = True
            self._last_poll_ms = now_ms
            self._poll_rat = not self._poll_rat
            return self._send(b"DIS" if self._poll_rat else b"RAT", now_ms, 0)
        return None

    def _send(self, cmd, now_ms, tries):
        if tries == 0:
            self._alarm_tries = 0
        self._resend = False
        self._inflight = cmd
        self._sent_ms = now_ms
        self._tries = tries
        return frame(self._prefix + cmd)

    def online(self, now_ms):
        return self._ever and ticks_diff(now_ms, self.last_reply_ms) <= self.offline_ms

    def values(self, now_ms, max_age_ms=None):
        """{MDC code: (mantissa, exponent, tick)} of fresh reported values (mL/h, mL).

        The rate is the programmed rate the pump reports, also while stopped: combine it
        with ``state`` for the flow actually delivered.
        """
        age = self.offline_ms if max_age_ms is None else max_age_ms
        out: dict = {}
        if self.rate_ul_h is not None and ticks_diff(now_ms, self.rate_ms) <= age:
            out[MDC_FLOW_FLUID_PUMP] = (self.rate_ul_h, -3, self.rate_ms)
        if self.infused_ul is not None and ticks_diff(now_ms, self.volume_ms) <= age:
            out[MDC_VOL_DELIVERED_TOTAL] = (self.infused_ul, -3, self.volume_ms)
        return out

    def feed(self, data, now_ms):
        rx = self._rx
        if rx.n and ticks_diff(now_ms, self._rx_ms) > _INTERBYTE_MS:
            # Stale partial packet (the pump itself drops these): give up on the head and
            # rescan the rest, which may hold a whole reply behind a false STX.
            while rx.n:
                self._discard(1)
                self._scan(now_ms)
        for b in data:
            self._rx_ms = now_ms
            if rx.n == 0 and b != _STX:
                self.bytes_discarded += 1
                continue
            if not rx.append(b):  # cannot happen: frames are checked before they fill it
                self.bytes_discarded += rx.n
                rx.clear()
                continue
            self._scan(now_ms)

    def _scan(self, now_ms):
        rx = self._rx
        buf = rx.buf
        while rx.n:
            if buf[0] != _STX:
                self._discard(1)
                continue
            if rx.n < 2:
                return
            length = buf[1]
            if length < 7 or length + 1 > _MAX_FRAME:  # a reply has >= 3 data bytes
                self._discard(1)
                continue
            # A reply starts with a 2-digit address: checking it early rejects a false
            # STX (e.g. a Basic Mode reply STX "00S" ETX) without waiting for its "length".
            if rx.n >= 3 and not 0x30 <= buf[2] <= 0x39:
                self._discard(1)
                continue
            if rx.n >= 4 and not 0x30 <= buf[3] <= 0x39:
                self._discard(1)
                continue
            total = length + 1
            if rx.n < total:
                return
            if buf[total - 1] != _ETX:
                self._discard(1)
                continue
            crc = (buf[total - 3] << 8) | buf[total - 2]
            payload = bytes(rx.mv[2 : total - 3])
            if crc16_xmodem(payload) != crc:
                self.frames_bad += 1
                self._discard(1)
                continue
            rx.drop(total)
            self._reply(payload, now_ms)

    def _discard(self, k):
        self.bytes_discarded += k
        self._rx.drop(k)
        # drop up to the next STX so garbage is counted once and scanned once
        rx = self._rx
        i = 0
        while i < rx.n and rx.buf[i] != _STX:
            i += 1
        if i:
            self.bytes_discarded += i
            rx.drop(i)

    # ---- replies --------------------------------------------------------------------

    def _reply(self, p, now_ms):
        n = len(p)
        if n < 3 or not (0x30 <= p[0] <= 0x39 and 0x30 <= p[1] <= 0x39):
            self.frames_invalid += 1
            return
        if self.address is not None and (p[0] - 0x30) * 10 + p[1] - 0x30 != self.address:
            self.frames_invalid += 1
            return
        s = p[2]
        alarm = None
        if s == 0x41:  # 'A'
            if n < 5 or p[3] != 0x3F or chr(p[4]) not in ALARMS:
                self.frames_invalid += 1
                return
            alarm = chr(p[4])
            data = p[5:]
        elif s in STATES:
            data = p[3:]
        else:
            self.frames_invalid += 1
            return
        cmd = self._inflight
        # Interpret the data before touching any state: a reply we cannot read changes
        # nothing (it is re-requested), so no value is ever taken from a damaged reply.
        err = None
        vols = rate = None
        if data[:1] == b"?":
            err = data
        elif cmd is not None and alarm is None:
            if cmd == b"DIS":
                vols = self._parse_dis(data)
                if vols is None:
                    self.frames_invalid += 1
                    return
            elif cmd == b"RAT":
                rate = self._parse_rat(data)
                if rate is None:
                    self.frames_invalid += 1
                    return
        self.frames_ok += 1
        self._ever = True
        self.last_reply_ms = now_ms
        self.state_ms = now_ms
        if alarm is not None:
            self.state = "alarm"
            self.alarm = alarm
            self.alarm_ms = now_ms
            self.alarms += 1
            self._queue = [c for c in self._queue if c != b"RUN"]  # never auto-restart
        else:
            self.state = STATES[s]
        if vols is not None:
            self.infused_ul, self.withdrawn_ul = vols
            self.volume_ms = now_ms
        if rate is not None:
            self.rate_ul_h = rate
            self.rate_ms = now_ms
        if cmd is None:
            return  # unsolicited (auto-alarm) or late reply to an abandoned query
        if cmd == b"STP":
            if alarm is not None or s not in _RUNNING:
                self.stop_pending = False
                self.stop_acked_ms = now_ms
                self._done()
            else:
                self._inflight = None  # still running (stale reply?): poll() resends STP
            return
        if alarm is not None:
            # The reply acknowledged the alarm instead of executing the command
            # (manual §10.3). RUN is never repeated after an alarm; the rest are.
            if cmd == b"RUN" or self._alarm_tries >= _ALARM_RETRIES:
                self._fail("alarm")
            else:
                self._alarm_tries += 1
                self._requeue()
            return
        if err is not None:
            if err == b"?COM" and self._tries < self.retries:
                self._tries += 1
                self._requeue()
                return
            self._fail(err.decode())
            return
        self._done()

    def _requeue(self):
        # Same command again at the next poll(), keeping its retry counters.
        self._resend = True

    def _done(self):
        self._inflight = None
        self.commands_ok += 1

    def _fail(self, why):
        self.last_error = why
        self.last_error_cmd = self._inflight
        self._inflight = None
        self.commands_failed += 1

    def _parse_dis(self, data):
        # "I<float>W<float><UL|ML>" (manual DIS; read the same way by the Aladdin driver)
        if data[:1] != b"I" or len(data) < 6:
            return None
        w = data.find(b"W")
        if w < 2:
            return None
        per = _VOL_UNITS.get(data[-2:])
        if per is None:
            return None
        inf = _scaled(data[1:w], per)
        wdr = _scaled(data[w + 1 : -2], per)
        if inf is None or wdr is None:
            return None
        return inf, wdr

    def _parse_rat(self, data):
        # "<float><rate units>", e.g. "5.000MH"
        per = _RATE_UNITS.get(data[-2:])
        if per is None or len(data) < 3:
            return None
        return _scaled(data[:-2], per)
