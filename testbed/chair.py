"""One emulated chair: pump, oximeter and monitor emulators on pseudo-terminals, a node
bundle (keys, config.json wired to those terminals) and the node itself (the DUT).

Vitals come from a *source*: ``ManualVitals`` (a test sets values directly) or the patient
model adapters in testbed/physiology.py.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulators import DatexS5, Ne1000Pump, PtyTransport, Radical7
from emulators.transport import SerialTransport
from protocol import cose
from testbed.dut import BoardNode, EmulatedNode

# Serial framing of each device (docs/devices.md), for real serial ports.
_SERIAL = {"pump": (19200, "N"), "oximeter": (9600, "N"), "monitor": (19200, "E")}


@dataclass
class ManualVitals:
    """Vitals a test sets by hand; ``None`` means the device shows no value (dashes)."""

    spo2: int | None = 97
    pulse: int | None = 72
    pi_x100: int | None = 250
    hr: int | None = 72
    nibp: tuple[int, int, int] | None = (125, 80, 95)  # mmHg: sys, dia, mean
    rr: int | None = 14
    etco2_mmhg: int | None = 38
    extra: dict[str, Any] = field(default_factory=dict)

    def oximeter(self) -> dict[str, Any]:
        return {"spo2": self.spo2, "bpm": self.pulse, "pi_x100": self.pi_x100}

    def monitor(self) -> dict[str, Any]:
        et = None if self.etco2_mmhg is None else round(self.etco2_mmhg / 760 * 10000)
        return {"hr": self.hr, "spo2_x100": None if self.spo2 is None else self.spo2 * 100,
                "rr": self.rr, "rr_imp": None, "etco2_pct_x100": et, "amb_press_x10": 7600,
                "nibp": None if self.nibp is None else tuple(v * 100 for v in self.nibp)}


class EmulatedChair:
    def __init__(self, workdir: Path, node_id: str, site: str, chair: str, *, broker_host: str,
                 broker_port: int, gateway_pub: bytes, oximeter_source: Any = None,
                 monitor_source: Any = None, speed: float = 1.0, with_monitor: bool = True,
                 local_limits: dict | None = None, heap: str = "256k", saf_s: int = 5,
                 telemetry_ms: int = 1000, nibp_interval_s: float | None = 60.0,
                 tls: dict | None = None, board: dict | None = None):
        """``board``: run against a real board instead of the unix port: ``{"port": the
        board's USB console, "uarts": {role: host serial port wired to that UART},
        "wiring": {role: {"port": "uart:N", "tx": pin, "rx": pin}}, "broker_host": the host's
        address as the board reaches it, "wifi": {"ssid", "password"} for a Wi-Fi board}``
        (docs/hil.md)."""
        self.node_id, self.site, self.chair = node_id, site, chair
        self.dir = workdir / node_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.vitals = ManualVitals()
        self.pump = Ne1000Pump(saf_s=0)
        self.pump.speed = speed
        self.oximeter = Radical7(oximeter_source or self.vitals.oximeter, period_s=1.0)
        self.monitor = (DatexS5(monitor_source or self.vitals.monitor,
                                nibp_interval_s=nibp_interval_s) if with_monitor else None)
        devices = {"pump": self.pump, "oximeter": self.oximeter}
        if self.monitor is not None:
            devices["monitor"] = self.monitor
        self.board = board
        self.transports: dict[str, Any] = {}
        for role, emu in devices.items():
            if board:
                baud, parity = _SERIAL[role]
                self.transports[role] = SerialTransport(emu, board["uarts"][role], baud,
                                                        parity=parity)
            else:
                self.transports[role] = PtyTransport(emu)
        self.seed = os.urandom(32)
        self.public = cose.Ed25519Signer(self.seed).public
        # A board reaches the broker over the network, not at this machine's loopback.
        host = board["broker_host"] if board else broker_host
        self._write_bundle(host, broker_port, gateway_pub, local_limits, saf_s,
                           telemetry_ms, tls)
        self.node: EmulatedNode | BoardNode = (
            BoardNode(board["port"], self.dir, workdir, node_id) if board
            else EmulatedNode(self.dir, workdir, node_id, heap=heap))

    @property
    def id(self) -> str:
        return "%s/%s" % (self.site, self.chair)

    def _write_bundle(self, host: str, port: int, gateway_pub: bytes, local_limits: dict | None,
                      saf_s: int, telemetry_ms: int, tls: dict | None) -> None:
        (self.dir / "node.key").write_bytes(self.seed)
        os.chmod(self.dir / "node.key", 0o600)
        (self.dir / "gateway.pub").write_bytes(gateway_pub)
        wiring: dict[str, Any] = {
            "pump": {"driver": "ne1000", "port": "pty:" + self.transports["pump"].path,
                     "saf_s": saf_s},
            "oximeter": {"driver": "radical7", "port": "pty:" + self.transports["oximeter"].path},
        }
        if "monitor" in self.transports:
            wiring["monitor"] = {"driver": "datex-s5",
                                 "port": "pty:" + self.transports["monitor"].path,
                                 "interval_s": 5}
        if self.board:
            for role in wiring:
                wiring[role].update(self.board["wiring"][role])
        state = self.dir / "state"
        state.mkdir(exist_ok=True)
        cfg = {
            "format": 1, "node_id": self.node_id, "site": self.site, "chair": self.chair,
            "gateway_kid": "gateway",
            "keys": {"node_key": "node.key", "gateway_pub": "gateway.pub"},
            "broker": {"host": host, "port": port, "keepalive_s": 5, "tls": tls},
            "wiring": wiring,
            "node": {"telemetry_ms": telemetry_ms, "state_dir": "state"},
            "local_limits": local_limits if local_limits is not None else {
                "spo2": {"min": 80}, "nibp_sys": {"max": 200}},
        }
        if self.board and self.board.get("wifi"):
            cfg["wifi"] = {"ssid": self.board["wifi"]["ssid"],
                           "password": self.board["wifi"]["password"]}
        (self.dir / "config.json").write_text(json.dumps(cfg, indent=2))

    def start(self) -> None:
        for t in self.transports.values():
            t.start()
        self.node.start()

    def stop(self) -> None:
        self.node.stop()
        for t in self.transports.values():
            t.stop()
