"""Dose checks: is a pump program within the drug library's limits, and what does it become?

Pure functions over a loaded ``DrugLibrary``. The gateway calls them before it sends a
program, when the operator changes the rate, on every pump status (cumulative dose and
conformance), and stops the pump on any answer that is not OK.

Arithmetic is exact: inputs are ``Decimal`` (or ``int``, or decimal text), converted to
``Fraction`` for the computation, so a value exactly at a limit is never pushed across it by
binary rounding. Floats are refused for clinical values for the same reason.

The pump is programmed in integer microlitres per hour and microlitres. The requested values
are what is checked (so a message shows the number the operator typed), and the integer pump
values are then chosen as the nearest ones that stay inside the same limit band as the
request: a program that checks OK is delivered at a rate and volume that are OK too. If the
band is narrower than one microlitre per hour at this concentration and weight, the program
is refused as HARD rather than silently rounded across a limit.

Limits are inclusive: a value equal to a limit is inside it. ``lower_hard <= x <= upper_hard``
can be given; ``x < lower_soft`` or ``x > upper_soft`` needs a soft-limit override; below
``lower_hard`` or above ``upper_hard`` can never be given.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from enum import StrEnum
from fractions import Fraction

from gateway.druglib.model import DosingUnit, DrugEntry, DrugLibrary, Limits

__all__ = [
    "MIN_REASON_LEN",
    "U32_MAX",
    "Authorization",
    "CumulativeCheck",
    "DoseCheck",
    "DoseCheckError",
    "Mismatch",
    "PumpProgram",
    "Verdict",
    "Violation",
    "apply_override",
    "authorize",
    "check_conformance",
    "check_cumulative",
    "check_program",
    "check_rate_change",
]

U32_MAX = 2**32 - 1
MIN_REASON_LEN = 4
MAX_OPERATOR_LEN = 64
MAX_REASON_LEN = 500

_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")

Number = Decimal | int | str


class DoseCheckError(ValueError):
    """A request the checks cannot answer: a malformed number, or an override not allowed."""


class Verdict(StrEnum):
    OK = "OK"
    SOFT = "SOFT"
    HARD = "HARD"


@dataclass(frozen=True)
class Violation:
    """One limit a request breaks. ``actual`` is the requested value, ``limit`` the library's."""

    field: str
    limit_name: str
    limit: Decimal | None
    actual: Decimal | None
    unit: str
    hard: bool
    message: str

    @property
    def name(self) -> str:
        return f"{self.field}.{self.limit_name}"


@dataclass(frozen=True)
class PumpProgram:
    """What the pump is told (``rate_ul_h``, ``vtbi_ul``) and the doses that follow from it.

    ``effective_dose_rate`` and ``session_dose`` are what the integer pump values deliver,
    rounded to 6 decimals for display; ``total_dose_mg`` (this program's infusion plus bolus)
    is exact. ``prior_*`` carry the session so far across rate changes.
    """

    care_area: str
    drug: str
    drug_name: str
    dosing_unit: DosingUnit
    concentration_mg_ml: Decimal
    weight_kg: Decimal | None
    dose_rate: Decimal
    effective_dose_rate: Decimal
    duration_min: Decimal
    session_duration_min: Decimal
    rate_ul_h: int
    vtbi_ul: int
    bolus_dose: Decimal | None
    bolus_ul: int
    total_dose_mg: Decimal
    session_dose: Decimal
    prior_infused_ul: int
    prior_elapsed_s: Decimal
    max_cumulative_dose: Limits
    library_sha256: str
    library_version: str

    @property
    def dose_unit(self) -> str:
        return self.dosing_unit.dose_unit


@dataclass(frozen=True)
class DoseCheck:
    verdict: Verdict
    violations: tuple[Violation, ...]
    program: PumpProgram | None
    care_area: str
    drug: str
    library_sha256: str
    library_version: str

    @property
    def hard_violations(self) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if v.hard)

    @property
    def soft_violations(self) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if not v.hard)


@dataclass(frozen=True)
class Authorization:
    """Permission to run ``program``: either within all limits, or soft limits overridden.

    ``at`` is the injected clock's time of the decision (wall-clock seconds by default), for
    the audit record together with who overrode what and why.
    """

    check: DoseCheck
    program: PumpProgram
    overridden: tuple[Violation, ...]
    operator: str | None
    reason: str | None
    at: float

    @property
    def library_sha256(self) -> str:
        return self.check.library_sha256

    @property
    def library_version(self) -> str:
        return self.check.library_version


@dataclass(frozen=True)
class CumulativeCheck:
    """Session dose so far against the entry's maximum cumulative dose.

    ``exceeded`` is True once the delivered dose has *reached* the hard maximum (nothing is
    left): the gateway stops the pump. ``remaining_*`` are what may still be given before the
    hard maximum, never negative.
    """

    delivered_ul: int
    delivered_mg: Decimal
    delivered_dose: Decimal
    unit: str
    upper_soft: Decimal
    upper_hard: Decimal
    soft_exceeded: bool
    exceeded: bool
    remaining_mg: Decimal
    remaining_ul: int


@dataclass(frozen=True)
class Mismatch:
    """The pump is not doing what it was programmed to do."""

    field: str
    kind: str
    expected: int
    actual: int | None
    tolerance: int
    message: str


# -- number handling ---------------------------------------------------------------------------


def _num(value: object, what: str) -> Decimal:
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(
            f"{what} must be a Decimal, int or decimal text, not {type(value).__name__}"
        )
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise DoseCheckError(f"{what} must be a finite number, not {value}")
        return value
    if isinstance(value, str):
        text = value.strip()
        if not _DECIMAL_TEXT.fullmatch(text):
            raise DoseCheckError(f"{what} must be a decimal number such as 0.75, not '{value}'")
        return Decimal(text)
    raise TypeError(f"{what} must be a Decimal, int or decimal text, not {type(value).__name__}")


def _opt(value: object, what: str) -> Decimal | None:
    return None if value is None else _num(value, what)


def _show(x: Fraction, places: int = 6) -> Decimal:
    """Display form of an exact value: at most ``places`` decimals, no trailing zeros."""
    with localcontext() as ctx:
        ctx.prec = 60
        d = (Decimal(x.numerator) / Decimal(x.denominator)).quantize(
            Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN
        )
    s = f"{d:f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return Decimal(s)


def _s(d: Decimal | Fraction) -> str:
    return f"{_show(d) if isinstance(d, Fraction) else d:f}"


# -- conversions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Conv:
    """Dose-unit amounts (or per-hour rates) <-> microlitres (per hour) for one patient."""

    unit: DosingUnit
    conc: Fraction
    weight: Fraction

    def to_ul(self, amount: Fraction) -> Fraction:
        if self.unit is DosingUnit.ML_PER_H:
            return amount * 1000
        mg = amount * self.weight if self.unit.weight_based else amount
        return mg * 1000 / self.conc

    def from_ul(self, ul: Fraction) -> Fraction:
        if self.unit is DosingUnit.ML_PER_H:
            return ul / 1000
        mg = ul * self.conc / 1000
        return mg / self.weight if self.unit.weight_based else mg

    def mg(self, ul: Fraction) -> Fraction:
        return ul * self.conc / 1000


_Band = tuple[Fraction | None, bool, Fraction | None, bool]  # lo, lo inclusive, hi, hi inclusive


def _F(d: Decimal | None) -> Fraction | None:
    return None if d is None else Fraction(d)


def _band(limits: Limits, x: Fraction) -> _Band | None:
    """The limit band ``x`` falls in (None: outside the hard limits, never delivered)."""
    lh, ls, us, uh = (
        _F(limits.lower_hard),
        _F(limits.lower_soft),
        Fraction(limits.upper_soft),
        Fraction(limits.upper_hard),
    )
    if (lh is not None and x < lh) or x > uh:
        return None
    if x > us:
        return (us, False, uh, True)
    if ls is not None and x < ls:
        return (lh, True, ls, False)
    return (ls if ls is not None else lh, True, us, True)


def _fit(exact: Fraction, band: _Band | None, conv: Callable[[Fraction], Fraction]) -> int | None:
    """Integer nearest ``exact`` (pump units) whose value stays in ``band`` (dose units).

    ``conv`` maps a dose-unit bound to pump units and must be increasing.
    """
    n = max(round(exact), 1)
    if band is None:
        return n
    lo, lo_incl, hi, hi_incl = band
    lo_i, hi_i = 1, None
    if lo is not None:
        lo_u = conv(lo)
        lo_i = max(1, math.ceil(lo_u) if lo_incl else math.floor(lo_u) + 1)
    if hi is not None:
        hi_u = conv(hi)
        hi_i = math.floor(hi_u) if hi_incl else math.ceil(hi_u) - 1
    if hi_i is not None and lo_i > hi_i:
        return None
    n = max(n, lo_i)
    return n if hi_i is None else min(n, hi_i)


# -- limit checks ------------------------------------------------------------------------------

_LABELS = {
    "rate": "rate",
    "bolus": "bolus",
    "duration_min": "duration",
    "max_cumulative_dose": "session dose",
}


def _limit_violation(
    field: str, limits: Limits, x: Fraction, shown: Decimal, unit: str
) -> Violation | None:
    label = _LABELS[field]
    checks: tuple[tuple[str, Decimal | None, bool, bool], ...] = (
        ("lower_hard", limits.lower_hard, True, False),
        ("upper_hard", limits.upper_hard, True, True),
        ("lower_soft", limits.lower_soft, False, False),
        ("upper_soft", limits.upper_soft, False, True),
    )
    for name, limit, hard, upper in checks:
        if limit is None:
            continue
        if (x > Fraction(limit)) if upper else (x < Fraction(limit)):
            kind = "hard" if hard else "soft"
            side = "above" if upper else "below"
            edge = "maximum" if upper else "minimum"
            msg = f"{label} {_s(shown)} {unit} is {side} the {kind} {edge} of {limit} {unit} ({field}.{name})"
            return Violation(field, name, limit, shown, unit, hard, msg)
    return None


def _hard(
    field: str,
    name: str,
    message: str,
    *,
    limit: Decimal | None = None,
    actual: Decimal | None = None,
    unit: str = "",
) -> Violation:
    return Violation(field, name, limit, actual, unit, True, message)


def _verdict(violations: list[Violation]) -> Verdict:
    if any(v.hard for v in violations):
        return Verdict.HARD
    return Verdict.SOFT if violations else Verdict.OK


def _result(
    library: DrugLibrary,
    care_area: str,
    drug: str,
    violations: list[Violation],
    program: PumpProgram | None,
) -> DoseCheck:
    return DoseCheck(
        verdict=_verdict(violations),
        violations=tuple(violations),
        program=program,
        care_area=care_area,
        drug=drug,
        library_sha256=library.sha256,
        library_version=library.version,
    )


def _lookup(
    library: DrugLibrary, care_area: str, drug: str
) -> tuple[DrugEntry | None, list[Violation]]:
    area = library.care_areas.get(care_area)
    if area is None:
        known = ", ".join(sorted(library.care_areas))
        msg = f"care area '{care_area}' is not in drug library {library.version} (known: {known})"
        return None, [_hard("care_area", "unknown", msg)]
    entry = area.drugs.get(drug)
    if entry is None:
        known = ", ".join(sorted(area.drugs))
        msg = f"drug '{drug}' is not in care area '{care_area}' of drug library {library.version} (known: {known})"
        return None, [_hard("drug", "unknown", msg)]
    return entry, []


def _patient(
    entry: DrugEntry, conc: Decimal, weight: Decimal | None, out: list[Violation]
) -> _Conv | None:
    """Check concentration and weight; return the unit conversion if a program can be derived."""
    usable = True
    if conc not in entry.concentrations:
        allowed = ", ".join(f"{c:f}" for c in entry.concentrations)
        out.append(
            _hard(
                "concentration",
                "allowed",
                f"concentration {conc:f} mg/mL is not an approved concentration of {entry.name} "
                f"(approved: {allowed} mg/mL)",
                actual=conc,
                unit="mg/mL",
            )
        )
        usable = conc > 0
    if weight is None:
        if entry.dosing_unit.weight_based:
            out.append(
                _hard(
                    "weight_kg",
                    "required",
                    f"{entry.name} is dosed in {entry.dosing_unit.value}: the patient's weight is required",
                    unit="kg",
                )
            )
            usable = False
    elif entry.weight_kg is not None and not (entry.weight_kg.min <= weight <= entry.weight_kg.max):
        w = entry.weight_kg
        name, limit = ("min", w.min) if weight < w.min else ("max", w.max)
        out.append(
            _hard(
                "weight_kg",
                name,
                f"weight {weight:f} kg is outside the plausible range {w.min:f}-{w.max:f} kg for "
                f"{entry.name}; check the entry",
                limit=limit,
                actual=weight,
                unit="kg",
            )
        )
        usable = usable and weight > 0
    elif weight <= 0:
        out.append(
            _hard(
                "weight_kg",
                "positive",
                f"weight {weight:f} kg must be greater than 0",
                actual=weight,
                unit="kg",
            )
        )
        usable = not entry.dosing_unit.weight_based and usable
    if not usable:
        return None
    return _Conv(entry.dosing_unit, Fraction(conc), Fraction(weight if weight is not None else 1))


def _positive(field: str, x: Decimal, unit: str, out: list[Violation]) -> bool:
    if x > 0:
        return True
    label = _LABELS[field]
    out.append(
        _hard(
            field, "positive", f"{label} {x:f} {unit} must be greater than 0", actual=x, unit=unit
        )
    )
    return False


def _fit_rate(entry: DrugEntry, conv: _Conv, rate: Decimal, out: list[Violation]) -> int | None:
    unit = entry.dosing_unit.value
    fr = Fraction(rate)
    v = _limit_violation("rate", entry.rate, fr, rate, unit)
    if v is not None:
        out.append(v)
    rate_ul = _fit(conv.to_ul(fr), _band(entry.rate, fr), conv.to_ul)
    if rate_ul is None:
        out.append(
            _hard(
                "rate",
                "pump_resolution",
                f"rate {rate:f} {unit} cannot be delivered within its limit band at 1 uL/h pump "
                "resolution with this concentration and weight",
                actual=rate,
                unit=unit,
            )
        )
        return None
    if rate_ul > U32_MAX:
        out.append(
            _hard(
                "rate",
                "pump_range",
                f"rate {rate_ul} uL/h is beyond the pump's range",
                actual=rate,
                unit=unit,
            )
        )
        return None
    return rate_ul


# -- public checks -----------------------------------------------------------------------------


def check_program(
    library: DrugLibrary,
    care_area: str,
    drug: str,
    *,
    concentration_mg_ml: Number,
    weight_kg: Number | None,
    dose_rate: Number,
    duration_min: Number,
    bolus: Number | None = None,
) -> DoseCheck:
    """Check a new infusion program and derive the pump program (rate uL/h, VTBI uL).

    ``dose_rate`` is in the entry's dosing unit, ``bolus`` (optional) in its dose unit (the
    dosing unit without ``/h``), ``duration_min`` the planned infusion time. The session dose
    checked against ``max_cumulative_dose`` is infusion plus bolus.
    """
    conc = _num(concentration_mg_ml, "concentration_mg_ml")
    weight = _opt(weight_kg, "weight_kg")
    rate = _num(dose_rate, "dose_rate")
    dur = _num(duration_min, "duration_min")
    bol = _opt(bolus, "bolus")
    entry, out = _lookup(library, care_area, drug)
    if entry is None:
        return _result(library, care_area, drug, out, None)
    conv = _patient(entry, conc, weight, out)
    unit, dunit = entry.dosing_unit.value, entry.dosing_unit.dose_unit
    ok = _positive("rate", rate, unit, out) & _positive("duration_min", dur, "min", out)
    if bol is not None:
        if entry.bolus is None:
            out.append(
                _hard(
                    "bolus",
                    "allowed",
                    f"a bolus is not allowed for {entry.name} in care area '{care_area}'",
                    actual=bol,
                    unit=dunit,
                )
            )
            bol = None  # refused above; the rest is still checked so every fault is listed
        elif not _positive("bolus", bol, dunit, out):
            bol = None
    if conv is None or not ok:
        return _result(library, care_area, drug, out, None)

    rate_ul = _fit_rate(entry, conv, rate, out)
    fdur = Fraction(dur)
    v = _limit_violation("duration_min", entry.duration_min, fdur, dur, "min")
    if v is not None:
        out.append(v)
    bolus_ul = 0
    if bol is not None and entry.bolus is not None:  # only when a bolus is allowed
        fb = Fraction(bol)
        v = _limit_violation("bolus", entry.bolus, fb, bol, dunit)
        if v is not None:
            out.append(v)
        fitted = _fit(conv.to_ul(fb), _band(entry.bolus, fb), conv.to_ul)
        if fitted is None:
            out.append(
                _hard(
                    "bolus",
                    "pump_resolution",
                    f"bolus {bol:f} {dunit} cannot be measured within its limit band at "
                    "1 uL resolution",
                    actual=bol,
                    unit=dunit,
                )
            )
            return _result(library, care_area, drug, out, None)
        bolus_ul = fitted
    if rate_ul is None:
        return _result(library, care_area, drug, out, None)

    # Session dose as requested decides the band; the integer VTBI is fitted inside it.
    requested = Fraction(rate) * fdur / 60 + (Fraction(bol) if bol is not None else 0)
    v = _limit_violation(
        "max_cumulative_dose", entry.max_cumulative_dose, requested, _show(requested), dunit
    )
    if v is not None:
        out.append(v)
    band = _band(entry.max_cumulative_dose, requested)
    vtbi = _fit(Fraction(rate_ul) * fdur / 60, band, lambda d: conv.to_ul(d) - bolus_ul)
    if vtbi is None or vtbi > U32_MAX:
        out.append(
            _hard(
                "max_cumulative_dose",
                "pump_resolution",
                "the volume to be infused cannot be set within the session dose limits "
                "at 1 uL resolution",
                unit=dunit,
            )
        )
        return _result(library, care_area, drug, out, None)
    program = _program(
        library,
        entry,
        care_area,
        conv,
        conc,
        weight,
        rate,
        rate_ul,
        vtbi,
        bol,
        bolus_ul,
        duration=dur,
        session_duration=dur,
        prior_ul=0,
        prior_s=Decimal(0),
    )
    return _result(library, care_area, drug, out, program)


def check_rate_change(
    library: DrugLibrary,
    current: Authorization,
    new_dose_rate: Number,
    *,
    infused_ul: int,
    elapsed_s: Number,
) -> DoseCheck:
    """Check a rate change during a session; the new program keeps the remaining volume.

    The prescribed dose stays the same: the remaining volume (``current.program.vtbi_ul``
    minus ``infused_ul``, the infusion volume delivered under the current program) is given
    at the new rate, so the session lasts longer or shorter. The rate is checked against the
    rate limits and the resulting session duration (time already elapsed in the session plus
    the remaining volume at the new rate) against the duration limits, with the library passed
    in (which may be newer than the one ``current`` was checked with). Every soft violation
    needs a new override: a change is a new decision.
    """
    p = current.program
    rate = _num(new_dose_rate, "new_dose_rate")
    elapsed = _num(elapsed_s, "elapsed_s")
    if isinstance(infused_ul, bool) or not isinstance(infused_ul, int) or infused_ul < 0:
        raise DoseCheckError(f"infused_ul must be a non-negative int, not {infused_ul!r}")
    if elapsed < 0:
        raise DoseCheckError(f"elapsed_s must not be negative, not {elapsed}")
    entry, out = _lookup(library, p.care_area, p.drug)
    if entry is None:
        return _result(library, p.care_area, p.drug, out, None)
    if entry.dosing_unit is not p.dosing_unit:
        out.append(
            _hard(
                "dosing_unit",
                "changed",
                f"{entry.name} is now dosed in {entry.dosing_unit.value}, not "
                f"{p.dosing_unit.value}: start a new program",
                unit=entry.dosing_unit.value,
            )
        )
        return _result(library, p.care_area, p.drug, out, None)
    conv = _patient(entry, p.concentration_mg_ml, p.weight_kg, out)
    unit = entry.dosing_unit.value
    ok = _positive("rate", rate, unit, out)
    remaining = p.vtbi_ul - infused_ul
    if remaining <= 0:
        out.append(
            _hard(
                "vtbi",
                "remaining",
                f"the current program has no volume left to infuse ({infused_ul} of "
                f"{p.vtbi_ul} uL given): start a new program",
                unit="uL",
            )
        )
        ok = False
    if conv is None or not ok:
        return _result(library, p.care_area, p.drug, out, None)
    rate_ul = _fit_rate(entry, conv, rate, out)
    if rate_ul is None:
        return _result(library, p.care_area, p.drug, out, None)
    prior_s = p.prior_elapsed_s + elapsed
    run_min = Fraction(remaining * 60, rate_ul)
    session_min = Fraction(prior_s) / 60 + run_min
    v = _limit_violation("duration_min", entry.duration_min, session_min, _show(session_min), "min")
    if v is not None:
        out.append(v)
    prior_ul = p.prior_infused_ul + p.bolus_ul + infused_ul
    session = conv.from_ul(Fraction(prior_ul + remaining))
    v = _limit_violation(
        "max_cumulative_dose",
        entry.max_cumulative_dose,
        session,
        _show(session),
        entry.dosing_unit.dose_unit,
    )
    if v is not None:
        out.append(v)
    program = _program(
        library,
        entry,
        p.care_area,
        conv,
        p.concentration_mg_ml,
        p.weight_kg,
        rate,
        rate_ul,
        remaining,
        None,
        0,
        duration=_show(run_min),
        session_duration=_show(session_min),
        prior_ul=prior_ul,
        prior_s=prior_s,
    )
    return _result(library, p.care_area, p.drug, out, program)


def _program(
    library: DrugLibrary,
    entry: DrugEntry,
    care_area: str,
    conv: _Conv,
    conc: Decimal,
    weight: Decimal | None,
    rate: Decimal,
    rate_ul: int,
    vtbi: int,
    bolus: Decimal | None,
    bolus_ul: int,
    *,
    duration: Decimal,
    session_duration: Decimal,
    prior_ul: int,
    prior_s: Decimal,
) -> PumpProgram:
    return PumpProgram(
        care_area=care_area,
        drug=entry.id,
        drug_name=entry.name,
        dosing_unit=entry.dosing_unit,
        concentration_mg_ml=conc,
        weight_kg=weight,
        dose_rate=rate,
        effective_dose_rate=_show(conv.from_ul(Fraction(rate_ul))),
        duration_min=duration,
        session_duration_min=session_duration,
        rate_ul_h=rate_ul,
        vtbi_ul=vtbi,
        bolus_dose=bolus,
        bolus_ul=bolus_ul,
        total_dose_mg=_show(conv.mg(Fraction(vtbi + bolus_ul)), 9),
        session_dose=_show(conv.from_ul(Fraction(prior_ul + vtbi + bolus_ul))),
        prior_infused_ul=prior_ul,
        prior_elapsed_s=prior_s,
        max_cumulative_dose=entry.max_cumulative_dose,
        library_sha256=library.sha256,
        library_version=library.version,
    )


# -- authorization -----------------------------------------------------------------------------


def _first_hard(check: DoseCheck) -> DoseCheckError:
    v = check.hard_violations[0]
    return DoseCheckError(f"hard limit {v.name} cannot be overridden: {v.message}")


def authorize(check: DoseCheck, *, clock: Callable[[], float] = time.time) -> Authorization:
    """Authorize a program that is within all limits; SOFT needs ``apply_override``."""
    if check.verdict is Verdict.HARD:
        raise _first_hard(check)
    if check.verdict is Verdict.SOFT:
        names = ", ".join(v.name for v in check.violations)
        raise DoseCheckError(
            f"soft limit {names} needs an override by a named operator with a reason"
        )
    assert check.program is not None
    return Authorization(check, check.program, (), None, None, clock())


def apply_override(
    check: DoseCheck,
    operator: str,
    reason: str,
    *,
    clock: Callable[[], float] = time.time,
) -> Authorization:
    """Override every soft violation of ``check``, recording who, why and when."""
    if check.verdict is Verdict.HARD:
        raise _first_hard(check)
    if check.verdict is Verdict.OK:
        raise DoseCheckError("nothing to override: the program is within all limits; authorize it")
    op = operator.strip() if isinstance(operator, str) else ""
    why = reason.strip() if isinstance(reason, str) else ""
    if not op:
        raise DoseCheckError("a soft-limit override needs the operator's name")
    if len(op) > MAX_OPERATOR_LEN:
        raise DoseCheckError(f"operator name must be at most {MAX_OPERATOR_LEN} characters")
    if len(why) < MIN_REASON_LEN:
        raise DoseCheckError(
            f"a soft-limit override needs a reason of at least {MIN_REASON_LEN} characters"
        )
    if len(why) > MAX_REASON_LEN:
        raise DoseCheckError(f"override reason must be at most {MAX_REASON_LEN} characters")
    assert check.program is not None
    return Authorization(check, check.program, check.violations, op, why, clock())


# -- during the session ------------------------------------------------------------------------


def check_cumulative(program: PumpProgram, delivered_ul: int) -> CumulativeCheck:
    """Session volume delivered so far (all programs and boluses) against the session maximum."""
    if isinstance(delivered_ul, bool) or not isinstance(delivered_ul, int) or delivered_ul < 0:
        raise DoseCheckError(f"delivered_ul must be a non-negative int, not {delivered_ul!r}")
    conv = _Conv(
        program.dosing_unit,
        Fraction(program.concentration_mg_ml),
        Fraction(program.weight_kg if program.weight_kg is not None else 1),
    )
    limits = program.max_cumulative_dose
    dose = conv.from_ul(Fraction(delivered_ul))
    hard = Fraction(limits.upper_hard)
    left_ul = max(Fraction(0), conv.to_ul(hard) - delivered_ul)
    return CumulativeCheck(
        delivered_ul=delivered_ul,
        delivered_mg=_show(conv.mg(Fraction(delivered_ul)), 9),
        delivered_dose=_show(dose),
        unit=program.dose_unit,
        upper_soft=limits.upper_soft,
        upper_hard=limits.upper_hard,
        soft_exceeded=dose > Fraction(limits.upper_soft),
        exceeded=dose >= hard,
        remaining_mg=_show(conv.mg(left_ul)),
        remaining_ul=math.floor(left_ul),
    )


def check_conformance(
    program_rate_ul_h: int,
    program_vtbi_ul: int,
    reported_rate_ul_h: int | None,
    reported_infused_ul: int | None,
    elapsed_s: float | int | Decimal,
    *,
    rate_tolerance_pct: Decimal | int = Decimal(1),
    rate_tolerance_ul_h: int = 1,
    volume_tolerance_pct: Decimal | int = Decimal("0.5"),
    volume_tolerance_ul: int = 50,
    latency_s: float | int | Decimal = 5,
) -> list[Mismatch]:
    """Does an infusing pump do what it was programmed to? Empty list: yes.

    Call it while the pump reports that it is infusing under the program. ``elapsed_s`` is the
    time since the program started; ``latency_s`` allows for the age of the pump's report.
    Tolerances: rate within max(``rate_tolerance_pct`` of the program, ``rate_tolerance_ul_h``)
    (pump display rounding); infused volume at most the VTBI plus max(``volume_tolerance_pct``
    of the VTBI, ``volume_tolerance_ul``), and at most what the programmed rate (plus its
    tolerance) could have delivered in ``elapsed_s + latency_s``, plus the volume tolerance.
    Less volume than expected is not a mismatch: pauses and occlusions slow an infusion, and
    the pump alarms on occlusion itself.
    """
    el = Fraction(elapsed_s)
    if el < 0:
        raise DoseCheckError(f"elapsed_s must not be negative, not {elapsed_s}")
    out: list[Mismatch] = []
    rpct = Fraction(rate_tolerance_pct)
    rate_tol = max(rate_tolerance_ul_h, math.ceil(program_rate_ul_h * rpct / 100))
    if reported_rate_ul_h is None:
        out.append(
            Mismatch(
                "rate_ul_h",
                "missing",
                program_rate_ul_h,
                None,
                rate_tol,
                "the pump did not report its rate",
            )
        )
    elif abs(reported_rate_ul_h - program_rate_ul_h) > rate_tol:
        out.append(
            Mismatch(
                "rate_ul_h",
                "rate",
                program_rate_ul_h,
                reported_rate_ul_h,
                rate_tol,
                f"pump rate {reported_rate_ul_h} uL/h differs from the programmed "
                f"{program_rate_ul_h} uL/h by more than {rate_tol} uL/h",
            )
        )
    vol_tol = max(
        volume_tolerance_ul, math.ceil(program_vtbi_ul * Fraction(volume_tolerance_pct) / 100)
    )
    if reported_infused_ul is None:
        out.append(
            Mismatch(
                "infused_ul",
                "missing",
                program_vtbi_ul,
                None,
                vol_tol,
                "the pump did not report the volume infused",
            )
        )
        return out
    if reported_infused_ul > program_vtbi_ul + vol_tol:
        out.append(
            Mismatch(
                "infused_ul",
                "over_vtbi",
                program_vtbi_ul,
                reported_infused_ul,
                vol_tol,
                f"pump infused {reported_infused_ul} uL, more than the programmed "
                f"{program_vtbi_ul} uL plus {vol_tol} uL tolerance",
            )
        )
    expected = math.floor(program_rate_ul_h * el / 3600)
    window = el + Fraction(latency_s)
    allowed = math.floor(program_rate_ul_h * (1 + rpct / 100) * window / 3600) + vol_tol
    if reported_infused_ul > allowed:
        out.append(
            Mismatch(
                "infused_ul",
                "ahead_of_time",
                expected,
                reported_infused_ul,
                allowed - expected,
                f"pump infused {reported_infused_ul} uL in {_s(el)} s, more than the programmed "
                f"rate allows ({allowed} uL at most)",
            )
        )
    return out
