"""What changed between two drug libraries, limit by limit, for review before deployment.

A new library version is approved by reading its differences from the one in use, so each
change names its full path and, for limits, whether it loosens (allows more) or tightens
(allows less) what can be given. Numbers are compared by value: ``1`` and ``1.0`` are the
same limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from gateway.druglib.model import CareArea, DrugEntry, DrugLibrary, Limits, WeightRange

__all__ = ["Change", "diff_libraries"]

ADDED = "added"
REMOVED = "removed"
CHANGED = "changed"
LOOSENED = "loosened"
TIGHTENED = "tightened"

_LIMIT_NAMES = ("lower_hard", "lower_soft", "default", "upper_soft", "upper_hard")


@dataclass(frozen=True)
class Change:
    """One difference; ``effect`` is ``loosened``/``tightened`` for limits, else ``None``."""

    kind: str
    path: str
    old: str | None
    new: str | None
    unit: str = ""
    effect: str | None = None

    def __str__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.kind == CHANGED:
            text = f"changed {self.path}: {self.old} -> {self.new}{unit}"
        else:
            value = self.new if self.kind == ADDED else self.old
            text = f"{self.kind} {self.path}" + (f": {value}{unit}" if value is not None else "")
        return text + (f" ({self.effect})" if self.effect else "")


def diff_libraries(a: DrugLibrary, b: DrugLibrary) -> list[Change]:
    """Changes that turn library ``a`` into library ``b``, in a stable order."""
    out: list[Change] = []
    for field in ("name", "version", "approved_by", "approved_on"):
        old, new = str(getattr(a, field)), str(getattr(b, field))
        if old != new:
            out.append(Change(CHANGED, field, old, new))
    for area_id in _union(a.care_areas, b.care_areas):
        path = f"care_areas.{area_id}"
        old_area, new_area = a.care_areas.get(area_id), b.care_areas.get(area_id)
        if old_area is None:
            out.append(Change(ADDED, path, None, None))
        elif new_area is None:
            out.append(Change(REMOVED, path, None, None))
        else:
            _area(out, path, old_area, new_area)
    return out


def _union(a: Mapping[str, object], b: Mapping[str, object]) -> list[str]:
    """Keys of ``a`` in file order, then keys only in ``b`` in its file order."""
    return list(a) + [k for k in b if k not in a]


def _area(out: list[Change], path: str, a: CareArea, b: CareArea) -> None:
    if a.description != b.description:
        out.append(Change(CHANGED, f"{path}.description", a.description, b.description))
    for drug_id in _union(a.drugs, b.drugs):
        dpath = f"{path}.drugs.{drug_id}"
        old, new = a.drugs.get(drug_id), b.drugs.get(drug_id)
        if old is None:
            out.append(Change(ADDED, dpath, None, None))
        elif new is None:
            out.append(Change(REMOVED, dpath, None, None))
        else:
            _entry(out, dpath, old, new)


def _entry(out: list[Change], path: str, a: DrugEntry, b: DrugEntry) -> None:
    if a.name != b.name:
        out.append(Change(CHANGED, f"{path}.name", a.name, b.name))
    same_unit = a.dosing_unit is b.dosing_unit
    if not same_unit:
        out.append(Change(CHANGED, f"{path}.dosing_unit", a.dosing_unit.value, b.dosing_unit.value))
    cpath = f"{path}.concentrations"
    for c in a.concentrations:
        if c not in b.concentrations:
            out.append(Change(REMOVED, cpath, _n(c), None, "mg/mL", TIGHTENED))
    for c in b.concentrations:
        if c not in a.concentrations:
            out.append(Change(ADDED, cpath, None, _n(c), "mg/mL", LOOSENED))
    _weight(out, f"{path}.weight_kg", a.weight_kg, b.weight_kg)
    unit = b.dosing_unit.value
    dose = b.dosing_unit.dose_unit
    _limits(out, f"{path}.rate", a.rate, b.rate, unit, same_unit)
    bpath = f"{path}.bolus"
    if a.bolus is None and b.bolus is not None:
        out.append(Change(ADDED, bpath, None, None, "", LOOSENED))
    elif a.bolus is not None and b.bolus is None:
        out.append(Change(REMOVED, bpath, None, None, "", TIGHTENED))
    elif a.bolus is not None and b.bolus is not None:
        _limits(out, bpath, a.bolus, b.bolus, dose, same_unit)
    _limits(
        out,
        f"{path}.max_cumulative_dose",
        a.max_cumulative_dose,
        b.max_cumulative_dose,
        dose,
        same_unit,
    )
    _limits(out, f"{path}.duration_min", a.duration_min, b.duration_min, "min", True)
    if a.advisory != b.advisory:
        out.append(Change(CHANGED, f"{path}.advisory", a.advisory, b.advisory))


def _weight(out: list[Change], path: str, a: WeightRange | None, b: WeightRange | None) -> None:
    if a is None and b is None:
        return
    if a is None or b is None:
        kind = ADDED if a is None else REMOVED
        effect = TIGHTENED if a is None else LOOSENED
        w = b if a is None else a
        assert w is not None
        value = f"{_n(w.min)}-{_n(w.max)}"
        out.append(
            Change(
                kind, path, None if a is None else value, value if a is None else None, "kg", effect
            )
        )
        return
    _value(out, f"{path}.min", a.min, b.min, "kg", upper=False, comparable=True)
    _value(out, f"{path}.max", a.max, b.max, "kg", upper=True, comparable=True)


def _limits(
    out: list[Change], path: str, a: Limits, b: Limits, unit: str, comparable: bool
) -> None:
    for name in _LIMIT_NAMES:
        old, new = getattr(a, name), getattr(b, name)
        upper = name.startswith("upper")
        lower = name.startswith("lower")
        lpath = f"{path}.{name}"
        if old is None and new is None:
            continue
        if old is None:
            effect = TIGHTENED if lower and comparable else None
            out.append(Change(ADDED, lpath, None, _n(new), unit, effect))
        elif new is None:
            effect = LOOSENED if lower and comparable else None
            out.append(Change(REMOVED, lpath, _n(old), None, unit, effect))
        else:
            _value(
                out,
                lpath,
                old,
                new,
                unit,
                upper=upper if (upper or lower) else None,
                comparable=comparable,
            )


def _value(
    out: list[Change],
    path: str,
    old: Decimal,
    new: Decimal,
    unit: str,
    *,
    upper: bool | None,
    comparable: bool,
) -> None:
    if old == new:
        return
    effect = None
    if upper is not None and comparable:
        effect = LOOSENED if (new > old) == upper else TIGHTENED
    out.append(Change(CHANGED, path, _n(old), _n(new), unit, effect))


def _n(d: Decimal) -> str:
    return f"{d:f}"
