"""Test kit for the node core: provisioning files in a temp dir, fake devices and UARTs.

Fakes record what the node asked of them, so tests assert behaviour (the pump was told to
stop; the STP frame went out) without a real serial line. The real drivers are tested on
their own (test_drv_*) and with the node in hil_tests/.
"""

import json

try:
    import os
except ImportError:  # pragma: no cover
    import uos as os  # type: ignore

from firmware import config
from protocol import cbor, cose, schema

NODE_SEED = bytes(range(1, 33))
GATEWAY_SEED = bytes(range(101, 133))
_N = [0]


def tempdir():
    _N[0] += 1
    pid = os.getpid() if hasattr(os, "getpid") else 0
    path = "/tmp/ivgw-node-%d-%d" % (pid, _N[0])
    try:
        os.mkdir(path)
    except OSError:
        for name in os.listdir(path):
            os.remove(path + "/" + name)
    return path


def make_config(local_limits=None, node_overrides=None, node_id="chair-01", **top):
    base = tempdir()
    with open(base + "/node.key", "wb") as f:
        f.write(NODE_SEED)
    with open(base + "/gateway.pub", "wb") as f:
        f.write(cose.Ed25519Signer(GATEWAY_SEED).public)
    data = {
        "format": 1, "node_id": node_id, "site": "north", "chair": "c1",
        "gateway_kid": "gateway",
        "keys": {"node_key": "node.key", "gateway_pub": "gateway.pub"},
        "broker": {"host": "127.0.0.1", "port": 1883},
        "wiring": {"pump": {"driver": "ne1000", "port": "pty:/dev/null"},
                   "oximeter": {"driver": "radical7", "port": "pty:/dev/null"}},
        "node": node_overrides or {},
    }
    if local_limits is not None:
        data["local_limits"] = local_limits
    for k in top:
        data[k] = top[k]
    with open(base + "/config.json", "w") as f:
        json.dump(data, f)
    return config.load(base)


class FakeUart:
    def __init__(self):
        self.written = []
        self.incoming = []

    def read(self):
        return self.incoming.pop(0) if self.incoming else None

    def write(self, data):
        self.written.append(bytes(data))

    def close(self):
        pass


class FakePump:
    """Duck-typed NE-1000 driver: state is whatever the test sets."""

    def __init__(self):
        self.state = "stopped"
        self.rate_ul_h = 0
        self.infused_ul = 0
        self.alarm = None
        self.last_reply_ms = 0
        self.frames_bad = 0
        self.calls = []
        self.stop_pending = False
        self._out = []
        self.is_online = True

    def feed(self, data, now):
        pass

    def poll(self, now):
        self.last_reply_ms = now
        return self._out.pop(0) if self._out else None

    def online(self, now):
        return self.is_online

    def pending(self):
        return 0

    def _q(self, name, *args):
        self.calls.append((name,) + args)
        return True

    def set_diameter(self, v):
        return self._q("dia", v)

    def set_direction_infuse(self):
        return self._q("dir")

    def set_rate(self, v):
        self._q("rate", v)
        return v

    def set_volume(self, v):
        self._q("vol", v)
        return v

    def clear_volumes(self):
        return self._q("clear")

    def clear_alarm(self):
        self.alarm = None

    def run(self):
        self.state = "infusing"
        return self._q("run")

    def stop(self):
        self.calls.append(("stop",))
        self.stop_pending = True
        self.state = "stopped"
        self._out.append(b"\x02STP\x03")


class FakeOximeter:
    def __init__(self):
        self.vals = {}
        self.frames_bad = 0

    def feed(self, data, now):
        pass

    def poll(self, now):
        return None

    def online(self, now):
        return True

    def values(self, now, max_age_ms=None):
        return self.vals


class Gateway:
    """Signs commands the way the gateway does (cose + schema), with its own sequence."""

    def __init__(self, epoch=1):
        self.signer = cose.Ed25519Signer(GATEWAY_SEED)
        self.epoch = epoch
        self.seq = 0

    def command(self, target, kind, args, ref_boot, ref_seq, seq=None, kid=b"gateway"):
        if seq is None:
            self.seq += 1
            seq = self.seq
        msg = schema.make_command(target, self.epoch, seq, 0, kind, args, ref_boot, ref_seq)
        return cose.encode(cbor.dumps(msg), self.signer, kid)


def decode_outbox(node):
    """Drain the node's outbox into decoded, schema-checked messages (verifying signatures)."""
    verifier = cose.Ed25519Verifier(cose.Ed25519Signer(NODE_SEED).public)
    out = []
    while True:
        head = node.outbox.peek()
        if head is None:
            return out
        msg = cose.verify(head[1], lambda kid: verifier)
        out.append(schema.validate(cbor.loads(msg.payload)))
        node.outbox.pop()
