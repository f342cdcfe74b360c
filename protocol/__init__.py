"""The wire format (docs/protocol.md), one code base for MicroPython and CPython.

``const`` is defined here so portable modules write ``from protocol import const``: on
MicroPython the compiler folds ``_NAME = const(n)`` into the bytecode and this is the
built-in; on CPython it is the identity. The package module is loaded anyway, so this costs
a node nothing (a module of its own for it took 860 bytes of heap).
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]
        return x


__all__ = ["const"]
