"""``ivgw init``, ``provision``, ``keys``, ``broker-config`` and ``flash`` through the CLI.

The bundle is checked with the node's own loader (firmware/config.py) and a packet signed
with the bundle's key is checked with the gateway's own verifier, so "the node can boot
from it and the gateway accepts what it signs" is what is tested, not file contents alone.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from firmware import config as node_config
from gateway import certs
from gateway.audit import iter_records
from gateway.cli import app
from gateway.cli.provision import fingerprint
from gateway.cose_keys import EdDSASigner
from gateway.db import open_db
from gateway.store import Store
from gateway.verify import PacketVerifier, Rejected, Verified
from protocol import cbor, cose, schema, topics

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Gw:
    root: Path
    cfg: Path
    data: Path

    def run(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        r = CliRunner(env={"COLUMNS": "250", **(env or {})}).invoke(
            app, [*args, "--config", str(self.cfg)]
        )
        assert "Traceback" not in r.output, r.output
        return r.exit_code, r.stdout, r.stderr

    def ok(self, *args: str, env: dict[str, str] | None = None) -> str:
        code, out, err = self.run(*args, env=env)
        assert code == 0, out + err
        return out

    def fails(
        self,
        code: int,
        *args: str,
        needles: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> str:
        got, out, err = self.run(*args, env=env)
        assert got == code, out + err
        errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1, err
        for n in needles:
            assert n in errors[0], errors[0]
        return errors[0]

    def store(self) -> tuple[sqlite3.Connection, Store]:
        conn = open_db(self.data / "ivgw.sqlite3", readonly=True)
        return conn, Store(conn)

    def nodes(self) -> dict[str, tuple]:
        conn, store = self.store()
        try:
            return {
                n.node_id: (n.chair_id, n.key_version, n.public_key, n.revoked_at)
                for n in store.nodes()
            }
        finally:
            conn.close()

    def audit(self, kind: str) -> list:
        conn = open_db(self.data / "ivgw.sqlite3", readonly=True)
        try:
            return list(iter_records(conn, kind=kind))
        finally:
            conn.close()

    def bundle(self, node: str) -> Path:
        return self.data / "bundles" / node


def _make(tmp_path: Path) -> Gw:
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[gateway]\ndata_dir = "data"\n')
    return Gw(tmp_path, cfg, tmp_path / "data")


@pytest.fixture
def bare(tmp_path: Path) -> Gw:
    return _make(tmp_path)


@pytest.fixture
def gw(tmp_path: Path) -> Gw:
    g = _make(tmp_path)
    g.ok("init")
    return g


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


# --- init -------------------------------------------------------------------------------------


def test_init_creates_the_key_and_database_and_prints_the_public_key(bare: Gw) -> None:
    info = json.loads(bare.ok("init", "--json"))
    key = bare.data / "gateway.key"
    assert _mode(key) == 0o600 and len(key.read_bytes()) == 32
    public = Ed25519PrivateKey.from_private_bytes(key.read_bytes()).public_key().public_bytes_raw()
    assert info["public_key"] == public.hex() and info["kid"] == "gateway"
    assert info["created"] is True and (bare.data / "ivgw.sqlite3").is_file()
    again = json.loads(bare.ok("init", "--json"))
    assert again["created"] is False and again["public_key"] == public.hex()
    assert again["audit_chain"] == info["audit_chain"]
    assert public.hex() in bare.ok("init")


def test_init_refuses_a_key_readable_by_others(bare: Gw) -> None:
    bare.data.mkdir()
    key = bare.data / "gateway.key"
    key.write_bytes(bytes(32))
    key.chmod(0o644)
    bare.fails(5, "init", needles=("readable by other users", "chmod 600"))


def test_commands_need_init_first(bare: Gw) -> None:
    bare.fails(
        5,
        "provision",
        "n1",
        "--site",
        "s",
        "--chair",
        "c",
        needles=("gateway key not found", "ivgw init"),
    )
    bare.fails(5, "keys", "list", needles=("ivgw init",))


# --- provision --------------------------------------------------------------------------------


def _signed_telemetry(bundle: Path, node: str) -> bytes:
    seed = (bundle / "node.key").read_bytes()
    msg = schema.envelope(schema.TELEMETRY, node, 1, 0, 1000)
    msg[schema.T_VITALS] = {}
    msg[schema.T_PUMP] = {schema.P_STATE: schema.PUMP_STOPPED, schema.P_T: 900}
    msg[schema.T_NODE] = {schema.N_PERMIT_MS: 0}
    return cose.encode(cbor.dumps(msg), EdDSASigner(seed), node.encode())


def _verifier(gw: Gw) -> PacketVerifier:
    conn, store = gw.store()
    try:
        return PacketVerifier({n.node_id: n.key for n in store.nodes()})
    finally:
        conn.close()


def test_provision_writes_a_bundle_the_node_boots_from_and_the_gateway_trusts(gw: Gw) -> None:
    res = json.loads(
        gw.ok(
            "provision",
            "chair-01",
            "--site",
            "north",
            "--chair",
            "c1",
            "--operator",
            "bme-1",
            "--json",
        )
    )
    b = gw.bundle("chair-01")
    assert Path(res["bundle"]) == b and res["tls"] is False
    assert sorted(p.name for p in b.iterdir()) == ["config.json", "gateway.pub", "node.key"]
    assert _mode(b / "node.key") == 0o600 and _mode(b) == 0o700
    cfg = node_config.load(str(b))
    assert (cfg.node_id, cfg.site, cfg.chair) == ("chair-01", "north", "c1")
    assert cfg.gateway_kid == b"gateway" and cfg.tls is None
    assert (cfg.broker_host, cfg.broker_port) == ("127.0.0.1", 1883)
    assert cfg.wiring["pump"] == {"driver": "ne1000", "port": "uart:1"}
    assert cfg.local_limits  # the EXAMPLE backstop limits
    seed = (gw.data / "gateway.key").read_bytes()
    gw_pub = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    assert cfg.gateway_pub == gw_pub
    # registered with the bundle's public key, audited in the same transaction
    node_pub = Ed25519PrivateKey.from_private_bytes(cfg.node_key).public_key().public_bytes_raw()
    chair, version, public, revoked = gw.nodes()["chair-01"]
    assert (chair, version, public, revoked) == ("north/c1", 1, node_pub, None)
    (rec,) = gw.audit("key.registered")
    assert rec.actor == "user:bme-1" and rec.subject == "chair-01" and rec.chair == "north/c1"
    assert rec.data["fingerprint"] == fingerprint(node_pub) == res["fingerprint"]
    # what the node signs with the bundle key, the gateway accepts
    topic = topics.uplink("chair-01", "telemetry")
    assert isinstance(_verifier(gw).verify(topic, _signed_telemetry(b, "chair-01")), Verified)


def test_provision_options_shape_the_config(gw: Gw, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere"
    gw.ok(
        "provision",
        "chair-02",
        "--site",
        "north",
        "--chair",
        "c2",
        "--broker-host",
        "gw.clinic.local",
        "--broker-port",
        "11883",
        "--pump-port",
        "tcp:10.0.0.9:4001",
        "--oximeter-port",
        "none",
        "--monitor-port",
        "uart:2",
        "--no-local-limits",
        "--out",
        str(out),
    )
    cfg = node_config.load(str(out))
    assert (cfg.broker_host, cfg.broker_port) == ("gw.clinic.local", 11883)
    assert sorted(cfg.wiring) == ["monitor", "pump"]
    assert cfg.wiring["monitor"]["driver"] == "datex-s5"
    assert cfg.local_limits == {}
    assert not gw.bundle("chair-02").exists()


def test_provision_errors(gw: Gw, tmp_path: Path) -> None:
    gw.ok("provision", "chair-01", "--site", "north", "--chair", "c1")
    gw.fails(
        1,
        "provision",
        "chair-01",
        "--site",
        "north",
        "--chair",
        "c5",
        needles=("already registered", "ivgw keys rotate chair-01"),
    )
    gw.fails(
        1,
        "provision",
        "chair-09",
        "--site",
        "north",
        "--chair",
        "c1",
        needles=("chair north/c1 is already taken by node chair-01",),
    )
    gw.fails(
        2,
        "provision",
        "bad/id",
        "--site",
        "north",
        "--chair",
        "c2",
        needles=("node id", "A-Z a-z 0-9"),
    )
    gw.fails(2, "provision", "chair-03", "--site", "north west", "--chair", "c2", needles=("site",))
    gw.fails(2, "provision", "x" * 33, "--site", "north", "--chair", "c2")
    for reserved in ("ivgw-gateway", "central-1", "IVGW-x"):
        gw.fails(
            2, "provision", reserved, "--site", "north", "--chair", "c2", needles=("reserved",)
        )
    gw.fails(
        2,
        "provision",
        "chair-03",
        "--site",
        "north",
        "--chair",
        "c3",
        "--pump-port",
        "/dev/ttyUSB0",
        needles=("--pump-port", "uart:N"),
    )
    gw.fails(
        5,
        "provision",
        "chair-03",
        "--site",
        "north",
        "--chair",
        "c3",
        "--tls",
        needles=("broker CA", "ivgw broker-config"),
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    gw.fails(
        5,
        "provision",
        "chair-03",
        "--site",
        "north",
        "--chair",
        "c3",
        "--out",
        str(blocker / "bundle"),
        needles=("cannot create the bundle folder",),
    )
    gw.fails(
        1,
        "provision",
        "chair-03",
        "--site",
        "north",
        "--chair",
        "c3",
        "--out",
        str(gw.bundle("chair-01")),
        needles=("holds the bundle of node chair-01",),
    )
    # nothing was registered by the refused attempts, and no half-written files remain
    assert sorted(gw.nodes()) == ["chair-01"]
    assert len(gw.audit("key.registered")) == 1
    assert sorted(p.name for p in gw.bundle("chair-01").iterdir()) == [
        "config.json",
        "gateway.pub",
        "node.key",
    ]


class FakeGateway:
    """The control socket of a running gateway: answers reload_keys, records requests."""

    def __init__(self, path: Path):
        self.requests: list[dict] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.sock.settimeout(0.05)
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(json.loads(data))
                conn.sendall(b'{"ok": true, "result": {"nodes": 1}}\n')

    def close(self) -> None:
        self.stop.set()
        self.t.join(5)
        self.sock.close()


@pytest.fixture
def running(gw: Gw) -> Iterator[FakeGateway]:
    fake = FakeGateway(gw.data / "ivgw.sock")
    yield fake
    fake.close()


def test_key_changes_ask_a_running_gateway_to_reload(gw: Gw, running: FakeGateway) -> None:
    out = gw.ok("provision", "chair-01", "--site", "north", "--chair", "c1")
    assert "reloaded its keys" in out
    gw.ok("keys", "rotate", "chair-01")
    gw.ok("keys", "revoke", "chair-01", "--reason", "test")
    assert running.requests == [{"op": "reload_keys"}] * 3


def test_without_a_running_gateway_the_change_waits_for_its_start(gw: Gw) -> None:
    out = gw.ok("provision", "chair-01", "--site", "north", "--chair", "c1")
    assert "not running" in out and "loads the keys when it starts" in out


# --- keys ---------------------------------------------------------------------------------------


def test_rotate_replaces_the_key_and_the_old_one_stops_working(gw: Gw) -> None:
    gw.ok("provision", "chair-01", "--site", "north", "--chair", "c1")
    b = gw.bundle("chair-01")
    topic = topics.uplink("chair-01", "telemetry")
    old_packet = _signed_telemetry(b, "chair-01")
    old_key = (b / "node.key").read_bytes()
    res = json.loads(gw.ok("keys", "rotate", "chair-01", "--json"))
    assert res["key_version"] == 2 and (b / "node.key").read_bytes() != old_key
    assert _mode(b / "node.key") == 0o600 and not list(b.glob("*.new"))
    v = _verifier(gw)
    assert isinstance(v.verify(topic, _signed_telemetry(b, "chair-01")), Verified)
    bad = v.verify(topic, old_packet)
    assert isinstance(bad, Rejected) and bad.reason.startswith("cose.")
    (rec,) = gw.audit("key.rotated")
    assert rec.data["previous_fingerprint"] == res["previous"]
    assert rec.data["fingerprint"] == res["fingerprint"] != res["previous"]


def test_revoke_rejects_the_nodes_packets_and_rotate_readmits_it(gw: Gw) -> None:
    gw.ok("provision", "chair-01", "--site", "north", "--chair", "c1")
    b = gw.bundle("chair-01")
    topic = topics.uplink("chair-01", "telemetry")
    out = gw.ok("keys", "revoke", "chair-01", "--reason", "board lost", "--operator", "bme-2")
    assert "revoked node chair-01" in out
    bad = _verifier(gw).verify(topic, _signed_telemetry(b, "chair-01"))
    assert isinstance(bad, Rejected) and bad.reason == "node.revoked"
    (rec,) = gw.audit("key.revoked")
    assert rec.actor == "user:bme-2" and rec.data["reason"] == "board lost"
    assert "already revoked" in gw.ok("keys", "revoke", "chair-01", "--reason", "again")
    assert len(gw.audit("key.revoked")) == 1
    rows = json.loads(gw.ok("keys", "list", "--json"))
    assert rows[0]["node"] == "chair-01" and rows[0]["revoked"] is not None
    res = json.loads(gw.ok("keys", "rotate", "chair-01", "--json"))
    assert res["readmitted"] is True
    assert isinstance(_verifier(gw).verify(topic, _signed_telemetry(b, "chair-01")), Verified)


def test_keys_errors(gw: Gw, tmp_path: Path) -> None:
    gw.fails(3, "keys", "rotate", "nobody", needles=("unknown node 'nobody'",))
    gw.fails(3, "keys", "revoke", "nobody", "--reason", "x", needles=("unknown node",))
    gw.ok("provision", "chair-01", "--site", "north", "--chair", "c1")
    gw.fails(2, "keys", "revoke", "chair-01", "--reason", " ", needles=("--reason",))
    gw.fails(
        3,
        "keys",
        "rotate",
        "chair-01",
        "--bundle",
        str(tmp_path / "none"),
        needles=("no bundle at",),
    )
    gw.ok("provision", "chair-02", "--site", "north", "--chair", "c2")
    gw.fails(
        1,
        "keys",
        "rotate",
        "chair-01",
        "--bundle",
        str(gw.bundle("chair-02")),
        needles=("holds the bundle of node chair-02",),
    )
    assert [r["key_version"] for r in json.loads(gw.ok("keys", "list", "--json"))] == [1, 1]
    assert "chair-01" in gw.ok("keys", "list")


# --- broker-config and TLS bundles ---------------------------------------------------------


def _issued_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem)
    ca = x509.load_pem_x509_certificate(ca_pem)
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    return True


def test_broker_config_writes_pki_config_and_acl(gw: Gw, tmp_path: Path) -> None:
    gw.ok("provision", "chair-01", "--site", "north", "--chair", "c1", "--no-tls")
    gw.ok("provision", "chair-02", "--site", "north", "--chair", "c2", "--no-tls")
    gw.ok("keys", "revoke", "chair-02", "--reason", "lost")
    out = tmp_path / "broker"
    res = json.loads(
        gw.ok(
            "broker-config",
            "--out",
            str(out),
            "--host",
            "gw.clinic.local",
            "--host",
            "10.1.2.3",
            "--port",
            "18883",
            "--central",
            "central-1",
            "--central",
            "central-nurses",
            "--json",
        )
    )
    pki = gw.data / "pki"
    assert _mode(pki / "ca.key") == 0o600
    ca_pem = (out / "ca.crt").read_bytes()
    assert ca_pem == (pki / "ca.crt").read_bytes()
    for cn in ("ivgw-gateway", "central-1", "central-nurses", "chair-01"):
        crt = (out / "clients" / (cn + ".crt")).read_bytes()
        assert certs.common_name(crt) == cn and _issued_by(crt, ca_pem)
        assert _mode(out / "clients" / (cn + ".key")) == 0o600
    assert not (out / "clients" / "chair-02.crt").exists()  # revoked: no certificate
    server = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"gw.clinic.local", "localhost", certs.SERVER_CN} <= set(
        san.get_values_for_type(x509.DNSName)
    )
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {"10.1.2.3", "127.0.0.1"}
    conf = (out / "mosquitto.conf").read_text()
    for line in (
        "listener 18883",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "allow_anonymous false",
        "persistence true",
        "max_queued_messages 100000",
        "max_inflight_messages 4000",
        "acl_file %s/acl" % out.resolve(),
    ):
        assert line in conf.splitlines(), line
    acl = (out / "acl").read_text().splitlines()
    assert "pattern write ivgw/v1/node/%u/up/+" in acl
    assert "pattern read ivgw/v1/node/%u/down/cmd" in acl
    gw_rules = acl[acl.index("user ivgw-gateway") + 1 :]
    assert gw_rules[0] == "topic deny ivgw/v1/node/ivgw-gateway/#"
    central = acl[acl.index("user central-nurses") + 1 :]
    assert central[:2] == ["topic deny ivgw/v1/node/#", "topic read ivgw/v1/out/#"]
    assert acl[acl.index("user chair-02") + 1] == "topic deny #"
    assert res["revoked"] == ["chair-02"] and res["nodes"] == ["chair-01"]
    assert "tls_cert" in res["gateway_config"]
    # a second run keeps what is still valid; --renew issues everything again
    again = json.loads(
        gw.ok(
            "broker-config",
            "--out",
            str(out),
            "--host",
            "gw.clinic.local",
            "--host",
            "10.1.2.3",
            "--json",
        )
    )
    status = {Path(f["file"]).name: f["status"] for f in again["files"]}
    assert status["server.crt"] == status["ivgw-gateway.crt"] == status["ca.crt"] == "kept"
    moved = json.loads(gw.ok("broker-config", "--out", str(out), "--host", "other.local", "--json"))
    assert {Path(f["file"]).name: f["status"] for f in moved["files"]}["server.crt"] == "renewed"
    renewed = json.loads(
        gw.ok("broker-config", "--out", str(out), "--host", "other.local", "--renew", "--json")
    )
    assert {
        f["status"]
        for f in renewed["files"]
        if f["file"].endswith(".crt") and not f["file"].endswith("ca.crt")
    } == {"renewed"}


def test_broker_config_errors(gw: Gw, tmp_path: Path) -> None:
    gw.fails(2, "broker-config", "--central", "nurses", needles=("central-",))
    gw.fails(2, "broker-config", "--central", "central/1")
    gw.fails(2, "broker-config", "--host", "two words", needles=("--host",))
    blocker = tmp_path / "f"
    blocker.write_text("")
    gw.fails(
        5,
        "broker-config",
        "--out",
        str(blocker / "broker"),
        needles=("cannot write the broker files",),
    )


def test_tls_bundle_carries_a_client_certificate_for_the_node(gw: Gw) -> None:
    gw.ok("broker-config", "--host", "gw.clinic.local")
    res = json.loads(
        gw.ok(
            "provision",
            "chair-01",
            "--site",
            "north",
            "--chair",
            "c1",
            "--broker-host",
            "gw.clinic.local",
            "--json",
        )
    )
    assert res["tls"] is True and res["broker"] == "gw.clinic.local:8883"  # on by default
    b = gw.bundle("chair-01")
    assert _mode(b / "node-tls.key") == 0o600
    cfg = node_config.load(str(b))
    assert cfg.tls is not None and cfg.tls["server_hostname"] == "gw.clinic.local"
    crt = (b / "node.crt").read_bytes()
    assert certs.common_name(crt) == "chair-01"
    assert _issued_by(crt, (b / "ca.crt").read_bytes())
    for name in ("node.crt", "node-tls.key", "ca.crt"):  # one PEM block each (the node reads one)
        assert (b / name).read_bytes().count(b"-----BEGIN") == 1
    # an IP address for the broker: the node checks the broker's fixed certificate name
    gw.ok("provision", "chair-02", "--site", "north", "--chair", "c2", "--broker-host", "10.1.2.3")
    cfg2 = node_config.load(str(gw.bundle("chair-02")))
    assert cfg2.tls is not None and cfg2.tls["server_hostname"] == certs.SERVER_CN
    # --no-tls overrides; rotate --tls adds TLS to such a bundle later
    gw.ok("provision", "chair-03", "--site", "north", "--chair", "c3", "--no-tls")
    assert node_config.load(str(gw.bundle("chair-03"))).tls is None
    gw.ok("keys", "rotate", "chair-03", "--tls", "--broker-port", "8883")
    cfg3 = node_config.load(str(gw.bundle("chair-03")))
    assert cfg3.tls is not None and cfg3.broker_port == 8883
    old = (b / "node.crt").read_bytes()
    gw.ok("keys", "rotate", "chair-01")
    assert (b / "node.crt").read_bytes() != old  # a TLS bundle gets a new TLS key too


# --- flash ------------------------------------------------------------------------------------

FAKE_MPREMOTE = """\
#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
mode = os.environ.get("FAKE_MODE", "")
if mode == "no-board":
    sys.stderr.write("mpremote: failed to access " + args[1] + " (it may be in use)\\n")
    sys.exit(1)
board = os.environ["FAKE_BOARD"]
if args[2:4] == ["fs", "mkdir"]:
    path = os.path.join(board, args[4].lstrip(":"))
    if os.path.exists(path):
        sys.stderr.write("mpremote: mkdir: File exists.\\n")
        sys.exit(1)
    os.makedirs(path)
elif args[2:4] == ["fs", "cp"]:
    if mode == "full" and args[5].endswith(".key"):
        sys.stderr.write("mpremote: cp: No space left on device.\\n")
        sys.exit(1)
    with open(args[4], "rb") as src, open(os.path.join(board, args[5].lstrip(":")), "wb") as d:
        d.write(src.read())
"""


@dataclass
class Board:
    env: dict[str, str]
    log: Path
    dir: Path
    port: str
    build: Path

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mpy")


@pytest.fixture
def board(tmp_path: Path, build_dir: Path) -> Board:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "mpremote"
    exe.write_text(FAKE_MPREMOTE.format(python=sys.executable))
    exe.chmod(0o755)
    port = tmp_path / "ttyACM0"  # stands for the board's serial device
    port.write_text("")
    boarddir = tmp_path / "board"
    boarddir.mkdir()
    log = tmp_path / "mpremote.log"
    env = {
        "PATH": "%s:%s" % (bindir, os.environ["PATH"]),
        "FAKE_LOG": str(log),
        "FAKE_BOARD": str(boarddir),
    }
    return Board(env, log, boarddir, str(port), build_dir)


def test_flash_copies_firmware_bundle_and_main_to_the_board(gw: Gw, board: Board) -> None:
    gw.ok("provision", "chair-01", "--site", "north", "--chair", "c1")
    (board.dir / "firmware").mkdir()  # left from an earlier flash: "exists" is fine
    out = gw.ok(
        "flash", board.port, "--node", "chair-01", "--build-dir", str(board.build), env=board.env
    )
    assert "flashed node chair-01" in out
    calls = board.calls()
    assert all(c[:2] == ["connect", board.port] for c in calls)
    assert calls[-1][2:] == ["reset"]
    copied = {c[5] for c in calls if c[2:4] == ["fs", "cp"]}
    mpy = {":" + p.relative_to(board.build).as_posix() for p in board.build.rglob("*.mpy")}
    assert ":firmware/main.mpy" in mpy and ":protocol/cose.mpy" in mpy
    assert copied == mpy | {":config.json", ":node.key", ":gateway.pub", ":main.py"}
    # the board holds a bundle the node's loader accepts, and a main.py that runs the node
    loaded = node_config.load(str(board.dir))
    assert loaded.node_id == "chair-01"
    assert (board.dir / "node.key").read_bytes() == (
        gw.bundle("chair-01") / "node.key"
    ).read_bytes()
    main = (board.dir / "main.py").read_text()
    assert "from firmware.main import main" in main
    # the compiled tree imports in MicroPython (the unix port stands in for the board)
    r = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "micropython"),
            "-c",
            "import firmware.main, firmware.node; print('IMPORTED')",
        ],
        cwd=str(board.dir),  # sys.path starts with the cwd: not the source tree
        env=dict(os.environ, MICROPYPATH=str(board.dir) + ":.frozen"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "IMPORTED" in r.stdout, r.stdout + r.stderr


def test_flash_source_lines_gives_tracebacks_with_line_numbers(gw: Gw, board: Board) -> None:
    """The shipped build has no source-line tables (heap); --source-lines is the debug build."""
    gw.ok("provision", "chair-01", "--site", "north", "--chair", "c1")
    probe = "import firmware.permit as p; p.Permit(1000).grant(1, 0, 1000, None)"

    def traceback_line() -> str:
        r = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "micropython"), "-c", probe],
            cwd=str(board.dir),  # not the source tree: only the flashed .mpy files
            env=dict(os.environ, MICROPYPATH=str(board.dir) + ":.frozen"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if "in grant" in ln]
        assert lines, r.stdout + r.stderr
        return lines[-1]

    out = gw.ok("flash", board.port, "--node", "chair-01", "--build-dir", str(board.build),
                "--source-lines", env=board.env)
    assert "debug build with source lines" in out
    assert ", line 1," not in traceback_line()  # the line of the failing statement
    gw.ok("flash", board.port, "--node", "chair-01", "--build-dir", str(board.build), env=board.env)
    assert ", line 1," in traceback_line()  # shipped build: every frame says line 1


def test_flash_errors(gw: Gw, board: Board, tmp_path: Path) -> None:
    gw.ok("provision", "chair-01", "--site", "north", "--chair", "c1")
    common = ("--build-dir", str(board.build))
    gw.fails(2, "flash", board.port, *common, env=board.env, needles=("--node", "--bundle"))
    gw.fails(
        3,
        "flash",
        board.port,
        "--node",
        "nobody",
        *common,
        env=board.env,
        needles=("no bundle at",),
    )
    gw.fails(
        3,
        "flash",
        str(tmp_path / "ttyNONE"),
        "--node",
        "chair-01",
        *common,
        env=board.env,
        needles=("no serial device at",),
    )
    gw.fails(
        5,
        "flash",
        board.port,
        "--node",
        "chair-01",
        "--mpremote",
        str(tmp_path / "missing"),
        *common,
        env=board.env,
        needles=("mpremote not found",),
    )
    no_path = dict(board.env, PATH=str(tmp_path / "empty"))
    code, _, err = gw.run("flash", board.port, "--node", "chair-01", *common, env=no_path)
    if not os.access(os.path.join(os.path.dirname(sys.executable), "mpremote"), os.X_OK):
        assert code == 5 and "mpremote is not installed" in err
    gw.fails(
        4,
        "flash",
        board.port,
        "--node",
        "chair-01",
        *common,
        env=dict(board.env, FAKE_MODE="no-board"),
        needles=("cannot reach a board", "failed to access"),
    )
    gw.fails(
        1,
        "flash",
        board.port,
        "--node",
        "chair-01",
        *common,
        env=dict(board.env, FAKE_MODE="full"),
        needles=("copying node.key", "No space left"),
    )
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"format": 1, "node_id": "x"}))
    gw.fails(
        1,
        "flash",
        board.port,
        "--bundle",
        str(broken),
        *common,
        env=board.env,
        needles=("bundle is not usable",),
    )
