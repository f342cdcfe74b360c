"""``ivgw run``: the gateway service — MQTT in, verification on worker processes, decisions
and storage in one loop, MQTT out.

Threads and processes, and who owns what:

* paho's network thread only queues incoming messages (``manual_ack``: nothing is
  acknowledged to the broker yet);
* the **loop** (the main thread) drains that queue in batches, drops traffic over a node's
  limit, has the batch verified by the worker pool (order kept per node), then applies the
  results in one SQLite transaction (replay windows, packets, decisions, audit), commits,
  publishes the resulting commands and outputs, and only then PUBACKs the batch: a crash
  anywhere before the commit loses nothing, because the broker redelivers what was not
  acknowledged (MQTT 3.1.1 §4.3.2; the session is persistent);
* the control socket thread passes CLI requests to the loop and waits for the answer, so
  all decisions happen on one thread, in order.

Broker side (docs/gateway.md): persistent session (MQTT 5 session expiry, or clean session
off for 3.1.1) and a Mosquitto ``max_queued_messages`` large enough for an outage; the
gateway's ``status`` topic is retained, with a Last Will saying offline.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import socket
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway import db, outputs
from gateway.audit import AuditLog, Kinds
from gateway.commander import Commander
from gateway.config import Config, ConfigError
from gateway.core import ActionError, GatewayCore, Publish
from gateway.cose_keys import EdDSASigner
from gateway.druglib import DrugLibrary, load_library
from gateway.interlocks import RuleSet, load_ruleset
from gateway.ratelimit import TrafficLimit, TrafficLimiter
from gateway.store import Store
from gateway.verify import Rejected
from gateway.workers import VerifierPool, node_hint
from protocol import topics

log = logging.getLogger("ivgw")

VERSION = "0.1.0"
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_LIBRARY = ROOT / "config" / "druglib.example.yaml"
EXAMPLE_RULES = ROOT / "config" / "rules.example.yaml"
_BATCH = 512
_DEPTH = 2  # batches at the workers at once; the broker must allow _DEPTH * _BATCH in flight


class ServiceError(Exception):
    """The service cannot start; the message is one sentence for the user."""


@dataclass
class _Incoming:
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_at: float


def load_gateway_key(path: Path, create: bool = False) -> bytes:
    """The gateway's Ed25519 seed; it must be readable by its owner only."""
    if not path.exists():
        if not create:
            raise ServiceError("%s: gateway key not found (run `ivgw init`)" % path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ServiceError("%s: gateway key is readable by other users (mode %o); "
                           "run `chmod 600 %s`" % (path, mode & 0o777, path))
    try:
        seed = path.read_bytes()
    except PermissionError:
        raise ServiceError("%s: gateway key not readable by this user" % path) from None
    if len(seed) != 32:
        raise ServiceError("%s: gateway key must be 32 bytes, found %d" % (path, len(seed)))
    return seed


def clinical_files(cfg: Config) -> tuple[DrugLibrary, RuleSet, bool]:
    """Load the drug library and rules; the bool says whether the EXAMPLES are in use."""
    lib_path = cfg.resolve(cfg.clinical.drug_library) if cfg.clinical.drug_library else None
    rules_path = cfg.resolve(cfg.clinical.rules) if cfg.clinical.rules else None
    example = lib_path is None or rules_path is None
    library = load_library(lib_path or EXAMPLE_LIBRARY)
    rules = load_ruleset(rules_path or EXAMPLE_RULES)
    return library, rules, example


class Gateway:
    """The service: construct, ``start()``, then ``run_forever()`` (or ``step()`` in tests)."""

    def __init__(self, cfg: Config, *, clock: Any = time.time, create_key: bool = False):
        self.cfg = cfg
        self.clock = clock
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.conn = db.open_db(cfg.db_path)
        self.store = Store(self.conn)
        self.audit = AuditLog(self.conn, clock=clock)
        seed = load_gateway_key(cfg.key_path, create=create_key)
        self.signer = EdDSASigner(seed)
        self.library, self.rules, self.examples = clinical_files(cfg)
        if self.examples:
            log.warning("using the EXAMPLE drug library and interlock rules: a clinic's "
                        "medical director must set its own before clinical use")
        self.epoch = self.store.next_epoch()
        self.core = GatewayCore(
            self.store, self.audit, Commander(self.signer, cfg.gateway.kid.encode(), self.epoch),
            self.library, self.rules, care_area=cfg.clinical.care_area,
            permit_lifetime_ms=cfg.permit.lifetime_ms, clock=clock,
            conformance_tolerance_pct=cfg.clinical.conformance_tolerance_pct,
            emulation_speed=cfg.gateway.emulation_speed,
        )
        if cfg.gateway.emulation_speed != 1.0:
            log.warning("emulation_speed = %s: dose conformance assumes accelerated emulated "
                        "pumps; never use this with real pumps", cfg.gateway.emulation_speed)
        t = cfg.traffic
        self.limiter = TrafficLimiter(TrafficLimit(t.packets_per_s, t.packet_burst,
                                                   t.bytes_per_s, t.byte_burst))
        # Incoming packets; None is a wake-up (a control request, a stop) for a loop
        # blocked waiting for packets, so a CLI request never waits for the next tick.
        self.inbox: queue.Queue[_Incoming | None] = queue.Queue()
        self.control: queue.Queue[tuple[dict, queue.Queue[dict]]] = queue.Queue()
        self.pool: VerifierPool | None = None
        self.client: mqtt.Client | None = None
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._started_at = clock()
        self._last_tick = 0.0
        self._announce = False
        self._inflight: collections.deque[tuple] = collections.deque()  # at the workers
        self.processed = 0
        self._control_thread: threading.Thread | None = None
        self._control_sock: socket.socket | None = None
        with db.transaction(self.conn):
            self.audit.append(Kinds.GATEWAY_START, actor="gateway",
                              data={"version": VERSION, "epoch": self.epoch,
                                    "library": self.library.version,
                                    "library_sha256": self.library.sha256,
                                    "rules": self.rules.version,
                                    "examples": self.examples})

    # --- MQTT -----------------------------------------------------------------------------
    def _mqtt_client(self) -> mqtt.Client:
        m = self.cfg.mqtt
        v5 = m.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=m.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
        )
        client.manual_ack_set(True)
        if m.username:
            client.username_pw_set(m.username, m.password or None)
        if m.tls_ca:
            client.tls_set(ca_certs=str(self.cfg.resolve(m.tls_ca)),
                           certfile=str(self.cfg.resolve(m.tls_cert)) if m.tls_cert else None,
                           keyfile=str(self.cfg.resolve(m.tls_key)) if m.tls_key else None)
        client.will_set(topics.GATEWAY_STATUS,
                        outputs.gateway_status(False, self._started_at, VERSION), 1, True)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        # Outgoing QoS 1 (permits, stops, chair states: ~2 per chair per second): a small
        # window caps them at window / broker round trip and queues every stop behind it.
        client.max_inflight_messages_set(1000)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.max_queued_messages_set(0)
        return client

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        if rc.is_failure:
            log.error("broker refused the connection: %s", rc)
            return
        client.subscribe(topics.uplink_filter(), qos=1)
        self._announce = True  # the loop publishes "online" with the audit anchor (DB thread)
        self.connected.set()
        log.info("connected to %s:%d", self.cfg.mqtt.host, self.cfg.mqtt.port)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       props: Any = None) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", rc)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.inbox.put(_Incoming(msg.mid, msg.qos, msg.topic, bytes(msg.payload), self.clock()))

    def start(self, connect: bool = True) -> None:
        if self.conn.in_transaction:
            # Every write must happen inside db.transaction(); an open implicit transaction
            # here would silently keep all later commits from reaching the disk.
            raise ServiceError("internal error: a database transaction was left open at start")
        keys = {n.node_id: n.key for n in self.store.nodes()}
        self.pool = VerifierPool(self.cfg.gateway.workers, keys)
        self._start_control()
        if connect:
            self.client = self._mqtt_client()
            m = self.cfg.mqtt
            props = None
            if m.protocol == "5":
                from paho.mqtt.packettypes import PacketTypes
                from paho.mqtt.properties import Properties

                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = 7 * 24 * 3600  # keep our queue for a week
            try:
                self.client.connect(m.host, m.port, keepalive=m.keepalive_s,
                                    clean_start=False if m.protocol == "5" else
                                    mqtt.MQTT_CLEAN_START_FIRST_ONLY, properties=props)
            except OSError as e:
                raise ServiceError("cannot reach the MQTT broker at %s:%d (%s)"
                                   % (m.host, m.port, e.strerror or e)) from None
            self.client.loop_start()

    # --- the loop ---------------------------------------------------------------------------
    def run_forever(self) -> None:
        try:
            while not self._stop.is_set():
                self.step(timeout=self.cfg.gateway.tick_ms / 1000.0)
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()
        self.inbox.put(None)

    def step(self, timeout: float = 0.1) -> int:
        """One loop iteration: a batch of packets, control requests, the tick."""
        batch: list[_Incoming] = []
        try:
            # With a batch at the workers, never block: apply it as soon as it is verified.
            item = (self.inbox.get(timeout=timeout) if not self._inflight
                    else self.inbox.get_nowait())
            while True:
                if item is not None:  # None: only a wake-up
                    batch.append(item)
                if len(batch) >= _BATCH:
                    break
                item = self.inbox.get_nowait()
        except queue.Empty:
            pass
        # Pipelined: up to _DEPTH batches are at the workers while the oldest is applied,
        # so signature checks and the SQLite commits overlap and a worker always has the
        # next batch queued. With nothing new to submit, the oldest is applied at once: an
        # idle gateway adds no wait to a single packet (the interlock path).
        if batch:
            self._inflight.append(self._submit(batch))
        if self._inflight and (len(self._inflight) >= _DEPTH or not batch):
            self._apply(*self._inflight.popleft())
        while True:
            try:
                req, reply = self.control.get_nowait()
            except queue.Empty:
                break
            reply.put(self._handle(req))
        if self._announce and self.client is not None:
            self._announce = False
            anchor = self.audit.export_anchor().to_text()
            self.client.publish(topics.GATEWAY_STATUS, outputs.gateway_status(
                True, self._started_at, VERSION, anchor), 1, True)
        now = self.clock()
        if now - self._last_tick >= self.cfg.gateway.tick_ms / 1000.0:
            self._last_tick = now
            with db.transaction(self.conn):
                self.core.tick(now)
            self._publish(self.core.take_output())
        return len(batch)

    def _submit(self, batch: list[_Incoming]) -> tuple:
        assert self.pool is not None
        allowed: list[_Incoming] = []
        limited: list[_Incoming] = []
        for item in batch:
            if self.limiter.allow(node_hint(item.topic), len(item.payload), item.received_at):
                allowed.append(item)
            else:
                limited.append(item)
        ticket = self.pool.submit([(i.topic, i.payload) for i in allowed])
        return batch, allowed, limited, ticket

    def _apply(self, batch: list[_Incoming], allowed: list[_Incoming],
               limited: list[_Incoming], ticket: Any) -> None:
        assert self.pool is not None
        results = self.pool.collect(ticket)
        with db.transaction(self.conn):
            for item in limited:
                self.core.reject(Rejected(node_hint(item.topic) or None, "traffic.limited",
                                          "over the node's packet or byte rate", len(item.payload)),
                                 item.topic, item.received_at)
            for item, res in zip(allowed, results, strict=True):
                if isinstance(res, Rejected):
                    self.core.reject(res, item.topic, item.received_at)
                else:
                    self.core.accept(res, item.received_at, item.payload)
        # Durable now: publish what the decisions produced, then acknowledge the batch.
        self._publish(self.core.take_output())
        if self.client is not None:
            for item in batch:
                if item.qos > 0:
                    self.client.ack(item.mid, item.qos)
        self.processed += len(batch)

    def _publish(self, out: list[Publish]) -> None:
        if self.client is None:
            self.published = getattr(self, "published", []) + out
            return
        for p in out:
            self.client.publish(p.topic, p.payload, p.qos, p.retain)

    # --- control requests from the CLI --------------------------------------------------------
    def _handle(self, req: dict) -> dict:
        op = req.get("op")
        try:
            with db.transaction(self.conn):
                result = self._dispatch(op, req)
            self._publish(self.core.take_output())
            return {"ok": True, "result": result}
        except ActionError as e:
            self._publish(self.core.take_output())
            return {"ok": False, "error": str(e), "code": e.code}
        except Exception as e:  # noqa: BLE001 - a bad request must not stop the gateway
            log.exception("control request %r failed", op)
            return {"ok": False, "error": "%s: %s" % (type(e).__name__, e), "code": "error"}

    def _dispatch(self, op: Any, req: dict) -> Any:
        from decimal import Decimal

        core = self.core
        if op == "status":
            now = self.clock()
            return {"gateway": self.status(), "chairs": [
                outputs.chair_state_dict(c, now) for c in core.chairs.values()]}
        if op == "program":
            weight = req.get("weight_kg")
            return core.program(
                req["chair"], drug=req["drug"],
                concentration_mg_ml=Decimal(str(req["concentration_mg_ml"])),
                weight_kg=Decimal(str(weight)) if weight is not None else None,
                dose_rate=Decimal(str(req["dose_rate"])),
                duration_min=Decimal(str(req["duration_min"])),
                diameter_cmm=int(req.get("diameter_cmm", 2670)), operator=req["operator"],
                override_reason=req.get("override_reason"), dry_run=bool(req.get("dry_run")))
        if op == "start":
            return core.start(req["chair"], req["operator"])
        if op == "stop":
            return core.stop(req["chair"], req["operator"], req.get("reason") or "e-stop")
        if op == "ack":
            return core.acknowledge(req["chair"], req["operator"], req["reason"])
        if op == "reload_keys":
            return self.reload_keys()
        raise ActionError("unknown request %r" % (op,), "bad_request")

    def reload_keys(self) -> dict:
        """Pick up keys registered, rotated or revoked by the CLI in the shared database."""
        assert self.pool is not None
        n = 0
        for rec in self.store.nodes():
            self.core.node_registered(rec)
            self.pool.set_key(rec.key)
            n += 1
        return {"nodes": n}

    def status(self) -> dict:
        return {"version": VERSION, "epoch": self.epoch, "connected": self.connected.is_set(),
                "started": outputs.iso(self._started_at), "processed": self.processed,
                "counters": dict(self.core.counters), "library": self.library.version,
                "rules": self.rules.version, "examples": self.examples,
                "workers": self.cfg.gateway.workers}

    def request(self, req: dict, timeout: float = 10.0) -> dict:
        """Thread-safe: hand a request to the loop and wait for its answer."""
        reply: queue.Queue[dict] = queue.Queue()
        self.control.put((req, reply))
        self.inbox.put(None)  # wake the loop if it is waiting for packets
        return reply.get(timeout=timeout)

    def _start_control(self) -> None:
        path = self.cfg.socket_path
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)  # the socket is as private as the gateway key
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        sock.listen(8)
        sock.settimeout(0.5)
        self._control_sock = sock
        self._control_thread = threading.Thread(target=self._serve_control, name="ivgw-control",
                                                daemon=True)
        self._control_thread.start()

    def _serve_control(self) -> None:
        sock = self._control_sock
        assert sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(30)
                try:
                    data = b""
                    while not data.endswith(b"\n") and len(data) < 65536:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    req = json.loads(data.decode() or "{}")
                    resp = self.request(req) if isinstance(req, dict) else {
                        "ok": False, "error": "request must be a JSON object"}
                except (ValueError, OSError, queue.Empty) as e:
                    resp = {"ok": False, "error": "bad request: %s" % e}
                try:
                    conn.sendall(json.dumps(resp).encode() + b"\n")
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        if self._inflight and self.pool is not None:
            try:
                while self._inflight:  # store and ack what the workers already have
                    self._apply(*self._inflight.popleft())
            except Exception:  # noqa: BLE001 - unacked messages are redelivered anyway
                log.exception("could not apply the last batches while closing")
            self._inflight.clear()
        if self.client is not None:
            self.client.publish(topics.GATEWAY_STATUS,
                                outputs.gateway_status(False, self._started_at, VERSION), 1, True)
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        if self._control_sock is not None:
            self._control_sock.close()
            self._control_sock = None
            try:
                self.cfg.socket_path.unlink()
            except FileNotFoundError:
                pass
        if self._control_thread is not None:
            self._control_thread.join(timeout=2)
            self._control_thread = None
        try:
            with db.transaction(self.conn):
                self.core.snapshot_all(self.clock())
                self.audit.append(Kinds.GATEWAY_STOP, actor="gateway",
                                  data={"processed": self.processed})
        except Exception:  # noqa: BLE001 - closing must not fail on a broken database
            log.exception("could not record the gateway stop")
        self.conn.close()


def control_request(cfg: Config, req: dict, timeout: float = 15.0) -> dict:
    """The CLI side of the control socket."""
    path = cfg.socket_path
    if not path.exists():
        raise ConfigError("the gateway is not running (no control socket at %s)" % path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
        s.sendall(json.dumps(req).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except PermissionError:
        raise ConfigError("no permission to talk to the gateway at %s" % path) from None
    except (ConnectionRefusedError, FileNotFoundError):
        raise ConfigError("the gateway is not running (socket %s refuses connections)"
                          % path) from None
    finally:
        s.close()
    return json.loads(data.decode())
