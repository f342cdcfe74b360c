"""Read a drug library YAML file into a ``DrugLibrary``, or say exactly what is wrong.

A drug library is a safety document written by hand, so the loader is strict where a
lenient YAML reading would hide a mistake: unknown keys (a typo such as ``uper_hard`` must
not silently drop a limit), duplicate keys (PyYAML keeps the last one without a word),
quoted numbers, YAML's surprising number forms (``0x10``, ``1_000``, ``010`` as octal,
``1:30`` as sexagesimal, ``.inf``), aliases (every limit must be visible where it applies
when the document is reviewed) and limits out of order. The file is only *composed* into
YAML nodes, never constructed into Python objects, so numbers are parsed from the text the
author wrote and every error can name the line and column of the offending token. All
errors are collected and raised together so one run of ``ivgw druglib validate`` lists
them all.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.druglib.model import (
    CareArea,
    DosingUnit,
    DrugEntry,
    DrugLibrary,
    Limits,
    WeightRange,
)
from gateway.yaml_strict import (
    INT_TAG,
    StrictReader,
    YamlFileError,
    YamlIssue,
    is_empty,
    join_path,
    read_source,
)

__all__ = [
    "FORMAT",
    "MAX_FILE_BYTES",
    "DrugLibraryError",
    "LibraryIssue",
    "load_library",
    "parse_library",
]

FORMAT = 1
MAX_FILE_BYTES = 1_000_000

_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")

_ORDER = ("lower_hard", "lower_soft", "default", "upper_soft", "upper_hard")
_STRICT_PAIRS = {("lower_hard", "lower_soft"), ("upper_soft", "upper_hard")}

# Which of the five limit names each limit block requires / allows.
_ALL5 = _ORDER
_LIMIT_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "rate": (_ALL5, ()),
    "bolus": (_ALL5, ()),
    "duration_min": (("default", "upper_soft", "upper_hard"), ("lower_hard", "lower_soft")),
    "max_cumulative_dose": (("upper_soft", "upper_hard"), ()),
}

_TOP_REQUIRED = ("format", "name", "version", "approved_by", "approved_on", "care_areas")
_AREA_REQUIRED = ("description", "drugs")
_ENTRY_REQUIRED = (
    "name",
    "concentrations",
    "dosing_unit",
    "rate",
    "max_cumulative_dose",
    "duration_min",
)
_ENTRY_OPTIONAL = ("weight_kg", "bolus", "advisory")

_MAX_DRUG_NAME = 32  # the program command carries the drug name as text of at most 32
_MAX_CONCENTRATIONS = 8


@dataclass(frozen=True)
class LibraryIssue(YamlIssue):
    """One problem in a library file, located at the token that causes it (1-based)."""


class DrugLibraryError(YamlFileError[LibraryIssue]):
    """The library file cannot be used; ``issues`` lists every problem found, in file order."""


def load_library(path: str | os.PathLike[str]) -> DrugLibrary:
    """Read and validate the library at ``path``; raise ``DrugLibraryError`` on any fault."""
    source, data = read_source(path, MAX_FILE_BYTES, DrugLibraryError, LibraryIssue)
    return parse_library(data, source)


def parse_library(data: bytes, source: str = "<memory>") -> DrugLibrary:
    """Validate library bytes; the library's identity is the SHA-256 of exactly these bytes."""
    r = _Reader(source, LibraryIssue)
    root = r.document(data, MAX_FILE_BYTES)
    lib = r.library(root, hashlib.sha256(data).hexdigest()) if root is not None else None
    if r.issues or lib is None:
        raise DrugLibraryError(r.in_file_order())
    return lib


class _Reader(StrictReader[LibraryIssue]):
    """The library's own structure and limits; the YAML strictness is ``StrictReader``'s."""

    reviewed = "the library"
    # A real limit name in the wrong block gets the list, not a misleading guess.
    unhinted = frozenset(_ORDER)

    def id_map(self, node: Node, path: str, kind: str) -> list[tuple[str, Node, Node]]:
        """Mapping of ids to blocks (care areas, drugs): ids must be unique and well formed."""
        if not isinstance(node, MappingNode):
            self.error(node, path, f"must be a mapping of {kind} id to its definition")
            return []
        out: list[tuple[str, Node, Node]] = []
        first: dict[str, Node] = {}
        for k, v in node.value:
            if not isinstance(k, ScalarNode):
                self.error(k, path, f"{kind} ids must be plain words")
                continue
            if k.value in first:
                self.error(
                    k, path, f"duplicate {kind} '{k.value}' ({self.first_note(first[k.value])})"
                )
                continue
            first[k.value] = k
            if not _ID.fullmatch(k.value):
                self.error(
                    k,
                    path,
                    f"{kind} id '{k.value}' must be 1-32 lowercase letters, digits, '-' or '_'",
                )
                continue
            out.append((k.value, k, v))
        if not node.value:
            self.error(node, path, f"must list at least one {kind}")
        return out

    # -- scalars ----------------------------------------------------------------------------

    def number(self, node: Node, path: str, *, positive: bool = True) -> Decimal | None:
        value = self.decimal(node, path, signed=True, example="0.75 or 40")
        if value is not None and positive and value <= 0:
            self.error(node, path, f"must be greater than 0, not {node.value}")
            return None
        return value

    def text(self, node: Node, path: str, *, max_len: int, multiline: bool = False) -> str | None:
        if not isinstance(node, ScalarNode):
            self.error(node, path, "must be text")
            return None
        value = "" if is_empty(node) else node.value.strip()
        if not value:
            self.error(node, path, "must not be empty")
            return None
        if len(value) > max_len:
            self.error(node, path, f"must be at most {max_len} characters, not {len(value)}")
            return None
        bad = [c for c in value if (ord(c) < 32 and not (multiline and c == "\n")) or c == "\x7f"]
        if bad:
            self.error(
                node,
                path,
                "must not contain control characters" + ("" if multiline else " or line breaks"),
            )
            return None
        return value

    # -- document ---------------------------------------------------------------------------

    def library(self, root: Node, sha256: str) -> DrugLibrary | None:
        # A different format may mean different fields: say only that, not a page of noise.
        if isinstance(root, MappingNode):
            for k, node in root.value:
                if isinstance(k, ScalarNode) and k.value == "format":
                    if not (
                        isinstance(node, ScalarNode)
                        and node.tag == INT_TAG
                        and node.value == str(FORMAT)
                    ):
                        value = node.value if isinstance(node, ScalarNode) else "?"
                        msg = (
                            f"must be the number {FORMAT}, not quoted text '{value}'"
                            if value == str(FORMAT)
                            else f"unsupported format '{value}' (this gateway reads format {FORMAT})"
                        )
                        self.error(node, "format", msg)
                        return None
        f = self.fields(root, "", _TOP_REQUIRED)
        if f is None:
            return None
        fmt = FORMAT if "format" in f else None
        name = self.text(f["name"][1], "name", max_len=100) if "name" in f else None
        version = None
        if "version" in f:
            version = self.text(f["version"][1], "version", max_len=64)
            if version is not None and not _VERSION.fullmatch(version):
                self.error(
                    f["version"][1],
                    "version",
                    "must be one word of letters, digits, '.', '-', '_' or '+', such as 2026-11-01.1",
                )
                version = None
        approved_by = (
            self.text(f["approved_by"][1], "approved_by", max_len=200)
            if "approved_by" in f
            else None
        )
        approved_on = self.date(f["approved_on"][1], "approved_on") if "approved_on" in f else None
        areas: dict[str, CareArea] = {}
        areas_ok = "care_areas" in f
        if "care_areas" in f:
            for area_id, key, node in self.id_map(f["care_areas"][1], "care_areas", "care area"):
                area = self.care_area(area_id, key, node, join_path("care_areas", area_id))
                if area is None:
                    areas_ok = False
                else:
                    areas[area_id] = area
        if (
            fmt is None
            or name is None
            or version is None
            or approved_by is None
            or approved_on is None
            or not areas_ok
            or self.issues
        ):
            return None
        return DrugLibrary(
            format=fmt,
            name=name,
            version=version,
            approved_by=approved_by,
            approved_on=approved_on,
            care_areas=MappingProxyType(areas),
            sha256=sha256,
            source=self.source,
        )

    def date(self, node: Node, path: str) -> datetime.date | None:
        text = self.text(node, path, max_len=10)
        if text is None:
            return None
        try:
            if len(text) != 10:
                raise ValueError(text)
            return datetime.date.fromisoformat(text)
        except ValueError:
            self.error(node, path, f"must be a date written YYYY-MM-DD, not '{text}'")
            return None

    def care_area(self, area_id: str, key: Node, node: Node, path: str) -> CareArea | None:
        f = self.fields(node, path, _AREA_REQUIRED, anchor=key)
        if f is None:
            return None
        description = (
            self.text(
                f["description"][1], join_path(path, "description"), max_len=500, multiline=True
            )
            if "description" in f
            else None
        )
        drugs: dict[str, DrugEntry] = {}
        ok = "drugs" in f
        if "drugs" in f:
            dpath = join_path(path, "drugs")
            for drug_id, dkey, dnode in self.id_map(f["drugs"][1], dpath, "drug"):
                entry = self.entry(drug_id, dkey, dnode, join_path(dpath, drug_id))
                if entry is None:
                    ok = False
                else:
                    drugs[drug_id] = entry
        if description is None or not ok:
            return None
        return CareArea(id=area_id, description=description, drugs=MappingProxyType(drugs))

    def entry(self, drug_id: str, key: Node, node: Node, path: str) -> DrugEntry | None:
        f = self.fields(node, path, _ENTRY_REQUIRED, _ENTRY_OPTIONAL, anchor=key)
        if f is None:
            return None
        before = len(self.issues)
        name = (
            self.text(f["name"][1], join_path(path, "name"), max_len=_MAX_DRUG_NAME)
            if "name" in f
            else None
        )
        unit: DosingUnit | None = None
        if "dosing_unit" in f:
            unode = f["dosing_unit"][1]
            raw = str(unode.value) if isinstance(unode, ScalarNode) else "(not a word)"
            try:
                unit = DosingUnit(raw)
            except ValueError:
                choices = ", ".join(u.value for u in DosingUnit)
                self.error(
                    unode, join_path(path, "dosing_unit"), f"must be one of {choices}, not '{raw}'"
                )
        concentrations = (
            self.concentrations(f["concentrations"][1], join_path(path, "concentrations"))
            if "concentrations" in f
            else None
        )
        weight: WeightRange | None = None
        if "weight_kg" in f:
            weight = self.weight(f["weight_kg"], join_path(path, "weight_kg"))
        elif unit is not None and unit.weight_based:
            self.error(
                key,
                path,
                f"missing required field 'weight_kg' (dosing unit {unit.value} is weight-based)",
            )
        rate_unit = unit.value if unit else ""
        dose_unit = unit.dose_unit if unit else ""
        blocks: dict[str, tuple[Limits, dict[str, Node]] | None] = {}
        for field, u in (
            ("rate", rate_unit),
            ("bolus", dose_unit),
            ("duration_min", "min"),
            ("max_cumulative_dose", dose_unit),
        ):
            if field in f:
                blocks[field] = self.limits(f[field], join_path(path, field), field, u)
        advisory = ""
        if "advisory" in f:
            advisory = (
                self.text(
                    f["advisory"][1], join_path(path, "advisory"), max_len=2000, multiline=True
                )
                or ""
            )
        if len(self.issues) != before or unit is None or name is None or concentrations is None:
            return None
        rate, dur, cum = (
            blocks.get("rate"),
            blocks.get("duration_min"),
            blocks.get("max_cumulative_dose"),
        )
        bolus = blocks.get("bolus")
        if rate is None or dur is None or cum is None:
            return None
        self.cross_checks(path, unit, rate, dur, cum, bolus)
        if len(self.issues) != before:
            return None
        return DrugEntry(
            id=drug_id,
            name=name,
            concentrations=concentrations,
            dosing_unit=unit,
            weight_kg=weight,
            rate=rate[0],
            bolus=bolus[0] if bolus else None,
            max_cumulative_dose=cum[0],
            duration_min=dur[0],
            advisory=advisory,
        )

    def concentrations(self, node: Node, path: str) -> tuple[Decimal, ...] | None:
        if not isinstance(node, SequenceNode) or not node.value:
            self.error(
                node, path, "must be a non-empty list of concentrations in mg/mL, such as [1, 2]"
            )
            return None
        if len(node.value) > _MAX_CONCENTRATIONS:
            self.error(node, path, f"must list at most {_MAX_CONCENTRATIONS} concentrations")
            return None
        out: list[Decimal] = []
        seen: dict[Decimal, Node] = {}
        ok = True
        for item in node.value:
            value = self.number(item, path)
            if value is None:
                ok = False
                continue
            if value in seen:
                self.error(
                    item,
                    path,
                    f"duplicate concentration {value} mg/mL ({self.first_note(seen[value])})",
                )
                ok = False
                continue
            seen[value] = item
            out.append(value)
        return tuple(out) if ok else None

    def weight(self, kv: tuple[Node, Node], path: str) -> WeightRange | None:
        f = self.fields(kv[1], path, ("min", "max"), anchor=kv[0])
        if f is None or "min" not in f or "max" not in f:
            return None
        lo = self.number(f["min"][1], join_path(path, "min"))
        hi = self.number(f["max"][1], join_path(path, "max"))
        if lo is None or hi is None:
            return None
        if not lo < hi:
            self.error(f["min"][1], join_path(path, "min"), f"must be below max ({hi} kg)")
            return None
        return WeightRange(min=lo, max=hi)

    def limits(
        self, kv: tuple[Node, Node], path: str, field: str, unit: str
    ) -> tuple[Limits, dict[str, Node]] | None:
        required, optional = _LIMIT_KEYS[field]
        f = self.fields(kv[1], path, required, optional, anchor=kv[0])
        if f is None:
            return None
        values: dict[str, Decimal] = {}
        nodes: dict[str, Node] = {}
        ok = all(k in f for k in required)
        for name in _ORDER:
            if name in f:
                v = self.number(f[name][1], join_path(path, name))
                if v is None:
                    ok = False
                else:
                    values[name] = v
                    nodes[name] = f[name][1]
        if not ok:
            return None
        present = [k for k in _ORDER if k in values]
        for a, b in zip(present, present[1:], strict=False):
            va, vb = values[a], values[b]
            suffix = f" {unit}" if unit else ""
            if (a, b) in _STRICT_PAIRS:
                if not va < vb:
                    self.error(nodes[a], join_path(path, a), f"must be below {b} ({vb}{suffix})")
                    ok = False
            elif not va <= vb:
                self.error(nodes[a], join_path(path, a), f"must not be above {b} ({vb}{suffix})")
                ok = False
        if not ok:
            return None
        limits = Limits(
            lower_hard=values.get("lower_hard"),
            lower_soft=values.get("lower_soft"),
            default=values.get("default"),
            upper_soft=values["upper_soft"],
            upper_hard=values["upper_hard"],
        )
        return limits, nodes

    def cross_checks(
        self,
        path: str,
        unit: DosingUnit,
        rate: tuple[Limits, dict[str, Node]],
        dur: tuple[Limits, dict[str, Node]],
        cum: tuple[Limits, dict[str, Node]],
        bolus: tuple[Limits, dict[str, Node]] | None,
    ) -> None:
        """Limits that are each fine alone but contradict each other."""
        d = unit.dose_unit
        assert rate[0].default is not None and dur[0].default is not None
        default_dose = rate[0].default * dur[0].default / 60
        if rate[0].default * dur[0].default > cum[0].upper_soft * 60:  # exact, no division
            self.error(
                cum[1]["upper_soft"],
                join_path(path, "max_cumulative_dose.upper_soft"),
                f"is below the default program's dose ({_fmt(default_dose)} {d} = rate.default x "
                "duration_min.default), so every default program would need an override",
            )
        if bolus is not None and bolus[0].upper_hard > cum[0].upper_hard:
            self.error(
                bolus[1]["upper_hard"],
                join_path(path, "bolus.upper_hard"),
                f"must not be above max_cumulative_dose.upper_hard ({cum[0].upper_hard} {d})",
            )


def _fmt(value: Decimal) -> str:
    q = value.quantize(Decimal("0.0001")).normalize()
    return f"{q:f}"
