"""Ed25519 signatures (RFC 8032 §5.1, PureEdDSA), portable to MicroPython.

The node signs a telemetry packet every second and must verify gateway commands (the stop
path) on a board far slower than a PC, so the arithmetic is chosen for speed in pure
Python while staying small enough for a 64 KiB heap:

* points in extended twisted Edwards coordinates (X:Y:Z:T), x = X/Z, y = Y/Z, xy = T/Z
  (Hisil-Wong-Carter-Dawson 2008); the a = -1 addition law used here is complete, so the
  identity and P + P need no special cases. Field elements are plain ints reduced mod p
  only after products (sums may stay unreduced); one inversion per encoding, by the ref10
  addition chain rather than pow() (about 1.8x faster on MicroPython);
* [s]B (signing, and half of verification) uses a signed comb (Hamburg 2012) with
  2 combs x 5 teeth x 26 columns: 25 doublings + 52 mixed additions, against ~255 + 128
  for double-and-add. Its table is 32 affine points = 3,072 bytes, packed in a bytearray
  (not 96 heap ints), built on first use and shared by all keys;
* the variable-base [k]A of verification uses signed radix-16 windows (252 doublings,
  at most 64 additions, an 8-point table built per call);
* :class:`VerifyingKey` caches the decoded key and, for a key in the prime-order subgroup
  (any honestly generated key; checked once), a 3 KB comb table for -A as well, which
  makes verification with a fixed gateway key about two times cheaper (one comb pass
  for [S]B and [k](-A) together: 25 doublings + 104 additions).

Verification is RFC 8032 §5.1.7 with the cofactorless equation, in the form OpenSSL (and
so pyca/cryptography) evaluates it: reject S >= L; decode A strictly (§5.1.3: y >= p, x = 0
with the sign bit set, or no square root -> invalid); compute [S]B - [k]A and compare its
canonical encoding with the R bytes. An R that would fail §5.1.3 decoding (non-canonical
y, "negative zero", not on the curve) can never equal a canonical encoding, so it is
rejected exactly as the RFC requires without being decoded. Known difference from
OpenSSL: OpenSSL decodes A the ref10 way and accepts the non-canonical encodings of A
(y >= p, or x = 0 with the sign bit set) that RFC 8032 rejects; we follow the RFC (see
tests/vectors/ed25519_edge.json, which records OpenSSL's answer for each such case).

Not constant-time: big-int arithmetic and table indexing leak timing on any Python. The
signing key never leaves the node and the packets are public, but a co-resident attacker
timing many signatures is out of scope for this implementation.

Key setup (key expansion and decoding, the subgroup check, building comb tables, the
variable-base multiplication, and the curve constants only these need: d, 2d, sqrt(-1) and
B) lives in protocol/_ed25519_setup.py, imported when first needed. So do the one-shot
``public_key``, ``sign`` and ``verify``, which expand or decode a key on every call (tests,
benchmarks; the node and the gateway keep key objects). A node needs that module only at
boot and unloads it afterwards: signing and verifying with a precomputed table need nothing
from it (docs/firmware.md, "Footprint"). Everything moved there stays reachable here
(``ed25519.verify``, ``ed25519._D``...) through the module ``__getattr__``.
"""

from protocol import const
from protocol.sha512 import SHA512

# Curve constants (RFC 8032 §5.1) the hot path needs: p and L; the others (d, 2d, sqrt(-1),
# B) are in protocol/_ed25519_setup.py. Big ints cannot be const() on every port: plain
# globals, copied into locals in the hot functions.
_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493  # order of B

# Signed comb geometry: _COMBS * _TEETH * _SPACING = 260 >= 253 bits of a scalar mod L.
_COMBS = const(2)
_TEETH = const(5)
_SPACING = const(26)
_ENTRIES = const(16)  # 2 ** (_TEETH - 1): half the 2**_TEETH sums, the rest are negations
_ENTRY_BYTES = const(96)  # y+x, y-x, 2dxy, 32 bytes each, little-endian
_BATCH = const(4)  # entries normalized per inversion while building a table
_COMB_ADJ = 2**260 - 1  # 2 ** (_COMBS * _TEETH * _SPACING) - 1
_HALF = (_L + 1) // 2  # 1/2 mod L
_MASK = const(0x3FFFFFF)  # (1 << _SPACING) - 1: one tooth's column bits, a small int

_IDENTITY = (0, 1, 1, 0)
_BTAB = None  # comb table for B, built on first use


def _sqn(t, n):
    p = _P
    for _ in range(n):
        t = t * t % p
    return t


def _pow2_250_1(z):
    """(z^(2^250 - 1), z^11): the shared head of both exponentiations below.

    The fixed addition chain of ref10 (254 squarings, 11 multiplications) beats the built-in
    three-argument pow: measured about 1.8x faster on MicroPython and still faster on CPython.
    """
    p = _P
    z2 = z * z % p
    z9 = _sqn(z2, 2) * z % p
    z11 = z9 * z2 % p
    t = z11 * z11 % p * z9 % p  # 2^5 - 1
    t = _sqn(t, 5) * t % p  # 2^10 - 1
    t10 = t
    t = _sqn(t, 10) * t % p  # 2^20 - 1
    t = _sqn(t, 20) * t % p  # 2^40 - 1
    t = _sqn(t, 10) * t10 % p  # 2^50 - 1
    t50 = t
    t = _sqn(t, 50) * t % p  # 2^100 - 1
    t = _sqn(t, 100) * t % p  # 2^200 - 1
    t = _sqn(t, 50) * t50 % p  # 2^250 - 1
    return t, z11


def _inv(z):
    """z^(p-2) = 1/z (Fermat); p - 2 = 2^255 - 21."""
    t, z11 = _pow2_250_1(z)
    return _sqn(t, 5) * z11 % _P


def _dbln(pt, n):
    """[2^n]pt, n >= 1 (dbl-2008-hwcd, a = -1). T is only needed after the last doubling."""
    p = _P
    x, y, z = pt[0], pt[1], pt[2]
    for _ in range(n):
        a = x * x % p
        b = y * y % p
        c = z * z % p
        s = x + y
        h = a + b
        e = h - s * s % p
        g = a - b
        f = c + c + g
        x = e * f % p
        y = g * h % p
        z = f * g % p
    return (x, y, z, e * h % p)


def _add(pt, q):
    """pt + q, q in cached form (Y+X, Y-X, 2Z, 2dT) (add-2008-hwcd-3, complete for a = -1)."""
    p = _P
    x, y, z, t = pt
    a = (y - x) * q[1] % p
    b = (y + x) * q[0] % p
    c = t * q[3] % p
    d = z * q[2] % p
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % p, g * h % p, f * g % p, e * h % p)


def _encode(pt):
    """RFC 8032 §5.1.2: y little-endian, the low bit of x in bit 255."""
    p = _P
    zi = _inv(pt[2])
    x = pt[0] * zi % p
    y = pt[1] * zi % p
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _comb_mul(jobs):
    """sum of [s]P over jobs = ((table_of_P, s), ...), sharing the doublings (Straus)."""
    fb = int.from_bytes
    words = []
    for tab, s in jobs:
        # Every column bit b_i stands for the digit 2 b_i - 1, so store b = (s + 2^N - 1)/2
        # mod L; valid because the point has order L (Hamburg 2012, "signed all-bits" comb).
        b = (s + _COMB_ADJ) * _HALF % _L
        words.append(
            (memoryview(tab), [(b >> (i * _SPACING)) & _MASK for i in range(_COMBS * _TEETH)])
        )
    acc = _IDENTITY
    for j in range(_SPACING - 1, -1, -1):
        if j != _SPACING - 1:
            acc = _dbln(acc, 1)
        for mv, tw in words:
            for c in range(_COMBS):
                base = c * _TEETH
                idx = 0
                for t in range(_TEETH - 1):
                    idx |= ((tw[base + t] >> j) & 1) << t
                if (tw[base + _TEETH - 1] >> j) & 1:
                    off = (c * _ENTRIES + idx) * _ENTRY_BYTES
                    q = (
                        fb(mv[off : off + 32], "little"),
                        fb(mv[off + 32 : off + 64], "little"),
                        2,
                        fb(mv[off + 64 : off + 96], "little"),
                    )
                else:  # negated entry of the complemented index: swap y+x / y-x, negate T
                    off = (c * _ENTRIES + (idx ^ (_ENTRIES - 1))) * _ENTRY_BYTES
                    q = (
                        fb(mv[off + 32 : off + 64], "little"),
                        fb(mv[off : off + 32], "little"),
                        2,
                        -fb(mv[off + 64 : off + 96], "little"),
                    )
                acc = _add(acc, q)
    return acc


def _base_table():
    global _BTAB
    if _BTAB is None:
        from protocol import _ed25519_setup

        _BTAB = _ed25519_setup._comb_table(_ed25519_setup._B)
    return _BTAB


def __getattr__(name):
    # What moved to protocol/_ed25519_setup.py (see the module docstring) stays reachable
    # as ed25519.verify, ed25519._decode etc.
    from protocol import _ed25519_setup

    try:
        return getattr(_ed25519_setup, name)
    except AttributeError:
        raise AttributeError(name)


def _is_buf(x):
    return isinstance(x, (bytes, bytearray, memoryview))


def _challenge(r, a, msg):
    """k = SHA-512(R || A || M) mod L (RFC 8032 §5.1.6 step 4, §5.1.7 step 2)."""
    h = SHA512(r)
    h.update(a)
    h.update(msg)
    return int.from_bytes(h.digest(), "little") % _L


class SigningKey:
    """A 32-byte RFC 8032 seed, expanded once (§5.1.5): scalar, prefix and public key."""

    def __init__(self, seed):
        # Raises ProtocolError("ed25519.bad_seed") unless seed is 32 bytes.
        from protocol import _ed25519_setup

        self._a, self._prefix, self.public = _ed25519_setup._expand(seed)

    def sign(self, msg):
        """64-byte signature R || S of a bytes-like message (RFC 8032 §5.1.6)."""
        h = SHA512(self._prefix)
        h.update(msg)
        r = int.from_bytes(h.digest(), "little") % _L
        rb = _encode(_comb_mul(((_base_table(), r),)))
        k = _challenge(rb, self.public, msg)
        return rb + ((r + k * self._a) % _L).to_bytes(32, "little")


class VerifyingKey:
    """A decoded public key, for verifying many signatures under one key.

    Raises ProtocolError("ed25519.bad_public_key") if the encoding is invalid (§5.1.3).
    With ``precompute`` (default) and A in the prime-order subgroup, a 3 KB comb table
    for -A is built once so each verification is a single shared comb pass; the key then
    keeps the table only, not the point -A (``_neg`` is None).
    """

    def __init__(self, public, precompute=True):
        from protocol import _ed25519_setup

        self.public, self._neg, self._table = _ed25519_setup._verifying_key(public, precompute)

    def verify(self, msg, sig):
        """True iff sig is a valid signature of msg under this key; never raises on bad data."""
        if not (_is_buf(msg) and _is_buf(sig)) or len(sig) != 64:
            return False
        return _verify(self.public, self._neg, self._table, msg, sig)


def _verify(pk, neg_a, table, msg, sig):
    s = int.from_bytes(sig[32:], "little")
    if s >= _L:  # §5.1.7 step 1: S must be canonical (signature malleability)
        return False
    rb = bytes(sig[:32])
    k = _challenge(rb, pk, msg)
    if table is not None:
        q = _comb_mul(((_base_table(), s), (table, k)))
    else:
        from protocol._ed25519_setup import _cached, _mul_var

        q = _add(_mul_var(k, neg_a), _cached(_comb_mul(((_base_table(), s),))))
    # cofactorless [S]B - [k]A == R, compared as canonical encodings (see module docstring)
    return _encode(q) == rb

