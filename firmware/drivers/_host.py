"""CPython-only helpers for the drivers' tests, imported by ``_ticks`` when ``micropython``
is missing. The node never imports this module (docs/firmware.md, "Footprint")."""


def ticks_from_seconds(seconds):
    """Emulator-driven tests (CPython): seconds -> a tick value in the 2**30 period."""
    return int(seconds * 1000) & 0x3FFFFFFF
