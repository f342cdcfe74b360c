"""machine.UART on a board (rp2, esp32): pins and framing come from the wiring config."""

import machine


class MachineUart:
    def __init__(self, uart_id, baudrate, bits, parity, stop, tx, rx):
        kw = {"baudrate": baudrate, "bits": bits, "parity": parity, "stop": stop,
              "timeout": 0, "rxbuf": 512}
        if tx is not None:
            kw["tx"] = machine.Pin(tx)
        if rx is not None:
            kw["rx"] = machine.Pin(rx)
        self._u = machine.UART(uart_id, **kw)
        self._buf = bytearray(256)
        self._mv = memoryview(self._buf)

    def read(self):
        """The bytes waiting, or None; a view of a buffer the next read reuses (see
        firmware/hal/__init__.py)."""
        if not self._u.any():
            return None
        n = self._u.readinto(self._buf)
        return self._mv[:n] if n else None

    def write(self, data):
        self._u.write(data)

    def close(self):
        self._u.deinit()
