"""``const()`` on MicroPython, identity on CPython, so portable modules import one name."""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]
        return x


__all__ = ["const"]
