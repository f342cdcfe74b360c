"""SHA-512 (FIPS 180-4) for Ed25519, portable to MicroPython.

Ed25519 (RFC 8032 §5.1) is defined over SHA-512, and MicroPython's hashlib has only
md5/sha1/sha256. CPython (or any port whose hashlib has sha512) uses the C code; every
other interpreter gets :class:`PureSHA512`. The pure class stays importable everywhere so
the tests exercise it under CPython too, against hashlib as the oracle.

Public API: ``sha512(data) -> bytes`` (64 bytes) and the incremental ``SHA512(data=b"")``
with ``update(data)`` and ``digest()``; ``digest()`` does not finalize the object (like
hashlib), so more data may follow. Ed25519 feeds R, A and M in turn instead of building a
concatenated copy of a large message.
"""

import hashlib
import struct

from protocol import const

_BLOCK = const(128)  # bytes per SHA-512 block (FIPS 180-4 §1)
_M64 = 0xFFFFFFFFFFFFFFFF

# FIPS 180-4 §4.2.3: first 64 bits of the fractional parts of the cube roots of the first
# 80 primes. Kept as packed bytes (640 B) rather than a tuple of 80 ints: on MicroPython
# most of these are heap-allocated big ints, a tuple would hold ~5 KB of heap for good.
_K = (
    b"\x42\x8a\x2f\x98\xd7\x28\xae\x22\x71\x37\x44\x91\x23\xef\x65\xcd"
    b"\xb5\xc0\xfb\xcf\xec\x4d\x3b\x2f\xe9\xb5\xdb\xa5\x81\x89\xdb\xbc"
    b"\x39\x56\xc2\x5b\xf3\x48\xb5\x38\x59\xf1\x11\xf1\xb6\x05\xd0\x19"
    b"\x92\x3f\x82\xa4\xaf\x19\x4f\x9b\xab\x1c\x5e\xd5\xda\x6d\x81\x18"
    b"\xd8\x07\xaa\x98\xa3\x03\x02\x42\x12\x83\x5b\x01\x45\x70\x6f\xbe"
    b"\x24\x31\x85\xbe\x4e\xe4\xb2\x8c\x55\x0c\x7d\xc3\xd5\xff\xb4\xe2"
    b"\x72\xbe\x5d\x74\xf2\x7b\x89\x6f\x80\xde\xb1\xfe\x3b\x16\x96\xb1"
    b"\x9b\xdc\x06\xa7\x25\xc7\x12\x35\xc1\x9b\xf1\x74\xcf\x69\x26\x94"
    b"\xe4\x9b\x69\xc1\x9e\xf1\x4a\xd2\xef\xbe\x47\x86\x38\x4f\x25\xe3"
    b"\x0f\xc1\x9d\xc6\x8b\x8c\xd5\xb5\x24\x0c\xa1\xcc\x77\xac\x9c\x65"
    b"\x2d\xe9\x2c\x6f\x59\x2b\x02\x75\x4a\x74\x84\xaa\x6e\xa6\xe4\x83"
    b"\x5c\xb0\xa9\xdc\xbd\x41\xfb\xd4\x76\xf9\x88\xda\x83\x11\x53\xb5"
    b"\x98\x3e\x51\x52\xee\x66\xdf\xab\xa8\x31\xc6\x6d\x2d\xb4\x32\x10"
    b"\xb0\x03\x27\xc8\x98\xfb\x21\x3f\xbf\x59\x7f\xc7\xbe\xef\x0e\xe4"
    b"\xc6\xe0\x0b\xf3\x3d\xa8\x8f\xc2\xd5\xa7\x91\x47\x93\x0a\xa7\x25"
    b"\x06\xca\x63\x51\xe0\x03\x82\x6f\x14\x29\x29\x67\x0a\x0e\x6e\x70"
    b"\x27\xb7\x0a\x85\x46\xd2\x2f\xfc\x2e\x1b\x21\x38\x5c\x26\xc9\x26"
    b"\x4d\x2c\x6d\xfc\x5a\xc4\x2a\xed\x53\x38\x0d\x13\x9d\x95\xb3\xdf"
    b"\x65\x0a\x73\x54\x8b\xaf\x63\xde\x76\x6a\x0a\xbb\x3c\x77\xb2\xa8"
    b"\x81\xc2\xc9\x2e\x47\xed\xae\xe6\x92\x72\x2c\x85\x14\x82\x35\x3b"
    b"\xa2\xbf\xe8\xa1\x4c\xf1\x03\x64\xa8\x1a\x66\x4b\xbc\x42\x30\x01"
    b"\xc2\x4b\x8b\x70\xd0\xf8\x97\x91\xc7\x6c\x51\xa3\x06\x54\xbe\x30"
    b"\xd1\x92\xe8\x19\xd6\xef\x52\x18\xd6\x99\x06\x24\x55\x65\xa9\x10"
    b"\xf4\x0e\x35\x85\x57\x71\x20\x2a\x10\x6a\xa0\x70\x32\xbb\xd1\xb8"
    b"\x19\xa4\xc1\x16\xb8\xd2\xd0\xc8\x1e\x37\x6c\x08\x51\x41\xab\x53"
    b"\x27\x48\x77\x4c\xdf\x8e\xeb\x99\x34\xb0\xbc\xb5\xe1\x9b\x48\xa8"
    b"\x39\x1c\x0c\xb3\xc5\xc9\x5a\x63\x4e\xd8\xaa\x4a\xe3\x41\x8a\xcb"
    b"\x5b\x9c\xca\x4f\x77\x63\xe3\x73\x68\x2e\x6f\xf3\xd6\xb2\xb8\xa3"
    b"\x74\x8f\x82\xee\x5d\xef\xb2\xfc\x78\xa5\x63\x6f\x43\x17\x2f\x60"
    b"\x84\xc8\x78\x14\xa1\xf0\xab\x72\x8c\xc7\x02\x08\x1a\x64\x39\xec"
    b"\x90\xbe\xff\xfa\x23\x63\x1e\x28\xa4\x50\x6c\xeb\xde\x82\xbd\xe9"
    b"\xbe\xf9\xa3\xf7\xb2\xc6\x79\x15\xc6\x71\x78\xf2\xe3\x72\x53\x2b"
    b"\xca\x27\x3e\xce\xea\x26\x61\x9c\xd1\x86\xb8\xc7\x21\xc0\xc2\x07"
    b"\xea\xda\x7d\xd6\xcd\xe0\xeb\x1e\xf5\x7d\x4f\x7f\xee\x6e\xd1\x78"
    b"\x06\xf0\x67\xaa\x72\x17\x6f\xba\x0a\x63\x7d\xc5\xa2\xc8\x98\xa6"
    b"\x11\x3f\x98\x04\xbe\xf9\x0d\xae\x1b\x71\x0b\x35\x13\x1c\x47\x1b"
    b"\x28\xdb\x77\xf5\x23\x04\x7d\x84\x32\xca\xab\x7b\x40\xc7\x24\x93"
    b"\x3c\x9e\xbe\x0a\x15\xc9\xbe\xbc\x43\x1d\x67\xc4\x9c\x10\x0d\x4c"
    b"\x4c\xc5\xd4\xbe\xcb\x3e\x42\xb6\x59\x7f\x29\x9c\xfc\x65\x7e\x2a"
    b"\x5f\xcb\x6f\xab\x3a\xd6\xfa\xec\x6c\x44\x19\x8c\x4a\x47\x58\x17"
)

# FIPS 180-4 §5.3.5: initial hash value H(0).
_IV = (
    b"\x6a\x09\xe6\x67\xf3\xbc\xc9\x08\xbb\x67\xae\x85\x84\xca\xa7\x3b"
    b"\x3c\x6e\xf3\x72\xfe\x94\xf8\x2b\xa5\x4f\xf5\x3a\x5f\x1d\x36\xf1"
    b"\x51\x0e\x52\x7f\xad\xe6\x82\xd1\x9b\x05\x68\x8c\x2b\x3e\x6c\x1f"
    b"\x1f\x83\xd9\xab\xfb\x41\xbd\x6b\x5b\xe0\xcd\x19\x13\x7e\x21\x79"
)


# The message schedule ring, reused by every _compress (see there). _compress empties it
# before returning: on MicroPython most 64-bit words are heap big ints, and the last block's
# 16 words would otherwise stay alive between hashes, ~0.75 KB pinned for the node's life.
# (An array("Q") of 16 machine words pins nothing either, but every read of a word then
# makes a new big int: measured ~4% slower signing.)
_W = [0] * 16


def _compress(h, buf, off):
    """Process one 128-byte block at ``buf[off:]`` into the 8-word state list ``h``.

    FIPS 180-4 §6.4.2. The message schedule lives in a 16-word ring instead of 80 words,
    and the three rotations of each Σ/σ are shifts of one 128-bit doubled word under a
    single mask, because on MicroPython every operation on a 64-bit value allocates a big
    int: fewer operations, less garbage. Words are unpacked eight at a time into a ring
    allocated once: a node signing every second in a small heap then never needs more than
    a few contiguous blocks for hashing (docs/firmware.md, "Footprint"). Not re-entrant,
    and it need not be: it never yields.
    """
    m = _M64
    w = _W
    w[0:8] = struct.unpack_from(">8Q", buf, off)
    w[8:16] = struct.unpack_from(">8Q", buf, off + 64)
    a, b, c, d, e, f, g, hh = h
    for r in range(5):
        for i in range(16):
            if not i & 7:
                # 8 round constants at a time: on MicroPython each is a heap int, and
                # holding all 80 would add ~3 KB to the peak heap of every hash.
                k = struct.unpack_from(">8Q", _K, (r << 7) + (i << 3))
            if r:  # W[t] for t >= 16, kept in the ring slot i = t mod 16
                x = w[(i + 1) & 15]  # W[t-15]
                y = w[(i + 14) & 15]  # W[t-2]
                xx = x | (x << 64)  # a rotation is a shift of the word written twice
                yy = y | (y << 64)
                # σ0 = ROTR1 ^ ROTR8 ^ SHR7, σ1 = ROTR19 ^ ROTR61 ^ SHR6 (FIPS 180-4 §4.1.3)
                w[i] = (
                    w[i]
                    + ((((xx >> 1) ^ (xx >> 8)) & m) ^ (x >> 7))
                    + w[(i + 9) & 15]  # W[t-7]
                    + ((((yy >> 19) ^ (yy >> 61)) & m) ^ (y >> 6))
                ) & m
            # Σ1 = ROTR14 ^ ROTR18 ^ ROTR41; Ch(e,f,g) = g ^ (e & (f ^ g))
            x = e | (e << 64)
            t1 = hh + (((x >> 14) ^ (x >> 18) ^ (x >> 41)) & m) + (g ^ (e & (f ^ g))) + k[i & 7] + w[i]
            # Σ0 = ROTR28 ^ ROTR34 ^ ROTR39; Maj(a,b,c) = (a & b) | (c & (a | b))
            x = a | (a << 64)
            t2 = (((x >> 28) ^ (x >> 34) ^ (x >> 39)) & m) + ((a & b) | (c & (a | b)))
            hh = g
            g = f
            f = e
            e = (d + t1) & m
            d = c
            c = b
            b = a
            a = (t1 + t2) & m
    h[0] = (h[0] + a) & m
    h[1] = (h[1] + b) & m
    h[2] = (h[2] + c) & m
    h[3] = (h[3] + d) & m
    h[4] = (h[4] + e) & m
    h[5] = (h[5] + f) & m
    h[6] = (h[6] + g) & m
    h[7] = (h[7] + hh) & m
    for i in range(16):  # release the words (see _W)
        w[i] = 0


class PureSHA512:
    """Incremental SHA-512 in pure Python; same update()/digest() contract as hashlib."""

    digest_size = 64
    block_size = 128

    def __init__(self, data=b""):
        self._h = list(struct.unpack(">8Q", _IV))
        self._buf = bytearray(_BLOCK)
        self._n = 0  # bytes waiting in _buf
        self._len = 0  # total bytes hashed, for the length field
        if data:
            self.update(data)

    def update(self, data):
        mv = memoryview(data)
        n = len(mv)
        self._len += n
        i = 0
        buf = self._buf
        if self._n:
            take = min(_BLOCK - self._n, n)
            buf[self._n : self._n + take] = mv[:take]
            self._n += take
            i = take
            if self._n < _BLOCK:
                return
            _compress(self._h, buf, 0)
            self._n = 0
        # Whole blocks straight from the caller's buffer: no copy of a large message.
        while n - i >= _BLOCK:
            _compress(self._h, mv, i)
            i += _BLOCK
        if i < n:
            buf[: n - i] = mv[i:]
            self._n = n - i

    def digest(self):
        # FIPS 180-4 §5.1.2: 0x80, zeros, then the 128-bit big-endian bit length. Padding
        # works on copies so the object can keep absorbing data afterwards.
        h = list(self._h)
        n = self._n
        buf = bytearray(self._buf)
        buf[n] = 0x80
        for i in range(n + 1, _BLOCK):
            buf[i] = 0
        if n >= _BLOCK - 16:
            _compress(h, buf, 0)
            for i in range(_BLOCK):
                buf[i] = 0
        bits = self._len * 8
        struct.pack_into(">QQ", buf, _BLOCK - 16, bits >> 64, bits & _M64)
        _compress(h, buf, 0)
        return struct.pack(">8Q", *h)

    def hexdigest(self):
        return self.digest().hex()  # no generator: its code would stay in the node's heap


# CPython: the C implementation; MicroPython's hashlib has no sha512 at all.
SHA512 = getattr(hashlib, "sha512", PureSHA512)


def sha512(data):
    """One-shot SHA-512 of a bytes-like object; returns 64 bytes."""
    return SHA512(data).digest()
