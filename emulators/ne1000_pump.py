"""Emulated New Era NE-1000 syringe pump: Basic and Safe Mode RS-232 protocol + a syringe.

Written from the NE-1000 manual (Publication #1200-01, §10) independently of the firmware
driver: the CRC is ``binascii.crc_hqx`` (CRC-16/XMODEM) and numbers are parsed with
``decimal``, so a shared bug cannot hide on both ends.

Model:
- syringe diameter, rate (+ units), volume to be dispensed (+ units), direction;
- volume infused/withdrawn integrates rate over the injected clock; reaching the target
  volume ends the phase (prompt S);
- STP pauses a running program (P), a second STP stops it (S); RUN resumes from P;
- alarms stop the pump and are latched: the next valid command is answered with the alarm
  status (acknowledging it) and not executed (manual §10.3). In Safe Mode an alarm is also
  sent unsolicited ("auto-alarm"), which does not clear it;
- Safe Mode watchdog: with SAF n > 0, armed by the first valid packet after power-up; if no
  valid packet arrives for n seconds the pump stops and raises A?T, and the timer waits
  for the next valid packet to restart;
- power loss stops the pump; power-up raises A?R; settings, safe mode and the volume
  counters survive (non-volatile in the real pump; the counters are our assumption).

Every packet received is recorded in ``log`` as (time, command text, valid) so tests can
ask when a stop arrived; every reply in ``sent`` as (time, reply text, damaged).
"""

import binascii
import math
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from .base import Emulator

STX = 0x02
ETX = 0x03
_CMD = re.compile(r"^(\d{1,2})?([A-Z]{3})?(.*)$")
_NUM = re.compile(r"^(?=.*\d)\d{0,4}(\.\d{0,3})?$")
_RATE_UL_H = {"UM": Decimal(60), "MM": Decimal(60000), "UH": Decimal(1), "MH": Decimal(1000)}
_VOL_UL = {"UL": Decimal(1), "ML": Decimal(1000)}
MAX_SPEED_MM_H = 2678  # plunger speed giving ~1.5 L/h on a 26.7 mm syringe (assumption)


def crc(data):
    return binascii.crc_hqx(data, 0)


def safe_packet(text):
    data = text.encode("ascii")
    c = crc(data)
    return bytes([STX, len(data) + 4]) + data + bytes([c >> 8, c & 0xFF, ETX])


def fmt(value, decimals=3):
    """A <float> with at most 4 digits and 3 decimals, as the pump would print it."""
    v = Decimal(value)
    for d in range(decimals, -1, -1):
        text = format(v.quantize(Decimal(1).scaleb(-d), rounding=ROUND_HALF_UP), "f")
        if len(text.replace(".", "")) <= 4:
            return text
    return "9999"


def number(text):
    if not _NUM.match(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


class Ne1000Pump(Emulator):
    def __init__(
        self,
        clock=None,
        address=0,
        safe_mode=True,
        saf_s=0,
        diameter_mm="26.70",
        firmware="NE1000V3.930",
    ):
        super().__init__(clock)
        self.address = address
        self.safe_mode = safe_mode
        self.saf_s = saf_s
        self.firmware = firmware
        self.diameter = Decimal(diameter_mm)
        self.rate_value = Decimal(0)
        self.rate_units = "MH"
        self.vol_value = Decimal(0)
        self.vol_units = self._default_vol_units()
        self.direction = "INF"
        self.prompt = "S"
        self.alarm = None
        self.infused_ul = 0.0
        self.withdrawn_ul = 0.0
        self._phase_start = 0.0
        self._frozen_dis = None
        self._last_t = self.clock()
        self._wd_armed = False
        self._last_valid = self._last_t
        self._rx = bytearray()
        self._rx_t = self._last_t
        self._line = bytearray()
        self.log = []
        self.sent = []
        self.alarms_raised = []
        # Accelerated scenarios: the plunger moves ``speed`` times faster than the rate says,
        # while the SAF watchdog and the serial timing keep real time.
        self.speed = 1.0

    # ---- helpers for tests ----------------------------------------------------------

    @property
    def rate_ul_h(self):
        return float(self.rate_value * _RATE_UL_H[self.rate_units])

    @property
    def target_ul(self):
        return float(self.vol_value * _VOL_UL[self.vol_units])

    def running(self):
        with self.lock:
            return self.prompt in "IW"

    def true_infused_ul(self):
        with self.lock:
            self._advance(self.clock())
            return self.infused_ul

    def commands(self, name=None):
        """(time, text) of valid packets, optionally only those whose command is ``name``."""
        with self.lock:
            out = []
            for t, text, ok in self.log:
                m = _CMD.match(text)
                if ok and (name is None or (m and m.group(2) == name)):
                    out.append((t, text))
            return out

    def inject_occlusion(self):
        """The motor stalls against an occluded line: A?S (only while pumping)."""
        with self.lock:
            self._advance(self.clock())
            if self.prompt in "IW":
                self._raise_alarm("S")

    def freeze(self):
        with self.lock:
            self._advance(self.clock())
            self._frozen_dis = (self.infused_ul, self.withdrawn_ul)
            self.frozen = True

    def unfreeze(self):
        with self.lock:
            self._frozen_dis = None
            self.frozen = False

    # ---- model ----------------------------------------------------------------------

    def _default_vol_units(self):
        # manual: at or below 14.00 mm the volume units default to uL, above to mL
        return "UL" if self.diameter <= Decimal("14.00") else "ML"

    def _max_rate_ul_h(self):
        area = math.pi * (float(self.diameter) / 2) ** 2  # mm^2; 1 mm^3 = 1 uL
        return area * MAX_SPEED_MM_H

    def _advance(self, now):
        dt = now - self._last_t
        self._last_t = now
        if dt <= 0 or not self.powered:
            return
        if self.prompt in "IW":
            rate = self.rate_ul_h
            delta = rate * dt * self.speed / 3600.0
            target = self.target_ul
            moved = self.infused_ul if self.prompt == "I" else self.withdrawn_ul
            if target > 0 and moved - self._phase_start + delta >= target:
                delta = target - (moved - self._phase_start)
                self.prompt = "S"  # phase complete: program ends
            if self.direction == "INF":
                self.infused_ul += max(delta, 0.0)
            else:
                self.withdrawn_ul += max(delta, 0.0)
        if self.safe_mode and self.saf_s > 0 and self._wd_armed:
            if now - self._last_valid > self.saf_s:
                self._wd_armed = False  # restarts only with the next valid packet
                self._raise_alarm("T")

    def _raise_alarm(self, code):
        if self.prompt in "IWP":
            self.prompt = "S"
        self.alarm = code
        self.alarms_raised.append((self._last_t, code))
        if self.safe_mode:
            self._emit(self._reply_packet("A?" + code, safe=True))  # auto-alarm

    def _tick(self, now):
        self._advance(now)
        if self._rx and now - self._rx_t > 0.5:
            self._rx.clear()  # manual: 0.5 s inter-byte time out discards the packet

    def _on_power_off(self):
        self.prompt = "S"
        self._rx.clear()
        self._line.clear()
        self._wd_armed = False

    def _on_power_on(self, now):
        self._last_t = now
        self.prompt = "S"
        self._wd_armed = False
        self._raise_alarm("R")

    # ---- wire -----------------------------------------------------------------------

    def _reply_packet(self, body, safe):
        text = "%02d%s" % (self.address, body)
        damaged = safe and self._take_corrupt()
        self.sent.append((self._last_t, text, damaged))
        if safe:
            data = text.encode("ascii")
            c = crc(data) ^ (0x0101 if damaged else 0)
            return bytes([STX, len(data) + 4]) + data + bytes([c >> 8, c & 0xFF, ETX])
        return bytes([STX]) + text.encode("ascii") + bytes([ETX])

    def _on_bytes(self, data, now):
        self._advance(now)
        for b in data:
            if self.safe_mode:
                self._safe_byte(b, now)
            else:
                self._basic_byte(b, now)

    def _basic_byte(self, b, now):
        if b != 0x0D:
            self._line.append(b)
            return
        raw = bytes(self._line)
        self._line.clear()
        text = "".join(chr(c) for c in raw if 0x20 < c < 0x7F).upper()
        self.log.append((now, text, True))
        self._execute(text, now, safe=False)

    def _safe_byte(self, b, now):
        if not self._rx and b != STX:
            return  # not a packet: ignored (e.g. Basic Mode bytes)
        if self._rx and now - self._rx_t > 0.5:
            self._rx.clear()
            if b != STX:
                return
        self._rx.append(b)
        self._rx_t = now
        rx = self._rx
        if len(rx) < 2:
            return
        total = rx[1] + 1
        if total < 5 or total > 260:
            self._rx.clear()
            return
        if len(rx) < total:
            return
        packet = bytes(rx[:total])
        del rx[:total]
        data = packet[2:-3]
        text = data.decode("latin-1")
        ok = packet[-1] == ETX and crc(data) == (packet[-3] << 8 | packet[-2])
        self.log.append((now, text, ok))
        if not ok:
            self._emit(self._reply_packet(self._status() + "?COM", safe=True))
            return
        self._last_valid = now
        if self.saf_s > 0:
            self._wd_armed = True
        self._execute(text, now, safe=True)

    def _status(self):
        return "A?" + self.alarm if self.alarm else self.prompt

    def _execute(self, text, now, safe):
        m = _CMD.match(text)
        if not m:
            self._emit(self._reply_packet(self._status() + "?", safe))
            return
        addr, cmd, arg = m.group(1), m.group(2), m.group(3)
        if addr is not None and int(addr) != self.address:
            return  # another pump's packet
        if self.alarm:
            # the alarm status is the answer; it acknowledges the alarm (manual §10.3)
            status = self._status()
            self.alarm = None
            self._emit(self._reply_packet(status, safe))
            return
        if cmd is None:
            data = "" if not arg else "?"
        else:
            handler = getattr(self, "_cmd_" + cmd, None)
            data = handler(arg, now) if handler else "?"
        reply = self._reply_packet(self._status() + data, safe)
        if cmd == "SAF" and arg:
            self._emit(reply)  # answered in the mode it was received, then switch
            self.safe_mode = self.saf_s > 0
            return
        self._emit(reply)

    # ---- commands (return the reply's data field) -----------------------------------

    def _cmd_DIA(self, arg, now):
        if not arg:
            return fmt(self.diameter, 2)
        if self.prompt in "IWP":
            return "?NA"
        v = number(arg)
        if v is None or not Decimal("0.1") <= v <= Decimal("50"):
            return "?OOR"
        self.diameter = v
        self.vol_units = self._default_vol_units()
        return ""

    def _cmd_RAT(self, arg, now):
        if not arg:
            return fmt(self.rate_value) + self.rate_units
        units = self.rate_units
        if arg[-2:] in _RATE_UL_H:
            units = arg[-2:]
            arg = arg[:-2]
        v = number(arg)
        if v is None:
            return "?"
        if self.prompt in "IW" and units != self.rate_units:
            return "?NA"  # manual: rate units cannot be changed while pumping
        ul_h = v * _RATE_UL_H[units]
        if ul_h <= 0 or float(ul_h) > self._max_rate_ul_h():
            return "?OOR"
        self.rate_value = v
        self.rate_units = units
        return ""

    def _cmd_VOL(self, arg, now):
        if not arg:
            return fmt(self.vol_value) + self.vol_units
        if self.prompt in "IWP":
            return "?NA"
        if arg in _VOL_UL:
            self.vol_value = self.vol_value * _VOL_UL[self.vol_units] / _VOL_UL[arg]
            self.vol_units = arg
            return ""
        v = number(arg)
        if v is None:
            return "?OOR"
        self.vol_value = v
        return ""

    def _cmd_DIR(self, arg, now):
        if not arg:
            return self.direction
        if arg == "REV":
            arg = "WDR" if self.direction == "INF" else "INF"
        if arg not in ("INF", "WDR"):
            return "?"
        self.direction = arg
        return ""

    def _cmd_RUN(self, arg, now):
        if self.prompt in "IW":
            return ""
        if self.rate_value <= 0:
            return "?NA"
        if self.prompt != "P":
            moved = self.infused_ul if self.direction == "INF" else self.withdrawn_ul
            self._phase_start = moved
        self.prompt = "I" if self.direction == "INF" else "W"
        return ""

    def _cmd_STP(self, arg, now):
        if self.prompt in "IW":
            self.prompt = "P"
        elif self.prompt == "P":
            self.prompt = "S"
        return ""

    def _cmd_DIS(self, arg, now):
        inf, wdr = self._frozen_dis or (self.infused_ul, self.withdrawn_ul)
        per = float(_VOL_UL[self.vol_units])
        return "I%sW%s%s" % (fmt(inf / per), fmt(wdr / per), self.vol_units)

    def _cmd_CLD(self, arg, now):
        if self.prompt in "IW":
            return "?NA"
        if arg == "INF":
            self.infused_ul = 0.0
        elif arg == "WDR":
            self.withdrawn_ul = 0.0
        else:
            return "?"
        self._phase_start = 0.0
        return ""

    def _cmd_SAF(self, arg, now):
        if not arg:
            return "%d" % self.saf_s
        if not arg.isdigit() or int(arg) > 255:
            return "?OOR"
        self.saf_s = int(arg)
        self._wd_armed = self.saf_s > 0
        self._last_valid = now
        return ""

    def _cmd_VER(self, arg, now):
        return self.firmware
