"""UART stand-ins on the MicroPython unix port: a pseudo-terminal or a TCP socket.

A pty slave is opened as a raw, unbuffered file and polled with ``select.poll`` (platform.md:
start the node in its own session, or reads can fail with EIO). A TCP socket is what a
serial device server provides; if the server drops the connection we reconnect quietly and
the driver sees silence, exactly as with an unplugged cable.
"""

import select
import socket

from protocol._const import const

_VTIME = const(5)
_VMIN = const(6)


class PtyUart:
    def __init__(self, path):
        self.path = path
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

    def read(self):
        if not self._poll.poll(0):
            return None
        try:
            return self._f.read(256) or None
        except OSError:
            return None

    def write(self, data):
        self._f.write(data)

    def close(self):
        self._f.close()


class TcpUart:
    def __init__(self, host, port):
        self.addr = socket.getaddrinfo(host, port)[0][-1]
        self._sock = None  # type: socket.socket | None
        self._poll = None  # type: select.poll | None
        self.reconnects = 0

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
        s = self._ensure()
        poller = self._poll
        if s is None or poller is None or not poller.poll(0):
            return None
        try:
            data = s.recv(256)
        except OSError:
            data = b""
        if not data:
            self._drop(s)  # the device server closed: silence, then a reconnect
            return None
        return data

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
