"""Ed25519 key setup: key expansion (RFC 8032 §5.1.5), point decoding (§5.1.3), the
subgroup check, comb tables and the variable-base multiplication; and the one-shot
``public_key``, ``sign`` and ``verify``, which set up a key on every call.

Split from protocol/ed25519.py because a node runs this code only at boot, when it expands
its keys; afterwards it unloads the module (firmware/boot.py), and the hot path (sign, and
verify with a precomputed table) never needs it. ed25519.py imports it when first needed
and its module ``__getattr__`` forwards to it (``ed25519.verify`` is the function here), so
CPython callers see no difference. The algorithms are described in ed25519.py.
"""

from protocol import const
from protocol.ed25519 import (
    _IDENTITY,
    _L,
    _P,
    SigningKey,
    _add,
    _base_table,
    _comb_mul,
    _dbln,
    _encode,
    _inv,
    _is_buf,
    _pow2_250_1,
    _sqn,
    _verify,
)
from protocol.errors import ProtocolError
from protocol.sha512 import SHA512

# Curve constants (RFC 8032 §5.1) that only key setup needs: d = -121665/121666, 2d,
# sqrt(-1) = 2^((p-1)/4) and B = (x, 4/5) with x even, as an extended point.
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
_D2 = 16295367250680780974490674513165176452449235426866156013048779062215315747161  # 2d
_SQRTM1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960
_B = (_BX, _BY, 1, _BX * _BY % _P)

# The comb geometry of ed25519.py (const() names are not module attributes on MicroPython;
# tests/test_const_copies.py checks the two files agree).
_COMBS = const(2)
_TEETH = const(5)
_SPACING = const(26)
_ENTRIES = const(16)
_ENTRY_BYTES = const(96)
_BATCH = const(4)


def _pow22523(z):
    """z^((p-5)/8) = z^(2^252 - 3), the exponent of the RFC 8032 §5.1.3 square root."""
    t, _ = _pow2_250_1(z)
    return _sqn(t, 2) * z % _P


def _cached(pt):
    p = _P
    x, y, z, t = pt
    return ((y + x) % p, (y - x) % p, 2 * z % p, t * _D2 % p)


def _neg(pt):
    return (-pt[0] % _P, pt[1], pt[2], -pt[3] % _P)


def _is_identity(pt):
    return pt[0] % _P == 0 and (pt[1] - pt[2]) % _P == 0


def _decode(s):
    """RFC 8032 §5.1.3 strict decoding; returns an extended point, or None if invalid."""
    p = _P
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= p:  # step 1: non-canonical y
        return None
    yy = y * y % p
    u = (yy - 1) % p
    v = (_D * yy + 1) % p
    v3 = v * v % p * v % p
    # step 2: candidate root x = u v^3 (u v^7)^((p-5)/8)
    x = u * v3 % p * _pow22523(u * v3 % p * v3 % p * v % p) % p
    vxx = v * x % p * x % p
    if vxx != u:  # step 3
        if vxx != p - u:
            return None  # no square root: not on the curve
        x = x * _SQRTM1 % p
    if x == 0 and sign:  # step 4: "negative zero"
        return None
    if x & 1 != sign:
        x = p - x
    return (x, y, 1, x * y % p)


def _mul_var(k, pt):
    """[k]pt for 0 <= k < 2^253: signed radix-16 digits in [-8, 8), 4 doublings a digit."""
    tab = [_cached(pt)]
    q = _dbln(pt, 1)
    for i in range(7):
        tab.append(_cached(q))
        if i < 6:
            q = _add(q, tab[0])
    kb = k.to_bytes(32, "little")
    digits = bytearray(64)  # digit + 8, so it fits a byte
    carry = 0
    for i in range(64):
        v = ((kb[i >> 1] >> ((i & 1) << 2)) & 15) + carry
        carry = (v + 8) >> 4
        digits[i] = v - (carry << 4) + 8
    acc = _IDENTITY
    started = False
    for i in range(63, -1, -1):
        if started:
            acc = _dbln(acc, 4)
        v = digits[i] - 8
        if v > 0:
            acc = _add(acc, tab[v - 1])
            started = True
        elif v < 0:
            c = tab[-v - 1]
            acc = _add(acc, (c[1], c[0], c[2], -c[3]))
            started = True
    return acc


def _comb_table(pt):
    """Signed-comb table for a point of order L (a bytearray of _COMBS * _ENTRIES points).

    Entry (c, idx) is  P[c][TEETH-1] + sum over t < TEETH-1 of (+-1) P[c][t], the sign
    of P[c][t] given by bit t of idx, where P[c][t] = [2^((c*TEETH + t)*SPACING)] pt. The
    entries with the top tooth negative are negations of these, so they are not stored.
    Entries are stored affine, so a lookup costs no multiplication for 2Z.

    Built at boot, when the heap matters most: entries are generated in Gray-code order
    (each one from the previous by +-2 P[c][t]) and normalized in batches of _BATCH with
    one inversion each (Montgomery's trick), so only a few points are alive at once.
    """
    out = bytearray(_COMBS * _ENTRIES * _ENTRY_BYTES)
    q = pt
    for c in range(_COMBS):
        twice = []  # cached 2 P[c][t] for t < TEETH-1
        acc = _IDENTITY
        for t in range(_TEETH):
            if t < _TEETH - 1:
                acc = _add(acc, _cached(_neg(q)))
                twice.append(_cached(_dbln(q, 1)))
            else:
                e = _add(acc, _cached(q))  # entry 0: top tooth minus all the others
            if c < _COMBS - 1 or t < _TEETH - 1:
                q = _dbln(q, _SPACING)
        acc = None  # type: ignore[assignment]  # free the accumulator early
        batch = []
        for i in range(_ENTRIES):
            idx = i ^ (i >> 1)  # Gray code: one sign flips from entry to entry
            if i:
                t = 0
                while not (i >> t) & 1:
                    t += 1
                d = twice[t]
                if not (idx >> t) & 1:  # the sign of P[t] went + -> -: subtract 2 P[t]
                    d = (d[1], d[0], d[2], -d[3])
                e = _add(e, d)
            batch.append((c * _ENTRIES + idx, e[0], e[1], e[2]))
            if len(batch) == _BATCH:
                _store_affine(out, batch)
                batch = []
    return out


def _store_affine(out, batch):
    """Write (slot, X, Y, Z) points as (y+x, y-x, 2dxy) with one inversion for the batch."""
    p = _P
    prods = []
    acc = 1
    for item in batch:
        acc = acc * item[3] % p
        prods.append(acc)
    inv = _inv(acc)
    for n in range(len(batch) - 1, -1, -1):
        slot, x, y, z = batch[n]
        zi = inv * prods[n - 1] % p if n else inv
        inv = inv * z % p
        x = x * zi % p
        y = y * zi % p
        off = slot * _ENTRY_BYTES
        out[off : off + 32] = ((y + x) % p).to_bytes(32, "little")
        out[off + 32 : off + 64] = ((y - x) % p).to_bytes(32, "little")
        out[off + 64 : off + 96] = (x * y % p * _D2 % p).to_bytes(32, "little")


def _expand(seed):
    """SigningKey's setup (RFC 8032 §5.1.5): (scalar mod L, prefix, public key)."""
    if not _is_buf(seed) or len(seed) != 32:
        raise ProtocolError("ed25519.bad_seed", "seed must be 32 bytes")
    h = SHA512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8  # clear the 3 low bits and bit 255
    a |= 1 << 254  # set bit 254
    a %= _L  # [a]B == [a mod L]B, and S is computed mod L anyway
    return a, h[32:], _encode(_comb_mul(((_base_table(), a),)))


def _verifying_key(public, precompute):
    """VerifyingKey's setup: (public key bytes, -A or None, comb table of -A or None)."""
    if not _is_buf(public) or len(public) != 32:
        raise ProtocolError("ed25519.bad_public_key", "public key must be 32 bytes")
    a = _decode(public)
    if a is None:
        raise ProtocolError("ed25519.bad_public_key", "not a valid point encoding")
    neg = _neg(a)
    _base_table()
    # The comb computes [k mod L](-A); that equals [k](-A) only if L*A = 0. With the table,
    # verification never needs -A itself: the key does not keep it (4 big ints).
    if precompute and _is_identity(_mul_var(_L, a)):
        return bytes(public), None, _comb_table(neg)
    return bytes(public), neg, None


def public_key(seed):
    """The 32-byte public key of a 32-byte seed (RFC 8032 §5.1.5)."""
    return SigningKey(seed).public


def sign(seed, msg):
    """Sign msg with a 32-byte seed; byte-identical to RFC 8032 §5.1.6."""
    return SigningKey(seed).sign(msg)


def verify(public, msg, sig):
    """RFC 8032 §5.1.7 verification; False (never an exception) for any invalid input."""
    if not (_is_buf(public) and _is_buf(msg) and _is_buf(sig)):
        return False
    if len(public) != 32 or len(sig) != 64:
        return False
    if int.from_bytes(sig[32:], "little") >= _L:  # cheap rejection before decoding A
        return False
    a = _decode(public)
    if a is None:
        return False
    return _verify(bytes(public), _neg(a), None, msg, sig)
