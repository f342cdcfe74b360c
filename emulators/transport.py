"""Attach an emulator to a pseudo-terminal or to a TCP port, served by a background thread.

``PtyTransport``: ``os.openpty()``; the emulator owns the master end, the node opens
``path`` (the slave) as it would open a USB-serial adapter. The slave is put in raw mode
(``tty.setraw``: no echo, no CR/LF translation, 8-bit clean), and the transport keeps its
own slave descriptor open for its whole life: the terminal settings then persist, and the
master never sees EIO while the node closes and reopens the port. Bytes the device sends
while nobody reads pile up in the pty (like a UART with no listener) up to ``max_pending``,
then the oldest are dropped.

``TcpTransport``: a listening socket on 127.0.0.1 (port 0 picks a free one), like a raw-TCP
serial device server; one client at a time, a new connection replaces the old one, and
device output with no client connected is dropped.

Both: ``start()``, ``stop()`` (joins the thread, closes every descriptor; idempotent), and
use as a context manager. The thread wakes every ``tick_s`` to run ``emulator.service()``.
No parity, baud rate or RTS/CTS are emulated: bytes arrive instantly.
"""

import errno
import os
import select
import socket
import threading
import tty


class _Base:
    def __init__(self, emulator, tick_s=0.002, max_pending=65536):
        self.emulator = emulator
        self.tick_s = tick_s
        self.max_pending = max_pending
        self._pending = bytearray()
        self._stop = threading.Event()
        self._thread = None
        self.error = None

    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=type(self).__name__)
            self._thread.daemon = True
            self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _run(self):
        try:
            while not self._stop.is_set():
                self._step()
        except Exception as e:  # noqa: BLE001 - surfaced to the test through .error
            self.error = e

    def _queue_out(self, data):
        self._pending += data
        if len(self._pending) > self.max_pending:
            del self._pending[: len(self._pending) - self.max_pending]


class PtyTransport(_Base):
    def __init__(self, emulator, **kw):
        super().__init__(emulator, **kw)
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)

    def _step(self):
        r, _, _ = select.select([self.master], [], [], self.tick_s)
        if r:
            try:
                data = os.read(self.master, 4096)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EIO):
                    raise
                data = b""
            if data:
                self.emulator.receive(data)
        out = self.emulator.service()
        if out:
            self._queue_out(out)
        if self._pending:
            try:
                n = os.write(self.master, bytes(self._pending))
                del self._pending[:n]
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EIO):
                    raise

    def _close(self):
        for fd in (self.master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.master = self._slave = None


class TcpTransport(_Base):
    def __init__(self, emulator, host="127.0.0.1", port=0, **kw):
        super().__init__(emulator, **kw)
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind((host, port))
        self._server.listen(1)
        self._server.setblocking(False)
        self.host, self.port = self._server.getsockname()
        self._client = None

    def _drop_client(self):
        if self._client is not None:
            self._client.close()
            self._client = None
        self._pending.clear()

    def _step(self):
        socks = [self._server] + ([self._client] if self._client else [])
        r, _, _ = select.select(socks, [], [], self.tick_s)
        if self._server in r:
            conn, _ = self._server.accept()
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._drop_client()
            self._client = conn
        if self._client is not None and self._client in r:
            try:
                data = self._client.recv(4096)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""
            if data == b"":
                self._drop_client()
            elif data:
                self.emulator.receive(data)
        out = self.emulator.service()
        if out and self._client is not None:
            self._queue_out(out)
        if self._pending and self._client is not None:
            try:
                n = self._client.send(bytes(self._pending))
                del self._pending[:n]
            except BlockingIOError:
                pass
            except OSError:
                self._drop_client()

    def _close(self):
        self._drop_client()
        if self._server is not None:
            self._server.close()
            self._server = None


class SerialTransport(_Base):
    """A real serial port: a USB-serial adapter wired to a real board's UART, for running the
    hardware-in-the-loop suite against hardware (docs/hil.md). Needs pyserial (installed
    with mpremote). Baud rate and framing are the device's (docs/devices.md)."""

    def __init__(self, emulator, port, baudrate=9600, bytesize=8, parity="N", stopbits=1, **kw):
        import serial  # pyserial: only needed with real hardware

        super().__init__(emulator, **kw)
        self._ser = serial.Serial(port, baudrate, bytesize=bytesize, parity=parity,
                                  stopbits=stopbits, timeout=0)
        self.path = port

    def _step(self):
        data = self._ser.read(4096)
        if data:
            self.emulator.receive(data)
        out = self.emulator.service()
        if out:
            self._ser.write(out)
        self._stop.wait(self.tick_s)

    def _close(self):
        self._ser.close()
