"""Provisioning: ``init``, ``provision``, ``keys rotate|revoke|list``, ``broker-config`` and
``flash`` (docs/cli.md "Provisioning" and "Broker"; bundle formats in docs/provisioning.md).

Why the order of steps in ``provision`` and ``keys rotate``: the bundle files are staged
first (an unwritable folder fails before anything is registered), then the key is
registered together with its audit record in one transaction, then the staged files
replace the old ones, and only then is the running gateway asked to reload its keys. If
the registration fails the staged files are removed: a bundle on disk holds a key the
gateway knows, or the one it held before.

The CLI writes to the database while the gateway runs (``gateway_lock=False``): a key
registration is one short transaction, and SQLite's WAL lets both coexist.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import ipaddress
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from gateway import certs
from gateway.audit import AuditLog, Kinds, format_at
from gateway.cli import app
from gateway.cli.common import (
    CONFIG,
    NOT_FOUND,
    REFUSED,
    UNREACHABLE,
    USAGE,
    CliError,
    ConfigOption,
    JsonOption,
    config,
    console,
    err_console,
    friendly,
    print_json,
)
from gateway.config import Config, ConfigError
from gateway.db import open_db, transaction
from gateway.service import ServiceError, control_request, load_gateway_key
from gateway.store import NodeRecord, Store
from protocol import topics
from protocol.cose import ALG_EDDSA, ALG_NAMES
from protocol.errors import TopicError

# Bundle file names: exactly what firmware/config.py reads (docs/provisioning.md).
CONFIG_JSON = "config.json"
NODE_KEY = "node.key"
GATEWAY_PUB = "gateway.pub"
TLS_CA = "ca.crt"
TLS_CERT = "node.crt"
TLS_KEY = "node-tls.key"
BUNDLE_FILES = (CONFIG_JSON, NODE_KEY, GATEWAY_PUB, TLS_CA, TLS_CERT, TLS_KEY)

# The node's own settings, as firmware/config.py defaults them; written out in full so the
# engineer sees what can be tuned.
NODE_SETTINGS = {
    "telemetry_ms": 1000,
    "permit_max_ms": 10000,
    "command_max_age_ms": 5000,
    "spool_max_bytes": 262144,
    "ram_slots": 8,
    "watchdog_ms": 8000,
}

# EXAMPLE node-local hard limits (the ICE PCA app's critical limits, see
# /work/shared/reference/clinical.md): a backstop that stops the pump on the node itself if
# the gateway's interlocks never act. A clinic's medical director sets the real values.
EXAMPLE_LOCAL_LIMITS: dict[str, dict[str, int]] = {
    "spo2": {"min": 85},
    "pulse": {"min": 20, "max": 160},
    "nibp_sys": {"min": 60, "max": 180},
    "nibp_dia": {"min": 40, "max": 120},
}

_PORT_KINDS = ("uart:", "pty:", "tcp:")

OperatorOption = typer.Option(
    None,
    "--operator",
    envvar="IVGW_OPERATOR",
    help="Who does this (recorded in the audit log). Default: $IVGW_OPERATOR, else your "
    "login name.",
)


# --- helpers ---------------------------------------------------------------------------------


def fingerprint(public: bytes) -> str:
    """Short, stable label of a public key for people: the first 16 hex digits of SHA-256."""
    return hashlib.sha256(public).hexdigest()[:16]


def _actor(operator: str | None) -> str:
    name = operator or os.environ.get("IVGW_OPERATOR") or _login()
    return "user:" + name


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _check_id(value: str, what: str) -> str:
    try:
        topics.check_id(value, what)
    except TopicError as e:
        raise CliError(e.detail, USAGE) from None
    return value


def _check_node_id(node: str) -> str:
    _check_id(node, "node id")
    if certs.reserved(node):
        raise CliError(
            "node id %r: ids starting with %s are reserved for the gateway, the "
            "broker and central systems" % (node, " or ".join(certs.RESERVED_PREFIXES)),
            USAGE,
        )
    return node


def _gateway_public(cfg: Config) -> bytes:
    try:
        seed = load_gateway_key(cfg.key_path)
    except ServiceError as e:
        raise CliError(str(e), CONFIG) from None
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def _new_keypair() -> tuple[bytes, bytes]:
    key = Ed25519PrivateKey.generate()
    return key.private_bytes_raw(), key.public_key().public_bytes_raw()


@contextlib.contextmanager
def _writable(cfg: Config) -> Iterator[tuple[sqlite3.Connection, Store, AuditLog]]:
    if not cfg.db_path.exists():
        raise CliError("no gateway database at %s: run `ivgw init` first" % cfg.db_path, CONFIG)
    conn = open_db(cfg.db_path, gateway_lock=False)
    try:
        yield conn, Store(conn), AuditLog(conn)
    finally:
        conn.close()


@contextlib.contextmanager
def _readonly(cfg: Config) -> Iterator[Store]:
    if not cfg.db_path.exists():
        raise CliError("no gateway database at %s: run `ivgw init` first" % cfg.db_path, CONFIG)
    conn = open_db(cfg.db_path, readonly=True)
    try:
        yield Store(conn)
    finally:
        conn.close()


def _known(store: Store, node: str) -> NodeRecord:
    rec = store.node(node)
    if rec is None:
        known = ", ".join(n.node_id for n in store.nodes()) or "none"
        raise CliError("unknown node %r (registered: %s)" % (node, known), NOT_FOUND)
    return rec


def _reload(cfg: Config) -> str:
    """Ask a running gateway to pick up the key change; a stopped one reads keys at start."""
    try:
        resp = control_request(cfg, {"op": "reload_keys"}, timeout=5.0)
    except ConfigError as e:
        if "not running" in str(e):
            return "the gateway is not running; it loads the keys when it starts"
        return "could not ask the gateway to reload keys (%s); restart it" % e
    except (OSError, ValueError) as e:
        return "could not ask the gateway to reload keys (%s); restart it" % e
    if resp.get("ok"):
        n = (resp.get("result") or {}).get("nodes", "?")
        return "the running gateway reloaded its keys (%s nodes)" % n
    return "the gateway did not reload its keys (%s); restart it" % resp.get("error", "refused")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _tls_section(broker_host: str) -> dict[str, Any]:
    # The node checks the broker's certificate against this name. An IP address is not
    # checked reliably by every mbedTLS build, so for one the node checks the broker's
    # fixed name, which every server certificate from `ivgw broker-config` carries.
    name = certs.SERVER_CN if _is_ip(broker_host) else broker_host
    return {"ca": TLS_CA, "cert": TLS_CERT, "key": TLS_KEY, "server_hostname": name}


def node_config(
    node: str,
    site: str,
    chair: str,
    gateway_kid: str,
    broker_host: str,
    broker_port: int,
    tls: bool,
    wiring: dict[str, dict[str, Any]],
    local_limits: bool,
) -> dict[str, Any]:
    """The node's config.json, in the format firmware/config.py accepts (format 1)."""
    data: dict[str, Any] = {
        "format": 1,
        "node_id": node,
        "site": site,
        "chair": chair,
        "gateway_kid": gateway_kid,
        "keys": {"node_key": NODE_KEY, "gateway_pub": GATEWAY_PUB},
        "broker": {
            "host": broker_host,
            "port": broker_port,
            "keepalive_s": 10,
            "tls": _tls_section(broker_host) if tls else None,
        },
        "wiring": wiring,
        "node": dict(NODE_SETTINGS),
    }
    if local_limits:
        data["local_limits"] = {k: dict(v) for k, v in EXAMPLE_LOCAL_LIMITS.items()}
    return data


def _wiring(pump: str, oximeter: str | None, monitor: str | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for role, driver, port in (
        ("pump", "ne1000", pump),
        ("oximeter", "radical7", oximeter),
        ("monitor", "datex-s5", monitor),
    ):
        if port is None or port == "" or port.lower() == "none":
            if role == "pump":
                raise CliError("--pump-port is required (the node always drives a pump)", USAGE)
            continue
        if not port.startswith(_PORT_KINDS) or len(port) <= port.index(":") + 1:
            raise CliError(
                "--%s-port %r: use uart:N (a board UART), pty:PATH or tcp:HOST:PORT" % (role, port),
                USAGE,
            )
        out[role] = {"driver": driver, "port": port}
    return out


# Staged writes: "<name>.new" files, moved into place only after the database commit.


def _stage(out: Path, files: dict[str, tuple[bytes, bool]]) -> list[tuple[Path, Path]]:
    try:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise CliError(
            "cannot create the bundle folder %s (%s)" % (out, e.strerror or e), CONFIG
        ) from None
    staged: list[tuple[Path, Path]] = []
    try:
        for name, (data, private) in files.items():
            final = out / name
            tmp = out / (name + ".new")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600 if private else 0o644)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            staged.append((tmp, final))
    except OSError as e:
        _discard(staged)
        raise CliError(
            "cannot write the bundle in %s (%s)" % (out, e.strerror or e), CONFIG
        ) from None
    return staged


def _discard(staged: list[tuple[Path, Path]]) -> None:
    for tmp, _final in staged:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _install(staged: list[tuple[Path, Path]]) -> None:
    for tmp, final in staged:
        os.replace(tmp, final)


def _bundle_dir(cfg: Config, node: str, given: Path | None) -> Path:
    return Path(given) if given is not None else cfg.data_dir / "bundles" / node


def _pki(cfg: Config) -> Path:
    return cfg.data_dir / "pki"


def _load_ca(cfg: Config) -> certs.CertificateAuthority:
    try:
        return certs.load_ca(_pki(cfg))
    except certs.CertError as e:
        raise CliError(str(e), CONFIG) from None


def _read_bundle_config(bundle: Path) -> dict[str, Any]:
    path = bundle / CONFIG_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CliError(
            "no bundle at %s (no %s there); give --bundle DIR" % (bundle, CONFIG_JSON), NOT_FOUND
        ) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise CliError("%s: not valid JSON (%s)" % (path, e), CONFIG) from None
    if not isinstance(data, dict):
        raise CliError("%s: the top level must be an object" % path, CONFIG)
    return data


def _bundle_owner(bundle: Path) -> str | None:
    """The node id of a bundle already in ``bundle`` (None: none there, or unreadable)."""
    try:
        data = json.loads((bundle / CONFIG_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    held = data.get("node_id") if isinstance(data, dict) else None
    return str(held) if held is not None else None


def _tls_files(ca: certs.CertificateAuthority, node: str) -> dict[str, tuple[bytes, bool]]:
    issued = ca.issue_client(node)
    return {
        TLS_CA: (ca.cert_pem, False),
        TLS_CERT: (issued.cert_pem, False),
        TLS_KEY: (issued.key_pem, True),
    }


def _dump(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode("utf-8")


# --- ivgw init --------------------------------------------------------------------------------


@app.command("init")
@friendly
def init_cmd(config_path: Path = ConfigOption, as_json: bool = JsonOption) -> None:
    """Create the data folder, the gateway's signing key and the database (safe to re-run).

    Prints the gateway's Ed25519 public key and key id: every node bundle carries them, so
    nodes accept commands from this gateway only."""
    cfg = config(config_path)
    existed = cfg.key_path.exists() and cfg.db_path.exists()
    try:
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise CliError(
            "cannot create the data folder %s (%s)" % (cfg.data_dir, e.strerror or e), CONFIG
        ) from None
    try:
        seed = load_gateway_key(cfg.key_path, create=True)
    except ServiceError as e:
        raise CliError(str(e), CONFIG) from None
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    conn = open_db(cfg.db_path, gateway_lock=False)
    try:
        Store(conn)
        chain = AuditLog(conn).chain_id
    finally:
        conn.close()
    info = {
        "data_dir": str(cfg.data_dir),
        "database": str(cfg.db_path),
        "key_file": str(cfg.key_path),
        "kid": cfg.gateway.kid,
        "public_key": public.hex(),
        "fingerprint": fingerprint(public),
        "audit_chain": chain,
        "created": not existed,
    }
    if as_json:
        print_json(info)
        return
    console.print(
        "%s gateway data in %s"
        % ("initialized" if not existed else "already initialized:", cfg.data_dir),
        highlight=False,
        soft_wrap=True,
    )
    console.print("gateway key id:     %s" % cfg.gateway.kid, highlight=False, soft_wrap=True)
    console.print("gateway public key: %s" % public.hex(), highlight=False, soft_wrap=True)
    console.print("key fingerprint:    %s" % fingerprint(public), highlight=False, soft_wrap=True)
    console.print(
        "next: `ivgw broker-config` (TLS broker), then `ivgw provision NODE --site S --chair C`",
        highlight=False,
        soft_wrap=True,
    )


# --- ivgw provision ---------------------------------------------------------------------------


@app.command("provision")
@friendly
def provision_cmd(
    node: str = typer.Argument(
        ..., help="Node id: 1-32 of A-Z a-z 0-9 - _ (not ivgw-*/central-*)."
    ),
    site: str = typer.Option(..., "--site", help="Site id (clinic location), e.g. north."),
    chair: str = typer.Option(..., "--chair", help="Chair id at the site, e.g. c1."),
    broker_host: str = typer.Option(
        None,
        "--broker-host",
        help="Broker name or address as the node reaches it. "
        "Default: [mqtt] host of the configuration.",
    ),
    broker_port: int = typer.Option(
        None,
        "--broker-port",
        min=1,
        max=65535,
        help="Broker port. Default: 8883 with TLS, else [mqtt] port.",
    ),
    tls: bool = typer.Option(
        None,
        "--tls/--no-tls",
        help="Mutual TLS with a client certificate from the broker CA. "
        "Default: on when `ivgw broker-config` has made the CA.",
    ),
    pump_port: str = typer.Option(
        "uart:1", "--pump-port", help="Pump serial port: uart:N, pty:PATH or tcp:HOST:PORT."
    ),
    oximeter_port: str = typer.Option(
        "uart:2", "--oximeter-port", help="Pulse oximeter port, or none."
    ),
    monitor_port: str = typer.Option(
        None, "--monitor-port", help="Multiparameter monitor port (none by default)."
    ),
    local_limits: bool = typer.Option(
        True, "--local-limits/--no-local-limits", help="Write the EXAMPLE node-local hard limits."
    ),
    out: Annotated[
        Path | None, typer.Option("--out", help="Bundle folder. Default: <data_dir>/bundles/NODE.")
    ] = None,
    operator: str = OperatorOption,
    config_path: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Make a node's key pair and provisioning bundle, and register the node.

    The bundle holds exactly what the node reads at boot (docs/provisioning.md): config.json,
    node.key (its Ed25519 seed, mode 0600), gateway.pub and, with TLS, ca.crt, node.crt and
    node-tls.key. Copy it to the board with `ivgw flash`."""
    cfg = config(config_path)
    _check_node_id(node)
    _check_id(site, "site")
    _check_id(chair, "chair")
    wiring = _wiring(pump_port, oximeter_port, monitor_port)
    gateway_pub = _gateway_public(cfg)
    has_ca = certs.ca_exists(_pki(cfg))
    use_tls = has_ca if tls is None else tls
    if use_tls and not has_ca:
        raise CliError(
            "--tls needs the broker CA in %s: run `ivgw broker-config` first" % _pki(cfg), CONFIG
        )
    host = broker_host or cfg.mqtt.host
    port = broker_port or (8883 if use_tls else cfg.mqtt.port)
    bundle = _bundle_dir(cfg, node, out)
    chair_id = "%s/%s" % (site, chair)
    with _writable(cfg) as (conn, store, audit):
        rec = store.node(node)
        if rec is not None:
            raise CliError(
                "node %s is already registered (chair %s); use `ivgw keys rotate %s` "
                "for a new key" % (node, rec.chair_id, node),
                REFUSED,
            )
        other = store.node_for_chair(site, chair)
        if other is not None:
            raise CliError(
                "chair %s is already taken by node %s; revoke it with `ivgw keys revoke "
                "%s` or choose another chair" % (chair_id, other.node_id, other.node_id),
                REFUSED,
            )
        held = _bundle_owner(bundle)
        if held is not None and held != node:
            raise CliError(
                "%s already holds the bundle of node %s; choose another --out" % (bundle, held),
                REFUSED,
            )
        seed, public = _new_keypair()
        data = node_config(
            node, site, chair, cfg.gateway.kid, host, port, use_tls, wiring, local_limits
        )
        files: dict[str, tuple[bytes, bool]] = {
            CONFIG_JSON: (_dump(data), False),
            NODE_KEY: (seed, True),
            GATEWAY_PUB: (gateway_pub, False),
        }
        if use_tls:
            files.update(_tls_files(_load_ca(cfg), node))
        staged = _stage(bundle, files)
        try:
            with transaction(conn):
                store.register_node(node, site, chair, ALG_EDDSA, public, time.time())
                audit.append(
                    Kinds.KEY_REGISTERED,
                    actor=_actor(operator),
                    chair=chair_id,
                    subject=node,
                    data={
                        "node": node,
                        "alg": ALG_NAMES[ALG_EDDSA],
                        "key_version": 1,
                        "fingerprint": fingerprint(public),
                        "tls": use_tls,
                    },
                )
        except sqlite3.IntegrityError:
            _discard(staged)
            raise CliError(
                "node %s or chair %s was registered meanwhile; run `ivgw keys list`"
                % (node, chair_id),
                REFUSED,
            ) from None
        except BaseException:
            _discard(staged)
            raise
        _install(staged)
    reload_msg = _reload(cfg)
    result = {
        "node": node,
        "chair": chair_id,
        "fingerprint": fingerprint(public),
        "bundle": str(bundle),
        "files": sorted(files),
        "tls": use_tls,
        "broker": "%s:%d" % (host, port),
        "gateway": reload_msg,
    }
    if as_json:
        print_json(result)
        return
    console.print(
        "registered node [bold]%s[/] for chair %s, key %s" % (node, chair_id, fingerprint(public)),
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        "bundle in %s: %s" % (bundle, ", ".join(sorted(files))), highlight=False, soft_wrap=True
    )
    console.print(
        "broker %s:%d, %s"
        % (host, port, "mutual TLS" if use_tls else "[yellow]no TLS[/] (plain MQTT)"),
        highlight=False,
        soft_wrap=True,
    )
    if local_limits:
        console.print(
            "[yellow]the local_limits in config.json are EXAMPLES for the clinic's "
            "medical director to set[/]"
        )
    console.print(reload_msg, highlight=False, soft_wrap=True)
    console.print("next: `ivgw flash PORT --node %s`" % node, highlight=False, soft_wrap=True)


# --- ivgw keys ... ------------------------------------------------------------------------------

keys_app = typer.Typer(name="keys", help="Node keys: list, rotate, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("rotate")
@friendly
def keys_rotate(
    node: str = typer.Argument(..., help="Registered node id."),
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle", help="The node's bundle folder. Default: <data_dir>/bundles/NODE."
        ),
    ] = None,
    tls: bool = typer.Option(
        False,
        "--tls",
        help="Also give a bundle without TLS a client "
        "certificate (a TLS bundle always gets a new one).",
    ),
    broker_port: int = typer.Option(
        None, "--broker-port", min=1, max=65535, help="Change the broker port in config.json."
    ),
    operator: str = OperatorOption,
    config_path: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Give a node a new key pair: the bundle's node.key (and TLS key) are replaced, the old
    key stops working at once. A revoked node is re-admitted with the new key. Flash the
    bundle to the board again afterwards."""
    cfg = config(config_path)
    _check_id(node, "node id")
    gateway_pub = _gateway_public(cfg)
    folder = _bundle_dir(cfg, node, bundle)
    with _writable(cfg) as (conn, store, audit):
        rec = _known(store, node)
        data = _read_bundle_config(folder)
        if data.get("node_id") != node:
            raise CliError(
                "%s holds the bundle of node %s, not %s" % (folder, data.get("node_id"), node),
                REFUSED,
            )
        broker = data.get("broker")
        if not isinstance(broker, dict):
            raise CliError("%s/%s: broker must be an object" % (folder, CONFIG_JSON), CONFIG)
        use_tls = bool(broker.get("tls")) or tls
        if broker_port is not None:
            broker["port"] = broker_port
        if use_tls and not broker.get("tls"):
            broker["tls"] = _tls_section(str(broker.get("host", "")))
        seed, public = _new_keypair()
        files: dict[str, tuple[bytes, bool]] = {
            NODE_KEY: (seed, True),
            GATEWAY_PUB: (gateway_pub, False),
            CONFIG_JSON: (_dump(data), False),
        }
        if use_tls:
            files.update(_tls_files(_load_ca(cfg), node))
        staged = _stage(folder, files)
        try:
            with transaction(conn):
                store.rotate_key(node, ALG_EDDSA, public, time.time())
                audit.append(
                    Kinds.KEY_ROTATED,
                    actor=_actor(operator),
                    chair=rec.chair_id,
                    subject=node,
                    data={
                        "node": node,
                        "alg": ALG_NAMES[ALG_EDDSA],
                        "key_version": rec.key_version + 1,
                        "fingerprint": fingerprint(public),
                        "previous_fingerprint": fingerprint(rec.public_key),
                        "was_revoked": rec.revoked_at is not None,
                        "tls": use_tls,
                    },
                )
        except BaseException:
            _discard(staged)
            raise
        _install(staged)
    reload_msg = _reload(cfg)
    result = {
        "node": node,
        "key_version": rec.key_version + 1,
        "fingerprint": fingerprint(public),
        "previous": fingerprint(rec.public_key),
        "bundle": str(folder),
        "tls": use_tls,
        "readmitted": rec.revoked_at is not None,
        "gateway": reload_msg,
    }
    if as_json:
        print_json(result)
        return
    console.print(
        "node %s: key %s replaced by %s (version %d)"
        % (node, fingerprint(rec.public_key), fingerprint(public), rec.key_version + 1),
        highlight=False,
    )
    if rec.revoked_at is not None:
        console.print("[yellow]node %s was revoked; the new key re-admits it[/]" % node)
    console.print(
        "bundle updated in %s; flash it: `ivgw flash PORT --node %s`" % (folder, node),
        highlight=False,
    )
    console.print(reload_msg, highlight=False, soft_wrap=True)


@keys_app.command("revoke")
@friendly
def keys_revoke(
    node: str = typer.Argument(..., help="Registered node id."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the audit log)."),
    operator: str = OperatorOption,
    config_path: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Revoke a node's key: from now on every packet it sends is rejected (node.revoked), so
    the gateway grants it no permits and its pump stops when the current permit lapses."""
    cfg = config(config_path)
    _check_id(node, "node id")
    if not reason.strip():
        raise CliError("--reason must say why the key is revoked", USAGE)
    with _writable(cfg) as (conn, store, audit):
        rec = _known(store, node)
        already = rec.revoked_at is not None
        if not already:
            with transaction(conn):
                store.revoke(node, time.time())
                audit.append(
                    Kinds.KEY_REVOKED,
                    actor=_actor(operator),
                    chair=rec.chair_id,
                    subject=node,
                    data={
                        "node": node,
                        "reason": reason,
                        "key_version": rec.key_version,
                        "fingerprint": fingerprint(rec.public_key),
                    },
                )
    reload_msg = _reload(cfg) if not already else "nothing changed"
    if as_json:
        print_json({"node": node, "revoked": True, "already": already, "gateway": reload_msg})
        return
    if already:
        console.print(
            "node %s was already revoked (%s)" % (node, format_at(rec.revoked_at or 0)),
            highlight=False,
        )
        return
    console.print(
        "revoked node %s (chair %s, key %s)" % (node, rec.chair_id, fingerprint(rec.public_key)),
        highlight=False,
    )
    console.print(reload_msg, highlight=False, soft_wrap=True)
    console.print(
        "to refuse it at the broker too: re-run `ivgw broker-config` and send mosquitto SIGHUP",
        highlight=False,
        soft_wrap=True,
    )


@keys_app.command("list")
@friendly
def keys_list(config_path: Path = ConfigOption, as_json: bool = JsonOption) -> None:
    """Registered nodes, their chairs and keys."""
    cfg = config(config_path)
    with _readonly(cfg) as store:
        nodes = store.nodes()
    rows: list[dict[str, Any]] = [
        {
            "node": n.node_id,
            "site": n.site,
            "chair": n.chair,
            "alg": ALG_NAMES.get(n.alg, str(n.alg)),
            "key_version": n.key_version,
            "fingerprint": fingerprint(n.public_key),
            "registered": format_at(n.registered_at),
            "revoked": format_at(n.revoked_at) if n.revoked_at is not None else None,
        }
        for n in nodes
    ]
    if as_json:
        print_json(rows)
        return
    t = Table(title="node keys")
    for col in ("node", "chair", "alg", "version", "fingerprint", "registered", "state"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["node"],
            "%s/%s" % (r["site"], r["chair"]),
            r["alg"],
            str(r["key_version"]),
            r["fingerprint"],
            r["registered"],
            "[red]revoked %s[/]" % r["revoked"] if r["revoked"] else "[green]active[/]",
        )
    console.print(t)


# --- ivgw broker-config ------------------------------------------------------------------------

ACL_HEADER = """\
# Mosquitto ACL for ivgw, written by `ivgw broker-config` at {when}.
# Reload a running broker after changes: kill -HUP <mosquitto pid>.
#
# Usernames are client-certificate common names (use_identity_as_username). How mosquitto
# applies this file: a client's own `user` lines first, every `deny` before any grant, then
# the `pattern` lines, which apply to EVERY user with %u replaced by its name. The patterns
# would therefore also grant the gateway and central systems node rights under their own
# names, so each of them denies itself those topics first. Node ids may not start with
# ivgw- or central- (`ivgw provision` refuses them), so no node is ever one of them.
#
# mosquitto does not check SUBSCRIBE against this file: a subscription to another node's
# topic is granted, but read access is checked on every delivery, so nothing arrives there.
"""


def acl_text(central: list[str], revoked: list[str], when: str) -> str:
    """The broker ACL (docs/cli.md "Broker" explains each rule)."""
    lines = [ACL_HEADER.format(when=when)]
    lines += [
        "# The gateway: every node's uplink in, signed commands out, normalized outputs.",
        "user " + certs.GATEWAY_CN,
        "topic deny ivgw/v1/node/%s/#" % certs.GATEWAY_CN,
        "topic read ivgw/v1/node/+/up/+",
        "topic write ivgw/v1/node/+/down/cmd",
        "topic readwrite ivgw/v1/out/#",
        "",
    ]
    for name in central:
        lines += [
            "# Central system %s: the normalized outputs, read only." % name,
            "user " + name,
            "topic deny ivgw/v1/node/#",
            "topic read ivgw/v1/out/#",
            "",
        ]
    for node in revoked:
        lines += ["# Revoked node (ivgw keys revoke): nothing.", "user " + node, "topic deny #", ""]
    lines += [
        "# Every node: publish its own uplink, receive its own commands.",
        "pattern write ivgw/v1/node/%u/up/+",
        "pattern read ivgw/v1/node/%u/down/cmd",
        "",
    ]
    return "\n".join(lines)


def mosquitto_conf(out: Path, port: int, bind: str | None, when: str) -> str:
    """mosquitto.conf for the clinic broker (mosquitto 2.0)."""
    o = out.resolve()
    listener = "listener %d%s" % (port, " " + bind if bind else "")
    return f"""\
# Mosquitto configuration for the ivgw clinic broker, written by `ivgw broker-config` at {when}.
# Start:   mosquitto -c {o}/mosquitto.conf
# Reload the ACL (new or revoked nodes): kill -HUP <mosquitto pid>
per_listener_settings false
allow_anonymous false
acl_file {o}/acl

# Mutual TLS only: every client shows a certificate from the clinic CA. Its common name
# becomes the username the ACL checks, and the client id, so no client can take over
# another's session by choosing its client id.
{listener}
cafile {o}/ca.crt
certfile {o}/server.crt
keyfile {o}/server.key
require_certificate true
use_identity_as_username true
use_username_as_clientid true

# Durability: the gateway keeps a persistent session (MQTT 5 session expiry, or clean
# session off), so messages for it wait here while it restarts. They are saved to disk
# every autosave_interval seconds and at a clean shutdown; a broker crash loses what
# arrived since the last save (the gateway counts the sequence gaps this leaves).
persistence true
persistence_location {o}/data/
autosave_interval 10
persistent_client_expiration 7d

# Queues. Mosquitto DROPS QoS 1 messages for a subscriber whose queue is longer than
# max_queued_messages (default 1000), even while it is connected: with the default a
# slow paho subscriber lost 29% of a 50,000-message QoS 1 burst. The gateway must never
# lose a packet, so the limit is far above an hour-long gateway outage of a 20-chair clinic
# (20 chairs x 1 packet/s x 3600 s = 72,000 messages, ~300 B each).
max_queued_messages 100000
max_queued_bytes 0
# The gateway acknowledges a batch only after committing it to its database (up to 512
# messages per batch, two batches at the verifiers while a third is stored), so the broker
# must let that many be in flight to one client, with room to spare.
max_inflight_messages 4000
# Node packets are < 2 KiB (the gateway rejects larger); this caps what a client may send.
max_packet_size 65536
# A stop command is one small packet: without this, Nagle's algorithm holds it up to ~40 ms
# waiting for the node's ACK of the previous segment (docs/performance.md: p99 71 -> 33 ms).
set_tcp_nodelay true

log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
log_timestamp_format %Y-%m-%dT%H:%M:%S
"""


@app.command("broker-config")
@friendly
def broker_config(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for the broker's files. Default: <data_dir>/broker."),
    ] = None,
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="Name or address the nodes and the "
            "gateway use to reach the broker (repeatable). Default: this "
            "machine's host name. localhost and 127.0.0.1 are always "
            "included.",
        ),
    ] = None,
    port: int = typer.Option(8883, "--port", min=1, max=65535, help="TLS listener port."),
    bind: str = typer.Option(None, "--bind", help="Listen on this address only (default: all)."),
    central: Annotated[
        list[str] | None,
        typer.Option(
            "--central",
            help="Client certificate for a "
            "central system, named central-* (repeatable). Default: "
            "central-1.",
        ),
    ] = None,
    renew: bool = typer.Option(
        False, "--renew", help="Re-issue every certificate, even ones still valid."
    ),
    config_path: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Write a Mosquitto configuration with mutual TLS and per-role ACLs.

    Creates the clinic's broker CA if there is none (kept in <data_dir>/pki, key mode 0600),
    a server certificate, client certificates for the gateway (ivgw-gateway), central
    systems and every registered node, then mosquitto.conf and acl. Certificates still valid
    for 30 days are kept unless --renew."""
    cfg = config(config_path)
    hosts = list(host or [socket.gethostname()])
    for h in hosts:
        if not h or any(c.isspace() for c in h) or "/" in h:
            raise CliError("--host %r is not a host name or address" % h, USAGE)
    names = list(central or ["central-1"])
    for name in names:
        _check_id(name, "central system name")
        if not name.startswith("central-"):
            raise CliError(
                "--central %r: central system names start with central- (the ACL "
                "relies on it)" % name,
                USAGE,
            )
    folder = Path(out) if out is not None else cfg.data_dir / "broker"
    try:
        ca, ca_created = certs.load_or_create_ca(_pki(cfg))
    except certs.CertError as e:
        raise CliError(str(e), CONFIG) from None
    except OSError as e:
        raise CliError(
            "cannot create the broker CA in %s (%s)" % (_pki(cfg), e.strerror or e), CONFIG
        ) from None
    active: list[str] = []
    revoked: list[str] = []
    if cfg.db_path.exists():
        with _readonly(cfg) as store:
            for n in store.nodes():
                if certs.reserved(n.node_id):
                    err_console.print(
                        "warning: node id %s is reserved; no certificate issued" % n.node_id,
                        highlight=False,
                        soft_wrap=True,
                    )
                elif n.revoked_at is not None:
                    revoked.append(n.node_id)
                else:
                    active.append(n.node_id)
    when = format_at(time.time())
    report: list[dict[str, str]] = []
    try:
        (folder / "clients").mkdir(parents=True, exist_ok=True, mode=0o700)
        (folder / "data").mkdir(exist_ok=True, mode=0o700)
        certs.write_public(folder / "ca.crt", ca.cert_pem)
        report.append(
            {
                "file": str(folder / "ca.crt"),
                "what": "CA certificate",
                "status": "created" if ca_created else "kept",
            }
        )
        leaves: list[tuple[str, Path, list[str] | None, str]] = [
            ("server", folder / "server", hosts, "broker server certificate"),
            (certs.GATEWAY_CN, folder / "clients" / certs.GATEWAY_CN, None, "gateway client"),
        ]
        leaves += [(n, folder / "clients" / n, None, "central system client") for n in names]
        leaves += [(n, folder / "clients" / n, None, "node client") for n in active]
        for cn, stem, sans, what in leaves:
            crt, key = stem.with_suffix(".crt"), stem.with_suffix(".key")
            status = "created"
            if crt.exists() and key.exists():
                want_cn = certs.SERVER_CN if cn == "server" else cn
                if not renew and ca.still_good(crt.read_bytes(), want_cn, sans):
                    report.append({"file": str(crt), "what": what, "status": "kept"})
                    continue
                status = "renewed"
            issued = ca.issue_server(hosts) if cn == "server" else ca.issue_client(cn)
            certs.write_private(key, issued.key_pem)
            certs.write_public(crt, issued.cert_pem)
            report.append({"file": str(crt), "what": what, "status": status})
        (folder / "acl").write_text(acl_text(names, revoked, when), encoding="utf-8")
        report.append({"file": str(folder / "acl"), "what": "ACL", "status": "written"})
        (folder / "mosquitto.conf").write_text(
            mosquitto_conf(folder, port, bind, when), encoding="utf-8"
        )
        report.append(
            {
                "file": str(folder / "mosquitto.conf"),
                "what": "mosquitto configuration",
                "status": "written",
            }
        )
    except OSError as e:
        raise CliError(
            "cannot write the broker files in %s (%s)" % (folder, e.strerror or e), CONFIG
        ) from None
    conf = (folder / "mosquitto.conf").resolve()
    gw_stem = (folder / "clients" / certs.GATEWAY_CN).resolve()
    snippet = (
        '[mqtt]\nhost = "%s"\nport = %d\nclient_id = "%s"\ntls_ca = "%s"\n'
        'tls_cert = "%s"\ntls_key = "%s"\n'
        % (
            hosts[0],
            port,
            certs.GATEWAY_CN,
            (folder / "ca.crt").resolve(),
            gw_stem.with_suffix(".crt"),
            gw_stem.with_suffix(".key"),
        )
    )
    if as_json:
        print_json(
            {
                "folder": str(folder),
                "files": report,
                "nodes": active,
                "revoked": revoked,
                "central": names,
                "hosts": hosts,
                "port": port,
                "start": "mosquitto -c %s" % conf,
                "gateway_config": snippet,
            }
        )
        return
    t = Table(title="broker files in %s" % folder)
    for col in ("file", "what", "status"):
        t.add_column(col)
    for r in report:
        t.add_row(os.path.relpath(r["file"], folder), r["what"], r["status"])
    console.print(t)
    console.print(
        "nodes with client certificates: %s" % (", ".join(active) or "none yet"), highlight=False
    )
    if revoked:
        console.print("revoked nodes shut out by the ACL: %s" % ", ".join(revoked), highlight=False)
    console.print("start the broker:  mosquitto -c %s" % conf, highlight=False, soft_wrap=True)
    console.print(
        "after later changes (new or revoked nodes), re-run this and send mosquitto SIGHUP",
        highlight=False,
        soft_wrap=True,
    )
    console.print("gateway configuration (TOML):", highlight=False, soft_wrap=True)
    console.print(snippet, highlight=False, markup=False, soft_wrap=True)


# --- ivgw flash -------------------------------------------------------------------------------

MAIN_PY = """\
# Written by `ivgw flash`: run the node from the provisioning bundle in this folder.
from firmware.main import main

main(".")
"""


def _mpremote(given: str | None) -> str:
    if given:
        if not (os.path.isfile(given) and os.access(given, os.X_OK)):
            raise CliError("mpremote not found at %s" % given, CONFIG)
        return given
    found = shutil.which("mpremote")
    if found:
        return found
    sibling = os.path.join(os.path.dirname(sys.executable), "mpremote")
    if os.access(sibling, os.X_OK):
        return sibling
    raise CliError(
        "mpremote is not installed: `pip install mpremote` (or give --mpremote PATH)", CONFIG
    )


def _device_path(port: str) -> str | None:
    """The file behind a serial port argument, if it names one (mpremote also takes
    shortcuts such as a0, u0 or auto, which are not checked here)."""
    p = port[len("port:") :] if port.startswith("port:") else port
    return p if p.startswith("/") else None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


@app.command("flash")
@friendly
def flash(
    port: str = typer.Argument(
        ..., help="The board's serial port, e.g. /dev/ttyACM0 (or an mpremote shortcut such as a0)."
    ),
    node: str = typer.Option(
        None, "--node", help="Node whose bundle to copy (<data_dir>/bundles/NODE)."
    ),
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="Bundle folder (instead of --node).")
    ] = None,
    mpremote: str = typer.Option(
        None,
        "--mpremote",
        envvar="IVGW_MPREMOTE",
        help="mpremote executable. Default: the one on PATH.",
    ),
    build_dir: Annotated[
        Path | None,
        typer.Option(
            "--build-dir",
            help="Where to compile the .mpy files. Default: build/mpy in the source tree.",
        ),
    ] = None,
    reset: bool = typer.Option(
        True, "--reset/--no-reset", help="Reset the board afterwards so it boots the node."
    ),
    source_lines: bool = typer.Option(
        False,
        "--source-lines",
        help="Debug build: keep source-line tables so tracebacks on the board's console name "
        "the line. Costs the node about 3 KB of heap; flash the normal build again afterwards.",
    ),
    config_path: Path = ConfigOption,
) -> None:
    """Compile the firmware to .mpy and copy it, the node's bundle and a main.py to a board.

    Uses `mpremote connect PORT fs cp ...` for every file. The bundle is checked with the
    node's own configuration loader first, so a bad bundle never reaches a board."""
    from firmware import config as firmware_config
    from firmware.hal.storage import ConfigError as NodeConfigError
    from gateway import firmware_build

    if node is None and bundle is None:
        raise CliError("give --node NODE or --bundle DIR", USAGE)
    if node is not None:
        _check_id(node, "node id")
    cfg = config(config_path)
    folder = Path(bundle) if bundle is not None else _bundle_dir(cfg, node or "", None)
    if not (folder / CONFIG_JSON).is_file():
        raise CliError("no bundle at %s (no %s there)" % (folder, CONFIG_JSON), NOT_FOUND)
    try:
        loaded = firmware_config.load(str(folder))
    except NodeConfigError as e:
        raise CliError("the bundle is not usable: %s" % e, REFUSED) from None
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise CliError(
            "the bundle is not usable: %s/%s is malformed (%s)" % (folder, CONFIG_JSON, e), REFUSED
        ) from None
    if node is not None and loaded.node_id != node:
        raise CliError(
            "%s holds the bundle of node %s, not %s" % (folder, loaded.node_id, node), REFUSED
        )
    exe = _mpremote(mpremote)
    dev = _device_path(port)
    if dev is not None and not os.path.exists(dev):
        raise CliError("no serial device at %s (is the board plugged in?)" % dev, NOT_FOUND)
    try:
        built = firmware_build.build(build_dir, source_lines=source_lines)
    except firmware_build.BuildError as e:
        raise CliError(str(e), CONFIG) from None
    plan: list[tuple[Path, str]] = []
    for f in sorted(built.rglob("*.mpy")):
        plan.append((f, f.relative_to(built).as_posix()))
    for name in BUNDLE_FILES:
        if (folder / name).is_file():
            plan.append((folder / name, name))
    dirs = sorted(
        {str(Path(remote).parent) for _, remote in plan} - {"."}, key=lambda d: (d.count("/"), d)
    )
    with tempfile.TemporaryDirectory(prefix="ivgw-flash-") as tmp:
        main_py = Path(tmp) / "main.py"
        main_py.write_text(MAIN_PY, encoding="utf-8")
        plan.append((main_py, "main.py"))
        steps = len(dirs) + len(plan) + (1 if reset else 0)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("connecting to %s" % port, total=steps)
            first = True
            for d in dirs:
                progress.update(task, description="mkdir :%s" % d)
                r = _run(exe, port, ["fs", "mkdir", ":" + d])
                if r.returncode != 0 and "exist" not in (r.stderr + r.stdout).lower():
                    _mpremote_failed(port, "creating :%s" % d, r, first)
                first = False
                progress.advance(task)
            for local, remote in plan:
                progress.update(task, description="cp %s" % remote)
                r = _run(exe, port, ["fs", "cp", str(local), ":" + remote])
                if r.returncode != 0:
                    _mpremote_failed(port, "copying %s" % remote, r, first)
                first = False
                progress.advance(task)
            if reset:
                progress.update(task, description="reset")
                r = _run(exe, port, ["reset"])
                if r.returncode != 0:
                    _mpremote_failed(port, "resetting the board", r, first)
                progress.advance(task)
            progress.update(task, description="done")
    console.print(
        "flashed node %s to %s: %d files (%d bytes of .mpy)%s"
        % (
            loaded.node_id,
            port,
            len(plan),
            firmware_build.total_size(built),
            (", board reset" if reset else "")
            + (" (debug build with source lines)" if source_lines else ""),
        ),
        highlight=False,
        soft_wrap=True,
    )


def _run(exe: str, port: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [exe, "connect", port, *args],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise CliError(
            "mpremote did not finish within 120 s on %s (is the board busy?)" % port, UNREACHABLE
        ) from None
    except OSError as e:
        raise CliError("cannot run %s (%s)" % (exe, e.strerror or e), CONFIG) from None


def _mpremote_failed(
    port: str, what: str, r: subprocess.CompletedProcess[str], first: bool
) -> None:
    text = _last_line(r.stderr or r.stdout)
    low = (r.stderr + r.stdout).lower()
    if first or "no device" in low or "failed to access" in low or "could not" in low:
        raise CliError("cannot reach a board on %s: %s" % (port, text), UNREACHABLE)
    raise CliError("%s on %s failed: %s" % (what, port, text), REFUSED)
