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

Written for a small heap (docs/firmware.md, "Footprint"): on the MicroPython unix port code
is heap, and every function costs about 100 bytes whatever its size. So the CRC, the framing
and the reply handling are few, larger functions; the CRC-16 table is computed (entry i of
the nibble table of poly 0x1021 is i * 0x1021: the shifted copies of 0x1021 do not overlap
for i < 16, so the carry-less product equals the integer one); tables are folded constants.
Command texts used once are short str constants encoded when queued, and reply letters are
compared as byte values: a bytes constant is a separate heap object (about 70 bytes), a
short str constant only an interned name. Error messages are short for the same reason.
"""

from protocol import const

from ._ticks import ticks_diff

_STX = const(0x02)
_ETX = const(0x03)
_MAX_FRAME = const(64)  # longest reply we accept (DIS/VER replies are < 30 bytes)
_INTERBYTE_MS = const(500)  # manual: a packet with a 0.5 s gap between bytes is discarded
_QMAX = const(8)
_ALARM_RETRIES = const(2)

# prompt letter (manual §10.2.4 "<prompt>") -> state name, by position
_PROMPTS = const("IWSPTUX")
_STATE_NAMES = const(
    ("infusing", "withdrawing", "stopped", "paused", "pause_phase", "user_wait", "purging")
)
_RUNNING = const("IWX")
# alarm letters (manual §10.2.4 "<alarm type>"): R reset (power was interrupted), S motor
# stalled (occlusion, end of travel), T safe mode communications time out, E program error,
# O phase out of range
_ALARMS = const("RSTEO")

# MDC codes reported by values() (clinical.md): pump flow rate, volume delivered total.
MDC_FLOW_FLUID_PUMP = const(157784)
MDC_VOL_DELIVERED_TOTAL = const(157993)


def format_number(mant, exp):
    """Encode ``mant * 10**-exp`` (0 <= exp <= 3) as the pump's ``<float>``.

    Returns ``(ascii_bytes, encoded_mant)``: the text and the value it really carries, in
    the same 10**-exp units (rounded half up when the 4-digit limit drops decimals).
    Raises ValueError when even the integer part has more than 4 digits.
    """
    if mant < 0 or exp < 0 or exp > 3:
        raise ValueError("bad number")
    f = exp
    while f >= 0:
        unit = 10 ** (exp - f)
        m = (mant + unit // 2) // unit  # value in 10**-f units
        scale = 10**f
        ip = str(m // scale)
        if len(ip) + f <= 4:
            if f:
                ip += "." + str(scale + m % scale)[1:]  # f digits, zero-padded
            return ip.encode(), m * unit
        f -= 1
    raise ValueError("> 4 digits")


class Ne1000Pump:
    """One pump on one UART. See firmware/drivers/__init__.py for the common interface.

    Attributes (integers; ``*_ms`` are ticks of the last intact reply carrying the value):
      state               "infusing", "withdrawing", "stopped", "paused", ..., "alarm",
                          or None before the first reply (its tick is last_reply_ms)
      alarm, alarm_ms     latched alarm letter ("R", "S", "T", "E", "O") until clear_alarm()
      rate_ul_h, rate_ms  pumping rate the pump reports (RAT query)
      infused_ul, withdrawn_ul, volume_ms   volumes the pump reports (DIS query)
      stop_pending        True from stop() until a reply shows the pump not running
      stop_acked_ms       tick of that reply
      last_error, last_error_cmd   e.g. "?OOR"/b"RAT..." or "timeout", "alarm"
      last_reply_ms       tick of the last intact reply (any)
      frames_ok, frames_bad (CRC), frames_invalid (CRC ok, content not understood),
      bytes_discarded, timeouts, commands_ok, commands_failed, commands_dropped, alarms
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
        self.poll_ms = poll_ms
        # Sent before every command; replies must carry it (empty: any address accepted).
        self._prefix = b"" if address is None else ("%02d" % address).encode()
        self.reply_timeout_ms = reply_timeout_ms
        self.retries = retries
        self.offline_ms = offline_ms
        # Receive buffer: _n bytes of a packet being reassembled, the last at tick _rx_ms.
        # Consumed bytes are dropped by shifting the tail down through the memoryview _mv
        # (MicroPython's bytearray supports no item deletion; one memmove, no new object).
        self._buf = bytearray(_MAX_FRAME)
        self._mv = memoryview(self._buf)
        self._n = self._rx_ms = self._tries = self._alarm_tries = 0
        self._queue = []  # type: list
        # _inflight: the command awaiting a reply, sent at tick _sent_ms (None: the reply
        # asked for the same command again, sent at the next poll()).
        self._inflight = self._sent_ms = None
        self._last_poll_ms = None  # None: no status poll yet
        self._poll_rat = False
        # Basic-Mode "SAF n<CR>" (set by set_safe_timeout), sent at start (_boot_ms None)
        # and again every offline_ms while the pump stays silent.
        self._boot = b"" if bootstrap else None
        self._boot_ms = None
        self.state = self.alarm = self.rate_ul_h = self.infused_ul = self.withdrawn_ul = None
        self.alarm_ms = self.rate_ms = self.volume_ms = self.stop_acked_ms = 0
        self.stop_pending = False
        self.last_error = self.last_error_cmd = None
        self.last_reply_ms = self.frames_ok = self.frames_bad = self.frames_invalid = 0
        self.bytes_discarded = self.timeouts = self.commands_ok = self.commands_failed = 0
        self.commands_dropped = self.alarms = 0
        self.set_safe_timeout(saf_s)  # checks saf_s, queues the Safe Mode packet
        if not saf_s:
            self._queue.pop()  # no SAF0 packet at start

    # ---- commands -------------------------------------------------------------------

    def queue(self, cmd):
        """Queue a raw command (bytes, without address); False if the queue is full."""
        if len(self._prefix) + len(cmd) > 250:  # the length byte is data + 4
            raise ValueError("too long")
        if len(self._queue) >= _QMAX:
            return False
        self._queue.append(bytes(cmd))
        return True

    def set_diameter(self, mm_x100):
        """Syringe inside diameter in 0.01 mm (``DIA``). Resets the pump's volume units."""
        return self.queue("DIA".encode() + format_number(mm_x100, 2)[0])

    def set_rate(self, ul_per_h):
        """Queue ``RAT <mL/h> MH``; returns the rate in uL/h the pump will really get.

        Below 10 mL/h the value is exact; above it is rounded to what 4 digits can carry
        (10 uL/h steps below 100 mL/h). Returns None if the queue is full; raises
        ValueError at or beyond 10 L/h.
        """
        text, eff = format_number(ul_per_h, 3)
        return eff if self.queue(b"RAT" + text + "MH".encode()) else None

    def set_volume(self, ul):
        """Queue the volume to be infused (``VOL ML`` then ``VOL <mL>``); returns uL sent
        (None if the queue is full).

        0 would mean "pump continuously until the syringe is empty" on this pump, so it is
        refused: an infusion here always has a target volume.
        """
        if ul <= 0:
            raise ValueError("volume<=0")
        text, eff = format_number(ul, 3)
        if len(self._queue) + 2 > _QMAX:
            return None
        self._queue.append("VOLML".encode())
        self._queue.append("VOL".encode() + text)
        return eff

    def set_direction_infuse(self):
        return self.queue("DIRINF".encode())

    def clear_volumes(self):
        """Zero the pump's infused and withdrawn counters (``CLD INF``, ``CLD WDR``)."""
        return self.queue("CLDINF".encode()) and self.queue("CLDWDR".encode())

    def set_safe_timeout(self, saf_s):
        """Change the pump's comms watchdog (``SAF n``, seconds; 0 leaves Safe Mode)."""
        if not 0 <= saf_s <= 255 or (saf_s and self.poll_ms * 2 > saf_s * 1000):
            raise ValueError("saf_s must be 0..255 and at least twice poll_ms")
        cmd = "SAF%d" % saf_s
        if self._boot is not None:
            self._boot = ("\r" + cmd + "\r").encode()
        return self.queue(cmd.encode())

    def run(self):
        return self.queue(b"RUN")

    def request_status(self):
        """Status-only query (a packet without a command, manual §10.4)."""
        return self.queue(b"")

    def stop(self):
        """Stop now: drop queued commands, pre-empt any query, resend until confirmed.

        Only the safe-mode watchdog setting (SAF) survives in the queue, behind the STP.
        """
        keep = []
        for c in self._queue:
            if c[:3] == b"SAF":
                keep.append(c)
        self.commands_dropped += len(self._queue) - len(keep)
        self._queue = keep
        self.stop_pending = True
        if self._inflight is not None and self._inflight != b"STP":
            self.commands_dropped += 1
            self._inflight = None  # abandoned; a late reply is checked by its prompt

    def clear_alarm(self):
        self.alarm = None

    def pending(self):
        return len(self._queue) + (0 if self._inflight is None else 1)

    # ---- I/O ------------------------------------------------------------------------

    def poll(self, now_ms):
        """Bytes to write now, or None."""
        boot = self._boot
        if boot is not None and (
            self._boot_ms is None
            or (not self.online(now_ms) and ticks_diff(now_ms, self._boot_ms) >= self.offline_ms)
        ):
            # At start, and again while the pump stays silent: it may have been reset to
            # Basic Mode (SAF0 from its keypad or a replacement pump).
            self._boot_ms = now_ms
            if self._last_poll_ms is not None:
                self._last_poll_ms = now_ms
            return boot
        cmd = self._inflight
        if cmd is None or self._sent_ms is not None:
            tries = 0
            if cmd is not None:
                if ticks_diff(now_ms, self._sent_ms) < self.reply_timeout_ms:
                    return None
                self.timeouts += 1
                tries = self._tries + 1
                if cmd != b"STP" and self._tries >= self.retries:
                    self.last_error = "timeout"
                    self.last_error_cmd = cmd
                    self._inflight = cmd = None
                    self.commands_failed += 1
                    tries = 0
            if cmd is None:
                if self.stop_pending:
                    cmd = b"STP"
                elif self._queue:
                    cmd = self._queue.pop(0)
                elif (
                    self._last_poll_ms is None
                    or ticks_diff(now_ms, self._last_poll_ms) >= self.poll_ms
                ):
                    self._last_poll_ms = now_ms
                    self._poll_rat = not self._poll_rat
                    cmd = b"DIS" if self._poll_rat else b"RAT"
                else:
                    return None
            if not tries:
                self._alarm_tries = 0
            self._inflight = cmd
            self._tries = tries
        # else: the reply asked for a resend (?COM, alarm acknowledged): same counters
        self._sent_ms = now_ms
        # The packet: STX, length, address + command, CRC-16/XMODEM of those, ETX.
        cmd = self._prefix + cmd
        crc = 0
        for c in cmd:
            crc = ((crc << 4) & 0xFFFF) ^ (((crc >> 12) ^ (c >> 4)) & 0x0F) * 0x1021
            crc = ((crc << 4) & 0xFFFF) ^ (((crc >> 12) ^ c) & 0x0F) * 0x1021
        return bytes((_STX, len(cmd) + 4)) + cmd + bytes((crc >> 8, crc & 0xFF, _ETX))

    def online(self, now_ms):
        # state is None until the first intact reply
        return self.state is not None and ticks_diff(now_ms, self.last_reply_ms) <= self.offline_ms

    def values(self, now_ms, max_age_ms=None):
        """{MDC code: (mantissa, exponent, tick)} of fresh reported values (mL/h, mL).

        The rate is the programmed rate the pump reports, also while stopped: combine it
        with ``state`` for the flow actually delivered.
        """
        age = self.offline_ms if max_age_ms is None else max_age_ms
        out = {}
        if self.rate_ul_h is not None and ticks_diff(now_ms, self.rate_ms) <= age:
            out[MDC_FLOW_FLUID_PUMP] = (self.rate_ul_h, -3, self.rate_ms)
        if self.infused_ul is not None and ticks_diff(now_ms, self.volume_ms) <= age:
            out[MDC_VOL_DELIVERED_TOTAL] = (self.infused_ul, -3, self.volume_ms)
        return out

    def feed(self, data, now_ms):
        """Reassemble replies from UART bytes: sync on STX and the length byte, check ETX
        and the CRC, then read the reply. Each byte is scanned as it arrives, so a whole
        reply is taken as soon as its last byte is in."""
        buf = self._buf
        mv = self._mv
        n = self._n
        # A partial packet older than 0.5 s is stale (the pump itself drops these): give up
        # on its head and rescan the rest, which may hold a whole reply behind a false STX.
        flush = n and ticks_diff(now_ms, self._rx_ms) > _INTERBYTE_MS
        i = 0
        while True:
            while n:  # scan the buffer
                ok = buf[0] == _STX
                if ok and n > 1:
                    total = buf[1] + 1
                    # A reply has >= 3 data bytes and starts with a 2-digit address:
                    # checking the digits early rejects a false STX (e.g. a Basic Mode
                    # reply STX "00S" ETX) without waiting for its "length".
                    ok = (
                        8 <= total <= _MAX_FRAME
                        and (n < 3 or 0x30 <= buf[2] <= 0x39)
                        and (n < 4 or 0x30 <= buf[3] <= 0x39)
                    )
                if ok:
                    if n < 2 or n < total:
                        if not flush:
                            break  # wait for the rest
                    elif buf[total - 1] == _ETX:
                        crc = 0  # CRC-16/XMODEM of the data, as in poll()
                        for k in range(2, total - 3):
                            c = buf[k]
                            crc = ((crc << 4) & 0xFFFF) ^ (((crc >> 12) ^ (c >> 4)) & 0x0F) * 0x1021
                            crc = ((crc << 4) & 0xFFFF) ^ (((crc >> 12) ^ c) & 0x0F) * 0x1021
                        if crc == (buf[total - 3] << 8) | buf[total - 2]:
                            p = bytes(mv[2 : total - 3])
                            mv[0 : n - total] = mv[total:n]
                            n -= total
                            self._reply(p, now_ms)
                            continue
                        self.frames_bad += 1
                # Drop the head byte, then up to the next STX, so garbage is counted once
                # and scanned once.
                k = 1
                while k < n and buf[k] != _STX:
                    k += 1
                mv[0 : n - k] = mv[k:n]
                n -= k
                self.bytes_discarded += k
            flush = False
            if i >= len(data):
                break
            b = data[i]
            i += 1
            self._rx_ms = now_ms
            if n == 0 and b != _STX:
                self.bytes_discarded += 1
            elif n < _MAX_FRAME:
                buf[n] = b
                n += 1
            else:  # cannot happen: frames are checked before they fill the buffer
                self.bytes_discarded += n
                n = 0
        self._n = n

    # ---- replies --------------------------------------------------------------------

    def _reply(self, p, now_ms):
        n = len(p)
        s = chr(p[2]) if n >= 3 else ""
        alarm = chr(p[4]) if s == "A" and n >= 5 and p[3] == 0x3F else ""
        pre = self._prefix
        if (
            not (n >= 3 and 0x30 <= p[0] <= 0x39 and 0x30 <= p[1] <= 0x39)
            or (pre and p[:2] != pre)
            or not (alarm in _ALARMS if s == "A" else s in _PROMPTS)
            or (s == "A" and not alarm)
        ):
            self.frames_invalid += 1
            return
        data = p[5:] if alarm else p[3:]
        cmd = self._inflight
        # Interpret the data before touching any state: a reply we cannot read changes
        # nothing (it is re-requested), so no value is ever taken from a damaged reply.
        err = data if data and data[0] == 0x3F else None  # "?..."
        vals = None
        if err is None and not alarm and (cmd == b"DIS" or cmd == b"RAT"):
            # A DIS reply, I<float>W<float><UL|ML> -> [infused, withdrawn] in uL (read the
            # same way by the Aladdin driver), or a RAT reply, <float><UM|MM|UH|MH> (uL/min,
            # mL/min, uL/h, mL/h) -> [rate] in uL/h.
            # (Letters are compared as byte values: a bytes constant costs heap.)
            u = data[-2] if len(data) > 1 else 0
            per = 1 if u == 0x55 else 1000 if u == 0x4D else 0  # "U"/"M": uL per unit
            u = data[-1] if data else 0
            if cmd == b"DIS":
                w = data.find(0x57)  # "W"
                ok = len(data) >= 6 and data[0] == 0x49 and w >= 2 and u == 0x4C  # "I", "L"
                parts = [data[1:w], data[w + 1 : -2]] if ok else []
            else:
                per *= 60 if u == 0x4D else 1 if u == 0x48 else 0  # "M"/"H": per hour
                parts = [data[:-2]] if len(data) >= 3 else []
            vals = []
            for t in parts:
                # <float>: digits with at most one point -> v * 10**-f, read in 0.001 units
                # rounded half up on the first dropped digit
                v = f = digits = 0
                point = False
                for c in t:
                    if c == 0x2E and not point:
                        point = True
                    elif 0x30 <= c <= 0x39:
                        v = v * 10 + c - 0x30
                        digits += 1
                        if point:
                            f += 1
                    else:
                        digits = 0
                        break
                if digits:
                    milli = (v * 10000 // 10**f + 5) // 10
                    vals.append((milli * per + 500) // 1000)
            if not per or not parts or len(vals) < len(parts):
                self.frames_invalid += 1
                return
        self.frames_ok += 1
        self.last_reply_ms = now_ms
        if alarm:
            self.state = "alarm"
            self.alarm = alarm
            self.alarm_ms = now_ms
            self.alarms += 1
            while b"RUN" in self._queue:  # never auto-restart
                self._queue.remove(b"RUN")
        else:
            self.state = _STATE_NAMES[_PROMPTS.find(s)]
        if vals:
            if cmd == b"DIS":
                self.infused_ul, self.withdrawn_ul = vals
                self.volume_ms = now_ms
            else:
                self.rate_ul_h = vals[0]
                self.rate_ms = now_ms
        if cmd is None:
            return  # unsolicited (auto-alarm) or late reply to an abandoned query
        why = None
        if cmd == b"STP":
            if alarm or s not in _RUNNING:
                self.stop_pending = False
                self.stop_acked_ms = now_ms
                self.commands_ok += 1
            # else still running (stale reply?): poll() sends STP again
            self._inflight = None
        elif alarm:
            # The reply acknowledged the alarm instead of executing the command
            # (manual §10.3). RUN is never repeated after an alarm; the rest are.
            if cmd == b"RUN" or self._alarm_tries >= _ALARM_RETRIES:
                why = "alarm"
            else:
                self._alarm_tries += 1
                self._sent_ms = None  # the same command at the next poll(), same counters
        elif err is None:
            self._inflight = None
            self.commands_ok += 1
        elif err == b"?COM" and self._tries < self.retries:
            self._tries += 1
            self._sent_ms = None
        else:
            why = err.decode()
        if why:
            self.last_error = why
            self.last_error_cmd = cmd
            self._inflight = None
            self.commands_failed += 1
