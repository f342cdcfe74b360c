"""The gateway's one TOML configuration file, with documented defaults (docs/gateway.md).

Every setting has a default except the clinical files, which a clinic must choose. Paths
are relative to the configuration file's folder. Any problem is a ConfigError whose message
names the file, the section and the key.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A bad or missing configuration setting; the message is one sentence for the user."""


@dataclass(frozen=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    protocol: str = "5"  # "5" or "3.1.1"
    client_id: str = "ivgw-gateway"
    keepalive_s: int = 10
    username: str = ""
    password: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""


@dataclass(frozen=True)
class GatewaySettings:
    data_dir: str = "ivgw-data"
    key_file: str = "gateway.key"
    kid: str = "gateway"
    workers: int = 1
    control_socket: str = "ivgw.sock"
    tick_ms: int = 100
    emulation_speed: float = 1.0
    """Only for benches and the demo, whose emulated pumps infuse N times faster than their
    rate: the dose-conformance check scales elapsed time by it. Must be 1.0 with real pumps."""


@dataclass(frozen=True)
class PermitSettings:
    lifetime_ms: int = 5000
    """How long a permit lets the pump run without renewal. The gateway renews on every
    telemetry packet (1/s), so a 5 s permit survives four lost packets and still stops the
    pump within 5 s of the gateway, broker or network dying."""


@dataclass(frozen=True)
class TrafficSettings:
    packets_per_s: float = 50.0
    packet_burst: float = 500.0
    bytes_per_s: float = 50_000.0
    byte_burst: float = 500_000.0


@dataclass(frozen=True)
class ClinicalSettings:
    drug_library: str = ""
    rules: str = ""
    care_area: str = "ketamine-trd"
    conformance_tolerance_pct: float = 5.0


@dataclass(frozen=True)
class OutputSettings:
    hl7: bool = False


@dataclass(frozen=True)
class Config:
    path: str
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    permit: PermitSettings = field(default_factory=PermitSettings)
    traffic: TrafficSettings = field(default_factory=TrafficSettings)
    clinical: ClinicalSettings = field(default_factory=ClinicalSettings)
    outputs: OutputSettings = field(default_factory=OutputSettings)

    def resolve(self, p: str) -> Path:
        """A path from the configuration, relative to the configuration file's folder."""
        base = Path(self.path).parent if self.path else Path.cwd()
        return (base / p).resolve() if p else base

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.gateway.data_dir)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "ivgw.sqlite3"

    @property
    def key_path(self) -> Path:
        return self.data_dir / self.gateway.key_file

    @property
    def socket_path(self) -> Path:
        return self.data_dir / self.gateway.control_socket


_SECTIONS = {
    "gateway": GatewaySettings,
    "mqtt": MqttSettings,
    "permit": PermitSettings,
    "traffic": TrafficSettings,
    "clinical": ClinicalSettings,
    "outputs": OutputSettings,
}


def _section(path: str, name: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError("%s: [%s] must be a table" % (path, name))
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        f = known.get(key)
        if f is None:
            raise ConfigError("%s: [%s] %s: unknown setting (known: %s)"
                              % (path, name, key, ", ".join(sorted(known))))
        default = f.default
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        else:
            ok = isinstance(value, str)
        if not ok:
            raise ConfigError("%s: [%s] %s: expected %s, got %r"
                              % (path, name, key, type(default).__name__, value))
        values[key] = value
    return cls(**values)


def load(path: str | os.PathLike[str] | None) -> Config:
    """Load a configuration file; ``None`` gives the defaults (the demo uses that)."""
    if path is None:
        return Config(path="")
    p = str(path)
    try:
        with open(p, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("%s: configuration file not found" % p) from None
    except PermissionError:
        raise ConfigError("%s: not readable by this user" % p) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("%s: not valid TOML (%s)" % (p, e)) from None
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        cls = _SECTIONS.get(name)
        if cls is None:
            raise ConfigError("%s: [%s]: unknown section (known: %s)"
                              % (p, name, ", ".join(sorted(_SECTIONS))))
        kwargs[name] = _section(p, name, cls, value)
    cfg = Config(path=p, **kwargs)
    if cfg.mqtt.protocol not in ("5", "3.1.1"):
        raise ConfigError("%s: [mqtt] protocol: use \"5\" or \"3.1.1\"" % p)
    if not 20 <= cfg.gateway.tick_ms <= 1000:
        # The tick bounds how late a duration rule or a silent node is noticed.
        raise ConfigError("%s: [gateway] tick_ms: must be 20..1000" % p)
    if cfg.permit.lifetime_ms < 1000 or cfg.permit.lifetime_ms > 60000:
        raise ConfigError("%s: [permit] lifetime_ms: must be 1000..60000" % p)
    return cfg
