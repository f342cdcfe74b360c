"""Mutable per-chair state behind the engine, and the duration timer of one limit.

Kept apart from the engine so the rules of time live in one small place: when a breach
starts, when it counts as met, and what it takes to forget it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.interlocks.results import Number, PumpState, Reading, Trip

__all__ = ["ChairState", "LimitTimer", "clamp_reading"]


@dataclass
class LimitTimer:
    """Tracks one limit (e.g. ``spo2.critical.low``) of one chair.

    A breach *episode* starts with the first fresh reading past the limit (``breach_since``,
    its ``measured_at``). It is met once ``for_s`` has passed since then *and* the latest
    fresh reading is past the limit. The episode, met or not, ends only when fresh readings
    have stayed inside the limit for ``clear_s``: a value wobbling around the threshold, or a
    gap with no fresh data, does not restart the timer, so neither can hide a sustained
    breach. A met condition therefore stays met until the value is seen back in range for
    ``clear_s`` - including while no fresh reading exists to show a recovery.
    """

    breach_since: float | None = None
    out_since: float | None = None  # start of the current stretch past the limit
    inside_since: float | None = None  # start of the current stretch back inside
    met_at: float | None = None
    last_value: Number | None = None

    def step(
        self, fresh: Reading | None, out: bool, now: float, for_s: float, clear_s: float
    ) -> bool:
        """Advance with the latest fresh reading (or ``None``); true when newly met."""
        if fresh is not None:
            self.last_value = fresh.value
            if out:
                if self.breach_since is None:
                    self.breach_since = self.out_since = fresh.measured_at
                elif self.inside_since is not None:
                    self.out_since = max(fresh.measured_at, self.inside_since)
                self.inside_since = None
            elif self.breach_since is not None:
                if self.inside_since is None:
                    start = self.out_since if self.out_since is not None else self.breach_since
                    self.inside_since = max(fresh.measured_at, start)
                if now >= self.inside_since + clear_s:
                    self.reset()
                    return False
        if (
            self.met_at is None
            and self.breach_since is not None
            and fresh is not None
            and out
            and now >= self.breach_since + for_s
        ):
            out_since = self.out_since if self.out_since is not None else self.breach_since
            self.met_at = max(self.breach_since + for_s, out_since)
            return True
        return False

    def reset(self) -> None:
        self.breach_since = self.out_since = self.inside_since = self.met_at = None

    def clamp(self, now: float) -> None:
        """After a restore: times from another clock base must not lie in the future."""
        if self.breach_since is not None:
            self.breach_since = min(self.breach_since, now)
        if self.out_since is not None:
            self.out_since = min(self.out_since, now)
        if self.met_at is not None:
            self.met_at = min(self.met_at, now)
        self.inside_since = None


def clamp_reading(r: Reading, now: float) -> Reading:
    return r if r.measured_at <= now else Reading(r.value, now)


@dataclass
class ChairState:
    """Everything the engine knows about one chair between calls."""

    created_at: float | None = None  # first `now` after creation or restore
    last_now: float | None = None
    readings: dict[int, Reading] = field(default_factory=dict)
    # codes whose reading came from a snapshot: evidence for breach timers and staleness,
    # never for a permit (its age on the restarted clock is not known for sure)
    restored: set[int] = field(default_factory=set)
    timers: dict[str, LimitTimer] = field(default_factory=dict)
    pump_state: PumpState = PumpState.UNKNOWN
    pump_last_definite: PumpState = PumpState.UNKNOWN
    pump_alarms: dict[str, float] = field(default_factory=dict)  # code -> first reported at
    pump_tripped: set[str] = field(default_factory=set)
    node_last_seen: float | None = None
    node_offline_tripped: bool = False
    combine_active: bool = False
    latch: list[Trip] = field(default_factory=list)
    pending: list[tuple[str, str]] = field(default_factory=list)  # (cause, rule) from restore
    needs_clamp: bool = False
    # the earliest time a tick must re-evaluate (set by each evaluation; not persisted)
    due: float = float("-inf")

    def may_be_infusing(self) -> bool:
        """The pump is, or as far as we know may still be, infusing.

        Absent data (a silent node, missing vitals) trips only then: an idle chair whose
        node is switched off must not latch, but a pump last seen infusing must.
        """
        if self.pump_state is PumpState.INFUSING:
            return True
        return (
            self.pump_state is PumpState.UNKNOWN and self.pump_last_definite is PumpState.INFUSING
        )
