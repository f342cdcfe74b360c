"""Serial device drivers for the chairside node: sans-IO, MicroPython and CPython.

A driver never touches a UART or a clock. The node's I/O loop owns both and calls:

``feed(data, now_ms)``
    Hand over bytes read from the UART. The driver reassembles frames or lines across
    calls, resynchronizes after garbage or partial frames, checks the CRC/checksum or the
    line syntax, and only then updates its values.
``poll(now_ms) -> bytes | None``
    Bytes the driver wants written now (data requests, pump commands, status polls that
    also feed the pump's safe-mode watchdog), or None. Call it every loop iteration.
``online(now_ms) -> bool``
    False before the first intact frame and whenever the device has been silent longer
    than ``offline_ms`` (unplugged, powered off, wrong baud rate).
``values(now_ms, max_age_ms=None) -> {mdc_code: (mantissa, exponent, tick_ms)}``
    The device's current, intact, fresh values keyed by IEEE 11073-10101 code: the value is
    ``mantissa * 10**exponent`` in the code's unit (%, 1/min, mmHg, mL/h, mL) and
    ``tick_ms`` is when it was received (for NIBP: when the reading first appeared).
    Missing values (Masimo dashes, Datex invalid markers) are absent, never zero.

``now_ms`` is a ``time.ticks_ms()`` value and is only compared through
``_ticks.ticks_diff`` (2**30 period), so wrap-around is harmless. Counters on every
driver: ``frames_ok``, ``frames_bad`` (checksum/CRC failures), ``bytes_discarded``
(garbage and dropped fragments); each driver adds its own (see its class docstring).

Modules: ``ne1000`` (New Era NE-1000 / WPI AL-1000 syringe pump, Safe Mode), ``masimo``
(Masimo Radical-7 ASCII output), ``datex`` (GE Datex-Ohmeda S/5 computer interface).
Import the one you need; this package imports nothing so a node only pays for what it uses.
Protocol details, sources and the points still to confirm on real devices: docs/devices.md.
"""
