"""A chair's interlock state as JSON-able data, so a restarted gateway keeps its latches.

Everything is kept - the latch and the trips holding it, breach timers (started and met: a
met condition still needs fresh in-range values to clear), the last readings, when the node
was last heard, the pump state and alarms - so a restarted engine trips whenever the engine
that stopped would have. One thing is deliberately weaker after a restore: a restored
reading is evidence for breaches and staleness but never makes a vital fresh enough for a
permit, so every required vital must arrive again first. Times are kept as given; the engine
clamps restored times that lie in the future of the restarted clock (a monotonic clock
starts again at boot), which can only make a rule fire sooner, never later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.interlocks._state import ChairState, LimitTimer
from gateway.interlocks.results import PumpState, Reading, Trip
from gateway.interlocks.rules import RuleSet

__all__ = ["SNAPSHOT_FORMAT", "SnapshotError", "dump", "load"]

SNAPSHOT_FORMAT = 1


class SnapshotError(ValueError):
    """A stored snapshot cannot be read back; the engine latches the chair instead."""


def dump(chair: str, st: ChairState, rules: RuleSet) -> dict[str, Any]:
    timers = {
        rule: {
            "breach_since": t.breach_since,
            "out_since": t.out_since,
            "met_at": t.met_at,
            "last_value": None if t.last_value is None else str(t.last_value),
        }
        for rule, t in sorted(st.timers.items())
        if t.breach_since is not None
    }
    return {
        "format": SNAPSHOT_FORMAT,
        "chair": chair,
        "rules": {"protocol": rules.protocol, "version": rules.version, "sha256": rules.sha256},
        "latch": [
            {
                "cause": t.cause,
                "rule": t.rule,
                "breach_at": t.breach_at,
                "condition_met_at": t.condition_met_at,
                "tripped_at": t.tripped_at,
                "value": _json_value(t.value),
                "limit": None if t.limit is None else str(t.limit),
                "mdc_code": t.mdc_code,
            }
            for t in st.latch
        ]
        + [
            # restore trips not yet reported still hold the latch
            {"cause": c, "rule": r, "breach_at": None, "condition_met_at": None, "tripped_at": None}
            for c, r in st.pending
        ],
        "timers": timers,
        "pump": {
            "state": int(st.pump_state),
            "last_definite": int(st.pump_last_definite),
            "alarms": dict(sorted(st.pump_alarms.items())),
            "tripped": sorted(st.pump_tripped),
        },
        "readings": {
            str(code): [str(r.value), r.measured_at] for code, r in sorted(st.readings.items())
        },
        "created_at": st.created_at,
        "node_last_seen": st.node_last_seen,
        "node_offline_tripped": st.node_offline_tripped,
        "combine_active": st.combine_active,
    }


def load(chair: str, snap: Mapping[str, Any], rules: RuleSet) -> ChairState:
    """Rebuild a chair's state; raise ``SnapshotError`` if the data is not one of ours."""
    if not isinstance(snap, Mapping):
        raise SnapshotError("the snapshot is not a mapping")
    if snap.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotError(f"unknown snapshot format {snap.get('format')!r}")
    if snap.get("chair") != chair:
        raise SnapshotError(f"the snapshot belongs to chair {snap.get('chair')!r}")
    st = ChairState(needs_clamp=True)
    known_rules = _rule_ids(rules)
    for item in _list(snap, "latch"):
        cause, rule = _text(item, "cause"), _text(item, "rule")
        times = [item.get(k) for k in ("breach_at", "condition_met_at", "tripped_at")]
        if all(t is None for t in times):
            st.pending.append((cause, rule))
            continue
        b, m, t = (_time(item, k) for k in ("breach_at", "condition_met_at", "tripped_at"))
        value = item.get("value")
        limit = _decimal(item.get("limit"))
        code = item.get("mdc_code")
        if not (value is None or isinstance(value, str)):
            raise SnapshotError(f"a latch entry has a bad value {value!r}")
        if not (code is None or (isinstance(code, int) and not isinstance(code, bool))):
            raise SnapshotError(f"a latch entry has a bad MDC code {code!r}")
        st.latch.append(Trip(chair, cause, rule, b, m, t, value, limit, code))
    timers = snap.get("timers")
    if not isinstance(timers, Mapping):
        raise SnapshotError("'timers' is not a mapping")
    for rule, item in timers.items():
        if not isinstance(item, Mapping):
            raise SnapshotError(f"timer {rule!r} is not a mapping")
        if rule not in known_rules:
            continue  # the rule set changed; the latch, if any, is kept regardless
        timer = LimitTimer(
            breach_since=_time(item, "breach_since"),
            out_since=_time(item, "out_since"),
            met_at=_opt_time(item, "met_at"),
            last_value=_decimal(item.get("last_value")),
        )
        st.timers[rule] = timer
    pump = snap.get("pump")
    if not isinstance(pump, Mapping):
        raise SnapshotError("'pump' is not a mapping")
    st.pump_state = _pump_state(pump.get("state"))
    st.pump_last_definite = _pump_state(pump.get("last_definite"))
    alarms = pump.get("alarms")
    if not isinstance(alarms, Mapping):
        raise SnapshotError("'pump.alarms' is not a mapping")
    for code in alarms:
        if not isinstance(code, str):
            raise SnapshotError(f"bad pump alarm {code!r}")
        st.pump_alarms[code] = _time(alarms, code)
    tripped = pump.get("tripped")
    if not isinstance(tripped, list) or not all(isinstance(c, str) for c in tripped):
        raise SnapshotError("'pump.tripped' is not a list of codes")
    st.pump_tripped = set(tripped)
    readings = snap.get("readings")
    if not isinstance(readings, Mapping):
        raise SnapshotError("'readings' is not a mapping")
    for code, item in readings.items():
        if not (isinstance(code, str) and code.isdigit() and isinstance(item, list)):
            raise SnapshotError(f"bad reading {code!r}")
        if len(item) != 2:
            raise SnapshotError(f"bad reading {code!r}")
        value = _decimal(item[0])
        if value is None:
            raise SnapshotError(f"reading {code!r} has no value")
        st.readings[int(code)] = Reading(value, _time({"t": item[1]}, "t"))
        st.restored.add(int(code))
    st.created_at = _opt_time(snap, "created_at")
    st.node_last_seen = _opt_time(snap, "node_last_seen")
    st.node_offline_tripped = _bool(snap, "node_offline_tripped")
    st.combine_active = _bool(snap, "combine_active")
    return st


def _json_value(v: object) -> str | None:
    """Trip values are kept as text: a Decimal must come back exactly, JSON has no Decimal."""
    return None if v is None else str(v)


def _rule_ids(rules: RuleSet) -> set[str]:
    out = set()
    for p in rules.parameters:
        for band_name, band in (("critical", p.critical), ("warning", p.warning)):
            if band is None:
                continue
            if band.low is not None:
                out.add(f"{p.name}.{band_name}.low")
            if band.high is not None:
                out.add(f"{p.name}.{band_name}.high")
    return out


def _pump_state(v: object) -> PumpState:
    if isinstance(v, bool) or not isinstance(v, int) or v not in tuple(PumpState):
        raise SnapshotError(f"bad pump state {v!r}")
    return PumpState(v)


def _time(item: Mapping[str, Any], key: str) -> float:
    v: object = item.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise SnapshotError(f"{key!r} is not a time in seconds: {v!r}")
    return float(v)


def _opt_time(item: Mapping[str, Any], key: str) -> float | None:
    return None if item.get(key) is None else _time(item, key)


def _text(item: object, key: str) -> str:
    if not isinstance(item, Mapping) or not isinstance(item.get(key), str):
        raise SnapshotError(f"a latch entry has no text {key!r}")
    return str(item[key])


def _list(snap: Mapping[str, Any], key: str) -> list[Any]:
    v = snap.get(key)
    if not isinstance(v, list):
        raise SnapshotError(f"{key!r} is not a list")
    return v


def _bool(snap: Mapping[str, Any], key: str) -> bool:
    v = snap.get(key)
    if not isinstance(v, bool):
        raise SnapshotError(f"{key!r} is not true or false")
    return v


def _decimal(v: object) -> Decimal | None:
    if v is None:
        return None
    try:
        d = Decimal(str(v)) if isinstance(v, str) else None
    except InvalidOperation:
        d = None
    if d is None or not d.is_finite():
        raise SnapshotError(f"bad value {v!r}")
    return d
