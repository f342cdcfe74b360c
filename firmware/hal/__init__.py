"""Hardware abstraction: the only place that knows which board the node runs on.

Everything above this package (drivers, permit, outbox, node) is given objects with small
interfaces and never branches on the platform:

* UART: ``read() -> bytes-like | None`` (never blocks; the bytes stay valid only until
  the next ``read``, the node hands them to a driver at once), ``write(data)``, ``close()``;
  ``open_uart(spec)`` builds one from the wiring config: ``"uart:ID"`` (machine.UART on
  a board, pins and framing from the config), ``"pty:/dev/pts/N"`` or ``"tcp:HOST:PORT"``
  (the unix port: an emulated device, or a serial device server).
* clock: ``time.ticks_ms`` / ``ticks_diff`` (wrap-safe, see firmware/drivers/_ticks.py).
* storage: ``write_atomic``, ``read_bytes``, ``read_json`` (storage.py).
* watchdog: ``Watchdog`` (machine.WDT where present).
* Wi-Fi: ``wifi.connect`` on boards with a network module.
"""


def open_uart(spec, baudrate=9600, bits=8, parity=None, stop=1, tx=None, rx=None):
    """Open the UART named by a wiring-config ``port`` string (see module docstring)."""
    if spec.startswith("uart:"):
        from firmware.hal.uart_machine import MachineUart

        return MachineUart(int(spec[5:]), baudrate, bits, parity, stop, tx, rx)
    if spec.startswith("pty:"):
        from firmware.hal.uart_pty import PtyUart

        return PtyUart(spec[4:])
    if spec.startswith("tcp:"):
        from firmware.hal.uart_tcp import TcpUart

        host, _, port = spec[4:].rpartition(":")
        return TcpUart(host, int(port))
    raise ValueError("wiring: unknown port %r (use uart:N, pty:PATH or tcp:HOST:PORT)" % spec)
