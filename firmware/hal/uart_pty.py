"""A UART stand-in on the MicroPython unix port: a pseudo-terminal (an emulated device).

The slave end is opened as a raw, unbuffered file and polled with ``select.poll``
(platform.md: start the node in its own session, or reads can fail with EIO). One class per
module, so a node loads only the kind of port it uses (docs/firmware.md, "Footprint").
"""

import select

from protocol import const

_VTIME = const(5)
_VMIN = const(6)
_READ = const(256)  # bytes per read at most


class PtyUart:
    def __init__(self, path):
        self._f = open(path, "r+b", buffering=0)
        # Raw mode, and VMIN = VTIME = 0 (Linux c_cc indices 6 and 5): MicroPython's
        # read(n) loops until n bytes arrive, so a read must find "no more data" at once.
        import termios  # type: ignore[import-not-found]  # unix port only

        fd = self._f.fileno()
        termios.setraw(fd)
        attrs = termios.tcgetattr(fd)
        attrs[6][_VMIN] = 0
        attrs[6][_VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        self._poll = select.poll()
        self._poll.register(self._f, select.POLLIN)
        self._mv = memoryview(bytearray(_READ))  # the reused read buffer

    def read(self):
        """The bytes waiting, or None. The result is a view of a buffer that the next read
        reuses (firmware/hal/__init__.py): the step loop reads every UART a hundred times a
        second, and a new object per read would be the node's busiest allocation."""
        for _ in self._poll.ipoll(0):  # ipoll: no list allocated per call
            try:
                n = self._f.readinto(self._mv)
            except OSError:
                return None
            return self._mv[:n] if n else None
        return None

    def write(self, data):
        self._f.write(data)

    def close(self):
        self._f.close()
