"""Wrap-around-safe tick arithmetic shared by the device drivers.

Drivers never read a clock: the node's I/O loop passes ``now_ms`` (a ``time.ticks_ms()``
value) into ``feed``/``poll``/``online``. Tick values wrap, so they may only be compared
through :func:`ticks_diff` (MicroPython ``time`` module docs: "ticks_diff").

The period is fixed at 2**30, the value used by every 32-bit MicroPython port. The unix
port on 64-bit hosts wraps at 2**62 instead; our arithmetic stays correct there because
only the low 30 bits of a difference matter as long as real intervals stay below 2**29 ms
(about 6 days). Using one period everywhere makes wrap-around tests identical under
CPython, the unix port and a board. ``time.ticks_diff`` is used when the running port has
exactly this period (it is implemented in C there).

``ticks_from_seconds`` (the emulator tests' clock, CPython only) comes from ``_host``,
which the node never loads.
"""

from protocol import const

try:
    import micropython  # noqa: F401
except ImportError:  # CPython: the tests' helper, from a module the node never loads
    from ._host import ticks_from_seconds  # noqa: F401


_MASK = const(0x3FFFFFFF)  # period 2**30 minus one: still a small int on 32-bit ports
_HALF = const(0x20000000)  # 2**29: differences at or beyond this read as negative


def ticks_diff(a, b):
    # (a - b) stays a small int on 32-bit ports for a, b in [0, 2**30); so does the mask.
    d = (a - b) & _MASK
    if d >= _HALF:
        d = d - _HALF - _HALF
    return d


def ticks_add(t, delta):
    return (t + delta) & _MASK


try:
    import time

    if time.ticks_add(0, -1) == _MASK:  # type: ignore[type-var]  # native period 2**30?
        ticks_diff = time.ticks_diff  # noqa: F811
        ticks_add = time.ticks_add  # noqa: F811
except (ImportError, AttributeError):  # CPython: keep the pure-Python versions
    pass
