"""Records: ``audit verify|anchor``, ``sessions``, ``export`` and ``report`` (docs/cli.md
"Records"; ``events`` is in events.py).

All of these read the gateway's database read-only, so they are safe while the gateway
runs (WAL readers never block its writer) and cannot change the record they report on.
The one exception is ``audit anchor --record``, which appends an ``audit.anchor`` record
saying an anchor was handed out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import sqlite3
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gateway import report as reports
from gateway.audit import (
    Anchor,
    AuditError,
    AuditLog,
    Kinds,
    export_anchor,
    format_at,
    verify,
)
from gateway.cli import app
from gateway.cli.common import (
    CONFIG,
    NOT_FOUND,
    REFUSED,
    USAGE,
    CliError,
    ConfigOption,
    JsonOption,
    config,
    console,
    friendly,
    print_json,
)
from gateway.config import Config
from gateway.db import open_db, transaction

audit_app = typer.Typer(
    name="audit",
    no_args_is_help=True,
    help="The tamper-evident audit chain: verify it, export an anchor.",
)
app.add_typer(audit_app, name="audit")


@contextlib.contextmanager
def _db(cfg: Config) -> Iterator[sqlite3.Connection]:
    if not cfg.db_path.exists():
        raise CliError("no gateway database at %s: run `ivgw init` first" % cfg.db_path, CONFIG)
    conn = open_db(cfg.db_path, readonly=True)
    try:
        yield conn
    finally:
        conn.close()


def _chair_filter(chair: str | None) -> str | None:
    if chair is None:
        return None
    if chair.count("/") != 1 or not all(chair.split("/")):
        raise CliError("--chair %r: use SITE/CHAIR, e.g. north/c1" % chair, USAGE)
    return chair


# --- time filters ------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^-?\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)$", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str, now: float, what: str = "time") -> float:
    """Epoch seconds from ISO 8601 (local time unless it names a zone: ``Z``, ``+01:00``),
    ``now``, ``today``, ``yesterday``, or a time ago: ``-90s``, ``-15m``, ``-1h``, ``-2d``."""
    t = text.strip()
    m = _RELATIVE.match(t)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2).lower()]
    low = t.lower()
    if low == "now":
        return now
    if low in ("today", "yesterday"):
        midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
        if low == "yesterday":
            midnight -= timedelta(days=1)
        return midnight.timestamp()
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise CliError(
            "%s %r is not a time: use ISO 8601 (2025-01-31T09:15, add Z for UTC) or "
            "a time ago (-15m, -1h, -2d)" % (what, text),
            USAGE,
        ) from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # local time
    return dt.timestamp()


# --- audit ----------------------------------------------------------------------------------------


@audit_app.command("verify")
@friendly
def audit_verify(
    anchor: Annotated[
        list[str] | None,
        typer.Option(
            "--anchor",
            help="An anchor kept outside the "
            "database (from `ivgw audit anchor`); repeatable. Proves "
            "the chain up to it was not rewritten.",
        ),
    ] = None,
    config_path: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Re-hash the whole audit chain and check every link, the head and any anchors.

    Exit 1 if anything does not verify; the message names the problem and the first bad
    record."""
    anchors: list[Anchor] = []
    for text in anchor or []:
        try:
            anchors.append(Anchor.parse(text))
        except AuditError as e:
            raise CliError("--anchor: %s" % e.message, USAGE) from None
    cfg = config(config_path)
    with _db(cfg) as conn:
        rep = verify(conn, anchors=anchors)
    if as_json:
        print_json(dataclasses.asdict(rep))
    elif rep.ok:
        console.print(
            "[green]audit chain ok[/]: %s%s"
            % (
                rep.message,
                ", %d anchor%s matched" % (len(anchors), "" if len(anchors) == 1 else "s")
                if anchors
                else "",
            ),
            highlight=False,
            soft_wrap=True,
        )
        console.print(
            "chain %s, head hash %s" % (rep.chain_id, rep.head_hash),
            highlight=False,
            soft_wrap=True,
        )
    if not rep.ok:
        first = ("; first bad record %d" % rep.first_bad_id) if rep.first_bad_id else ""
        raise CliError(
            "audit chain does NOT verify (%s): %s%s" % (rep.problem, rep.message, first), REFUSED
        )


@audit_app.command("anchor")
@friendly
def audit_anchor(
    record: bool = typer.Option(
        False,
        "--record",
        help="Also append an audit.anchor record saying this anchor was exported.",
    ),
    operator: str = typer.Option(
        None, "--operator", envvar="IVGW_OPERATOR", help="Who exports it (with --record)."
    ),
    config_path: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Print the chain's current head as an anchor text to keep outside the database
    (paper log, e-mail, another system). `ivgw audit verify --anchor TEXT` checks it later."""
    cfg = config(config_path)
    if record:
        if not cfg.db_path.exists():
            raise CliError("no gateway database at %s: run `ivgw init` first" % cfg.db_path, CONFIG)
        conn = open_db(cfg.db_path, gateway_lock=False)
        try:
            audit = AuditLog(conn)
            with transaction(conn):
                a = audit.export_anchor()
                audit.append(
                    Kinds.ANCHOR_EXPORTED,
                    actor="user:" + (operator or _login()),
                    data={"anchor": a.to_text()},
                )
        finally:
            conn.close()
    else:
        with _db(cfg) as conn:
            try:
                a = export_anchor(conn)
            except AuditError as e:
                raise CliError(e.message, CONFIG) from None
    if as_json:
        print_json({"anchor": a.to_text(), "chain_id": a.chain_id, "id": a.id, "hash": a.hash})
    else:
        sys.stdout.write(a.to_text() + "\n")


def _login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# --- events -----------------------------------------------------------------------------------


def _session_row(s: dict[str, Any]) -> dict[str, Any]:
    out = dict(s)
    for k in ("created_at", "started_at", "ended_at"):
        out[k.replace("_at", "")] = format_at(s[k]) if s.get(k) else None
    out["chair_id"] = "%s/%s" % (s["site"], s["chair"])
    return out


@app.command("sessions")
@friendly
def sessions(
    chair: str = typer.Option(None, "--chair", help="Only this chair (SITE/CHAIR)."),
    config_path: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Infusion sessions: program, state and times."""
    from gateway.store import Store

    site = chair_id = None
    if _chair_filter(chair):
        site, chair_id = chair.split("/")  # type: ignore[union-attr]
    cfg = config(config_path)
    with _db(cfg) as conn:
        rows = [_session_row(s) for s in Store(conn).sessions(site, chair_id)]
    if as_json:
        print_json(rows)
        return
    t = Table(title="sessions")
    for col in (
        "id",
        "chair",
        "drug",
        "mg/mL",
        "kg",
        "dose",
        "min",
        "state",
        "created (UTC)",
        "operator",
    ):
        t.add_column(col)
    for s in rows:
        weight = s["weight_kg"] if s["weight_kg"] not in (None, "None") else "-"
        t.add_row(
            str(s["id"]),
            s["chair_id"],
            s["drug"],
            str(s["concentration_mg_ml"]),
            weight,
            "%s %s" % (s["dose_rate"], s["dosing_unit"]),
            str(s["duration_min"]),
            s["state"],
            (s["created"] or "")[:19].replace("T", " "),
            s["operator"],
        )
    console.print(t)


def _load(conn: sqlite3.Connection, session: int) -> reports.SessionData:
    data = reports.load_session(conn, session)
    if data is None:
        raise CliError("unknown session %d (see `ivgw sessions`)" % session, NOT_FOUND)
    return data


@app.command("export")
@friendly
def export(
    session: int = typer.Argument(..., help="Session id (see `ivgw sessions`)."),
    fmt: str = typer.Option(
        "csv",
        "--format",
        help="csv (one row per packet, vitals as "
        "columns) or json (also commands, acks, trips and audit records).",
    ),
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this file instead of the screen.")
    ] = None,
    config_path: Path = ConfigOption,
) -> None:
    """Every accepted packet of a session, decoded: vitals by MDC name with units, pump rate
    and volume, node status."""
    if fmt not in ("csv", "json"):
        raise CliError("--format %r: use csv or json" % fmt, USAGE)
    cfg = config(config_path)
    with _db(cfg) as conn:
        data = _load(conn, session)
        if fmt == "csv":
            text = reports.csv_text(data)
        else:
            import json

            text = json.dumps(reports.export_json(data), indent=2, default=str) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except IsADirectoryError:
        raise CliError("--out %s is a folder; give a file name" % out, USAGE) from None
    except OSError as e:
        if isinstance(e, PermissionError):
            raise
        raise CliError("cannot write %s (%s)" % (out, e.strerror or e), CONFIG) from None
    console.print(
        "wrote %s: session %d, %d packets" % (out, session, len(data.packets)),
        highlight=False,
        soft_wrap=True,
    )


@app.command("report")
@friendly
def report(
    session: int = typer.Argument(..., help="Session id (see `ivgw sessions`)."),
    out: Annotated[Path, typer.Option("--out", help="Folder for session-ID.png and .pdf.")] = Path(
        "."
    ),
    config_path: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """A session report (PNG and PDF): vitals, infusion rate and cumulative dose over time
    with interlock trips and operator actions marked, and a summary table with the dose
    delivered, every trip's stop latency, the drug library and an audit anchor."""
    cfg = config(config_path)
    with _db(cfg) as conn:
        data = _load(conn, session)
        try:
            files = reports.render_report(conn, data, out)
        except reports.ReportError as e:
            raise CliError(str(e), CONFIG) from None
        except FileExistsError:
            raise CliError("--out %s is a file, not a folder" % out, USAGE) from None
        except NotADirectoryError:
            raise CliError("--out %s is not a folder" % out, USAGE) from None
    if as_json:
        print_json({"png": str(files.png), "pdf": str(files.pdf), "summary": files.summary})
        return
    s = files.summary
    console.print(
        "session %d (%s): delivered %s of %s (%s), %d trip(s)"
        % (
            session,
            s["chair"],
            s["delivered_dose"],
            s["programmed_dose"],
            "-" if s["dose_error_pct"] is None else "%+.1f %%" % s["dose_error_pct"],
            len(s["trips"]),
        ),
        highlight=False,
        soft_wrap=True,
    )
    console.print("wrote %s and %s" % (files.png, files.pdf), highlight=False, soft_wrap=True)
