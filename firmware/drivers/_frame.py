"""Fixed-size receive buffer shared by the framed drivers (no per-byte allocation).

MicroPython's bytearray supports no item deletion, so consumed bytes are dropped by
shifting the tail down through a memoryview (one memmove, no temporary object).
"""


class RxBuffer:
    def __init__(self, size):
        self.buf = bytearray(size)
        self.mv = memoryview(self.buf)
        self.n = 0

    def append(self, b):
        """Store one byte; False (byte not stored) when the buffer is full."""
        if self.n >= len(self.buf):
            return False
        self.buf[self.n] = b
        self.n += 1
        return True

    def drop(self, k):
        """Forget the first ``k`` bytes."""
        n = self.n
        if k >= n:
            self.n = 0
            return
        self.mv[0 : n - k] = self.mv[k:n]
        self.n = n - k

    def clear(self):
        self.n = 0
