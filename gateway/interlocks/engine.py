"""The infusion-stop interlock: decides, per chair, when to stop the pump and when a run
permit may be granted.

It is pure and deterministic: every call takes ``now`` (seconds, on one clock the caller
chooses) and the engine never reads a clock, so tests drive time exactly and a replay of
the audit log reproduces every decision. The gateway calls ``tick`` every 100-200 ms
because some transitions happen with no new data at all (a vital going stale, a silent
node, a duration completing).

Semantics in short (docs/interlocks.md has the full story):

* A vital past a *critical* limit for its ``for_s`` is an alarm and trips the chair.
* A vital past a *warning* limit for its ``for_s`` is a warning; ``warnings_to_alarm``
  simultaneous warnings (ICE PCA: two) are an alarm and trip. A required vital with no
  fresh value counts as a warning too (``missing_counts_as_warning``) - but only while the
  pump is, or may still be, infusing, so an idle chair does not latch for lack of data.
* A pump alarm listed in ``trip_on_alarms`` trips; so does a node silent for
  ``node_offline_s`` while its pump may be infusing; so does a manual e-stop.
* A trip latches: the chair gets no permit until someone acknowledges, and an
  acknowledgement is refused while any alarm is still active.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from gateway.interlocks import _snapshot
from gateway.interlocks._state import ChairState, LimitTimer, clamp_reading
from gateway.interlocks.results import (
    AckResult,
    Condition,
    Evaluation,
    InterlockError,
    Number,
    PumpState,
    Reading,
    Trip,
)
from gateway.interlocks.rules import Band, ParameterRule, RuleSet

__all__ = ["InterlockEngine", "UNSPECIFIED_PUMP_ALARM"]

# The alarm code used when the pump reports its alarm state without naming an alarm.
UNSPECIFIED_PUMP_ALARM = "unspecified"

_MAX_ID = 64
_MAX_TEXT = 200
# A chair is re-evaluated at least this often even when no deadline is due (seconds).
REFRESH_S = 1.0
# Deadlines are sums of floats; a tick this close before one evaluates anyway, so rounding
# can never make a tick skip the evaluation at which a condition changes.
_DUE_MARGIN_S = 1e-6
_COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


class InterlockEngine:
    """Interlock state of every chair under one protocol's rule set."""

    def __init__(self, ruleset: RuleSet) -> None:
        self._rules = ruleset
        self._chairs: dict[str, ChairState] = {}
        self._codes = frozenset(c for p in ruleset.parameters for c in p.sources)
        # Per parameter, its limits in evaluation order (critical before warning, low before
        # high) with their rule ids: built once, not on each of the many evaluations.
        self._limits = tuple(
            (
                p,
                tuple(
                    (severity, band, side, limit, f"{p.name}.{severity}.{side}")
                    for severity, band in (("critical", p.critical), ("warning", p.warning))
                    if band is not None
                    for side, limit in (("low", band.low), ("high", band.high))
                    if limit is not None
                ),
            )
            for p in ruleset.parameters
        )

    @property
    def rules(self) -> RuleSet:
        return self._rules

    def chairs(self) -> tuple[str, ...]:
        return tuple(sorted(self._chairs))

    # -- inputs -----------------------------------------------------------------------------

    def update_vitals(self, chair: str, values: Mapping[int, Reading], now: float) -> Evaluation:
        """Take the latest vitals of a chair (codes no rule reads are ignored) and evaluate.

        A reading older than the one already held for its code is ignored (a late or
        re-sent packet must not roll a value back); one measured in the future of ``now``
        is taken as measured at ``now``, so clock skew cannot stretch its freshness.
        """
        return self.observe(chair, now, seen=False, vitals=values)

    def update_pump(
        self, chair: str, state: PumpState | int, alarms: Sequence[str], now: float
    ) -> Evaluation:
        """Take the pump state and its current alarm codes (an empty list: none)."""
        return self.observe(chair, now, seen=False, pump=(state, alarms))

    def node_seen(self, chair: str, now: float) -> Evaluation:
        """Call for every verified packet from the chair's node: proof it is alive."""
        return self.observe(chair, now)

    def observe(
        self,
        chair: str,
        now: float,
        *,
        seen: bool = True,
        vitals: Mapping[int, Reading] | None = None,
        pump: tuple[PumpState | int, Sequence[str]] | None = None,
    ) -> Evaluation:
        """Everything one packet says - the node is alive, its vitals, its pump - taken at
        once and evaluated once.

        One evaluation per packet, not one per kind of news: the evaluation is the gateway's
        largest per-packet cost, and a partial evaluation between the parts of one packet
        (the node heard, its new vitals not yet taken) could only show a state that never
        existed. Inputs are all checked before any is taken, so a bad one changes nothing.
        """
        checked = (
            [
                (code, *_check_reading(code, reading))
                for code, reading in vitals.items()
                if code in self._codes
            ]
            if vitals
            else ()
        )
        pump_update = _check_pump(chair, *pump) if pump is not None else None
        st = self._state(chair)
        now = self._advance(st, now)
        if seen:
            st.node_last_seen = now
        for code, value, measured in checked:
            measured = min(measured, now)
            held = st.readings.get(code)
            if held is not None and measured < held.measured_at:
                continue
            st.readings[code] = Reading(value, measured)
            st.restored.discard(code)
        if pump_update is not None:
            pump_state, codes = pump_update
            st.pump_state = pump_state
            if pump_state is not PumpState.UNKNOWN:
                st.pump_last_definite = pump_state
            st.pump_alarms = {c: st.pump_alarms.get(c, now) for c in codes}
        return self._evaluate(chair, st, now)

    def tick(self, now: float) -> list[Evaluation]:
        """Re-evaluate the chairs whose state can change with time alone (a vital going
        stale, a silent node, a duration completing) - and every chair not evaluated for
        ``REFRESH_S`` - in chair order.

        Each evaluation records the earliest moment at which the passing of time could
        change its outcome (``ChairState.due``); a chair is skipped until then. With a
        packet a second per chair this removes nearly all periodic evaluations (ten per
        chair per second at a 100 ms tick), the gateway's largest cost at scale. The
        ``REFRESH_S`` bound keeps the texts of conditions ("stale for 12 s") current and
        is a backstop should a deadline ever be missed.
        """
        now = _check_time(now)
        out = []
        for chair in sorted(self._chairs):
            st = self._chairs[chair]
            if now < st.due - _DUE_MARGIN_S:
                continue
            out.append(self._evaluate(chair, st, self._advance(st, now)))
        return out

    def evaluate(self, chair: str, now: float) -> Evaluation:
        """Re-evaluate one chair without new data."""
        st = self._state(chair)
        return self._evaluate(chair, st, self._advance(st, now))

    def e_stop(self, chair: str, operator: str, reason: str, now: float) -> Evaluation:
        """Manual emergency stop: always trips and latches, whatever the vitals say."""
        operator, reason = _who(operator, "operator"), _who(reason, "reason")
        st = self._state(chair)
        now = self._advance(st, now)
        st.pending.append((f"manual e-stop by {operator}: {reason}", "manual.e_stop"))
        return self._evaluate(chair, st, now)

    def trip(self, chair: str, rule: str, cause: str, now: float) -> Evaluation:
        """A trip decided outside the vital-sign rules, e.g. the node's own local interlock
        or a dose-conformance check: it latches like any other, under its own rule id (e.g.
        ``dose.mismatch``), and has no lasting condition, so it can be acknowledged at once.
        """
        rule, cause = _who(rule, "rule"), _who(cause, "cause")
        st = self._state(chair)
        now = self._advance(st, now)
        st.pending.append((cause, rule))
        return self._evaluate(chair, st, now)

    def acknowledge(self, chair: str, operator: str, reason: str, now: float) -> AckResult:
        """Clear the chair's latch, if nothing that trips is still present.

        Refused while any alarm is active: a critical value not yet back in range for its
        ``clear_s`` (or with no fresh reading to show it is), enough warnings together, a
        pump alarm the pump still reports, or a node still silent while its pump may be
        infusing. Clearing the latch does not by itself grant a permit: that still needs
        every required vital fresh and the node heard.
        """
        operator, reason = _who(operator, "operator"), _who(reason, "reason")
        st = self._state(chair)
        now = self._advance(st, now)
        ev = self._evaluate(chair, st, now)
        if not ev.latched:
            return AckResult(
                chair, False, operator, reason, now,
                f"refused: chair {chair} has no latched interlock to acknowledge",
                (), (), ev,
            )  # fmt: skip
        if ev.alarms:
            still = "; ".join(c.text for c in ev.alarms)
            return AckResult(
                chair, False, operator, reason, now,
                f"refused: chair {chair} still has an active alarm: {still}",
                (), ev.alarms, ev,
            )  # fmt: skip
        cleared = tuple(st.latch)
        st.latch.clear()
        after = self._evaluate(chair, st, now, extra=ev.tripped)
        n = len(cleared)
        return AckResult(
            chair, True, operator, reason, now,
            f"accepted: {n} trip{'s' if n != 1 else ''} on chair {chair} acknowledged by "
            f"{operator}",
            cleared, (), after,
        )  # fmt: skip

    # -- persistence ------------------------------------------------------------------------

    def snapshot(self, chair: str) -> dict[str, Any]:
        """The chair's state as JSON-able data for the gateway's database."""
        return _snapshot.dump(chair, self._state(chair), self._rules)

    def restore(self, chair: str, snapshot: Mapping[str, Any] | None) -> None:
        """Restore a chair after a gateway restart.

        ``None`` (no stored state) starts the chair afresh: no permit until every required
        vital arrives fresh and the node is heard. A snapshot that cannot be read latches
        the chair (rule ``restore.invalid``): its last state is unknown, so someone must
        look at the patient and acknowledge.
        """
        _check_id(chair)
        if snapshot is None:
            self._chairs[chair] = ChairState()
            return
        try:
            self._chairs[chair] = _snapshot.load(chair, snapshot, self._rules)
        except _snapshot.SnapshotError as e:
            st = ChairState()
            st.pending.append((f"interlock state could not be restored ({e})", "restore.invalid"))
            self._chairs[chair] = st

    # -- evaluation -------------------------------------------------------------------------

    def _state(self, chair: str) -> ChairState:
        st = self._chairs.get(chair)
        if st is None:
            _check_id(chair)
            st = self._chairs[chair] = ChairState()
        return st

    def _advance(self, st: ChairState, now: float) -> float:
        """Time never runs backwards for a chair: a caller's clock step back is held."""
        now = _check_time(now)
        if st.last_now is not None and now < st.last_now:
            now = st.last_now
        st.last_now = now
        if st.created_at is None:
            st.created_at = now
        if st.needs_clamp:
            for t in st.timers.values():
                t.clamp(now)
            st.pump_alarms = {c: min(s, now) for c, s in st.pump_alarms.items()}
            st.readings = {c: clamp_reading(r, now) for c, r in st.readings.items()}
            st.created_at = min(st.created_at, now)
            if st.node_last_seen is not None:
                st.node_last_seen = min(st.node_last_seen, now)
            st.needs_clamp = False
        return now

    def _evaluate(
        self, chair: str, st: ChairState, now: float, extra: Sequence[Trip] = ()
    ) -> Evaluation:
        rules = self._rules
        created = st.created_at if st.created_at is not None else now
        infusing = st.may_be_infusing()
        tripped: list[Trip] = []  # new in this evaluation
        warnings: list[Condition] = []
        alarms: list[Condition] = []
        reasons: list[str] = []
        counted: list[tuple[str, float]] = []  # (label, since) toward warnings_to_alarm
        # The earliest moment time alone could change this outcome (see tick): every
        # comparison of `now` with a deadline below adds that deadline if it lies ahead.
        due = now + REFRESH_S

        for cause, rule in st.pending:
            tripped.append(Trip(chair, cause, rule, now, now, now))
        st.pending.clear()

        for p, limits in self._limits:
            fresh, src, latest, live, stale_at = _effective(st, p, now)
            if stale_at < due:  # a fresh reading turns stale
                due = stale_at
            in_alarm = False
            warning: Condition | None = None
            for severity, band, side, limit, rule in limits:
                timer = st.timers.get(rule)
                if timer is None:
                    timer = st.timers[rule] = LimitTimer()
                out = fresh is not None and (
                    fresh.value < limit if side == "low" else fresh.value > limit
                )
                newly = timer.step(fresh, out, now, band.for_s, band.clear_s)
                if timer.breach_since is not None:  # a duration to complete or clear
                    if timer.met_at is None and now <= timer.breach_since + band.for_s < due:
                        due = timer.breach_since + band.for_s
                    if timer.inside_since is not None and (
                        now <= timer.inside_since + band.clear_s < due
                    ):
                        due = timer.inside_since + band.clear_s
                if timer.met_at is None or timer.breach_since is None:
                    continue
                cond = _limit_condition(p, side, limit, band, timer, rule, fresh, out, now)
                if severity == "critical":
                    in_alarm = True
                    alarms.append(cond)
                    if newly:
                        tripped.append(
                            Trip(
                                chair,
                                _limit_text(p, side, limit, band, timer.last_value),
                                rule,
                                timer.breach_since,
                                timer.met_at,
                                now,
                                value=timer.last_value,
                                limit=limit,
                                mdc_code=src,
                            )
                        )
                elif not in_alarm and warning is None:
                    warning = cond
            if warning is not None:
                warnings.append(warning)
                met = warning.met_at if warning.met_at is not None else warning.since
                counted.append((f"{p.name} {warning.kind}", met))
            if latest is None and now <= created + p.max_age_s < due:
                due = created + p.max_age_s  # a vital never seen: its grace ends
            if p.required_for_permit and not live:
                absent = _absence(p, fresh or latest, created, now)
                reasons.append(absent.text)
                if absent.met_at is not None:  # past its grace: a warning
                    warnings.append(absent)
                    if (
                        rules.combine.missing_counts_as_warning
                        and infusing
                        and not in_alarm
                        and warning is None
                    ):
                        counted.append((f"{p.name} {absent.kind}", absent.met_at))

        n = rules.combine.warnings_to_alarm
        if len(counted) >= n:
            counted.sort(key=lambda c: c[1])
            met = counted[n - 1][1]
            labels = " + ".join(label for label, _ in counted)
            text = f"{_COUNT_WORDS.get(len(counted), str(len(counted)))} warnings: {labels}"
            rule = "combine.warnings_to_alarm"
            alarms.append(Condition("combine", "combined", len(counted), n, met, met, rule, text))
            if not st.combine_active:
                tripped.append(Trip(chair, text, rule, met, met, now, value=len(counted), limit=n))
            st.combine_active = True
        else:
            st.combine_active = False

        pump_tripping: set[str] = set()
        for code, since in st.pump_alarms.items():
            cond = Condition(
                "pump", "pump_alarm", code, None, since, since, "pump.alarm", f"pump alarm {code}"
            )
            if rules.pump.trips_on(code):
                pump_tripping.add(code)
                alarms.append(cond)
                if code not in st.pump_tripped:
                    tripped.append(
                        Trip(chair, cond.text, "pump.alarm", since, since, now, value=code)
                    )
            else:
                warnings.append(cond)
        st.pump_tripped = pump_tripping

        limit_s = rules.pump.node_offline_s
        heard = st.node_last_seen if st.node_last_seen is not None else created
        silent = now - heard
        if now <= heard + limit_s < due:
            due = heard + limit_s
        st.due = due
        if silent >= limit_s:
            text = (
                f"node offline {_secs(silent)} s"
                if st.node_last_seen is not None
                else f"node not heard in {_secs(silent)} s since the interlock started"
            )
            cond = Condition(
                "node", "offline", None, limit_s, heard, heard + limit_s, "node.offline", text
            )
            reasons.append(text)
            if infusing:
                alarms.append(cond)
                if not st.node_offline_tripped:
                    tripped.append(
                        Trip(
                            chair,
                            text,
                            "node.offline",
                            heard,
                            heard + limit_s,
                            now,
                            value=round(silent, 3),
                            limit=limit_s,
                        )  # fmt: skip
                    )
                    st.node_offline_tripped = True
            else:
                warnings.append(cond)
        else:
            st.node_offline_tripped = False
            if st.node_last_seen is None:
                reasons.append("node not heard yet")

        st.latch.extend(tripped)
        alarm_reasons = [f"alarm: {c.text}" for c in alarms]
        latch_reasons = [f"latched: {t.cause} ({t.rule})" for t in st.latch]
        all_reasons = (*latch_reasons, *alarm_reasons, *reasons)
        return Evaluation(
            chair=chair,
            at=now,
            warnings=tuple(warnings),
            alarms=tuple(alarms),
            tripped=(*extra, *tripped),
            latched=bool(st.latch),
            latched_by=tuple(st.latch),
            permit_ok=not all_reasons,
            reasons_not_ok=all_reasons,
        )


# -- helpers --------------------------------------------------------------------------------


def _effective(
    st: ChairState, p: ParameterRule, now: float
) -> tuple[Reading | None, int | None, Reading | None, bool, float]:
    """(first fresh reading in source priority order, its MDC code, most recent reading of
    any source, whether a fresh reading arrived since the last restore: may back a permit,
    the moment the first of the fresh readings turns stale - or +inf)."""
    fresh: Reading | None = None
    fresh_code: int | None = None
    latest: Reading | None = None
    live = False
    stale_at = math.inf
    for code in p.sources:
        r = st.readings.get(code)
        if r is None:
            continue
        if latest is None or r.measured_at > latest.measured_at:
            latest = r
        until = r.measured_at + p.max_age_s
        if now - r.measured_at <= p.max_age_s:
            if until < stale_at:
                stale_at = until
            if fresh is None:
                fresh, fresh_code = r, code
            live = live or code not in st.restored
    return fresh, fresh_code, latest, live, stale_at


def _absence(p: ParameterRule, latest: Reading | None, created: float, now: float) -> Condition:
    """A required vital without a fresh value; ``met_at`` is set once it counts as a warning.

    A vital never seen since the chair's state began gets ``max_age_s`` of grace from that
    moment, as if a reading had just been taken: a new chair must not count every vital as
    missing before the first packet could arrive. A reading restored from a snapshot that
    is still fresh blocks the permit but is not yet a warning.
    """
    if latest is not None and now - latest.measured_at <= p.max_age_s:
        text = f"{p.name}: no reading since the interlock state was restored"
        return Condition(
            p.name, "missing", latest.value, p.max_age_s, latest.measured_at,
            None, f"{p.name}.missing", text,
        )  # fmt: skip
    if latest is None:
        due = created + p.max_age_s
        text = f"{p.name} missing: no reading in {_secs(now - created)} s"
        return Condition(
            p.name, "missing", None, p.max_age_s, created,
            due if now > due else None, f"{p.name}.missing", text,
        )  # fmt: skip
    age = now - latest.measured_at
    text = f"{p.name} stale: last reading {_secs(age)} s old (max {_secs(p.max_age_s)} s)"
    return Condition(
        p.name, "stale", latest.value, p.max_age_s, latest.measured_at,
        latest.measured_at + p.max_age_s, f"{p.name}.stale", text,
    )  # fmt: skip


def _limit_text(
    p: ParameterRule, side: str, limit: Decimal, band: Band, value: Number | None
) -> str:
    op = "<" if side == "low" else ">"
    text = f"{p.name} {side} {_num(value)} {op} {_num(limit)}"
    return f"{text} for {_secs(band.for_s)} s" if band.for_s > 0 else text


def _limit_condition(
    p: ParameterRule,
    side: str,
    limit: Decimal,
    band: Band,
    timer: LimitTimer,
    rule: str,
    fresh: Reading | None,
    out: bool,
    now: float,
) -> Condition:
    text = _limit_text(p, side, limit, band, timer.last_value)
    if fresh is None:
        text += " (no fresh reading to show a recovery)"
    elif not out and timer.inside_since is not None:
        text += (
            f" (back in range {_secs(now - timer.inside_since)} s"
            f" of the {_secs(band.clear_s)} s needed)"
        )
    assert timer.breach_since is not None
    return Condition(
        p.name, side, timer.last_value, limit, timer.breach_since, timer.met_at, rule, text
    )


def _check_pump(
    chair: str, state: PumpState | int, alarms: Sequence[str]
) -> tuple[PumpState, list[str]]:
    try:
        pump_state = PumpState(int(state))
    except ValueError:
        raise InterlockError(f"chair {chair}: unknown pump state {state!r}") from None
    codes: list[str] = []
    for code in alarms:
        if not isinstance(code, str):
            raise InterlockError(f"chair {chair}: pump alarm code {code!r} is not text")
        c = code.strip().lower()
        if c and c not in codes:
            codes.append(c)
    if pump_state is PumpState.ALARM and not codes:
        codes.append(UNSPECIFIED_PUMP_ALARM)
    return pump_state, codes


def _check_reading(code: int, reading: Reading) -> tuple[Number, float]:
    if not isinstance(reading, Reading):
        raise InterlockError(f"vital {code}: expected a Reading, not {type(reading).__name__}")
    v, t = reading.value, reading.measured_at
    finite = (
        v.is_finite() if isinstance(v, Decimal) else isinstance(v, int | float) and math.isfinite(v)
    )
    if isinstance(v, bool) or not finite:
        raise InterlockError(f"vital {code}: value {v!r} is not a finite number")
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        raise InterlockError(f"vital {code}: measured_at {t!r} is not a finite time")
    return v, float(t)


def _check_time(now: float) -> float:
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise InterlockError(f"now must be a finite number of seconds, not {now!r}")
    return float(now)


def _check_id(chair: str) -> None:
    if not isinstance(chair, str) or not chair or len(chair) > _MAX_ID:
        raise InterlockError(f"chair id {chair!r} must be 1-{_MAX_ID} characters of text")


def _who(text: str, what: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InterlockError(f"{what} must be given: every stop and acknowledgement is audited")
    return text.strip()[:_MAX_TEXT]


def _num(v: Number | None) -> str:
    if v is None:
        return "?"
    if isinstance(v, int):
        return str(v)
    d = v if isinstance(v, Decimal) else Decimal(repr(v))
    return format(d.normalize(), "f")


def _secs(s: float) -> str:
    text = f"{s:.1f}"
    return text[:-2] if text.endswith(".0") else text
