"""Boot: configuration, boot counter, keys, drivers, UARTs, MQTT client (called by main).

Boot order matters for safety: the configuration is validated and the boot counter is
persisted *before* any device is driven or any message is made.

It also decides the node's peak heap, which is at boot. Each phase unloads the code it
no longer needs before the next one imports more: the configuration loader and the boot
counter go once the values the node needs are copied out (into a plain ``Settings``), the
Ed25519 tables are built next on a heap that holds little else, and main.py unloads this
module last (docs/firmware.md, "Footprint"). Nothing the running node keeps may refer to
an unloaded module: it gets plain values, never the Config object.
"""

import gc
import sys
import time

from firmware import unload
from protocol import const

_ENCODE_BUFFER = const(384)  # bytes: a telemetry packet is ~270, a birth ~150
_DEATH = const(6)  # protocol/schema.py DEATH (tests/test_const_copies.py checks the copy)

_SERIAL = {  # role -> (baud, bits, parity, stop) defaults from docs/devices.md
    "pump": (19200, 8, None, 1),
    "oximeter": (9600, 8, None, 1),
    "monitor": (19200, 8, 0, 1),  # Datex-Ohmeda S/5: 19200 8E1
}

# What the running node needs of firmware/config.py's Config.
_FIELDS = (
    "node_id",
    "gateway_kid",
    "node_key",
    "gateway_pub",
    "broker_host",
    "broker_port",
    "keepalive_s",
    "tls",
    "wiring",
    "node",
    "state_dir",
    "local_limits",
    "limit_names",
)


class Settings:
    """The configuration values, without the loader (see module docstring): the boot
    counter and the ``_FIELDS`` of Config."""

    boot = 0


def _settings(base):
    from firmware import bootcount, config
    from firmware.hal import wifi

    cfg = config.load(base)
    if cfg.wifi:
        wifi.connect(cfg.wifi["ssid"], cfg.wifi["password"])
    s = Settings()
    s.boot = bootcount.next_boot(cfg.state_dir)
    for name in _FIELDS:
        setattr(s, name, getattr(cfg, name))
    return s


def _drivers(wiring):
    from firmware.drivers.ne1000 import Ne1000Pump

    p = wiring["pump"]
    pump = Ne1000Pump(address=p.get("address"), saf_s=p.get("saf_s", 5))
    oxi = mon = None
    if "oximeter" in wiring:
        from firmware.drivers.masimo import Radical7

        oxi = Radical7()
    if "monitor" in wiring:
        from firmware.drivers.datex import DatexS5

        mon = DatexS5(interval_s=wiring["monitor"].get("interval_s", 5))
    return pump, oxi, mon


def _uarts(wiring):
    from firmware.hal import open_uart

    uarts = {}
    for role in wiring:
        dev = wiring[role]
        baud, bits, parity, stop = _SERIAL[role]
        uarts[role] = open_uart(
            dev["port"], dev.get("baud", baud), bits, parity, stop, dev.get("tx"), dev.get("rx")
        )
    return uarts


def death_message(signer, node_id, boot):
    """The Last Will, seq 0 of this boot, signed in advance: the broker publishes it when the
    node vanishes (build() gives it to the MQTT client)."""
    from protocol import cbor, cose
    from protocol.envelope import envelope

    return cose.encode(cbor.dumps(envelope(_DEATH, node_id, boot, 0, 0)), signer, node_id.encode())


def make_node(cfg, boot, now, uarts, pump, oximeter=None, monitor=None, board="unix",
              clock=None, log=None, signer=None, gateway_verifier=None):
    """The node (firmware/node.py) and its parts, from the configuration values (a Config,
    or the ``Settings`` copy of one). Here, not in the node's module, because it runs once:
    this code is unloaded with the rest of boot (the tests make their nodes with it too)."""
    from firmware.commands import CommandGate
    from firmware.node import KINDS, Node
    from firmware.outbox import Outbox
    from firmware.permit import Permit
    from firmware.sentlog import SentLog
    from protocol import cose, topics

    node_id = cfg.node_id
    # role -> (driver, UART object or None)
    devices = {"pump": (pump, uarts.get("pump"))}
    if oximeter is not None:
        devices["oximeter"] = (oximeter, uarts.get("oximeter"))
    if monitor is not None:
        devices["monitor"] = (monitor, uarts.get("monitor"))
    # MDC code -> (lo, hi, provisioning name such as "spo2"), lo/hi in the code's unit
    limits = {}
    for code in cfg.local_limits:
        lo, hi = cfg.local_limits[code]
        limits[code] = (lo, hi, cfg.limit_names.get(code, code))
    n = cfg.node
    return Node(
        node_id,
        boot,
        now,
        devices,
        signer or cose.Ed25519Signer(cfg.node_key),
        CommandGate(node_id, gateway_verifier or cose.Ed25519Verifier(cfg.gateway_pub),
                    cfg.gateway_kid, SentLog(32), n["command_max_age_ms"]),
        Permit(n["permit_max_ms"]),
        Outbox(cfg.state_dir + "/spool.bin", n["ram_slots"], n["spool_max_bytes"]),
        [topics.uplink(node_id, k) for k in KINDS],  # the uplink topics, made once
        n["telemetry_ms"],
        limits,
        # What the birth message says of this node: drivers by role, board name
        ([[role, cfg.wiring[role]["driver"]] for role in devices], board),
        clock,
        log,
    )


def build(base):
    """Return (node, client, downlink topic, watchdog); raises ConfigError, ValueError or
    OSError (main.py reports them) before anything is driven."""
    from firmware import log

    s = _settings(base)
    unload(
        (
            "firmware.config",
            "firmware.bootcount",
            "firmware.hal.storage",
            "firmware.hal.wifi",
            "protocol.mdc",
        )
    )
    gc.collect()
    from protocol import cbor, cose

    # One encode buffer for the node's life, taken while the heap is still in one piece:
    # a packet then needs one contiguous allocation (its bytes), not a growing buffer.
    cbor.use_scratch(bytearray(_ENCODE_BUFFER))
    signer = cose.Ed25519Signer(s.node_key)
    verifier = cose.Ed25519Verifier(s.gateway_pub)
    unload(("protocol._ed25519_setup",))  # the keys are expanded, the tables built
    gc.collect()
    from firmware.hal.watchdog import Watchdog
    from firmware.mqtt.client import MQTTClient, tls_context
    from protocol import topics

    # The objects with the largest instance dictionaries first (the client's is about
    # 1 KB), while the heap still has room in one piece; the drivers and the node after.
    death = death_message(signer, s.node_id, s.boot)
    tls = s.tls
    gc.collect()
    client = MQTTClient(
        s.node_id,
        s.broker_host,
        s.broker_port,
        keepalive=s.keepalive_s,
        will=(topics.uplink(s.node_id, "death"), death, 1, False),
        ssl=tls_context(tls["ca"], tls["cert"], tls["key"]) if tls else None,
        server_hostname=tls.get("server_hostname") if tls else None,
    )
    wiring = s.wiring
    pump, oxi, mon = _drivers(wiring)
    node = make_node(
        s,
        s.boot,
        time.ticks_ms(),
        _uarts(wiring),
        pump,
        oxi,
        mon,
        board=sys.platform,
        clock=time.ticks_ms,
        log=log.info,
        signer=signer,
        gateway_verifier=verifier,
    )
    log.info(
        "node %s boot %d: %s"
        % (s.node_id, s.boot, ", ".join(role + "=" + wiring[role]["port"] for role in wiring))
    )
    return node, client, topics.downlink(s.node_id), Watchdog(s.node["watchdog_ms"])


# Unloaded by main.py once build() has returned: the running node never calls them again.
BOOT_ONLY = ("firmware.boot", "firmware.hal", "protocol.topics")
