"""Scenario files: what happens to which patient, when, and what the gateway should do about
it - as data, so the HIL tests, the demo and a reviewer all read the same timeline.

A scenario is a TOML file (format and examples: docs/scenarios.md, files in scenarios/).
Every time in it is in *scenario seconds*; ``speed`` says how many scenario seconds pass per
real second (``ScenarioClock``), so a 70-minute session can run in a few minutes. The
gateway times its rules (``for_s``) in real seconds, so an event that must trip a rule has
to last ``for_s * speed`` scenario seconds - the shipped files say so where it matters.

The loader is strict: an unknown key, a wrong type or an impossible value raises
``ScenarioError`` naming the file, the line and the key, because a typo in a test scenario
otherwise silently tests something else. Clinical numbers in the shipped files are EXAMPLES.
"""

from __future__ import annotations

import math
import re
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from testbed.physiology import (
    EVENT_KINDS,
    PRESETS,
    Baseline,
    Event,
    PatientModel,
    PhysiologyError,
)

__all__ = [
    "OPS",
    "Action",
    "ChairScenario",
    "Expect",
    "Program",
    "Scenario",
    "ScenarioClock",
    "ScenarioError",
    "load",
    "loads",
]

OPS = ("program", "start", "stop", "ack")
DEFAULT_OPERATOR = "scenario"


class ScenarioError(ValueError):
    """A scenario file that cannot be run as written (the message names file, line, key)."""


# --- the data ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Program:
    """What the operator programs: the gateway's ``program`` request minus chair/weight."""

    drug: str
    concentration_mg_ml: float
    dose_rate: float  # mg/kg/h
    duration_min: float
    diameter_cmm: int | None = None

    @property
    def total_mg_kg(self) -> float:
        return self.dose_rate * self.duration_min / 60.0

    def request(
        self, chair: str, weight_kg: float, operator: str, override_reason: str | None = None
    ) -> dict[str, Any]:
        """The gateway control request (numbers as strings: the gateway parses Decimals)."""
        req: dict[str, Any] = {
            "op": "program",
            "chair": chair,
            "drug": self.drug,
            "concentration_mg_ml": _dec(self.concentration_mg_ml),
            "weight_kg": _dec(weight_kg),
            "dose_rate": _dec(self.dose_rate),
            "duration_min": _dec(self.duration_min),
            "operator": operator,
        }
        if self.diameter_cmm is not None:
            req["diameter_cmm"] = self.diameter_cmm
        if override_reason:
            req["override_reason"] = override_reason
        return req


def _dec(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


@dataclass(frozen=True)
class Action:
    """An operator action at a scenario time. ``program`` may change the rate or duration
    (and give an override reason); ``stop`` and ``ack`` carry a reason (required for ack)."""

    at_s: float
    op: str
    operator: str = DEFAULT_OPERATOR
    reason: str | None = None
    dose_rate: float | None = None
    duration_min: float | None = None
    override_reason: str | None = None


@dataclass(frozen=True)
class Expect:
    """What the run should show. ``trip_rule`` must be among the rules the gateway names
    for the trip (several may trip on one reading); ``trip_by_s`` is the latest scenario
    time for it; ``dose_error_pct_max`` bounds delivered vs programmed dose."""

    trip: bool | None = None
    trip_rule: str | None = None
    trip_by_s: float | None = None
    dose_error_pct_max: float | None = None


@dataclass(frozen=True)
class ChairScenario:
    name: str
    preset: str
    baseline: Baseline
    seed: int
    program: Program | None
    nibp_interval_s: float | None  # automatic cuff cycles (None: only scripted ones)
    ambient_mmhg: float
    impedance_rr: bool
    events: tuple[Event, ...]
    actions: tuple[Action, ...]  # sorted by time; never empty when a program is given
    expect: Expect

    @property
    def weight_kg(self) -> float:
        return self.baseline.weight_kg

    @property
    def nibp_cycles(self) -> tuple[float, ...]:
        """Scripted cuff measurements (``nibp_cycle`` events), in scenario seconds."""
        return tuple(sorted(e.start_s for e in self.events if e.kind == "nibp_cycle"))

    def patient(self) -> PatientModel:
        """A fresh patient model for this chair (its own infusion history)."""
        return PatientModel(self.baseline, self.seed, self.events)

    def program_for(self, action: Action) -> Program:
        """The program a ``program`` action sends: the chair's, with the action's changes."""
        if self.program is None:
            raise ScenarioError(f"chair {self.name} has no [program] for {action.op}")
        changes: dict[str, Any] = {}
        if action.dose_rate is not None:
            changes["dose_rate"] = action.dose_rate
        if action.duration_min is not None:
            changes["duration_min"] = action.duration_min
        return replace(self.program, **changes)

    def planned_dose(self, t_s: float) -> tuple[float, float]:
        """(mg/kg/h, cumulative mg/kg) at ``t_s`` if every action works and nothing trips.

        For previews and offline checks; the bench takes the dose from the emulated pump.
        A ``program`` while running changes the rate only; after a stop or the end of a
        session a new ``program`` adds its whole dose to what was given.
        """
        rate = delivered = target = 0.0
        running = False
        prog: Program | None = None
        now = 0.0

        def advance(to: float) -> None:
            nonlocal delivered, running, now
            if running and to > now:
                left_s = (target - delivered) / rate * 3600.0 if rate > 0 else math.inf
                if to - now >= left_s:
                    delivered, running = target, False
                else:
                    delivered += rate * (to - now) / 3600.0
            now = max(now, to)

        for a in self.actions:
            if a.at_s > t_s:
                break
            advance(a.at_s)
            if a.op == "program":
                prog = self.program_for(a)
                if running:
                    rate = prog.dose_rate
                else:
                    target = delivered + prog.total_mg_kg
            elif a.op == "start" and prog is not None and delivered < target:
                running, rate = True, prog.dose_rate
            elif a.op == "stop":
                running = False
        advance(t_s)
        return (rate if running else 0.0), delivered


@dataclass(frozen=True)
class Scenario:
    source: str  # the file it came from
    name: str
    description: str
    speed: float  # scenario seconds per real second
    duration_s: float  # scenario seconds
    chairs: tuple[ChairScenario, ...]

    def real_s(self, scenario_s: float) -> float:
        """Real seconds that ``scenario_s`` scenario seconds take at this speed."""
        return scenario_s / self.speed

    def clock(self, monotonic: Callable[[], float] = time.monotonic) -> ScenarioClock:
        return ScenarioClock(self.speed, monotonic)

    def chair(self, name: str) -> ChairScenario:
        for c in self.chairs:
            if c.name == name:
                return c
        raise KeyError(name)


class ScenarioClock:
    """Scenario seconds since creation, running ``speed`` times faster than ``monotonic``."""

    def __init__(self, speed: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        if not speed > 0:
            raise ScenarioError(f"clock speed must be above 0, not {speed!r}")
        self.speed = float(speed)
        self._monotonic = monotonic
        self._t0 = monotonic()

    def __call__(self) -> float:
        return (self._monotonic() - self._t0) * self.speed

    def real_deadline(self, scenario_s: float) -> float:
        """The ``monotonic`` reading at which the scenario reaches ``scenario_s``."""
        return self._t0 + scenario_s / self.speed


# --- loading -----------------------------------------------------------------------------
KeyPath = tuple[str | int, ...]  # keys and 0-based array indices, e.g. ("events", 1, "kind")

_TOP = ("scenario", "patient", "program", "monitor", "events", "actions", "expect", "chairs")
_SCENARIO = ("name", "description", "speed", "duration_s")
_PATIENT_NUM = ("weight_kg", "hr", "sys", "dia", "spo2", "rr", "etco2", "pi", "bp_response")
_PATIENT = ("preset", "seed", *_PATIENT_NUM)
_PROGRAM = ("drug", "concentration_mg_ml", "dose_rate", "duration_min", "diameter_cmm")
_MONITOR = ("nibp_interval_s", "ambient_mmhg", "impedance_rr")
_EVENT = ("kind", "at_s", "duration_s", "magnitude")
_ACTION = ("at_s", "op", "operator", "reason", "dose_rate", "duration_min", "override_reason")
_EXPECT = ("trip", "trip_rule", "trip_by_s", "dose_error_pct_max")
_CHAIR = ("name", "patient", "program", "monitor", "events", "actions", "expect")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def load(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioError(f"{p}: cannot read the scenario file: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{p}: the scenario file is not UTF-8 text: {e}") from e
    return loads(text, str(p))


def loads(text: str, source: str = "<string>") -> Scenario:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{source}: not valid TOML: {e}") from e
    return _Loader(text, source).scenario(doc)


class _Loader:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source

    # -- errors -------------------------------------------------------------------------
    def fail(self, path: KeyPath, problem: str) -> ScenarioError:
        key = path[-1] if path and isinstance(path[-1], str) else None
        table = path[:-1] if key is not None else path
        line = _find_line(self.text, table, key)
        if line is None and key is not None:  # the key may name a table, or not be there
            line = _find_line(self.text, path, None) or _find_line(self.text, table, None)
        where = f"{self.source}:{line}" if line else self.source
        return ScenarioError(f"{where}: {_dotted(path) or 'top level'}: {problem}")

    # -- typed getters --------------------------------------------------------------------
    def table(self, value: Any, path: KeyPath, allowed: tuple[str, ...]) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a table, not {_tname(value)}")
        for k in value:
            if k not in allowed:
                raise self.fail(path + (k,), f"unknown key (allowed here: {', '.join(allowed)})")
        return value

    def array(self, value: Any, path: KeyPath) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(path, f"must be an array of tables ([[{_dotted(path)}]])")
        return value

    def num(
        self,
        t: Mapping[str, Any],
        key: str,
        path: KeyPath,
        *,
        lo: float | None = None,
        hi: float | None = None,
        above: float | None = None,
        required: bool = False,
    ) -> float | None:
        if key not in t:
            if required:
                raise self.fail(path, f"missing required key {key!r}")
            return None
        v = t[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise self.fail(path + (key,), f"must be a number, not {_tname(v)}")
        if above is not None and not v > above:
            raise self.fail(path + (key,), f"must be above {above:g}, not {v:g}")
        if lo is not None and v < lo or hi is not None and v > hi:
            if hi is None:
                problem = f"must be at least {lo:g}, not {v:g}"
            elif lo is None:
                problem = f"must be at most {hi:g}, not {v:g}"
            else:
                problem = f"{v:g} is outside {lo:g}..{hi:g}"
            raise self.fail(path + (key,), problem)
        return float(v)

    def req_num(self, t: Mapping[str, Any], key: str, path: KeyPath, **kw: Any) -> float:
        v = self.num(t, key, path, required=True, **kw)
        assert v is not None
        return v

    def string(
        self, t: Mapping[str, Any], key: str, path: KeyPath, *, required: bool = False
    ) -> str | None:
        if key not in t:
            if required:
                raise self.fail(path, f"missing required key {key!r}")
            return None
        v = t[key]
        if not isinstance(v, str) or not v.strip():
            raise self.fail(path + (key,), f"must be a non-empty string, not {_tname(v)}")
        return v

    def integer(self, t: Mapping[str, Any], key: str, path: KeyPath, lo: int) -> int | None:
        if key not in t:
            return None
        v = t[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise self.fail(path + (key,), f"must be an integer of at least {lo}, not {v!r}")
        return v

    def boolean(self, t: Mapping[str, Any], key: str, path: KeyPath) -> bool | None:
        if key not in t:
            return None
        v = t[key]
        if not isinstance(v, bool):
            raise self.fail(path + (key,), f"must be true or false, not {_tname(v)}")
        return v

    # -- sections -------------------------------------------------------------------------
    def scenario(self, doc: dict[str, Any]) -> Scenario:
        self.table(doc, (), _TOP)
        if "scenario" not in doc:
            raise self.fail((), "missing the [scenario] table")
        sc = self.table(doc["scenario"], ("scenario",), _SCENARIO)
        path: KeyPath = ("scenario",)
        name = self.string(sc, "name", path, required=True)
        assert name is not None
        description = self.string(sc, "description", path) or ""
        speed = self.num(sc, "speed", path, above=0, hi=1000) or 1.0
        duration_s = self.req_num(sc, "duration_s", path, above=0, hi=1e6)

        shared_program = doc.get("program")
        shared_monitor = doc.get("monitor")
        if shared_program is not None:
            self.table(shared_program, ("program",), _PROGRAM)
        if shared_monitor is not None:
            self.table(shared_monitor, ("monitor",), _MONITOR)

        chairs: list[ChairScenario] = []
        if "chairs" in doc:
            for key in ("patient", "events", "actions", "expect"):
                if key in doc:
                    raise self.fail(
                        (key,), "with [[chairs]], put this in each [[chairs]] entry instead"
                    )
            entries = self.array(doc["chairs"], ("chairs",))
            if not entries:
                raise self.fail(("chairs",), "must list at least one chair")
            for i, entry in enumerate(entries):
                cpath: KeyPath = ("chairs", i)
                c = self.table(entry, cpath, _CHAIR)
                chairs.append(self.chair(c, cpath, i, shared_program, shared_monitor, duration_s))
        else:
            chairs.append(self.chair(doc, (), 0, None, None, duration_s))
        names = [c.name for c in chairs]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise self.fail(("chairs", i, "name"), f"chair name {n!r} is used twice")
        return Scenario(
            source=self.source,
            name=name,
            description=description,
            speed=speed,
            duration_s=duration_s,
            chairs=tuple(chairs),
        )

    def chair(
        self,
        c: Mapping[str, Any],
        path: KeyPath,
        index: int,
        shared_program: Any,
        shared_monitor: Any,
        duration_s: float,
    ) -> ChairScenario:
        name = f"chair-{index + 1}"
        if path:
            given = self.string(c, "name", path)
            if given is not None:
                if not _NAME.match(given):
                    raise self.fail(
                        path + ("name",),
                        "must be 1-64 letters, digits, '.', '_' or '-', starting with a "
                        "letter or digit",
                    )
                name = given
        preset, baseline, seed = self.patient(c.get("patient", {}), path + ("patient",), index)
        program = self.program(c.get("program"), shared_program, path + ("program",))
        mon = self.monitor(c.get("monitor"), shared_monitor, path + ("monitor",))
        events = self.events(c.get("events", []), path + ("events",), duration_s)
        actions = self.actions(c.get("actions"), path + ("actions",), program, duration_s)
        expect = self.expect(c.get("expect", {}), path + ("expect",), duration_s)
        return ChairScenario(
            name=name,
            preset=preset,
            baseline=baseline,
            seed=seed,
            program=program,
            nibp_interval_s=mon[0],
            ambient_mmhg=mon[1],
            impedance_rr=mon[2],
            events=events,
            actions=actions,
            expect=expect,
        )

    def patient(self, value: Any, path: KeyPath, index: int) -> tuple[str, Baseline, int]:
        p = self.table(value, path, _PATIENT)
        preset = self.string(p, "preset", path) or "adult"
        if preset not in PRESETS:
            raise self.fail(
                path + ("preset",),
                f"unknown preset {preset!r} (known: {', '.join(PRESETS)})",
            )
        seed = self.integer(p, "seed", path, 0)
        overrides = {k: self.req_num(p, k, path) for k in _PATIENT_NUM if k in p}
        try:
            baseline = replace(PRESETS[preset], **overrides)
        except PhysiologyError as e:
            bad = next((k for k in overrides if re.search(rf"\b{k}\b", str(e))), None)
            raise self.fail(path + ((bad,) if bad else ()), str(e)) from None
        return preset, baseline, index + 1 if seed is None else seed

    def program(self, value: Any, shared: Any, path: KeyPath) -> Program | None:
        if value is None and shared is None:
            return None
        merged = dict(shared or {})
        if value is not None:
            merged.update(self.table(value, path, _PROGRAM))

        def at(key: str) -> KeyPath:
            # blame the chair's own table if it sets the key (or nobody does), else the shared one
            own = value is not None and (key in value or key not in merged)
            return path if own else ("program",)

        drug = self.string(merged, "drug", at("drug"), required=True)
        conc = self.req_num(merged, "concentration_mg_ml", at("concentration_mg_ml"), above=0)
        rate = self.req_num(merged, "dose_rate", at("dose_rate"), lo=0, hi=100)
        dur = self.req_num(merged, "duration_min", at("duration_min"), above=0, hi=24 * 60)
        diam = self.integer(merged, "diameter_cmm", at("diameter_cmm"), 1)
        assert drug is not None
        return Program(drug, conc, rate, dur, diam)

    def monitor(self, value: Any, shared: Any, path: KeyPath) -> tuple[float | None, float, bool]:
        merged = dict(shared or {})
        if value is not None:
            merged.update(self.table(value, path, _MONITOR))

        def at(key: str) -> KeyPath:
            return path if value is not None and key in value else ("monitor",)

        interval = self.num(merged, "nibp_interval_s", at("nibp_interval_s"), above=0)
        ambient = self.num(merged, "ambient_mmhg", at("ambient_mmhg"), lo=400, hi=900)
        imp = self.boolean(merged, "impedance_rr", at("impedance_rr"))
        return interval, 760.0 if ambient is None else ambient, True if imp is None else imp

    def events(self, value: Any, path: KeyPath, duration_s: float) -> tuple[Event, ...]:
        out = []
        for i, entry in enumerate(self.array(value, path)):
            epath = path + (i,)
            e = self.table(entry, epath, _EVENT)
            kind = self.string(e, "kind", epath, required=True)
            if kind not in EVENT_KINDS:
                raise self.fail(
                    epath + ("kind",),
                    f"unknown event kind {kind!r} (known: {', '.join(EVENT_KINDS)})",
                )
            at_s = self.req_num(e, "at_s", epath, lo=0, hi=duration_s)
            dur = self.num(e, "duration_s", epath, lo=0)
            if dur is None:
                if kind != "nibp_cycle":
                    raise self.fail(epath, "missing required key 'duration_s'")
                dur = 0.0
            mag = self.num(e, "magnitude", epath)
            try:
                out.append(Event(kind, at_s, dur, mag))
            except PhysiologyError as err:
                key = next((k for k in ("magnitude", "duration_s") if k in str(err)), "at_s")
                raise self.fail(epath + (key,), str(err)) from None
        return tuple(out)

    def actions(
        self, value: Any, path: KeyPath, program: Program | None, duration_s: float
    ) -> tuple[Action, ...]:
        if value is None:
            if program is None:
                return ()
            return (Action(0.0, "program"), Action(0.0, "start"))
        out = []
        for i, entry in enumerate(self.array(value, path)):
            apath = path + (i,)
            a = self.table(entry, apath, _ACTION)
            op = self.string(a, "op", apath, required=True)
            if op not in OPS:
                raise self.fail(apath + ("op",), f"unknown op {op!r} (known: {', '.join(OPS)})")
            at_s = self.req_num(a, "at_s", apath, lo=0, hi=duration_s)
            for key in ("dose_rate", "duration_min", "override_reason"):
                if key in a and op != "program":
                    raise self.fail(apath + (key,), f"only a program action takes {key}")
            if "reason" in a and op not in ("stop", "ack"):
                raise self.fail(apath + ("reason",), "only stop and ack actions take a reason")
            reason = self.string(a, "reason", apath, required=op == "ack")
            if op == "program" and program is None:
                raise self.fail(apath + ("op",), "a program action needs a [program] table")
            out.append(
                Action(
                    at_s=at_s,
                    op=op,
                    operator=self.string(a, "operator", apath) or DEFAULT_OPERATOR,
                    reason=reason,
                    dose_rate=self.num(a, "dose_rate", apath, lo=0, hi=100),
                    duration_min=self.num(a, "duration_min", apath, above=0, hi=24 * 60),
                    override_reason=self.string(a, "override_reason", apath),
                )
            )
        return tuple(sorted(out, key=lambda x: x.at_s))

    def expect(self, value: Any, path: KeyPath, duration_s: float) -> Expect:
        e = self.table(value, path, _EXPECT)
        trip = self.boolean(e, "trip", path)
        rule = self.string(e, "trip_rule", path)
        by = self.num(e, "trip_by_s", path, lo=0, hi=duration_s)
        for key, v in (("trip_rule", rule), ("trip_by_s", by)):
            if v is not None and trip is not True:
                raise self.fail(path + (key,), "only makes sense with trip = true")
        err = self.num(e, "dose_error_pct_max", path, lo=0, hi=100)
        return Expect(trip=trip, trip_rule=rule, trip_by_s=by, dose_error_pct_max=err)


# --- helpers -----------------------------------------------------------------------------
def _tname(v: Any) -> str:
    return {
        dict: "a table",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a float",
    }.get(type(v), type(v).__name__)


def _dotted(path: KeyPath) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p + 1}]"  # counted from 1, as a reader counts [[tables]] in a file
        else:
            out += ("." if out else "") + p
    return out


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\s\"]+?)\s*\]\]?\s*(#.*)?$")


def _find_line(text: str, table: KeyPath, key: str | None) -> int | None:
    """Best-effort line of ``key`` in ``table`` (or of the table's header); plain tables,
    arrays of tables and ``key = value`` lines, which is what scenario files use."""
    counts: dict[KeyPath, int] = {}
    current: KeyPath = ()
    header_line = None

    def resolve(parts: list[str]) -> KeyPath:
        res: KeyPath = ()
        for p in parts:
            res += (p,)
            if res in counts:
                res += (counts[res],)
        return res

    for n, raw in enumerate(text.splitlines(), 1):
        m = _HEADER.match(raw)
        if m:
            parts = [p.strip().strip('"') for p in m.group(2).split(".")]
            base = resolve(parts[:-1]) + (parts[-1],)
            if m.group(1) == "[[":
                counts[base] = counts.get(base, -1) + 1
                current = base + (counts[base],)
            else:
                current = base
            if current == table and header_line is None:
                header_line = n
            continue
        if key is not None and current == table:
            if re.match(rf"^\s*\"?{re.escape(key)}\"?\s*=", raw):
                return n
    return header_line
