"""What every device emulator shares: an injectable clock, a lock, and fault injection.

An emulator is a byte-level device model with no I/O of its own. A transport (see
transport.py) or a test calls ``receive(data)`` with bytes from the host and ``service()``
to advance the model to ``clock()`` and collect the bytes the device sends. Both take the
emulator's lock, so a test thread may inject faults while a transport thread runs it.

Faults common to all devices:
  unplug()/replug()     cable out: nothing received, nothing sent; the device keeps running
  power_off()/power_on()  device off: no traffic, running state lost (device-specific)
  inject_garbage(b)     raw bytes sent before the next output
  corrupt_next(n)       the next n frames/lines go out damaged (checksum / syntax)
  freeze()/unfreeze()   the device keeps reporting the values it had when frozen
"""

import threading
import time


class ScaledClock:
    """Seconds that run ``speed`` times faster than real time (accelerated scenarios)."""

    def __init__(self, speed=1.0, start=1_700_000_000.0):
        self.speed = speed
        self._start = start
        self._m0 = time.monotonic()

    def __call__(self):
        return self._start + (time.monotonic() - self._m0) * self.speed


class ManualClock:
    """Seconds that move only when told to (fully deterministic tests)."""

    def __init__(self, start=1_700_000_000.0):
        self.t = start

    def __call__(self):
        return self.t

    def advance(self, seconds):
        self.t += seconds


class Emulator:
    def __init__(self, clock=None):
        self.clock = clock if clock is not None else time.time
        self.lock = threading.RLock()
        self.plugged = True
        self.powered = True
        self.frozen = False
        self._garbage = bytearray()
        self._corrupt = 0
        self._out = bytearray()
        self.bytes_in = 0
        self.bytes_out = 0

    # ---- host side ------------------------------------------------------------------

    def receive(self, data):
        with self.lock:
            if not (self.plugged and self.powered) or not data:
                return
            self.bytes_in += len(data)
            self._on_bytes(bytes(data), self.clock())

    def service(self):
        """Advance the model to now; return the bytes the device puts on the wire."""
        with self.lock:
            if self.powered:
                self._tick(self.clock())
            out = bytes(self._garbage) + bytes(self._out)
            self._garbage.clear()
            self._out.clear()
            if not (self.plugged and self.powered):
                return b""
            self.bytes_out += len(out)
            return out

    # ---- faults ---------------------------------------------------------------------

    def unplug(self):
        with self.lock:
            self.plugged = False

    def replug(self):
        with self.lock:
            self.plugged = True

    def inject_garbage(self, data):
        with self.lock:
            self._garbage += data

    def corrupt_next(self, n=1):
        with self.lock:
            self._corrupt += n

    def freeze(self):
        with self.lock:
            self.frozen = True

    def unfreeze(self):
        with self.lock:
            self.frozen = False

    def power_off(self):
        with self.lock:
            self._tick(self.clock())
            self.powered = False
            self._out.clear()
            self._on_power_off()

    def power_on(self):
        with self.lock:
            self.powered = True
            self._on_power_on(self.clock())

    # ---- device model (subclasses) --------------------------------------------------

    def _emit(self, data):
        self._out += data

    def _take_corrupt(self):
        if self._corrupt > 0:
            self._corrupt -= 1
            return True
        return False

    def _on_bytes(self, data, now):
        pass

    def _tick(self, now):
        pass

    def _on_power_off(self):
        pass

    def _on_power_on(self, now):
        pass
