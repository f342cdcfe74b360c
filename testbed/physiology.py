"""An ILLUSTRATIVE patient for the bench and the demo: vitals that respond to the dose the
emulated pump actually delivers, plus scripted events - NOT a validated PK/PD model.

Why it exists: the interlocks are only exercised meaningfully if the vitals move the way
low-dose ketamine moves them (blood pressure and heart rate rising toward the end of the
infusion and settling afterwards), with realistic noise and probe artefacts that the rules
must tolerate, and with scripted emergencies they must catch. Every number below is an
EXAMPLE chosen to reproduce the averages in shared/reference/clinical.md (BP peaks near the
end of a 0.5 mg/kg / 40 min infusion at about +16/+11 mmHg); none is a clinical parameter.

Model, in short (docs/scenarios.md has the details):

- drug: the infusion rate drives a plasma-like compartment (first order, k = 0.1/min) that
  drives an effect site (first-order lag, ke0 = 0.15/min). The effect is the effect-site
  level relative to the end of the standard infusion (0.75 mg/kg/h for 40 min = 1.0);
- response: SBP/DBP/HR rise linearly with the effect (+16/+11 mmHg, +5 /min at 1.0) times
  a per-patient sensitivity drawn from the seed (mean 1) and ``Baseline.bp_response``;
- noise: slow wander plus measurement jitter, and brief SpO2 motion artefacts (at most one a
  minute, 1-3 s long, so they can never hold a value out of range for 10 s);
- events: scripted changes blended in with onset and recovery ramps (``Event``).

Noise, artefacts and events are pure functions of (seed, t): a counter-based generator
hashes (seed, stream, time step), so any time can be sampled in any order. The drug effect
depends on what the patient received, which the model reconstructs from the (rate,
cumulative dose) samples it is given: any one sample taken while a constant-rate infusion
runs fixes that infusion exactly (its start is ``t - cumulative / rate``), and a rate change
between two samples is placed exactly from the dose delivered between them. If the first
sample the model ever sees is after an infusion ended, that infusion is unknown to it and
has no effect.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = [
    "EVENT_KINDS",
    "PRESETS",
    "Baseline",
    "Event",
    "PatientModel",
    "PhysiologyError",
    "Vitals",
    "monitor_source",
    "oximeter_source",
]


class PhysiologyError(ValueError):
    """A patient baseline or scripted event that cannot describe a patient."""


# --- drug response (EXAMPLE values, see module docstring) -------------------------------------
KEL_PER_MIN = 0.1  # plasma-like compartment: half-life ~7 min (redistribution-like)
KE0_PER_MIN = 0.15  # effect-site lag: half-life ~4.6 min
STANDARD_RATE_MG_KG_H = 0.75  # 0.5 mg/kg over 40 min
STANDARD_DURATION_S = 2400.0
SBP_RISE_MMHG = 16.0  # mean rise at effect 1.0 (end of the standard infusion)
DBP_RISE_MMHG = 11.0
HR_RISE_PER_MIN = 5.0
BP_SENSITIVITY_SD = 0.3  # log-normal spread of the per-patient response (mean 1)
HR_SENSITIVITY_SD = 0.4
_RATE_TOLERANCE = 0.01  # relative: rates closer than this are the same rate

# --- noise -------------------------------------------------------------------------------
_WANDER_STEP_S = 60.0  # slow physiological drift: a new value each minute, smoothly joined
_JITTER_STEP_S = 0.1  # measurement jitter changes every 0.1 s (hash of int(t * 10))
_CUFF_STEP_S = 5.0  # a cuff reading's error: one draw per 5 s (a measurement takes ~30 s)
_ARTIFACT_WINDOW_S = 60.0  # at most one motion artefact per minute ...
_ARTIFACT_PROBABILITY = 0.12
_ARTIFACT_EARLIEST_S = 5.0  # ... starting 5-55 s into its minute, 1-3 s long: two are >= 7 s
_ARTIFACT_LATEST_S = 55.0  # apart, so SpO2 is never held low by artefacts for more than 3 s
_ARTIFACT_MAX_S = 3.0

# stream numbers of the counter-based generator (one per independent random quantity)
(
    _S_HR,
    _S_SYS,
    _S_DIA,
    _S_SPO2,
    _S_RR,
    _S_ETCO2,
    _S_PI,
    _S_HR_J,
    _S_PULSE_J,
    _S_SYS_J,
    _S_DIA_J,
    _S_SPO2_J,
    _S_RR_J,
    _S_ETCO2_J,
    _S_ART,
    _S_SENS,
) = range(16)
_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class Baseline:
    """A patient at rest before the infusion: the centre the noise wanders around.

    ``bp_response`` scales the drug's average blood-pressure rise for this patient (older or
    hypertensive patients rise more often and further).
    """

    weight_kg: float
    hr: float
    sys: float
    dia: float
    spo2: float
    rr: float
    etco2: float  # mmHg
    pi: float  # perfusion index, %
    bp_response: float = 1.0

    def __post_init__(self) -> None:
        ranges = {
            "weight_kg": (20.0, 300.0),
            "hr": (30.0, 180.0),
            "sys": (60.0, 250.0),
            "dia": (30.0, 150.0),
            "spo2": (70.0, 100.0),
            "rr": (4.0, 40.0),
            "etco2": (10.0, 80.0),
            "pi": (0.05, 20.0),
            "bp_response": (0.0, 5.0),
        }
        for name, (lo, hi) in ranges.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
                raise PhysiologyError(f"baseline {name} = {v!r} is outside {lo:g}..{hi:g}")
        if self.dia >= self.sys:
            raise PhysiologyError(f"baseline dia {self.dia:g} must be below sys {self.sys:g} mmHg")


PRESETS: MappingProxyType[str, Baseline] = MappingProxyType(
    {
        "adult": Baseline(weight_kg=70, hr=72, sys=122, dia=78, spo2=98, rr=14, etco2=38, pi=2.5),
        "older": Baseline(
            weight_kg=76, hr=66, sys=132, dia=80, spo2=96, rr=15, etco2=37, pi=1.5, bp_response=1.1
        ),
        "older-hypertensive": Baseline(
            weight_kg=84, hr=70, sys=142, dia=86, spo2=95, rr=16, etco2=37, pi=1.2, bp_response=1.2
        ),
        "young-anxious": Baseline(
            weight_kg=58, hr=92, sys=118, dia=74, spo2=99, rr=18, etco2=34, pi=3.5
        ),
    }
)


# --- events ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Kind:
    default: float | None  # magnitude when none is given (None: the kind takes none)
    lo: float = 0.0
    hi: float = 0.0
    onset_s: float = 0.0
    recovery_s: float = 0.0
    unit: str = ""


_KINDS: MappingProxyType[str, _Kind] = MappingProxyType(
    {
        # magnitude = the value the channel is driven to
        "desaturation": _Kind(86.0, 50.0, 99.0, onset_s=20.0, recovery_s=30.0, unit="% SpO2"),
        "hypertensive": _Kind(190.0, 100.0, 260.0, onset_s=90.0, recovery_s=180.0, unit="mmHg SBP"),
        "bradycardia": _Kind(40.0, 20.0, 60.0, onset_s=10.0, recovery_s=20.0, unit="/min"),
        "tachycardia": _Kind(140.0, 100.0, 220.0, onset_s=20.0, recovery_s=40.0, unit="/min"),
        # no magnitude
        "apnea": _Kind(None, onset_s=10.0, recovery_s=20.0),
        "lead_off": _Kind(None),
        "probe_off": _Kind(None),
        "nibp_cycle": _Kind(None),  # no effect on the patient: the bench cycles the cuff
    }
)
EVENT_KINDS: tuple[str, ...] = tuple(_KINDS)
_DBP_SHARE = 0.4  # a hypertensive event raises DBP by this share of the SBP rise
_APNEA_SPO2_DELAY_S = 30.0  # an awake patient on room air holds SpO2 this long ...
_APNEA_SPO2_FALL_PER_S = 0.15  # ... then it falls this fast, down to
_APNEA_SPO2_FLOOR = 75.0


@dataclass(frozen=True)
class Event:
    """A scripted change, applied on top of the model from ``start_s`` (scenario seconds).

    The channel ramps to ``magnitude`` over the kind's onset, holds until
    ``start_s + duration_s``, then recovers over the kind's recovery time (``end_s``).
    ``magnitude`` None means the kind's default; kinds without a magnitude refuse one.
    """

    kind: str
    start_s: float
    duration_s: float
    magnitude: float | None = None

    def __post_init__(self) -> None:
        spec = _KINDS.get(self.kind)
        if spec is None:
            raise PhysiologyError(
                f"unknown event kind {self.kind!r}; expected one of {', '.join(EVENT_KINDS)}"
            )
        for name in ("start_s", "duration_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < 1e7:
                raise PhysiologyError(f"{self.kind} event {name} = {v!r} must be 0 or more")
        if self.duration_s == 0 and self.kind != "nibp_cycle":
            raise PhysiologyError(f"{self.kind} event duration_s must be above 0")
        m = self.magnitude
        if spec.default is None:
            if m is not None:
                raise PhysiologyError(f"{self.kind} event takes no magnitude (got {m!r})")
        elif m is not None and (
            isinstance(m, bool) or not isinstance(m, int | float) or not spec.lo <= m <= spec.hi
        ):
            raise PhysiologyError(
                f"{self.kind} event magnitude = {m!r} is outside "
                f"{spec.lo:g}..{spec.hi:g} {spec.unit}"
            )

    @property
    def target(self) -> float | None:
        """The magnitude in effect (the kind's default when none was given)."""
        return self.magnitude if self.magnitude is not None else _KINDS[self.kind].default

    @property
    def end_s(self) -> float:
        """When the event has no effect any more (after its recovery ramp)."""
        return self.start_s + self.duration_s + _KINDS[self.kind].recovery_s

    def weight(self, t: float) -> float:
        """0..1: how far the event has taken its channel at ``t`` (smooth ramps)."""
        spec = _KINDS[self.kind]
        hold_end = self.start_s + self.duration_s
        if t < self.start_s or t >= self.end_s:
            return 0.0
        up = _ramp(min(t, hold_end) - self.start_s, spec.onset_s)
        if t < hold_end:
            return up
        return up * (1.0 - _ramp(t - hold_end, spec.recovery_s))


def _ramp(x: float, span: float) -> float:
    if span <= 0:
        return 1.0 if x >= 0 else 0.0
    f = min(1.0, max(0.0, x / span))
    return f * f * (3.0 - 2.0 * f)  # smoothstep: no kinks a trend display would show


# --- vitals ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Vitals:
    """One moment of the patient, in clinical units; None = the device shows no value.

    ``hr`` and ``rr_imp`` come from ECG leads, ``spo2``/``pulse``/``pi`` from the finger
    probe, ``rr``/``etco2_mmhg`` from the capnograph, ``sys``/``dia``/``mean`` are the arterial
    pressure a cuff would measure now. ``artifact`` marks a motion artefact on the probe,
    ``events`` the scripted events acting now, ``effect`` the drug effect (1.0 = end of the
    standard infusion).
    """

    t_s: float
    hr: float | None
    pulse: float | None
    sys: float
    dia: float
    mean: float
    spo2: float | None
    rr: float
    rr_imp: float | None
    etco2_mmhg: float
    pi: float | None
    artifact: bool = False
    events: tuple[str, ...] = ()
    effect: float = 0.0


# --- counter-based random numbers ------------------------------------------------------------
def _mix(x: int) -> int:
    """splitmix64 finaliser: a well-mixed 64-bit hash of a 64-bit integer."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class _Noise:
    """Random numbers addressed by (stream, step) instead of drawn in sequence."""

    def __init__(self, seed: int) -> None:
        s = _mix((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & _MASK)
        self._keys = [_mix(s ^ ((i + 1) * 0xD1B54A32D192ED03 & _MASK)) for i in range(16)]

    def bits(self, stream: int, step: int) -> int:
        return _mix((self._keys[stream] + step * 0x9E3779B97F4A7C15) & _MASK)

    def uniform(self, stream: int, step: int, part: int = 0) -> float:
        """[0, 1); ``part`` 0-2 picks one of three independent 21-bit fields of one hash."""
        return ((self.bits(stream, step) >> (21 * part)) & 0x1FFFFF) / 2097152.0

    def normal(self, stream: int, step: int) -> float:
        """Approximately standard normal (sum of three uniforms), bounded to +-3."""
        h = self.bits(stream, step)
        u = (h & 0x1FFFFF) + ((h >> 21) & 0x1FFFFF) + ((h >> 42) & 0x1FFFFF)
        return (u / 2097152.0 - 1.5) * 2.0

    def wander(self, stream: int, t: float) -> float:
        """Slow drift, sd ~1: normals each _WANDER_STEP_S joined by cosine interpolation."""
        x = t / _WANDER_STEP_S
        k = math.floor(x)
        f = (1.0 - math.cos((x - k) * math.pi)) / 2.0
        return self.normal(stream, k) * (1.0 - f) + self.normal(stream, k + 1) * f

    def jitter(self, stream: int, t: float, step_s: float = _JITTER_STEP_S) -> float:
        return self.normal(stream, math.floor(t / step_s))


# --- what the patient received ---------------------------------------------------------------
_K_PER_S = KEL_PER_MIN / 60.0
_Q_PER_S = KE0_PER_MIN / 60.0


def _advance(cp: float, ce: float, rate_mg_kg_h: float, dt: float) -> tuple[float, float]:
    """Both compartments after ``dt`` s of a constant rate (closed form, any step length)."""
    css = rate_mg_kg_h / 3600.0 / _K_PER_S
    a = cp - css
    ek, eq = math.exp(-_K_PER_S * dt), math.exp(-_Q_PER_S * dt)
    cp1 = css + a * ek
    ce1 = css + a * _Q_PER_S / (_Q_PER_S - _K_PER_S) * (ek - eq) + (ce - css) * eq
    return cp1, ce1


_CE_STANDARD = _advance(0.0, 0.0, STANDARD_RATE_MG_KG_H, STANDARD_DURATION_S)[1]


class _InfusionRecord:
    """The rate history rebuilt from (t, rate, cumulative) samples; see module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._times: list[float] = []  # knot k: rate _rates[k] from _times[k] on
        self._rates: list[float] = []
        self._states: list[tuple[float, float]] = []  # (cp, ce) at the knot
        self._last_t: float | None = None
        self._last_cum = 0.0

    def _append(self, t: float, rate: float) -> None:
        if self._times:
            t = max(t, self._times[-1])
            state = _advance(*self._states[-1], self._rates[-1], t - self._times[-1])
        else:
            state = (0.0, 0.0)
        self._times.append(t)
        self._rates.append(rate)
        self._states.append(state)

    def observe(self, t: float, rate: float, cum: float) -> None:
        rate, cum = max(0.0, rate), max(0.0, cum)
        with self._lock:
            if self._last_t is None:
                if rate > 0:
                    self._append(t - cum / rate * 3600.0, rate)
                self._last_t, self._last_cum = t, cum
                return
            if t <= self._last_t:
                return  # an earlier moment: evaluated against the history as it stands
            cur = self._rates[-1] if self._rates else 0.0
            if abs(rate - cur) > _RATE_TOLERANCE * max(rate, cur):
                # cur until tx, rate after: cur*(tx - t0) + rate*(t - tx) = delivered
                r0, r1 = cur / 3600.0, rate / 3600.0
                delivered = max(0.0, cum - self._last_cum)
                tx = (delivered + r0 * self._last_t - r1 * t) / (r0 - r1)
                self._append(min(t, max(self._last_t, tx)), rate)
            self._last_t, self._last_cum = t, cum

    def effect(self, t: float) -> float:
        with self._lock:
            i = bisect.bisect_right(self._times, t) - 1
            if i < 0:
                return 0.0
            _, ce = _advance(*self._states[i], self._rates[i], t - self._times[i])
        return max(0.0, ce / _CE_STANDARD)


# --- the patient -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Sensitivity:
    bp: float
    hr: float


class PatientModel:
    """One patient: ``vitals(t, rate, cumulative)`` at any scenario second ``t``."""

    def __init__(self, baseline: Baseline, seed: int, events: Iterable[Event] = ()) -> None:
        if not isinstance(baseline, Baseline):
            raise PhysiologyError(f"baseline must be a Baseline, not {type(baseline).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise PhysiologyError(f"seed must be an integer, not {seed!r}")
        self._baseline = baseline
        self._seed = seed
        self._events = tuple(events)
        for e in self._events:
            if not isinstance(e, Event):
                raise PhysiologyError(f"events must be Event objects, not {e!r}")
        self._noise = _Noise(seed)
        z_bp, z_hr = self._noise.normal(_S_SENS, 0), self._noise.normal(_S_SENS, 1)
        self._sens = _Sensitivity(
            bp=math.exp(BP_SENSITIVITY_SD * z_bp - BP_SENSITIVITY_SD**2 / 2),
            hr=math.exp(HR_SENSITIVITY_SD * z_hr - HR_SENSITIVITY_SD**2 / 2),
        )
        self._infusion = _InfusionRecord()

    @property
    def baseline(self) -> Baseline:
        return self._baseline

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def events(self) -> tuple[Event, ...]:
        return self._events

    def with_events(self, events: Iterable[Event]) -> PatientModel:
        """The same patient (baseline, seed) with more scripted events, not yet dosed."""
        return PatientModel(self._baseline, self._seed, self._events + tuple(events))

    def _artifact_at(self, t_s: float) -> tuple[float, float, float] | None:
        """The motion artefact of the minute containing ``t_s``: (start, length, depth)."""
        w = math.floor(t_s / _ARTIFACT_WINDOW_S)
        if self._noise.uniform(_S_ART, w, 0) >= _ARTIFACT_PROBABILITY:
            return None
        span = _ARTIFACT_LATEST_S - _ARTIFACT_EARLIEST_S
        start = (
            w * _ARTIFACT_WINDOW_S + _ARTIFACT_EARLIEST_S + span * self._noise.uniform(_S_ART, w, 1)
        )
        length = 1.0 + (_ARTIFACT_MAX_S - 1.0) * self._noise.uniform(_S_ART, w, 2)
        depth = 4.0 + 10.0 * self._noise.uniform(_S_ART, w + 1_000_003, 0)
        return start, length, depth

    def vitals(self, t_s: float, dose_mg_kg_h: float, cumulative_mg_kg: float) -> Vitals:
        """The patient at scenario second ``t_s`` given the pump's rate and delivered dose."""
        b, n, t = self._baseline, self._noise, float(t_s)
        self._infusion.observe(t, float(dose_mg_kg_h), float(cumulative_mg_kg))
        effect = self._infusion.effect(t)

        # smooth physiology: baseline + drug + slow wander
        hr = b.hr + HR_RISE_PER_MIN * self._sens.hr * effect + 3.0 * n.wander(_S_HR, t)
        bp_gain = self._sens.bp * b.bp_response * effect
        sys = b.sys + SBP_RISE_MMHG * bp_gain + 4.0 * n.wander(_S_SYS, t)
        dia = b.dia + DBP_RISE_MMHG * bp_gain + 3.0 * n.wander(_S_DIA, t)
        spo2 = b.spo2 + 0.6 * n.wander(_S_SPO2, t)
        rr = b.rr + 1.0 * n.wander(_S_RR, t)
        etco2 = b.etco2 + 1.5 * n.wander(_S_ETCO2, t)
        pi = b.pi * math.exp(0.15 * n.wander(_S_PI, t))

        # scripted events
        active: list[str] = []
        lead_off = probe_off = False
        for e in self._events:
            w = e.weight(t)
            if w <= 0.0:
                continue
            hold_end = e.start_s + e.duration_s
            if e.kind == "lead_off":
                lead_off = True
            elif e.kind == "probe_off":
                probe_off = True
            elif e.kind == "desaturation":
                spo2 += w * min(0.0, float(e.target or 0.0) - spo2)
            elif e.kind == "hypertensive":
                rise = w * max(0.0, float(e.target or 0.0) - sys)
                sys += rise
                dia += _DBP_SHARE * rise
            elif e.kind == "bradycardia":
                hr += w * min(0.0, float(e.target or 0.0) - hr)
            elif e.kind == "tachycardia":
                hr += w * max(0.0, float(e.target or 0.0) - hr)
            elif e.kind == "apnea":
                # breathing stops at once; exhaled CO2 fades over the onset; SpO2 holds a while
                recovering = 1.0 - _ramp(t - hold_end, _KINDS["apnea"].recovery_s)
                rr = 0.0 if t < hold_end else rr * (1.0 - recovering)
                etco2 *= 1.0 - w
                held = min(t, hold_end) - e.start_s - _APNEA_SPO2_DELAY_S
                if held > 0:
                    fall = min(held * _APNEA_SPO2_FALL_PER_S, max(0.0, spo2 - _APNEA_SPO2_FLOOR))
                    spo2 -= fall * (recovering if t >= hold_end else 1.0)
            active.append(e.kind)

        # measurement error (the cuff reports the pressure at the moment of its reading)
        sys += 3.0 * n.jitter(_S_SYS_J, t, _CUFF_STEP_S)
        dia += 2.0 * n.jitter(_S_DIA_J, t, _CUFF_STEP_S)
        hr += 0.7 * n.jitter(_S_HR_J, t)
        pulse = hr + 0.7 * n.jitter(_S_PULSE_J, t)
        spo2 += 0.3 * n.jitter(_S_SPO2_J, t)
        breathing = rr > 0.5
        rr = max(0.0, rr + 0.4 * n.jitter(_S_RR_J, t)) if breathing else 0.0
        etco2 = max(0.0, etco2 + 0.5 * n.jitter(_S_ETCO2_J, t) * (etco2 / max(b.etco2, 1.0)))

        # motion artefact on the finger probe
        artifact = False
        art = self._artifact_at(t)
        if art is not None and art[0] <= t < art[0] + art[1] and not probe_off:
            artifact = True
            spo2 -= art[2]
            pulse += 25.0 * (n.uniform(_S_ART, math.floor(t / _JITTER_STEP_S), 1) - 0.5)
            pi *= 0.3

        sys, dia = min(300.0, max(30.0, sys)), min(250.0, max(15.0, dia))
        dia = min(dia, sys - 10.0)
        return Vitals(
            t_s=t,
            hr=None if lead_off else round(max(15.0, hr), 1),
            pulse=None if probe_off else round(max(15.0, pulse), 1),
            sys=round(sys, 1),
            dia=round(dia, 1),
            mean=round(dia + (sys - dia) / 3.0, 1),
            spo2=None if probe_off else round(min(100.0, max(40.0, spo2)), 1),
            rr=round(rr, 1),
            rr_imp=None if lead_off else round(rr, 1),
            etco2_mmhg=round(etco2, 1),
            pi=None if probe_off else round(min(20.0, max(0.02, pi)), 2),
            artifact=artifact,
            events=tuple(active),
            effect=round(effect, 4),
        )


# --- emulator adapters -----------------------------------------------------------------------
DoseFn = Callable[[], tuple[float, float]]
Clock = Callable[[], float]


def _int(v: float | None) -> int | None:
    return None if v is None else int(round(v))


def oximeter_source(model: PatientModel, clock: Clock, dose_fn: DoseFn) -> Callable[[], dict]:
    """``source`` for emulators.Radical7: {"spo2", "bpm", "pi_x100"} ints or None.

    ``clock()`` gives scenario seconds; ``dose_fn()`` gives (mg/kg/h, cumulative mg/kg) now.
    """

    def source() -> dict[str, Any]:
        t = clock()
        rate, cum = dose_fn()
        v = model.vitals(t, rate, cum)
        return {
            "spo2": _int(v.spo2),
            "bpm": _int(v.pulse),
            "pi_x100": None if v.pi is None else int(round(v.pi * 100)),
        }

    return source


def monitor_source(
    model: PatientModel,
    clock: Clock,
    dose_fn: DoseFn,
    *,
    ambient_mmhg: float = 760.0,
    impedance_rr: bool = True,
) -> Callable[[], dict]:
    """``source`` for emulators.DatexS5, in its units (see datex_monitor).

    HR and rates 1/min, SpO2 0.01 % (a whole displayed %), EtCO2 0.01 % of ambient pressure
    (``ambient_mmhg``), ambient pressure 0.1 mmHg, ``nibp`` (sys, dia, mean) in 0.01 mmHg of
    whole displayed mmHg - the pressure now, which the emulator shows only after a cuff cycle.
    """
    if not 400.0 <= ambient_mmhg <= 900.0:
        raise PhysiologyError(f"ambient_mmhg = {ambient_mmhg!r} is outside 400..900")

    def source() -> dict[str, Any]:
        t = clock()
        rate, cum = dose_fn()
        v = model.vitals(t, rate, cum)
        return {
            "hr": _int(v.hr),
            "spo2_x100": None if v.spo2 is None else int(round(v.spo2)) * 100,
            "rr": _int(v.rr),
            "rr_imp": _int(v.rr_imp) if impedance_rr else None,
            "etco2_pct_x100": int(round(v.etco2_mmhg / ambient_mmhg * 10000)),
            "amb_press_x10": int(round(ambient_mmhg * 10)),
            "nibp": (
                int(round(v.sys)) * 100,
                int(round(v.dia)) * 100,
                int(round(v.mean)) * 100,
            ),
        }

    return source
