"""A UART stand-in on the MicroPython unix port: a TCP socket, as a serial device server
provides. If the server drops the connection we reconnect quietly and the driver sees
silence, exactly as with an unplugged cable.
"""

import select
import socket

from protocol import const

_READ = const(256)  # bytes per read at most


class TcpUart:
    def __init__(self, host, port):
        self.addr = socket.getaddrinfo(host, port)[0][-1]
        self._sock = None  # type: socket.socket | None
        self._poll = None  # type: select.poll | None
        self.reconnects = 0
        self._buf = bytearray(_READ)
        self._mv = memoryview(self._buf)

    def _ensure(self):
        """The connected socket, connecting first if needed; None while unreachable."""
        if self._sock is not None:
            return self._sock
        s = socket.socket()
        try:
            s.connect(self.addr)
        except OSError:
            s.close()
            return None
        s.setblocking(False)
        self._sock = s
        self._poll = select.poll()
        self._poll.register(s, select.POLLIN)
        self.reconnects += 1
        return s

    def _drop(self, s):
        try:
            s.close()
        except OSError:
            pass
        self._sock = None
        self._poll = None

    def read(self):
        """The bytes waiting, or None; a view of a buffer the next read reuses (see
        firmware/hal/__init__.py)."""
        s = self._ensure()
        poller = self._poll
        if s is None or poller is None:
            return None
        for _ in poller.ipoll(0):  # ipoll: no list allocated per call
            try:
                n = s.readinto(self._buf)
            except OSError:
                n = 0
            if n is None:  # nothing after all (non-blocking)
                return None
            if not n:
                self._drop(s)  # the device server closed: silence, then a reconnect
                return None
            return self._mv[:n]
        return None

    def write(self, data):
        s = self._ensure()
        if s is None:
            return
        try:
            s.send(data)
        except OSError:
            self._drop(s)

    def close(self):
        if self._sock is not None:
            self._drop(self._sock)
