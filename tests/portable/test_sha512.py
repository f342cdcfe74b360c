"""protocol.sha512: the pure SHA-512 is tested under both interpreters (FIPS 180-4).

Under CPython ``SHA512`` is hashlib's, so every test here names ``PureSHA512`` explicitly.
"""

from protocol.sha512 import SHA512, PureSHA512, sha512
from tests.portable.harness import check_cases

# FIPS 180-2 Appendix C / NIST CSRC example values for SHA-512.
_NIST = (
    (
        b"abc",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    ),
    (
        b"",
        "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
        "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
    ),
    (
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "204a8fc6dda82f0a0ced7beb8e08a41657c16ef468b228a8279be331a703c335"
        "96fd15c13b1b07f9aa1d3bea57789ca031ad85c7a71dd70354ec631238ca3445",
    ),
    (
        b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
        b"hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
        "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
        "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909",
    ),
)

# Digests of _msg(n), computed with CPython 3.11 hashlib.sha512. The lengths straddle the
# padding limit (111/112: length field fits / spills) and the block edges (127/128/129...).
_LENGTHS = (
    (0, "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"),
    (1, "e45bf5817ddf94aa2f7a407071f0eedc6beb98f768b4cd33d1176d44d1563a45"),
    (111, "68cffa6d0d76f309c9ce0d35280939f8e25990c43b7b086ccdf709be35b07d4d"),
    (112, "d0865c524d1dddf7c23b799c413f5adcd7caefd3f66a9b49750ec81066012c25"),
    (127, "e0b6a20f1c0c88970a9340152cd5a1c1ecf3d3b8de5510274187943807947354"),
    (128, "99b16f17aa0b969a5b8f08f367719d516e330ccd2660b6f0688ec031dbc783de"),
    (129, "a1556e29185778aa5991e34b8884c840d589f0fbb4b8ed590e51e9ac4eb03a00"),
    (239, "18ee83f30261c3c645d52aee6a209105b25bba39d33845ef48984cc238e4f216"),
    (240, "9d60ee60d29ec4fa0b9690c04c1c29413bbe3ed345639182d9d53dcc05926b77"),
    (255, "c2e3bb67012f9eb526202efa59997933f7d3e75e7ded738818bc27d94977f457"),
    (256, "e49c208e41556e859d1a52d14784a061c2d5ae2c8690a5360e9f9344f60861c1"),
    (1000, "00e36fccf193e59697a92b5ab24666ce6326d7fa16bf10832d0991ddc591112e"),
)


def _msg(n):
    m = bytearray(n)
    for i in range(n):
        m[i] = (i * 7 + 3) & 255
    return bytes(m)


def _hex(b):
    return "".join("%02x" % x for x in b)


def test_nist_vectors():
    def check(case):
        msg, want = case
        assert _hex(PureSHA512(msg).digest()) == want
        assert _hex(sha512(msg)) == want
        assert PureSHA512(msg).hexdigest() == want

    check_cases("sha512/nist", _NIST, check, lambda c: "len%d" % len(c[0]))


def test_block_boundaries():
    # the first 32 bytes of each digest are enough to catch any padding or block error
    def check(case):
        n, want = case
        m = _msg(n)
        assert _hex(PureSHA512(m).digest()[:32]) == want
        assert _hex(sha512(m)[:32]) == want

    check_cases("sha512/lengths", _LENGTHS, check, lambda c: "len%d" % c[0])


def test_incremental_chunkings():
    m = _msg(1000)
    want = _LENGTHS[-1][1]

    def check(size):
        h = PureSHA512()
        mv = memoryview(m)
        for i in range(0, len(m), size):
            h.update(mv[i : i + size])
        assert _hex(h.digest()[:32]) == want

    check_cases("sha512/chunked", (1, 7, 111, 112, 127, 128, 129, 500), check, str)


def test_digest_does_not_finalize():
    h = PureSHA512(b"ab")
    h.digest()
    h.update(bytearray(b"c"))
    assert _hex(h.digest()) == _NIST[0][1]
    assert _hex(h.digest()) == _NIST[0][1]  # idempotent
    assert len(h.digest()) == 64 and h.digest_size == 64 and h.block_size == 128


def test_schedule_ring_keeps_no_words():
    # The ring is reused by every block and emptied after each: on MicroPython its 64-bit
    # words are heap big ints, which must not stay alive between hashes (docs/firmware.md).
    from protocol import sha512 as mod

    PureSHA512(_msg(300)).digest()
    assert list(mod._W) == [0] * 16


def test_fallback_selection_and_hashlib_agreement():
    try:
        from hashlib import sha512 as native
    except ImportError:  # MicroPython: the pure code must be what callers get
        assert SHA512 is PureSHA512
        return
    assert SHA512 is native
    for n in range(0, 300):
        m = _msg(n)
        assert PureSHA512(m).digest() == native(m).digest(), n
