"""The gateway's decisions: one place, in order, for every chair.

``GatewayCore`` is sans-IO. The service (gateway/service.py) hands it verified packets in
arrival order inside one database transaction, calls ``tick`` every ~100 ms, and forwards
operator requests from the CLI; the core records everything in the store and the audit
log, and returns what must be published (signed commands, JSON outputs). Time comes from
an injected clock (wall-clock seconds), so tests replay whole sessions instantly.

What it enforces (docs/gateway.md):

* replay: duplicates (QoS 1 redelivery) are counted, not processed twice; stale packets are
  rejected and audited; sequence gaps are counted per node;
* drug library: every program and rate change is checked; hard limits refuse, soft limits
  need a named operator and a reason, recorded; the pump's reported rate and volume must
  conform to the program and the session's cumulative dose stays under its maximum;
* interlocks: every vitals update and every tick runs the rule engine; a trip sends a
  signed stop at once, withholds permits, publishes an event, and latches the chair until
  an operator acknowledges; breach-to-stop-sent latency is recorded per trip;
* run permits: renewed on each telemetry packet of a running chair whose evaluation is
  ``permit_ok``; otherwise withheld (and the node's permit lapses within its lifetime);
* restart: interlock latches are restored from the database before any permit is sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from gateway import db, outputs
from gateway.audit import AuditLog, Kinds
from gateway.commander import Commander, OutgoingCommand
from gateway.druglib import (
    Authorization,
    DoseCheckError,
    DrugLibrary,
    Verdict,
    apply_override,
    authorize,
    check_conformance,
    check_cumulative,
    check_program,
    check_rate_change,
)
from gateway.interlocks import Evaluation, InterlockEngine, Reading, RuleSet, Trip
from gateway.replay_guard import NodeReplay
from gateway.store import NodeRecord, Store
from gateway.verify import Rejected, Verified
from protocol import schema
from protocol.replay import DUPLICATE, NEW

ACTOR = "gateway"
_AUDIT_REJECTIONS_PER_MIN = 10  # per (node, reason); the rest are counted, not audited
# The node polls the pump's rate and volume every second, alternately: values older than
# the start are normal for a few seconds after it.
_CONFORMANCE_GRACE_S = 5.0
# Retained chair state: with each telemetry packet (at most every _STATE_MIN_S), and from
# the tick for a chair not published for _STATE_EVERY_S (a silent node's state still ages).
_STATE_MIN_S = 0.5
_STATE_EVERY_S = 1.0


class ActionError(Exception):
    """An operator request that is refused; the message is one sentence for the CLI."""

    def __init__(self, message: str, code: str = "refused"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass
class Chair:
    """Runtime state of one chair (its node and session); rebuilt from the store at start."""

    node: NodeRecord
    online: bool = False
    last_seen: float = 0.0
    boot: int = -1
    last_seq: int = -1
    firmware: str = ""
    capabilities: tuple[str, ...] = ()
    vitals: dict[int, tuple[Decimal, float]] = field(default_factory=dict)
    pump: dict[int, Any] = field(default_factory=dict)
    node_status: dict[int, Any] = field(default_factory=dict)
    session_id: int | None = None
    auth: Authorization | None = None
    diameter_cmm: int = 0
    running: bool = False  # operator started and not stopped since
    started_at: float | None = None
    infused_base_ul: int = 0  # delivered under earlier programs of this session
    program_sent: tuple[int, int] | None = None  # (session id, node boot) of the last program
    permit_until: float = 0.0
    permit_state: str = "withheld"
    evaluation: Evaluation | None = None
    trips_pending_stop: list[tuple[int, Trip]] = field(default_factory=list)
    last_state_publish: float = 0.0

    @property
    def id(self) -> str:
        return self.node.chair_id


class GatewayCore:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        commander: Commander,
        library: DrugLibrary,
        rules: RuleSet,
        *,
        care_area: str,
        permit_lifetime_ms: int,
        clock: Callable[[], float] = time.time,
        conformance_tolerance_pct: float = 5.0,
        emulation_speed: float = 1.0,
    ):
        self.store = store
        self.audit = audit
        self.commander = commander
        self.library = library
        self.rules = rules
        self.care_area = care_area
        self.permit_lifetime_ms = permit_lifetime_ms
        self.clock = clock
        self.tolerance = Decimal(str(conformance_tolerance_pct))
        self.emulation_speed = emulation_speed
        self.engine = InterlockEngine(rules)
        self.chairs: dict[str, Chair] = {}
        self.by_node: dict[str, Chair] = {}
        self.replay: dict[str, NodeReplay] = {}
        self.counters: dict[str, int] = {}
        self._audit_budget: dict[tuple[str, str], tuple[float, int]] = {}
        self.out: list[Publish] = []
        self.stop_latencies_ms: list[float] = []
        self._load()

    # --- start-up ---------------------------------------------------------------------------
    def _load(self) -> None:
        # One transaction: a write outside it would leave sqlite3's implicit transaction open
        # and turn every later db.transaction() into a savepoint that never commits.
        with db.transaction(self.store.conn):
            self._load_state()

    def _load_state(self) -> None:
        states = self.store.replay_states()
        snaps = self.store.interlock_snapshots()
        for rec in self.store.nodes():
            self._add_chair(rec)
            if rec.node_id in states:
                self.replay[rec.node_id] = NodeReplay(states[rec.node_id])
            # Restore latches before anything else: a restart must never grant a permit
            # that a pre-restart interlock would have withheld.
            self.engine.restore(rec.chair_id, snaps.get((rec.site, rec.chair)))
            sess = self.store.open_session(rec.site, rec.chair)
            if sess is not None:
                chair = self.chairs[rec.chair_id]
                chair.session_id = sess["id"]
                chair.diameter_cmm = sess["diameter_cmm"]
                try:
                    chair.auth = self._reauthorize(sess)
                except DoseCheckError:
                    chair.auth = None  # the library changed: the program must be re-entered
                # A running session resumes only through an operator's start: after a
                # restart the pump has stopped on its own (permit lapse).
                if sess["state"] == "running":
                    self.store.update_session(sess["id"], state="stopped")

    def _add_chair(self, rec: NodeRecord) -> Chair:
        chair = Chair(rec)
        self.chairs[rec.chair_id] = chair
        self.by_node[rec.node_id] = chair
        return chair

    def _reauthorize(self, sess: dict) -> Authorization:
        check = check_program(
            self.library, sess["care_area"], sess["drug"],
            concentration_mg_ml=Decimal(sess["concentration_mg_ml"]),
            weight_kg=Decimal(sess["weight_kg"]) if sess["weight_kg"] != "None" else None,
            dose_rate=Decimal(sess["dose_rate"]), duration_min=Decimal(sess["duration_min"]),
        )
        if check.verdict is Verdict.SOFT:
            return apply_override(check, sess["override_operator"] or "restored",
                                  sess["override_reason"] or "restored after restart",
                                  clock=self.clock)
        return authorize(check, clock=self.clock)

    def node_registered(self, rec: NodeRecord) -> None:
        """A node added or re-keyed while running (the CLI registers through the store)."""
        if rec.node_id in self.by_node:
            self.by_node[rec.node_id].node = rec
        else:
            self._add_chair(rec)

    def chair(self, chair_id: str) -> Chair:
        c = self.chairs.get(chair_id)
        if c is None:
            raise ActionError("unknown chair %r (known: %s)"
                              % (chair_id, ", ".join(sorted(self.chairs)) or "none"), "unknown")
        return c

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    # --- ingest -----------------------------------------------------------------------------
    def reject(self, res: Rejected, topic: str, now: float) -> None:
        node = res.node or "?"
        self._count("rejected." + res.reason)
        self.store.count_rejection(node, res.reason, 1, now)
        key = (node, res.reason)
        start, n = self._audit_budget.get(key, (now, 0))
        if now - start >= 60:
            start, n = now, 0
        if n < _AUDIT_REJECTIONS_PER_MIN:
            chair = self.by_node.get(node)
            self.audit.append(Kinds.PACKET_REJECTED, actor=ACTOR,
                              chair=chair.id if chair else None, subject=node,
                              data={"reason": res.reason, "detail": res.detail[:200],
                                    "topic": topic[:120], "size": res.size})
        self._audit_budget[key] = (start, n + 1)

    def accept(self, v: Verified, now: float, signed: bytes) -> bool:
        """Process one verified packet (``signed``: the COSE_Sign1 it was verified from, which
        is what is stored); return False if it was a duplicate or stale."""
        chair = self.by_node.get(v.node)
        if chair is None:  # registered after this worker's key snapshot: treat as unknown
            self.reject(Rejected(v.node, "node.unknown", "not registered", v.size), v.kind, now)
            return False
        guard = self.replay.setdefault(v.node, NodeReplay())
        if v.kind == "death":
            # The Last Will was signed at connect time with seq 0: a liveness hint only,
            # never a window update (docs/protocol.md).
            if v.boot == guard.cur.boot:
                chair.online = False
                self._count("death")
            return True
        verdict, gap = guard.accept(v.boot, v.seq)
        if verdict == DUPLICATE:
            self._count("duplicate")
            return False
        if verdict != NEW:
            self.reject(Rejected(v.node, "replay.stale", "boot %d seq %d" % (v.boot, v.seq),
                                 v.size), v.kind, now)
            return False
        if gap:
            self._count("gap", gap)
        cur, prev, gaps = guard.state()
        self.store.save_replay(v.node, cur, prev, gaps)
        self.store.add_packet(v.node, v.boot, v.seq, v.kind, now, chair.session_id, signed)
        self._count("accepted." + v.kind)
        # Commands reference the node's newest message: (boot, seq) only moves forward.
        if v.boot > chair.boot:
            if chair.boot >= 0:
                self._event(chair, "node_rebooted", "info", "node %s boot %d -> %d"
                            % (v.node, chair.boot, v.boot), now)
            chair.boot, chair.last_seq = v.boot, v.seq
        elif v.boot == chair.boot and v.seq > chair.last_seq:
            chair.last_seq = v.seq
        chair.online, chair.last_seen = True, now
        if v.kind == "telemetry":
            self._on_telemetry(chair, v.msg, now)  # one evaluation: node heard, vitals, pump
            return True
        # Every evaluation goes through _apply: a duration rule can complete in any of them.
        self._apply(chair, self.engine.node_seen(chair.id, now), now)
        handler = getattr(self, "_on_" + v.kind)
        handler(chair, v.msg, now)
        return True

    def _on_birth(self, chair: Chair, msg: dict, now: float) -> None:
        chair.firmware = msg[schema.B_FIRMWARE]
        chair.capabilities = tuple(msg[schema.B_CAPS])

    def _on_event(self, chair: Chair, msg: dict, now: float) -> None:
        kind = msg[schema.E_KIND]
        sev = ("info", "warning", "alarm")[msg[schema.E_SEVERITY]]
        self._event(chair, "node." + kind, sev, msg.get(schema.E_DETAIL, ""), now)
        if kind == "local_interlock":
            # The node stopped the pump on its own hard limit: latch the chair here too, so
            # the infusion resumes only after an operator's acknowledgement.
            self._apply(chair, self.engine.trip(
                chair.id, "node.local_interlock",
                "node %s local limit: %s" % (chair.node.node_id,
                                             msg.get(schema.E_DETAIL, "hard limit")), now), now)

    def _on_ack(self, chair: Chair, msg: dict, now: float) -> None:
        epoch, seq = msg[schema.K_CMD]
        result = msg[schema.K_RESULT]
        reason = msg.get(schema.K_REASON, "")
        kind = self.store.ack_command(chair.node.node_id, epoch, seq, result, reason, now)
        if result != schema.ACK_OK or kind not in ("permit", None):
            self.audit.append(Kinds.COMMAND_ACKED if result == 0 else Kinds.COMMAND_FAILED,
                              actor=chair.node.node_id, chair=chair.id,
                              subject="%d/%d" % (epoch, seq),
                              data={"command": kind, "result": result, "reason": reason})

    def _on_telemetry(self, chair: Chair, msg: dict, now: float) -> None:
        up = msg[schema.K_T]
        readings: dict[int, Reading] = {}
        for code, (mant, exp, _unit, t) in msg[schema.T_VITALS].items():
            value = Decimal(mant).scaleb(exp)
            measured = now - max(0, up - t) / 1000.0
            readings[code] = Reading(value, measured)
            chair.vitals[code] = (value, measured)
        chair.pump = msg[schema.T_PUMP]
        chair.node_status = msg[schema.T_NODE]
        pump = chair.pump
        self._apply(chair, self.engine.observe(
            chair.id, now, vitals=readings,
            pump=(pump[schema.P_STATE], pump.get(schema.P_ALARMS, []))), now)
        self._check_dose(chair, now)
        self._maybe_complete(chair, now)
        self._renew_permit(chair, now)
        # Chair state goes out with the packet that changed it: each chair at its own
        # node's phase. Published from the tick alone, every chair's state left in the same
        # 100 ms tick once a second, a burst (1,200 JSON messages at 1,200 chairs) that
        # queued every permit and stop behind it.
        if now - chair.last_state_publish >= _STATE_MIN_S:
            chair.last_state_publish = now
            self.out.append(outputs.chair_state(chair, now))

    # --- dose conformance ---------------------------------------------------------------------
    def _check_dose(self, chair: Chair, now: float) -> None:
        auth = chair.auth
        pump = chair.pump
        if not chair.running or auth is None or pump.get(schema.P_PROGRAM) != chair.session_id:
            return
        if pump.get(schema.P_STATE) != schema.PUMP_INFUSING or chair.started_at is None:
            return
        prog = auth.program
        if now - chair.started_at < _CONFORMANCE_GRACE_S:
            return  # the pump's rate/volume replies still describe the time before the start
        mism = check_conformance(
            prog.rate_ul_h, prog.vtbi_ul, pump.get(schema.P_RATE), pump.get(schema.P_INFUSED),
            max(0.0, now - chair.started_at) * self.emulation_speed,
            rate_tolerance_pct=self.tolerance,
        )
        if mism:
            text = "; ".join("%s %s: expected %s, pump reports %s"
                             % (m.field, m.kind, m.expected, m.actual) for m in mism)
            self._apply(chair, self.engine.trip(chair.id, "dose.mismatch",
                                                "pump mismatch: " + text, now), now)
            return
        infused = pump.get(schema.P_INFUSED)
        if infused is not None:
            cum = check_cumulative(prog, chair.infused_base_ul + infused)
            if cum.exceeded:
                self._apply(chair, self.engine.trip(
                    chair.id, "dose.cumulative", "maximum cumulative dose reached (%s %s)"
                    % (cum.delivered_dose, cum.unit), now), now)

    def _maybe_complete(self, chair: Chair, now: float) -> None:
        auth, pump = chair.auth, chair.pump
        if not chair.running or auth is None:
            return
        infused = pump.get(schema.P_INFUSED) or 0
        if pump.get(schema.P_STATE) == schema.PUMP_STOPPED and infused >= auth.program.vtbi_ul:
            chair.running = False
            if chair.session_id is not None:
                self.store.update_session(chair.session_id, state="completed", ended_at=now)
            self._event(chair, "infusion_complete", "info",
                        "%d uL delivered of %d uL programmed" % (infused, auth.program.vtbi_ul),
                        now)
            chair.session_id = None
            chair.auth = None

    # --- interlocks ------------------------------------------------------------------------
    def _apply(self, chair: Chair, ev: Evaluation, now: float) -> None:
        chair.evaluation = ev
        for trip in ev.tripped:
            trip_id = self.store.add_trip(chair.node.site, chair.node.chair, chair.session_id,
                                          trip.rule, trip.cause, trip.breach_at, trip.tripped_at)
            self.audit.append(Kinds.INTERLOCK_TRIPPED, actor=ACTOR, chair=chair.id,
                              subject=trip.rule,
                              data={"cause": trip.cause, "breach_at": trip.breach_at,
                                    "condition_met_at": trip.condition_met_at,
                                    "session": chair.session_id})
            self._event(chair, "interlock_trip", "alarm", trip.cause, now)
            chair.trips_pending_stop.append((trip_id, trip))
        if ev.tripped:
            self.store.save_interlock(chair.node.site, chair.node.chair,
                                      self.engine.snapshot(chair.id), now)
            self._send_stop(chair, "interlock: " + ev.tripped[0].cause[:50], now, None)
        if not ev.permit_ok and chair.permit_state == "granted":
            chair.permit_state = "withheld"
            self.audit.append(Kinds.PERMIT_WITHHELD, actor=ACTOR, chair=chair.id,
                              data={"reasons": list(ev.reasons_not_ok)[:8],
                                    "session": chair.session_id})

    def _send_stop(self, chair: Chair, reason: str, now: float, operator: str | None) -> None:
        was_running = chair.running
        chair.running = False
        chair.permit_until = 0.0
        if chair.session_id is not None and was_running:
            self.store.update_session(chair.session_id, state="stopped")
        if chair.boot < 0:
            return  # never heard from the node: nothing to reference (its permit is lapsed)
        self._command(chair, schema.CMD_STOP, {schema.A_REASON: reason[:64]}, now, operator)
        sent = self.clock()
        for trip_id, trip in chair.trips_pending_stop:
            latency = (sent - trip.breach_at) * 1000.0
            self.store.trip_stop_sent(trip_id, sent, latency)
            self.stop_latencies_ms.append(latency)
        chair.trips_pending_stop.clear()

    def _renew_permit(self, chair: Chair, now: float) -> None:
        ev = chair.evaluation
        if not chair.running or chair.auth is None or chair.session_id is None:
            return
        if ev is None or not ev.permit_ok:
            return
        self._command(chair, schema.CMD_PERMIT,
                      {schema.A_LIFETIME: self.permit_lifetime_ms,
                       schema.A_PROGRAM_ID: chair.session_id}, now, None)
        chair.permit_until = now + self.permit_lifetime_ms / 1000.0
        if chair.permit_state != "granted":
            chair.permit_state = "granted"
            self.audit.append(Kinds.PERMIT_GRANTED, actor=ACTOR, chair=chair.id,
                              data={"session": chair.session_id,
                                    "lifetime_ms": self.permit_lifetime_ms})

    def _command(self, chair: Chair, kind: int, args: dict, now: float,
                 operator: str | None) -> OutgoingCommand:
        cmd = self.commander.make(chair.node.node_id, kind, args, chair.boot, chair.last_seq)
        self.store.add_command(chair.node.node_id, cmd.epoch, cmd.seq, cmd.kind_name, args,
                               chair.session_id, operator, now)
        if kind != schema.CMD_PERMIT:  # permits are renewed every second: recorded, not audited
            self.audit.append(Kinds.COMMAND_SENT, actor=operator or ACTOR, chair=chair.id,
                              subject="%d/%d" % (cmd.epoch, cmd.seq),
                              data={"command": cmd.kind_name, "args": _plain(args),
                                    "session": chair.session_id})
        self.out.append(Publish(cmd.topic, cmd.wire))
        return cmd

    def _event(self, chair: Chair, kind: str, severity: str, detail: str, now: float) -> None:
        self.out.append(outputs.event(chair, kind, severity, detail, now))

    # --- periodic ----------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        for ev in self.engine.tick(now):
            chair = self.chairs.get(ev.chair)
            if chair is not None:
                self._apply(chair, ev, now)
        for chair in self.chairs.values():
            if chair.online and now - chair.last_seen > self.rules.pump.node_offline_s:
                chair.online = False
            if now - chair.last_state_publish >= _STATE_EVERY_S:  # silent or slow nodes
                chair.last_state_publish = now
                self.out.append(outputs.chair_state(chair, now))

    # --- operator actions (from the CLI through the control socket) --------------------------
    def program(self, chair_id: str, *, drug: str, concentration_mg_ml: Decimal,
                weight_kg: Decimal | None, dose_rate: Decimal, duration_min: Decimal,
                diameter_cmm: int, operator: str, override_reason: str | None = None,
                dry_run: bool = False) -> dict:
        chair = self.chair(chair_id)
        now = self.clock()
        if chair.running and chair.auth is not None:
            return self._rate_change(chair, dose_rate, operator, override_reason, dry_run, now)
        check = check_program(self.library, self.care_area, drug,
                              concentration_mg_ml=concentration_mg_ml, weight_kg=weight_kg,
                              dose_rate=dose_rate, duration_min=duration_min)
        result = _check_summary(check)
        if dry_run or check.verdict is Verdict.HARD or (
                check.verdict is Verdict.SOFT and not override_reason):
            if check.verdict is Verdict.HARD and not dry_run:
                self.audit.append(Kinds.PROGRAM_REJECTED, actor=operator, chair=chair.id,
                                  data=result)
            return result
        auth = (apply_override(check, operator, override_reason or "", clock=self.clock)
                if check.verdict is Verdict.SOFT else authorize(check, clock=self.clock))
        prog = auth.program
        if chair.session_id is not None:
            self.store.update_session(chair.session_id, state="ended", ended_at=now)
        chair.session_id = self.store.add_session(
            node_id=chair.node.node_id, site=chair.node.site, chair=chair.node.chair,
            care_area=self.care_area, drug=drug, concentration_mg_ml=concentration_mg_ml,
            weight_kg=weight_kg, dose_rate=dose_rate, dosing_unit=str(prog.dosing_unit),
            duration_min=duration_min, rate_ul_h=prog.rate_ul_h, vtbi_ul=prog.vtbi_ul,
            diameter_cmm=diameter_cmm, library_version=auth.library_version,
            library_hash=auth.library_sha256, override_operator=auth.operator,
            override_reason=auth.reason, operator=operator, state="programmed", created_at=now)
        chair.auth, chair.diameter_cmm, chair.infused_base_ul = auth, diameter_cmm, 0
        self.audit.append(Kinds.PROGRAM_ACCEPTED, actor=operator, chair=chair.id,
                          subject=str(chair.session_id), data=result)
        if auth.overridden:
            self.audit.append(Kinds.OVERRIDE, actor=operator, chair=chair.id,
                              subject=str(chair.session_id),
                              data={"limits": [v.name for v in auth.overridden],
                                    "reason": auth.reason})
        if chair.boot < 0:
            raise ActionError("chair %s: node %s has not been heard from yet; the program is "
                              "stored as session %d and will be sent with `ivgw start`"
                              % (chair.id, chair.node.node_id, chair.session_id), "offline")
        self._send_program(chair, operator, now)
        result["session"] = chair.session_id
        return result

    def _send_program(self, chair: Chair, operator: str, now: float) -> None:
        assert chair.auth is not None and chair.session_id is not None
        prog = chair.auth.program
        chair.program_sent = (chair.session_id, chair.boot)
        self._command(chair, schema.CMD_PROGRAM, {
            schema.A_PROGRAM_ID: chair.session_id, schema.A_RATE: prog.rate_ul_h,
            schema.A_VTBI: prog.vtbi_ul, schema.A_DIAMETER: chair.diameter_cmm,
            schema.A_DRUG: prog.drug[:32]}, now, operator)

    def _rate_change(self, chair: Chair, dose_rate: Decimal, operator: str,
                     override_reason: str | None, dry_run: bool, now: float) -> dict:
        assert chair.auth is not None and chair.started_at is not None
        infused = int(chair.pump.get(schema.P_INFUSED) or 0)
        check = check_rate_change(self.library, chair.auth, dose_rate, infused_ul=infused,
                                  elapsed_s=Decimal(str(max(0.0, now - chair.started_at))))
        result = _check_summary(check)
        if dry_run or check.verdict is Verdict.HARD or (
                check.verdict is Verdict.SOFT and not override_reason):
            return result
        auth = (apply_override(check, operator, override_reason or "", clock=self.clock)
                if check.verdict is Verdict.SOFT else authorize(check, clock=self.clock))
        chair.auth = auth
        self.audit.append(Kinds.PROGRAM_ACCEPTED, actor=operator, chair=chair.id,
                          subject=str(chair.session_id), data=dict(result, rate_change=True))
        self._send_program(chair, operator, now)
        result["session"] = chair.session_id
        return result

    def start(self, chair_id: str, operator: str) -> dict:
        chair = self.chair(chair_id)
        now = self.clock()
        if chair.auth is None or chair.session_id is None:
            raise ActionError("chair %s has no program: run `ivgw program` first" % chair.id,
                              "no_program")
        if not chair.online or chair.boot < 0:
            raise ActionError("chair %s: node %s is offline" % (chair.id, chair.node.node_id),
                              "offline")
        ev = self.engine.evaluate(chair.id, now)
        chair.evaluation = ev
        if not ev.permit_ok:
            raise ActionError("chair %s cannot start: %s" % (chair.id, "; ".join(
                ev.reasons_not_ok) or "interlock"), "interlock")
        # A node loses its program when it reboots: send it again unless this boot has it.
        if chair.program_sent != (chair.session_id, chair.boot) and chair.pump.get(
                schema.P_PROGRAM) != chair.session_id:
            self._send_program(chair, operator, now)
        chair.running = True
        chair.started_at = now
        self.store.update_session(chair.session_id, state="running", started_at=now)
        self._renew_permit(chair, now)
        self._command(chair, schema.CMD_START, {schema.A_PROGRAM_ID: chair.session_id}, now,
                      operator)
        return {"chair": chair.id, "session": chair.session_id, "started": True}

    def stop(self, chair_id: str, operator: str, reason: str) -> dict:
        chair = self.chair(chair_id)
        now = self.clock()
        ev = self.engine.e_stop(chair.id, operator, reason, now)
        self._apply(chair, ev, now)
        if not ev.tripped:  # already latched: still send the stop
            self._send_stop(chair, "e-stop: " + reason, now, operator)
        return {"chair": chair.id, "stopped": True, "latched": True}

    def acknowledge(self, chair_id: str, operator: str, reason: str) -> dict:
        chair = self.chair(chair_id)
        now = self.clock()
        res = self.engine.acknowledge(chair.id, operator, reason, now)
        if not res.accepted:
            raise ActionError(res.message, "ack_refused")
        self.store.ack_trips(chair.node.site, chair.node.chair, operator, reason, now)
        self.store.save_interlock(chair.node.site, chair.node.chair,
                                  self.engine.snapshot(chair.id), now)
        self.audit.append(Kinds.INTERLOCK_ACKED, actor=operator, chair=chair.id,
                          data={"reason": reason, "cleared": [t.cause for t in res.cleared]})
        chair.evaluation = res.evaluation
        return {"chair": chair.id, "acknowledged": True, "message": res.message}

    def snapshot_all(self, now: float) -> None:
        for chair in self.chairs.values():
            self.store.save_interlock(chair.node.site, chair.node.chair,
                                      self.engine.snapshot(chair.id), now)

    def take_output(self) -> list[Publish]:
        out, self.out = self.out, []
        return out


def _plain(args: dict) -> dict:
    return {str(k): v for k, v in args.items()}


def _check_summary(check: Any) -> dict:
    prog = check.program
    out: dict[str, Any] = {
        "verdict": str(check.verdict).lower(),
        "drug": check.drug,
        "care_area": check.care_area,
        "library_version": check.library_version,
        "library_sha256": check.library_sha256,
        "violations": [{"limit": v.name, "hard": v.hard, "message": v.message}
                       for v in check.violations],
    }
    if prog is not None:
        out.update(rate_ul_h=prog.rate_ul_h, vtbi_ul=prog.vtbi_ul,
                   total_dose_mg=str(prog.total_dose_mg), dosing_unit=str(prog.dosing_unit))
    return out
