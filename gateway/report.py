"""One infusion session, decoded from the gateway's records: export rows and a report.

``ivgw export`` and ``ivgw report`` answer "what happened in session 17": every accepted
packet decoded into named vitals and pump values, the commands and their acks, the
interlock trips, the operators' actions from the audit log, and a summary a clinician can
file: what was programmed, what was delivered, the dose error, each trip and how fast the
stop followed it, which drug library allowed it, and an audit anchor that ties the report
to the tamper-evident record it came from.

Why the charts use the vital's own measurement time (received time minus the node's age of
the reading) rather than the packet's arrival time: a blood pressure measured every few
minutes is repeated in every packet until the next one, and a buffered packet arrives late.

Rendering uses matplotlib's object API (``Figure`` + the Agg canvas), never ``pyplot``, so
no global backend or figure state is touched and it runs headless.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from gateway.audit import AuditRecord, export_anchor, format_at, iter_records, verify
from gateway.store import Store
from protocol import mdc, schema

__all__ = [
    "Action",
    "Packet",
    "ReportError",
    "ReportFiles",
    "SessionData",
    "VITAL_ORDER",
    "csv_text",
    "decode_packet",
    "delivered_series",
    "dose_unit",
    "export_json",
    "load_session",
    "render_report",
    "summary",
]

# Vitals in the order people read them, with a short label.
VITAL_ORDER: tuple[tuple[int, str], ...] = (
    (mdc.SPO2, "SpO2"),
    (mdc.HR_ECG, "HR"),
    (mdc.PULSE_OXIM, "pulse (oximeter)"),
    (mdc.PULSE_NIBP, "pulse (NIBP)"),
    (mdc.NIBP_SYS, "SBP"),
    (mdc.NIBP_DIA, "DBP"),
    (mdc.NIBP_MEAN, "MAP"),
    (mdc.RESP_RATE, "RR"),
    (mdc.AWAY_RESP_RATE, "RR (airway)"),
    (mdc.ETCO2, "EtCO2"),
    (mdc.PERF_INDEX, "PI"),
)
_LABELS = dict(VITAL_ORDER)

_ARG_NAMES = {
    schema.A_PROGRAM_ID: "program_id",
    schema.A_RATE: "rate_ul_h",
    schema.A_VTBI: "vtbi_ul",
    schema.A_DIAMETER: "diameter_cmm",
    schema.A_DRUG: "drug",
    schema.A_LIFETIME: "lifetime_ms",
    schema.A_REASON: "reason",
    schema.A_WALLTIME: "walltime_ms",
    schema.A_PERIOD: "period_ms",
}
_NODE_NAMES = {
    schema.N_PERMIT_MS: "permit_ms",
    schema.N_LOCAL_TRIP: "local_trip",
    schema.N_BUFFERED: "buffered",
    schema.N_DROPPED: "dropped",
    schema.N_SERIAL_BAD: "serial_bad",
}
_ACK_RESULTS = ("ok", "rejected", "failed")
_OPERATOR_COMMANDS = ("program", "start", "stop")


class ReportError(Exception):
    """The report cannot be made (e.g. matplotlib missing); one sentence for the user."""


def _get(body: Mapping[str, Any], key: int) -> Any:
    """Stored bodies are JSON: CBOR's integer keys became strings (store._jsonable)."""
    return body.get(str(key), body.get(key))  # type: ignore[call-overload]


def _dec(mantissa: int, exponent: int) -> Decimal:
    return Decimal(int(mantissa)).scaleb(int(exponent))


def _plain(d: Decimal) -> str:
    return format(d.normalize(), "f")


def _ml(ul: Any) -> Decimal | None:
    return None if ul is None else Decimal(int(ul)).scaleb(-3)


@dataclass(frozen=True)
class Packet:
    """One accepted packet, decoded. ``vitals``: MDC code -> (value, measured at, epoch s)."""

    node: str
    boot: int
    seq: int
    kind: str
    received_at: float
    vitals: Mapping[int, tuple[Decimal, float]] = field(default_factory=dict)
    pump: Mapping[str, Any] = field(default_factory=dict)
    status: Mapping[str, Any] = field(default_factory=dict)
    detail: str = ""


def decode_packet(
    node: str, boot: int, seq: int, kind: str, received_at: float, body: Mapping[str, Any]
) -> Packet:
    """A stored packet body (string keys, see store._jsonable) as named values."""
    if kind != "telemetry":
        return Packet(node, boot, seq, kind, received_at, detail=_detail(kind, body))
    uptime = int(_get(body, schema.K_T) or 0)
    vitals: dict[int, tuple[Decimal, float]] = {}
    for code, entry in (_get(body, schema.T_VITALS) or {}).items():
        mant, exp, _unit, t = entry
        measured = received_at - max(0, uptime - int(t)) / 1000.0
        vitals[int(code)] = (_dec(mant, exp), measured)
    raw_pump = _get(body, schema.T_PUMP) or {}
    state = _get(raw_pump, schema.P_STATE)
    pump = {
        "state": schema.PUMP_STATE_NAMES[state]
        if isinstance(state, int) and 0 <= state < len(schema.PUMP_STATE_NAMES)
        else None,
        "rate_ml_h": _ml(_get(raw_pump, schema.P_RATE)),
        "infused_ml": _ml(_get(raw_pump, schema.P_INFUSED)),
        "vtbi_ml": _ml(_get(raw_pump, schema.P_VTBI)),
        "alarms": list(_get(raw_pump, schema.P_ALARMS) or []),
        "program": _get(raw_pump, schema.P_PROGRAM),
    }
    raw_node = _get(body, schema.T_NODE) or {}
    status = {
        name: _get(raw_node, key)
        for key, name in _NODE_NAMES.items()
        if _get(raw_node, key) is not None
    }
    return Packet(node, boot, seq, kind, received_at, vitals, pump, status)


def _detail(kind: str, body: Mapping[str, Any]) -> str:
    if kind == "birth":
        return "firmware %s, board %s, capabilities %s" % (
            _get(body, schema.B_FIRMWARE),
            _get(body, schema.B_BOARD) or "?",
            ",".join(_get(body, schema.B_CAPS) or []),
        )
    if kind == "event":
        sev = _get(body, schema.E_SEVERITY)
        sev_name = (
            ("info", "warning", "alarm")[sev] if isinstance(sev, int) and 0 <= sev < 3 else str(sev)
        )
        text = "%s (%s)" % (_get(body, schema.E_KIND), sev_name)
        detail = _get(body, schema.E_DETAIL)
        return text + (": " + str(detail) if detail else "")
    if kind == "ack":
        cmd = _get(body, schema.K_CMD) or ["?", "?"]
        res = _get(body, schema.K_RESULT)
        res_name = _ACK_RESULTS[res] if isinstance(res, int) and 0 <= res < 3 else str(res)
        reason = _get(body, schema.K_REASON)
        return "ack of command %s/%s: %s%s" % (
            cmd[0],
            cmd[1],
            res_name,
            (" (" + reason + ")") if reason else "",
        )
    return ""


@dataclass(frozen=True)
class Action:
    """An operator action to mark on the charts: program, start, stop, ack or override."""

    at: float
    kind: str
    actor: str
    detail: str


@dataclass(frozen=True)
class SessionData:
    session: Mapping[str, Any]
    packets: tuple[Packet, ...]
    commands: tuple[Mapping[str, Any], ...]
    trips: tuple[Mapping[str, Any], ...]
    audit: tuple[AuditRecord, ...]
    actions: tuple[Action, ...]
    t0: float
    end: float

    @property
    def chair(self) -> str:
        return "%s/%s" % (self.session["site"], self.session["chair"])

    def vital_codes(self) -> list[int]:
        seen = {c for p in self.packets for c in p.vitals}
        ordered = [c for c, _ in VITAL_ORDER if c in seen]
        return ordered + sorted(seen - set(ordered))


def _command_dict(c: Mapping[str, Any]) -> dict[str, Any]:
    try:
        raw = json.loads(c["args"])
    except (TypeError, ValueError):
        raw = {}
    args = {
        _ARG_NAMES.get(int(k), str(k)) if str(k).isdigit() else str(k): v for k, v in raw.items()
    }
    ack = None
    if c.get("ack_result") is not None:
        r = c["ack_result"]
        ack = {
            "result": _ACK_RESULTS[r] if 0 <= r < 3 else str(r),
            "reason": c.get("ack_reason"),
            "at": format_at(c["acked_at"]) if c.get("acked_at") else None,
        }
    return {
        "id": c["id"],
        "at": format_at(c["sent_at"]),
        "sent_at": c["sent_at"],
        "kind": c["kind"],
        "epoch": c["epoch"],
        "seq": c["seq"],
        "node": c["node_id"],
        "operator": c.get("operator"),
        "args": args,
        "ack": ack,
    }


def load_session(
    conn: sqlite3.Connection, session_id: int, clock: Callable[[], float] = time.time
) -> SessionData | None:
    """Everything recorded about one session, or None if there is no such session."""
    store = Store(conn)
    sess = store.session(session_id)
    if sess is None:
        return None
    packets = tuple(decode_packet(*row) for row in store.packets(session_id))
    commands = tuple(store.commands(session_id))
    trips = tuple(store.trips(session_id))
    times = (
        [p.received_at for p in packets]
        + [c["sent_at"] for c in commands]
        + [t["tripped_at"] for t in trips]
    )
    start = float(sess["created_at"])
    end = float(sess["ended_at"]) if sess.get("ended_at") else max(times + [start]) + 1.0
    chair = "%s/%s" % (sess["site"], sess["chair"])
    audit = tuple(
        r
        for r in iter_records(conn, chair=chair, since=start - 1.0, until=end + 1.0)
        if _belongs(r, session_id)
    )
    actions: list[Action] = []
    for c in commands:
        if c["kind"] in _OPERATOR_COMMANDS and c.get("operator"):
            actions.append(Action(c["sent_at"], c["kind"], c["operator"], c["kind"]))
    for r in audit:
        if r.kind in ("interlock.acked", "override"):
            at = _parse_at(r.at)
            label = "ack" if r.kind == "interlock.acked" else "override"
            actions.append(Action(at, label, r.actor, str(r.data.get("reason", ""))))
    actions.sort(key=lambda a: a.at)
    t0 = (
        float(sess["started_at"])
        if sess.get("started_at")
        else (packets[0].received_at if packets else start)
    )
    return SessionData(sess, packets, commands, trips, audit, tuple(actions), t0, end)


def _belongs(r: AuditRecord, session_id: int) -> bool:
    """Audit records of the chair in the session's time window that are not about another
    session (records without a session reference, such as acknowledgements, belong)."""
    data = r.data
    ref = data.get("session")
    if ref is not None:
        return bool(ref == session_id)
    if r.kind in ("program.accepted", "override") and r.subject is not None:
        return r.subject == str(session_id)
    return True


def _parse_at(at: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


# --- export ------------------------------------------------------------------------------------


def _vital_column(code: int) -> str:
    unit = mdc.UNIT_NAMES.get(mdc.UNITS.get(code, 0), "")
    return "%s [%s]" % (mdc.NAMES.get(code, str(code)), unit)


PUMP_COLUMNS = (
    "pump_state",
    "pump_rate [mL/h]",
    "pump_infused [mL]",
    "pump_vtbi [mL]",
    "pump_alarms",
    "pump_program",
)
STATUS_COLUMNS = ("permit_ms", "local_trip", "buffered", "dropped", "serial_bad")


def csv_text(data: SessionData) -> str:
    """One row per accepted packet; vitals as columns named by MDC name and unit."""
    codes = data.vital_codes()
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(
        [
            "time",
            "t_min",
            "node",
            "boot",
            "seq",
            "kind",
            *[_vital_column(c) for c in codes],
            *PUMP_COLUMNS,
            *STATUS_COLUMNS,
            "detail",
        ]
    )
    for p in data.packets:
        row: list[Any] = [
            format_at(p.received_at),
            "%.3f" % ((p.received_at - data.t0) / 60.0),
            p.node,
            p.boot,
            p.seq,
            p.kind,
        ]
        row += [_plain(p.vitals[c][0]) if c in p.vitals else "" for c in codes]
        if p.kind == "telemetry":
            pump = p.pump
            row += [
                pump.get("state") or "",
                *[
                    "" if pump.get(k) is None else _plain(pump[k])
                    for k in ("rate_ml_h", "infused_ml", "vtbi_ml")
                ],
                ";".join(pump.get("alarms") or []),
                "" if pump.get("program") is None else pump["program"],
            ]
            row += ["" if p.status.get(k) is None else p.status[k] for k in STATUS_COLUMNS]
        else:
            row += [""] * (len(PUMP_COLUMNS) + len(STATUS_COLUMNS))
        row.append(p.detail)
        w.writerow(row)
    return out.getvalue()


def _packet_json(p: Packet) -> dict[str, Any]:
    d: dict[str, Any] = {
        "time": format_at(p.received_at),
        "received_at": p.received_at,
        "node": p.node,
        "boot": p.boot,
        "seq": p.seq,
        "kind": p.kind,
    }
    if p.kind == "telemetry":
        d["vitals"] = [
            {
                "mdc": c,
                "name": mdc.NAMES.get(c, str(c)),
                "value": float(v),
                "unit": mdc.UNIT_NAMES.get(mdc.UNITS.get(c, 0), ""),
                "measured": format_at(at),
            }
            for c, (v, at) in sorted(p.vitals.items())
        ]
        d["pump"] = {k: (float(v) if isinstance(v, Decimal) else v) for k, v in p.pump.items()}
        d["node_status"] = dict(p.status)
    else:
        d["detail"] = p.detail
    return d


def export_json(data: SessionData) -> dict[str, Any]:
    """The session, its packets decoded, its commands with acks, trips and audit records."""
    s = dict(data.session)
    for k in ("created_at", "started_at", "ended_at"):
        if s.get(k):
            s[k.replace("_at", "")] = format_at(s[k])
    return {
        "session": s,
        "summary": summary(data),
        "packets": [_packet_json(p) for p in data.packets],
        "commands": [_command_dict(c) for c in data.commands],
        "trips": [dict(t, tripped=format_at(t["tripped_at"])) for t in data.trips],
        "audit": [
            {
                "id": r.id,
                "at": r.at,
                "actor": r.actor,
                "kind": r.kind,
                "chair": r.chair,
                "subject": r.subject,
                "data": r.data,
            }
            for r in data.audit
        ],
    }


# --- summary -----------------------------------------------------------------------------------


def _num(value: Any) -> Decimal | None:
    if value is None or str(value) in ("", "None"):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def delivered_series(data: SessionData) -> list[tuple[float, Decimal]]:
    """Cumulative volume infused (mL) over the session, from the pump's own counter.

    The pump's counter restarts with every program (a rate change sends a new one), so a
    drop in the counter adds what was counted before it."""
    out: list[tuple[float, Decimal]] = []
    base = Decimal(0)
    last = Decimal(0)
    for p in data.packets:
        vol = p.pump.get("infused_ml") if p.kind == "telemetry" else None
        if vol is None:
            continue
        if vol < last:
            base += last
        last = vol
        out.append((p.received_at, base + vol))
    return out


def dose_unit(data: SessionData) -> str:
    """mg for drugs dosed by mass; mL for fluids whose library entry is dosed in mL/h."""
    return "mL" if str(data.session.get("dosing_unit")) == "mL/h" else "mg"


def _dose(volume_ml: Decimal, data: SessionData) -> Decimal:
    conc = _num(data.session.get("concentration_mg_ml")) or Decimal(0)
    return volume_ml if dose_unit(data) == "mL" else volume_ml * conc


def summary(data: SessionData) -> dict[str, Any]:
    """Programmed versus delivered, trips with their stop latency, and provenance."""
    s = data.session
    unit = dose_unit(data)
    vtbi_ml = Decimal(int(s["vtbi_ul"])).scaleb(-3)
    planned = _dose(vtbi_ml, data)
    series = delivered_series(data)
    delivered_ml = series[-1][1] if series else Decimal(0)
    delivered = _dose(delivered_ml, data)
    error = None if planned == 0 else (delivered - planned) / planned * 100
    started = s.get("started_at")
    infusing = [
        p.received_at
        for p in data.packets
        if p.kind == "telemetry" and p.pump.get("state") == "infusing"
    ]
    return {
        "session": s["id"],
        "chair": data.chair,
        "node": s["node_id"],
        "state": s["state"],
        "operator": s["operator"],
        "patient_weight_kg": None if _num(s["weight_kg"]) is None else str(_num(s["weight_kg"])),
        "drug": s["drug"],
        "care_area": s["care_area"],
        "concentration_mg_ml": str(s["concentration_mg_ml"]),
        "programmed_dose_rate": "%s %s" % (s["dose_rate"], s["dosing_unit"]),
        "programmed_rate_ml_h": _plain(Decimal(int(s["rate_ul_h"])).scaleb(-3)),
        "programmed_duration_min": str(s["duration_min"]),
        "programmed_volume_ml": _plain(vtbi_ml),
        "programmed_dose": "%s %s" % (_round(planned), unit),
        "delivered_volume_ml": _plain(delivered_ml),
        "delivered_dose": "%s %s" % (_round(delivered), unit),
        "dose_error_pct": None if error is None else float(round(error, 1)),
        "created": format_at(float(s["created_at"])),
        "started": format_at(float(started)) if started else None,
        "ended": format_at(float(s["ended_at"])) if s.get("ended_at") else None,
        "infusing_min": round((infusing[-1] - infusing[0]) / 60.0, 1) if len(infusing) > 1 else 0.0,
        "override": {"operator": s["override_operator"], "reason": s["override_reason"]}
        if s.get("override_reason")
        else None,
        "trips": [
            {
                "rule": t["rule"],
                "cause": t["cause"],
                "at": format_at(t["tripped_at"]),
                "stop_latency_ms": None
                if t.get("latency_ms") is None
                else round(float(t["latency_ms"]), 1),
                "acked_by": t.get("acked_by"),
            }
            for t in data.trips
        ],
        "library_version": s["library_version"],
        "library_sha256": s["library_hash"],
    }


def _round(d: Decimal) -> str:
    return _plain(d.quantize(Decimal("0.001")))


# --- rendering ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportFiles:
    png: Path
    pdf: Path
    summary: Mapping[str, Any]


_ACTION_COLOURS = {
    "program": "tab:blue",
    "start": "tab:green",
    "stop": "black",
    "ack": "tab:purple",
    "override": "tab:orange",
}


def _markers(axes: Sequence[Any], data: SessionData) -> None:
    for ax in axes:
        for t in data.trips:
            ax.axvline((t["tripped_at"] - data.t0) / 60.0, color="red", lw=1.6, alpha=0.85)
        for a in data.actions:
            ax.axvline(
                (a.at - data.t0) / 60.0,
                color=_ACTION_COLOURS.get(a.kind, "grey"),
                lw=1.0,
                ls="--",
                alpha=0.8,
            )


def _summary_rows(summ: Mapping[str, Any], anchor: str, verified: str) -> list[list[str]]:
    trips = summ["trips"]
    trip_text = (
        "; ".join(
            "%s at %s, stop after %s ms"
            % (
                t["rule"],
                t["at"][11:19],
                "?" if t["stop_latency_ms"] is None else t["stop_latency_ms"],
            )
            for t in trips
        )
        or "none"
    )
    err = summ["dose_error_pct"]
    rows = [
        [
            "patient weight",
            "%s kg" % summ["patient_weight_kg"]
            if summ["patient_weight_kg"]
            else "- (not weight-based)",
        ],
        [
            "drug / concentration",
            "%s, %s mg/mL (care area %s)"
            % (summ["drug"], summ["concentration_mg_ml"], summ["care_area"]),
        ],
        [
            "programmed",
            "%s = %s mL/h for %s min: %s mL, %s"
            % (
                summ["programmed_dose_rate"],
                summ["programmed_rate_ml_h"],
                summ["programmed_duration_min"],
                summ["programmed_volume_ml"],
                summ["programmed_dose"],
            ),
        ],
        ["delivered", "%s mL, %s" % (summ["delivered_volume_ml"], summ["delivered_dose"])],
        ["dose error", "-" if err is None else "%+.1f %% (delivered vs programmed)" % err],
        [
            "session",
            "%s: created %s, started %s, ended %s; infusing %.1f min"
            % (
                summ["state"],
                summ["created"][11:19],
                (summ["started"] or "-")[11:19] or "-",
                (summ["ended"] or "-")[11:19] or "-",
                summ["infusing_min"],
            ),
        ],
        ["interlock trips (%d)" % len(trips), trip_text],
        [
            "override",
            "-"
            if not summ["override"]
            else "%s: %s" % (summ["override"]["operator"], summ["override"]["reason"]),
        ],
        ["operator", str(summ["operator"])],
        ["drug library", "%s (sha256 %s)" % (summ["library_version"], summ["library_sha256"][:16])],
        ["audit chain", verified],
        ["audit anchor", anchor],
    ]
    return [[k, _wrap(v, 82)] for k, v in rows]


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_long_words=True)) or text


def render_report(
    conn: sqlite3.Connection,
    data: SessionData,
    out_dir: Path,
    clock: Callable[[], float] = time.time,
) -> ReportFiles:
    """Write ``session-<id>.png`` and ``.pdf`` into ``out_dir``: three stacked charts over
    session time (vitals; infusion rate; cumulative dose) with trip and operator-action
    markers, and the summary table with the audit anchor."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
    except ImportError:
        raise ReportError(
            "matplotlib is not installed: pip install 'ivgw[demo]' (or pip install matplotlib)"
        ) from None
    summ = summary(data)
    rep = verify(conn)
    verified = (
        ("verified: %d records" % rep.records_checked)
        if rep.ok
        else "DOES NOT VERIFY: %s" % rep.message
    )
    anchor = export_anchor(conn).to_text()
    sid = data.session["id"]
    fig = Figure(figsize=(8.27, 11.69), dpi=110)
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(
        4,
        1,
        height_ratios=[3.2, 1.7, 1.7, 3.4],
        hspace=0.4,
        left=0.09,
        right=0.97,
        top=0.90,
        bottom=0.02,
    )
    fig.suptitle(
        "Infusion session %s, chair %s (node %s)" % (sid, data.chair, data.session["node_id"]),
        fontsize=12,
        fontweight="bold",
        y=0.985,
    )
    fig.text(
        0.5,
        0.952,
        "t = 0 at %s UTC; report made %s"
        % (format_at(data.t0)[:19].replace("T", " "), format_at(clock())[:19].replace("T", " ")),
        ha="center",
        fontsize=8,
    )
    ax_v = fig.add_subplot(gs[0])
    ax_r = fig.add_subplot(gs[1], sharex=ax_v)
    ax_d = fig.add_subplot(gs[2], sharex=ax_v)
    # vitals
    for code in data.vital_codes():
        pts = sorted(
            {(at, float(v)) for p in data.packets for c, (v, at) in p.vitals.items() if c == code}
        )
        if not pts:
            continue
        xs = [(at - data.t0) / 60.0 for at, _ in pts]
        ys = [v for _, v in pts]
        unit = mdc.UNIT_NAMES.get(mdc.UNITS.get(code, 0), "")
        sparse = code in (mdc.NIBP_SYS, mdc.NIBP_DIA, mdc.NIBP_MEAN, mdc.PULSE_NIBP)
        ax_v.plot(
            xs,
            ys,
            marker="o" if sparse else None,
            ms=3,
            lw=1.2,
            label="%s %s" % (_LABELS.get(code, mdc.NAMES.get(code, str(code))), unit),
        )
    ax_v.set_ylabel("vital signs")
    if data.vital_codes():
        ax_v.legend(
            fontsize=7, ncol=6, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False
        )
    ax_v.grid(alpha=0.3)
    # rate
    # The pump reports its programmed rate even while stopped: plot what actually flows.
    rates = [
        ((p.received_at - data.t0) / 60.0,
         float(p.pump["rate_ml_h"]) if p.pump.get("state") == "infusing" else 0.0)
        for p in data.packets
        if p.kind == "telemetry" and p.pump.get("rate_ml_h") is not None
    ]
    if rates:
        ax_r.step([x for x, _ in rates], [y for _, y in rates], where="post", color="tab:blue")
    ax_r.axhline(int(data.session["rate_ul_h"]) / 1000.0, color="tab:blue", ls=":", lw=1)
    top = max([y for _, y in rates] + [int(data.session["rate_ul_h"]) / 1000.0])
    ax_r.set_ylim(0, top * 1.25 if top > 0 else 1)
    ax_r.set_ylabel("rate mL/h")
    ax_r.grid(alpha=0.3)
    # cumulative dose
    unit = dose_unit(data)
    series = delivered_series(data)
    if series:
        ax_d.plot(
            [(t - data.t0) / 60.0 for t, _ in series],
            [float(_dose(v, data)) for _, v in series],
            color="tab:brown",
        )
    planned = _dose(Decimal(int(data.session["vtbi_ul"])).scaleb(-3), data)
    ax_d.axhline(float(planned), color="tab:brown", ls=":", lw=1)
    ax_d.set_ylim(bottom=0)
    ax_d.set_ylabel("dose %s" % unit)
    ax_d.set_xlabel("minutes")
    ax_d.grid(alpha=0.3)
    _markers((ax_v, ax_r, ax_d), data)
    handles = [Line2D([], [], color="red", lw=1.6, label="interlock trip")]
    kinds = sorted({a.kind for a in data.actions})
    handles += [
        Line2D([], [], color=_ACTION_COLOURS.get(k, "grey"), ls="--", label=k) for k in kinds
    ]
    handles.append(Line2D([], [], color="grey", ls=":", label="programmed"))
    ax_r.legend(
        handles=handles,
        fontsize=7,
        ncol=len(handles),
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        frameon=False,
    )
    # summary table
    ax_t = fig.add_subplot(gs[3])
    ax_t.axis("off")
    rows = _summary_rows(summ, anchor, verified)
    table = ax_t.table(cellText=rows, colWidths=[0.26, 0.74], loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    for (r, _c), cell in table.get_celld().items():
        lines = rows[r][_c].count("\n") + 1
        cell.set_height(0.055 * lines)
        if _c == 0:
            cell.get_text().set_fontweight("bold")
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / ("session-%s.png" % sid)
    pdf = out_dir / ("session-%s.pdf" % sid)
    fig.savefig(png, format="png")
    fig.savefig(
        pdf,
        format="pdf",
        metadata={"Title": "ivgw session %s" % sid, "Subject": "audit anchor " + anchor},
    )
    return ReportFiles(png, pdf, summ)
