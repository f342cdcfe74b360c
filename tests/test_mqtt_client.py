"""The node's MQTT client (firmware/mqtt/client.py) against a real Mosquitto.

Each test runs tests/mpy/mqtt_node.py in the real MicroPython interpreter with a 64 KiB heap
(modules precompiled to .mpy, as on a board) and checks what a paho peer and the script's
machine-readable output show. Faults are staged with a TCP proxy (tests/support/tcpproxy.py)
or by stopping the broker.
"""

import datetime
import ipaddress
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.mpy import MpyProcess, build_mpy
from tests.support.paho_peer import Peer
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.mosquitto

SCRIPT = "tests/mpy/mqtt_node.py"


@pytest.fixture(autouse=True)
def _leak_check(no_leaks):
    # Autouse so it is set up before, and checks after, every other fixture of the test.
    yield


@pytest.fixture(scope="module")
def mpy_dir(tmp_path_factory):
    return build_mpy(tmp_path_factory.mktemp("mpy"))


@pytest.fixture
def run_node(mpy_dir):
    procs = []

    def start(**opts):
        p = MpyProcess(SCRIPT, ["%s=%s" % kv for kv in opts.items()], mpy_dir=mpy_dir)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.close()


@pytest.fixture
def peers():
    made = []

    def make(*args, **kwargs):
        p = Peer(*args, **kwargs)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def proxy(mosquitto):
    with TcpProxy(mosquitto.host, mosquitto.port) as p:
        yield p


def _finish(node, timeout=30.0):
    rc = node.wait_exit(timeout)
    if rc != 0 or not node.lines("DONE") or node.lines("TIMEOUT"):
        node.fail("script failed (exit code %s)" % rc)
    return node.stats()


def _data(node_id, n):
    return ["%s:%d" % (node_id, i) for i in range(n)]


def _decoded(peer, topic):
    return [p.decode() for p in peer.payloads(topic)]


def test_connect_birth_and_qos1_publish(mosquitto, run_node, peers, record_property):
    base = "ivgw/test/node-basic"
    peer = peers(mosquitto.host, mosquitto.port, [base + "/#"])
    node = run_node(port=mosquitto.port, id="node-basic", count=30)
    stats = _finish(node)
    assert stats["connects"] == 1 and stats["disconnects"] == 0
    assert stats["pubacks"] == 31 and stats["in_flight"] == 0 and stats["retransmits"] == 0
    peer.wait(lambda: len(peer.messages) >= 31, 10, "31 messages")
    assert peer.payloads(base + "/birth") == [b"online:1"]
    # One publisher, one topic: QoS 1 keeps the order [MQTT-4.6.0-2].
    assert _decoded(peer, base + "/data") == _data("node-basic", 30)
    assert all(m[2] == 1 and not m[3] for m in peer.messages)
    # A clean DISCONNECT discards the Will [MQTT-3.14.4-3]: no "offline" after a marker.
    peer.publish(base + "/marker", b"m")
    peer.wait(lambda: any(m[0] == base + "/marker" for m in peer.messages), 10, "marker")
    assert peer.payloads(base + "/status") == []
    record_property("heap_base", stats["heap_base"])
    record_property("heap_peak", stats["heap_peak"])
    assert stats["heap_size"] <= 65536


def test_qos1_redelivered_after_lost_pubacks_and_cut(mosquitto, proxy, run_node, peers):
    # The broker gets our PUBLISHes but its PUBACKs are held, then the link is cut: after the
    # reconnect the window is resent with DUP=1, so nothing is missing (duplicates allowed).
    base = "ivgw/test/node-cut"
    peer = peers(mosquitto.host, mosquitto.port, [base + "/data"])
    node = run_node(port=proxy.port, id="node-cut", count=60, interval_ms=15, connects=1)
    peer.wait(lambda: len(peer.messages) >= 10, 15, "10 messages before the fault")
    proxy.stall("down")
    time.sleep(0.5)
    proxy.resume()  # cuts the stalled connection, forwards new ones
    stats = _finish(node)
    got = _decoded(peer, base + "/data")
    assert set(got) == set(_data("node-cut", 60)), node.output()
    assert len(got) > 60, "held PUBACKs must cause redelivery duplicates"
    assert stats["retransmits"] >= 1 and stats["disconnects"] >= 1 and stats["connects"] >= 2
    assert stats["in_flight"] == 0 and stats["pubacks"] >= 61
    # The broker saw the resends flagged DUP=1 [MQTT-3.3.1-1] (its log: "d1, q1").
    assert "Received PUBLISH from node-cut (d1, q1" in mosquitto.log_text()


def test_qos1_resent_after_ack_timeout_on_the_same_link(mosquitto, proxy, run_node, peers):
    # PUBACKs are held longer than ack_timeout_ms, then released: the window is resent with
    # DUP=1 on the live connection, and the late PUBACKs still clear it.
    base = "ivgw/test/node-slow"
    peer = peers(mosquitto.host, mosquitto.port, [base + "/data"])
    node = run_node(port=proxy.port, id="node-slow", count=20, interval_ms=20, ack_ms=300)
    peer.wait(lambda: len(peer.messages) >= 5, 15, "5 messages before the fault")
    proxy.stall("down")
    time.sleep(1.0)
    proxy.unstall()
    stats = _finish(node)
    got = _decoded(peer, base + "/data")
    assert set(got) == set(_data("node-slow", 20))
    assert stats["disconnects"] == 0 and stats["connects"] == 1
    assert stats["retransmits"] >= 1 and len(got) > 20, node.output()
    assert "Received PUBLISH from node-slow (d1, q1" in mosquitto.log_text()


def test_qos1_survives_broker_restart(make_mosquitto, run_node, peers):
    broker = make_mosquitto(persistence=True)
    base = "ivgw/test/node-restart"
    peer = peers(
        broker.host, broker.port, [base + "/data"], client_id="gw-peer", clean_session=False
    )
    node = run_node(port=broker.port, id="node-restart", count=50, interval_ms=20)
    peer.wait(lambda: len(peer.messages) >= 10, 15, "10 messages before the outage")
    broker.stop()  # clean stop: mosquitto saves sessions and queued messages
    time.sleep(1.0)
    broker.restart()
    stats = _finish(node)
    peer.wait(lambda: len(set(peer.payloads(base + "/data"))) >= 50, 15, "all 50 messages")
    assert set(_decoded(peer, base + "/data")) == set(_data("node-restart", 50))
    assert stats["disconnects"] >= 1 and stats["connects"] >= 2 and stats["in_flight"] == 0
    # clean_session=False: the restarted broker still knew our session.
    assert node.lines("CONNECTED")[1] == ["2", "1"], node.output()


def test_last_will_on_sigkill(mosquitto, run_node, peers):
    base = "ivgw/test/node-lwt"
    peer = peers(mosquitto.host, mosquitto.port, [base + "/#"])
    node = run_node(port=mosquitto.port, id="node-lwt", hold=1)
    node.wait_line("READY", 15)
    assert peer.payloads(base + "/status") == []
    node.kill()
    peer.wait(lambda: peer.payloads(base + "/status") == [b"offline"], 10, "the Will")
    assert peer.payloads(base + "/birth") == [b"online:1"]


def test_keepalive_detects_dead_link_then_backs_off(mosquitto, proxy, run_node):
    node = run_node(
        port=proxy.port, id="node-ka", ka=1, bmin=100, bmax=800, connect_ms=1000, connects=2
    )
    node.wait_line("BIRTH", 15)
    proxy.stall("both")  # silence both ways, refuse new connections
    reason = node.wait_line("DISCONNECTED", 10)
    assert reason == ["keepalive", "timeout"], node.output()
    node.wait_line("BACKOFF", 15, count=6)  # five refused retries after the dead link
    proxy.resume()
    stats = _finish(node)
    assert stats["connects"] == 2 and stats["disconnects"] >= 1 and stats["attempts"] >= 7
    # Retry k waited backoff(k) in [d/2, d], d = 100 ms doubling up to 800 ms, with jitter.
    backoffs = [(int(w[0]), int(w[1])) for w in node.lines("BACKOFF")]
    for k, ms in backoffs:
        d = min(800, 100 << k)
        assert d // 2 <= ms <= d, (k, backoffs, node.output())
    assert [k for k, _ in backoffs[:6]] == list(range(6)), node.output()
    assert len({ms for k, ms in backoffs if k >= 3}) > 1  # capped at 800, still jittered


def test_downlink_subscription_and_persistent_session(mosquitto, run_node, peers):
    base = "ivgw/test/node-dl"
    peer = peers(mosquitto.host, mosquitto.port)
    node = run_node(port=mosquitto.port, id="node-dl", sub=base + "/cmd/#", recv=3)
    node.wait_line("BIRTH", 15)  # on_connect runs after the SUBACK
    for i in range(3):
        peer.publish(base + "/cmd/%d" % i, bytes([i, 0xFF]))
    _finish(node)
    msgs = node.lines("MSG")
    assert [(m[0], m[1]) for m in msgs] == [(base + "/cmd/%d" % i, "%02xff" % i) for i in range(3)]
    # While the node is away its session (clean_session=False) queues QoS 1 downlink.
    peer.publish(base + "/cmd/late", b"\x01\x02\x03")
    node2 = run_node(port=mosquitto.port, id="node-dl", sub=base + "/cmd/#", recv=1)
    stats = _finish(node2)
    assert node2.lines("CONNECTED")[0] == ["1", "1"], node2.output()
    assert [m[:2] for m in node2.lines("MSG")] == [[base + "/cmd/late", "010203"]]
    assert stats["received"] == 1


def test_subscription_restored_after_broker_lost_the_session(mosquitto, run_node, peers):
    # A broker killed without persistence forgets our session (CONNACK session present 0):
    # the client must subscribe again on the new connection.
    base = "ivgw/test/node-resub"
    node = run_node(port=mosquitto.port, id="node-resub", sub=base + "/cmd", recv=1, connects=2)
    node.wait_line("BIRTH", 15)
    mosquitto.kill()
    mosquitto.restart()
    node.wait_line("BIRTH", 15, count=2)  # on_connect waits for the new SUBACK
    assert node.lines("CONNECTED")[1] == ["2", "0"], node.output()
    peer = peers(mosquitto.host, mosquitto.port)
    peer.publish(base + "/cmd", b"\x2a")
    _finish(node)
    assert [m[:2] for m in node.lines("MSG")] == [[base + "/cmd", "2a"]]


def _cert(subject_cn, issuer_cn, key, issuer_key, ca=False, san=None, usage=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if usage:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write_pki(d):
    """A CA, a server cert for localhost/127.0.0.1 and a client cert, as PEM files."""

    def key():
        return ec.generate_private_key(ec.SECP256R1())

    def save(name, obj):
        p = d / name
        if isinstance(obj, x509.Certificate):
            p.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
        else:
            p.write_bytes(
                obj.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.TraditionalOpenSSL,
                    serialization.NoEncryption(),
                )
            )
        return str(p)

    ca_key, srv_key, cli_key = key(), key(), key()
    ca = _cert("ivgw test CA", "ivgw test CA", ca_key, ca_key, ca=True)
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    srv = _cert("localhost", "ivgw test CA", srv_key, ca_key, san=san,
                usage=ExtendedKeyUsageOID.SERVER_AUTH)  # fmt: skip
    cli = _cert("node-tls", "ivgw test CA", cli_key, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return {
        "ca": save("ca.pem", ca),
        "srv_cert": save("server.pem", srv),
        "srv_key": save("server.key", srv_key),
        "cert": save("client.pem", cli),
        "key": save("client.key", cli_key),
    }


def test_tls_with_client_certificate(make_mosquitto, run_node, peers, tmp_path):
    pki = _write_pki(tmp_path)
    broker = make_mosquitto(
        tls={
            "cafile": pki["ca"],
            "certfile": pki["srv_cert"],
            "keyfile": pki["srv_key"],
            "require_certificate": True,
            "use_identity_as_username": True,
        }
    )
    base = "ivgw/test/node-tls"
    peer = peers(broker.host, broker.port, [base + "/#"])  # the plain listener
    tls = {"ca": pki["ca"], "cert": pki["cert"], "key": pki["key"], "sni": "localhost"}
    node = run_node(port=broker.tls_port, id="node-tls", count=3, **tls)
    stats = _finish(node)
    assert stats["connects"] == 1 and stats["pubacks"] == 4
    peer.wait(lambda: len(peer.messages) >= 4, 10, "4 messages over TLS")
    assert _decoded(peer, base + "/data") == _data("node-tls", 3)
    assert "node-tls" in broker.log_text()  # the certificate CN became the username
    # Without a client certificate the broker refuses the handshake; with a name the server
    # certificate does not carry, the node refuses the broker. Neither ever connects.
    refused = {"attempts": 3, "bmin": 50, "bmax": 100, "ca": pki["ca"]}
    for opts in ({"sni": "localhost"}, dict(tls, sni="wrong.example")):
        bad = run_node(port=broker.tls_port, id="node-refused", **dict(refused, **opts))
        stats = _finish(bad)
        assert stats["connects"] == 0 and stats["attempts"] >= 3, bad.output()
        assert not bad.lines("CONNECTED") and "connect:" in bad.output()
