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

Written for a small heap (docs/firmware.md, "Footprint"): few functions, tables as strings.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]
        return x


from ._frame import RxBuffer
from ._ticks import ticks_diff

_STX = const(0x02)
_ETX = const(0x03)
_MAX_FRAME = const(64)  # longest reply we accept (DIS/VER replies are < 30 bytes)
_INTERBYTE_MS = const(500)  # manual: a packet with a 0.5 s gap between bytes is discarded
_QMAX = const(8)
_ALARM_RETRIES = const(2)

# prompt letter (manual §10.2.4 "<prompt>") -> state name, by position
_PROMPTS = "IWSPTUX"
_STATE_NAMES = (
    "infusing",
    "withdrawing",
    "stopped",
    "paused",
    "pause_phase",
    "user_wait",
    "purging",
)
_RUNNING = "IWX"
# alarm letters (manual §10.2.4 "<alarm type>"): R reset (power was interrupted), S motor
# stalled (occlusion, end of travel), T safe mode communications time out, E program error,
# O phase out of range
_ALARMS = "RSTEO"

# MDC codes reported by values() (clinical.md): pump flow rate, volume delivered total.
MDC_FLOW_FLUID_PUMP = const(157784)
MDC_VOL_DELIVERED_TOTAL = const(157993)

# CRC-16/XMODEM nibble table (16 entries rather than 256 keeps RAM small).
_NIBBLE = (
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50A5, 0x60C6, 0x70E7,
    0x8108, 0x9129, 0xA14A, 0xB16B, 0xC18C, 0xD1AD, 0xE1CE, 0xF1EF,
)  # fmt: skip


def crc16_xmodem(data, crc=0):
    """CRC-16/XMODEM (poly 0x1021, init 0, no reflection, no final XOR) of ``data``,
    continuing from ``crc``: the manual's "16 bit CCITT CRC", sent high byte first
    (§10.2.3; its example ``SAF0`` -> 0x5543 is the check value the tests pin)."""
    t = _NIBBLE
    for b in data:
        crc = ((crc << 4) & 0xFFFF) ^ t[((crc >> 12) ^ (b >> 4)) & 0x0F]
        crc = ((crc << 4) & 0xFFFF) ^ t[((crc >> 12) ^ b) & 0x0F]
    return crc


def frame(cmd):
    """Safe Mode packet for the ASCII command ``cmd`` (bytes), e.g. ``frame(b"SAF0")``."""
    n = len(cmd)
    if n > 250:
        raise ValueError("command too long")
    crc = crc16_xmodem(cmd)
    return bytes((_STX, n + 4)) + cmd + bytes((crc >> 8, crc & 0xFF, _ETX))


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
            if f:
                fp = str(m % scale)
                ip += "." + "0" * (f - len(fp)) + fp
            return ip.encode(), m * unit
        f -= 1
    raise ValueError("number has more than 4 digits")


def parse_number(text, exp):
    """Parse a pump ``<float>`` into an integer in 10**-exp units (half up); None if bad."""
    ip = fp = fd = digits = 0  # fd: fraction digits kept
    extra = -1  # first dropped fraction digit, for rounding
    point = False
    for c in text:
        if c == 0x2E:  # '.'
            if point:
                return None
            point = True
        elif 0x30 <= c <= 0x39:
            digits += 1
            if not point:
                ip = ip * 10 + c - 0x30
            elif fd < exp:
                fp = fp * 10 + c - 0x30
                fd += 1
            elif extra < 0:
                extra = c - 0x30
        else:
            return None
    if not digits:
        return None
    return ip * 10**exp + fp * 10 ** (exp - fd) + (1 if extra >= 5 else 0)


def _parse(data, dis):
    """The numbers of a DIS reply, ``I<float>W<float><UL|ML>`` -> [infused, withdrawn] in
    uL (read the same way by the Aladdin driver), or of a RAT reply, ``<float><UM|MM|UH|MH>``
    (uL/min, mL/min, uL/h, mL/h) -> [rate] in uL/h; None if unreadable."""
    u = data[-2:]
    # 1000 per mL; 60 per minute
    per = 1 if u[:1] == b"U" else 1000 if u[:1] == b"M" else 0
    if dis:
        w = data.find(b"W")
        if data[:1] != b"I" or len(data) < 6 or w < 2 or u[1:] != b"L":
            return None
        parts = [data[1:w], data[w + 1 : -2]]
    else:
        per *= 60 if u[1:] == b"M" else 1 if u[1:] == b"H" else 0
        if len(data) < 3:
            return None
        parts = [data[:-2]]
    if not per:
        return None
    out = []
    for t in parts:
        milli = parse_number(t, 3)
        if milli is None:
            return None
        out.append((milli * per + 500) // 1000)
    return out


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
        self._check_saf(saf_s)
        self.address = address
        self._prefix = b"" if address is None else ("%02d" % address).encode()
        self.saf_s = saf_s
        self.reply_timeout_ms = reply_timeout_ms
        self.retries = retries
        self.offline_ms = offline_ms
        self._rx = RxBuffer(_MAX_FRAME)
        self._rx_ms = 0
        self._queue = []
        self._inflight = None
        self._sent_ms = self._tries = self._alarm_tries = 0
        self._resend = False
        self._last_poll_ms = None  # None: no status poll yet
        self._poll_rat = False
        # Basic-Mode "SAF n<CR>": bytes to send now (_boot_due) and again while silent
        self._boot = ("\rSAF%d\r" % saf_s).encode() if bootstrap else None
        self._boot_due = bootstrap
        self._boot_ms = 0
        self._ever = False
        self.state = self.alarm = self.rate_ul_h = self.infused_ul = self.withdrawn_ul = None
        self.alarm_ms = self.rate_ms = self.volume_ms = self.stop_acked_ms = 0
        self.stop_pending = False
        self.last_error = self.last_error_cmd = None
        self.last_reply_ms = self.frames_ok = self.frames_bad = self.frames_invalid = 0
        self.bytes_discarded = self.timeouts = self.commands_ok = self.commands_failed = 0
        self.commands_dropped = self.alarms = 0
        if saf_s:
            self._queue.append(("SAF%d" % saf_s).encode())

    def _check_saf(self, saf_s):
        if not 0 <= saf_s <= 255 or (saf_s and self.poll_ms * 2 > saf_s * 1000):
            raise ValueError("saf_s must be 0..255 and at least twice poll_ms")

    # ---- commands -------------------------------------------------------------------

    def queue(self, cmd):
        """Queue a raw command (bytes, without address); False if the queue is full."""
        if len(self._queue) >= _QMAX:
            return False
        self._queue.append(bytes(cmd))
        return True

    def set_diameter(self, mm_x100):
        """Syringe inside diameter in 0.01 mm (``DIA``). Resets the pump's volume units."""
        return self.queue(b"DIA" + format_number(mm_x100, 2)[0])

    def set_rate(self, ul_per_h):
        """Queue ``RAT <mL/h> MH``; returns the rate in uL/h the pump will really get.

        Below 10 mL/h the value is exact; above it is rounded to what 4 digits can carry
        (10 uL/h steps below 100 mL/h). Returns None if the queue is full; raises
        ValueError at or beyond 10 L/h.
        """
        text, eff = format_number(ul_per_h, 3)
        return eff if self.queue(b"RAT" + text + b"MH") else None

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
        self._check_saf(saf_s)
        self.saf_s = saf_s
        if self._boot is not None:
            self._boot = ("\rSAF%d\r" % saf_s).encode()
        return self.queue(("SAF%d" % saf_s).encode())

    def run(self):
        return self.queue(b"RUN")

    def request_status(self):
        """Status-only query (a packet without a command, manual §10.4)."""
        return self.queue(b"")

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
        boot = self._boot
        if boot is not None and (
            self._boot_due
            or (not self.online(now_ms) and ticks_diff(now_ms, self._boot_ms) >= self.offline_ms)
        ):
            # At start, and again while the pump stays silent: it may have been reset to
            # Basic Mode (SAF0 from its keypad or a replacement pump).
            self._boot_due = False
            self._boot_ms = now_ms
            if self._last_poll_ms is not None:
                self._last_poll_ms = now_ms
            return boot
        cmd = self._inflight
        tries = 0
        if cmd is not None:
            if self._resend:  # reply asked for a resend (?COM, alarm acknowledged)
                self._resend = False
                self._sent_ms = now_ms
                return frame(self._prefix + cmd)
            if ticks_diff(now_ms, self._sent_ms) < self.reply_timeout_ms:
                return None
            self.timeouts += 1
            tries = self._tries + 1
            if cmd != b"STP" and self._tries >= self.retries:
                self._fail("timeout")
                cmd = None
                tries = 0
        if cmd is None:
            if self.stop_pending:
                cmd = b"STP"
            elif self._queue:
                cmd = self._queue.pop(0)
            elif (
                self._last_poll_ms is None or ticks_diff(now_ms, self._last_poll_ms) >= self.poll_ms
            ):
                self._last_poll_ms = now_ms
                self._poll_rat = not self._poll_rat
                cmd = b"DIS" if self._poll_rat else b"RAT"
            else:
                return None
        if not tries:
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
        out = {}
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
            elif rx.append(b):
                self._scan(now_ms)
            else:  # cannot happen: frames are checked before they fill the buffer
                self.bytes_discarded += rx.n
                rx.clear()

    def _scan(self, now_ms):
        rx = self._rx
        buf = rx.buf
        while rx.n:
            n = rx.n
            ok = buf[0] == _STX
            if ok:
                if n < 2:
                    return
                total = buf[1] + 1
                # A reply has >= 3 data bytes and starts with a 2-digit address: checking
                # the digits early rejects a false STX (e.g. a Basic Mode reply STX "00S"
                # ETX) without waiting for its "length".
                ok = (
                    8 <= total <= _MAX_FRAME
                    and (n < 3 or 0x30 <= buf[2] <= 0x39)
                    and (n < 4 or 0x30 <= buf[3] <= 0x39)
                )
            if ok:
                if n < total:
                    return
                if buf[total - 1] == _ETX:
                    payload = bytes(rx.mv[2 : total - 3])
                    if crc16_xmodem(payload) == (buf[total - 3] << 8) | buf[total - 2]:
                        rx.drop(total)
                        self._reply(payload, now_ms)
                        continue
                    self.frames_bad += 1
            self._discard(1)

    def _discard(self, k):
        # drop k bytes, then up to the next STX, so garbage is counted once and scanned once
        rx = self._rx
        rx.drop(k)
        i = 0
        while i < rx.n and rx.buf[i] != _STX:
            i += 1
        if i:
            rx.drop(i)
        self.bytes_discarded += k + i

    # ---- replies --------------------------------------------------------------------

    def _reply(self, p, now_ms):
        n = len(p)
        s = chr(p[2]) if n >= 3 else ""
        alarm = chr(p[4]) if s == "A" and n >= 5 and p[3] == 0x3F else ""
        if (
            not (n >= 3 and 0x30 <= p[0] <= 0x39 and 0x30 <= p[1] <= 0x39)
            or (self.address is not None and (p[0] - 0x30) * 10 + p[1] - 0x30 != self.address)
            or not (alarm in _ALARMS if s == "A" else s in _PROMPTS)
            or (s == "A" and not alarm)
        ):
            self.frames_invalid += 1
            return
        data = p[5:] if alarm else p[3:]
        cmd = self._inflight
        # Interpret the data before touching any state: a reply we cannot read changes
        # nothing (it is re-requested), so no value is ever taken from a damaged reply.
        err = data if data[:1] == b"?" else None
        vals = None
        if err is None and not alarm and (cmd == b"DIS" or cmd == b"RAT"):
            vals = _parse(data, cmd == b"DIS")
            if vals is None:
                self.frames_invalid += 1
                return
        self.frames_ok += 1
        self._ever = True
        self.last_reply_ms = now_ms
        if alarm:
            self.state = "alarm"
            self.alarm = alarm
            self.alarm_ms = now_ms
            self.alarms += 1
            self._queue = [c for c in self._queue if c != b"RUN"]  # never auto-restart
        else:
            self.state = _STATE_NAMES[_PROMPTS.find(s)]
        if vals is not None:
            if cmd == b"DIS":
                self.infused_ul, self.withdrawn_ul = vals
                self.volume_ms = now_ms
            else:
                self.rate_ul_h = vals[0]
                self.rate_ms = now_ms
        if cmd is None:
            return  # unsolicited (auto-alarm) or late reply to an abandoned query
        if cmd == b"STP":
            if alarm or s not in _RUNNING:
                self.stop_pending = False
                self.stop_acked_ms = now_ms
                self._inflight = None
                self.commands_ok += 1
            else:
                self._inflight = None  # still running (stale reply?): poll() resends STP
        elif alarm:
            # The reply acknowledged the alarm instead of executing the command
            # (manual §10.3). RUN is never repeated after an alarm; the rest are.
            if cmd == b"RUN" or self._alarm_tries >= _ALARM_RETRIES:
                self._fail("alarm")
            else:
                self._alarm_tries += 1
                self._resend = True  # the same command at the next poll(), same counters
        elif err is None:
            self._inflight = None
            self.commands_ok += 1
        elif err == b"?COM" and self._tries < self.retries:
            self._tries += 1
            self._resend = True
        else:
            self._fail(err.decode())

    def _fail(self, why):
        self.last_error = why
        self.last_error_cmd = self._inflight
        self._inflight = None
        self.commands_failed += 1
