"""The values the interlock engine takes in and hands out.

They are frozen so an ``Evaluation`` handed to the permit logic, the audit record and the
outputs at once cannot be changed by one of them behind the others' backs. Times are plain
seconds on whatever clock the caller passes as ``now`` (the engine never reads a clock).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum

__all__ = [
    "AckResult",
    "Condition",
    "Evaluation",
    "InterlockError",
    "PumpState",
    "Reading",
    "Trip",
]

Number = Decimal | float | int


class InterlockError(ValueError):
    """A caller passed something the engine cannot use (empty operator, non-finite value)."""


class PumpState(IntEnum):
    """Pump state as the node reports it (telemetry key 11/1, protocol/schema.py PUMP_*)."""

    UNKNOWN = 0
    STOPPED = 1
    INFUSING = 2
    PAUSED = 3
    ALARM = 4


@dataclass(frozen=True)
class Reading:
    """One value of one MDC code, and when it was measured on the caller's clock."""

    value: Number
    measured_at: float


@dataclass(frozen=True)
class Condition:
    """Something wrong with a chair right now.

    ``kind``: ``low``/``high`` (a vital past a limit), ``stale``/``missing`` (a required
    vital without a fresh value), ``combined`` (enough warnings together), ``offline`` (the
    node is silent), ``pump_alarm``. ``since`` is when it started (the value first crossed
    the limit, the last reading was taken, the node was last heard); ``met_at`` when its
    duration completed (``None`` for a condition with no duration, e.g. a stale vital).
    """

    parameter: str
    kind: str
    value: Number | str | None
    limit: Number | None
    since: float
    met_at: float | None
    rule: str
    text: str


@dataclass(frozen=True)
class Trip:
    """One reason a chair's infusion was stopped; it holds the chair's latch until an ack.

    ``breach_at`` is when the triggering value first crossed its limit (the start of a
    duration rule), ``condition_met_at`` when the rule's duration completed, ``tripped_at``
    when the engine noticed (the ``now`` of that call). Breach-to-stop latency is measured
    from these. For the audit record: ``value`` is what was observed (a vital's value, the
    number of warnings, the pump alarm code, seconds of node silence), ``limit`` the
    threshold it passed, ``mdc_code`` the source the vital was read from.
    """

    chair: str
    cause: str
    rule: str
    breach_at: float
    condition_met_at: float
    tripped_at: float
    value: Number | str | None = None
    limit: Number | None = None
    mdc_code: int | None = None


@dataclass(frozen=True)
class Evaluation:
    """A chair's interlock state at ``at``.

    ``tripped`` holds only the trips that happened in the call that returned this; a
    latched chair also lists every trip holding the latch in ``latched_by``. ``permit_ok``
    is true only with no latch, no active alarm, the node heard recently and every required
    vital fresh; ``reasons_not_ok`` says why not, for people.
    """

    chair: str
    at: float
    warnings: tuple[Condition, ...]
    alarms: tuple[Condition, ...]
    tripped: tuple[Trip, ...]
    latched: bool
    latched_by: tuple[Trip, ...]
    permit_ok: bool
    reasons_not_ok: tuple[str, ...]


@dataclass(frozen=True)
class AckResult:
    """The answer to an acknowledgement: accepted (latch cleared) or refused, and why."""

    chair: str
    accepted: bool
    operator: str
    reason: str
    at: float
    message: str
    cleared: tuple[Trip, ...]
    still_active: tuple[Condition, ...]
    evaluation: Evaluation
