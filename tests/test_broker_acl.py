"""The broker configuration ``ivgw broker-config`` writes, enforced by a real Mosquitto.

Everything is made through the CLI (init, provision with TLS, revoke, broker-config) and the
generated mosquitto.conf is run as written (plus ``user root`` when the tests run as root,
so mosquitto does not switch to a user that cannot read the temporary folder).

Mosquitto silently drops an unauthorized MQTT 3.1.1 publish (it still sends PUBACK), so a
refusal is proven by ordering, not by waiting: a client's messages are handled in the
order it sent them, and a message is queued to every subscriber before the broker
acknowledges it. So after a refused publish is acknowledged, a permitted "sentinel"
message is sent; when the sentinel has arrived, the refused one would have arrived before
it had it been let through.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from gateway import certs
from gateway.cli import app
from tests.support.mosquitto import free_port, mosquitto_binary

pytestmark = pytest.mark.mosquitto

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner(env={"COLUMNS": "250"})
UP = "ivgw/v1/node/%s/up/%s"
DOWN = "ivgw/v1/node/%s/down/cmd"
WAIT = 10.0  # upper bound for an expected event; never a measured duration


@dataclass
class Broker:
    port: int
    folder: Path
    bundles: Path
    log: Path

    def cert(self, cn: str) -> tuple[str, str]:
        stem = self.folder / "clients" / cn
        return str(stem.with_suffix(".crt")), str(stem.with_suffix(".key"))

    @property
    def ca(self) -> str:
        return str(self.folder / "ca.crt")


def _cli(cfg: Path, *args: str) -> str:
    r = runner.invoke(app, [*args, "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    return r.stdout


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("mosquitto exited:\n" + log.read_text(errors="replace"))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError("mosquitto did not listen:\n" + log.read_text(errors="replace"))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    root = tmp_path_factory.mktemp("acl")
    cfg = root / "gw.toml"
    cfg.write_text('[gateway]\ndata_dir = "data"\n')
    _cli(cfg, "init")
    # The CA first, so the nodes get TLS bundles; then the broker files for every node.
    _cli(cfg, "broker-config", "--host", "localhost")
    # node-b reaches the broker by IP address: its bundle checks the broker's fixed name.
    for node, chair, host in (
        ("node-a", "c1", "localhost"),
        ("node-b", "c2", "127.0.0.1"),
        ("node-c", "c3", "localhost"),
    ):
        _cli(
            cfg,
            "provision",
            node,
            "--site",
            "north",
            "--chair",
            chair,
            "--tls",
            "--broker-host",
            host,
        )
    _cli(cfg, "keys", "revoke", "node-c", "--reason", "board stolen")
    port = free_port()
    folder = root / "broker"
    _cli(
        cfg,
        "broker-config",
        "--out",
        str(folder),
        "--host",
        "localhost",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--central",
        "central-1",
    )
    conf = folder / "mosquitto.conf"
    if os.geteuid() == 0:
        conf.write_text(conf.read_text() + "user root\n")
    log = root / "mosquitto.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)], stdout=err, stderr=err, stdin=subprocess.DEVNULL
        )
    try:
        _wait_port(port, proc, log)
        yield Broker(port, folder, root / "data" / "bundles", log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Client:
    """A paho client (MQTT 3.1.1, TLS with a client certificate) that records messages."""

    def __init__(self, broker: Broker, cert: tuple[str, str], subscribe: tuple[str, ...] = ()):
        self.messages: list[tuple[str, bytes]] = []
        self.suback: list[int] = []
        self._cv = threading.Condition()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id="ignored-by-broker",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        c.tls_set(ca_certs=broker.ca, certfile=cert[0], keyfile=cert[1])
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_connect = self._on_connect
        self.connected = False
        self.c = c
        c.connect("localhost", broker.port, keepalive=30)
        c.loop_start()
        self.wait(lambda: self.connected, "CONNACK")
        for f in subscribe:
            c.subscribe(f, qos=1)
        self.wait(lambda: len(self.suback) == len(subscribe), "SUBACK")

    def _on_connect(
        self, c: object, u: object, flags: object, rc: mqtt.ReasonCode, props: object
    ) -> None:
        with self._cv:
            self.connected = not rc.is_failure
            self._cv.notify_all()

    def _on_subscribe(
        self, c: object, u: object, mid: int, rcs: list[mqtt.ReasonCode], props: object
    ) -> None:
        with self._cv:
            self.suback.extend(int(r.value) for r in rcs)
            self._cv.notify_all()

    def _on_message(self, c: object, u: object, msg: mqtt.MQTTMessage) -> None:
        with self._cv:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._cv.notify_all()

    def wait(self, pred: Callable[[], bool], what: str) -> None:
        with self._cv:
            assert self._cv.wait_for(pred, WAIT), "no %s within %.0f s" % (what, WAIT)

    def got(self, payload: bytes) -> bool:
        with self._cv:
            return any(p == payload for _, p in self.messages)

    def wait_for(self, payload: bytes) -> None:
        self.wait(lambda: any(p == payload for _, p in self.messages), repr(payload))

    def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1 and wait for the PUBACK: the broker has decided about the message."""
        info = self.c.publish(topic, payload, qos=1)
        info.wait_for_publish(WAIT)
        assert info.is_published(), "no PUBACK for %s" % topic

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def clients(broker: Broker) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(cn: str, *subscribe: str, cert: tuple[str, str] | None = None) -> Client:
        cl = Client(broker, cert or broker.cert(cn), subscribe)
        made.append(cl)
        return cl

    yield make
    for cl in made:
        cl.close()


def test_a_node_publishes_its_own_uplink_only(clients: Callable[..., Client]) -> None:
    gw = clients(certs.GATEWAY_CN, "ivgw/v1/node/+/up/+")
    node_b = clients("node-b", DOWN % "node-b")
    node_a = clients("node-a")
    node_a.publish(UP % ("node-b", "telemetry"), b"a-as-b")  # another node's uplink
    node_a.publish(DOWN % "node-b", b"a-commands-b")  # a command to another node
    node_a.publish(DOWN % "node-a", b"a-commands-itself")
    node_a.publish("ivgw/v1/out/north/c1/state", b"a-fakes-output")
    node_a.publish(UP % ("node-a", "telemetry"), b"a-sentinel")
    gw.wait_for(b"a-sentinel")
    assert gw.messages == [(UP % ("node-a", "telemetry"), b"a-sentinel")]
    gw.publish(DOWN % "node-b", b"b-sentinel")
    node_b.wait_for(b"b-sentinel")
    assert node_b.messages == [(DOWN % "node-b", b"b-sentinel")]


def test_a_node_receives_its_own_commands_only(clients: Callable[..., Client]) -> None:
    gw = clients(certs.GATEWAY_CN)
    # Mosquitto 2.0 does not check SUBSCRIBE against the ACL file: the SUBACK may grant the
    # filter, but read access is checked on every delivery, so nothing may arrive through it.
    spy = clients(
        "node-a", DOWN % "node-b", "ivgw/v1/node/+/up/+", "ivgw/v1/out/#", DOWN % "node-a"
    )
    node_b = clients("node-b", DOWN % "node-b")
    gw.publish(DOWN % "node-b", b"cmd-for-b")
    gw.publish("ivgw/v1/out/north/c2/state", b"state-of-c2")
    node_b.publish(UP % ("node-b", "telemetry"), b"b-telemetry")
    gw.publish(DOWN % "node-a", b"cmd-for-a")
    spy.wait_for(b"cmd-for-a")
    node_b.wait_for(b"cmd-for-b")
    assert spy.messages == [(DOWN % "node-a", b"cmd-for-a")]
    assert all(code in (0, 1, 0x80) for code in spy.suback)


def test_gateway_and_central_get_no_node_rights_from_the_patterns(
    clients: Callable[..., Client],
) -> None:
    gw = clients(certs.GATEWAY_CN, "ivgw/v1/node/+/up/+")
    central = clients("central-1")
    node_a = clients("node-a")
    # The ACL's node patterns, with %u = these users' own names, would grant these:
    gw.publish(UP % (certs.GATEWAY_CN, "telemetry"), b"gw-as-node")
    central.publish(UP % ("central-1", "telemetry"), b"central-as-node")
    node_a.publish(UP % ("node-a", "birth"), b"a-sentinel-2")
    gw.wait_for(b"a-sentinel-2")
    assert gw.messages == [(UP % ("node-a", "birth"), b"a-sentinel-2")]


def test_central_reads_outputs_but_cannot_command(clients: Callable[..., Client]) -> None:
    central = clients("central-1", "ivgw/v1/out/#", "ivgw/v1/node/#")
    gw = clients(certs.GATEWAY_CN, "ivgw/v1/node/+/up/+")
    node_a = clients("node-a", DOWN % "node-a")
    node_b = clients("node-b")
    central.publish(DOWN % "node-a", b"central-command")
    central.publish("ivgw/v1/out/gateway/status", b"central-fakes-status")
    gw.publish(DOWN % "node-a", b"gw-command")
    node_a.wait_for(b"gw-command")
    assert node_a.messages == [(DOWN % "node-a", b"gw-command")]
    node_b.publish(UP % ("node-b", "event"), b"b-event")  # central must not read node traffic
    gw.wait_for(b"b-event")
    gw.publish("ivgw/v1/out/north/c1/event", b"out-event")
    central.wait_for(b"out-event")
    assert central.messages == [("ivgw/v1/out/north/c1/event", b"out-event")]


def test_revoked_node_is_shut_out(broker: Broker, clients: Callable[..., Client]) -> None:
    gw = clients(certs.GATEWAY_CN, "ivgw/v1/node/+/up/+")
    bundle = broker.bundles / "node-c"
    # node-c still holds a valid certificate from its bundle; the ACL denies it everything.
    node_c = clients("node-c", cert=(str(bundle / "node.crt"), str(bundle / "node-tls.key")))
    node_a = clients("node-a")
    node_c.publish(UP % ("node-c", "telemetry"), b"revoked-telemetry")
    node_a.publish(UP % ("node-a", "telemetry"), b"a-sentinel-3")
    gw.wait_for(b"a-sentinel-3")
    assert not gw.got(b"revoked-telemetry")


def _raw_connect(broker: Broker, cert: tuple[str, str] | None) -> bytes | None:
    """Send an MQTT CONNECT over TLS; the broker's first bytes, or None if it refused."""
    ctx = ssl.create_default_context(cafile=broker.ca)
    if cert is not None:
        ctx.load_cert_chain(*cert)
    connect = bytes.fromhex("101000044d5154540402001e0004") + b"anon"
    with socket.create_connection(("127.0.0.1", broker.port), timeout=WAIT) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(connect)
                data = s.recv(4)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return None
    # TLS 1.3 finishes the client's side of the handshake before the server checks the
    # client certificate; the broker then closes the connection instead of a CONNACK.
    return data or None


def test_a_client_without_a_clinic_certificate_cannot_connect(
    broker: Broker,
    tmp_path: Path,
) -> None:
    assert _raw_connect(broker, broker.cert("node-a")) == b"\x20\x02\x00\x00"  # CONNACK ok
    assert _raw_connect(broker, None) is None
    other, _ = certs.load_or_create_ca(tmp_path / "other-ca")
    issued = other.issue_client("node-a")  # the right name from the wrong CA
    crt, key = tmp_path / "x.crt", tmp_path / "x.key"
    crt.write_bytes(issued.cert_pem)
    key.write_bytes(issued.key_pem)
    assert _raw_connect(broker, (str(crt), str(key))) is None


MPY_NODE = """\
import sys
import asyncio
from firmware import config
from firmware.mqtt.client import MQTTClient, tls_context
from protocol import topics

cfg = config.load(sys.argv[1])

async def main():
    c = MQTTClient(cfg.node_id, "127.0.0.1", int(sys.argv[2]), keepalive=cfg.keepalive_s,
                   ssl=tls_context(cfg.tls["ca"], cfg.tls["cert"], cfg.tls["key"]),
                   server_hostname=cfg.tls["server_hostname"], backoff_min_ms=100,
                   backoff_max_ms=400, connect_timeout_ms=5000)
    task = asyncio.create_task(c.run())
    pid = await c.publish(topics.uplink(cfg.node_id, "telemetry"), b"from-micropython")
    try:
        await asyncio.wait_for(c.wait_acked(pid), 15)
        print("ACKED")
    except asyncio.TimeoutError:
        print("NO PUBACK")
    await c.close()
    await task

asyncio.run(main())
"""


@pytest.mark.parametrize("node", ["node-a", "node-b"])
def test_the_node_firmware_connects_with_its_provisioned_bundle(
    broker: Broker,
    clients: Callable[..., Client],
    tmp_path: Path,
    node: str,
) -> None:
    """The node's own MQTT client and config loader (MicroPython, mbedTLS), the bundle from
    `ivgw provision --tls` and the broker from `ivgw broker-config` work together."""
    gw = clients(certs.GATEWAY_CN, "ivgw/v1/node/+/up/+")
    script = tmp_path / "mpy_node.py"
    script.write_text(MPY_NODE)
    exe = ROOT / ".venv" / "bin" / "micropython"
    r = subprocess.run(
        [str(exe), str(script), str(broker.bundles / node), str(broker.port)],
        cwd=ROOT,
        env=dict(os.environ, MICROPYPATH=".:.frozen"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "ACKED" in r.stdout, r.stdout + r.stderr
    gw.wait_for(b"from-micropython")
    assert (UP % (node, "telemetry"), b"from-micropython") in gw.messages
