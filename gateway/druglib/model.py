"""The loaded drug library: immutable values the dose checks read.

Every limit is a ``Decimal`` parsed from the file's own text, never a binary float, so a
value written as ``0.9`` is exactly 0.9 when a dose is compared with it. A library is
identified by the SHA-256 of its file bytes: the audit record names the exact document that
allowed a program, not just a version string someone may forget to bump.

All clinical numbers in a library are set by the clinic's medical director; the example
library in ``config/druglib.example.yaml`` is an example only.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

__all__ = [
    "CareArea",
    "DosingUnit",
    "DrugEntry",
    "DrugLibrary",
    "Limits",
    "WeightRange",
]


class DosingUnit(StrEnum):
    """How the rate of an entry is written; bolus and cumulative dose drop the ``/h``."""

    MG_PER_KG_H = "mg/kg/h"
    MG_PER_H = "mg/h"
    ML_PER_H = "mL/h"

    @property
    def weight_based(self) -> bool:
        return self is DosingUnit.MG_PER_KG_H

    @property
    def dose_unit(self) -> str:
        """Unit of an amount (bolus, cumulative dose): the rate unit without the ``/h``."""
        return self.value[: -len("/h")]


@dataclass(frozen=True)
class Limits:
    """Five-point limits on one quantity; a limit is the last value still inside its band.

    ``None`` means the field has no such limit (the schema says which ones may be absent).
    """

    lower_hard: Decimal | None
    lower_soft: Decimal | None
    default: Decimal | None
    upper_soft: Decimal
    upper_hard: Decimal


@dataclass(frozen=True)
class WeightRange:
    """Plausible patient weight; outside it the weight is almost surely a typing error."""

    min: Decimal
    max: Decimal


@dataclass(frozen=True)
class DrugEntry:
    id: str
    name: str
    concentrations: tuple[Decimal, ...]
    dosing_unit: DosingUnit
    weight_kg: WeightRange | None
    rate: Limits
    bolus: Limits | None
    max_cumulative_dose: Limits
    duration_min: Limits
    advisory: str


@dataclass(frozen=True)
class CareArea:
    id: str
    description: str
    drugs: Mapping[str, DrugEntry]


@dataclass(frozen=True)
class DrugLibrary:
    format: int
    name: str
    version: str
    approved_by: str
    approved_on: datetime.date
    care_areas: Mapping[str, CareArea]
    sha256: str
    source: str

    @property
    def ident(self) -> str:
        """Short human label: version plus the first 12 hex digits of the content hash."""
        return f"{self.version} ({self.sha256[:12]})"

    def entry(self, care_area: str, drug: str) -> DrugEntry | None:
        area = self.care_areas.get(care_area)
        return None if area is None else area.drugs.get(drug)
