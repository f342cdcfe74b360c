"""Micro-benchmark of protocol.ed25519 / protocol.sha512 (prints figures; not a test).

Run from the repository root under either interpreter:
    MICROPYPATH=. .venv/bin/micropython bench/bench_ed25519.py
    .venv/bin/python bench/bench_ed25519.py
    .venv/bin/python bench/bench_ed25519.py --minheap   # bisects micropython -X heapsize

Compiling this script and protocol/ from source needs more heap than running them: under
-X heapsize=64k use mpy-cross output (which is what --minheap does).

Times are means over repeated calls on this machine; quote ratios, not absolutes (a
32-bit board is expected to be 50-200x slower than the MicroPython unix port).

Heap figures (MicroPython only): "resident" is gc.mem_alloc() growth after a collect;
"headroom" is the smallest free heap (after a collect) with which one operation still
completes, found by filling the rest of the heap with ballast and bisecting. Headroom is
the number that matters on a board: it includes garbage the GC has to reclaim mid-way
and fragmentation, not just live objects at one instant. The ballast leaves the free heap
in pieces, so an operation needing one large block (a 3 KB table) reads high; --minheap
gives the plain answer: the smallest -X heapsize in which a node-like script (import;
SigningKey + VerifyingKey; 3 x sign + verify) completes.
"""

import gc
import sys
import time

try:
    _tick = time.ticks_us
    _diff = time.ticks_diff
except AttributeError:  # CPython

    def _tick():
        return int(time.perf_counter() * 1000000)

    def _diff(a, b):
        return a - b


sys.path.insert(0, ".")

_MP = sys.implementation.name == "micropython"


def timed(label, fn, n):
    fn()  # warm-up (and lazy tables)
    t = _tick()
    for _ in range(n):
        fn()
    us = _diff(_tick(), t) / n
    print("%-34s %9.1f us" % (label, us))
    return us


def _fits(fn, room):
    """Run fn() with about `room` bytes of heap free; return the free bytes, or None."""
    gc.collect()
    ballast = None  # a chain of 2-tuples: no list to grow (and fail) while filling
    for size in (4096, 1024, 256, 64, 16):
        while gc.mem_free() > room + size + 64:
            try:
                ballast = (ballast, bytearray(size))
            except MemoryError:
                break
    free = gc.mem_free()
    try:
        fn()
    except MemoryError:
        free = None
    ballast = None
    gc.collect()
    return free


def headroom(fn):
    """Smallest free heap (bytes, within ~128) with which fn() completes, or None."""
    lo, hi = 0, gc.mem_free() - 1024
    best = _fits(fn, hi)
    if best is None:
        return None
    while hi - lo > 128:
        mid = (lo + hi) // 2
        free = _fits(fn, mid)
        if free is None:
            lo = mid
        else:
            hi = mid
            best = min(best, free)
    return best


def main():
    gc.collect()
    m0 = gc.mem_alloc() if _MP else 0
    from protocol import ed25519, sha512

    gc.collect()
    m1 = gc.mem_alloc() if _MP else 0

    print("interpreter: %s %s" % (sys.implementation.name, sys.version.split()[0]))
    n = 20 if _MP else 200
    block = bytes(128 * 8)
    us = timed("PureSHA512 8 blocks (+1 pad)", lambda: sha512.PureSHA512(block).digest(), n)
    print("%-34s %9.1f us" % ("  per block", us / 9))

    seed = bytes(range(32))
    msg = bytes(200)  # a telemetry packet's Sig_structure is about this size
    t = _tick()
    sk = ed25519.SigningKey(seed)
    print("%-34s %9.1f us" % ("SigningKey() first (+B table)", _diff(_tick(), t)))
    timed("SigningKey() (key expansion)", lambda: ed25519.SigningKey(seed), n)
    gc.collect()
    m2 = gc.mem_alloc() if _MP else 0
    sig = sk.sign(msg)
    timed("sign 200 B", lambda: sk.sign(msg), n)
    timed("verify 200 B (any key)", lambda: ed25519.verify(sk.public, msg, sig), n)
    timed("VerifyingKey() (check + A table)", lambda: ed25519.VerifyingKey(sk.public), n)
    vk = ed25519.VerifyingKey(sk.public)
    timed("VerifyingKey.verify 200 B", lambda: vk.verify(msg, sig), n)
    assert ed25519.verify(sk.public, msg, sig) and vk.verify(msg, sig)
    print("comb table bytes: %d per point (B shared, one per VerifyingKey)" % len(vk._table))
    gc.collect()
    m3 = gc.mem_alloc() if _MP else 0

    if _MP:
        print(
            "heap: imports %d B, SigningKey + B table %d B, VerifyingKey %d B"
            % (m1 - m0, m2 - m1, m3 - m2)
        )
        print("heap after setup: %d B used, %d B free" % (gc.mem_alloc(), gc.mem_free()))
        base = ed25519._decode(ed25519._encode((ed25519._BX, ed25519._BY, 1, 0)))
        for label, fn in (
            ("(nothing: method's own floor)", lambda: None),
            ("(one 3072-byte bytearray)", lambda: bytearray(3072)),
            ("sign 200 B", lambda: sk.sign(msg)),
            ("verify 200 B (any key)", lambda: ed25519.verify(sk.public, msg, sig)),
            ("VerifyingKey.verify 200 B", lambda: vk.verify(msg, sig)),
            ("sha512 200 B", lambda: sha512.sha512(msg)),
            ("SigningKey() (B table cached)", lambda: ed25519.SigningKey(seed)),
            ("VerifyingKey() (builds A table)", lambda: ed25519.VerifyingKey(sk.public)),
            ("B table build (first use)", lambda: ed25519._comb_table(base)),
        ):
            print("%-34s %9s B headroom" % (label, headroom(fn)))
    else:
        try:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        except ImportError:
            return
        k = Ed25519PrivateKey.from_private_bytes(seed)
        pub = k.public_key()
        timed("cryptography sign 200 B", lambda: k.sign(msg), n * 10)
        timed("cryptography verify 200 B", lambda: pub.verify(sig, msg), n * 10)


_NODE_LIKE = """
import sys
from protocol import ed25519
stage = sys.argv[1]
if stage != "import":
    key = ed25519.SigningKey(b"\\x01" * 32)
    vk = ed25519.VerifyingKey(key.public)
    if stage == "run":
        msg = b"x" * 200
        for _ in range(3):
            sig = key.sign(msg)
            assert vk.verify(msg, sig) and ed25519.verify(key.public, msg, sig)
print("ok")
"""


def minheap():
    """CPython driver: smallest micropython -X heapsize (KiB) for each stage."""
    import os
    import shutil
    import subprocess
    import tempfile

    root = os.getcwd()
    bindir = os.path.dirname(sys.executable)
    mp = os.path.join(bindir, "micropython")
    with tempfile.TemporaryDirectory() as tmp:
        os.mkdir(os.path.join(tmp, "protocol"))
        for name in ("__init__", "errors", "sha512", "ed25519"):
            src = os.path.join(root, "protocol", name + ".py")
            dst = os.path.join(tmp, "protocol", name + ".mpy")
            subprocess.run([os.path.join(bindir, "mpy-cross"), "-o", dst, src], check=True)
        script = os.path.join(tmp, "node_like.py")
        with open(script, "w") as f:
            f.write(_NODE_LIKE)
        src_script = os.path.join(tmp, "src", "node_like.py")
        os.mkdir(os.path.dirname(src_script))
        shutil.copy(script, src_script)

        def ok(path, kib, stage):
            env = dict(os.environ, MICROPYPATH=root)
            cmd = [mp, "-X", "heapsize=%dk" % kib, path, stage]
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            return r.stdout.strip() == "ok"

        for label, path in ((".mpy", script), ("source", src_script)):
            for stage in ("import", "keys", "run"):
                lo, hi = 4, 160
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if ok(path, mid, stage):
                        hi = mid
                    else:
                        lo = mid
                print("min heap %-6s %-6s %4d KiB" % (label, stage, hi))


if "--minheap" in sys.argv:
    minheap()
else:
    main()
