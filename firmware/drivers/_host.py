"""CPython-only helpers for the drivers, imported by ``_ticks`` when ``micropython`` is
missing. The node never imports this module: on MicroPython these functions would only take
heap (docs/firmware.md, "Footprint")."""


def const(x):
    """MicroPython's compile-time ``const()``: the value itself on CPython."""
    return x


def ticks_from_seconds(seconds):
    """Emulator-driven tests (CPython): seconds -> a tick value in the 2**30 period."""
    return int(seconds * 1000) & 0x3FFFFFFF
