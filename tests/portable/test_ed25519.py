"""protocol.ed25519 against RFC 8032 vectors and verification edge cases (both interpreters)."""

from protocol import ed25519
from protocol.errors import ProtocolError
from protocol.sha512 import PureSHA512
from tests.portable.harness import check_cases, load_json, local_vectors, raises


def _unhex(s):
    out = bytearray(len(s) // 2)
    for i in range(len(out)):
        out[i] = int(s[2 * i : 2 * i + 2], 16)
    return bytes(out)


def _fields(case):
    return _unhex(case["public"]), _unhex(case["message"]), _unhex(case["signature"])


def _name(case):
    return case["name"]


def _check_verdict(pk, msg, sig, want):
    """verify() and both VerifyingKey paths must give the same verdict ``want``."""
    assert ed25519.verify(pk, msg, sig) is want
    try:
        keys = (ed25519.VerifyingKey(pk), ed25519.VerifyingKey(pk, precompute=False))
    except ProtocolError as e:
        # only a key that verify() also rejects outright may fail to load
        assert e.reason == "ed25519.bad_public_key" and not want
        return
    for vk in keys:
        assert vk.verify(msg, sig) is want


def test_rfc8032_vectors():
    cases = load_json("ed25519/rfc8032.json")["cases"]
    assert len(cases) >= 20  # the file, not an empty list, is under test

    def check(case):
        pk, msg, sig = _fields(case)
        if case["valid"] and "seed" in case:
            key = ed25519.SigningKey(_unhex(case["seed"]))
            assert key.public == pk
            assert key.sign(msg) == sig
            assert ed25519.sign(_unhex(case["seed"]), msg) == sig
        _check_verdict(pk, msg, sig, case["valid"])

    check_cases("ed25519/rfc8032", cases, check, _name)


def test_edge_vectors():
    # tests/vectors/ed25519_edge.json: speccheck ("Taming the many EdDSAs") + our own cases
    cases = local_vectors("ed25519_edge.json")["cases"]
    assert len(cases) >= 30

    def check(case):
        pk, msg, sig = _fields(case)
        _check_verdict(pk, msg, sig, case["valid"])

    check_cases("ed25519/edge", cases, check, _name)


def _sample():
    key = ed25519.SigningKey(
        _unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    )
    msg = b"stop infusion, chair 3"
    return key, msg, key.sign(msg)


def test_bit_flips_rejected():
    key, msg, sig = _sample()
    vk = ed25519.VerifyingKey(key.public)
    assert vk.verify(msg, sig)

    def flip(buf, bit):
        b = bytearray(buf)
        b[bit >> 3] ^= 1 << (bit & 7)
        return bytes(b)

    # every 5th bit of R and S (all of R, S would be 512 verifications), sign bit included
    cases = [("sig", bit) for bit in range(0, 512, 5)] + [("sig", 255), ("sig", 511)]
    cases += [("msg", bit) for bit in range(0, len(msg) * 8, 17)]
    cases += [("pk", bit) for bit in range(0, 256, 9)] + [("pk", 255)]

    def check(case):
        what, bit = case
        if what == "sig":
            assert not vk.verify(msg, flip(sig, bit))
        elif what == "msg":
            assert not vk.verify(flip(msg, bit), sig)
        else:
            assert not ed25519.verify(flip(key.public, bit), msg, sig)

    check_cases("ed25519/bitflips", cases, check, lambda c: "%s-bit%d" % c)


def test_bad_inputs_return_false():
    key, msg, sig = _sample()
    pk = key.public
    bad = (
        (pk[:31], msg, sig),
        (pk + b"\x00", msg, sig),
        (pk, msg, sig[:63]),
        (pk, msg, sig + b"\x00"),
        (b"", msg, sig),
        (pk, msg, b""),
        (None, msg, sig),
        (pk, None, sig),
        (pk, msg, None),
        ("not bytes" * 4, msg, sig),
        (pk, "stop infusion, chair 3", sig),
        (pk, msg, 12345),
    )

    def check(args):
        assert ed25519.verify(*args) is False

    check_cases("ed25519/bad-inputs", bad, check)
    vk = ed25519.VerifyingKey(pk)
    assert vk.verify(msg, sig[:63]) is False
    assert vk.verify(msg, None) is False
    assert vk.verify("stop infusion, chair 3", sig) is False


def test_buffer_types_accepted():
    key, msg, sig = _sample()
    assert ed25519.verify(bytearray(key.public), memoryview(msg), memoryview(sig))
    assert ed25519.VerifyingKey(memoryview(key.public)).verify(bytearray(msg), bytearray(sig))
    assert key.sign(memoryview(msg)) == sig
    assert key.sign(bytearray(msg)) == sig


def test_key_errors():
    for seed in (b"", b"\x00" * 31, b"\x00" * 33, None, "x" * 32):
        e = raises(ProtocolError, ed25519.SigningKey, seed)
        assert e.reason == "ed25519.bad_seed"
    y2 = b"\x02" + b"\x00" * 31  # y = 2 is not on the curve
    neg_zero = b"\x01" + b"\x00" * 30 + b"\x80"  # identity with the sign bit set
    for pk in (b"\x00" * 31, None, y2, neg_zero):
        e = raises(ProtocolError, ed25519.VerifyingKey, pk)
        assert e.reason == "ed25519.bad_public_key"


def test_public_key_helper_and_key_reuse():
    seed = _unhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
    key = ed25519.SigningKey(seed)
    assert ed25519.public_key(seed) == key.public
    # a cached key signs many messages exactly like fresh expansion does
    for msg in (b"", b"a", b"b" * 130):
        assert key.sign(msg) == ed25519.sign(seed, msg)


def test_prime_order_check_guards_the_comb():
    # The per-key comb computes [k mod L](-A); for a key with a small-order component that
    # differs from [k](-A), so such keys must take the generic path (speccheck-6 is a valid
    # cofactorless signature under a mixed-order key and is checked in test_edge_vectors).
    honest = ed25519.VerifyingKey(_sample()[0].public)
    assert honest._table is not None
    assert honest._neg is None  # with the table, the key keeps no point -A
    cases = local_vectors("ed25519_edge.json")["cases"]
    mixed = [c for c in cases if c["name"] == "speccheck-6"][0]
    generic = ed25519.VerifyingKey(_unhex(mixed["public"]))
    assert generic._table is None and generic._neg is not None


def test_one_shot_functions_reachable_from_the_module():
    # public_key/sign/verify and the setup constants live in protocol/_ed25519_setup.py
    # (boot-only on a node); ed25519's module __getattr__ keeps them where they were.
    from protocol import _ed25519_setup

    assert ed25519.verify is _ed25519_setup.verify
    assert ed25519.sign is _ed25519_setup.sign
    assert ed25519.public_key is _ed25519_setup.public_key
    assert ed25519._D is _ed25519_setup._D


def test_field_and_scalar_internals():
    # addition chains == Fermat / RFC exponent; comb == windowed multiplication
    p = ed25519._P
    assert (ed25519._D * 121666 + 121665) % p == 0  # d = -121665/121666
    assert ed25519._D2 == 2 * ed25519._D % p
    assert ed25519._SQRTM1 * ed25519._SQRTM1 % p == p - 1
    assert ed25519._BY * 5 % p == 4 and ed25519._BX % 2 == 0
    for z in (1, 2, 19, p - 1, 0x123456789ABCDEF << 190, p // 3):
        assert ed25519._inv(z) == pow(z, p - 2, p)
        assert ed25519._pow22523(z) == pow(z, (p - 5) // 8, p)
    base = ed25519._decode(
        _unhex("5866666666666666666666666666666666666666666666666666666666666666")
    )
    assert base is not None and base[0] == ed25519._BX
    tab = ed25519._base_table()
    el = ed25519._L
    for k in (0, 1, 2, 15, 16, 2**252, el - 1, (el * 2) // 3):
        comb = ed25519._encode(ed25519._comb_mul(((tab, k),)))
        assert comb == ed25519._encode(ed25519._mul_var(k, base)), k
    assert ed25519._is_identity(ed25519._mul_var(el, base))
    assert not ed25519._is_identity(ed25519._mul_var(el - 1, base))


def test_pure_sha512_in_signatures():
    # On CPython, Ed25519 normally hashes with hashlib; check the RFC 8032 TEST 1 challenge
    # computed with the pure SHA-512 (what MicroPython uses) gives the same scalar.
    pk = _unhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    sig = _unhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
        "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    h = PureSHA512(sig[:32])
    h.update(pk)
    k = int.from_bytes(h.digest(), "little") % ed25519._L
    assert k == ed25519._challenge(sig[:32], pk, b"")
