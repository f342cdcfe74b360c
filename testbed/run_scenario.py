"""Play a scenario file on a bench: patients drive the emulated monitors, operator actions go
to the gateway at their scenario times, cuff cycles happen on schedule, and the outcome of
every chair is checked against the file's ``[expect]`` (used by ``ivgw demo`` and hil_tests).

Scenario time runs ``speed`` times faster than real time. So does the emulated pump's
plunger (the gateway's ``emulation_speed`` knows it); interlock durations, permits and
watchdogs keep real time (docs/scenarios.md explains the consequence for event lengths).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.bench import Bench
from testbed.chair import EmulatedChair
from testbed.physiology import monitor_source, oximeter_source
from testbed.scenario import Action, ChairScenario, Scenario, ScenarioClock

_RETRIES = 30  # an operator retries a start/ack every 2 s for a minute


@dataclass
class ChairRun:
    spec: ChairScenario
    chair: EmulatedChair | None = None
    actions: list[Action] = field(default_factory=list)
    next_cuff: float = 0.0
    pending: list[tuple[Action, float]] = field(default_factory=list)  # (action, next try)
    sessions: list[int] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def dose(self) -> tuple[float, float]:
        """(mg/kg/h, cumulative mg/kg) from the emulated pump, in scenario time units."""
        chair, prog = self.chair, self.spec.program
        if chair is None or prog is None:
            return 0.0, 0.0
        w, c = self.spec.weight_kg, prog.concentration_mg_ml
        rate = chair.pump.rate_ul_h / 1000.0 * c / w if chair.pump.running() else 0.0
        return rate, chair.pump.true_infused_ul() / 1000.0 * c / w


@dataclass(frozen=True)
class ChairOutcome:
    chair: str
    node: str
    sessions: tuple[int, ...]
    delivered_ul: float
    programmed_ul: int
    dose_error_pct: float | None
    trips: tuple[tuple[str, str, float | None], ...]  # (rule, cause, breach-to-stop-sent ms)
    problems: tuple[str, ...]  # expectations not met

    @property
    def ok(self) -> bool:
        return not self.problems


class ScenarioRun:
    def __init__(self, scenario: Scenario, workdir: Path, *, broker: Any = None,
                 chairs: int | None = None, on_event: Callable[[str], None] | None = None):
        self.scenario = scenario
        specs = list(scenario.chairs)
        if chairs is not None:  # more chairs than the file has: repeat its chairs in turn
            specs = [specs[i % len(specs)] for i in range(chairs)]
        self.runs = [ChairRun(s, actions=list(s.actions)) for s in specs]
        self.on_event = on_event or (lambda s: None)
        self.clock = ScenarioClock(scenario.speed)
        per_chair = []
        for run in self.runs:
            model = run.spec.patient()
            per_chair.append({
                "oximeter_source": oximeter_source(model, self.clock, run.dose),
                "monitor_source": monitor_source(model, self.clock, run.dose,
                                                 ambient_mmhg=run.spec.ambient_mmhg,
                                                 impedance_rr=run.spec.impedance_rr),
                "nibp_interval_s": None,  # cuff cycles are driven here, in scenario time
            })
        self.bench = Bench(workdir, len(self.runs), speed=scenario.speed, broker=broker,
                           per_chair=per_chair, site="demo")

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.bench.start()
        for run, chair in zip(self.runs, self.bench.chairs, strict=True):
            run.chair = chair
        self.bench.wait_online(60)
        self.clock = ScenarioClock(self.scenario.speed)  # scenario time starts now
        for run in self.runs:  # the sources follow the new clock through run.dose/clock
            run.next_cuff = 0.0
        self._rebind_clock()

    def _rebind_clock(self) -> None:
        for run in self.runs:
            assert run.chair is not None
            model = run.spec.patient()
            run.chair.oximeter.source = oximeter_source(model, self.clock, run.dose)
            if run.chair.monitor is not None:
                run.chair.monitor.source = monitor_source(
                    model, self.clock, run.dose, ambient_mmhg=run.spec.ambient_mmhg,
                    impedance_rr=run.spec.impedance_rr)

    def close(self) -> None:
        self.bench.close()

    @property
    def now(self) -> float:
        return self.clock()

    def finished(self) -> bool:
        if self.now >= self.scenario.duration_s:
            return True
        return False

    # --- the loop ------------------------------------------------------------------------------
    def step(self) -> None:
        t = self.now
        for run in self.runs:
            chair = run.chair
            assert chair is not None
            interval = run.spec.nibp_interval_s
            cycles = run.spec.nibp_cycles
            if chair.monitor is not None and ((interval and t >= run.next_cuff)
                                              or any(run.next_cuff <= c <= t for c in cycles)):
                chair.monitor.cuff_cycle()
                run.next_cuff = t + interval if interval else t + 1e-6
            while run.actions and run.actions[0].at_s <= t:
                self._act(run, run.actions.pop(0))
            self._retry(run)

    def _act(self, run: ChairRun, action: Action) -> None:
        chair = run.chair
        assert chair is not None
        if action.op == "program":
            prog = run.spec.program_for(action)
            res = self._request(run, prog.request(chair.id, run.spec.weight_kg, action.operator,
                                                  action.override_reason), "program")
            if res and "session" in res:
                run.sessions.append(res["session"])
        elif action.op in ("start", "ack"):
            # An operator retries: a start waits for the program in the pump and fresh
            # vitals (the first cuff reading); an ack waits until the cause has cleared.
            run.pending.append((action, 0.0))
        elif action.op == "stop":
            self._request(run, {"op": "stop", "chair": chair.id, "operator": action.operator,
                                "reason": action.reason or "scenario"}, "stop")

    def _retry(self, run: ChairRun) -> None:
        chair = run.chair
        assert chair is not None
        keep = []
        real = time.monotonic()
        for action, next_try in run.pending:
            if real < next_try or (action.op == "start" and chair.pump.target_ul <= 0):
                keep.append((action, next_try))
                continue
            if action.op == "start":
                req = {"op": "start", "chair": chair.id, "operator": action.operator}
            else:
                req = {"op": "ack", "chair": chair.id, "operator": action.operator,
                       "reason": action.reason or "reviewed in the scenario"}
            attempts = getattr(action, "_attempts", 0)
            quiet = attempts < _RETRIES - 1
            if self._request(run, req, action.op, quiet=quiet) is None and quiet:
                object.__setattr__(action, "_attempts", attempts + 1)
                keep.append((action, real + 2.0))
        run.pending = keep

    def _request(self, run: ChairRun, req: dict[str, Any], what: str, quiet: bool = False) -> Any:
        resp = self.bench.request(req, ok=False)
        if quiet and not resp.get("ok"):
            return None
        msg = "t=%5.0fs %s %s: %s" % (self.now, run.chair.id if run.chair else "?", what,
                                      "ok" if resp.get("ok") else resp.get("error"))
        run.log.append(msg)
        self.on_event(msg)
        return resp.get("result") if resp.get("ok") else None

    def run(self, tick: Callable[[], None] | None = None, period_s: float = 0.1) -> None:
        while not self.finished():
            self.step()
            if tick is not None:
                tick()
            time.sleep(period_s)

    # --- results ---------------------------------------------------------------------------------
    def outcomes(self) -> list[ChairOutcome]:
        conn = sqlite3.connect(self.bench.config().db_path)
        out = []
        try:
            for run in self.runs:
                chair = run.chair
                assert chair is not None
                trips = tuple(conn.execute(
                    "SELECT rule, cause, latency_ms FROM trips WHERE chair = ? ORDER BY id",
                    (chair.chair,)).fetchall())
                programmed = 0
                for sid in run.sessions:
                    row = conn.execute("SELECT vtbi_ul FROM sessions WHERE id = ?",
                                       (sid,)).fetchone()
                    programmed = max(programmed, row[0] if row else 0)
                delivered = chair.pump.true_infused_ul()
                err = (abs(delivered - programmed) / programmed * 100) if programmed else None
                problems = []
                exp = run.spec.expect
                if exp.trip is True and not trips:
                    problems.append("expected an interlock trip, none happened")
                if exp.trip is False and trips:
                    problems.append("unexpected trip: %s" % trips[0][1])
                if exp.trip_rule and exp.trip_rule not in [t[0] for t in trips]:
                    problems.append("expected rule %s to trip" % exp.trip_rule)
                if exp.dose_error_pct_max is not None and not trips and (
                        err is None or err > exp.dose_error_pct_max):
                    problems.append("dose error %s %% above %s %%" % (
                        "n/a" if err is None else "%.2f" % err, exp.dose_error_pct_max))
                out.append(ChairOutcome(chair.id, chair.node_id, tuple(run.sessions), delivered,
                                        programmed, err, trips, tuple(problems)))
        finally:
            conn.close()
        return out

