"""Node entry point: ``micropython -m firmware.main CONFIG_DIR`` (unix port), or main.py on
a board (CONFIG_DIR defaults to the board's root, where ``ivgw flash`` copies the bundle).

Boot order matters for safety: the configuration is validated and the boot counter is
persisted *before* any device is driven or any message is made.
"""

import sys

try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio  # type: ignore

from firmware import bootcount, config, log
from firmware.hal import open_uart, wifi
from firmware.hal.storage import ConfigError
from firmware.hal.watchdog import Watchdog
from protocol import topics

_SERIAL = {  # role -> (baud, bits, parity, stop) defaults from docs/devices.md
    "pump": (19200, 8, None, 1),
    "oximeter": (9600, 8, None, 1),
    "monitor": (19200, 8, 0, 1),  # Datex-Ohmeda S/5: 19200 8E1
}


def _open(role, dev):
    baud, bits, parity, stop = _SERIAL[role]
    return open_uart(dev["port"], dev.get("baud", baud), bits, parity, stop,
                     dev.get("tx"), dev.get("rx"))


def _drivers(cfg):
    from firmware.drivers.ne1000 import Ne1000Pump

    w = cfg.wiring
    pump = Ne1000Pump(address=w["pump"].get("address"), saf_s=w["pump"].get("saf_s", 5))
    oxi = mon = None
    if "oximeter" in w:
        from firmware.drivers.masimo import Radical7

        oxi = Radical7()
    if "monitor" in w:
        from firmware.drivers.datex import DatexS5

        mon = DatexS5(interval_s=w["monitor"].get("interval_s", 5))
    return pump, oxi, mon


def _unload(*names):
    for name in names:
        sys.modules.pop(name, None)


def build(base):
    """Boot in the order that keeps the heap small: the Ed25519 tables (the largest single
    allocations) are built first on an empty heap; boot-only modules are dropped before the
    run-time ones are imported (docs/firmware.md, "Footprint")."""
    import gc
    import time

    cfg = config.load(base)
    if cfg.wifi:
        wifi.connect(cfg.wifi["ssid"], cfg.wifi["password"])
    boot = bootcount.next_boot(cfg.state_dir)
    _unload("firmware.bootcount", "firmware.config", "firmware.hal.wifi")
    gc.collect()
    from protocol import cose

    signer = cose.Ed25519Signer(cfg.node_key)
    verifier = cose.Ed25519Verifier(cfg.gateway_pub)
    gc.collect()

    from firmware.mqtt.client import MQTTClient, tls_context
    from firmware.node import Node

    pump, oxi, mon = _drivers(cfg)
    uarts = {}
    for role in cfg.wiring:
        uarts[role] = _open(role, cfg.wiring[role])
    node = Node(cfg, boot, time.ticks_ms(), uarts, pump, oxi, mon, board=sys.platform,
                clock=time.ticks_ms, log=log.info, signer=signer, gateway_verifier=verifier)
    ssl = None
    if cfg.tls:
        ssl = tls_context(cfg.tls["ca"], cfg.tls["cert"], cfg.tls["key"])
    client = MQTTClient(
        cfg.node_id, cfg.broker_host, cfg.broker_port, keepalive=cfg.keepalive_s,
        will=(topics.uplink(cfg.node_id, "death"), node.death, 1, False), ssl=ssl,
        server_hostname=cfg.tls.get("server_hostname") if cfg.tls else None,
    )
    log.info("node %s boot %d: %s" % (cfg.node_id, boot, ", ".join(
        role + "=" + cfg.wiring[role]["port"] for role in cfg.wiring)))
    gc.collect()
    return cfg, node, client


def main(base="."):
    from firmware import runner

    try:
        cfg, node, client = build(base)
    except (ConfigError, ValueError, OSError) as e:
        log.info("CONFIG ERROR: %s" % e)
        sys.exit(2)
    runner.attach(node, client, topics.downlink(cfg.node_id))
    asyncio.run(runner.run(node, client, Watchdog(cfg.node["watchdog_ms"])))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
