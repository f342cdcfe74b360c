"""``ivgw audit``, ``events``, ``sessions``, ``export`` and ``report`` on a session built
through the real Store and AuditLog (the same calls the gateway core makes)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from gateway import report
from gateway.audit import AuditLog, Kinds
from gateway.cli import app
from gateway.cli.events import summarize
from gateway.cli.records import parse_when
from gateway.db import open_db, transaction
from gateway.store import Store
from protocol import cbor, cose, mdc, schema
from protocol.cose import ALG_EDDSA

T0 = 1_780_000_000.0  # session start, epoch seconds
runner = CliRunner(env={"COLUMNS": "250"})


NODE = cose.Ed25519Signer(bytes(range(32)))


def _signed(msg: dict) -> bytes:
    """A packet as the gateway stores it: the COSE_Sign1 the node signed."""
    return cose.encode(cbor.dumps(msg), NODE, b"chair-01")


@dataclass
class Env:
    root: Path
    cfg: Path
    db: Path
    session: int


def _telemetry(
    seq: int,
    up_ms: int,
    spo2: int,
    hr: int,
    sbp: int | None,
    infused_ul: int,
    rate_ul_h: int,
    state: int,
    program: int,
) -> dict:
    msg = schema.envelope(schema.TELEMETRY, "chair-01", 3, seq, up_ms)
    vitals = {
        mdc.SPO2: schema.vital(spo2, 0, mdc.DIM_PERCENT, up_ms - 200),
        mdc.HR_ECG: schema.vital(hr, 0, mdc.DIM_BEAT_PER_MIN, up_ms - 200),
        mdc.RESP_RATE: schema.vital(145, -1, mdc.DIM_RESP_PER_MIN, up_ms - 200),
    }
    if sbp is not None:
        vitals[mdc.NIBP_SYS] = schema.vital(sbp, 0, mdc.DIM_MMHG, up_ms - 30_000)
        vitals[mdc.NIBP_DIA] = schema.vital(sbp - 45, 0, mdc.DIM_MMHG, up_ms - 30_000)
    msg[schema.T_VITALS] = vitals
    msg[schema.T_PUMP] = {
        schema.P_STATE: state,
        schema.P_RATE: rate_ul_h,
        schema.P_INFUSED: infused_ul,
        schema.P_VTBI: 35_000,
        schema.P_ALARMS: [],
        schema.P_T: up_ms - 400,
        schema.P_PROGRAM: program,
    }
    msg[schema.T_NODE] = {schema.N_PERMIT_MS: 4000, schema.N_BUFFERED: 0, schema.N_DROPPED: 0}
    return schema.validate(msg, schema.TELEMETRY)


N_TELEMETRY = 41  # one per minute, minutes 0..40


def _build(root: Path) -> Env:
    data = root / "data"
    data.mkdir()
    cfg = root / "gw.toml"
    cfg.write_text('[gateway]\ndata_dir = "data"\n')
    db = data / "ivgw.sqlite3"
    clock = [T0 - 60.0]
    conn = open_db(db)
    store, audit = Store(conn), AuditLog(conn, clock=lambda: clock[0])
    with transaction(conn):
        store.register_node("chair-01", "north", "c1", ALG_EDDSA, bytes(32), T0 - 3600)
        sid = store.add_session(
            node_id="chair-01",
            site="north",
            chair="c1",
            care_area="ketamine-trd",
            drug="ketamine",
            concentration_mg_ml=Decimal("1"),
            weight_kg=Decimal("70"),
            dose_rate=Decimal("0.75"),
            dosing_unit="mg/kg/h",
            duration_min=Decimal("40"),
            rate_ul_h=52_500,
            vtbi_ul=35_000,
            diameter_cmm=2670,
            library_version="2026-11-01.1",
            library_hash="0a926c19" * 8,
            override_operator=None,
            override_reason=None,
            operator="nurse-a",
            state="programmed",
            created_at=T0 - 60,
        )
        audit.append(
            Kinds.PROGRAM_ACCEPTED,
            actor="nurse-a",
            chair="north/c1",
            subject=str(sid),
            data={"verdict": "ok", "drug": "ketamine"},
        )
        store.add_command(
            "chair-01",
            1,
            1,
            "program",
            {
                schema.A_PROGRAM_ID: sid,
                schema.A_RATE: 52_500,
                schema.A_VTBI: 35_000,
                schema.A_DIAMETER: 2670,
                schema.A_DRUG: "ketamine",
            },
            sid,
            "nurse-a",
            T0 - 50,
        )
        store.ack_command("chair-01", 1, 1, schema.ACK_OK, "", T0 - 49)
        store.add_command("chair-01", 1, 2, "start", {schema.A_PROGRAM_ID: sid}, sid, "nurse-a", T0)
        store.update_session(sid, state="running", started_at=T0)
        store.add_packet(
            "chair-01",
            3,
            0,
            "birth",
            T0 - 55,
            sid,
            _signed(
                {
                    schema.B_FIRMWARE: "0.1.0",
                    schema.B_CAPS: ["permit"],
                    schema.B_DRIVERS: [["pump", "ne1000"]],
                    schema.B_BOARD: "rp2",
                }
            ),
        )
        infused = 0
        for i in range(N_TELEMETRY):
            t = T0 + 60.0 * i
            up = 100_000 + 60_000 * i
            # a rate change after minute 20 restarts the pump's volume counter
            if i == 21:
                infused = 0
            rate = 52_500 if i < 21 else 45_000
            state = schema.PUMP_INFUSING if 0 < i < 40 else schema.PUMP_STOPPED
            store.add_packet(
                "chair-01",
                3,
                i + 1,
                "telemetry",
                t,
                sid,
                _signed(
                    _telemetry(
                        i + 1,
                        up,
                        97 - (i == 30) * 8,
                        72 + i % 5,
                        120 + i if i % 10 == 0 else None,
                        infused,
                        rate,
                        state,
                        sid,
                    )
                ),
            )
            if state == schema.PUMP_INFUSING:
                infused += rate // 60
        clock[0] = T0 + 30 * 60
        trip = store.add_trip(
            "north",
            "c1",
            sid,
            "spo2",
            "SpO2 89 % below 90 for 15 s",
            T0 + 30 * 60 - 15,
            T0 + 30 * 60,
        )
        store.trip_stop_sent(trip, T0 + 30 * 60 + 0.004, 15_004.0)
        audit.append(
            Kinds.INTERLOCK_TRIPPED,
            actor="gateway",
            chair="north/c1",
            subject="spo2",
            data={"cause": "SpO2 89 % below 90 for 15 s", "session": sid},
        )
        clock[0] = T0 + 31 * 60
        audit.append(
            Kinds.INTERLOCK_ACKED,
            actor="nurse-a",
            chair="north/c1",
            data={"reason": "repositioned probe", "cleared": ["spo2"]},
        )
        store.add_packet(
            "chair-01",
            3,
            50,
            "event",
            T0 + 30 * 60 + 1,
            sid,
            _signed(
                schema.make_event("chair-01", 3, 50, 0, "pump_alarm", schema.SEV_ALARM, "occlusion")
            ),
        )
        store.update_session(sid, state="completed", ended_at=T0 + 41 * 60)
    conn.close()
    return Env(root, cfg, db, sid)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return _build(tmp_path)


def _ok(args: list[str], env: Env) -> str:
    r = runner.invoke(app, [*args, "--config", str(env.cfg)])
    assert r.exit_code == 0, r.output
    return r.stdout


def _fails(args: list[str], env: Env | None, code: int, *needles: str) -> str:
    extra = ["--config", str(env.cfg)] if env is not None else []
    r = runner.invoke(app, [*args, *extra])
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.stderr
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


# --- export --------------------------------------------------------------------------------------


def test_export_csv_has_one_row_per_packet_and_vitals_by_mdc_name(env: Env) -> None:
    rows = list(csv.DictReader(io.StringIO(_ok(["export", str(env.session)], env))))
    assert len(rows) == N_TELEMETRY + 2  # + birth + event
    assert [r["kind"] for r in rows].count("telemetry") == N_TELEMETRY
    cols = rows[0].keys()
    for name in (
        "MDC_PULS_OXIM_SAT_O2 [%]",
        "MDC_ECG_HEART_RATE [/min]",
        "MDC_PRESS_BLD_NONINV_SYS [mm[Hg]]",
        "MDC_RESP_RATE [/min]",
        "pump_rate [mL/h]",
        "pump_infused [mL]",
        "pump_state",
        "permit_ms",
    ):
        assert name in cols
    tele = [r for r in rows if r["kind"] == "telemetry"]
    assert tele[0]["MDC_PULS_OXIM_SAT_O2 [%]"] == "97"
    assert tele[30]["MDC_PULS_OXIM_SAT_O2 [%]"] == "89"
    assert tele[0]["MDC_RESP_RATE [/min]"] == "14.5"
    assert tele[1]["MDC_PRESS_BLD_NONINV_SYS [mm[Hg]]"] == ""
    assert tele[10]["MDC_PRESS_BLD_NONINV_SYS [mm[Hg]]"] == "130"
    assert tele[0]["pump_rate [mL/h]"] == "52.5" and tele[25]["pump_rate [mL/h]"] == "45"
    assert tele[5]["pump_state"] == "infusing" and tele[40]["pump_state"] == "stopped"
    assert tele[5]["t_min"] == "5.000"
    assert tele[5]["time"] == datetime.fromtimestamp(T0 + 300, UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z"
    )
    birth = rows[0]
    assert birth["kind"] == "birth" and "firmware 0.1.0" in birth["detail"]
    assert any("occlusion" in r["detail"] for r in rows if r["kind"] == "event")


def test_export_json_has_commands_acks_trips_and_audit(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    _ok(["export", str(env.session), "--format", "json", "--out", str(out)], env)
    data = json.loads(out.read_text())
    assert data["session"]["drug"] == "ketamine"
    assert [c["kind"] for c in data["commands"]] == ["program", "start"]
    prog = data["commands"][0]
    assert prog["args"]["rate_ul_h"] == 52_500 and prog["ack"]["result"] == "ok"
    assert data["trips"][0]["rule"] == "spo2"
    kinds = [a["kind"] for a in data["audit"]]
    assert {"program.accepted", "interlock.tripped", "interlock.acked"} <= set(kinds)
    tele = [p for p in data["packets"] if p["kind"] == "telemetry"]
    spo2 = [v for v in tele[0]["vitals"] if v["name"] == "MDC_PULS_OXIM_SAT_O2"][0]
    assert spo2["value"] == 97 and spo2["unit"] == "%"
    summary = data["summary"]
    # the pump's last counts before and after its counter restarted with the new rate
    delivered = Decimal(19 * (52_500 // 60) + 19 * (45_000 // 60)) / 1000
    assert Decimal(summary["delivered_volume_ml"]) == delivered
    assert summary["delivered_dose"] == "30.875 mg" and delivered == Decimal("30.875")
    assert summary["dose_error_pct"] == float(round((delivered - 35) / 35 * 100, 1))
    assert summary["trips"][0]["stop_latency_ms"] == 15004.0


def test_report_writes_png_and_pdf(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    r = runner.invoke(
        app, ["report", str(env.session), "--out", str(out), "--json", "--config", str(env.cfg)]
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    png, pdf = Path(res["png"]), Path(res["pdf"])
    assert png == out / ("session-%d.png" % env.session)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 10_000
    assert res["summary"]["patient_weight_kg"] == "70"
    assert res["summary"]["programmed_dose"] == "35 mg"


def test_unknown_session_is_exit_3(env: Env, tmp_path: Path) -> None:
    _fails(["report", "99", "--out", str(tmp_path)], env, 3, "unknown session 99")
    _fails(["export", "99"], env, 3, "unknown session 99")
    assert not list(tmp_path.glob("session-*"))


def test_export_bad_format_and_missing_database(env: Env, tmp_path: Path) -> None:
    _fails(["export", str(env.session), "--format", "xml"], env, 2, "--format")
    cfg = tmp_path / "empty.toml"
    cfg.write_text('[gateway]\ndata_dir = "nowhere"\n')
    r = runner.invoke(app, ["sessions", "--config", str(cfg)])
    assert r.exit_code == 5 and "ivgw init" in r.stderr and "Traceback" not in r.output


# --- sessions and events ------------------------------------------------------------------


def test_sessions_lists_and_filters_by_chair(env: Env) -> None:
    rows = json.loads(_ok(["sessions", "--json"], env))
    assert [(s["id"], s["chair_id"], s["state"]) for s in rows] == [
        (env.session, "north/c1", "completed")
    ]
    assert json.loads(_ok(["sessions", "--chair", "north/c9", "--json"], env)) == []
    assert "ketamine" in _ok(["sessions"], env)
    _fails(["sessions", "--chair", "c1"], env, 2, "SITE/CHAIR")


def test_events_filter_by_kind_chair_time_and_limit(env: Env) -> None:
    all_rows = json.loads(_ok(["events", "--json"], env))
    assert [r["kind"] for r in all_rows] == [
        "program.accepted",
        "interlock.tripped",
        "interlock.acked",
    ]
    trips = json.loads(_ok(["events", "--kind", "interlock.tripped", "--json"], env))
    assert len(trips) == 1 and trips[0]["data"]["cause"].startswith("SpO2")
    assert json.loads(_ok(["events", "--chair", "south/c1", "--json"], env)) == []
    since = datetime.fromtimestamp(T0 + 30 * 60, UTC).isoformat()
    later = json.loads(_ok(["events", "--since", since, "--json"], env))
    assert [r["kind"] for r in later] == ["interlock.tripped", "interlock.acked"]
    until = datetime.fromtimestamp(T0 + 30 * 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    early = json.loads(_ok(["events", "--until", until, "--json"], env))
    assert [r["kind"] for r in early] == ["program.accepted"]
    last = json.loads(_ok(["events", "--limit", "1", "--json"], env))
    assert [r["kind"] for r in last] == ["interlock.acked"]
    table = _ok(["events"], env)
    assert "interlock.tripped" in table and "SpO2 89" in table


def test_events_bad_time_is_a_usage_error(env: Env) -> None:
    _fails(["events", "--since", "last tuesday"], env, 2, "--since", "ISO 8601")
    _fails(["events", "--until", "2025-13-45"], env, 2, "--until")


def test_parse_when_forms() -> None:
    now = 1_700_000_000.0
    assert parse_when("-1h", now) == now - 3600
    assert parse_when("90s", now) == now - 90
    assert parse_when("-15m", now) == now - 900
    assert parse_when("-2d", now) == now - 2 * 86400
    assert parse_when("now", now) == now
    assert parse_when("2023-11-14T22:13:20Z", now) == now
    assert parse_when("2023-11-14T23:13:20+01:00", now) == now
    local = datetime(2023, 11, 14, 9, 30)
    assert parse_when("2023-11-14T09:30", now) == local.timestamp()
    assert parse_when("today", now) <= now < parse_when("today", now) + 86400


def test_summarize_prefers_cause_and_reason(env: Env) -> None:
    conn = open_db(env.db, readonly=True)
    try:
        from gateway.audit import iter_records

        recs = list(iter_records(conn))
    finally:
        conn.close()
    assert summarize(recs[1]).startswith("spo2; cause=SpO2 89")
    assert "reason=repositioned probe" in summarize(recs[2])
    assert len(summarize(recs[1], width=20)) == 20


# --- audit -------------------------------------------------------------------------------------


def test_audit_verify_and_anchor(env: Env) -> None:
    anchor = _ok(["audit", "anchor"], env).strip()
    assert anchor.startswith("ivgw-audit-anchor:v1:") and anchor.split(":")[3] == "3"
    out = _ok(["audit", "verify", "--anchor", anchor], env)
    assert "audit chain ok" in out and "1 anchor matched" in out
    rep = json.loads(_ok(["audit", "verify", "--json"], env))
    assert rep["ok"] is True and rep["records_checked"] == 3
    # --record appends an audit.anchor record naming the exported head
    recorded = _ok(["audit", "anchor", "--record", "--operator", "bme-1"], env).strip()
    assert recorded == anchor
    rows = json.loads(_ok(["events", "--kind", "audit.anchor", "--json"], env))
    assert rows[0]["actor"] == "user:bme-1" and rows[0]["data"]["anchor"] == anchor


def _tamper(db: Path, sql: str, args: tuple) -> None:
    raw = sqlite3.connect(db)
    raw.execute("DROP TRIGGER audit_no_update")
    raw.execute(sql, args)
    raw.commit()
    raw.close()


def test_audit_verify_fails_on_a_tampered_record(env: Env) -> None:
    _tamper(env.db, "UPDATE audit SET data = ? WHERE id = 2", ('{"cause":"nothing happened"}',))
    line = _fails(
        ["audit", "verify"], env, 1, "does NOT verify", "hash_mismatch", "first bad record 2"
    )
    assert "record 2 was altered" in line
    rep = runner.invoke(app, ["audit", "verify", "--json", "--config", str(env.cfg)])
    assert rep.exit_code == 1 and json.loads(rep.stdout)["first_bad_id"] == 2


def test_audit_verify_fails_on_a_rewritten_chain_with_the_old_anchor(env: Env) -> None:
    anchor = _ok(["audit", "anchor"], env).strip()
    wrong = anchor[:-4] + ("0000" if not anchor.endswith("0000") else "1111")
    _fails(["audit", "verify", "--anchor", wrong], env, 1, "anchor_mismatch", "first bad record 3")


def test_audit_verify_bad_anchor_text_is_a_usage_error(env: Env) -> None:
    _fails(["audit", "verify", "--anchor", "not-an-anchor"], env, 2, "--anchor", "anchor text")


# --- exact values ------------------------------------------------------------------------------


@given(
    mantissa=st.integers(-0x80000000, 0x7FFFFFFF),
    exponent=st.integers(-9, 9),
    rate_ul_h=st.integers(0, 0xFFFFFFFF),
)
def test_export_writes_values_exactly_as_sent(mantissa: int, exponent: int, rate_ul_h: int) -> None:
    """A vital's decimal mantissa/exponent and the pump's integer microlitres reach the CSV
    as exact decimal text: no binary float ever rounds a clinical value."""
    body = {
        str(schema.K_T): 5000,
        str(schema.T_VITALS): {str(mdc.NIBP_SYS): [mantissa, exponent, mdc.DIM_MMHG, 4000]},
        str(schema.T_PUMP): {str(schema.P_STATE): 2, str(schema.P_RATE): rate_ul_h},
        str(schema.T_NODE): {str(schema.N_PERMIT_MS): 0},
    }
    p = report.decode_packet("n1", 1, 1, "telemetry", T0, body)
    assert p.vitals[mdc.NIBP_SYS] == (Decimal(mantissa).scaleb(exponent), T0 - 1.0)
    data = report.SessionData({"site": "s", "chair": "c"}, (p,), (), (), (), (), T0, T0)
    row = next(csv.DictReader(io.StringIO(report.csv_text(data))))
    assert Decimal(row["MDC_PRESS_BLD_NONINV_SYS [mm[Hg]]"]) == Decimal(mantissa).scaleb(exponent)
    assert "E" not in row["MDC_PRESS_BLD_NONINV_SYS [mm[Hg]]"]
    assert Decimal(row["pump_rate [mL/h]"]) * 1000 == rate_ul_h
