"""Store-and-forward: signed packets wait here, in order, until the broker has them.

Policy (docs/firmware.md, "Store-and-forward"):

* one queue in sequence order, so the gateway sees sequence numbers only grow (its replay
  window would reject a packet that overtook 64 others);
* the newest ``ram_slots`` packets live in RAM; when RAM is full, packets spill to a spool
  file on flash, and from then on *every* new packet goes to the spool until it drains,
  which keeps the order;
* a packet leaves the queue only on ``pop()``, called after the broker's PUBACK: a
  connection lost mid-send loses nothing (MQTT 3.1.1 §4.3.2: QoS 1 is at-least-once);
* when the spool reaches ``spool_max_bytes - critical_reserve``, new *telemetry* is dropped
  (and counted: ``dropped``; the node reports the count in every telemetry packet and as an
  event). Critical packets (events, alarms, acks, births) may use the reserve; only if even
  that is full is one dropped, counted separately in ``critical_dropped``;
* the read position is saved every ``sync_every`` pops, so after a reboot at most that many
  already-delivered packets are sent again; the gateway recognizes them as duplicates.

Record format in the spool: 1 byte (bits 4-7: the uplink kind index, bit 0: critical),
2 bytes big-endian packet length, then the packet.
"""

try:
    import os
except ImportError:  # pragma: no cover
    import uos as os  # type: ignore

from protocol import const

_CRITICAL = const(1)
_HEADER = const(3)


class Outbox:
    """``dropped``, ``critical_dropped`` and ``spilled`` count packets (see the module
    docstring); ``spooled`` is how many of the queued packets are in the spool file."""

    def __init__(self, spool_path, ram_slots=8, spool_max_bytes=262144,
                 critical_reserve=16384, sync_every=16):
        self._path = spool_path
        self._pos_path = spool_path + ".pos"
        self._ram = []  # list of (kind, packet, critical), oldest first
        self.ram_slots = ram_slots
        self.spool_max = spool_max_bytes
        self.reserve = critical_reserve
        self.sync_every = sync_every
        self.dropped = 0
        self.critical_dropped = 0
        self.spilled = 0
        self.spooled = 0
        self._head = None  # cached head record read from the spool
        self._unsynced = 0
        # Resume after a reboot: the saved read position (0 if none)...
        try:
            with open(self._pos_path, "rb") as f:
                self._read = int.from_bytes(f.read(4), "big")
        except (OSError, ValueError):
            self._read = 0
        try:
            size = os.stat(self._path)[6]
        except OSError:
            size = 0
        # ...then walk the spool's record headers from there: count the records, and end
        # the spool after the last intact one.
        pos = self._read
        if size:
            with open(self._path, "rb") as f:
                while pos + _HEADER <= size:
                    f.seek(pos)
                    h = f.read(_HEADER)
                    length = (h[1] << 8) | h[2]
                    if pos + _HEADER + length > size:
                        break  # a record torn by power loss: ignore it (its seq is a gap)
                    pos += _HEADER + length
                    self.spooled += 1
        self._end = pos
        if self._read >= self._end:
            self._reset_spool()
        elif size != self._end:
            # Rewrite the intact records to a fresh spool (after a torn write at power
            # loss), so later appends never land behind garbage. Copies through a small
            # buffer.
            tmp = self._path + ".tmp"
            buf = bytearray(256)
            with open(self._path, "rb") as src, open(tmp, "wb") as dst:
                src.seek(self._read)
                left = self._end - self._read
                while left > 0:
                    n = src.readinto(buf)
                    if not n:
                        break
                    n = min(n, left)
                    dst.write(memoryview(buf)[:n])
                    left -= n
            os.rename(tmp, self._path)
            self._end -= self._read
            self._read = 0
            self._save_pos()

    # -- persistence of the read position ---------------------------------------------
    def _save_pos(self):
        tmp = self._pos_path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(self._read.to_bytes(4, "big"))
        os.rename(tmp, self._pos_path)  # atomic replace: never a half-written position
        self._unsynced = 0

    def _reset_spool(self):
        for path in (self._path, self._pos_path):
            try:
                os.remove(path)
            except OSError:
                pass
        self._read = self._end = self.spooled = 0
        self._head = None

    # -- queue --------------------------------------------------------------------------
    def __len__(self):
        return self.spooled + len(self._ram)

    def put(self, kind, packet, critical=False):
        """Queue a packet; return False if it was dropped (counted)."""
        if self.spooled == 0 and len(self._ram) < self.ram_slots:
            self._ram.append((kind, packet, critical))
            return True
        # Spill: RAM goes to the spool first, oldest first, so the order is kept.
        batch = self._ram + [(kind, packet, critical)]
        need = 0
        for _, p, _ in batch:
            need += _HEADER + len(p)
        limit = self.spool_max if critical else self.spool_max - self.reserve
        if self._end + need > limit:
            if critical:
                self.critical_dropped += 1
            else:
                self.dropped += 1
            return False
        with open(self._path, "ab") as f:
            for k, p, c in batch:
                f.write(bytes(((k << 4) | (_CRITICAL if c else 0), len(p) >> 8, len(p) & 0xFF)))
                f.write(p)
                self._end += _HEADER + len(p)
                self.spooled += 1
                self.spilled += 1
        self._ram = []
        return True

    def peek(self):
        """The oldest packet as (kind, packet, critical), or None when empty."""
        if self.spooled:
            if self._head is None:
                with open(self._path, "rb") as f:
                    f.seek(self._read)
                    h = f.read(_HEADER)
                    length = (h[1] << 8) | h[2]
                    self._head = (h[0] >> 4, f.read(length), bool(h[0] & _CRITICAL))
            return self._head
        if self._ram:
            return self._ram[0]
        return None

    def pop(self):
        """Remove the oldest packet: call only after the broker acknowledged it."""
        if self.spooled:
            head = self.peek()
            self._read += _HEADER + len(head[1])
            self.spooled -= 1
            self._head = None
            if self.spooled == 0:
                self._reset_spool()
            else:
                self._unsynced += 1
                if self._unsynced >= self.sync_every:
                    self._save_pos()
            return
        if self._ram:
            self._ram.pop(0)
