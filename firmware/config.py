"""The node's provisioning files: identity, keys, broker, wiring, limits (docs/provisioning.md).

All of it comes from files on the board's filesystem written by ``ivgw provision``; nothing
about a chair is ever edited into code. Every problem is a ConfigError naming the file and
the field, printed on the console at boot, before anything touches the pump.
"""

from firmware.hal.storage import ConfigError, read_bytes, read_json
from protocol import mdc, topics
from protocol.errors import TopicError

FORMAT = 1

# Names of vitals in the ``local_limits`` section -> MDC code.
VITAL_NAMES = {
    "spo2": mdc.SPO2,
    "pulse": mdc.PULSE_OXIM,
    "hr": mdc.HR_ECG,
    "nibp_sys": mdc.NIBP_SYS,
    "nibp_dia": mdc.NIBP_DIA,
    "rr": mdc.RESP_RATE,
    "etco2": mdc.ETCO2,
}

DRIVERS = {"pump": ("ne1000",), "oximeter": ("radical7",), "monitor": ("datex-s5",)}

_NODE_DEFAULTS = {
    "telemetry_ms": 1000,
    "permit_max_ms": 10000,
    "command_max_age_ms": 5000,
    "spool_max_bytes": 262144,
    "ram_slots": 8,
    "watchdog_ms": 8000,
}


class Config:
    """Validated configuration; attributes mirror the JSON sections."""

    def __init__(self, base, data):
        self.base = base
        where = base + "/config.json"
        if not isinstance(data, dict):
            raise ConfigError(where + ": top level must be an object")
        if data.get("format") != FORMAT:
            raise ConfigError(where + ": format must be %d, got %r" % (FORMAT, data.get("format")))
        self.node_id = _id(data, "node_id", where)
        self.site = _id(data, "site", where)
        self.chair = _id(data, "chair", where)
        self.gateway_kid = _str(data, "gateway_kid", where).encode()
        keys = _obj(data, "keys", where)
        self.node_key = _key_file(base, keys, "node_key", where)
        self.gateway_pub = _key_file(base, keys, "gateway_pub", where)
        if len(self.node_key) != 32:
            raise ConfigError(where + ": keys.node_key must name a 32-byte Ed25519 seed file")
        if len(self.gateway_pub) != 32:
            raise ConfigError(where + ": keys.gateway_pub must name a 32-byte Ed25519 key file")
        broker = _obj(data, "broker", where)
        self.broker_host = _str(broker, "host", where + ": broker")
        self.broker_port = _int(broker, "port", where + ": broker", 1, 65535)
        self.keepalive_s = _int(broker, "keepalive_s", where + ": broker", 2, 600, 10)
        tls = broker.get("tls")
        self.tls = None
        if tls is not None:
            if not isinstance(tls, dict):
                raise ConfigError(where + ": broker.tls must be an object or null")
            self.tls = {}
            for k in ("ca", "cert", "key"):
                self.tls[k] = _path(base, _str(tls, k, where + ": broker.tls"))
            self.tls["server_hostname"] = tls.get("server_hostname")
        self.wifi = data.get("wifi")
        self.wiring = {}
        wiring = _obj(data, "wiring", where)
        for role in wiring:
            if role not in DRIVERS:
                raise ConfigError(where + ": wiring.%s: unknown role (use %s)"
                                  % (role, ", ".join(sorted(DRIVERS))))
            dev = wiring[role]
            w = where + ": wiring." + role
            if not isinstance(dev, dict):
                raise ConfigError(w + " must be an object")
            driver = _str(dev, "driver", w)
            if driver not in DRIVERS[role]:
                raise ConfigError(w + ".driver: %r is not a %s driver (have %s)"
                                  % (driver, role, ", ".join(DRIVERS[role])))
            _str(dev, "port", w)
            self.wiring[role] = dev
        if "pump" not in self.wiring:
            raise ConfigError(where + ": wiring.pump is required")
        node = data.get("node") or {}
        self.node = {}
        for k in _NODE_DEFAULTS:
            self.node[k] = _int(node, k, where + ": node", 0, 1 << 30, _NODE_DEFAULTS[k])
        for k in node:
            if k not in _NODE_DEFAULTS and k != "state_dir":
                raise ConfigError(where + ": node.%s: unknown setting" % k)
        self.state_dir = _path(base, node.get("state_dir", "."))
        self.local_limits = {}
        self.limit_names = {}  # MDC code -> the name used here, for the node's messages
        limits = data.get("local_limits") or {}
        for name in limits:
            code = VITAL_NAMES.get(name)
            if code is None:
                raise ConfigError(where + ": local_limits.%s: unknown vital (use %s)"
                                  % (name, ", ".join(sorted(VITAL_NAMES))))
            lim = limits[name]
            w = where + ": local_limits." + name
            lo = lim.get("min") if isinstance(lim, dict) else None
            hi = lim.get("max") if isinstance(lim, dict) else None
            if not isinstance(lim, dict) or (lo is None and hi is None):
                raise ConfigError(w + " must be an object with min and/or max")
            for v in (lo, hi):
                if v is not None and not isinstance(v, int):
                    raise ConfigError(w + ": limits are whole numbers in the vital's unit")
            self.local_limits[code] = (lo, hi)
            self.limit_names[code] = name


def _id(d, key, where):
    try:
        return topics.check_id(d.get(key), key)
    except TopicError as e:
        raise ConfigError(where + ": " + e.detail)


def _str(d, key, where):
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise ConfigError("%s.%s: required text" % (where, key))
    return v


def _obj(d, key, where):
    v = d.get(key)
    if not isinstance(v, dict):
        raise ConfigError("%s: %s must be an object" % (where, key))
    return v


def _int(d, key, where, lo, hi, default=None):
    v = d.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ConfigError("%s.%s: whole number %d..%d required, got %r" % (where, key, lo, hi, v))
    return v


def _key_file(base, keys, name, where):
    path = _path(base, _str(keys, name, where + ": keys"))
    try:
        return read_bytes(path)
    except ConfigError as e:
        raise ConfigError("%s: keys.%s: %s" % (where, name, e))


def _path(base, name):
    return name if name.startswith("/") else base + "/" + name


def load(base):
    """Read ``base/config.json`` and the key files it names."""
    return Config(base, read_json(base + "/config.json"))
